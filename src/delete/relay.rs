//! The outbox relay: claims pending deletions, publishes a batch of commands
//! with overlapping publisher confirms (all sent, then the confirms awaited),
//! and marks the confirmed ones requested in one statement. A crash between
//! publish and mark republishes after the lease; gateways deduplicate on
//! `deletion_id`.

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

/// One pass: claims up to `limit` due deletions, publishes them with
/// overlapping confirms and marks the confirmed ones requested in bulk.
/// Returns how many were requested; when a publish failed, the confirmed
/// ones are still marked and the first error is returned (the others are
/// published again after the lease).
pub async fn relay_once(
    store: &Store,
    sealer: &Sealer,
    broker: &Broker,
    now_ms: i64,
    limit: i64,
) -> Result<usize, RelayError> {
    let claimed = store.claim_deletions(now_ms, LEASE_MS, limit).await?;
    if claimed.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = claimed.iter().map(|r| r.deletion_id.as_str()).collect();
    let media_in_use = store.media_still_in_use(&ids).await?;
    let mut rows = Vec::with_capacity(claimed.len());
    let mut commands = Vec::with_capacity(claimed.len());
    for row in &claimed {
        let mut command = sealer.open(
            &crate::store::sealed::deletion_command(&row.deletion_id),
            &row.sealed_command,
        )?;
        if media_in_use.contains(&row.deletion_id) {
            match without_media(&command) {
                Ok(stripped) => command = stripped,
                Err(e) => {
                    // Never sent with a medium it must keep: left for the
                    // lease, the others go out.
                    tracing::warn!(deletion_id = %row.deletion_id, error = ?e.classify(),
                        "stored deletion command unreadable; not published");
                    continue;
                }
            }
            crate::telemetry::media_kept(&row.key.source);
        }
        rows.push(row);
        commands.push(command);
    }
    let batch: Vec<(&str, &[u8])> = rows
        .iter()
        .zip(&commands)
        .map(|(row, c)| (row.key.source.as_str(), c.as_slice()))
        .collect();
    let results = broker.publish_deletions(&batch).await;
    let mut confirmed = Vec::with_capacity(rows.len());
    let mut first_error = None;
    for (row, result) in rows.iter().zip(results) {
        match result {
            Ok(()) => {
                tracing::debug!(deletion_id = %row.deletion_id, attempt = row.attempts, "deletion requested");
                confirmed.push(row.deletion_id.as_str());
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    store.mark_deletions_requested(&confirmed, now_ms).await?;
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(confirmed.len()),
    }
}

/// `command` without its `media_reference`: the messenger copy is redacted,
/// the medium kept, since another message that uses it has no due deletion yet
/// ([`Store::media_still_in_use`]); the last of them deletes it.
/// Every other field is kept as stored.
fn without_media(command: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let mut parsed: serde_json::Value = serde_json::from_slice(command)?;
    if let Some(fields) = parsed.as_object_mut() {
        fields.remove("media_reference");
    }
    serde_json::to_vec(&parsed)
}
