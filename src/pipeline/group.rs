//! Group commit of archives: deliveries that finish close together are
//! recorded in one SQL transaction ([`Store::record_archives`]), each
//! delivery waiting for the commit that holds its own archive before it is
//! acked. One task per pipeline takes up to `pipeline.group_commit_max`
//! archives: what is waiting when it starts, and what arrives within
//! `pipeline.group_commit_linger`. A batch that fails is recorded again one
//! archive at a time, so one bad record fails only its own delivery.
//!
//! Content claims ([`Store::claim_contents`]) are grouped the same way, in
//! a queue of their own: a claim is the first write of every delivery, so
//! a burst of deliveries pays one commit for their claims too.
//!
//! Crash safety is the single archive's: nothing of a batch is durable
//! before its commit, nothing is acked before it; a delivery abandoned
//! while its archive waits is redelivered and finds it recorded.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::event::MessageKey;
use crate::store::{ArchiveRecord, Claim, Store, StoreError};

type Reply = oneshot::Sender<Result<Option<u64>, StoreError>>;

struct ClaimJob {
    key: MessageKey,
    digest: String,
    now_ms: i64,
    reply: oneshot::Sender<Result<Claim, StoreError>>,
}

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
    claims: OnceLock<mpsc::Sender<ClaimJob>>,
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
            claims: OnceLock::new(),
        }
    }

    /// Claims `key` for `digest` as [`Store::claim_content`] does, in a
    /// transaction shared with other waiting claims. Resolves after that
    /// transaction committed (or failed for this claim).
    pub async fn claim(
        &self,
        key: &MessageKey,
        digest: &str,
        now_ms: i64,
    ) -> Result<Claim, GroupError> {
        if self.max == 1 {
            return Ok(self.store.claim_content(key, digest, now_ms).await?);
        }
        let queue = self.claims.get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.max * 4);
            tokio::spawn(run_claims(self.store.clone(), rx, self.max, self.linger));
            tx
        });
        let (reply, answer) = oneshot::channel();
        queue
            .send(ClaimJob {
                key: key.clone(),
                digest: digest.to_owned(),
                now_ms,
                reply,
            })
            .await
            .map_err(|_| GroupError::Gone)?;
        Ok(answer.await.map_err(|_| GroupError::Gone)??)
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

async fn run_claims(store: Store, mut rx: mpsc::Receiver<ClaimJob>, max: usize, linger: Duration) {
    while let Some(first) = rx.recv().await {
        let batch = crate::batching::gather(&mut rx, first, max, linger).await;
        claim(&store, batch).await;
    }
}

/// Claims `batch` in one transaction; if that fails, each alone, so one
/// bad claim fails only its own delivery.
async fn claim(store: &Store, batch: Vec<ClaimJob>) {
    if batch.len() > 1 {
        let pairs: Vec<(&MessageKey, &str)> =
            batch.iter().map(|j| (&j.key, j.digest.as_str())).collect();
        // The batch shares one time: the claims' `created_at` only orders
        // retention, to the millisecond.
        match store.claim_contents(&pairs, batch[0].now_ms).await {
            Ok(results) => {
                for (job, result) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(Ok(result));
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, size = pairs.len(), "grouped claims failed; claiming one by one");
            }
        }
    }
    for job in batch {
        let result = store.claim_content(&job.key, &job.digest, job.now_ms).await;
        let _ = job.reply.send(result);
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
