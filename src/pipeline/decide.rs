//! Deciding a message's fate: admission, classification, resolution of
//! patient and encounter, the content and its checks. The answer is a
//! [`Decision`]; nothing here writes (it reads the store, the KIS search
//! and the media API).

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Mode, Pipeline, Transient};
use crate::classify::{DEFAULT_RULE, DISMISSED_RULE, DocumentType, Outcome as RuleOutcome};
use crate::config::{UnknownEncounter, Unresolved};
use crate::event::{Body, MediaLocation, Message};
use crate::map::MapInput;
use crate::media::minimise::{self, Derivation, Minimised, Review};
use crate::media::spool::Content;
use crate::prove::ContentHashes;
use crate::push::OutputMode;
use crate::reason::Reason;
use crate::resolve::{self, Resolution};
use crate::split::{self, GroupContext};
use crate::store::{ConversationDecision, MessageState};
use crate::telemetry;

/// What is to become of one message.
#[derive(Debug)]
pub enum Decision<'m> {
    /// Not relevant under `rule`: its messenger copy is deleted after
    /// `retention` (a released message stays quarantined instead).
    NotRelevant { rule: String, retention: Duration },
    /// Held sealed for review.
    Quarantine(Quarantine),
    /// A part of a split message: held until its group is released.
    HoldPart,
    /// A relevant, resolved text message under `kis.output =
    /// "document_reference_only"`: held in its transcript window.
    HoldText {
        rule: String,
        patient: String,
        encounter: Option<String>,
    },
    /// Relevant and resolved, with its content: archive it (boxed: the
    /// largest variant).
    Archive(Box<Ready<'m>>),
}

/// A quarantine: the reason, a candidate patient a phone-only match left,
/// and a detail (sealed) naming the defect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    pub reason: Reason,
    pub candidate: Option<String>,
    pub detail: Option<Vec<u8>>,
}

impl Quarantine {
    pub fn new(reason: Reason) -> Self {
        Self {
            reason,
            candidate: None,
            detail: None,
        }
    }

    pub fn with_detail(reason: Reason, detail: impl Into<Vec<u8>>) -> Self {
        Self {
            detail: Some(detail.into()),
            ..Self::new(reason)
        }
    }
}

impl<'m> From<Quarantine> for Decision<'m> {
    fn from(q: Quarantine) -> Self {
        Decision::Quarantine(q)
    }
}

/// Everything an archive needs: the rule and document type, patient and
/// encounter, the content to archive and its hashes, how it derives from
/// the received content (docs/media-minimisation.md), and the archived
/// resource this message revises (an edit).
#[derive(Debug)]
pub struct Ready<'m> {
    pub rule: String,
    pub document_type: DocumentType,
    pub patient: String,
    pub encounter: Option<String>,
    /// The archived bytes (minimised) and their hashes: spooled when
    /// longer than `kis.binary_upload_threshold` (FHIR output), then
    /// uploaded as a Binary of their own before the transaction.
    pub content: Content<'m>,
    pub hashes: ContentHashes,
    /// The received bytes' hashes and the transformation.
    pub derivation: Derivation,
    pub revises: Option<String>,
}

impl Ready<'_> {
    /// The mapping input of `m` archived at `now`.
    pub fn input<'a>(&'a self, m: &'a Message, now: DateTime<Utc>) -> MapInput<'a> {
        MapInput {
            message: m,
            content: self.content.in_memory().unwrap_or_default(),
            binary: self.content.spool(),
            hashes: &self.hashes,
            patient: &self.patient,
            encounter: self.encounter.as_deref(),
            document_type: Some(&self.document_type),
            archived_at: now,
        }
    }
}

impl Pipeline {
    /// The checks on a fresh arrival before anything else: send time
    /// (quarantine) and split parts (held). `None`: decide.
    pub(super) fn admit(
        &self,
        m: &Message,
        mode: &Mode,
        now: DateTime<Utc>,
    ) -> Option<Decision<'static>> {
        if *mode != Mode::Fresh {
            return None;
        }
        if let Some(reason) = self.admission.check(m, now) {
            return Some(Quarantine::new(reason).into());
        }
        split::is_split(m).then_some(Decision::HoldPart)
    }

    /// Classifies, resolves and fetches one message that has no terminal
    /// state yet. `group` is its split group's shared decision (empty for
    /// a message on its own).
    pub(super) async fn decide<'m>(
        &self,
        m: &'m Message,
        mode: &Mode,
        group: &GroupContext,
    ) -> Result<Decision<'m>, Transient> {
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
        let unresolved = hint.unresolved();
        let decision = group.decision(self.rules.classify(m, hint.linked()));
        if unresolved && decision.rule == DEFAULT_RULE {
            if self.resolve.unresolved == Unresolved::Hold {
                return self.unresolved(m).await;
            }
            // The weaker policy deletes unresolved conversations' content,
            // but not that of one whose user changed identity.
            if hint == resolve::Hint::Retired {
                return Ok(Quarantine::new(Reason::UnresolvedConversation).into());
            }
        }
        // A part of a group released with parts missing, none of those
        // present relevant: a missing part may be relevant, and then every
        // part is (the group rule). Not deleted on this part's rule alone.
        if *mode == Mode::Fresh
            && (!group.missing.is_empty() || group.late)
            && group.relevant.is_none()
            && matches!(decision.outcome, RuleOutcome::NotRelevant { .. })
        {
            let detail = if group.late {
                format!(
                    "a part that arrived after its group was released incomplete; the group's other parts may be relevant: not deleted on rule {}",
                    decision.rule
                )
            } else {
                format!(
                    "{}; no part present is relevant, a missing one may be: not deleted on rule {}",
                    split::marker_text(&group.missing, group.count),
                    decision.rule
                )
            };
            return Ok(Quarantine::with_detail(Reason::SplitIncomplete, detail).into());
        }
        // In a conversation that names a patient, content no rule names
        // (a media type the rules leave out) is not deleted on [default]'s
        // say: it is held until a person or a named rule decides.
        if !unresolved
            && *mode == Mode::Fresh
            && decision.rule == DEFAULT_RULE
            && matches!(decision.outcome, RuleOutcome::NotRelevant { .. })
        {
            let detail = format!(
                "no rule names content type {} in a conversation linked to a patient; \
                 [default] would delete it",
                m.content_type()
            );
            return Ok(Quarantine::with_detail(Reason::UnsupportedMediaType, detail).into());
        }
        let document_type = match decision.outcome {
            RuleOutcome::NotRelevant { retention } => {
                return Ok(Decision::NotRelevant {
                    rule: decision.rule,
                    retention,
                });
            }
            RuleOutcome::Relevant { document_type } => document_type,
        };
        if let Some(reason) = self.admission.check_archivable(m) {
            return Ok(Quarantine::new(reason).into());
        }
        let (patient, encounter) = match self.resolved(m, hint, unresolved).await? {
            Ok(found) => found,
            Err(q) => return Ok(q.into()),
        };
        let revises = match &m.replaces {
            Some(id) => match self.revised(m, mode, id, &patient).await? {
                Ok(revises) => revises,
                Err(q) => return Ok(q.into()),
            },
            None => None,
        };
        let (content, hashes) = match self.content(m).await? {
            Ok(c) => c,
            Err(reason) => return Ok(Quarantine::new(reason).into()),
        };
        if let Body::Media(media) = &m.body {
            if media.declared_sha256.is_some_and(|d| d != hashes.sha256) {
                return Ok(Quarantine::new(Reason::MediaHashMismatch).into());
            }
            // Named as the source declares it: Matrix `info.mimetype`,
            // WhatsApp `{type}.mime_type` (a voice note is an `audio`).
            let object = match (m.key.source.as_str(), m.kind()) {
                ("whatsapp", crate::event::MessageKind::Voice) => "audio",
                ("whatsapp", kind) => kind.as_str(),
                _ => "info",
            };
            if let Some((reason, detail)) =
                crate::media::declared_mismatch_at(media, content.len(), content.head(), object)
            {
                return Ok(Quarantine::with_detail(reason, detail).into());
            }
        }
        let review = self.review(m, mode, &decision.rule).await?;
        let review = review.as_ref().map_or(Review::NotAsked, Review::of);
        let mdm = self.archiver.output() == OutputMode::Hl7v2Mdm;
        let content = if content.spool().is_some()
            && (mdm || minimise::needs_memory(m, content.head(), review))
        {
            if content.len() > self.media.in_memory_max() {
                let detail = "larger than media.in_memory_max_bytes for metadata removal, \
                              review or MDM output";
                return Ok(Quarantine::with_detail(Reason::MediaTooLarge, detail).into());
            }
            Content::Memory(content.into_memory().await.map_err(spool_read)?)
        } else {
            content
        };
        let (content, hashes, derivation) =
            match minimise::minimise(m, content, hashes, review, |t| {
                self.media.passes_unstripped(t)
            }) {
                Minimised::Archive(p) => (p.content, p.hashes, p.derivation),
                Minimised::Refuse(reason) => return Ok(Quarantine::new(reason).into()),
                Minimised::HoldForReview(original) => {
                    let q = Quarantine::with_detail(Reason::ReviewRedaction, original.into_owned());
                    return Ok(q.into());
                }
            };
        // Archived bytes above the threshold travel as a Binary of their
        // own, streamed from a spool (not under MDM output, which carries
        // the bytes in the message).
        let content = if mdm {
            content
        } else {
            content
                .spooled_above(
                    self.archiver.binary_upload_threshold(),
                    self.media.spool_dir(),
                )
                .await
                .map_err(spool_read)?
        };
        if self.archiver.output() == OutputMode::DocumentReferenceOnly
            && matches!(m.body, Body::Text(_))
        {
            return Ok(Decision::HoldText {
                rule: decision.rule,
                patient,
                encounter,
            });
        }
        Ok(Decision::Archive(Box::new(Ready {
            rule: decision.rule,
            document_type,
            patient,
            encounter,
            content,
            hashes,
            derivation,
            revises,
        })))
    }

    /// What a `review_before_archive` rule asks of `m`: `None` when no
    /// rule asks; `Some(None)` when review is pending; `Some(Some(r))` on
    /// the release of a message a reviewer gave request `r` for.
    async fn review(
        &self,
        m: &Message,
        mode: &Mode,
        rule: &str,
    ) -> Result<Option<Option<crate::store::RedactionRequest>>, Transient> {
        if !self.rules.review_before_archive(rule) || !matches!(m.body, Body::Media(_)) {
            return Ok(None);
        }
        if !matches!(mode, Mode::Release { .. }) {
            return Ok(Some(None));
        }
        let request = self
            .store
            .redaction_request(&m.key)
            .await
            .map_err(Transient::store)?;
        Ok(Some(request))
    }

    /// A message of a conversation that resolves to no patient, decided by
    /// no named rule: not relevant when a reviewer dismissed the
    /// conversation (the `[default]` retention, 24 h when `[default]` is
    /// relevant), else quarantined as `unresolved_conversation`.
    async fn unresolved(&self, m: &Message) -> Result<Decision<'static>, Transient> {
        let token = resolve::conversation_token(&self.sealer, &m.key.source, &m.conversation);
        let review = self
            .store
            .conversation_review(&token)
            .await
            .map_err(Transient::store)?;
        if review.is_some_and(|r| r.decision == ConversationDecision::Dismissed) {
            return Ok(Decision::NotRelevant {
                rule: DISMISSED_RULE.to_owned(),
                retention: self.dismissed_retention(),
            });
        }
        Ok(Quarantine::new(Reason::UnresolvedConversation).into())
    }

    /// Patient and encounter references, or the quarantine that says why
    /// there are none.
    async fn resolved(
        &self,
        m: &Message,
        hint: resolve::Hint,
        unresolved: bool,
    ) -> Result<Result<(String, Option<String>), Quarantine>, Transient> {
        let q = |reason| Ok(Err(Quarantine::new(reason)));
        match resolve::resolve(m, hint, &self.resolve_context()).await {
            Ok(Resolution::Found { patient, encounter }) => Ok(Ok((patient, encounter))),
            Ok(Resolution::PatientOnly { patient }) => match self.resolve.unknown_encounter {
                UnknownEncounter::PatientOnly => {
                    telemetry::encounter_unresolved();
                    Ok(Ok((patient, None)))
                }
                UnknownEncounter::Quarantine => q(Reason::UnknownEncounter),
            },
            Ok(Resolution::Candidate { patient_id }) => Ok(Err(Quarantine {
                candidate: Some(patient_id),
                ..Quarantine::new(Reason::PatientCandidate)
            })),
            Ok(Resolution::Ambiguous) => q(Reason::PatientAmbiguous),
            Ok(Resolution::Unknown) if unresolved => q(Reason::UnresolvedConversation),
            Ok(Resolution::Unknown) => q(Reason::UnknownPatient),
            Err(e) if e.is_transient() => Err(Transient::at("resolve")),
            Err(_) => q(Reason::PatientSearchFailed),
        }
    }

    /// The KIS resource (`Type/id`) an edit `m` of the message `original`
    /// revises: `Ok(None)` when the original is not archived (unknown,
    /// held, not relevant). An edit is valid only with the original's
    /// sender (Matrix client-server API, "Validity of replacement events");
    /// filed to `patient`, it must also revise that patient's record. The
    /// archived original (`Communication.sender`, `DocumentReference.author`,
    /// `subject`) is read from the KIS and compared; on a mismatch, or an
    /// original the KIS cannot answer, the edit is held
    /// `invalid_replacement`. A sender the record does not carry under the
    /// participant system (rewritten by the KIS, media archived before
    /// authors were mapped) cannot be compared; the patient still is. A
    /// reviewer's release of such an edit files it with the original's
    /// identifier only, without the reference to its resource. Without a
    /// per-message FHIR resource to read (`kis.output = "hl7v2_mdm"`,
    /// `"document_reference_only"`: texts in a conversation transcript) or
    /// without reads (`kis.read_back = false`) the original's resource is
    /// used as before. Errors: a transient KIS failure.
    async fn revised(
        &self,
        m: &Message,
        mode: &Mode,
        original: &str,
        patient: &str,
    ) -> Result<Result<Option<String>, Quarantine>, Transient> {
        let Some(resource) = self.archived_resource(&m.key.source, original).await? else {
            return Ok(Ok(None));
        };
        if self.archiver.output() != OutputMode::Fhir || !self.archiver.reads() {
            return Ok(Ok(Some(resource)));
        }
        let released = matches!(mode, Mode::Release { .. });
        let invalid = |detail: &str| {
            if released {
                return Ok(Ok(None));
            }
            Ok(Err(Quarantine::with_detail(
                Reason::InvalidReplacement,
                detail.to_owned(),
            )))
        };
        let archived = match self.archiver.kis().read(&resource).await {
            Ok(archived) => archived,
            Err(e) if e.is_transient() => return Err(Transient::at("read original")),
            Err(e) => {
                let status = match e {
                    crate::push::PushError::Rejected { status, .. } => format!("HTTP {status}"),
                    _ => "an incomplete answer".to_owned(),
                };
                return invalid(&format!(
                    "the corrected message's archived resource cannot be read ({status})"
                ));
            }
        };
        if crate::map::recorded_sender(&archived, &m.key.source)
            .is_some_and(|sender| sender != m.sender.id)
        {
            return invalid("an edit by another sender than the corrected message's");
        }
        if !crate::push::subject_is(&archived, patient) {
            return invalid("an edit filed to another patient than the corrected message");
        }
        // The original must not itself be an edit (Matrix client-server
        // API, "Validity of replacement events": its `rel_type` is not
        // `m.replace`): clients edit the original, never an edit. An
        // archived edit's Provenance names what it revised.
        let original_key = crate::event::MessageKey {
            source: m.key.source.clone(),
            message_id: original.to_owned(),
        };
        let provenance = format!(
            "Provenance/{}",
            crate::map::stable_id(&original_key, "Provenance")
        );
        match self.archiver.kis().read(&provenance).await {
            Ok(p) if is_revision(&p) => {
                return invalid(
                    "an edit of an edit: the corrected message is itself a replacement",
                );
            }
            Ok(_) => {}
            Err(e) if e.is_transient() => return Err(Transient::at("read original")),
            // No Provenance to read (archived before Provenance, or
            // removed): the other checks stand.
            Err(_) => {}
        }
        Ok(Ok(Some(resource)))
    }

    /// The KIS resource (`Type/id`) of the archived message `id` of
    /// `source`, `None` when it is not archived (unknown, held, not
    /// relevant).
    pub(super) async fn archived_resource(
        &self,
        source: &str,
        id: &str,
    ) -> Result<Option<String>, Transient> {
        let key = crate::event::MessageKey {
            source: source.to_owned(),
            message_id: id.to_owned(),
        };
        let stored = self.store.message(&key).await.map_err(Transient::store)?;
        Ok(stored
            .filter(|s| s.state == MessageState::Archived)
            .and_then(|s| s.resource))
    }

    /// The message's content and its hashes: its text, inline bytes, or
    /// the medium fetched (and decrypted) within `media.max_bytes`, hashed
    /// while it streams and spooled above `kis.binary_upload_threshold`.
    async fn content<'m>(
        &self,
        m: &'m Message,
    ) -> Result<Result<(Content<'m>, ContentHashes), Reason>, Transient> {
        let in_memory = |bytes: &'m [u8]| {
            Ok(Ok((
                Content::Memory(Cow::Borrowed(bytes)),
                ContentHashes::of(bytes),
            )))
        };
        let media = match &m.body {
            Body::Text(t) => return in_memory(t.as_bytes()),
            Body::Media(media) => media,
        };
        let fetched = match &media.location {
            MediaLocation::Inline(bytes) if bytes.len() as u64 > self.media.max_bytes() => {
                return Ok(Err(Reason::MediaTooLarge));
            }
            MediaLocation::Inline(bytes) => return in_memory(bytes),
            MediaLocation::Reference(id) => self.media.fetch(id).await,
            // The ciphertext must be the one the sender hashed
            // (`hashes.sha256`); the archive hash is the plaintext's.
            MediaLocation::Encrypted(file) => self.media.fetch_encrypted(file).await,
        };
        match fetched {
            Ok(f) => Ok(Ok((f.content, f.hashes))),
            Err(e) if e.is_transient() => Err(Transient::at("media")),
            Err(e) => Ok(Err(e.reason())),
        }
    }
}

/// A spool that cannot be written or read back: the medium is fetched
/// again on the next attempt.
fn spool_read(e: std::io::Error) -> Transient {
    tracing::warn!(kind = ?e.kind(), "media spool failed");
    Transient::at("media")
}

/// Whether a Provenance records its target as an edit: an entity of role
/// `revision` (what a corrected message's record names).
fn is_revision(provenance: &serde_json::Value) -> bool {
    provenance["entity"]
        .as_array()
        .is_some_and(|e| e.iter().any(|e| e["role"] == "revision"))
}
