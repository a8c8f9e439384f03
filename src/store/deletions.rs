//! Deletions as operators see them: counts, failures, stuck ones, and
//! `deletions list|retry` — a failed or stuck deletion put back to
//! `pending`, so the relay publishes its command again (same
//! `deletion_id`: gateways and adapters deduplicate on it).

use sqlx::Row;

use super::outbox::{DeletionState, StuckDeletion};
use super::{Store, StoreError};

/// One deletion without its command: ids, states, counts, times (Unix ms)
/// and the last receipt's reason code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeletionView {
    pub deletion_id: String,
    pub source: String,
    /// `archived` or `not-relevant`.
    pub reason: String,
    #[serde(serialize_with = "state_str")]
    pub state: DeletionState,
    pub attempts: i64,
    /// Times an operator re-requested it (`deletions retry`).
    pub retries: i64,
    pub created_at: i64,
    pub requested_at: Option<i64>,
    pub settled_at: Option<i64>,
    /// The last receipt's reason code.
    pub detail: Option<String>,
}

fn state_str<S: serde::Serializer>(s: &DeletionState, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

const VIEW_COLUMNS: &str = "deletion_id, source, reason, state, attempts, retries, created_at,
    requested_at, settled_at, detail";

fn view_of(r: &sqlx::any::AnyRow) -> Result<DeletionView, StoreError> {
    let state: String = r.try_get(3)?;
    Ok(DeletionView {
        deletion_id: r.try_get(0)?,
        source: r.try_get(1)?,
        reason: r.try_get(2)?,
        state: DeletionState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown deletion state {state}")))?,
        attempts: r.try_get(4)?,
        retries: r.try_get(5)?,
        created_at: r.try_get(6)?,
        requested_at: r.try_get(7)?,
        settled_at: r.try_get(8)?,
        detail: r.try_get(9)?,
    })
}

impl DeletionView {
    /// Failed, or requested before `stuck_before_ms` without a final receipt.
    pub fn retryable(&self, stuck_before_ms: i64) -> bool {
        self.state == DeletionState::Failed || self.stuck(stuck_before_ms)
    }

    /// Requested before `stuck_before_ms` without a final receipt.
    pub fn stuck(&self, stuck_before_ms: i64) -> bool {
        matches!(
            self.state,
            DeletionState::Requested | DeletionState::Retrying
        ) && self.requested_at.is_some_and(|t| t < stuck_before_ms)
    }
}

impl Store {
    /// Failed deletions and those requested before `stuck_before_ms`
    /// without a final receipt, oldest first.
    pub async fn retryable_deletions(
        &self,
        stuck_before_ms: i64,
    ) -> Result<Vec<DeletionView>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {VIEW_COLUMNS} FROM deletions
             WHERE state = 'failed'
                OR (state IN ('requested', 'retrying') AND requested_at < $1)
             ORDER BY created_at, deletion_id"
        )))
        .bind(stuck_before_ms)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(view_of)
        .collect()
    }

    /// The deletion of message `key`, if one was queued.
    pub async fn deletion_of(
        &self,
        key: &(impl super::RowKey + ?Sized),
    ) -> Result<Option<DeletionView>, StoreError> {
        let key = self.row(key)?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {VIEW_COLUMNS} FROM deletions WHERE source = $1 AND message_token = $2"
        )))
        .bind(&key.source)
        .bind(&key.token)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(view_of)
        .transpose()
    }

    /// The message of deletion `id`.
    pub async fn deletion_message(
        &self,
        id: &str,
    ) -> Result<Option<super::MessageRef>, StoreError> {
        let row = sqlx::query("SELECT source, message_token FROM deletions WHERE deletion_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(super::MessageRef {
                source: r.try_get(0)?,
                token: r.try_get(1)?,
            })
        })
        .transpose()
    }

    /// Puts deletion `id` back to `pending` if it is failed, or requested
    /// before `stuck_before_ms` without a final receipt; the relay then
    /// publishes its command again. `false` when it is neither (a receipt
    /// settled it meanwhile, or another operator retried it first).
    pub async fn retry_deletion(&self, id: &str, stuck_before_ms: i64) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE deletions SET state = 'pending', claimed_until = NULL, settled_at = NULL,
                    retries = retries + 1
             WHERE deletion_id = $1
               AND (state = 'failed'
                    OR (state IN ('requested', 'retrying') AND requested_at < $2))",
        )
        .bind(id)
        .bind(stuck_before_ms)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Deletions that were requested before `stuck_before_ms` and are
    /// neither confirmed nor failed, oldest first (at most `limit`).
    pub async fn stuck_deletions(
        &self,
        stuck_before_ms: i64,
        limit: i64,
    ) -> Result<Vec<StuckDeletion>, StoreError> {
        sqlx::query(
            "SELECT deletion_id, source, state, requested_at, detail FROM deletions
             WHERE state IN ('requested', 'retrying') AND requested_at < $1
             ORDER BY requested_at LIMIT $2",
        )
        .bind(stuck_before_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            let state: String = r.try_get(2)?;
            Ok(StuckDeletion {
                deletion_id: r.try_get(0)?,
                source: r.try_get(1)?,
                state: DeletionState::parse(&state)
                    .ok_or_else(|| StoreError::Corrupt("unknown deletion state".into()))?,
                requested_at_ms: r.try_get(3)?,
                detail: r.try_get(4)?,
            })
        })
        .collect()
    }

    /// Failed deletions with their reason codes and counts.
    pub async fn failed_deletions(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        sqlx::query(
            "SELECT source, COALESCE(detail, ''), COUNT(*) FROM deletions WHERE state = 'failed'
             GROUP BY source, detail ORDER BY source, detail",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
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
            "SELECT COUNT(*) FROM deletions
             WHERE state IN ('requested', 'retrying') AND requested_at < $1",
        )
        .bind(stuck_before_ms)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        Ok((counts, stuck))
    }
}
