//! Conversation → Patient/Encounter links, keyed by a sealed token of the
//! conversation so the table holds no phone numbers or room ids.

use sqlx::Row;

use super::{Store, StoreError};

/// Literal KIS references a conversation is linked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub patient: String,
    pub encounter: Option<String>,
}

impl Store {
    /// Creates or replaces the link of a conversation token; `now_ms` is
    /// when it was decided (`created_at`, also of a replaced link). A
    /// person's link ends a retirement ([`Store::retire_conversation`]) in
    /// the same transaction.
    pub async fn set_link(&self, token: &str, link: &Link, now_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM retired_conversations WHERE conversation_token = $1")
            .bind(token)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO links (conversation_token, patient, encounter, created_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (conversation_token)
             DO UPDATE SET patient = excluded.patient, encounter = excluded.encounter,
                           created_at = excluded.created_at",
        )
        .bind(token)
        .bind(&link.patient)
        .bind(&link.encounter)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether retiring the conversation at `at_ms` (ms) would change
    /// anything: a link or review decision from before then, or neither a
    /// retirement that late nor a person's link after it.
    pub async fn retirement_pending(&self, token: &str, at_ms: i64) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT
               (SELECT COUNT(*) FROM links WHERE conversation_token = $1 AND created_at <= $2)
             + (SELECT COUNT(*) FROM conversation_reviews
                 WHERE conversation_token = $1 AND decided_at <= $2),
               (SELECT COUNT(*) FROM retired_conversations
                 WHERE conversation_token = $1 AND retired_at >= $2)
             + (SELECT COUNT(*) FROM links WHERE conversation_token = $1 AND created_at > $2)",
        )
        .bind(token)
        .bind(at_ms)
        .fetch_one(&self.pool)
        .await?;
        let older: i64 = row.try_get(0)?;
        let settled: i64 = row.try_get(1)?;
        Ok(older > 0 || settled == 0)
    }

    /// Retires what was decided about a conversation up to `at_ms` (ms),
    /// in one transaction: its link and its review decision (linked,
    /// dismissed) go, and it is recorded retired at `at_ms`
    /// (`retired_conversations`), so that no phone number resolves it
    /// until a person links it again ([`Store::set_link`]). A decision
    /// taken after `at_ms` (a person linked the conversation again after
    /// the identity change) stays, so a redelivered notice undoes nothing.
    pub async fn retire_conversation(&self, token: &str, at_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM links WHERE conversation_token = $1 AND created_at <= $2")
            .bind(token)
            .bind(at_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM conversation_reviews WHERE conversation_token = $1 AND decided_at <= $2",
        )
        .bind(token)
        .bind(at_ms)
        .execute(&mut *tx)
        .await?;
        // Not after a person's later link: that link is the newer decision.
        let linked_later: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM links WHERE conversation_token = $1 AND created_at > $2",
        )
        .bind(token)
        .bind(at_ms)
        .fetch_one(&mut *tx)
        .await?;
        if linked_later == 0 {
            sqlx::query(
                "INSERT INTO retired_conversations (conversation_token, retired_at) VALUES ($1, $2)
                 ON CONFLICT (conversation_token) DO UPDATE SET retired_at = excluded.retired_at
                 WHERE retired_conversations.retired_at < excluded.retired_at",
            )
            .bind(token)
            .bind(at_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Whether the conversation is retired ([`Store::retire_conversation`])
    /// and no person linked it since.
    pub async fn conversation_retired(&self, token: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM retired_conversations WHERE conversation_token = $1",
        )
        .bind(token)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    pub async fn link(&self, token: &str) -> Result<Option<Link>, StoreError> {
        let row = sqlx::query("SELECT patient, encounter FROM links WHERE conversation_token = $1")
            .bind(token)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(Link {
                patient: r.try_get(0)?,
                encounter: r.try_get(1)?,
            })
        })
        .transpose()
    }
}
