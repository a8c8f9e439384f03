//! Review by conversation. Messages whose patient is not known are
//! quarantined with their conversation's keyed token
//! ([`crate::reason::Reason::IDENTITY`]: `unresolved_conversation`,
//! `patient_candidate`, `patient_ambiguous`, `unknown_patient`). A reviewer
//! decides once per conversation:
//!
//! - [`link`]: the conversation is linked to a patient (literal references,
//!   or the candidate a phone match left) and every held message of it is
//!   resolved (audit: who, when, to what) and released through the pipeline
//!   — archived once each (conditional creates in the KIS, one transaction
//!   turning the quarantined row into an archived one), deletion after.
//!   Later messages resolve through the link.
//! - [`dismiss`]: the conversation is recorded as not relevant (who, when);
//!   each held message becomes not relevant with its messenger deletion
//!   scheduled after the retention, and later messages of the
//!   conversation follow the same decision while it resolves to no patient.
//!
//! Conversations are shown by an opaque id, a keyed token of the stored
//! token: never the conversation id (a phone number or a room id).

use chrono::{DateTime, Utc};

use crate::classify::DISMISSED_RULE;
use crate::event::Message;
use crate::pipeline::{Outcome, Pipeline};
use crate::quarantine::{self, ReviewError, Target};
use crate::reason::Reason;
use crate::resolve;
use crate::seal::Sealer;
use crate::store::{
    ConversationDecision, HeldConversation, Link, MessageRef, Store, StoreError, millis,
};

/// A conversation's id for reviewers: 16 hex digits of a keyed token of
/// its stored token.
pub fn conversation_id(sealer: &Sealer, token: &str) -> String {
    sealer.token(&["conversation-review", token])[..16].to_owned()
}

/// The conversation an open item is held in: its stored token and its id
/// for reviewers ([`conversation_id`]).
///
/// # Errors
/// [`ReviewError::NoConversation`] when the item was held without one
/// (not for its patient); store errors.
pub async fn conversation_of(
    store: &Store,
    sealer: &Sealer,
    key: &MessageRef,
) -> Result<(String, String), ReviewError> {
    let token = store
        .quarantine_conversation(key)
        .await?
        .ok_or(ReviewError::NoConversation)?;
    let id = conversation_id(sealer, &token);
    Ok((token, id))
}

/// Conversations with messages held for their patient, with their ids.
pub async fn list(
    store: &Store,
    sealer: &Sealer,
) -> Result<Vec<(String, HeldConversation)>, StoreError> {
    let held = store.held_conversations().await?;
    Ok(quarantine::with_ids(held, |c| {
        conversation_id(sealer, &c.token)
    }))
}

/// The stored token of a conversation with held messages, by its id.
pub async fn find(store: &Store, sealer: &Sealer, id: &str) -> Result<String, ReviewError> {
    Ok(quarantine::by_id(list(store, sealer).await?, id)?.token)
}

/// What a conversation-level decision did, message by message.
#[derive(Debug, Default)]
pub struct Released {
    /// Each held message and its outcome (or the error that left it held).
    pub outcomes: Vec<(MessageRef, Result<Outcome, ReviewError>)>,
}

impl Released {
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes
            .iter()
            .filter(|(_, o)| o.as_ref().is_ok_and(&f))
            .count()
    }

    pub fn failed(&self) -> usize {
        self.outcomes.iter().filter(|(_, o)| o.is_err()).count()
    }
}

/// Links the conversation with `token` to `target` (recorded with who and
/// when), then resolves and releases each of its held messages. A message
/// whose release fails stays quarantined, resolved, for `quarantine
/// release`; its neighbours go on. Running it again releases nothing twice.
pub async fn link(
    pipeline: &Pipeline,
    token: &str,
    target: Target,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Released, ReviewError> {
    let held = pipeline.store().conversation_held(token).await?;
    let accepting_candidate = matches!(target, Target::Candidate);
    let (patient, encounter) = match target {
        Target::Literal { patient, encounter } => (patient, encounter),
        Target::Candidate => {
            let mut candidates = held.iter().filter_map(|h| h.candidate.as_deref());
            let first = candidates.next().ok_or(ReviewError::NoCandidate)?;
            if candidates.any(|c| c != first) {
                return Err(ReviewError::SeveralCandidates);
            }
            resolve::identity_refs(&pipeline.resolve_context(), first)
                .await?
                .ok_or(ReviewError::CandidateUnresolved)?
        }
    };
    let now_ms = millis(now);
    let link = Link {
        patient: patient.clone(),
        encounter: encounter.clone(),
    };
    pipeline.store().set_link(token, &link, now_ms).await?;
    pipeline
        .store()
        .record_conversation_review(token, ConversationDecision::Linked, by, now_ms)
        .await?;
    tracing::info!(by, messages = held.len(), "conversation linked");
    let mut released = Released::default();
    for h in held {
        // Accepting the conversation's candidate is no choice among the
        // patients a message matched: such a message waits for one.
        if accepting_candidate && h.reason == Reason::PatientAmbiguous.as_str() {
            released
                .outcomes
                .push((h.key, Err(ReviewError::SeveralPatients)));
            continue;
        }
        let target = Target::Literal {
            patient: patient.clone(),
            encounter: encounter.clone(),
        };
        let outcome = quarantine::resolve(pipeline, &h.key, target, by, now).await;
        released.outcomes.push((h.key, outcome));
    }
    Ok(released)
}

/// The held message `key`, opened from its quarantine entry.
async fn held_message(pipeline: &Pipeline, key: &MessageRef) -> Result<Message, ReviewError> {
    let entry = pipeline
        .store()
        .quarantine_entry(key)
        .await?
        .ok_or(ReviewError::NotFound)?;
    Ok(pipeline.open_quarantined(key, &entry.sealed_event)?)
}

/// Links a conversation named by its source and id (`chartbridge link`):
/// the link is recorded, then every message it holds is released.
pub async fn link_conversation(
    pipeline: &Pipeline,
    source: &str,
    conversation: &str,
    link: Link,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Released, ReviewError> {
    let token = resolve::conversation_token(pipeline.sealer(), source, conversation);
    let target = Target::Literal {
        patient: link.patient,
        encounter: link.encounter,
    };
    self::link(pipeline, &token, target, by, now).await
}

/// Dismisses the conversation with `token` as not relevant (recorded with
/// who and when): each held message becomes not relevant under the rule
/// `conversation-dismissed`, its messenger deletion scheduled after
/// [`Pipeline::dismissed_retention`].
pub async fn dismiss(
    pipeline: &Pipeline,
    token: &str,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Released, ReviewError> {
    let now_ms = millis(now);
    let held = pipeline.store().conversation_held(token).await?;
    pipeline
        .store()
        .record_conversation_review(token, ConversationDecision::Dismissed, by, now_ms)
        .await?;
    tracing::info!(by, messages = held.len(), "conversation dismissed");
    let due = now_ms + pipeline.dismissed_retention().as_millis() as i64;
    let mut released = Released::default();
    for h in held {
        let outcome = dismiss_one(pipeline, &h.key, by, due, now_ms).await;
        released.outcomes.push((h.key, outcome));
    }
    Ok(released)
}

async fn dismiss_one(
    pipeline: &Pipeline,
    key: &MessageRef,
    by: &str,
    due_ms: i64,
    now_ms: i64,
) -> Result<Outcome, ReviewError> {
    let message = held_message(pipeline, key).await?;
    let rule = DISMISSED_RULE;
    if pipeline
        .recorder()
        .dismissed(&message, rule, by, due_ms, now_ms)
        .await?
    {
        crate::telemetry::outcome(&key.source, &Outcome::NotRelevant { rule: rule.into() });
        Ok(Outcome::NotRelevant { rule: rule.into() })
    } else {
        let state = pipeline.store().message(key).await?.map(|m| m.state);
        Ok(Outcome::AlreadyTerminal(
            state.unwrap_or(crate::store::MessageState::Quarantined),
        ))
    }
}

/// A KIS patient a reviewer may assign held messages to, with the fewest
/// fields that tell patients apart by identifier: no name, no birth date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientMatch {
    /// Literal reference, `Patient/{id}`.
    pub reference: String,
    /// `Patient.identifier` as `system|value`.
    pub identifiers: Vec<String>,
    /// The patient's encounters (newest first as the KIS answers, at most
    /// [`ENCOUNTERS_SHOWN`]).
    pub encounters: Vec<EncounterMatch>,
}

/// An encounter of a [`PatientMatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncounterMatch {
    /// Literal reference, `Encounter/{id}`.
    pub reference: String,
    /// `Encounter.identifier` as `system|value` (the case number).
    pub identifiers: Vec<String>,
    /// `Encounter.status`.
    pub status: String,
    /// `Encounter.period.start`, as the KIS gives it.
    pub start: String,
}

/// Most patients one search shows.
pub const PATIENTS_SHOWN: usize = 10;
/// Most encounters shown per patient.
pub const ENCOUNTERS_SHOWN: usize = 20;

fn identifiers(resource: &serde_json::Value) -> Vec<String> {
    resource["identifier"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(|i| {
                    let value = i["value"].as_str()?;
                    Some(match i["system"].as_str() {
                        Some(system) => format!("{system}|{value}"),
                        None => value.to_owned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn entries(bundle: &serde_json::Value, resource_type: &str) -> Vec<serde_json::Value> {
    bundle["entry"]
        .as_array()
        .map(|es| {
            es.iter()
                .map(|e| e["resource"].clone())
                .filter(|r| r["resourceType"] == resource_type && r["id"].is_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Searches the KIS for patients by business identifier, for a reviewer
/// choosing whom to assign held messages to: `Patient?identifier=`
/// `system|value` (or a bare `value`, any system: a FHIR R4 token search
/// parameter, search.html#token), then each match's encounters
/// (`Encounter?subject=`).
/// At most [`PATIENTS_SHOWN`] patients.
///
/// # Errors
/// [`PushError`](crate::push::PushError) when the KIS does not answer
/// or refuses the search; an empty `identifier` finds nothing (no search).
pub async fn search_patients(
    kis: &crate::push::Kis,
    identifier: &str,
) -> Result<Vec<PatientMatch>, crate::push::PushError> {
    use crate::push::url::SearchValue;
    let identifier = identifier.trim();
    if identifier.is_empty() {
        return Ok(Vec::new());
    }
    let count = PATIENTS_SHOWN.to_string();
    let token = match identifier.split_once('|') {
        Some((system, code)) => SearchValue::Token { system, code },
        None => SearchValue::Value(identifier),
    };
    let bundle = kis
        .search(
            "Patient",
            &[
                ("identifier", token),
                ("_count", SearchValue::Value(&count)),
            ],
        )
        .await?;
    let mut found = Vec::new();
    for patient in entries(&bundle, "Patient").into_iter().take(PATIENTS_SHOWN) {
        let reference = format!("Patient/{}", patient["id"].as_str().unwrap_or_default());
        let count = ENCOUNTERS_SHOWN.to_string();
        let encounters = kis
            .search(
                "Encounter",
                &[
                    ("subject", SearchValue::Value(&reference)),
                    ("_count", SearchValue::Value(&count)),
                ],
            )
            .await?;
        let encounters = entries(&encounters, "Encounter")
            .into_iter()
            .map(|e| EncounterMatch {
                reference: format!("Encounter/{}", e["id"].as_str().unwrap_or_default()),
                identifiers: identifiers(&e),
                status: e["status"].as_str().unwrap_or_default().to_owned(),
                start: e["period"]["start"].as_str().unwrap_or_default().to_owned(),
            })
            .collect();
        found.push(PatientMatch {
            identifiers: identifiers(&patient),
            reference,
            encounters,
        });
    }
    Ok(found)
}
