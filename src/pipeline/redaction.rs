//! A sender's retraction at the messenger (a Matrix redaction): the
//! archived record in the KIS is marked, the retraction recorded.

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::attempts::{MessageRetry, Step};
use super::{Pipeline, Transient};
use crate::event;
use crate::map;
use crate::push::{OutputMode, PushError};
use crate::store::{MessageState, StoredMessage, millis};
use crate::telemetry;

impl Pipeline {
    /// Records a sender's retraction at the messenger, retrying transient
    /// failures like a message. An archived target's KIS record is marked
    /// (`meta.tag` `retracted-at-source` and a Provenance, docs/matrix.md)
    /// and the retraction recorded. A target still being processed
    /// (claimed, not terminal) is waited for, retried like a message; a
    /// target that was never archived has nothing to mark (counted as
    /// `non_message_event`).
    pub(super) async fn redaction_until_recorded(
        &self,
        r: &event::Redaction,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), Step> {
        let logic = MessageRetry::handing_back(self);
        self.retried(&logic, shutdown, || self.record_redaction(r))
            .await
    }

    async fn record_redaction(&self, r: &event::Redaction) -> Result<(), Transient> {
        if self
            .store
            .redaction_mark(&r.key)
            .await
            .map_err(Transient::store)?
            .is_some()
        {
            // Recorded before; a row it left waiting (its drop failed
            // after the mark) ends now.
            let waiting = self.store.message_ref(&r.key).map_err(Transient::store)?;
            self.store
                .drop_pending_redaction(&waiting)
                .await
                .map_err(Transient::store)?;
            return Ok(());
        }
        let stored = self
            .store
            .message(&r.target)
            .await
            .map_err(Transient::store)?;
        let resource = match stored {
            Some(StoredMessage {
                state: MessageState::Archived,
                resource: Some(resource),
                ..
            }) => resource,
            // The target is being processed (claimed, no terminal state
            // yet: a KIS round trip, a retry, a redelivery after a crash):
            // the redaction waits for it rather than finding nothing to
            // mark and leaving the record unmarked once it is archived.
            None if self
                .store
                .content_in_flight(&r.target)
                .await
                .map_err(Transient::store)? =>
            {
                return Err(Transient::at("redaction_target"));
            }
            // Held for review: a release may archive it later; the
            // retraction waits for that, sealed.
            Some(s) if s.state == MessageState::Quarantined => {
                let sealed = self.sealer.seal(&PendingRetraction::of(r).to_bytes());
                self.store
                    .record_pending_redaction(&r.key, &r.target, &sealed, millis(Utc::now()))
                    .await
                    .map_err(Transient::store)?;
                // A release that archived the target between the read above
                // and this row found nothing waiting: once more, through
                // the archived path (which drops the row).
                let now = self
                    .store
                    .message(&r.target)
                    .await
                    .map_err(Transient::store)?;
                if now.is_some_and(|s| s.state == MessageState::Archived) {
                    return Err(Transient::at("redaction_target"));
                }
                telemetry::retraction(&r.key.source, "pending");
                return Ok(());
            }
            _ => {
                telemetry::skipped(&r.key.source, "non_message_event", 1);
                return Ok(());
            }
        };
        let now = Utc::now();
        let marked = if self.archiver.output() == OutputMode::Hl7v2Mdm {
            // No FHIR record to tag: recorded as not marked.
            Err("kis.output: hl7v2_mdm has no FHIR record to mark".to_owned())
        } else {
            match self.mark_retracted(r, &resource, now).await {
                Ok(provenance) => Ok(provenance),
                Err(PushError::Transient { retry_after, .. }) => {
                    return Err(Transient {
                        hint: retry_after,
                        ..Transient::at("push")
                    });
                }
                // Another writer tagged the record between the read and
                // the `If-Match` PUT (a release and the sweep at once; 412
                // per R4 http.html, 409 from HAPI): read again, and the
                // tag is found.
                Err(PushError::Rejected {
                    status: 409 | 412, ..
                }) => {
                    return Err(Transient::at("push"));
                }
                Err(PushError::Rejected { status, .. }) => {
                    Err(format!("KIS refused the mark with HTTP {status}"))
                }
                Err(PushError::Incomplete(detail)) => Err(detail),
            }
        };
        let target = self
            .store
            .message_ref(&r.target)
            .map_err(Transient::store)?;
        let mark = match marked {
            Ok(provenance) => crate::store::RedactionMark {
                target,
                state: "marked".into(),
                resource,
                provenance: Some(provenance),
            },
            Err(detail) => {
                tracing::warn!(detail = %detail, "retraction at the source not marked in the KIS");
                crate::store::RedactionMark {
                    target,
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
        // A row it left waiting while its target was held has its end now.
        let waiting = self.store.message_ref(&r.key).map_err(Transient::store)?;
        self.store
            .drop_pending_redaction(&waiting)
            .await
            .map_err(Transient::store)?;
        Ok(())
    }

    /// Marks the records of archived messages whose retractions still wait
    /// ([`Store::archived_with_pending_redactions`], up to 100 targets per
    /// run), as [`Self::apply_pending_redactions`] does right after a
    /// release: for a release whose marks were not written (the KIS was
    /// down for every attempt, the worker stopped in between) and for a
    /// text held in a transcript window, archived when its window closed.
    /// One attempt per retraction; the run ends early only while the KIS's
    /// breaker is open. Run by the retention sweep. Answers how many
    /// targets were tried.
    ///
    /// Errors: the store could not list them ([`Transient`]).
    ///
    /// [`Store::archived_with_pending_redactions`]: crate::store::Store::archived_with_pending_redactions
    pub async fn apply_waiting_retractions(&self) -> Result<usize, Transient> {
        let targets = self
            .store
            .archived_with_pending_redactions(100)
            .await
            .map_err(Transient::store)?;
        for (n, target) in targets.iter().enumerate() {
            // One attempt each, no backoff: the next run tries again. A
            // KIS that is down (its breaker open) ends this run, so a
            // sweep never waits on it; one target that keeps failing does
            // not stop the others.
            if !self.apply_pending_with(target, 1).await && self.kis().breaker().is_open() {
                return Ok(n + 1);
            }
        }
        Ok(targets.len())
    }

    /// Marks the record of `target`, just archived by a release, for each
    /// retraction that waited for it ([`Store::record_pending_redaction`]),
    /// as for a target archived before its retraction, trying a transient
    /// failure [`PENDING_ATTEMPTS`] times (1, 2, 4 s apart). One that still
    /// fails stays waiting, logged with its stage; the release itself
    /// stands.
    ///
    /// [`Store::record_pending_redaction`]: crate::store::Store::record_pending_redaction
    pub(super) async fn apply_pending_redactions(&self, target: &crate::store::MessageRef) {
        self.apply_pending_with(target, PENDING_ATTEMPTS).await;
    }

    /// [`Self::apply_pending_redactions`] with `attempts` per retraction;
    /// `false` when one was left waiting after a transient failure.
    async fn apply_pending_with(&self, target: &crate::store::MessageRef, attempts: u32) -> bool {
        let pending = match self.store.pending_redactions(target).await {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(error = %e, "waiting retractions not read");
                return false;
            }
        };
        let mut all = true;
        for p in pending {
            let place = crate::store::sealed::pending_redaction(&p.redaction);
            let redaction = match self
                .sealer
                .open(&place, &p.sealed)
                .map_err(|e| e.to_string())
                .and_then(|bytes| PendingRetraction::from_bytes(&bytes))
            {
                Ok(r) => r.into_redaction(&target.source),
                Err(e) => {
                    tracing::warn!(error = %e, "waiting retraction unreadable; left waiting");
                    continue;
                }
            };
            let mut attempt = 0;
            loop {
                match self.record_redaction(&redaction).await {
                    // `record_redaction` dropped the waiting row.
                    Ok(()) => break,
                    Err(t) if attempt + 1 < attempts => {
                        tokio::time::sleep(std::time::Duration::from_secs(1 << attempt)).await;
                        attempt += 1;
                        tracing::debug!(stage = t.stage, attempt, "retrying a waiting retraction");
                    }
                    Err(t) => {
                        tracing::warn!(
                            stage = t.stage,
                            "retraction of a released message not marked; left waiting"
                        );
                        all = false;
                        break;
                    }
                }
            }
        }
        all
    }

    /// Tags the archived record `resource` (`Type/id`) `retracted-at-source`
    /// when the redaction's sender is the sender the record names, else
    /// `removed-at-source` ([`map::provenance::Remover`]; read, then `PUT`
    /// with `If-Match` on its version) and writes the
    /// retraction's Provenance at an id derived from the retracted message,
    /// in one transaction. Answers the Provenance's `Type/id`.
    async fn mark_retracted(
        &self,
        r: &event::Redaction,
        resource: &str,
        now: DateTime<Utc>,
    ) -> Result<String, PushError> {
        use map::provenance::{Remover, is_removal_tag, retracted_tag, retraction};
        let mut record = self.kis().read(resource).await?;
        // Matrix lets a moderator redact another's event: only the sender
        // the record names retracts; anyone else removes.
        let by = match map::recorded_sender(&record, &r.target.source) {
            Some(sender) if sender == r.sender => Remover::Sender,
            _ => Remover::Other,
        };
        let tag = retracted_tag(by);
        let tagged = record["meta"]["tag"]
            .as_array()
            .is_some_and(|ts| ts.iter().any(is_removal_tag));
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
        let mut provenance = retraction(
            &r.target,
            &r.sender,
            by,
            resource,
            r.at,
            now,
            self.archiver.settings(),
        );
        provenance["id"] = serde_json::Value::String(id.clone());
        entries.push(serde_json::json!({
            "resource": provenance,
            "request": {"method": "PUT", "url": format!("Provenance/{id}")}
        }));
        let bundle =
            serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        self.kis().transaction(&bundle).await?;
        Ok(format!("Provenance/{id}"))
    }
}

/// Attempts at marking a released target for a waiting retraction.
const PENDING_ATTEMPTS: u32 = 4;

/// What a retraction that waits for its held target keeps (sealed): the
/// retraction and target event ids, who retracted (a direct identifier)
/// and when.
#[derive(serde::Serialize, serde::Deserialize)]
struct PendingRetraction {
    redaction: String,
    target: String,
    sender: String,
    at: DateTime<Utc>,
}

impl PendingRetraction {
    fn of(r: &event::Redaction) -> Self {
        Self {
            redaction: r.key.message_id.clone(),
            target: r.target.message_id.clone(),
            sender: r.sender.clone(),
            at: r.at,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a retraction serialises")
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("sealed retraction: {e}"))
    }

    fn into_redaction(self, source: &str) -> event::Redaction {
        let key = |message_id: String| event::MessageKey {
            source: source.to_owned(),
            message_id,
        };
        event::Redaction {
            key: key(self.redaction),
            target: key(self.target),
            sender: self.sender,
            at: self.at,
        }
    }
}
