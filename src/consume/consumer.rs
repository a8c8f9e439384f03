//! The one consumer loop every queue uses (events, deletion receipts,
//! deletion commands, ADT): take deliveries while the gate is open, run
//! each in its own task with at most `concurrency` at once, stop taking on
//! shutdown or when the broker ends the consumer, then let the deliveries
//! in flight finish for up to `drain`. A handler acks, rejects or
//! dead-letters its delivery itself, through the [`Settler`] it is handed
//! (each delivery its own frame, or batched per channel: [`super::settle`]);
//! one it leaves unacked is redelivered when the channel closes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::settle::Settler;
use super::{Broker, BrokerError};
use crate::correlation::CorrelationId;
use crate::health::Health;
use crate::shutdown::Shutdown;
use crate::telemetry;

/// Why a consumer ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// `shutdown` flipped.
    Shutdown,
    /// The broker cancelled the consumer (queue deleted, leader moved, …).
    Cancelled,
    /// The channel or connection failed.
    Lost(BrokerError),
}

impl SessionEnd {
    /// `Err` only for a failed channel or connection.
    pub fn into_result(self) -> Result<(), BrokerError> {
        match self {
            Self::Lost(e) => Err(e),
            Self::Shutdown | Self::Cancelled => Ok(()),
        }
    }
}

/// What a consumer takes and how many at once.
pub struct Spec<'a> {
    pub queue: &'a str,
    /// Prefix of the consumer tag, e.g. `chartbridge-adt`.
    pub tag: &'static str,
    /// Unacknowledged deliveries the broker sends ahead.
    pub prefetch: u16,
    /// Deliveries handled at once (1: in order).
    pub concurrency: usize,
    /// How long deliveries in flight may finish after the consumer stopped;
    /// zero aborts them at once.
    pub drain: Duration,
    /// While this says the worker cannot take work, no delivery is taken
    /// (the queue buffers; at most `prefetch` wait in this process).
    pub gate: Option<Health>,
    /// Acks batched per channel ([`super::settle`]) instead of one frame
    /// per delivery when its handler settles it.
    pub batch_acks: bool,
}

/// Consumes `spec.queue` with `handle` until shutdown or the end of the
/// consumer; returns why it ended.
pub async fn consume<H, Fut>(
    broker: &Broker,
    spec: Spec<'_>,
    mut shutdown: Shutdown,
    handle: H,
) -> SessionEnd
where
    H: Fn(Delivery, Settler) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let subscribed = async {
        let channel = broker.consumer_channel(spec.prefetch).await?;
        let tag = format!("{}-{}", spec.tag, uuid::Uuid::new_v4().simple());
        let consumer = channel
            .basic_consume(
                spec.queue.into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok::<_, BrokerError>((channel, tag, consumer))
    };
    let (channel, tag, mut consumer) = match subscribed.await {
        Ok(s) => s,
        Err(e) => return SessionEnd::Lost(e),
    };
    let mut accepting = spec.gate.as_ref().is_none_or(Health::accepting);
    if let (Some(gate), false) = (&spec.gate, accepting) {
        telemetry::emit(telemetry::ReadinessChanged {
            ready: false,
            cause: gate.readiness().cause(),
        });
    }
    let (settler, settling) = if spec.batch_acks {
        let (settler, task) = Settler::batched(channel.clone());
        (settler, Some(task))
    } else {
        (Settler::direct(), None)
    };
    let permits = Arc::new(Semaphore::new(spec.concurrency));
    let mut tasks = JoinSet::new();
    let end = loop {
        tokio::select! {
            _ = shutdown.recv() => break SessionEnd::Shutdown,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done { tracing::error!(error = %e, queue = spec.queue, "delivery task failed"); }
            }
            _ = gate_changed(spec.gate.as_ref()), if spec.gate.is_some() => {
                let gate = spec.gate.as_ref().expect("gated");
                let now = gate.accepting();
                if now != accepting {
                    telemetry::emit(telemetry::ReadinessChanged {
                        ready: now,
                        cause: gate.readiness().cause(),
                    });
                    accepting = now;
                }
            }
            next = consumer.next(), if accepting => match next {
                Some(Ok(delivery)) => {
                    let permit = permits.clone().acquire_owned().await.expect("semaphore open");
                    settler.taken(&delivery);
                    let work = handle(delivery, settler.clone());
                    let in_flight = InFlight::enter(spec.tag);
                    // One opaque id per delivery: on its log lines (span),
                    // its quarantine items and its dead letter.
                    let id = CorrelationId::new();
                    let span = tracing::info_span!("delivery", correlation_id = %id, consumer = spec.tag);
                    tasks.spawn(crate::correlation::scope(id, async move {
                        work.await;
                        drop((permit, in_flight));
                    }).instrument(span));
                }
                Some(Err(e)) => break SessionEnd::Lost(e.into()),
                None => break SessionEnd::Cancelled,
            },
        }
    };
    if matches!(end, SessionEnd::Shutdown) {
        let _ = channel
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await;
    }
    let drained = tokio::time::timeout(spec.drain, async {
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, queue = spec.queue, "delivery task failed");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            in_flight = tasks.len(),
            queue = spec.queue,
            "drain timeout: unfinished deliveries are left to redelivery"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    // Every handler has ended (and dropped its settler): the settling task
    // sends what they marked, then ends.
    drop(settler);
    if let Some(mut task) = settling
        && tokio::time::timeout(SETTLE_TIMEOUT, &mut task)
            .await
            .is_err()
    {
        task.abort();
        tracing::warn!(
            queue = spec.queue,
            "settling did not finish; the broker will redeliver"
        );
    }
    let _ = channel.close(200, "shutdown".into()).await;
    end
}

/// How long the last acks of a batched channel may take at the end.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// One delivery counted in `chartbridge_deliveries_in_flight` until dropped
/// (also when its task is aborted).
struct InFlight(&'static str);

impl InFlight {
    fn enter(consumer: &'static str) -> Self {
        telemetry::measure::in_flight(consumer, 1.0);
        Self(consumer)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        telemetry::measure::in_flight(self.0, -1.0);
    }
}

async fn gate_changed(gate: Option<&Health>) {
    match gate {
        Some(gate) => gate.changed().await,
        None => std::future::pending().await,
    }
}
