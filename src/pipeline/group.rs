//! Group commit of archives: deliveries that finish close together are
//! recorded in one SQL transaction ([`Store::record_archives`]), each
//! delivery waiting for the commit that holds its own archive before it is
//! acked. One task per pipeline takes up to `pipeline.group_commit_max`
//! archives: what is waiting when it starts, and what arrives within
//! `pipeline.group_commit_linger`. A batch that fails is recorded again one
//! archive at a time, so one bad record fails only its own delivery.
//!
//! Crash safety is the single archive's: nothing of a batch is durable
//! before its commit, nothing is acked before it; a delivery abandoned
//! while its archive waits is redelivered and finds it recorded.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::{ArchiveRecord, Store, StoreError};

type Reply = oneshot::Sender<Result<Option<u64>, StoreError>>;

struct Job {
    record: ArchiveRecord,
    now_ms: i64,
    reply: Reply,
}

/// Hands archives to the pipeline's group-commit task (started on first
/// use, ended when the pipeline is dropped).
#[derive(Debug)]
pub struct GroupCommit {
    store: Store,
    max: usize,
    linger: Duration,
    queue: OnceLock<mpsc::Sender<Job>>,
}

impl GroupCommit {
    /// Groups of at most `max` archives (`1`: each alone, no task),
    /// gathered for at most `linger`.
    pub fn new(store: Store, max: usize, linger: Duration) -> Self {
        Self {
            store,
            max: max.max(1),
            linger,
            queue: OnceLock::new(),
        }
    }

    /// Records one archive as [`Store::record_archive`] does, in a
    /// transaction shared with other waiting archives. Resolves after that
    /// transaction committed (or failed for this archive).
    pub async fn record(
        &self,
        record: ArchiveRecord,
        now_ms: i64,
    ) -> Result<Option<u64>, GroupError> {
        if self.max == 1 {
            return Ok(self.store.record_archive(&record, now_ms).await?);
        }
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.max * 4);
            tokio::spawn(run(self.store.clone(), rx, self.max, self.linger));
            tx
        });
        let (reply, answer) = oneshot::channel();
        queue
            .send(Job {
                record,
                now_ms,
                reply,
            })
            .await
            .map_err(|_| GroupError::Gone)?;
        Ok(answer.await.map_err(|_| GroupError::Gone)??)
    }
}

/// Why a grouped archive was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The group-commit task ended (runtime shutting down).
    #[error("group commit task ended")]
    Gone,
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>, max: usize, linger: Duration) {
    while let Some(first) = rx.recv().await {
        let batch = crate::batching::gather(&mut rx, first, max, linger).await;
        commit(&store, batch).await;
    }
}

async fn commit(store: &Store, batch: Vec<Job>) {
    if batch.len() > 1 {
        let pairs: Vec<(&ArchiveRecord, i64)> =
            batch.iter().map(|j| (&j.record, j.now_ms)).collect();
        match store.record_archives(&pairs).await {
            Ok(results) => {
                for (job, result) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(Ok(result));
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, size = pairs.len(), "group commit failed; recording one by one");
            }
        }
    }
    for job in batch {
        let result = store.record_archive(&job.record, job.now_ms).await;
        let _ = job.reply.send(result);
    }
}
