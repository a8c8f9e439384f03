//! The transactional outbox of deletion commands. Rows are written in the
//! same transaction as the archive (or the not-relevant decision); the relay
//! claims them with a lease, publishes, and records the gateway's receipt.
//!
//! States: `scheduled` (retention not over) → `pending` → `requested`
//! (published, confirmed by the broker) → `confirmed` | `failed` (receipt).

use sqlx::{Any, Row, Transaction};

use super::{Store, StoreError};
use crate::event::MessageKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionState {
    Scheduled,
    Pending,
    Requested,
    Confirmed,
    Failed,
}

impl DeletionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Pending => "pending",
            Self::Requested => "requested",
            Self::Confirmed => "confirmed",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "scheduled" => Self::Scheduled,
            "pending" => Self::Pending,
            "requested" => Self::Requested,
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
    /// The deletion command, sealed (it names the conversation).
    pub sealed_command: Vec<u8>,
    /// Not published before this time (unix ms).
    pub not_before_ms: i64,
    /// `Pending` after an archive, `Scheduled` while a retention runs.
    pub state: DeletionState,
}

/// A claimed deletion, ready to publish.
#[derive(Debug, Clone)]
pub struct DeletionRow {
    pub deletion_id: String,
    pub key: MessageKey,
    pub sealed_command: Vec<u8>,
    pub attempts: i64,
}

pub(super) async fn insert(
    tx: &mut Transaction<'_, Any>,
    d: &NewDeletion,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO deletions
            (deletion_id, source, message_id, reason, state, sealed_command, not_before, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT DO NOTHING",
    )
    .bind(&d.deletion_id)
    .bind(&d.key.source)
    .bind(&d.key.message_id)
    .bind(d.reason)
    .bind(d.state.as_str())
    .bind(d.sealed_command.clone())
    .bind(d.not_before_ms)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
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
    /// dies leaves them to the next after the lease.
    pub async fn claim_deletions(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<DeletionRow>, StoreError> {
        let candidates = sqlx::query(
            "SELECT deletion_id, source, message_id, sealed_command, attempts FROM deletions
             WHERE state = 'pending' AND not_before <= $1
               AND (claimed_until IS NULL OR claimed_until < $1)
             ORDER BY created_at LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = Vec::with_capacity(candidates.len());
        for r in candidates {
            let id: String = r.try_get(0)?;
            let won = sqlx::query(
                "UPDATE deletions SET claimed_until = $1, attempts = attempts + 1
                 WHERE deletion_id = $2 AND state = 'pending'
                   AND (claimed_until IS NULL OR claimed_until < $3)",
            )
            .bind(now_ms + lease_ms)
            .bind(&id)
            .bind(now_ms)
            .execute(&self.pool)
            .await?
            .rows_affected()
                == 1;
            if won {
                claimed.push(DeletionRow {
                    deletion_id: id,
                    key: MessageKey {
                        source: r.try_get(1)?,
                        message_id: r.try_get(2)?,
                    },
                    sealed_command: r.try_get(3)?,
                    attempts: r.try_get::<i64, _>(4)? + 1,
                });
            }
        }
        Ok(claimed)
    }

    /// The broker confirmed the published command.
    pub async fn mark_deletion_requested(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE deletions SET state = 'requested', requested_at = $1, claimed_until = NULL
             WHERE deletion_id = $2 AND state = 'pending'",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a gateway's receipt. Returns `false` for an unknown id.
    pub async fn record_deletion_receipt(
        &self,
        id: &str,
        deleted: bool,
        detail: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let state = if deleted {
            DeletionState::Confirmed
        } else {
            DeletionState::Failed
        };
        Ok(sqlx::query(
            "UPDATE deletions SET state = $1, settled_at = $2, detail = $3
             WHERE deletion_id = $4 AND state IN ('pending', 'requested', 'failed')",
        )
        .bind(state.as_str())
        .bind(now_ms)
        .bind(detail)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// The deletion state of a message, if one was queued.
    pub async fn deletion_state(
        &self,
        key: &MessageKey,
    ) -> Result<Option<DeletionState>, StoreError> {
        let row = sqlx::query("SELECT state FROM deletions WHERE source = $1 AND message_id = $2")
            .bind(&key.source)
            .bind(&key.message_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let s: String = r.try_get(0)?;
            DeletionState::parse(&s)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown deletion state {s}")))
        })
        .transpose()
    }

    /// Deletions per state, and how many were requested before `stuck_before_ms`
    /// without a receipt.
    pub async fn deletion_counts(
        &self,
        stuck_before_ms: i64,
    ) -> Result<(Vec<(String, i64)>, i64), StoreError> {
        let rows =
            sqlx::query("SELECT state, COUNT(*) FROM deletions GROUP BY state ORDER BY state")
                .fetch_all(&self.pool)
                .await?;
        let counts = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let stuck: i64 = sqlx::query(
            "SELECT COUNT(*) FROM deletions WHERE state = 'requested' AND requested_at < $1",
        )
        .bind(stuck_before_ms)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        Ok((counts, stuck))
    }
}
