//! The outbox relay: claims pending deletions, publishes each command with
//! publisher confirms, marks it requested. A crash between publish and mark
//! republishes after the lease; gateways deduplicate on `deletion_id`.

use crate::consume::{Broker, BrokerError};
use crate::seal::{SealError, Sealer};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
    #[error("outbox: {0}")]
    Seal(#[from] SealError),
}

/// How long a claimed deletion is reserved for one relay.
pub const LEASE_MS: i64 = 30_000;

/// One pass: publishes up to `limit` due deletions; returns how many.
pub async fn relay_once(
    store: &Store,
    sealer: &Sealer,
    broker: &Broker,
    now_ms: i64,
    limit: i64,
) -> Result<usize, RelayError> {
    let claimed = store.claim_deletions(now_ms, LEASE_MS, limit).await?;
    let mut published = 0;
    for row in claimed {
        let command = sealer.open(
            &crate::store::sealed::deletion_command(&row.deletion_id),
            &row.sealed_command,
        )?;
        broker.publish_deletion(&row.key.source, &command).await?;
        store
            .mark_deletion_requested(&row.deletion_id, now_ms)
            .await?;
        tracing::debug!(deletion_id = %row.deletion_id, attempt = row.attempts, "deletion requested");
        published += 1;
    }
    Ok(published)
}
