//! The one writer of a message's terminal state and of its holds: archive +
//! proof leaf + deletion outbox (one transaction), not relevant with a
//! scheduled deletion, quarantine (sealed), a held split part, a held text,
//! a dismissal, and the content claim that keeps a conflicting duplicate.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::Digest;

use super::{Mode, Outcome, Quarantine, Ready, Transient};
use crate::delete::{ArchiveProof, DeletionCommand, DeletionReason};
use crate::event::{CanonicalEvent, HeldEntry, Message, MessageKey};
use crate::intake;
use crate::media::minimise::Transformation;
use crate::prove::ContentHashes;
use crate::prove::leaf_v2::LeafRecordV2;
use crate::reason::Reason;
use crate::resolve;
use crate::seal::Sealer;
use crate::store::{
    ArchiveRecord, Claim, DeletionState, Hold, MessageState, NewDeletion, NewPart,
    NewTranscriptEntry, Store, StoreError, TranscriptArchive, TranscriptMember, TranscriptWindow,
    millis,
};
use crate::transcript::{HeldText, late_token, window_of, window_token};

/// Writes terminal states and holds.
#[derive(Debug, Clone)]
pub struct Recorder {
    store: Store,
    sealer: Sealer,
    /// Fresh archives go through group commit (`pipeline.group_commit_*`).
    group: std::sync::Arc<super::group::GroupCommit>,
}

fn canonical(m: &Message) -> Vec<u8> {
    serde_json::to_vec(&CanonicalEvent::from_message(m)).expect("a canonical event serialises")
}

/// What [`Recorder::claim`] found.
#[derive(Debug)]
pub enum KeyClaim {
    /// The content is the key's first (or the same again); the ledger
    /// state the key already had (`None`: none yet).
    Ours(Option<MessageState>),
    /// Other content holds the key; this one was kept as a conflict.
    Conflict(Outcome),
}

impl Recorder {
    /// Records each archive in a transaction of its own.
    pub fn new(store: Store, sealer: Sealer) -> Self {
        Self::grouped(store, sealer, 1, Duration::ZERO)
    }

    /// Records fresh archives in groups of at most `max`, gathered for at
    /// most `linger` ([`super::group::GroupCommit`]).
    pub fn grouped(store: Store, sealer: Sealer, max: usize, linger: Duration) -> Self {
        Self {
            group: std::sync::Arc::new(super::group::GroupCommit::new(store.clone(), max, linger)),
            store,
            sealer,
        }
    }

    /// The first content under a message key wins; a different one under
    /// the same key is kept sealed as a conflict and changes nothing else.
    /// The claim also reads the state the key has in the ledger, after
    /// the ledger rows of the group it is written with.
    pub async fn claim(&self, m: &Message, now: DateTime<Utc>) -> Result<KeyClaim, Transient> {
        let digest = intake::content_digest(&self.sealer, m);
        let claimed = match self.group.claim(&m.key, &digest, millis(now)).await {
            Ok(claimed) => claimed,
            Err(super::group::GroupError::Store(e)) => return Err(Transient::store(e)),
            Err(super::group::GroupError::Gone) => return Err(Transient::at("group_commit")),
        };
        match claimed.claim {
            Claim::Ours => Ok(KeyClaim::Ours(claimed.state)),
            Claim::Conflict => {
                let event = canonical(m);
                self.store
                    .record_conflict(&m.key, &digest, &self.sealer.seal(&event), millis(now))
                    .await?;
                Ok(KeyClaim::Conflict(Outcome::quarantined(
                    Reason::DuplicateIdConflict,
                )))
            }
        }
    }

    /// Quarantines an entry held at decoding with the entry sealed, unless
    /// its key already has a terminal state. The entry claims its key like
    /// a message's content does: a later, different payload under the same
    /// id (a good copy of a broken entry, or the reverse) is a conflict.
    pub async fn held_entry(&self, held: &HeldEntry, now: i64) -> Result<Outcome, Transient> {
        // A history medium waiting for its id, seen again after its copy
        // with the id (redelivered, or overtaken): that copy decides.
        if held.reason == Reason::MediaUnavailable
            && let Some(existing) = self.store.message(&held.key).await?
        {
            return Ok(Outcome::AlreadyTerminal(existing.state));
        }
        let raw = serde_json::to_vec(&held.raw).expect("a JSON value serialises");
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
            return Ok(Outcome::quarantined(Reason::DuplicateIdConflict));
        }
        if let Some(existing) = self.store.message(&held.key).await? {
            return Ok(Outcome::AlreadyTerminal(existing.state));
        }
        for reference in held.media_references() {
            self.store
                .record_media_use(&held.key, reference, now)
                .await?;
        }
        self.store
            .record_quarantine(
                &held.key,
                held.reason.as_str(),
                &self.sealer.seal(&raw),
                Some(&self.sealer.seal(held.detail.as_bytes())),
                now,
            )
            .await?;
        Ok(Outcome::quarantined(held.reason))
    }

    /// Replaces the sealed event and content claim of `m`'s quarantine
    /// entry held with `hold` by this readable copy; `false` when `m` is
    /// not held so.
    pub async fn replace_held(&self, m: &Message, hold: Reason) -> Result<bool, Transient> {
        let digest = intake::content_digest(&self.sealer, m);
        let sealed = self.sealer.seal(&canonical(m));
        Ok(self
            .store
            .replace_held_event(&m.key, hold.as_str(), &digest, &sealed)
            .await?)
    }

    /// Records the archive of `m` at `resource`: ledger row, proof leaf and
    /// pending deletion command in one transaction. A released message's
    /// quarantined row becomes the archived one.
    pub async fn archive(
        &self,
        m: &Message,
        mode: &Mode,
        ready: &Ready<'_>,
        resource: String,
        resources: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Transient> {
        let hashes = &ready.hashes;
        let derivation = &ready.derivation;
        let leaf = LeafRecordV2::for_message(
            &self.sealer.proof_keys(),
            &m.key,
            (&hashes.sha256, &derivation.received.sha256),
            derivation.transformation.as_str(),
            (&resource, millis(now)),
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
            rule: ready.rule.clone(),
            content_sha256: hashes.sha256_hex(),
            resource: resource.clone(),
            resources,
            leaf_data: leaf.encode(),
            deletion: self.deletion(&command, DeletionState::Pending, millis(now)),
        };
        let recorded = match mode {
            Mode::Fresh => match self.group.record(record, millis(now)).await {
                Ok(r) => Ok(r),
                Err(super::group::GroupError::Store(e)) => Err(e),
                Err(super::group::GroupError::Gone) => return Err(Transient::at("group_commit")),
            },
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

    /// The store's row for `command`, sealed, in `state`, due at
    /// `not_before_ms`.
    pub fn deletion(
        &self,
        command: &DeletionCommand,
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
            reason: command.reason.as_str(),
            sealed_command: self.sealer.seal(&json),
            not_before_ms,
            state,
        }
    }

    /// Records `m` not relevant under `rule`, its deletion scheduled after
    /// `retention`.
    pub async fn not_relevant(
        &self,
        m: &Message,
        rule: &str,
        retention: Duration,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Transient> {
        let command = DeletionCommand::for_message(m, DeletionReason::NotRelevant, None);
        let due = millis(now) + retention.as_millis() as i64;
        let d = self.deletion(&command, DeletionState::Scheduled, due);
        self.store
            .record_not_relevant(&m.key, rule, &d, millis(now))
            .await?;
        Ok(Outcome::NotRelevant {
            rule: rule.to_owned(),
        })
    }

    /// Records a quarantined message of a conversation a reviewer dismissed
    /// as not relevant (`by`), its deletion due at `due_ms`. `false` when it
    /// is no longer quarantined.
    pub async fn dismissed(
        &self,
        m: &Message,
        rule: &str,
        by: &str,
        due_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let command = DeletionCommand::for_message(m, DeletionReason::NotRelevant, None);
        let deletion = self.deletion(&command, DeletionState::Scheduled, due_ms);
        self.store
            .record_dismissed(&m.key, rule, &deletion, by, now_ms)
            .await
    }

    /// Quarantines a fresh message (keeping a candidate patient if any);
    /// a released one stays quarantined with the new reason. A message held
    /// for its patient ([`Reason::IDENTITY`]) keeps its conversation's
    /// token, so a reviewer's decision about the conversation reaches it.
    pub async fn quarantine(
        &self,
        m: &Message,
        mode: &Mode,
        q: Quarantine,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Transient> {
        match (mode, q.candidate) {
            (Mode::Release { .. }, _) => {
                self.store
                    .requarantine(&m.key, q.reason.as_str(), millis(now))
                    .await?;
                // Released without a reviewer's request: the received
                // bytes stay sealed beside the item for `quarantine view`.
                if let (Reason::ReviewRedaction, Some(original)) = (q.reason, &q.detail) {
                    self.store
                        .hold_original(&m.key, &self.sealer.seal(original))
                        .await?;
                }
            }
            (Mode::Fresh, candidate) if candidate.is_some() || q.reason.is_identity() => {
                let token =
                    resolve::conversation_token(&self.sealer, &m.key.source, &m.conversation);
                self.store
                    .record_quarantine_conversation(
                        &m.key,
                        q.reason.as_str(),
                        &self.sealer.seal(&canonical(m)),
                        candidate.as_deref(),
                        &token,
                        millis(now),
                    )
                    .await?;
            }
            (Mode::Fresh, _) => {
                let detail = q.detail.as_deref();
                return self.quarantine_sealed(m, q.reason, detail, now).await;
            }
        }
        Ok(Outcome::quarantined(q.reason))
    }

    /// Quarantines `m` with its event and `detail` sealed.
    pub async fn quarantine_sealed(
        &self,
        m: &Message,
        reason: Reason,
        detail: Option<&[u8]>,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Transient> {
        let sealed_detail = detail.map(|d| self.sealer.seal(d));
        self.store
            .record_quarantine(
                &m.key,
                reason.as_str(),
                &self.sealer.seal(&canonical(m)),
                sealed_detail.as_ref(),
                millis(now),
            )
            .await?;
        Ok(Outcome::quarantined(reason))
    }

    /// Holds a part of a split message (sealed) in its group `token`.
    pub async fn hold_part(
        &self,
        m: &Message,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Hold>, Transient> {
        let Some(part) = &m.part else {
            return Ok(None);
        };
        let sealed = self.sealer.seal(&canonical(m));
        let part = NewPart {
            key: &m.key,
            group_token: token,
            index: part.index,
            count: part.count,
            sealed_event: &sealed,
        };
        Ok(Some(self.store.hold_part(&part, millis(now)).await?))
    }

    /// Holds a relevant, resolved text message in its transcript window
    /// (`window_ms` long); a window already closing gets a late window of
    /// its own.
    pub async fn hold_text(
        &self,
        m: &Message,
        rule: &str,
        (patient, encounter): (&str, Option<&str>),
        window_ms: i64,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Transient> {
        let held = HeldText {
            event: serde_json::to_value(CanonicalEvent::from_message(m))
                .expect("a canonical event serialises"),
            patient: patient.to_owned(),
            encounter: encounter.map(str::to_owned),
            rule: rule.to_owned(),
        };
        let sealed = self
            .sealer
            .seal(&serde_json::to_vec(&held).expect("a held text serialises"));
        let (start, end) = window_of(m.sent_at, window_ms);
        let token = window_token(&self.sealer, m, patient, encounter, start);
        let mut entry = NewTranscriptEntry {
            key: &m.key,
            window_token: &token,
            window_start_ms: start,
            window_end_ms: end,
            sent_at_ms: millis(m.sent_at),
            sealed_entry: &sealed,
        };
        if self
            .store
            .hold_transcript_entry(&entry, millis(now))
            .await?
        {
            return Ok(Outcome::Held);
        }
        let late = late_token(&self.sealer, &token, m);
        entry.window_token = &late;
        entry.window_end_ms = millis(now);
        if self
            .store
            .hold_transcript_entry(&entry, millis(now))
            .await?
        {
            Ok(Outcome::Held)
        } else {
            Err(Transient::at("transcript-hold"))
        }
    }

    /// Records a transcript archived at `resource`: the window archived,
    /// its one proof leaf under `key`, and every held message archived with
    /// its deletion command, in one transaction. The number of messages and
    /// the resource; `None` when the window was archived already.
    pub async fn archive_transcript(
        &self,
        w: &TranscriptWindow,
        held: &[(Message, HeldText)],
        (key, hashes): (&MessageKey, &ContentHashes),
        (resource, resources): (String, Vec<String>),
        now: DateTime<Utc>,
    ) -> Result<Option<(usize, String)>, Transient> {
        let leaf = LeafRecordV2::for_message(
            &self.sealer.proof_keys(),
            key,
            (&hashes.sha256, &hashes.sha256),
            Transformation::None.as_str(),
            (&resource, millis(now)),
        )
        .map_err(|_| Transient::at("leaf"))?;
        let proof = ArchiveProof {
            resource: resource.clone(),
            content_sha256: hashes.sha256_hex(),
        };
        let members = held
            .iter()
            .map(|(m, h)| {
                let command =
                    DeletionCommand::for_message(m, DeletionReason::Archived, Some(proof.clone()));
                TranscriptMember {
                    key: m.key.clone(),
                    rule: h.rule.clone(),
                    content_sha256: ContentHashes::of(m.inline_content().unwrap_or_default())
                        .sha256_hex(),
                    deletion: self.deletion(&command, DeletionState::Pending, millis(now)),
                }
            })
            .collect::<Vec<_>>();
        let n = members.len();
        let archive = TranscriptArchive {
            source: w.source.clone(),
            window_token: w.window_token.clone(),
            leaf_key: key.clone(),
            leaf_data: leaf.encode(),
            content_sha256: hashes.sha256_hex(),
            resource,
            resources,
            members,
        };
        let archived = self.store.archive_transcript(&archive, millis(now)).await?;
        Ok(archived.map(|_| (n, archive.resource)))
    }
}
