//! The events consumer. A delivery is acked only once its effect is durable:
//! every message in it has a terminal state in the store, or the payload
//! was dead-lettered and the broker confirmed that publish.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicNackOptions;
use lapin::types::ShortString;

use super::consumer::{SessionEnd, Spec, consume};
use super::settle::Settler;
use super::{Broker, BrokerError};
use crate::event::{DecodeError, DecodeErrorCode};
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
    let checked = pipeline
        .intake()
        .check_event(&envelope)
        .and_then(|()| identity_encoding(delivery.properties.content_encoding().as_ref()));
    let verdict = match checked {
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

/// Checks the AMQP `content-encoding` property (AMQP 0-9-1, basic class):
/// events are UTF-8 JSON published unencoded, so only an absent or empty
/// property or `identity` (RFC 9110 section 8.4.1) passes. Anything else
/// is refused as `unsupported_encoding`, naming the encoding when it is a
/// plain token (a `gzip` body would otherwise be refused as invalid UTF-8,
/// which is not its defect).
pub fn identity_encoding(encoding: Option<&ShortString>) -> Result<(), DecodeError> {
    let Some(encoding) = encoding.map(|e| e.as_str().trim()) else {
        return Ok(());
    };
    if encoding.is_empty() || encoding.eq_ignore_ascii_case("identity") {
        return Ok(());
    }
    let token = encoding.len() <= 32
        && encoding
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
    let named = if token { encoding } else { "(not a token)" };
    Err(DecodeError::new(
        DecodeErrorCode::UnsupportedEncoding,
        format!("content_encoding {named}: events are published unencoded (identity)"),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unencoded_bodies_pass() {
        for ok in [None, Some(""), Some("identity"), Some(" IDENTITY ")] {
            let e = ok.map(ShortString::from);
            assert!(identity_encoding(e.as_ref()).is_ok(), "{ok:?}");
        }
        let e = identity_encoding(Some(&"gzip".into())).unwrap_err();
        assert_eq!(e.code, DecodeErrorCode::UnsupportedEncoding);
        assert_eq!(
            e.detail,
            "content_encoding gzip: events are published unencoded (identity)"
        );
        let e = identity_encoding(Some(&"Erika Mustermann 0151".into())).unwrap_err();
        assert_eq!(
            e.detail,
            "content_encoding (not a token): events are published unencoded (identity)"
        );
    }
}
