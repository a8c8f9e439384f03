//! Quarantine review for operators: opaque item ids, resolution to a
//! patient (and encounter) with an audit record, and release — the
//! quarantined message runs through the pipeline again in place and is
//! archived with the same idempotency as a fresh delivery (conditional
//! creates in the KIS, one transaction turning the quarantined ledger row
//! into an archived one, deletion only after).

use chrono::{DateTime, Utc};

use crate::event::{self, MessageKey};
use crate::pipeline::{Mode, Outcome, Pipeline};
use crate::resolve;
use crate::seal::Sealer;
use crate::store::{ConflictItem, QuarantineItem, Store, StoreError, millis};

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("no open quarantine item with this id")]
    NotFound,
    #[error("the item has no candidate patient; give --patient")]
    NoCandidate,
    #[error("the conversation's items name different candidate patients; give --patient")]
    SeveralCandidates,
    #[error("the item belongs to no conversation that can be linked")]
    NoConversation,
    #[error("the candidate patient is not known to the identity map or the KIS")]
    CandidateUnresolved,
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Seal(#[from] crate::seal::SealError),
    #[error("the sealed event no longer decodes: {0}")]
    Decode(String),
    #[error("transient failure at {0}; try again")]
    Transient(&'static str),
    #[error("KIS search: {0}")]
    Resolve(#[from] resolve::ResolveError),
}

/// An item's id for operators: a keyed token of its message key, so the
/// list shows no messenger ids (WhatsApp ids embed phone numbers).
pub fn item_id(sealer: &Sealer, key: &MessageKey) -> String {
    sealer.token(&["quarantine-item", &key.source, &key.message_id])[..16].to_owned()
}

/// Open items with their ids.
pub async fn list(
    store: &Store,
    sealer: &Sealer,
) -> Result<Vec<(String, QuarantineItem)>, StoreError> {
    Ok(store
        .quarantine_list()
        .await?
        .into_iter()
        .map(|i| (item_id(sealer, &i.key), i))
        .collect())
}

/// A conflicting duplicate's id: a keyed token of its key and digest.
pub fn conflict_id(sealer: &Sealer, item: &ConflictItem) -> String {
    let k = &item.key;
    sealer.token(&["conflict-item", &k.source, &k.message_id, &item.digest])[..16].to_owned()
}

/// Conflicting duplicates kept sealed (`duplicate_id_conflict`), with ids.
pub async fn conflicts(
    store: &Store,
    sealer: &Sealer,
) -> Result<Vec<(String, ConflictItem)>, StoreError> {
    Ok(store
        .conflict_list()
        .await?
        .into_iter()
        .map(|i| (conflict_id(sealer, &i), i))
        .collect())
}

/// The message key of an open item.
pub async fn find(store: &Store, sealer: &Sealer, id: &str) -> Result<MessageKey, ReviewError> {
    list(store, sealer)
        .await?
        .into_iter()
        .find(|(i, _)| i == id)
        .map(|(_, item)| item.key)
        .ok_or(ReviewError::NotFound)
}

/// Whom an operator resolves an item to.
#[derive(Debug, Clone)]
pub enum Target {
    /// Literal references, `Patient/{id}` and optionally `Encounter/{id}`.
    Literal {
        patient: String,
        encounter: Option<String>,
    },
    /// The candidate a phone-only match left.
    Candidate,
}

/// Records the resolution (who, when, to what), then releases the item.
pub async fn resolve(
    pipeline: &Pipeline,
    key: &MessageKey,
    target: Target,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Outcome, ReviewError> {
    let entry = pipeline
        .store
        .quarantine_entry(key)
        .await?
        .ok_or(ReviewError::NotFound)?;
    let (patient, encounter) = match target {
        Target::Literal { patient, encounter } => (patient, encounter),
        Target::Candidate => {
            let candidate = entry.candidate.ok_or(ReviewError::NoCandidate)?;
            resolve::identity_refs(&pipeline.resolve_context(), &candidate)
                .await?
                .ok_or(ReviewError::CandidateUnresolved)?
        }
    };
    if !pipeline
        .store
        .resolve_quarantine(key, &patient, encounter.as_deref(), by, millis(now))
        .await?
    {
        return Err(ReviewError::NotFound);
    }
    tracing::info!(by, "quarantine item resolved");
    release(pipeline, key, now).await
}

/// Runs a quarantined message through the pipeline again, with the
/// operator's resolution if one was recorded.
pub async fn release(
    pipeline: &Pipeline,
    key: &MessageKey,
    now: DateTime<Utc>,
) -> Result<Outcome, ReviewError> {
    let entry = pipeline
        .store
        .quarantine_entry(key)
        .await?
        .ok_or(ReviewError::NotFound)?;
    if entry.released_at.is_some() {
        return Err(ReviewError::NotFound);
    }
    let bytes = pipeline.sealer.open(
        &crate::store::sealed::quarantine_event(key),
        &entry.sealed_event,
    )?;
    let decoded =
        event::decode(&bytes, usize::MAX).map_err(|e| ReviewError::Decode(e.to_string()))?;
    let message = decoded
        .messages
        .into_iter()
        .find(|m| &m.key == key)
        .ok_or_else(|| ReviewError::Decode("the event holds another message".into()))?;
    let mode = Mode::Release {
        resolved: entry
            .resolved_patient
            .map(|p| (p, entry.resolved_encounter)),
    };
    let outcome = pipeline
        .process_mode(&message, &mode, now)
        .await
        .map_err(|t| ReviewError::Transient(t.stage))?;
    crate::telemetry::outcome(&key.source, &outcome);
    Ok(outcome)
}
