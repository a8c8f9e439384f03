//! The events consumer. A delivery is acked only once its effect is durable:
//! every message in it has a terminal state in the store, or the payload
//! was dead-lettered and the broker confirmed that publish.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicNackOptions;

use super::consumer::{SessionEnd, Spec, consume};
use super::settle::Settler;
use super::{Broker, BrokerError};
use crate::pipeline::{Pipeline, Verdict};
use crate::shutdown::Shutdown;
use crate::telemetry;

/// Consumes the events queue until `shutdown` flips or the session fails,
/// then stops taking new deliveries, lets in-flight work finish for up to
/// `drain`, and returns why it ended. Unfinished deliveries are never acked:
/// the broker redelivers them. While the pipeline's health says the KIS or
/// the store cannot take work, no new delivery is taken (the queue buffers;
/// at most `prefetch` wait in this process).
pub async fn consume_events(
    broker: &Broker,
    pipeline: Arc<Pipeline>,
    concurrency: usize,
    drain: Duration,
    shutdown: Shutdown,
) -> SessionEnd {
    let spec = Spec {
        queue: &broker.config().events_queue,
        tag: "chartbridge",
        prefetch: broker.config().prefetch,
        concurrency,
        drain,
        gate: Some(pipeline.health().clone()),
        batch_acks: true,
    };
    let handler = |delivery, settler| {
        let (broker, pipeline, shutdown) = (broker.clone(), pipeline.clone(), shutdown.clone());
        async move { handle(&broker, &pipeline, delivery, &settler, shutdown).await }
    };
    consume(broker, spec, shutdown.clone(), handler).await
}

async fn handle(
    broker: &Broker,
    pipeline: &Pipeline,
    delivery: Delivery,
    settler: &Settler,
    shutdown: Shutdown,
) {
    let _stage = telemetry::measure::Stage::start("delivery");
    let envelope = crate::auth::Envelope::of(&delivery);
    let verdict = match pipeline.intake().check_event(&envelope) {
        Ok(()) => pipeline.handle(&delivery.data, shutdown.receiver()).await,
        Err(e) => {
            tracing::warn!(reason = e.code.as_str(), detail = %e.detail, "publisher refused");
            Verdict::DeadLetter(e)
        }
    };
    let result = match verdict {
        Verdict::Done => {
            if let Some(latency) = since_published(&delivery) {
                telemetry::measure::commit_latency(latency);
            }
            settler.ack(&delivery).await
        }
        Verdict::DeadLetter(reason) => {
            telemetry::emit(telemetry::DeadLettered {
                code: reason.code.as_str(),
            });
            match broker
                .dead_letter(&delivery.data, &reason, &delivery.properties)
                .await
            {
                Ok(()) => settler.ack(&delivery).await,
                Err(e) => {
                    tracing::error!(error = %e, "dead-letter publish failed; delivery requeued");
                    settler.requeue(&delivery).await
                }
            }
        }
        Verdict::Abandoned => return,
        Verdict::Requeue => settler.requeue(&delivery).await,
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "acknowledgement failed; the broker will redeliver");
    }
}

/// Time since the publisher's AMQP `timestamp` (Unix seconds), if it set one.
fn since_published(delivery: &Delivery) -> Option<Duration> {
    let published = (*delivery.properties.timestamp())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    now.checked_sub(Duration::from_secs(published))
}

/// Hands `delivery` back to the queue for another attempt.
pub async fn requeue(delivery: &Delivery) -> Result<(), BrokerError> {
    delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .map(drop)
        .map_err(Into::into)
}
