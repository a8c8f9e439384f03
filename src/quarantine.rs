//! Quarantine review for operators: opaque item ids, resolution to a
//! patient (and encounter) with an audit record, and release — the
//! quarantined message runs through the pipeline again in place and is
//! archived with the same idempotency as a fresh delivery (conditional
//! creates in the KIS, one transaction turning the quarantined ledger row
//! into an archived one, deletion only after).

use chrono::{DateTime, Utc};

use crate::pipeline::{Outcome, Pipeline, ReleaseError};
use crate::resolve;
use crate::seal::Sealer;
use crate::store::{ConflictItem, MessageRef, QuarantineItem, Store, StoreError, millis};

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
    /// Accepting the conversation's candidate does not decide a message
    /// that matched several patients.
    #[error("the message matched several patients: decide it as an item (quarantine resolve)")]
    SeveralPatients,
    #[error("the candidate patient is not known to the identity map or the KIS")]
    CandidateUnresolved,
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The release itself failed (sealed event, decoding, transient).
    #[error(transparent)]
    Release(ReleaseError),
    #[error(transparent)]
    Seal(#[from] crate::seal::SealError),
    #[error("KIS search: {0}")]
    Resolve(#[from] resolve::ResolveError),
    #[error("the item is not held for review before archive (review_redaction)")]
    NotHeldForReview,
    #[error("the item holds no sealed original")]
    NoHeldOriginal,
    #[error("{0}")]
    Redaction(#[from] crate::media::redact::RedactError),
    /// A reviewer-given reference that is not `Patient/{id}` (or
    /// `Encounter/{id}`).
    #[error("{0} must be a literal reference, {1}/{{id}}")]
    NotLiteral(&'static str, &'static str),
}

impl From<ReleaseError> for ReviewError {
    fn from(e: ReleaseError) -> Self {
        match e {
            ReleaseError::NotFound => Self::NotFound,
            ReleaseError::Store(e) => Self::Store(e),
            e => Self::Release(e),
        }
    }
}

/// An item's id for operators: 16 hex digits of a keyed token of its
/// stored name (source and message token), so the list shows no messenger
/// ids (WhatsApp ids embed phone numbers).
pub fn item_id(sealer: &Sealer, key: &MessageRef) -> String {
    sealer.token(&["quarantine-item", &key.source, &key.token])[..16].to_owned()
}

/// `items`, each with its opaque id for operators.
pub(crate) fn with_ids<T>(items: Vec<T>, id: impl Fn(&T) -> String) -> Vec<(String, T)> {
    items.into_iter().map(|i| (id(&i), i)).collect()
}

/// The item of `listed` whose id is `id`.
pub(crate) fn by_id<T>(listed: Vec<(String, T)>, id: &str) -> Result<T, ReviewError> {
    listed
        .into_iter()
        .find(|(i, _)| i == id)
        .map(|(_, item)| item)
        .ok_or(ReviewError::NotFound)
}

/// Open items with their ids.
pub async fn list(
    store: &Store,
    sealer: &Sealer,
) -> Result<Vec<(String, QuarantineItem)>, StoreError> {
    let items = store.quarantine_list().await?;
    Ok(with_ids(items, |i| item_id(sealer, &i.key)))
}

/// A conflicting duplicate's id: a keyed token of its key and digest.
pub fn conflict_id(sealer: &Sealer, item: &ConflictItem) -> String {
    let k = &item.key;
    sealer.token(&["conflict-item", &k.source, &k.token, &item.digest])[..16].to_owned()
}

/// Conflicting duplicates kept sealed (`duplicate_id_conflict`), with ids.
pub async fn conflicts(
    store: &Store,
    sealer: &Sealer,
) -> Result<Vec<(String, ConflictItem)>, StoreError> {
    let items = store.conflict_list().await?;
    Ok(with_ids(items, |i| conflict_id(sealer, i)))
}

/// The stored name of an open item.
pub async fn find(store: &Store, sealer: &Sealer, id: &str) -> Result<MessageRef, ReviewError> {
    Ok(by_id(list(store, sealer).await?, id)?.key)
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

impl Target {
    /// Reviewer-given literal references, checked: `patient` is
    /// `Patient/{id}`, `encounter` (if any) `Encounter/{id}`.
    ///
    /// # Errors
    /// [`ReviewError::NotLiteral`] naming the offending reference.
    pub fn literal(patient: String, encounter: Option<String>) -> Result<Self, ReviewError> {
        let literal = |r: &str, ty: &str| {
            r.strip_prefix(ty)
                .and_then(|r| r.strip_prefix('/'))
                .is_some_and(|id| !id.is_empty() && !id.contains(['/', '?', '#']))
        };
        if !literal(&patient, "Patient") {
            return Err(ReviewError::NotLiteral("the patient", "Patient"));
        }
        if encounter
            .as_deref()
            .is_some_and(|e| !literal(e, "Encounter"))
        {
            return Err(ReviewError::NotLiteral("the encounter", "Encounter"));
        }
        Ok(Self::Literal { patient, encounter })
    }

    /// The decision's target as the audit trail names it: the literal
    /// references (`Patient/1 Encounter/2`) or `candidate`.
    pub fn describe(&self) -> String {
        match self {
            Target::Literal { patient, encounter } => match encounter {
                Some(e) => format!("{patient} {e}"),
                None => patient.clone(),
            },
            Target::Candidate => "candidate".into(),
        }
    }
}

/// Records the resolution (who, when, to what), then releases the item.
pub async fn resolve(
    pipeline: &Pipeline,
    key: &MessageRef,
    target: Target,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Outcome, ReviewError> {
    let entry = pipeline
        .store()
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
        .store()
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
    key: &MessageRef,
    now: DateTime<Utc>,
) -> Result<Outcome, ReviewError> {
    Ok(pipeline.release(key, now).await?)
}

/// What a reviewer sees of an open item (`quarantine show`): the sealed
/// event (the canonical event with its sender and content, or the raw
/// entry held at decoding) and the sealed detail (the KIS's answer, or a
/// held original), opened.
pub async fn sealed_content(
    store: &Store,
    sealer: &Sealer,
    key: &MessageRef,
) -> Result<(Vec<u8>, Option<Vec<u8>>), ReviewError> {
    let (_, event, detail) = store
        .quarantine_detail(key)
        .await?
        .ok_or(ReviewError::NotFound)?;
    let event = sealer.open(&crate::store::sealed::quarantine_event(key), &event)?;
    let detail = detail
        .map(|d| sealer.open(&crate::store::sealed::quarantine_detail(key), &d))
        .transpose()?;
    Ok((event, detail))
}

/// The held original of an item held `review_redaction`, opened, with its
/// metadata removed where the format allows (orientation kept, so it
/// displays as the rectangles of [`redact`] are meant).
pub async fn held_original(
    store: &Store,
    sealer: &Sealer,
    key: &MessageRef,
) -> Result<Vec<u8>, ReviewError> {
    use crate::media::strip::{Format, strip};
    let (reason, _, detail) = store
        .quarantine_detail(key)
        .await?
        .ok_or(ReviewError::NotFound)?;
    if reason != crate::reason::Reason::ReviewRedaction.as_str() {
        return Err(ReviewError::NotHeldForReview);
    }
    let sealed = detail.ok_or(ReviewError::NoHeldOriginal)?;
    let original = sealer.open(&crate::store::sealed::quarantine_detail(key), &sealed)?;
    Ok(match Format::sniff(&original) {
        Some(format) => match strip(format, bytes::Bytes::from(original.clone())) {
            Ok(stripped) => stripped.bytes.into(),
            Err(_) => original,
        },
        None => original,
    })
}

/// Records a reviewer's redaction of an item held `review_redaction`
/// (rectangles, the held original's SHA-256, who, when), then releases it:
/// the pipeline renders the rectangles black and archives the rendering;
/// the held original is dropped with the archive. Rectangles are checked
/// against the image before anything is recorded.
pub async fn redact(
    pipeline: &Pipeline,
    key: &MessageRef,
    rects: Vec<crate::media::redact::Rect>,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Outcome, ReviewError> {
    use sha2::Digest;
    let (reason, _, detail) = pipeline
        .store()
        .quarantine_detail(key)
        .await?
        .ok_or(ReviewError::NotFound)?;
    if reason != crate::reason::Reason::ReviewRedaction.as_str() {
        return Err(ReviewError::NotHeldForReview);
    }
    let sealed = detail.ok_or(ReviewError::NoHeldOriginal)?;
    let original = pipeline
        .sealer()
        .open(&crate::store::sealed::quarantine_detail(key), &sealed)?;
    if !rects.is_empty() {
        crate::media::redact::redact(&original, &rects)?;
    }
    let request = crate::store::RedactionRequest {
        rects,
        received_sha256: hex::encode(sha2::Sha256::digest(&original)),
        by: by.to_owned(),
        at_ms: millis(now),
    };
    if !pipeline
        .store()
        .record_redaction_request(key, &request)
        .await?
    {
        return Err(ReviewError::NotFound);
    }
    tracing::info!(by, regions = request.rects.len(), "redaction recorded");
    release(pipeline, key, now).await
}
