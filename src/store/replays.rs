//! Dead letters replayed (`dlq_replays`) and export files imported
//! (`imports`): what makes `dlq replay` exactly-once per dead letter and
//! `import` resumable.

use std::collections::HashMap;

use sqlx::Row;

use super::{Store, StoreError};

/// Where a replay stands before it is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayBegin {
    /// Not replayed before: recorded as `publishing` now.
    Fresh,
    /// A replay began before and was not confirmed: publish again.
    Unfinished,
    /// Replayed and confirmed at `at` (Unix ms): do not publish again.
    Published { at: i64 },
}

impl Store {
    /// Records that dead letter `id` is about to be published to `queue`.
    pub async fn begin_replay(
        &self,
        id: &str,
        queue: &str,
        actor: &str,
        now_ms: i64,
    ) -> Result<ReplayBegin, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO dlq_replays (dead_letter_id, state, queue, actor, started_at)
             VALUES ($1, 'publishing', $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(queue)
        .bind(actor)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(ReplayBegin::Fresh);
        }
        let row =
            sqlx::query("SELECT state, published_at FROM dlq_replays WHERE dead_letter_id = $1")
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
        let state: String = row.try_get(0)?;
        Ok(match (state.as_str(), row.try_get::<Option<i64>, _>(1)?) {
            ("published", Some(at)) => ReplayBegin::Published { at },
            _ => ReplayBegin::Unfinished,
        })
    }

    /// The broker confirmed the replay of `id`.
    pub async fn finish_replay(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE dlq_replays SET state = 'published', published_at = $2
             WHERE dead_letter_id = $1 AND state = 'publishing'",
        )
        .bind(id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// When each dead letter replayed so far was published, by id.
    pub async fn replayed(&self) -> Result<HashMap<String, i64>, StoreError> {
        sqlx::query(
            "SELECT dead_letter_id, published_at FROM dlq_replays WHERE state = 'published'",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
    }

    /// Whether the export file with token `token` was published.
    pub async fn imported(&self, token: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 FROM imports WHERE file_token = $1")
            .bind(token)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Records that the export file with token `token` was published.
    pub async fn record_import(
        &self,
        token: &str,
        actor: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO imports (file_token, published_at, actor) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(token)
        .bind(now_ms)
        .bind(actor)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
