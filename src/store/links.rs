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
    /// Creates or replaces the link of a conversation token.
    pub async fn set_link(&self, token: &str, link: &Link, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO links (conversation_token, patient, encounter, created_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (conversation_token)
             DO UPDATE SET patient = excluded.patient, encounter = excluded.encounter",
        )
        .bind(token)
        .bind(&link.patient)
        .bind(&link.encounter)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
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
