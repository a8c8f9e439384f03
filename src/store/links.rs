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
    /// when it was decided (`created_at`, also of a replaced link).
    pub async fn set_link(&self, token: &str, link: &Link, now_ms: i64) -> Result<(), StoreError> {
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Retires what was decided about a conversation up to `at_ms` (ms),
    /// in one transaction: its link goes, and its review decision becomes
    /// `retired` by `by` at `at_ms`, so that neither a link nor a phone
    /// number resolves it until a person links or dismisses it again. A
    /// decision taken after `at_ms` (a person linked the conversation again
    /// after the identity change) stays, so a redelivered notice undoes
    /// nothing. `true` when something was retired.
    pub async fn retire_conversation(
        &self,
        token: &str,
        by: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let links =
            sqlx::query("DELETE FROM links WHERE conversation_token = $1 AND created_at <= $2")
                .bind(token)
                .bind(at_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        let reviews = sqlx::query(
            "INSERT INTO conversation_reviews (conversation_token, decision, decided_by, decided_at)
             VALUES ($1, 'retired', $2, $3)
             ON CONFLICT (conversation_token) DO UPDATE SET decision = 'retired',
                 decided_by = excluded.decided_by, decided_at = excluded.decided_at
             WHERE conversation_reviews.decided_at <= excluded.decided_at
               AND conversation_reviews.decision <> 'retired'",
        )
        .bind(token)
        .bind(by)
        .bind(at_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(links + reviews > 0)
    }

    /// Whether the conversation's review decision is `retired`
    /// ([`Store::retire_conversation`]).
    pub async fn conversation_retired(&self, token: &str) -> Result<bool, StoreError> {
        Ok(self
            .conversation_review(token)
            .await?
            .is_some_and(|r| r.decision == super::ConversationDecision::Retired))
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
