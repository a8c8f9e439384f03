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

use super::archiver::Marks;
use super::{Delivered, Outcome, Pipeline, Transient};
use crate::classify::DocumentType;
use crate::event::{self, Body, Message};
use crate::map::MapInput;
use crate::prove::ContentHashes;
use crate::reason::Reason;
use crate::split::GroupContext;
use crate::store::{TranscriptWindow, millis};
use crate::transcript::{
    CloseSummary, HeldText, LEASE_MS, Line, as_message, render, transcript_key,
};

/// Why a window could not be closed now.
enum CloseError {
    Transient(Transient),
    /// The KIS refused the transcript or read back something else: the
    /// window stays frozen, its messages held, for an operator (logged).
    Refused(Reason),
}

impl From<Transient> for CloseError {
    fn from(t: Transient) -> Self {
        Self::Transient(t)
    }
}

impl Pipeline {
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
                        CloseError::Refused(reason) => {
                            let reason = reason.as_str();
                            tracing::error!(reason, "transcript refused by the KIS; window kept");
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
            binary: None,
            hashes: &hashes,
            patient: &patient,
            encounter: encounter.as_deref(),
            document_type: Some(document_type),
            archived_at: now,
        };
        let marks = Marks {
            revises: None,
            group: &GroupContext::default(),
            derivation: None,
        };
        let (resource, resources) = match self.archiver.archive(&input, marks).await? {
            Delivered::Confirmed {
                resource,
                resources,
            } => (resource, resources),
            Delivered::Refused(q) => return Err(CloseError::Refused(q.reason)),
        };
        let archived = self
            .recorder
            .archive_transcript(w, &held, (&key, &hashes), (resource, resources), now)
            .await?;
        match archived {
            Some((n, resource)) => {
                for (m, _) in &held {
                    let outcome = Outcome::Archived {
                        resource: resource.clone(),
                    };
                    crate::telemetry::outcome(&m.key.source, &outcome);
                }
                Ok(n)
            }
            None => Ok(0),
        }
    }

    fn open_text(
        &self,
        key: &crate::store::MessageRef,
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
        let decoded = event::reopen(&event).map_err(|e| {
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
