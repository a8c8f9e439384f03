//! One step that takes a broker payload to a verdict: decode → classify →
//! resolve → fetch media → hash → map → push → record. Each message ends
//! archived, not relevant or quarantined; the consumer acks only then. A
//! part of a split message is held (durably) instead and reaches its
//! terminal state when its group is released (`crate::split`).

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::Digest;
use tokio::sync::watch;

use crate::classify::{Outcome as RuleOutcome, Rules};
use crate::config::{AdtConfig, Config, ResolveConfig, UnknownEncounter, Unresolved};
use crate::delete::{ArchiveProof, DeletionCommand, DeletionReason};
use crate::event::{self, Body, CanonicalEvent, DecodeError, MediaLocation, Message};
use crate::health::Health;
use crate::intake::{self, Admission};
use crate::map::{self, MapInput, MapSettings};
use crate::media::MediaClient;
use crate::prove::ContentHashes;
use crate::prove::leaf::LeafRecord;
use crate::push::{Backoff, Kis, PushError, readback};
use crate::resolve::{self, Resolution};
use crate::seal::Sealer;
use crate::split::{self, GroupContext};
use crate::store::{ArchiveRecord, Claim, DeletionState, MessageState, NewDeletion, Store, millis};
use crate::telemetry;

/// What the consumer does with a delivery.
#[derive(Debug)]
pub enum Verdict {
    /// Every message reached a terminal state: ack.
    Done,
    /// The payload is unusable: dead-letter with the reason, then ack.
    DeadLetter(DecodeError),
    /// Shutdown came first: leave unacked for redelivery.
    Abandoned,
    /// Could not make it durable now: hand back to the broker.
    Requeue,
}

/// The terminal state one message reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Archived {
        resource: String,
    },
    NotRelevant {
        rule: String,
    },
    Quarantined {
        reason: String,
    },
    /// A redelivery of a message that already has its terminal state.
    AlreadyTerminal(MessageState),
    /// A part of a split message, held (durably, sealed) until its group is
    /// released (`crate::split`), or a text message held in its transcript
    /// window until the window is archived (`crate::transcript`).
    Held,
}

/// Reason codes of quarantine, stable for operators and `status`.
pub mod reason {
    pub const UNKNOWN_PATIENT: &str = "unknown_patient";
    pub const MEDIA_HASH_MISMATCH: &str = "media_hash_mismatch";
    pub const MEDIA_TOO_LARGE: &str = "media_too_large";
    pub const MAPPING_FAILED: &str = "mapping_failed";
    pub const KIS_REJECTED: &str = "kis_rejected";
    pub const KIS_INCOMPLETE: &str = "kis_incomplete_answer";
    pub const KIS_SEARCH_AMBIGUOUS: &str = "patient_search_failed";
    /// A phone-number-only match, waiting for an operator's confirmation.
    pub const PATIENT_CANDIDATE: &str = "patient_candidate";
    /// Several patients share the conversation's phone number.
    pub const PATIENT_AMBIGUOUS: &str = "patient_ambiguous";
    /// The patient is known, the event's encounter is not in the KIS.
    pub const UNKNOWN_ENCOUNTER: &str = "unknown_encounter";
    pub const SPLIT_DUPLICATE_PART: &str = "split_duplicate_part";
    /// The resource read back from the KIS differs from what was sent, or
    /// could not be read (DSK I.10): archived there, but not deleted here.
    pub const KIS_READ_BACK_MISMATCH: &str = "kis_read_back_mismatch";
    /// The conversation resolves to no patient (no case reference, no
    /// link, no identity-map phone number) and no named rule decided the
    /// message: held until a reviewer links or dismisses the conversation
    /// (`resolve.unresolved = "hold"`).
    pub const UNRESOLVED_CONVERSATION: &str = "unresolved_conversation";
    /// The rule name recorded for messages of a conversation a reviewer
    /// dismissed as not relevant.
    pub const CONVERSATION_DISMISSED: &str = "conversation-dismissed";
}

/// A fresh delivery, or a quarantined message released by an operator
/// (with the references it was resolved to, if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Fresh,
    Release {
        resolved: Option<(String, Option<String>)>,
    },
}

enum Step {
    Shutdown,
    /// `kis.max_attempts` transient failures while the KIS as a whole
    /// answered: hand the delivery back (the queue's delivery limit bounds it).
    HandBack,
}

/// The stages wired together.
pub struct Pipeline {
    pub store: Store,
    pub sealer: Sealer,
    pub rules: Rules,
    pub kis: Kis,
    pub media: MediaClient,
    pub settings: MapSettings,
    pub max_event_bytes: usize,
    pub backoff: (Duration, Duration),
    /// `kis.read_back`: compare the stored resource before archiving.
    pub read_back: bool,
    /// `kis.output` and its MLLP peer.
    pub output: (crate::push::OutputMode, crate::push::mllp::MllpConfig),
    /// Checks before any work: send time, media type.
    pub admission: Admission,
    /// Transient failures per message before its delivery is handed back.
    pub max_attempts: u32,
    /// Readiness: the store's writability is reported here.
    pub health: Health,
    /// WhatsApp app secret: forwarded webhook signatures are verified.
    pub app_secret: Option<crate::config::Secret>,
    pub adt: AdtConfig,
    pub resolve: ResolveConfig,
    /// `kis.transcript_window` (ms) and `kis.transcript_document_type`
    /// of `output = "document_reference_only"` (`crate::transcript`).
    pub transcript: (i64, crate::classify::DocumentType),
}

impl Pipeline {
    pub fn new(
        config: &Config,
        store: Store,
        sealer: Sealer,
        rules: Rules,
    ) -> Result<Self, crate::push::SetupError> {
        let kis = Kis::new(&config.kis)?;
        Ok(Self {
            store,
            sealer,
            rules,
            health: Health::new(kis.breaker()),
            kis,
            media: MediaClient::new(&config.media)?.with_matrix(&config.matrix),
            settings: MapSettings::from(&config.kis),
            max_event_bytes: config.broker.max_event_bytes,
            backoff: (config.kis.backoff_initial, config.kis.backoff_max),
            read_back: config.kis.read_back,
            output: (config.kis.output, config.kis.mllp.clone()),
            admission: Admission::new(config),
            max_attempts: config.kis.max_attempts.max(1),
            app_secret: config.whatsapp.app_secret.clone(),
            adt: config.adt.clone(),
            resolve: config.resolve.clone(),
            transcript: (
                i64::try_from(config.kis.transcript_window.as_millis()).unwrap_or(i64::MAX),
                config.kis.transcript_document_type.clone(),
            ),
        })
    }

    /// Checks a forwarded `X-Hub-Signature-256` when an app secret is
    /// configured. With a secret, a WhatsApp webhook without the header is
    /// refused (`missing_signature`): the check fails closed. Without a
    /// secret there is nothing to check; other formats carry no header.
    pub fn check_signature(&self, payload: &[u8], header: Option<&str>) -> Result<(), DecodeError> {
        match (&self.app_secret, header) {
            (Some(secret), Some(h)) => {
                event::signature::verify(secret.expose().as_bytes(), payload, h)
            }
            (Some(_), None) if event::is_whatsapp_webhook(payload) => Err(DecodeError::new(
                event::DecodeErrorCode::MissingSignature,
                "WhatsApp webhook without X-Hub-Signature-256 while whatsapp.app_secret is set",
            )),
            _ => Ok(()),
        }
    }

    /// Handles one broker payload.
    pub async fn handle(&self, payload: &[u8], shutdown: watch::Receiver<bool>) -> Verdict {
        let decoded = match event::decode(payload, self.max_event_bytes) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(reason = e.code.as_str(), detail = %e.detail, "event refused");
                return Verdict::DeadLetter(e);
            }
        };
        let source = decoded.format.source();
        for kind in &decoded.skipped {
            telemetry::skipped(source, kind.as_str(), 1);
        }
        if !decoded.skipped.is_empty()
            && let Err(step) = self
                .record_skipped(source, &decoded.skipped, shutdown.clone())
                .await
        {
            return match step {
                Step::Shutdown => Verdict::Abandoned,
                Step::HandBack => Verdict::Requeue,
            };
        }
        for held in &decoded.held {
            match self.hold_entry(held, shutdown.clone()).await {
                Ok(outcome) => telemetry::outcome(&held.key.source, &outcome),
                Err(Step::Shutdown) => return Verdict::Abandoned,
                Err(Step::HandBack) => return Verdict::Requeue,
            }
        }
        for redaction in &decoded.redactions {
            match self
                .redaction_until_recorded(redaction, shutdown.clone())
                .await
            {
                Ok(()) => {}
                Err(Step::Shutdown) => return Verdict::Abandoned,
                Err(Step::HandBack) => return Verdict::Requeue,
            }
        }
        if let Some(hold) = decoded.supersedes_hold {
            for message in &decoded.messages {
                match self.supersede_hold(message, hold, shutdown.clone()).await {
                    Ok(()) => {}
                    Err(Step::Shutdown) => return Verdict::Abandoned,
                    Err(Step::HandBack) => return Verdict::Requeue,
                }
            }
        }
        for message in &decoded.messages {
            match self.process_until_terminal(message, shutdown.clone()).await {
                Ok(outcome) => telemetry::outcome(&message.key.source, &outcome),
                Err(Step::Shutdown) => return Verdict::Abandoned,
                Err(Step::HandBack) => return Verdict::Requeue,
            }
        }
        Verdict::Done
    }

    /// A readable copy of a message quarantined with `hold` (a Matrix event
    /// held `undecryptable` whose room keys arrived later): the quarantine
    /// entry takes this copy as its sealed event and content claim, and is
    /// released through the pipeline (`quarantine::release`), archived like
    /// any released item. A message not held so is left to the normal path
    /// (then already terminal, or fresh). Retried like a message.
    async fn supersede_hold(
        &self,
        m: &Message,
        hold: &'static str,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), Step> {
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        loop {
            let attempt = async {
                let event = serde_json::to_vec(&CanonicalEvent::from_message(m))
                    .expect("a canonical event serialises");
                let digest = intake::content_digest(&self.sealer, m);
                let now = Utc::now();
                if !self
                    .store
                    .replace_held_event(&m.key, hold, &digest, &self.sealer.seal(&event))
                    .await
                    .map_err(|e| Transient::store(e).stage)?
                {
                    return Ok(());
                }
                match crate::quarantine::release(self, &m.key, now).await {
                    Ok(outcome) => {
                        telemetry::outcome(&m.key.source, &outcome);
                        Ok(())
                    }
                    Err(crate::quarantine::ReviewError::Transient(stage)) => Err(stage),
                    Err(e) => {
                        // The copy stays sealed in the quarantine entry.
                        tracing::warn!(error = %e, "release of a superseded hold failed");
                        Ok(())
                    }
                }
            };
            match attempt.await {
                Ok(()) => return Ok(()),
                Err(stage) => {
                    telemetry::transient(stage);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay(None)) => {}
                        _ = shutdown.changed() => return Err(Step::Shutdown),
                    }
                }
            }
        }
    }

    /// Adds a payload's skipped entries to the store's counts by kind
    /// (`chartbridge status` shows them). Retried like a message; a
    /// redelivered payload is counted again.
    async fn record_skipped(
        &self,
        source: &str,
        skipped: &[event::SkipKind],
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), Step> {
        let mut counts: std::collections::BTreeMap<&str, u64> = Default::default();
        for kind in skipped {
            *counts.entry(kind.as_str()).or_default() += 1;
        }
        let counts: Vec<(&str, u64)> = counts.into_iter().collect();
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        loop {
            match self
                .store
                .add_skipped(source, &counts, millis(Utc::now()))
                .await
            {
                Ok(()) => {
                    self.health.set_store_ok(true);
                    return Ok(());
                }
                Err(e) => {
                    let t = Transient::store(e);
                    self.health.set_store_ok(!t.storage);
                    telemetry::transient("store");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay(None)) => {}
                        _ = shutdown.changed() => return Err(Step::Shutdown),
                    }
                }
            }
        }
    }

    /// Quarantines an entry held at decoding with the entry sealed, unless
    /// its key already has a terminal state. Retried like a message.
    async fn hold_entry(
        &self,
        held: &event::HeldEntry,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<Outcome, Step> {
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        loop {
            let attempt = async {
                let raw = serde_json::to_vec(&held.raw).expect("a JSON value serialises");
                let now = millis(Utc::now());
                // The entry claims its key like a message's content does: a
                // later, different payload under the same id (a good copy of
                // a broken entry, or the reverse) is kept as a conflict.
                let digest = self.sealer.token(&[
                    "held-entry/v1",
                    &held.key.source,
                    &held.key.message_id,
                    &hex::encode(sha2::Sha256::digest(&raw)),
                ]);
                if self.store.claim_content(&held.key, &digest, now).await? == Claim::Conflict {
                    self.store
                        .record_conflict(&held.key, &digest, &self.sealer.seal(&raw), now)
                        .await?;
                    return Ok(Outcome::Quarantined {
                        reason: intake::reason::DUPLICATE_ID_CONFLICT.to_owned(),
                    });
                }
                if let Some(existing) = self.store.message(&held.key).await? {
                    return Ok(Outcome::AlreadyTerminal(existing.state));
                }
                self.store
                    .record_quarantine(
                        &held.key,
                        held.reason,
                        &self.sealer.seal(&raw),
                        Some(&self.sealer.seal(held.detail.as_bytes())),
                        now,
                    )
                    .await?;
                Ok(Outcome::Quarantined {
                    reason: held.reason.to_owned(),
                })
            };
            match attempt.await {
                Ok(outcome) => {
                    self.health.set_store_ok(true);
                    return Ok(outcome);
                }
                Err(e) => {
                    let t = Transient::store(e);
                    self.health.set_store_ok(!t.storage);
                    telemetry::transient("store");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay(None)) => {}
                        _ = shutdown.changed() => return Err(Step::Shutdown),
                    }
                }
            }
        }
    }

    /// The KIS resource (`Type/id`) of the archived message `id` of
    /// `source`, `None` when it is not archived (unknown, held, not
    /// relevant).
    async fn archived_resource(&self, source: &str, id: &str) -> Result<Option<String>, Transient> {
        let key = event::MessageKey {
            source: source.to_owned(),
            message_id: id.to_owned(),
        };
        let stored = self.store.message(&key).await.map_err(Transient::store)?;
        Ok(stored
            .filter(|s| s.state == MessageState::Archived)
            .and_then(|s| s.resource))
    }

    /// Records a sender's retraction at the messenger, retrying transient
    /// failures like a message. An archived target's KIS record is marked
    /// (`meta.tag` `retracted-at-source` and a Provenance, docs/matrix.md)
    /// and the retraction recorded; a target that was never archived has
    /// nothing to mark (counted as `non_message_event`).
    async fn redaction_until_recorded(
        &self,
        r: &event::Redaction,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), Step> {
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        let mut counted = 0u32;
        loop {
            if *shutdown.borrow() {
                return Err(Step::Shutdown);
            }
            let t = match self.record_redaction(r).await {
                Ok(()) => {
                    self.health.set_store_ok(true);
                    return Ok(());
                }
                Err(t) => t,
            };
            if t.storage {
                self.health.set_store_ok(false);
            } else if !self.kis.breaker().is_open() {
                counted += 1;
                if counted >= self.max_attempts && t.stage != "store" {
                    tracing::warn!(stage = t.stage, "attempts exhausted; delivery handed back");
                    return Err(Step::HandBack);
                }
            }
            telemetry::transient(t.stage);
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay(t.hint)) => {}
                _ = shutdown.changed() => return Err(Step::Shutdown),
            }
        }
    }

    async fn record_redaction(&self, r: &event::Redaction) -> Result<(), Transient> {
        if self
            .store
            .redaction_mark(&r.key)
            .await
            .map_err(Transient::store)?
            .is_some()
        {
            return Ok(());
        }
        let Some(resource) = self
            .archived_resource(&r.target.source, &r.target.message_id)
            .await?
        else {
            telemetry::skipped(&r.key.source, "non_message_event", 1);
            return Ok(());
        };
        let now = Utc::now();
        let marked = if self.output.0 == crate::push::OutputMode::Hl7v2Mdm {
            // No FHIR record to tag: recorded as not marked.
            Err("kis.output: hl7v2_mdm has no FHIR record to mark".to_owned())
        } else {
            match self.mark_retracted(r, &resource, now).await {
                Ok(provenance) => Ok(provenance),
                Err(PushError::Transient { retry_after, .. }) => {
                    return Err(Transient {
                        stage: "push",
                        hint: retry_after,
                        storage: false,
                    });
                }
                Err(PushError::Rejected { status, .. }) => {
                    Err(format!("KIS refused the mark with HTTP {status}"))
                }
                Err(PushError::Incomplete(detail)) => Err(detail),
            }
        };
        let mark = match marked {
            Ok(provenance) => crate::store::RedactionMark {
                target_id: r.target.message_id.clone(),
                state: "marked".into(),
                resource,
                provenance: Some(provenance),
            },
            Err(detail) => {
                tracing::warn!(detail = %detail, "retraction at the source not marked in the KIS");
                crate::store::RedactionMark {
                    target_id: r.target.message_id.clone(),
                    state: "rejected".into(),
                    resource,
                    provenance: None,
                }
            }
        };
        telemetry::retraction(&r.key.source, &mark.state);
        self.store
            .record_redaction_mark(&r.key, &mark, millis(now))
            .await
            .map_err(Transient::store)?;
        Ok(())
    }

    /// Tags the archived record `resource` (`Type/id`) `retracted-at-source`
    /// (read, then `PUT` with `If-Match` on its version) and writes the
    /// retraction's Provenance at an id derived from the retracted message,
    /// in one transaction. Answers the Provenance's `Type/id`.
    async fn mark_retracted(
        &self,
        r: &event::Redaction,
        resource: &str,
        now: DateTime<Utc>,
    ) -> Result<String, PushError> {
        use map::provenance::{retracted_tag, retraction};
        let mut record = self.kis.read(resource).await?;
        let tag = retracted_tag();
        let tagged = record["meta"]["tag"].as_array().is_some_and(|ts| {
            ts.iter()
                .any(|t| t["system"] == tag["system"] && t["code"] == tag["code"])
        });
        let mut entries = Vec::new();
        if !tagged {
            let version = record["meta"]["versionId"].as_str().map(str::to_owned);
            if !record["meta"].is_object() {
                record["meta"] = serde_json::json!({});
            }
            match record["meta"]["tag"].as_array_mut() {
                Some(tags) => tags.push(tag),
                None => record["meta"]["tag"] = serde_json::json!([tag]),
            }
            let mut request = serde_json::json!({"method": "PUT", "url": resource});
            if let Some(v) = version {
                request["ifMatch"] = serde_json::Value::String(format!("W/\"{v}\""));
            }
            entries.push(serde_json::json!({"resource": record, "request": request}));
        }
        let id = map::stable_id(&r.target, "retraction").to_string();
        let mut provenance = retraction(&r.target, &r.sender, resource, r.at, now, &self.settings);
        provenance["id"] = serde_json::Value::String(id.clone());
        entries.push(serde_json::json!({
            "resource": provenance,
            "request": {"method": "PUT", "url": format!("Provenance/{id}")}
        }));
        let bundle =
            serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        self.kis.transaction(&bundle).await?;
        Ok(format!("Provenance/{id}"))
    }

    /// Retries transient failures with backoff until a terminal state or
    /// shutdown. While the KIS circuit is open the attempts wait in the
    /// client; a store that cannot write marks the worker not ready and the
    /// message is retried (never acked) until a write succeeds again.
    async fn process_until_terminal(
        &self,
        message: &Message,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<Outcome, Step> {
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        let mut counted = 0u32;
        loop {
            if *shutdown.borrow() {
                return Err(Step::Shutdown);
            }
            // An attempt waiting for an open circuit at shutdown is aborted by
            // the drain timeout; that is safe (a crash at that line).
            match self.process(message, Utc::now()).await {
                Ok(outcome) => {
                    self.health.set_store_ok(true);
                    return Ok(outcome);
                }
                Err(Transient {
                    stage,
                    hint,
                    storage,
                }) => {
                    if storage {
                        self.health.set_store_ok(false);
                    } else if !self.kis.breaker().is_open() {
                        counted += 1;
                        if counted >= self.max_attempts && stage != "store" {
                            tracing::warn!(stage, "attempts exhausted; delivery handed back");
                            return Err(Step::HandBack);
                        }
                    }
                    let delay = backoff.next_delay(hint);
                    telemetry::transient(stage);
                    tracing::warn!(
                        stage,
                        attempt = backoff.attempts(),
                        delay_ms = delay.as_millis() as u64,
                        "transient failure; retrying"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => return Err(Step::Shutdown),
                    }
                }
            }
        }
    }

    /// One attempt at one message. `now` is the archive time.
    pub async fn process(&self, m: &Message, now: DateTime<Utc>) -> Result<Outcome, Transient> {
        self.process_mode(m, &Mode::Fresh, now).await
    }

    /// The resolution context over this pipeline's parts.
    pub fn resolve_context(&self) -> resolve::Context<'_> {
        resolve::Context {
            store: &self.store,
            sealer: &self.sealer,
            kis: &self.kis,
            adt: &self.adt,
            phone_match: self.resolve.phone_match,
        }
    }

    /// One attempt at one message, fresh or released from quarantine.
    pub async fn process_mode(
        &self,
        m: &Message,
        mode: &Mode,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Transient> {
        if let Some(conflict) = self.claim_content(m, now).await? {
            return Ok(conflict);
        }
        let existing = self.store.message(&m.key).await.map_err(Transient::store)?;
        match (mode, existing) {
            (Mode::Fresh, Some(existing)) => return Ok(Outcome::AlreadyTerminal(existing.state)),
            (Mode::Release { .. }, Some(e)) if e.state != MessageState::Quarantined => {
                return Ok(Outcome::AlreadyTerminal(e.state));
            }
            (Mode::Release { .. }, None) => {
                return Ok(Outcome::AlreadyTerminal(MessageState::Quarantined));
            }
            _ => {}
        }
        if matches!(mode, Mode::Fresh)
            && let Some(reason) = self.admission.check(m, now)
        {
            return self.quarantine_as(m, mode, (reason, None), None, now).await;
        }
        if matches!(mode, Mode::Fresh) && split::is_split(m) {
            return self.hold(m, now).await;
        }
        self.decide_in(m, mode, &GroupContext::default(), now).await
    }

    /// Classifies, resolves, fetches, maps, pushes and records one fresh
    /// message that has no terminal state yet. `group` is its split group's
    /// shared decision and marker (empty for a message on its own).
    pub(crate) async fn decide(
        &self,
        m: &Message,
        group: &GroupContext,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Transient> {
        self.decide_in(m, &Mode::Fresh, group, now).await
    }

    async fn decide_in(
        &self,
        m: &Message,
        mode: &Mode,
        group: &GroupContext,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Transient> {
        let hint = match mode {
            Mode::Release {
                resolved: Some((patient, encounter)),
            } => resolve::Hint::Link(crate::store::Link {
                patient: patient.clone(),
                encounter: encounter.clone(),
            }),
            _ => resolve::hint(m, &self.store, &self.sealer, &self.adt.default_country_code)
                .await
                .map_err(Transient::store)?,
        };
        let unresolved = matches!(hint, resolve::Hint::None);
        let decision = group.decision(self.rules.classify(m, hint.linked()));
        if unresolved
            && decision.rule == crate::classify::DEFAULT_RULE
            && self.resolve.unresolved == Unresolved::Hold
        {
            return self.unresolved(m, mode, now).await;
        }
        let document_type = match decision.outcome {
            RuleOutcome::NotRelevant { retention } => {
                if matches!(mode, Mode::Release { .. }) {
                    // Left in quarantine: a release archives or keeps.
                    return Ok(Outcome::NotRelevant {
                        rule: decision.rule,
                    });
                }
                return self.not_relevant(m, &decision.rule, retention, now).await;
            }
            RuleOutcome::Relevant { document_type } => document_type,
        };
        if let Some(reason) = self.admission.check_archivable(m) {
            return self.quarantine_as(m, mode, (reason, None), None, now).await;
        }
        let q = |reason: &'static str| (reason, None::<String>);
        let resolved = resolve::resolve(m, hint, &self.resolve_context()).await;
        let (patient, encounter) = match resolved {
            Ok(Resolution::Found { patient, encounter }) => (patient, encounter),
            Ok(Resolution::PatientOnly { patient }) => match self.resolve.unknown_encounter {
                UnknownEncounter::PatientOnly => {
                    telemetry::encounter_unresolved();
                    (patient, None)
                }
                UnknownEncounter::Quarantine => {
                    return self
                        .quarantine_as(m, mode, q(reason::UNKNOWN_ENCOUNTER), None, now)
                        .await;
                }
            },
            Ok(Resolution::Candidate { patient_id }) => {
                return self
                    .quarantine_as(
                        m,
                        mode,
                        (reason::PATIENT_CANDIDATE, Some(patient_id)),
                        None,
                        now,
                    )
                    .await;
            }
            Ok(Resolution::Ambiguous) => {
                return self
                    .quarantine_as(m, mode, q(reason::PATIENT_AMBIGUOUS), None, now)
                    .await;
            }
            Ok(Resolution::Unknown) => {
                let r = if unresolved {
                    reason::UNRESOLVED_CONVERSATION
                } else {
                    reason::UNKNOWN_PATIENT
                };
                return self.quarantine_as(m, mode, q(r), None, now).await;
            }
            Err(e) if e.is_transient() => return Err(Transient::at("resolve")),
            Err(_) => {
                return self
                    .quarantine_as(m, mode, q(reason::KIS_SEARCH_AMBIGUOUS), None, now)
                    .await;
            }
        };
        let content = match self.content(m).await {
            Ok(c) => c,
            Err(ContentError::Transient) => return Err(Transient::at("media")),
            Err(ContentError::Quarantine(r)) => {
                return self.quarantine_as(m, mode, (r, None), None, now).await;
            }
        };
        let hashes = ContentHashes::of(&content);
        if let Body::Media(media) = &m.body
            && media.declared_sha256.is_some_and(|d| d != hashes.sha256)
        {
            return self
                .quarantine_as(m, mode, (reason::MEDIA_HASH_MISMATCH, None), None, now)
                .await;
        }
        if let Body::Media(media) = &m.body
            && let Some((reason, detail)) = crate::media::declared_mismatch(media, &content)
        {
            let detail = detail.into_bytes();
            return self
                .quarantine_as(m, mode, (reason, None), Some(&detail), now)
                .await;
        }
        if self.output.0 == crate::push::OutputMode::DocumentReferenceOnly
            && matches!(m.body, Body::Text(_))
        {
            let resolved = (patient.as_str(), encounter.as_deref());
            let window = self.transcript.0;
            return self
                .hold_text(m, &decision.rule, resolved, window, now)
                .await;
        }
        let input = MapInput {
            message: m,
            content: &content,
            hashes: &hashes,
            patient: &patient,
            encounter: encounter.as_deref(),
            document_type: Some(&document_type),
            archived_at: now,
        };
        let original = match &m.replaces {
            Some(id) => self.archived_resource(&m.key.source, id).await?,
            None => None,
        };
        let tx = match map::transaction(&input, &self.settings) {
            Ok(mut tx) => {
                if let Some(original) = &original {
                    map::provenance::link_revision(&mut tx.bundle, original);
                }
                split::mark_incomplete(
                    &mut tx.bundle,
                    tx.primary_entry,
                    &group.missing,
                    group.count,
                );
                tx
            }
            Err(_) => {
                return self
                    .quarantine_as(m, mode, (reason::MAPPING_FAILED, None), None, now)
                    .await;
            }
        };
        let mdm = self.output.0 == crate::push::OutputMode::Hl7v2Mdm;
        let sent = if mdm {
            let dt = Some(&document_type);
            crate::push::mllp::send_mdm(&self.output.1, &tx, dt, &m.key, now).await
        } else {
            self.kis.transaction(&tx.bundle).await
        };
        let confirmed = match sent {
            Ok(c) => c,
            Err(PushError::Transient { retry_after, .. }) => {
                return Err(Transient {
                    stage: "push",
                    hint: retry_after,
                    storage: false,
                });
            }
            Err(PushError::Rejected { status, outcome }) => {
                tracing::warn!(status, "KIS rejected a transaction");
                let detail = outcome.map(|o| o.to_string().into_bytes());
                return self
                    .quarantine_as(
                        m,
                        mode,
                        (reason::KIS_REJECTED, None),
                        detail.as_deref(),
                        now,
                    )
                    .await;
            }
            Err(PushError::Incomplete(detail)) => {
                let detail = detail.into_bytes();
                return self
                    .quarantine_as(m, mode, (reason::KIS_INCOMPLETE, None), Some(&detail), now)
                    .await;
            }
        };
        if self.read_back && !mdm {
            let identifier = map::identifier_value(&m.key);
            let expected = readback::Expected {
                content: &content,
                hashes: &hashes,
                patient: &patient,
                identifier: (&self.settings.identifier_system, &identifier),
            };
            match readback::check(&self.kis, &tx, &confirmed, &expected).await {
                Ok(()) => {}
                Err(readback::ReadBackError::Transient(_)) => {
                    return Err(Transient::at("read_back"));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "read-back check failed");
                    let detail = e.place().into_bytes();
                    return self
                        .quarantine_as(
                            m,
                            mode,
                            (reason::KIS_READ_BACK_MISMATCH, None),
                            Some(&detail),
                            now,
                        )
                        .await;
                }
            }
        }
        let resource = confirmed.locations[if mdm { 0 } else { tx.primary_entry }].clone();
        self.archive(
            m,
            mode,
            &decision.rule,
            &hashes,
            resource,
            confirmed.locations,
            now,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn archive(
        &self,
        m: &Message,
        mode: &Mode,
        rule: &str,
        hashes: &ContentHashes,
        resource: String,
        resources: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Transient> {
        let leaf = LeafRecord::new(
            hashes.sha256,
            m.key.to_string(),
            resource.clone(),
            millis(now),
        )
        .map_err(|_| Transient::at("leaf"))?;
        let command = DeletionCommand::for_message(
            m,
            DeletionReason::Archived,
            Some(ArchiveProof {
                resource: resource.clone(),
                content_sha256: hashes.sha256_hex(),
            }),
        );
        let record = ArchiveRecord {
            key: m.key.clone(),
            rule: rule.to_owned(),
            content_sha256: hashes.sha256_hex(),
            resource: resource.clone(),
            resources,
            leaf_data: leaf.encode(),
            deletion: self.deletion(
                &command,
                DeletionReason::Archived,
                DeletionState::Pending,
                millis(now),
            ),
        };
        let recorded = match mode {
            Mode::Fresh => self.store.record_archive(&record, millis(now)).await,
            Mode::Release { .. } => {
                self.store
                    .record_archive_released(&record, millis(now))
                    .await
            }
        };
        match recorded {
            Ok(Some(_)) => Ok(Outcome::Archived { resource }),
            Ok(None) => Ok(Outcome::AlreadyTerminal(MessageState::Archived)),
            Err(e) => Err(Transient::store(e)),
        }
    }

    pub(crate) fn deletion(
        &self,
        command: &DeletionCommand,
        reason: DeletionReason,
        state: DeletionState,
        not_before_ms: i64,
    ) -> NewDeletion {
        let json = serde_json::to_vec(command).expect("a deletion command serialises");
        NewDeletion {
            deletion_id: command.deletion_id.clone(),
            key: crate::event::MessageKey {
                source: command.source.clone(),
                message_id: command.message_id.clone(),
            },
            reason: reason.as_str(),
            sealed_command: self.sealer.seal(&json),
            not_before_ms,
            state,
        }
    }

    async fn not_relevant(
        &self,
        m: &Message,
        rule: &str,
        retention: Duration,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Transient> {
        let command = DeletionCommand::for_message(m, DeletionReason::NotRelevant, None);
        let due = millis(now) + retention.as_millis() as i64;
        let d = self.deletion(
            &command,
            DeletionReason::NotRelevant,
            DeletionState::Scheduled,
            due,
        );
        self.store
            .record_not_relevant(&m.key, rule, &d, millis(now))
            .await
            .map_err(Transient::store)?;
        Ok(Outcome::NotRelevant {
            rule: rule.to_owned(),
        })
    }

    /// A message of a conversation that resolves to no patient, decided by
    /// no named rule: not relevant when a reviewer dismissed the
    /// conversation (the `[default]` retention applies, 24 h when
    /// `[default]` is relevant), else quarantined as
    /// `unresolved_conversation` with the conversation's token.
    async fn unresolved(
        &self,
        m: &Message,
        mode: &Mode,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Transient> {
        let token = resolve::conversation_token(&self.sealer, &m.key.source, &m.conversation);
        let review = self
            .store
            .conversation_review(&token)
            .await
            .map_err(Transient::store)?;
        if review.is_some_and(|r| r.decision == crate::store::ConversationDecision::Dismissed) {
            let rule = reason::CONVERSATION_DISMISSED;
            if matches!(mode, Mode::Release { .. }) {
                return Ok(Outcome::NotRelevant { rule: rule.into() });
            }
            return self
                .not_relevant(m, rule, self.dismissed_retention(), now)
                .await;
        }
        let q = (reason::UNRESOLVED_CONVERSATION, None);
        self.quarantine_as(m, mode, q, None, now).await
    }

    /// How long the messenger copy of a dismissed conversation's message
    /// stays: the `[default]` retention, 24 h when `[default]` is relevant.
    pub fn dismissed_retention(&self) -> Duration {
        self.rules
            .default_retention()
            .unwrap_or(Duration::from_secs(24 * 3600))
    }

    /// Quarantines a fresh message (keeping a candidate patient if any);
    /// a released one stays quarantined with the new reason. A message held
    /// for its patient ([`crate::store::IDENTITY_REASONS`]) keeps its
    /// conversation's token, so a reviewer's decision about the
    /// conversation reaches it.
    async fn quarantine_as(
        &self,
        m: &Message,
        mode: &Mode,
        (reason, candidate): (&'static str, Option<String>),
        detail: Option<&[u8]>,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Transient> {
        match (mode, candidate) {
            (Mode::Release { .. }, _) => {
                self.store
                    .requarantine(&m.key, reason, millis(now))
                    .await
                    .map_err(Transient::store)?;
                Ok(Outcome::Quarantined {
                    reason: reason.to_owned(),
                })
            }
            (Mode::Fresh, candidate)
                if candidate.is_some() || crate::store::IDENTITY_REASONS.contains(&reason) =>
            {
                let event = serde_json::to_vec(&CanonicalEvent::from_message(m))
                    .expect("a canonical event serialises");
                let token =
                    resolve::conversation_token(&self.sealer, &m.key.source, &m.conversation);
                self.store
                    .record_quarantine_conversation(
                        &m.key,
                        reason,
                        &self.sealer.seal(&event),
                        candidate.as_deref(),
                        &token,
                        millis(now),
                    )
                    .await
                    .map_err(Transient::store)?;
                Ok(Outcome::Quarantined {
                    reason: reason.to_owned(),
                })
            }
            (Mode::Fresh, _) => self.quarantine(m, reason, detail, now).await,
        }
    }

    pub(crate) async fn quarantine(
        &self,
        m: &Message,
        reason: &str,
        detail: Option<&[u8]>,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Transient> {
        let event = serde_json::to_vec(&CanonicalEvent::from_message(m))
            .expect("a canonical event serialises");
        let sealed_detail = detail.map(|d| self.sealer.seal(d));
        self.store
            .record_quarantine(
                &m.key,
                reason,
                &self.sealer.seal(&event),
                sealed_detail.as_ref(),
                millis(now),
            )
            .await
            .map_err(Transient::store)?;
        Ok(Outcome::Quarantined {
            reason: reason.to_owned(),
        })
    }

    /// The first content under a message key wins; a different one under
    /// the same key is kept sealed as a conflict and changes nothing else.
    async fn claim_content(
        &self,
        m: &Message,
        now: DateTime<Utc>,
    ) -> Result<Option<Outcome>, Transient> {
        let digest = intake::content_digest(&self.sealer, m);
        match self
            .store
            .claim_content(&m.key, &digest, millis(now))
            .await
            .map_err(Transient::store)?
        {
            Claim::Ours => Ok(None),
            Claim::Conflict => {
                let event = serde_json::to_vec(&CanonicalEvent::from_message(m))
                    .expect("a canonical event serialises");
                self.store
                    .record_conflict(&m.key, &digest, &self.sealer.seal(&event), millis(now))
                    .await
                    .map_err(Transient::store)?;
                Ok(Some(Outcome::Quarantined {
                    reason: intake::reason::DUPLICATE_ID_CONFLICT.to_owned(),
                }))
            }
        }
    }

    async fn content<'m>(&self, m: &'m Message) -> Result<Cow<'m, [u8]>, ContentError> {
        let max = self.media.max_bytes();
        match &m.body {
            Body::Text(t) => Ok(Cow::Borrowed(t.as_bytes())),
            Body::Media(media) => match &media.location {
                MediaLocation::Inline(bytes) if bytes.len() as u64 > max => {
                    Err(ContentError::Quarantine(reason::MEDIA_TOO_LARGE))
                }
                MediaLocation::Inline(bytes) => Ok(Cow::Borrowed(bytes)),
                MediaLocation::Reference(id) => {
                    self.media.fetch(id).await.map(Cow::Owned).map_err(|e| {
                        if e.is_transient() {
                            ContentError::Transient
                        } else {
                            ContentError::Quarantine(e.reason())
                        }
                    })
                }
                MediaLocation::Encrypted(file) => {
                    let ciphertext = self.media.fetch(&file.url).await.map_err(|e| {
                        if e.is_transient() {
                            ContentError::Transient
                        } else {
                            ContentError::Quarantine(e.reason())
                        }
                    })?;
                    // The ciphertext must be the one the sender hashed
                    // (`hashes.sha256`); the archive hash is the plaintext's.
                    file.decrypt(&ciphertext)
                        .map(Cow::Owned)
                        .ok_or(ContentError::Quarantine(reason::MEDIA_HASH_MISMATCH))
                }
            },
        }
    }
}

enum ContentError {
    Transient,
    Quarantine(&'static str),
}

/// A failure worth retrying, with the stage it happened in.
#[derive(Debug)]
pub struct Transient {
    pub stage: &'static str,
    pub hint: Option<Duration>,
    /// The store could not write (disk full, IO error): stop consuming.
    pub storage: bool,
}

impl Transient {
    pub(crate) fn at(stage: &'static str) -> Self {
        Self {
            stage,
            hint: None,
            storage: false,
        }
    }

    pub(crate) fn store(e: crate::store::StoreError) -> Self {
        let storage = e.is_storage_failure();
        if storage {
            tracing::error!(error = %e, "store cannot write; not taking deliveries");
        } else if !e.is_transient() {
            tracing::error!(error = %e, "store failure");
        } else {
            tracing::debug!(error = %e, "store busy");
        }
        Self {
            storage,
            ..Self::at("store")
        }
    }
}
