//! Deletion receipts from the gateways and adapters: each is recorded
//! against its deletion, or dead-lettered with its reason when unreadable.

use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;

use super::DeletionReceipt;
use crate::auth::{Envelope, Intake};
use crate::consume::consumer::{Spec, consume};
use crate::consume::{Broker, BrokerError};
use crate::event::{DecodeError, DecodeErrorCode};
use crate::shutdown::Shutdown;
use crate::store::{Store, millis};
use crate::telemetry;

/// Consumes the receipts queue, in order, until shutdown or the session ends.
/// A receipt must pass the intake policy of its deletion's source.
pub async fn consume_receipts(
    broker: &Broker,
    store: Store,
    intake: Arc<Intake>,
    drain: Duration,
    shutdown: Shutdown,
) -> Result<(), BrokerError> {
    let spec = Spec {
        queue: &broker.config().receipts_queue,
        tag: "chartbridge-receipts",
        prefetch: 32,
        concurrency: 1,
        drain,
        gate: None,
        batch_acks: false,
    };
    let handler = |delivery, _| {
        let (broker, store, intake) = (broker.clone(), store.clone(), intake.clone());
        async move {
            if let Err(e) = record(&broker, &store, &intake, delivery).await {
                tracing::warn!(error = %e, "receipt left to redelivery");
            }
        }
    };
    consume(broker, spec, shutdown, handler).await.into_result()
}

async fn record(
    broker: &Broker,
    store: &Store,
    intake: &Intake,
    delivery: Delivery,
) -> Result<(), BrokerError> {
    let receipt = match DeletionReceipt::parse(&delivery.data) {
        Ok(receipt) => receipt,
        Err(detail) => {
            let reason = DecodeError {
                code: DecodeErrorCode::SchemaViolation,
                detail: format!("deletion receipt: {detail}"),
            };
            return refuse(broker, delivery, reason).await;
        }
    };
    // The deletion names the source whose policy the receipt must pass; a
    // receipt for an unknown deletion changes nothing (below).
    match store.deletion_source(&receipt.deletion_id).await {
        Ok(Some(source)) => {
            if let Err(reason) = intake.check_receipt(&source, &Envelope::of(&delivery)) {
                tracing::warn!(reason = reason.code.as_str(), detail = %reason.detail, "deletion receipt refused");
                return refuse(broker, delivery, reason).await;
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the receipt's deletion; requeued");
            tokio::time::sleep(Duration::from_millis(500)).await;
            return crate::consume::requeue(&delivery).await;
        }
    }
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
                // Not the id: an unknown one is the publisher's text.
                tracing::warn!("receipt for an unknown or settled deletion");
            }
            telemetry::emit(telemetry::DeletionReceipt {
                status: receipt.status.as_str(),
            });
            delivery.ack(BasicAckOptions::default()).await?;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot record receipt; requeued");
            tokio::time::sleep(Duration::from_millis(500)).await;
            crate::consume::requeue(&delivery).await?;
        }
    }
    Ok(())
}

/// Dead-letters a refused receipt with its reason, then acks it.
async fn refuse(
    broker: &Broker,
    delivery: Delivery,
    reason: DecodeError,
) -> Result<(), BrokerError> {
    telemetry::emit(telemetry::DeadLettered {
        code: reason.code.as_str(),
    });
    let queue = broker.config().receipts_queue.clone();
    broker
        .dead_letter_from(&queue, &delivery.data, &reason, &delivery.properties)
        .await?;
    delivery.ack(BasicAckOptions::default()).await?;
    Ok(())
}
