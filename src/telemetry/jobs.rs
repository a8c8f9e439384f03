//! Typed events of several workers: leadership of the singleton jobs, and
//! each job run (docs/operations.md, "Several workers").

use metrics::{counter, gauge};

use super::code;
use super::events::InternalEvent;

/// This worker took or lost the lead of `role` (`jobs`, `checkpoints`).
#[derive(Debug, Clone, Copy)]
pub struct LeadershipChanged<'a> {
    pub role: &'static str,
    pub leader: bool,
    /// This worker's name (`host:pid.n`), never an identifier of patients.
    pub worker: &'a str,
}

impl InternalEvent for LeadershipChanged<'_> {
    fn emit(self) {
        let (role, worker) = (self.role, self.worker);
        if self.leader {
            tracing::info!(role, worker, "leader of the singleton jobs");
        } else {
            tracing::warn!(role, worker, "no longer leader of the singleton jobs");
        }
        gauge!("chartbridge_leader", "role" => role).set(f64::from(u8::from(self.leader)));
    }
}

/// This worker campaigns for the lead of `role` on PostgreSQL and does not
/// hold it yet: the gauge reads 0 until it wins, so a fleet where no worker
/// leads shows as `max(chartbridge_leader) == 0` (alert
/// `ChartbridgeNoLeader`), not as a missing series.
#[derive(Debug, Clone, Copy)]
pub struct LeadershipCampaign<'a> {
    pub role: &'static str,
    /// This worker's name (`host:pid.n`).
    pub worker: &'a str,
}

impl InternalEvent for LeadershipCampaign<'_> {
    fn emit(self) {
        let (role, worker) = (self.role, self.worker);
        tracing::debug!(
            role,
            worker,
            "campaigning for the lead of the singleton jobs"
        );
        gauge!("chartbridge_leader", "role" => role).set(0.0);
    }
}

/// A singleton job ran for its cron instant on this worker.
#[derive(Debug, Clone, Copy)]
pub struct JobRan<'a> {
    pub job: &'a str,
}

impl InternalEvent for JobRan<'_> {
    fn emit(self) {
        tracing::debug!(job = self.job, "job ran");
        counter!("chartbridge_job_runs_total", "job" => code(self.job)).increment(1);
    }
}
