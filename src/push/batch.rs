//! Batched KIS transactions (`kis.batch_max`, opt-in per KIS): the
//! transaction Bundles of several messages that are ready close together
//! are sent as **one** FHIR transaction (FHIR R4 http.html#transaction),
//! each message's entries unchanged — every one still a conditional create
//! (`request.ifNoneExist`) with its own `urn:uuid` fullUrl — and the
//! `transaction-response` is split back into each message's [`Confirmed`].
//!
//! A transaction is atomic, so batching changes what fails together: when
//! the KIS rejects a batch (4xx) or answers it incompletely, the batch is
//! split in halves and each half sent again, down to single messages, so a
//! bad message is refused alone (and quarantined by its caller) while the
//! others archive. A transient failure (5xx, timeout, cut connection) is
//! every member's, and each retries as it would alone; the conditional
//! creates make a retry of a batch that did commit find the resources it
//! created instead of creating them twice.
//!
//! One task per archiver gathers up to `batch_max` bundles: what is waiting
//! when it starts, and what arrives within `batch_linger`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::{Confirmed, Kis, PushError};

type Reply = oneshot::Sender<Result<Confirmed, PushError>>;

struct Job {
    bundle: Value,
    reply: Reply,
}

/// Sends transaction Bundles to the KIS, several messages' at a time when
/// `max > 1`.
#[derive(Debug, Clone)]
pub struct Batcher {
    kis: Kis,
    max: usize,
    linger: Duration,
    queue: Arc<OnceLock<mpsc::Sender<Job>>>,
}

impl Batcher {
    /// Batches of at most `max` messages' Bundles (`0` or `1`: each alone,
    /// no task), gathered for at most `linger`.
    pub fn new(kis: Kis, max: usize, linger: Duration) -> Self {
        Self {
            kis,
            max: max.max(1),
            linger,
            queue: Arc::new(OnceLock::new()),
        }
    }

    /// Whether bundles are batched (`kis.batch_max > 1`).
    pub fn batches(&self) -> bool {
        self.max > 1
    }

    /// Sends one message's transaction `bundle` (one attempt) as
    /// [`Kis::transaction`] does, in a transaction shared with other
    /// waiting messages when batching is on. Resolves with this message's
    /// share of the answer: one location per entry of `bundle`, in order.
    ///
    /// Errors: as [`Kis::transaction`]; a rejection or incomplete answer is
    /// always this message's own (the batch was split down to it).
    pub async fn transaction(&self, bundle: &Value) -> Result<Confirmed, PushError> {
        if self.max == 1 {
            return self.kis.transaction(bundle).await;
        }
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.max * 4);
            tokio::spawn(run(self.kis.clone(), rx, self.max, self.linger));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let gone = || PushError::Transient {
            detail: "the batching task ended".into(),
            retry_after: None,
        };
        queue
            .send(Job {
                bundle: bundle.clone(),
                reply,
            })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn run(kis: Kis, mut rx: mpsc::Receiver<Job>, max: usize, linger: Duration) {
    while let Some(first) = rx.recv().await {
        let batch = crate::batching::gather(&mut rx, first, max, linger).await;
        // Sent in the background: the next batch gathers meanwhile.
        tokio::spawn(send(kis.clone(), batch));
    }
}

/// The messages' entries in one transaction Bundle, in order.
fn merged(batch: &[Job]) -> Value {
    let entries: Vec<Value> = batch
        .iter()
        .flat_map(|j| j.bundle["entry"].as_array().cloned().unwrap_or_default())
        .collect();
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// Sends `batch` as one transaction; on a rejection or an incomplete
/// answer, each half again, until the message at fault stands alone.
async fn send(kis: Kis, batch: Vec<Job>) {
    let mut pending = vec![batch];
    while let Some(mut batch) = pending.pop() {
        if batch.len() == 1 {
            let job = batch.pop().expect("one job");
            let answer = kis.transaction(&job.bundle).await;
            let _ = job.reply.send(answer);
            continue;
        }
        let size = batch.len();
        match kis.transaction(&merged(&batch)).await {
            Ok(confirmed) => {
                let mut locations = confirmed.locations.into_iter();
                let mut resources = confirmed.resources.into_iter();
                for job in batch {
                    let n = job.bundle["entry"].as_array().map_or(0, Vec::len);
                    let own = Confirmed {
                        locations: locations.by_ref().take(n).collect(),
                        resources: resources.by_ref().take(n).collect(),
                    };
                    let _ = job.reply.send(Ok(own));
                }
                crate::telemetry::measure::kis_batch("committed");
            }
            Err(e @ PushError::Transient { .. }) => {
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
                crate::telemetry::measure::kis_batch("transient");
            }
            Err(PushError::Rejected { .. } | PushError::Incomplete(_)) => {
                tracing::info!(size, "KIS refused a batched transaction; splitting it");
                crate::telemetry::measure::kis_batch("split");
                let back = batch.split_off(size / 2);
                pending.push(back);
                pending.push(batch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_keeps_every_entry_in_order() {
        let job = |ids: &[&str]| {
            let (reply, _) = oneshot::channel();
            Job {
                bundle: json!({"resourceType": "Bundle", "type": "transaction",
                    "entry": ids.iter().map(|i| json!({"fullUrl": i})).collect::<Vec<_>>()}),
                reply,
            }
        };
        let m = merged(&[job(&["a", "b"]), job(&["c"]), job(&[])]);
        let urls: Vec<&str> = m["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["fullUrl"].as_str().unwrap())
            .collect();
        assert_eq!(urls, ["a", "b", "c"]);
        assert_eq!(m["type"], "transaction");
    }
}
