//! Transcript windows of `kis.output = "document_reference_only"`: text
//! messages held (sealed, durable, not yet terminal) per conversation and
//! window until the transcript closer archives the window as one document.
//!
//! A window is `open` while it takes messages, `closing` once a closer
//! claimed it (its set of messages is frozen from then on, so a retried close
//! renders the same bytes), `archived` when the KIS confirmed the transcript.
//! [`Store::archive_transcript`] writes, in one transaction, the window's
//! state, the transcript's proof leaf, the terminal row of every included
//! message (state `archived`, resource = the transcript DocumentReference)
//! and their deletion commands, and removes the held rows.

use sqlx::Row;

use super::outbox::{self, NewDeletion};
use super::{MessageRef, MessageState, Store, StoreError, log};
use crate::event::MessageKey;

/// A text message to hold in its window.
#[derive(Debug, Clone)]
pub struct NewTranscriptEntry<'a> {
    pub key: &'a MessageKey,
    pub window_token: &'a str,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub sent_at_ms: i64,
    /// Event and resolution, sealed when held.
    pub sealed_entry: &'a crate::seal::Sealing,
}

/// A window claimed for closing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptWindow {
    pub source: String,
    pub window_token: String,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
}

/// A held message, as read back for its window's transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldEntry {
    pub key: MessageRef,
    pub sent_at_ms: i64,
    pub sealed_entry: Vec<u8>,
}

/// One message included in an archived transcript.
#[derive(Debug, Clone)]
pub struct TranscriptMember {
    pub key: MessageKey,
    pub rule: String,
    /// SHA-256 (hex) of the message's own text.
    pub content_sha256: String,
    pub deletion: NewDeletion,
}

/// Everything recorded when the KIS confirmed a transcript.
#[derive(Debug, Clone)]
pub struct TranscriptArchive {
    pub source: String,
    pub window_token: String,
    /// The transcript's own key in the proof log (`transcript-…`).
    pub leaf_key: MessageKey,
    pub leaf_data: Vec<u8>,
    /// SHA-256 (hex) of the transcript document.
    pub content_sha256: String,
    /// The transcript DocumentReference, `DocumentReference/{id}`.
    pub resource: String,
    pub resources: Vec<String>,
    pub members: Vec<TranscriptMember>,
}

impl Store {
    /// Holds a text message in its window, opening the window on first
    /// sight. Idempotent on the message key. `false` (nothing held) when the
    /// window is no longer open: the caller uses a late window.
    pub async fn hold_transcript_entry(
        &self,
        e: &NewTranscriptEntry<'_>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let key = self.row(e.key)?;
        let source = &key.source;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO transcript_windows (source, window_token, window_start, window_end, state)
             VALUES ($1, $2, $3, $4, 'open') ON CONFLICT DO NOTHING",
        )
        .bind(source)
        .bind(e.window_token)
        .bind(e.window_start_ms)
        .bind(e.window_end_ms)
        .execute(&mut *tx)
        .await?;
        // Row-locks the window on PostgreSQL against a concurrent claim.
        let state: String = sqlx::query(
            "UPDATE transcript_windows SET window_end = window_end
             WHERE source = $1 AND window_token = $2 RETURNING state",
        )
        .bind(source)
        .bind(e.window_token)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let already: bool = sqlx::query(
            "SELECT 1 FROM transcript_messages WHERE source = $1 AND message_token = $2",
        )
        .bind(source)
        .bind(&key.token)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if already {
            tx.rollback().await?;
            return Ok(true);
        }
        if state != "open" {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO transcript_messages (source, message_token, window_token, sent_at, sealed_entry, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(source)
        .bind(&key.token)
        .bind(e.window_token)
        .bind(e.sent_at_ms)
        .bind(e.sealed_entry.at(&super::sealed::transcript_entry(&key)))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Claims windows that ended at or before `now_ms` (and closing windows
    /// whose closer's lease ran out) for `lease_ms`; a claimed window takes
    /// no more messages.
    pub async fn claim_due_windows(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<TranscriptWindow>, StoreError> {
        let rows = sqlx::query(
            "SELECT source, window_token, window_start, window_end FROM transcript_windows
             WHERE (state = 'open' AND window_end <= $1)
                OR (state = 'closing' AND (claimed_until IS NULL OR claimed_until < $1))
             ORDER BY window_end LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = Vec::new();
        for r in &rows {
            let w = TranscriptWindow {
                source: r.try_get(0)?,
                window_token: r.try_get(1)?,
                window_start_ms: r.try_get(2)?,
                window_end_ms: r.try_get(3)?,
            };
            let n = sqlx::query(
                "UPDATE transcript_windows SET state = 'closing', claimed_until = $1
                 WHERE source = $2 AND window_token = $3
                   AND ((state = 'open' AND window_end <= $4)
                     OR (state = 'closing' AND (claimed_until IS NULL OR claimed_until < $4)))",
            )
            .bind(now_ms + lease_ms)
            .bind(&w.source)
            .bind(&w.window_token)
            .bind(now_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if n == 1 {
                claimed.push(w);
            }
        }
        Ok(claimed)
    }

    /// Gives a claim back after a transient failure; the window stays
    /// frozen (`closing`) and is taken up by the next run.
    pub async fn unclaim_window(&self, source: &str, window_token: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE transcript_windows SET claimed_until = NULL
             WHERE source = $1 AND window_token = $2 AND state = 'closing'",
        )
        .bind(source)
        .bind(window_token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The held messages of a window, in send order, then in the order they
    /// were held (WhatsApp's send times have a resolution of one second),
    /// then by message token.
    pub async fn window_entries(
        &self,
        source: &str,
        window_token: &str,
    ) -> Result<Vec<HeldEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT message_token, sent_at, sealed_entry FROM transcript_messages
             WHERE source = $1 AND window_token = $2
             ORDER BY sent_at, created_at, message_token",
        )
        .bind(source)
        .bind(window_token)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HeldEntry {
                    key: MessageRef {
                        source: source.to_owned(),
                        token: r.try_get(0)?,
                    },
                    sent_at_ms: r.try_get(1)?,
                    sealed_entry: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// Records a confirmed transcript, atomically: window archived, one
    /// proof leaf for the transcript, every member archived with its
    /// deletion command (a member released from quarantine replaces its
    /// quarantined row), held rows removed. `None` when the window was not
    /// `closing` (another closer recorded it): nothing written.
    pub async fn archive_transcript(
        &self,
        a: &TranscriptArchive,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let leaf_key = self.row(&a.leaf_key)?;
        let members = a
            .members
            .iter()
            .map(|m| Ok((m, self.row(&m.key)?, self.row(&m.deletion.key)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE transcript_windows
             SET state = 'archived', resource = $1, content_sha256 = $2, closed_at = $3,
                 claimed_until = NULL
             WHERE source = $4 AND window_token = $5 AND state = 'closing'",
        )
        .bind(&a.resource)
        .bind(&a.content_sha256)
        .bind(now_ms)
        .bind(&a.source)
        .bind(&a.window_token)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        let index = log::append(&mut tx, &leaf_key, &a.leaf_data, now_ms).await?;
        let resources = serde_json::to_string(&a.resources).unwrap_or_default();
        for (m, key, deletion) in &members {
            let released = sqlx::query(
                "DELETE FROM messages WHERE source = $1 AND message_token = $2 AND state = 'quarantined'",
            )
            .bind(&key.source)
            .bind(&key.token)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let inserted = sqlx::query(super::ledger::INSERT_MESSAGE)
                .bind(&key.source)
                .bind(&key.token)
                .bind(MessageState::Archived.as_str())
                .bind(&m.rule)
                .bind(&m.content_sha256)
                .bind(&a.resource)
                .bind(&resources)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if inserted == 1 {
                outbox::insert(&mut tx, &m.deletion, deletion, now_ms).await?;
            }
            if released == 1 {
                sqlx::query(
                    "UPDATE quarantine SET released_at = $3, sealed_event = $4, sealed_detail = NULL
                     WHERE source = $1 AND message_token = $2",
                )
                .bind(&key.source)
                .bind(&key.token)
                .bind(now_ms)
                .bind(Vec::<u8>::new())
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("DELETE FROM transcript_messages WHERE source = $1 AND message_token = $2")
                .bind(&key.source)
                .bind(&key.token)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Some(index))
    }

    /// Messages held in transcript windows (not yet terminal), for `status`.
    pub async fn held_transcript_messages(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) FROM transcript_messages")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?)
    }
}
