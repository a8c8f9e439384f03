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
//! a burst of deliveries pays one insert and one read for their claims. Both queues
//! are one [`Lane`], told apart by the [`Grouped`] item they carry.
//!
//! Crash safety is the single archive's: nothing of a batch is durable
//! before its commit, nothing is acked before it; a delivery abandoned
//! while its archive waits is redelivered and finds it recorded.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::event::MessageKey;
use crate::store::{ArchiveRecord, Claimed, Store, StoreError};

type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// One kind of write that can share statements with others of its kind.
trait Grouped: Send + Sync + Sized + 'static {
    type Out: Send + 'static;
    /// Names the write in the log line of a failed group.
    const WHAT: &'static str;
    /// Writes `batch` together (archives: one transaction; claims: one
    /// insert and one read); one result per item, in order.
    fn many<'a>(store: &'a Store, batch: &'a [Self]) -> StoreFuture<'a, Vec<Self::Out>>;
    /// Writes one item in a transaction of its own.
    fn one<'a>(store: &'a Store, item: &'a Self) -> StoreFuture<'a, Self::Out>;
}

struct ClaimItem {
    key: MessageKey,
    digest: String,
    now_ms: i64,
}

impl Grouped for ClaimItem {
    type Out = Claimed;
    const WHAT: &'static str = "claims";
    fn many<'a>(store: &'a Store, batch: &'a [Self]) -> StoreFuture<'a, Vec<Claimed>> {
        Box::pin(async move {
            let pairs: Vec<(&MessageKey, &str)> =
                batch.iter().map(|c| (&c.key, c.digest.as_str())).collect();
            // The batch shares one time: the claims' `created_at` only
            // orders retention, to the millisecond.
            store.claim_contents(&pairs, batch[0].now_ms).await
        })
    }
    fn one<'a>(store: &'a Store, item: &'a Self) -> StoreFuture<'a, Claimed> {
        Box::pin(async move {
            let claimed = store
                .claim_contents(&[(&item.key, item.digest.as_str())], item.now_ms)
                .await?;
            claimed
                .into_iter()
                .next()
                .ok_or_else(|| StoreError::Corrupt("a claim without its result".into()))
        })
    }
}

struct ArchiveItem {
    record: ArchiveRecord,
    now_ms: i64,
}

impl Grouped for ArchiveItem {
    type Out = Option<u64>;
    const WHAT: &'static str = "archives";
    fn many<'a>(store: &'a Store, batch: &'a [Self]) -> StoreFuture<'a, Vec<Option<u64>>> {
        Box::pin(async move {
            let pairs: Vec<(&ArchiveRecord, i64)> =
                batch.iter().map(|a| (&a.record, a.now_ms)).collect();
            store.record_archives(&pairs).await
        })
    }
    fn one<'a>(store: &'a Store, item: &'a Self) -> StoreFuture<'a, Option<u64>> {
        Box::pin(store.record_archive(&item.record, item.now_ms))
    }
}

struct Job<T: Grouped> {
    item: T,
    reply: oneshot::Sender<Result<T::Out, StoreError>>,
}

/// The queue of one kind of grouped write, and its task (started on first
/// use, ended when the queue is dropped).
struct Lane<T: Grouped> {
    queue: OnceLock<mpsc::Sender<Job<T>>>,
}

impl<T: Grouped> std::fmt::Debug for Lane<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").field("what", &T::WHAT).finish()
    }
}

impl<T: Grouped> Lane<T> {
    fn new() -> Self {
        Self {
            queue: OnceLock::new(),
        }
    }
}

/// Hands claims and archives to the pipeline's group-commit tasks.
#[derive(Debug)]
pub struct GroupCommit {
    store: Store,
    max: usize,
    linger: Duration,
    claims: Lane<ClaimItem>,
    archives: Lane<ArchiveItem>,
}

impl GroupCommit {
    /// Groups of at most `max` writes (`1`: each alone, no task), gathered
    /// for at most `linger`.
    pub fn new(store: Store, max: usize, linger: Duration) -> Self {
        Self {
            store,
            max: max.max(1),
            linger,
            claims: Lane::new(),
            archives: Lane::new(),
        }
    }

    /// Claims `key` for `digest` as [`Store::claim_contents`] does (with
    /// the key's ledger state), in statements shared with other waiting
    /// claims. Resolves after its insert committed and the state was read
    /// (or either failed for this claim).
    pub async fn claim(
        &self,
        key: &MessageKey,
        digest: &str,
        now_ms: i64,
    ) -> Result<Claimed, GroupError> {
        let item = ClaimItem {
            key: key.clone(),
            digest: digest.to_owned(),
            now_ms,
        };
        self.submit(&self.claims, item).await
    }

    /// Records one archive as [`Store::record_archive`] does, in a
    /// transaction shared with other waiting archives. Resolves after that
    /// transaction committed (or failed for this archive).
    pub async fn record(
        &self,
        record: ArchiveRecord,
        now_ms: i64,
    ) -> Result<Option<u64>, GroupError> {
        self.submit(&self.archives, ArchiveItem { record, now_ms })
            .await
    }

    async fn submit<T: Grouped>(&self, lane: &Lane<T>, item: T) -> Result<T::Out, GroupError> {
        if self.max == 1 {
            return Ok(T::one(&self.store, &item).await?);
        }
        let queue = lane.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.max * 4);
            tokio::spawn(run(self.store.clone(), rx, self.max, self.linger));
            tx
        });
        let (reply, answer) = oneshot::channel();
        queue
            .send(Job { item, reply })
            .await
            .map_err(|_| GroupError::Gone)?;
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

async fn run<T: Grouped>(
    store: Store,
    mut rx: mpsc::Receiver<Job<T>>,
    max: usize,
    linger: Duration,
) {
    while let Some(first) = rx.recv().await {
        let batch = crate::batching::gather(&mut rx, first, max, linger).await;
        write(&store, batch).await;
    }
}

/// Writes `batch` together ([`Grouped::many`]); if that fails, each item alone, so
/// one bad item fails only its own delivery.
async fn write<T: Grouped>(store: &Store, batch: Vec<Job<T>>) {
    let (items, replies): (Vec<T>, Vec<_>) = batch.into_iter().map(|j| (j.item, j.reply)).unzip();
    if items.len() > 1 {
        match T::many(store, &items).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, size = items.len(), what = T::WHAT, "group commit failed; writing one by one");
            }
        }
    }
    for (item, reply) in items.iter().zip(replies) {
        let _ = reply.send(T::one(store, item).await);
    }
}
