//! Deletion adapters: consume one source's deletion queue
//! (`{deletion_exchange}.{source}`), execute each command against the
//! messenger, and publish a receipt to the receipts queue, which the worker
//! records ([`super::receipts`]).
//!
//! Per command: a transient failure (transport, 408, 429, 5xx) publishes one
//! `retrying` receipt with its reason code and is retried in place with
//! backoff until it succeeds or the adapter shuts down (the command then
//! stays unacked and the broker hands it out again); a permanent failure
//! publishes `failed` with its reason code. The command is acked only after
//! the broker confirmed the receipt. Executors are idempotent: a command
//! executed twice deletes once and reports `not-found` or `deleted` again.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use reqwest::StatusCode;

use super::{DeletionCommand, DeletionReceipt, ReceiptStatus};
use crate::consume::consumer::{Spec, consume};
use crate::consume::{Broker, BrokerError};
use crate::event::{DecodeError, DecodeErrorCode};
use crate::retry::{Backoff, GaveUp, RetryLogic, always, retry};
use crate::shutdown::Shutdown;
use crate::telemetry;

/// What an execution found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executed {
    /// The messenger deleted its copy now.
    Deleted,
    /// Nothing was there any more (deleted before): counts as deleted.
    NotFound,
}

/// Whether the medium of `c` must be kept at execution time: `media_uses`
/// (the store, when the adapter was given one) says another message still
/// uses it without a due deletion of its own
/// ([`crate::store::Store::media_still_in_use`]). `false` for a command
/// without a medium or an adapter without a store.
///
/// Errors: the store could not answer (transient `media_uses`).
pub async fn medium_still_in_use(
    media_uses: Option<&crate::store::Store>,
    c: &super::DeletionCommand,
) -> Result<bool, ExecError> {
    let (Some(_), Some(store)) = (&c.media_reference, media_uses) else {
        return Ok(false);
    };
    let kept = store
        .media_still_in_use(&[c.deletion_id.as_str()])
        .await
        .map_err(|_| ExecError::transient("media_uses"))?;
    Ok(kept.contains(&c.deletion_id))
}

/// Why an execution failed. `reason` is a stable code, never content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (transient: {transient})")]
pub struct ExecError {
    pub transient: bool,
    pub reason: String,
    /// A server's Retry-After.
    pub retry_after: Option<Duration>,
}

impl ExecError {
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self {
            transient: false,
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn transient(reason: impl Into<String>) -> Self {
        Self {
            transient: true,
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// A transport error: always transient, named by its kind.
    pub fn transport(place: &str, e: &reqwest::Error) -> Self {
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect"
        } else {
            "transport"
        };
        Self::transient(format!("{place}_{kind}"))
    }

    /// An HTTP answer that is not a success: 408, 429 and 5xx are transient.
    pub fn status(place: &str, status: StatusCode, retry_after: Option<Duration>) -> Self {
        let transient = status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT;
        Self {
            transient,
            reason: format!("{place}_http_{}", status.as_u16()),
            retry_after,
        }
    }
}

/// Reads a `Retry-After` of whole seconds.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Executes deletion commands of one source against its messenger.
pub trait Executor: Send + Sync + 'static {
    /// The source whose queue this executor serves.
    fn source(&self) -> &'static str;
    /// Deletes what `command` names. Must be idempotent.
    fn execute(
        &self,
        command: &DeletionCommand,
    ) -> impl Future<Output = Result<Executed, ExecError>> + Send;
}

/// How an adapter retries and how many commands it runs at once.
#[derive(Debug, Clone, Copy)]
pub struct AdapterSettings {
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub concurrency: u16,
}

impl AdapterSettings {
    fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_initial, self.backoff_max)
    }
}

impl From<&super::config::DeletionConfig> for AdapterSettings {
    fn from(c: &super::config::DeletionConfig) -> Self {
        Self {
            backoff_initial: c.backoff_initial,
            backoff_max: c.backoff_max,
            concurrency: c.concurrency,
        }
    }
}

/// Runs the adapter until `shutdown` flips; in-flight commands that are not
/// finished then stay unacked and are redelivered.
pub async fn run<E: Executor>(
    broker: Broker,
    executor: Arc<E>,
    settings: AdapterSettings,
    shutdown: Shutdown,
) -> Result<(), BrokerError> {
    let queue = broker.declare_deletion_queue(executor.source()).await?;
    tracing::info!(source = executor.source(), "deletion adapter started");
    let spec = Spec {
        queue: &queue,
        tag: "chartbridge-delete",
        prefetch: settings.concurrency,
        concurrency: settings.concurrency.into(),
        drain: Duration::ZERO,
        gate: None,
        batch_acks: false,
    };
    let handler = |delivery, _| {
        let (broker, executor, shutdown) = (broker.clone(), executor.clone(), shutdown.clone());
        async move {
            if let Err(e) = handle(&broker, &*executor, settings, delivery, shutdown).await {
                tracing::warn!(error = %e, "deletion left to redelivery");
            }
        }
    };
    consume(&broker, spec, shutdown.clone(), handler)
        .await
        .into_result()
}

/// Publishes `receipt`, retrying with backoff until confirmed or shutdown.
async fn publish_receipt(
    broker: &Broker,
    receipt: &DeletionReceipt,
    settings: AdapterSettings,
    shutdown: &mut Shutdown,
) -> Result<(), BrokerError> {
    let payload = serde_json::to_vec(receipt).expect("a receipt serialises");
    let failed = always(|e: &BrokerError, _| {
        tracing::warn!(error = %e, "receipt publish failed; retrying");
    });
    retry(&failed, settings.backoff(), shutdown, || {
        broker.publish_receipt(&payload)
    })
    .await
    .map_err(|(GaveUp::Permanent(e) | GaveUp::Shutdown(e))| e)
}

/// A deletion is retried while the messenger's failure is transient.
struct DeletionRetry {
    source: &'static str,
}

impl RetryLogic for DeletionRetry {
    type Error = ExecError;
    fn is_retriable_error(&self, e: &ExecError) -> bool {
        e.transient
    }
    fn retry_after(&self, e: &ExecError) -> Option<Duration> {
        e.retry_after
    }
    fn on_retry(&self, e: &ExecError, _: u32, _: Duration) {
        telemetry::emit(telemetry::DeletionExecuted {
            source: self.source,
            outcome: "retrying",
            reason: &e.reason,
        });
    }
}

async fn handle<E: Executor>(
    broker: &Broker,
    executor: &E,
    settings: AdapterSettings,
    delivery: Delivery,
    mut shutdown: Shutdown,
) -> Result<(), BrokerError> {
    let source = executor.source();
    let command: DeletionCommand = match serde_json::from_slice(&delivery.data) {
        Ok(c) => c,
        Err(e) => {
            let reason = DecodeError {
                code: DecodeErrorCode::SchemaViolation,
                detail: format!("deletion command: {:?}", e.classify()),
            };
            let queue = format!("{}.{source}", broker.config().deletion_exchange);
            broker
                .dead_letter_from(&queue, &delivery.data, &reason, &delivery.properties)
                .await?;
            delivery.ack(BasicAckOptions::default()).await?;
            return Ok(());
        }
    };
    // The first transient failure is reported once with a `retrying`
    // receipt; that publish ends only when confirmed or at shutdown.
    let reported_retrying = AtomicBool::new(false);
    let unreported: Mutex<Option<BrokerError>> = Mutex::new(None);
    let report = shutdown.clone();
    let executed = retry(
        &DeletionRetry { source },
        settings.backoff(),
        &mut shutdown,
        || async {
            let result = if command.source == source {
                executor.execute(&command).await
            } else {
                Err(ExecError::permanent("wrong_source"))
            };
            if let Err(e) = &result
                && e.transient
                && !reported_retrying.load(Ordering::Relaxed)
            {
                let r = DeletionReceipt::new(
                    &command.deletion_id,
                    ReceiptStatus::Retrying,
                    Some(&e.reason),
                );
                match publish_receipt(broker, &r, settings, &mut report.clone()).await {
                    Ok(()) => reported_retrying.store(true, Ordering::Relaxed),
                    Err(e) => *unreported.lock().expect("not poisoned") = Some(e),
                }
            }
            result
        },
    )
    .await;
    let receipt = match executed {
        Ok(executed) => {
            let status = match executed {
                Executed::Deleted => ReceiptStatus::Deleted,
                Executed::NotFound => ReceiptStatus::NotFound,
            };
            telemetry::emit(telemetry::DeletionExecuted {
                source,
                outcome: status.as_str(),
                reason: "",
            });
            DeletionReceipt::new(&command.deletion_id, status, None)
        }
        Err(GaveUp::Shutdown(_)) => {
            return unreported
                .into_inner()
                .expect("not poisoned")
                .map_or(Ok(()), Err);
        }
        Err(GaveUp::Permanent(e)) => {
            telemetry::emit(telemetry::DeletionExecuted {
                source,
                outcome: "failed",
                reason: &e.reason,
            });
            DeletionReceipt::new(&command.deletion_id, ReceiptStatus::Failed, Some(&e.reason))
        }
    };
    publish_receipt(broker, &receipt, settings, &mut shutdown).await?;
    delivery.ack(BasicAckOptions::default()).await?;
    Ok(())
}
