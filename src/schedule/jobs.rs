//! The worker's scheduled jobs. Each takes the cron instant it runs for as
//! its "now", so what it does depends on the schedule, not on when the
//! runtime got to it.
//!
//! - retention sweep (`schedule.retention_sweep`): not-relevant messages
//!   whose rule's retention ended get their deletion released (DSK I.7);
//!   retractions at the messenger that still wait for a target archived
//!   since get their mark in the KIS
//!   ([`Pipeline::apply_waiting_retractions`]);
//! - metadata purge (`schedule.metadata_purge`): local metadata of messages
//!   whose deletion was confirmed `schedule.metadata_retention` ago is
//!   removed (DSK II.3);
//! - split sweep (`schedule.split_sweep`): split-message groups whose
//!   `schedule.split_wait` ended are archived, marked incomplete (DSK II.2);
//! - transcript closer (`schedule.transcript_close`, only with `kis.output =
//!   "document_reference_only"`): transcript windows that ended are archived
//!   as one document each, then their messages' deletions queued (DSK I.6).
//!
//! - integrity audit (`schedule.integrity_audit`, `integrity_audit_sample`
//!   resources, 0: off): archived content drawn at random is read back from
//!   the KIS and verified, and the result recorded (DSK I.12).
//!
//! With several workers each job runs on the leader only ([`singleton`],
//! [`super::leader`]), once per cron instant.

use std::sync::Arc;
use std::time::Duration;

use crate::shutdown::Shutdown;
use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use super::config::ScheduleConfig;
use super::leader::Leadership;
use crate::pipeline::Pipeline;
use crate::split::SweepSummary;
use crate::store::{PurgeCounts, Store, StoreError, millis};
use crate::telemetry;

/// Releases scheduled deletions whose retention ended at `at`.
pub async fn retention_sweep(store: &Store, at: DateTime<Utc>) -> Result<u64, StoreError> {
    let n = store.release_due_deletions(millis(at)).await?;
    telemetry::emit(telemetry::RetentionReleased { count: n });
    Ok(n)
}

/// Purges metadata of messages whose deletion was confirmed at least
/// `retention` before `at`.
pub async fn metadata_purge(
    store: &Store,
    retention: Duration,
    at: DateTime<Utc>,
) -> Result<PurgeCounts, StoreError> {
    let now = millis(at);
    let cutoff = now.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    let c = store.purge_metadata(cutoff, now).await?;
    telemetry::emit(telemetry::MetadataPurged {
        archived: c.archived,
        not_relevant: c.not_relevant,
        groups: c.groups,
    });
    Ok(c)
}

/// Releases split groups whose wait ended at `at`.
pub async fn split_sweep(pipeline: &Pipeline, wait: Duration, at: DateTime<Utc>) -> SweepSummary {
    match pipeline.release_due_groups(wait, at).await {
        Ok(s) => s,
        Err(t) => {
            tracing::warn!(stage = t.stage, "split sweep failed; retried next time");
            SweepSummary::default()
        }
    }
}

/// Archives the transcript windows that ended at `at`.
pub async fn transcript_close(
    pipeline: &Pipeline,
    at: DateTime<Utc>,
) -> crate::transcript::CloseSummary {
    match pipeline
        .close_due_transcripts(pipeline.transcript_document_type(), at)
        .await
    {
        Ok(s) => s,
        Err(t) => {
            tracing::warn!(
                stage = t.stage,
                "transcript close failed; retried next time"
            );
            Default::default()
        }
    }
}

/// Runs `job` for the cron instant `at` if this worker leads its role
/// (and its lock session still answers) and no worker claimed the instant
/// yet (`job_runs`); `true` when it ran here.
pub async fn singleton<Fut>(
    leader: &Leadership,
    store: &Store,
    job: &'static str,
    at: DateTime<Utc>,
    run: Fut,
) -> bool
where
    Fut: std::future::Future<Output = ()>,
{
    if !leader.is_leader() || !leader.confirm().await {
        return false;
    }
    let tick = millis(at);
    match store
        .claim_job_run(job, tick, leader.worker(), millis(Utc::now()))
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(job, "instant already run by another worker");
            return false;
        }
        Err(e) => {
            tracing::warn!(error = %e, job, "cannot claim the job's instant; skipped");
            return false;
        }
    }
    run.await;
    if let Err(e) = store.finish_job_run(job, tick, millis(Utc::now())).await {
        tracing::warn!(error = %e, job, "cannot record the end of the job run");
    }
    telemetry::emit(telemetry::JobRan { job });
    true
}

/// Starts the jobs from `start`, each run only by the leader of
/// [`Role::Jobs`](super::leader::Role::Jobs) (`leader`); each task ends
/// promptly when `shutdown` flips. The schedules were parsed with the
/// configuration.
pub fn spawn(
    config: &ScheduleConfig,
    store: Store,
    pipeline: Arc<Pipeline>,
    leader: Leadership,
    start: DateTime<Utc>,
    shutdown: Shutdown,
) -> Vec<JoinHandle<()>> {
    let (metadata_retention, split_wait) = (config.metadata_retention, config.split_wait);
    let job = |schedule: &super::Cron, name: &'static str, work: Work| {
        let (store, pipeline, leader) = (store.clone(), pipeline.clone(), leader.clone());
        tokio::spawn(super::run(
            schedule.schedule().clone(),
            start,
            shutdown.clone(),
            move |at| {
                let (store, pipeline, leader) = (store.clone(), pipeline.clone(), leader.clone());
                async move {
                    let run = async {
                        match work {
                            Work::Retention => {
                                if let Err(e) = retention_sweep(&store, at).await {
                                    tracing::warn!(error = %e, "retention sweep failed");
                                }
                                if let Err(t) = pipeline.apply_waiting_retractions().await {
                                    tracing::warn!(
                                        stage = t.stage,
                                        "waiting retractions not applied; retried next time"
                                    );
                                }
                            }
                            Work::Purge => {
                                if let Err(e) = metadata_purge(&store, metadata_retention, at).await
                                {
                                    tracing::warn!(error = %e, "metadata purge failed");
                                }
                            }
                            Work::Split => {
                                split_sweep(&pipeline, split_wait, at).await;
                            }
                            Work::Transcripts => {
                                transcript_close(&pipeline, at).await;
                            }
                            Work::Audit(sample) => {
                                integrity_audit(&pipeline, &store, sample).await;
                            }
                        }
                    };
                    singleton(&leader, &store, name, at, run).await;
                }
            },
        ))
    };
    let mut tasks = vec![
        job(&config.retention_sweep, "retention_sweep", Work::Retention),
        job(&config.metadata_purge, "metadata_purge", Work::Purge),
        job(&config.split_sweep, "split_sweep", Work::Split),
    ];
    // MDM archives are no FHIR resources to read back (docs/kis-output.md).
    if config.integrity_audit_sample > 0 && pipeline.output() != crate::push::OutputMode::Hl7v2Mdm {
        // The series exist from the start, so the first mismatch is an
        // increase the alert sees.
        for outcome in ["verified", "mismatched", "unchecked"] {
            crate::telemetry::measure::integrity_audit(outcome, 0);
        }
        tasks.push(job(
            &config.integrity_audit,
            "integrity_audit",
            Work::Audit(config.integrity_audit_sample),
        ));
    }
    if pipeline.output() == crate::push::OutputMode::DocumentReferenceOnly {
        tasks.push(job(
            &config.transcript_close,
            "transcript_close",
            Work::Transcripts,
        ));
    }
    tasks
}

/// The singleton jobs of [`spawn`].
#[derive(Debug, Clone, Copy)]
enum Work {
    Retention,
    Purge,
    Split,
    Transcripts,
    /// The integrity audit over this many resources.
    Audit(u32),
}

/// One scheduled integrity audit, recorded as run by `schedule`.
async fn integrity_audit(pipeline: &Pipeline, store: &Store, sample: u32) {
    let keys = pipeline.sealer().proof_keys();
    match crate::prove::service::audit_and_record(
        pipeline.kis(),
        (store, &keys),
        sample,
        "schedule",
    )
    .await
    {
        Ok(report) if report.ok() => {
            tracing::info!(
                checked = report.checked,
                "integrity audit: every resource verified"
            );
        }
        Ok(report) => tracing::error!(
            checked = report.checked,
            mismatched = report.mismatched(),
            unchecked = report.errors.len(),
            "integrity audit: archived content does not verify (console log page, `chartbridge audit`)"
        ),
        Err(e) => tracing::warn!(error = %e, "integrity audit could not run"),
    }
}
