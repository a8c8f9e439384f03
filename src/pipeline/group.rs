//! Group commit: the writes of deliveries that run close together are
//! recorded in one SQL transaction ([`Store::write_group`]): the content
//! claims of new deliveries (the first write of every delivery) and the
//! archives of finished ones (the last). Each delivery waits for the
//! commit that holds its own write; a delivery is acked only after its
//! archive's commit. The pipeline's group-commit tasks ([`writers`]: one on
//! SQLite, two on PostgreSQL) each take up to `pipeline.group_commit_max`
//! writes: what is waiting when it starts, and what arrives within
//! `pipeline.group_commit_linger`. A group that fails is written again one
//! write at a time, so one bad record fails only its own delivery.
//!
//! One queue for both kinds: on SQLite every writer waits for the same
//! write lock anyway, and a shared transaction pays one `BEGIN`/`COMMIT`
//! (one WAL flush on PostgreSQL) for the claims and archives together.
//!
//! Crash safety is the single archive's: nothing of a group is durable
//! before its commit, nothing is acked before it; a delivery abandoned
//! while its write waits is redelivered and finds it recorded (claims are
//! idempotent).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::event::MessageKey;
use crate::store::{ArchiveRecord, Backend, Claimed, Store, StoreError};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A write of one delivery, with where its result goes.
enum Job {
    /// The claim of a delivery's content ([`Store::claim_contents`]).
    Claim {
        key: MessageKey,
        digest: String,
        now_ms: i64,
        reply: Reply<Claimed>,
    },
    /// The archive of a delivery's message ([`Store::record_archive`]).
    Archive {
        record: Box<ArchiveRecord>,
        now_ms: i64,
        reply: Reply<Option<u64>>,
    },
}

/// Hands claims and archives to the pipeline's group-commit tasks
/// ([`writers`] of them, started on first use, ended when this is
/// dropped).
#[derive(Debug)]
pub struct GroupCommit {
    store: Store,
    max: usize,
    linger: Duration,
    queue: OnceLock<mpsc::Sender<Job>>,
}

impl GroupCommit {
    /// Groups of at most `max` writes (`1`: each alone, no task), gathered
    /// for at most `linger`.
    pub fn new(store: Store, max: usize, linger: Duration) -> Self {
        Self {
            store,
            max: max.max(1),
            linger,
            queue: OnceLock::new(),
        }
    }

    /// Claims `key` for `digest` as [`Store::claim_contents`] does (with
    /// the key's ledger state), in a group shared with other waiting
    /// claims and archives. Resolves after its claim was recorded and the
    /// state read (or either failed for this claim).
    pub async fn claim(
        &self,
        key: &MessageKey,
        digest: &str,
        now_ms: i64,
    ) -> Result<Claimed, GroupError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Claim {
            key: key.clone(),
            digest: digest.to_owned(),
            now_ms,
            reply,
        };
        self.submit(job, answer).await
    }

    /// Records one archive as [`Store::record_archive`] does, in a
    /// transaction shared with other waiting archives and claims. Resolves
    /// after that transaction committed (or failed for this archive).
    pub async fn record(
        &self,
        record: ArchiveRecord,
        now_ms: i64,
    ) -> Result<Option<u64>, GroupError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Archive {
            record: Box::new(record),
            now_ms,
            reply,
        };
        self.submit(job, answer).await
    }

    /// Writes `job` in a group (alone when groups hold one write) and
    /// waits for its result on `answer`.
    async fn submit<T>(
        &self,
        job: Job,
        answer: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, GroupError> {
        if self.max == 1 {
            write_one(&self.store, job).await;
        } else {
            let queue = self.queue.get_or_init(|| {
                let (tx, rx) = mpsc::channel(self.max * 4);
                let rx = Arc::new(Mutex::new(rx));
                for _ in 0..writers(self.store.backend()) {
                    tokio::spawn(run(self.store.clone(), rx.clone(), self.max, self.linger));
                }
                tx
            });
            queue.send(job).await.map_err(|_| GroupError::Gone)?;
        }
        Ok(answer.await.map_err(|_| GroupError::Gone)??)
    }
}

/// Why a grouped write was not made.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The group-commit task ended (runtime shutting down).
    #[error("group commit task ended")]
    Gone,
}

/// Group-commit tasks writing at once. SQLite lets one writer in at a
/// time, so one. PostgreSQL serialises group transactions only on the
/// `log_head` row lock of their append and on their commit, so a second
/// task writes its claims and ledger rows while the first appends and
/// commits (as several workers on one database do). Groups write their
/// rows in key order ([`Store::write_group`]), so two that hold the same
/// message keys wait for each other instead of deadlocking.
pub const fn writers(backend: Backend) -> usize {
    match backend {
        Backend::Sqlite => 1,
        Backend::Postgres => 2,
    }
}

/// One group-commit task: takes a group from the shared queue (the other
/// tasks wait meanwhile), writes it, and takes the next.
async fn run(store: Store, rx: Arc<Mutex<mpsc::Receiver<Job>>>, max: usize, linger: Duration) {
    loop {
        let batch = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            crate::batching::gather(&mut rx, first, max, linger).await
        };
        write(&store, batch).await;
    }
}

/// Writes `batch` together ([`Store::write_group`]); if that fails for a
/// group of several, each write alone, so one bad write fails only its own
/// delivery.
async fn write(store: &Store, batch: Vec<Job>) {
    if batch.len() == 1 {
        for job in batch {
            write_one(store, job).await;
        }
        return;
    }
    let mut claims: Vec<(&MessageKey, &str)> = Vec::new();
    let mut archives: Vec<(&ArchiveRecord, i64)> = Vec::new();
    // The claims share one time: their `created_at` only orders
    // retention, to the millisecond.
    let mut claims_now_ms = 0;
    for job in &batch {
        match job {
            Job::Claim {
                key,
                digest,
                now_ms,
                ..
            } => {
                if claims.is_empty() {
                    claims_now_ms = *now_ms;
                }
                claims.push((key, digest.as_str()));
            }
            Job::Archive { record, now_ms, .. } => archives.push((&**record, *now_ms)),
        }
    }
    match store.write_group(&claims, claims_now_ms, &archives).await {
        Ok((claimed, archived)) => {
            let (mut claimed, mut archived) = (claimed.into_iter(), archived.into_iter());
            // A result missing (a defect) drops its reply: the delivery
            // sees `Gone` and is retried.
            for job in batch {
                match job {
                    Job::Claim { reply, .. } => {
                        if let Some(c) = claimed.next() {
                            let _ = reply.send(Ok(c));
                        }
                    }
                    Job::Archive { reply, .. } => {
                        if let Some(a) = archived.next() {
                            let _ = reply.send(Ok(a));
                        }
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                claims = claims.len(),
                archives = archives.len(),
                "group commit failed; writing one by one"
            );
            for job in batch {
                write_one(store, job).await;
            }
        }
    }
}

/// Writes one job as a group of its own ([`Store::write_group`], on the
/// writer connections) and sends its result.
async fn write_one(store: &Store, job: Job) {
    match job {
        Job::Claim {
            key,
            digest,
            now_ms,
            reply,
        } => {
            let claimed = store
                .write_group(&[(&key, digest.as_str())], now_ms, &[])
                .await
                .and_then(|(claimed, _)| only(claimed, "a claim"));
            let _ = reply.send(claimed);
        }
        Job::Archive {
            record,
            now_ms,
            reply,
        } => {
            let none: [(&MessageKey, &str); 0] = [];
            let archived = store
                .write_group(&none, 0, &[(&record, now_ms)])
                .await
                .and_then(|(_, archived)| only(archived, "an archive"));
            let _ = reply.send(archived);
        }
    }
}

/// The one result of a group of one `what`; [`StoreError::Corrupt`] if
/// there is none.
fn only<T>(results: Vec<T>, what: &str) -> Result<T, StoreError> {
    results
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Corrupt(format!("{what} without its result")))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::GroupCommit;
    use crate::store::tests::{archive, both_backends, fresh, key};
    use crate::store::{Backend, Claim};

    /// Deliveries at once, two per message key: every claim is ours, and
    /// of each key's two archives exactly one gets a leaf index; the
    /// indexes are dense. Groups are written by one task on SQLite and by
    /// two at once on PostgreSQL, where the two may hold the same key.
    async fn concurrent_groups_claim_and_archive_each_message_once(backend: Backend) {
        let (store, _dir) = fresh(backend).await;
        let group = Arc::new(GroupCommit::new(store.clone(), 8, Duration::ZERO));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..48u32 {
            for _ in 0..2 {
                let group = group.clone();
                tasks.spawn(async move {
                    let claimed = group.claim(&key(i), &format!("digest {i}"), 1).await;
                    assert_eq!(claimed.unwrap().claim, Claim::Ours, "claim {i}");
                    group.record(archive(i), 2).await.unwrap()
                });
            }
        }
        let mut indexes: Vec<u64> = tasks.join_all().await.into_iter().flatten().collect();
        indexes.sort_unstable();
        assert_eq!(indexes, (0..48).collect::<Vec<u64>>());
        assert_eq!(store.log_size().await.unwrap(), 48);
    }

    both_backends!(concurrent_groups_claim_and_archive_each_message_once);
}
