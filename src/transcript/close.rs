//! Holding text messages in transcript windows and closing windows, on the
//! pipeline.
//!
//! A text message is held in one store transaction; its delivery is acked
//! after that (held is durable). The closer claims a window that ended
//! (freezing its set of messages), renders it, pushes Binary (PUT to a
//! UUIDv5 id) + DocumentReference (conditional create on the transcript's
//! identifier), reads it back, and records the archive and all deletions in
//! one transaction. Any failure before that record leaves the window
//! `closing` and its messages held; the next run repeats the same,
//! idempotent, steps.

use chrono::{DateTime, Utc};

use super::{
    HeldText, LEASE_MS, Line, as_message, late_token, render, transcript_key, window_of,
    window_token,
};
use crate::classify::DocumentType;
use crate::delete::{ArchiveProof, DeletionCommand, DeletionReason};
use crate::event::{self, Body, CanonicalEvent, Message};
use crate::map::{self, MapInput};
use crate::pipeline::{Outcome, Pipeline, Transient};
use crate::prove::ContentHashes;
use crate::prove::leaf::LeafRecord;
use crate::push::{PushError, readback};
use crate::store::{
    DeletionState, NewTranscriptEntry, TranscriptArchive, TranscriptMember, TranscriptWindow,
    millis,
};

/// What one closer run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloseSummary {
    /// Transcripts archived (their messages archived, deletions queued).
    pub archived: usize,
    /// Messages included in them.
    pub messages: usize,
    /// Windows whose close hit a failure (retried next run).
    pub deferred: usize,
}

/// Why a window could not be closed now.
enum CloseError {
    Transient(Transient),
    /// The KIS refused the transcript or read back something else: the
    /// window stays frozen, its messages held, for an operator (logged).
    Refused(&'static str),
}

impl From<Transient> for CloseError {
    fn from(t: Transient) -> Self {
        Self::Transient(t)
    }
}

impl Pipeline {
    /// Holds a relevant, resolved text message in its transcript window.
    pub(crate) async fn hold_text(
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
        let token = window_token(&self.sealer, m, patient, start);
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
            .await
            .map_err(Transient::store)?
        {
            return Ok(Outcome::Held);
        }
        let late = late_token(&self.sealer, &token, m);
        entry.window_token = &late;
        entry.window_end_ms = millis(now);
        if self
            .store
            .hold_transcript_entry(&entry, millis(now))
            .await
            .map_err(Transient::store)?
        {
            Ok(Outcome::Held)
        } else {
            Err(Transient::at("transcript-hold"))
        }
    }

    /// The transcript closer: archives every window that ended at `now`.
    pub async fn close_due_transcripts(
        &self,
        document_type: &DocumentType,
        now: DateTime<Utc>,
    ) -> Result<CloseSummary, Transient> {
        let mut summary = CloseSummary::default();
        let due = self
            .store
            .claim_due_windows(millis(now), LEASE_MS, 256)
            .await
            .map_err(Transient::store)?;
        for w in due {
            match self.close_window(&w, document_type, now).await {
                Ok(n) => {
                    if n > 0 {
                        summary.archived += 1;
                        summary.messages += n;
                    }
                }
                Err(e) => {
                    match e {
                        CloseError::Transient(t) => {
                            tracing::warn!(stage = t.stage, "transcript close deferred");
                        }
                        CloseError::Refused(place) => {
                            tracing::error!(place, "transcript refused by the KIS; window kept");
                        }
                    }
                    let _ = self.store.unclaim_window(&w.source, &w.window_token).await;
                    summary.deferred += 1;
                }
            }
        }
        Ok(summary)
    }

    /// Closes one claimed window; the number of messages archived.
    async fn close_window(
        &self,
        w: &TranscriptWindow,
        document_type: &DocumentType,
        now: DateTime<Utc>,
    ) -> Result<usize, CloseError> {
        let entries = self
            .store
            .window_entries(&w.source, &w.window_token)
            .await
            .map_err(Transient::store)?;
        let mut held = Vec::with_capacity(entries.len());
        for e in &entries {
            held.push(self.open_text(&e.key, &e.sealed_entry)?);
        }
        let Some((_, first)) = held.first() else {
            // Nothing held (cannot normally happen): record the window empty.
            return Ok(0);
        };
        let (patient, encounter) = (first.patient.clone(), first.encounter.clone());
        let lines: Vec<Line<'_>> = held
            .iter()
            .filter_map(|(m, _)| match &m.body {
                Body::Text(t) => Some(Line {
                    sent_at: m.sent_at,
                    role: m.sender.role,
                    text: t,
                }),
                Body::Media(_) => None,
            })
            .collect();
        let text = render(&w.source, w.window_start_ms, w.window_end_ms, &lines);
        let bytes = text.into_bytes();
        let hashes = ContentHashes::of(&bytes);
        let key = transcript_key(&w.source, &w.window_token);
        let doc = as_message(
            key.clone(),
            w.window_start_ms,
            w.window_end_ms,
            bytes.clone(),
        );
        let input = MapInput {
            message: &doc,
            content: &bytes,
            hashes: &hashes,
            patient: &patient,
            encounter: encounter.as_deref(),
            document_type: Some(document_type),
            archived_at: now,
        };
        let tx =
            map::transaction(&input, &self.settings).map_err(|_| CloseError::Refused("mapping"))?;
        let confirmed = match self.kis.transaction(&tx.bundle).await {
            Ok(c) => c,
            Err(PushError::Transient { .. }) => return Err(Transient::at("push").into()),
            Err(PushError::Rejected { status, .. }) => {
                tracing::warn!(status, "KIS rejected a transcript");
                return Err(CloseError::Refused("kis_rejected"));
            }
            Err(PushError::Incomplete(_)) => return Err(CloseError::Refused("kis_incomplete")),
        };
        if self.read_back {
            let identifier = map::identifier_value(&key);
            let expected = readback::Expected {
                content: &bytes,
                hashes: &hashes,
                patient: &patient,
                identifier: (&self.settings.identifier_system, &identifier),
            };
            match readback::check(&self.kis, &tx, &confirmed, &expected).await {
                Ok(()) => {}
                Err(readback::ReadBackError::Transient(_)) => {
                    return Err(Transient::at("read_back").into());
                }
                Err(_) => return Err(CloseError::Refused("read_back_mismatch")),
            }
        }
        let resource = confirmed.locations[tx.primary_entry].clone();
        let leaf = LeafRecord::new(
            hashes.sha256,
            key.to_string(),
            resource.clone(),
            millis(now),
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
                    deletion: self.deletion(
                        &command,
                        DeletionReason::Archived,
                        DeletionState::Pending,
                        millis(now),
                    ),
                }
            })
            .collect::<Vec<_>>();
        let n = members.len();
        let archive = TranscriptArchive {
            source: w.source.clone(),
            window_token: w.window_token.clone(),
            leaf_key: key,
            leaf_data: leaf.encode(),
            content_sha256: hashes.sha256_hex(),
            resource,
            resources: confirmed.locations,
            members,
        };
        match self
            .store
            .archive_transcript(&archive, millis(now))
            .await
            .map_err(Transient::store)?
        {
            Some(_) => {
                for (m, _) in &held {
                    crate::telemetry::outcome(
                        &m.key.source,
                        &Outcome::Archived {
                            resource: archive.resource.clone(),
                        },
                    );
                }
                Ok(n)
            }
            None => Ok(0),
        }
    }

    fn open_text(
        &self,
        key: &crate::event::MessageKey,
        sealed: &[u8],
    ) -> Result<(Message, HeldText), Transient> {
        let place = crate::store::sealed::transcript_entry(key);
        let bytes = self.sealer.open(&place, sealed).map_err(|e| {
            tracing::error!(error = %e, "a held transcript message cannot be opened");
            Transient::at("seal")
        })?;
        let held: HeldText =
            serde_json::from_slice(&bytes).map_err(|_| Transient::at("held-text"))?;
        let event = serde_json::to_vec(&held.event).map_err(|_| Transient::at("held-text"))?;
        let decoded = event::decode(&event, usize::MAX).map_err(|e| {
            tracing::error!(
                reason = e.code.as_str(),
                "a held transcript message does not decode"
            );
            Transient::at("held-text")
        })?;
        let m = decoded
            .messages
            .into_iter()
            .next()
            .ok_or(Transient::at("held-text"))?;
        Ok((m, held))
    }
}
