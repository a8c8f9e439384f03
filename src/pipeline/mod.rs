//! One step that takes a broker payload to a verdict. One event's path,
//! top to bottom:
//!
//! 1. **decode** ([`crate::event::decode`]): an unusable payload is
//!    dead-lettered; skipped entries are counted, held entries quarantined,
//!    retractions recorded ([`entries`], [`redaction`]), conversations whose
//!    user changed identity retired ([`entries`]);
//! 2. **claim** the message key for its content ([`Recorder::claim`]): the
//!    first content wins, a different one is kept as a conflict;
//! 3. **decide** ([`decide`]): classify, resolve, fetch and check the
//!    content, and return a [`Decision`] — writing nothing;
//! 4. **deliver** ([`Archiver`]): map, send to the KIS (FHIR transaction or
//!    MDM^T02), read back; the one place KIS errors become a retry or a
//!    [`Reason`];
//! 5. **record** ([`Recorder`]): the one writer of terminal states and
//!    holds — archive + proof leaf + deletion outbox in one transaction, not
//!    relevant, quarantine, held part, held text;
//! 6. **verdict**: every message terminal (or durably held) → ack;
//!    shutdown first → leave unacked; attempts exhausted → hand back.
//!
//! Split groups ([`split`]), transcript windows ([`transcript`]) and
//! operator releases ([`release`]) run the same decide → deliver → record.

mod archiver;
mod attempts;
mod decide;
mod entries;
mod group;
mod offline;
mod outcome;
mod recorder;
mod redaction;
mod release;
mod split;
mod transcript;

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::classify::{DocumentType, Rules};
use crate::config::{AdtConfig, Config, ResolveConfig};
use crate::event::{self, Message};
use crate::health::Health;
use crate::intake::Admission;
use crate::media::MediaClient;
use crate::push::{Kis, OutputMode};
use crate::resolve;
use crate::seal::Sealer;
use crate::split::GroupContext;
use crate::store::{MessageState, Store};
use crate::telemetry;

pub use archiver::{Archiver, Delivered};
pub use attempts::Transient;
use attempts::{MessageRetry, Step};
pub use decide::{Decision, Quarantine, Ready};
pub use offline::offline_map;
pub use outcome::{Mode, Outcome, Verdict};
pub use recorder::{KeyClaim, Recorder};
pub use release::ReleaseError;

/// Why a pipeline cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The KIS or media client (TLS, authorization, HTTP client).
    #[error(transparent)]
    Kis(#[from] crate::push::SetupError),
    /// The `[intake]` keys.
    #[error(transparent)]
    Intake(#[from] crate::auth::KeyError),
}

/// The stages wired together.
pub struct Pipeline {
    store: Store,
    sealer: Sealer,
    rules: Rules,
    media: MediaClient,
    archiver: Archiver,
    recorder: Recorder,
    max_event_bytes: usize,
    backoff: (Duration, Duration),
    /// Checks before any work: send time, media type.
    admission: Admission,
    /// Transient failures per message before its delivery is handed back.
    max_attempts: u32,
    /// Readiness: the store's writability is reported here.
    health: Health,
    /// Who may publish what (`[intake]`, `whatsapp.app_secret`), checked
    /// before a payload is decoded.
    intake: std::sync::Arc<crate::auth::Intake>,
    adt: AdtConfig,
    resolve: ResolveConfig,
    /// `kis.transcript_window` (ms) and `kis.transcript_document_type`
    /// of `output = "document_reference_only"` (`crate::transcript`).
    transcript: (i64, DocumentType),
}

impl Pipeline {
    pub fn new(
        config: &Config,
        store: Store,
        sealer: Sealer,
        rules: Rules,
    ) -> Result<Self, SetupError> {
        let archiver = Archiver::new(&config.kis)?;
        Ok(Self {
            recorder: Recorder::grouped(
                store.clone(),
                sealer.clone(),
                config.pipeline.group_commit_max,
                config.pipeline.group_commit_linger,
            ),
            store,
            sealer,
            rules,
            health: Health::new(archiver.kis().breaker()),
            archiver,
            media: MediaClient::new(&config.media)
                .map_err(crate::push::SetupError::from)?
                .with_matrix(&config.matrix)
                .spooling_above(config.kis.binary_upload_threshold),
            max_event_bytes: config.broker.max_event_bytes,
            backoff: (config.kis.backoff_initial, config.kis.backoff_max),
            admission: Admission::new(config),
            max_attempts: config.kis.max_attempts.max(1),
            intake: std::sync::Arc::new(crate::auth::Intake::load(config)?),
            adt: config.adt.clone(),
            resolve: config.resolve.clone(),
            transcript: (
                i64::try_from(config.kis.transcript_window.as_millis()).unwrap_or(i64::MAX),
                config.kis.transcript_document_type.clone(),
            ),
        })
    }

    /// Readiness of this pipeline: KIS circuit and store writability.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The KIS client.
    pub fn kis(&self) -> &Kis {
        self.archiver.kis()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The at-rest key.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The writer of terminal states.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// `kis.output`.
    pub fn output(&self) -> OutputMode {
        self.archiver.output()
    }

    /// `kis.transcript_document_type`: the type of a transcript.
    pub fn transcript_document_type(&self) -> &DocumentType {
        &self.transcript.1
    }

    /// The publisher checks of `[intake]` (docs/security.md).
    pub fn intake(&self) -> &crate::auth::Intake {
        &self.intake
    }

    /// A shared handle on the publisher checks (the broker signs its own
    /// publishes with it).
    pub fn intake_handle(&self) -> std::sync::Arc<crate::auth::Intake> {
        self.intake.clone()
    }

    /// Handles one broker payload: decode, then every entry and message to
    /// its terminal state (or a durable hold), each retried in place until
    /// it is recorded, shutdown comes, or its attempts are exhausted.
    pub async fn handle(&self, payload: &[u8], shutdown: watch::Receiver<bool>) -> Verdict {
        let decoded = match event::decode(payload, self.max_event_bytes) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(reason = e.code.as_str(), detail = %e.detail, "event refused");
                return Verdict::DeadLetter(e);
            }
        };
        let verdict = |step| match step {
            Step::Shutdown => Verdict::Abandoned,
            Step::HandBack => Verdict::Requeue,
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
            return verdict(step);
        }
        for held in &decoded.held {
            match self.hold_entry(held, shutdown.clone()).await {
                Ok(outcome) => telemetry::outcome(&held.key.source, &outcome),
                Err(step) => return verdict(step),
            }
        }
        for redaction in &decoded.redactions {
            if let Err(step) = self
                .redaction_until_recorded(redaction, shutdown.clone())
                .await
            {
                return verdict(step);
            }
        }
        for change in &decoded.identity_changes {
            if let Err(step) = self.retire_conversation(change, shutdown.clone()).await {
                return verdict(step);
            }
        }
        if let Some(hold) = decoded.supersedes_hold {
            for message in &decoded.messages {
                if let Err(step) = self.supersede_hold(message, hold, shutdown.clone()).await {
                    return verdict(step);
                }
            }
        }
        for message in &decoded.messages {
            match self.process_until_terminal(message, shutdown.clone()).await {
                Ok(outcome) => telemetry::outcome(&message.key.source, &outcome),
                Err(step) => return verdict(step),
            }
        }
        Verdict::Done
    }

    /// Retries transient failures with backoff until a terminal state or
    /// shutdown. While the KIS circuit is open the attempts wait in the
    /// client; a store that cannot write marks the worker not ready and the
    /// message is retried (never acked) until a write succeeds again.
    async fn process_until_terminal(
        &self,
        message: &Message,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Outcome, Step> {
        // An attempt waiting for an open circuit at shutdown is aborted by
        // the drain timeout; that is safe (a crash at that line).
        let logic = MessageRetry::handing_back(self);
        self.retried(&logic, shutdown, || self.process(message, Utc::now()))
            .await
    }

    /// One attempt at one message. `now` is the archive time.
    pub async fn process(&self, m: &Message, now: DateTime<Utc>) -> Result<Outcome, Transient> {
        self.process_mode(m, &Mode::Fresh, now).await
    }

    /// One attempt at one message, fresh or released from quarantine:
    /// claim, decide, deliver, record.
    async fn process_mode(
        &self,
        m: &Message,
        mode: &Mode,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Transient> {
        let existing = match self.recorder.claim(m, now).await? {
            KeyClaim::Ours(state) => state,
            KeyClaim::Conflict(conflict) => return Ok(conflict),
        };
        match (mode, existing) {
            (Mode::Fresh, Some(state)) => return Ok(Outcome::AlreadyTerminal(state)),
            (Mode::Release { .. }, Some(state)) if state != MessageState::Quarantined => {
                return Ok(Outcome::AlreadyTerminal(state));
            }
            (Mode::Release { .. }, None) => {
                return Ok(Outcome::AlreadyTerminal(MessageState::Quarantined));
            }
            _ => {}
        }
        // Before any state: a medium other messages reuse is deleted only
        // once each of them has a due deletion of its own (`media_uses`).
        if let Some(reference) = m.media_reference() {
            self.store
                .record_media_use(&m.key, reference, crate::store::millis(now))
                .await
                .map_err(Transient::store)?;
        }
        let group = GroupContext::default();
        let decision = match self.admit(m, mode, now) {
            Some(decision) => decision,
            None => self.decide(m, mode, &group).await?,
        };
        self.carry_out(m, mode, decision, &group, now).await
    }

    /// Delivers and records what `decide` decided.
    async fn carry_out(
        &self,
        m: &Message,
        mode: &Mode,
        decision: Decision<'_>,
        group: &GroupContext,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Transient> {
        match decision {
            Decision::NotRelevant { rule, retention } => match mode {
                // Left in quarantine: a release archives or keeps.
                Mode::Release { .. } => Ok(Outcome::NotRelevant { rule }),
                Mode::Fresh => self.recorder.not_relevant(m, &rule, retention, now).await,
            },
            Decision::Quarantine(q) => self.recorder.quarantine(m, mode, q, now).await,
            // Boxed: a part processed alone comes back through here.
            Decision::HoldPart => Box::pin(self.hold_part(m, now)).await,
            Decision::HoldText {
                rule,
                patient,
                encounter,
            } => {
                let resolved = (patient.as_str(), encounter.as_deref());
                self.recorder
                    .hold_text(m, &rule, resolved, self.transcript.0, now)
                    .await
            }
            Decision::Archive(ready) => {
                let marks = archiver::Marks {
                    revises: ready.revises.as_deref(),
                    group,
                    derivation: Some(&ready.derivation),
                };
                match self.archiver.archive(&ready.input(m, now), marks).await? {
                    Delivered::Confirmed {
                        resource,
                        resources,
                    } => {
                        self.recorder
                            .archive(m, mode, &ready, resource, resources, now)
                            .await
                    }
                    Delivered::Refused(q) => self.recorder.quarantine(m, mode, q, now).await,
                }
            }
        }
    }

    /// A part of a split group, decided and recorded with its group's
    /// shared decision and marker.
    async fn process_in_group(
        &self,
        m: &Message,
        group: &GroupContext,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Transient> {
        let decision = self.decide(m, &Mode::Fresh, group).await?;
        self.carry_out(m, &Mode::Fresh, decision, group, now).await
    }

    /// The resolution context over this pipeline's parts.
    pub fn resolve_context(&self) -> resolve::Context<'_> {
        resolve::Context {
            store: &self.store,
            sealer: &self.sealer,
            kis: self.archiver.kis(),
            adt: &self.adt,
            phone_match: self.resolve.phone_match,
            reads: self.archiver.reads()
                && self.archiver.output() != crate::push::OutputMode::Hl7v2Mdm,
        }
    }

    /// How long the messenger copy of a dismissed conversation's message
    /// stays: the `[default]` retention, 24 h when `[default]` is relevant.
    pub fn dismissed_retention(&self) -> Duration {
        self.rules
            .default_retention()
            .unwrap_or(Duration::from_secs(24 * 3600))
    }
}
