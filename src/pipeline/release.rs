//! Releasing a quarantined message: the sealed event runs through decide →
//! deliver → record again, in place ([`Mode::Release`]), with the
//! operator's resolution if one was recorded. Operators reach it through
//! `crate::quarantine` and `crate::review`.

use chrono::{DateTime, Utc};

use super::{Mode, Outcome, Pipeline, Transient};
use crate::event;
use crate::store::{MessageRef, RowKey, StoreError};

/// Why a quarantined message was not released.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("no open quarantine item with this id")]
    NotFound,
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] crate::seal::SealError),
    #[error("the sealed event no longer decodes: {0}")]
    Decode(String),
    #[error("transient failure at {}; try again", .0.stage)]
    Transient(Transient),
}

impl Pipeline {
    /// Runs the quarantined message `key` through the pipeline again, with
    /// the operator's resolution if one was recorded.
    pub async fn release(
        &self,
        key: &(impl RowKey + ?Sized),
        now: DateTime<Utc>,
    ) -> Result<Outcome, ReleaseError> {
        let key = &self.store.row(key)?;
        let entry = self
            .store
            .quarantine_entry(key)
            .await?
            .ok_or(ReleaseError::NotFound)?;
        if entry.released_at.is_some() {
            return Err(ReleaseError::NotFound);
        }
        let message = self.open_quarantined(key, &entry.sealed_event)?;
        let mode = Mode::Release {
            resolved: entry
                .resolved_patient
                .map(|p| (p, entry.resolved_encounter)),
        };
        let outcome = self
            .process_mode(&message, &mode, now)
            .await
            .map_err(ReleaseError::Transient)?;
        crate::telemetry::outcome(&key.source, &outcome);
        if matches!(outcome, Outcome::Archived { .. }) {
            // A retraction at the messenger while it was held.
            self.apply_pending_redactions(key).await;
        }
        Ok(outcome)
    }

    /// The message `key` of a sealed quarantined event: the decoded
    /// message the store names `key`.
    pub fn open_quarantined(
        &self,
        key: &MessageRef,
        sealed_event: &[u8],
    ) -> Result<event::Message, ReleaseError> {
        let place = crate::store::sealed::quarantine_event(key);
        let bytes = self.sealer.open(&place, sealed_event)?;
        let decoded = event::reopen(&bytes).map_err(|e| ReleaseError::Decode(e.to_string()))?;
        for m in decoded.messages {
            if &self.store.message_ref(&m.key)? == key {
                return Ok(m);
            }
        }
        Err(ReleaseError::Decode(
            "the event holds another message".into(),
        ))
    }
}
