//! Quarantine review: listing (ids, reasons, ages only), an operator's
//! resolution with an audit record (who, when, to what), and the release
//! of a quarantined message into the archive — one transaction that turns
//! the quarantined row into an archived one, so a release never duplicates.

use sqlx::Row;

use super::ledger::{MessageState, TerminalRow};
use super::{ArchiveRecord, MessageRef, RowKey, Store, StoreError, log, outbox};
use crate::event::MessageKey;
use crate::seal::Sealing;

/// One open quarantine item, without content or identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineItem {
    pub key: MessageRef,
    pub reason: String,
    pub created_at: i64,
    /// A phone-only match left a candidate patient.
    pub has_candidate: bool,
    /// An operator resolved it; release pending.
    pub resolved: bool,
    /// The correlation id of the delivery that quarantined it.
    pub correlation_id: Option<String>,
}

/// Everything kept with a quarantined message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineEntry {
    pub reason: String,
    pub sealed_event: Vec<u8>,
    /// Identity map id of the candidate patient.
    pub candidate: Option<String>,
    pub resolved_patient: Option<String>,
    pub resolved_encounter: Option<String>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub released_at: Option<i64>,
}

impl Store {
    /// Quarantines a message whose patient is only a candidate (a phone
    /// match), keeping the candidate for `quarantine resolve`.
    pub async fn record_quarantine_candidate(
        &self,
        key: &MessageKey,
        reason: &str,
        sealed_event: &Sealing,
        candidate: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.insert_quarantine(key, reason, sealed_event, candidate, None, now_ms)
            .await
    }

    /// The terminal row and the quarantine item of a message held for its
    /// patient, with the candidate and the conversation token it keeps.
    /// `false` if the message already has a terminal state.
    pub(super) async fn insert_quarantine(
        &self,
        key: &MessageKey,
        reason: &str,
        sealed_event: &Sealing,
        candidate: Option<&str>,
        conversation_token: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let key = &self.row(key)?;
        let row = TerminalRow::bare(key, MessageState::Quarantined, reason);
        let mut conn = self.pool.acquire().await?;
        let result = async {
            let Some(mut tx) = Self::begin_terminal(&mut conn, row, now_ms).await? else {
                return Ok(false);
            };
            sqlx::query(
                "INSERT INTO quarantine (source, message_token, reason, sealed_event, sealed_detail,
                                         created_at, candidate, conversation_token, correlation_id)
                 VALUES ($1, $2, $3, $4, NULL, $5, $6, $7, $8)",
            )
            .bind(&key.source)
            .bind(&key.token)
            .bind(reason)
            .bind(sealed_event.at(&super::sealed::quarantine_event(key)))
            .bind(now_ms)
            .bind(candidate)
            .bind(conversation_token)
            .bind(crate::correlation::current())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        }
        .await;
        super::ledger::discard_on_error(conn, &result);
        result
    }

    /// Open quarantine items (still quarantined), oldest first.
    pub async fn quarantine_list(&self) -> Result<Vec<QuarantineItem>, StoreError> {
        let rows = sqlx::query(
            "SELECT q.source, q.message_token, m.reason, q.created_at, q.candidate, q.resolved_patient,
                    q.correlation_id
             FROM quarantine q JOIN messages m
               ON m.source = q.source AND m.message_token = q.message_token
             WHERE m.state = 'quarantined'
             ORDER BY q.created_at, q.source, q.message_token",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(QuarantineItem {
                    key: MessageRef {
                        source: r.try_get(0)?,
                        token: r.try_get(1)?,
                    },
                    reason: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                    has_candidate: r.try_get::<Option<String>, _>(4)?.is_some(),
                    resolved: r.try_get::<Option<String>, _>(5)?.is_some(),
                    correlation_id: r.try_get(6)?,
                })
            })
            .collect()
    }

    pub async fn quarantine_entry(
        &self,
        key: &(impl RowKey + ?Sized),
    ) -> Result<Option<QuarantineEntry>, StoreError> {
        let key = self.row(key)?;
        let row = sqlx::query(
            "SELECT reason, sealed_event, candidate, resolved_patient, resolved_encounter,
                    resolved_by, resolved_at, released_at
             FROM quarantine WHERE source = $1 AND message_token = $2",
        )
        .bind(&key.source)
        .bind(&key.token)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(QuarantineEntry {
                reason: r.try_get(0)?,
                sealed_event: r.try_get(1)?,
                candidate: r.try_get(2)?,
                resolved_patient: r.try_get(3)?,
                resolved_encounter: r.try_get(4)?,
                resolved_by: r.try_get(5)?,
                resolved_at: r.try_get(6)?,
                released_at: r.try_get(7)?,
            })
        })
        .transpose()
    }

    /// Records an operator's resolution (the audit record). `false` when
    /// the message is not (or no longer) quarantined.
    pub async fn resolve_quarantine(
        &self,
        key: &(impl RowKey + ?Sized),
        patient: &str,
        encounter: Option<&str>,
        by: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let key = self.row(key)?;
        let done = sqlx::query(
            "UPDATE quarantine SET resolved_patient = $3, resolved_encounter = $4,
                    resolved_by = $5, resolved_at = $6
             WHERE source = $1 AND message_token = $2 AND released_at IS NULL
               AND EXISTS (SELECT 1 FROM messages m WHERE m.source = $1
                           AND m.message_token = $2 AND m.state = 'quarantined')",
        )
        .bind(&key.source)
        .bind(&key.token)
        .bind(patient)
        .bind(encounter)
        .bind(by)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// Turns a quarantined message into an archived one: the ledger row,
    /// its proof leaf and the deletion outbox row in one transaction; the
    /// sealed copy is dropped, the audit columns stay. `None` when the
    /// message is no longer quarantined (released before: nothing written).
    pub async fn record_archive_released(
        &self,
        rec: &ArchiveRecord,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let key = self.row(&rec.key)?;
        let deletion = self.row(&rec.deletion.key)?;
        let mut tx = self.pool.begin().await?;
        let removed = sqlx::query(
            "DELETE FROM messages WHERE source = $1 AND message_token = $2 AND state = 'quarantined'",
        )
        .bind(&key.source)
        .bind(&key.token)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if removed != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        TerminalRow::archived(&key, rec)
            .bind_to(sqlx::query(super::ledger::INSERT_MESSAGE))
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        outbox::insert(&mut tx, &rec.deletion, &deletion, now_ms).await?;
        let index = log::append(&mut tx, &key, &rec.leaf_data, now_ms).await?;
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
        tx.commit().await?;
        Ok(Some(index))
    }

    /// A released message that could not be archived stays quarantined,
    /// with the new reason.
    pub async fn requarantine(
        &self,
        key: &(impl RowKey + ?Sized),
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let key = self.row(key)?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE messages SET reason = $3, updated_at = $4
             WHERE source = $1 AND message_token = $2 AND state = 'quarantined'",
        )
        .bind(&key.source)
        .bind(&key.token)
        .bind(reason)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE quarantine SET reason = $3 WHERE source = $1 AND message_token = $2")
            .bind(&key.source)
            .bind(&key.token)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
