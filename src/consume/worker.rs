//! Consumer loops. A delivery is acked only once its effect is durable:
//! every message in it has a terminal state in the store, or the payload
//! was dead-lettered and the broker confirmed that publish.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions};
use lapin::types::FieldTable;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Broker, BrokerError};
use crate::delete::DeletionReceipt;
use crate::event::{DecodeError, DecodeErrorCode};
use crate::pipeline::{Pipeline, Verdict};
use crate::shutdown::Shutdown;
use crate::store::{Store, millis};
use crate::telemetry;

/// Why an events consumer session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// `shutdown` flipped.
    Shutdown,
    /// The broker cancelled the consumer (queue deleted, leader moved, …).
    Cancelled,
    /// The channel or connection failed.
    Lost(BrokerError),
}

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
    mut shutdown: Shutdown,
) -> SessionEnd {
    let subscribed = async {
        let channel = broker.consumer_channel(broker.config().prefetch).await?;
        let tag = format!("chartbridge-{}", uuid::Uuid::new_v4().simple());
        let consumer = channel
            .basic_consume(
                broker.config().events_queue.as_str().into(),
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
    let health = pipeline.health.clone();
    let mut accepting = health.accepting();
    if !accepting {
        telemetry::readiness(false, health.readiness().cause());
    }
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    let end = loop {
        tokio::select! {
            _ = shutdown.recv() => break SessionEnd::Shutdown,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done { tracing::error!(error = %e, "delivery task failed"); }
            }
            _ = health.changed() => {
                let now = health.accepting();
                if now != accepting {
                    telemetry::readiness(now, health.readiness().cause());
                    accepting = now;
                }
            }
            next = consumer.next(), if accepting => match next {
                Some(Ok(delivery)) => {
                    let permit = permits.clone().acquire_owned().await.expect("semaphore open");
                    let broker = broker.clone();
                    let pipeline = pipeline.clone();
                    let shutdown = shutdown.clone();
                    tasks.spawn(async move {
                        handle(&broker, &pipeline, delivery, shutdown).await;
                        drop(permit);
                    });
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
    let drained = tokio::time::timeout(drain, async {
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "delivery task failed");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            in_flight = tasks.len(),
            "drain timeout: unfinished deliveries are left to redelivery"
        );
        tasks.abort_all();
    }
    let _ = channel.close(200, "shutdown".into()).await;
    end
}

async fn handle(broker: &Broker, pipeline: &Pipeline, delivery: Delivery, shutdown: Shutdown) {
    let signature = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(crate::event::signature::SIGNATURE_HEADER))
        .and_then(|v| match v {
            lapin::types::AMQPValue::LongString(s) => {
                std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned)
            }
            _ => None,
        });
    let verdict = match pipeline.check_signature(&delivery.data, signature.as_deref()) {
        Ok(()) => pipeline.handle(&delivery.data, shutdown.receiver()).await,
        Err(e) => {
            tracing::warn!(reason = e.code.as_str(), "webhook signature refused");
            Verdict::DeadLetter(e)
        }
    };
    let result = match verdict {
        Verdict::Done => delivery
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
            .map_err(Into::into),
        Verdict::DeadLetter(reason) => {
            telemetry::dead_lettered(reason.code.as_str());
            match broker
                .dead_letter(&delivery.data, &reason, &delivery.properties)
                .await
            {
                Ok(()) => delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .map(drop)
                    .map_err(Into::into),
                Err(e) => {
                    tracing::error!(error = %e, "dead-letter publish failed; delivery requeued");
                    requeue(&delivery).await
                }
            }
        }
        Verdict::Abandoned => return,
        Verdict::Requeue => requeue(&delivery).await,
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "acknowledgement failed; the broker will redeliver");
    }
}

async fn requeue(delivery: &Delivery) -> Result<(), BrokerError> {
    delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .map(drop)
        .map_err(Into::into)
}

/// Consumes deletion receipts and records them; an unreadable receipt is
/// dead-lettered with its reason.
pub async fn consume_receipts(
    broker: &Broker,
    store: Store,
    mut shutdown: Shutdown,
) -> Result<(), BrokerError> {
    let channel = broker.consumer_channel(32).await?;
    let mut consumer = channel
        .basic_consume(
            broker.config().receipts_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    loop {
        let delivery = tokio::select! {
            _ = shutdown.recv() => break,
            next = consumer.next() => match next {
                Some(d) => d?,
                None => break,
            },
        };
        match DeletionReceipt::parse(&delivery.data) {
            Ok(receipt) => {
                let now = millis(chrono::Utc::now());
                match store
                    .record_deletion_receipt(
                        &receipt.deletion_id,
                        receipt.state(),
                        receipt.status.as_str(),
                        receipt.detail.as_deref(),
                        now,
                    )
                    .await
                {
                    Ok(known) => {
                        if !known {
                            tracing::warn!(deletion_id = %receipt.deletion_id, "receipt for an unknown or settled deletion");
                        }
                        telemetry::deletion_receipt(receipt.status.as_str());
                        delivery.ack(BasicAckOptions::default()).await?;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot record receipt; requeued");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        requeue(&delivery).await?;
                    }
                }
            }
            Err(detail) => {
                let reason = DecodeError {
                    code: DecodeErrorCode::SchemaViolation,
                    detail: format!("deletion receipt: {detail}"),
                };
                broker
                    .dead_letter(&delivery.data, &reason, &delivery.properties)
                    .await?;
                delivery.ack(BasicAckOptions::default()).await?;
            }
        }
    }
    let _ = channel.close(200, "shutdown".into()).await;
    Ok(())
}
