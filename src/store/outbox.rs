//! The transactional outbox of deletion commands. Rows are written in the
//! same transaction as the archive (or the not-relevant decision); the relay
//! claims them with a lease, publishes, and records the gateway's receipt.
//!
//! States: `scheduled` (retention not over) → `pending` → `requested`
//! (published, confirmed by the broker) → `retrying` (the adapter reported a
//! transient failure and keeps trying) → `confirmed` | `failed` with a reason
//! (receipt). Every receipt is also kept in `deletion_receipts`.

use sqlx::{Any, Row, Transaction};

use super::{MessageRef, RowKey, Store, StoreError};
use crate::event::MessageKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionState {
    Scheduled,
    Pending,
    Requested,
    Retrying,
    Confirmed,
    Failed,
}

impl DeletionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Pending => "pending",
            Self::Requested => "requested",
            Self::Retrying => "retrying",
            Self::Confirmed => "confirmed",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "scheduled" => Self::Scheduled,
            "pending" => Self::Pending,
            "requested" => Self::Requested,
            "retrying" => Self::Retrying,
            "confirmed" => Self::Confirmed,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// A deletion to queue.
#[derive(Debug, Clone)]
pub struct NewDeletion {
    pub deletion_id: String,
    pub key: MessageKey,
    /// `archived` or `not-relevant`.
    pub reason: &'static str,
    /// The deletion command, sealed when written (it names the conversation).
    pub sealed_command: crate::seal::Sealing,
    /// Not published before this time (unix ms).
    pub not_before_ms: i64,
    /// `Pending` after an archive, `Scheduled` while a retention runs.
    pub state: DeletionState,
}

/// A deletion requested long ago without a final receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StuckDeletion {
    pub deletion_id: String,
    pub source: String,
    pub state: DeletionState,
    pub requested_at_ms: i64,
    /// The last receipt's reason code, if a `retrying` receipt came.
    pub detail: Option<String>,
}

/// A claimed deletion, ready to publish.
#[derive(Debug, Clone)]
pub struct DeletionRow {
    pub deletion_id: String,
    /// The message, by its token (the command inside names it).
    pub key: MessageRef,
    pub sealed_command: Vec<u8>,
    pub attempts: i64,
}

/// A claimed row from `deletion_id, source, message_token, sealed_command, attempts`.
fn claimed_row(r: &sqlx::any::AnyRow) -> Result<DeletionRow, StoreError> {
    Ok(DeletionRow {
        deletion_id: r.try_get(0)?,
        key: MessageRef {
            source: r.try_get(1)?,
            token: r.try_get(2)?,
        },
        sealed_command: r.try_get(3)?,
        attempts: r.try_get(4)?,
    })
}

/// Inserts `d`, whose message the store names `named` ([`insert_many`]
/// with one row).
pub(super) async fn insert(
    tx: &mut Transaction<'_, Any>,
    d: &NewDeletion,
    named: &MessageRef,
    now_ms: i64,
) -> Result<(), StoreError> {
    insert_many(tx, &[(d, named, now_ms)]).await
}

/// Inserts the outbox rows of `rows` — `(command, its message as named,
/// now_ms)` — several per statement ([`super::log::statement_chunks`]);
/// a row whose `deletion_id` is already queued is left as it is.
pub(super) async fn insert_many(
    tx: &mut Transaction<'_, Any>,
    rows: &[(&NewDeletion, &MessageRef, i64)],
) -> Result<(), StoreError> {
    let sealed: Vec<_> = rows
        .iter()
        .map(|(d, named, now_ms)| {
            let blob = d
                .sealed_command
                .at(&super::sealed::deletion_command(&d.deletion_id));
            (*d, *named, *now_ms, blob)
        })
        .collect();
    for chunk in super::log::statement_chunks(&sealed, |row| 300 + row.3.len()) {
        let sql = super::log::values_sql(
            "INSERT INTO deletions
                (deletion_id, source, message_token, reason, state, sealed_command, not_before, created_at)
             VALUES ",
            8,
            chunk.len(),
        ) + " ON CONFLICT DO NOTHING";
        // Audited: `values_sql` writes only the fixed head and numbered placeholders.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (d, named, now_ms, blob) in chunk {
            q = q
                .bind(&d.deletion_id)
                .bind(&named.source)
                .bind(&named.token)
                .bind(d.reason)
                .bind(d.state.as_str())
                .bind(blob.as_slice())
                .bind(d.not_before_ms)
                .bind(*now_ms);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

impl Store {
    /// Retention sweep: scheduled deletions whose time has come become pending.
    pub async fn release_due_deletions(&self, now_ms: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE deletions SET state = 'pending' WHERE state = 'scheduled' AND not_before <= $1",
        )
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Claims up to `limit` pending deletions for `lease_ms`; a relay that
    /// dies leaves them to the next after the lease. On PostgreSQL the
    /// candidates are locked `FOR UPDATE SKIP LOCKED`, so relays of several
    /// workers claim disjoint rows without waiting for each other; SQLite
    /// has one writer. One statement either way (`UPDATE … RETURNING`).
    pub async fn claim_deletions(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<DeletionRow>, StoreError> {
        let lock = if self.backend == super::Backend::Postgres {
            "FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let gate = self.write_gate().await;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE deletions SET claimed_until = $1, attempts = attempts + 1
             WHERE deletion_id IN (
                 SELECT deletion_id FROM deletions
                 WHERE state = 'pending' AND not_before <= $2
                   AND (claimed_until IS NULL OR claimed_until < $2)
                 ORDER BY created_at LIMIT $3
                 {lock})
             RETURNING deletion_id, source, message_token, sealed_command, attempts, created_at"
        )))
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.writers)
        .await?;
        drop(gate);
        let mut claimed = Vec::with_capacity(rows.len());
        for r in &rows {
            claimed.push((r.try_get::<i64, _>(5)?, claimed_row(r)?));
        }
        claimed.sort_by(|a, b| (a.0, &a.1.deletion_id).cmp(&(b.0, &b.1.deletion_id)));
        Ok(claimed.into_iter().map(|(_, row)| row).collect())
    }

    /// The broker confirmed the published command.
    pub async fn mark_deletion_requested(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        self.mark_deletions_requested(&[id], now_ms).await?;
        Ok(())
    }

    /// The source of deletion `id`, `None` for an unknown one.
    pub async fn deletion_source(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar::<_, String>("SELECT source FROM deletions WHERE deletion_id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Records a receipt: `state` is `Confirmed`, `Retrying` or `Failed`,
    /// `status` the receipt's own word, `detail` its reason code. The receipt
    /// is kept in any case; the state moves only forward (a confirmed
    /// deletion stays confirmed, a late `retrying` does not reopen a settled
    /// one). Returns `false` for an unknown id.
    pub async fn record_deletion_receipt(
        &self,
        id: &str,
        state: DeletionState,
        status: &str,
        detail: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let from: &[&str] = match state {
            DeletionState::Confirmed => &["pending", "requested", "retrying", "failed"],
            DeletionState::Failed => &["pending", "requested", "retrying"],
            DeletionState::Retrying => &["pending", "requested", "retrying"],
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "a receipt cannot set state {}",
                    state.as_str()
                )));
            }
        };
        let known = sqlx::query("SELECT 1 FROM deletions WHERE deletion_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .is_some();
        if !known {
            return Ok(false);
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO deletion_receipts (deletion_id, received_at, status, detail)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(now_ms)
        .bind(status)
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        let settled = (state != DeletionState::Retrying).then_some(now_ms);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE deletions SET state = $1, settled_at = $2, detail = $3,
                 requested_at = COALESCE(requested_at, $5)
             WHERE deletion_id = $4 AND state IN ({})",
            from.iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
        .bind(state.as_str())
        .bind(settled)
        .bind(detail)
        .bind(id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The receipts of one deletion, oldest first: `(received_at, status, detail)`.
    pub async fn deletion_receipts(
        &self,
        id: &str,
    ) -> Result<Vec<(i64, String, Option<String>)>, StoreError> {
        sqlx::query(
            "SELECT received_at, status, detail FROM deletion_receipts
             WHERE deletion_id = $1 ORDER BY received_at, status",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
    }

    /// The broker confirmed the published commands `ids`: one statement
    /// (`… WHERE deletion_id IN (…)`) marks them all requested. Returns the
    /// rows it moved; a row no longer pending (a receipt came first) stays.
    pub async fn mark_deletions_requested(
        &self,
        ids: &[&str],
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let list = super::log::placeholders(2, ids.len());
        let sql = format!(
            "UPDATE deletions SET state = 'requested', requested_at = $1, claimed_until = NULL
             WHERE state = 'pending' AND deletion_id IN ({list})"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_ms);
        for id in ids {
            q = q.bind(*id);
        }
        let _gate = self.write_gate().await;
        Ok(q.execute(&self.writers).await?.rows_affected())
    }

    /// The deletion state of a message, if one was queued.
    pub async fn deletion_state(
        &self,
        key: &(impl RowKey + ?Sized),
    ) -> Result<Option<DeletionState>, StoreError> {
        let key = self.row(key)?;
        let row =
            sqlx::query("SELECT state FROM deletions WHERE source = $1 AND message_token = $2")
                .bind(&key.source)
                .bind(&key.token)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            let s: String = r.try_get(0)?;
            DeletionState::parse(&s)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown deletion state {s}")))
        })
        .transpose()
    }
}
