//! Cron-driven jobs. [`run`] waits for each next instant of a cron schedule
//! (seconds first, UTC) and runs the job, until shutdown. [`jobs`] holds
//! the worker's jobs: retention sweep, metadata purge, split sweep.

pub mod config;
pub mod jobs;
pub mod leader;

pub use config::{Cron, ScheduleConfig};

use crate::shutdown::Shutdown;
use chrono::{DateTime, Utc};

/// Parses the cron expression of the setting `name`; the error names the
/// setting and the expected form, never anything else.
pub fn parse(name: &str, expr: &str) -> Result<cron::Schedule, String> {
    expr.parse::<cron::Schedule>().map_err(|e| {
        format!("{name} is not a cron expression (seconds first, e.g. \"0 */5 * * * *\"): {e}")
    })
}

/// Runs `job` at every instant of `schedule` after `start`, until `shutdown`
/// flips (or its trigger is dropped). Instants are computed from the previous
/// one and waited for on tokio's clock, anchored at `start`, so a slow job
/// neither skips an instant nor shifts later ones, and tests can drive it
/// with paused tokio time. Shutdown ends the wait at once; a job already
/// running is finished first, none is started after.
pub async fn run<F, Fut>(
    schedule: cron::Schedule,
    start: DateTime<Utc>,
    mut shutdown: Shutdown,
    mut job: F,
) where
    F: FnMut(DateTime<Utc>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let origin = tokio::time::Instant::now();
    let mut cursor = start;
    loop {
        if shutdown.is_shutdown() {
            return;
        }
        let Some(next) = schedule.after(&cursor).next() else {
            return;
        };
        let deadline = origin + (next - start).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.recv() => return,
        }
        job(next).await;
        cursor = next;
    }
}

#[cfg(test)]
mod leader_tests;
#[cfg(test)]
mod tests;
