//! The worker's scheduled jobs. Each takes the cron instant it runs for as
//! its "now", so what it does depends on the schedule, not on when the
//! runtime got to it.
//!
//! - retention sweep (`schedule.retention_sweep`): not-relevant messages
//!   whose rule's retention ended get their deletion released (DSK I.7);
//! - metadata purge (`schedule.metadata_purge`): local metadata of messages
//!   whose deletion was confirmed `schedule.metadata_retention` ago is
//!   removed (DSK II.3);
//! - split sweep (`schedule.split_sweep`): split-message groups whose
//!   `schedule.split_wait` ended are archived, marked incomplete (DSK II.2);
//! - transcript closer (`schedule.transcript_close`, only with `kis.output =
//!   "document_reference_only"`): transcript windows that ended are archived
//!   as one document each, then their messages' deletions queued (DSK I.6).

use std::sync::Arc;
use std::time::Duration;

use crate::shutdown::Shutdown;
use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use super::config::ScheduleConfig;
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

/// Starts the jobs from `start`; each task ends promptly when
/// `shutdown` flips. The schedules were parsed with the configuration.
pub fn spawn(
    config: &ScheduleConfig,
    store: Store,
    pipeline: Arc<Pipeline>,
    start: DateTime<Utc>,
    shutdown: Shutdown,
) -> Vec<JoinHandle<()>> {
    let retention = config.retention_sweep.schedule().clone();
    let purge = config.metadata_purge.schedule().clone();
    let split = config.split_sweep.schedule().clone();
    let (metadata_retention, split_wait) = (config.metadata_retention, config.split_wait);
    let s1 = store.clone();
    let retention_task = tokio::spawn(super::run(retention, start, shutdown.clone(), move |at| {
        let store = s1.clone();
        async move {
            if let Err(e) = retention_sweep(&store, at).await {
                tracing::warn!(error = %e, "retention sweep failed");
            }
        }
    }));
    let purge_task = tokio::spawn(super::run(purge, start, shutdown.clone(), move |at| {
        let store = store.clone();
        async move {
            if let Err(e) = metadata_purge(&store, metadata_retention, at).await {
                tracing::warn!(error = %e, "metadata purge failed");
            }
        }
    }));
    let transcripts = pipeline.output() == crate::push::OutputMode::DocumentReferenceOnly;
    let closer = config.transcript_close.schedule().clone();
    let p2 = pipeline.clone();
    let split_task = tokio::spawn(super::run(split, start, shutdown.clone(), move |at| {
        let pipeline = p2.clone();
        async move {
            split_sweep(&pipeline, split_wait, at).await;
        }
    }));
    let mut tasks = vec![retention_task, purge_task, split_task];
    if transcripts {
        tasks.push(tokio::spawn(super::run(
            closer,
            start,
            shutdown,
            move |at| {
                let pipeline = pipeline.clone();
                async move {
                    transcript_close(&pipeline, at).await;
                }
            },
        )));
    }
    tasks
}
