//! Content held for review before archive (`review_redaction`): the
//! original stays sealed in the quarantine row, the reviewer's redaction
//! request beside it (migration `0013`); both go with the release.

use sqlx::Row;

use super::{RowKey, Store, StoreError};
use crate::media::redact::Rect;

/// A reviewer's decision on held content: black out `rects` (none: archive
/// it with its metadata removed only), for the received bytes whose
/// SHA-256 is `received_sha256`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RedactionRequest {
    pub rects: Vec<Rect>,
    /// SHA-256 of the received bytes the reviewer saw, lowercase hex.
    pub received_sha256: String,
    /// Who decided (audit).
    pub by: String,
    pub at_ms: i64,
}

impl Store {
    /// Keeps `sealed_original` as the held original of a quarantined
    /// message (sealed at `quarantine.sealed_detail` of its row).
    pub async fn hold_original(
        &self,
        key: &(impl RowKey + ?Sized),
        sealed_original: &crate::seal::Sealing,
    ) -> Result<(), StoreError> {
        let key = self.row(key)?;
        let sealed = sealed_original.at(&super::sealed::quarantine_detail(&key));
        sqlx::query(
            "UPDATE quarantine SET sealed_detail = $3
             WHERE source = $1 AND message_token = $2 AND released_at IS NULL",
        )
        .bind(&key.source)
        .bind(&key.token)
        .bind(sealed)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a reviewer's request; `false` when the message is not (or
    /// no longer) quarantined.
    pub async fn record_redaction_request(
        &self,
        key: &(impl RowKey + ?Sized),
        request: &RedactionRequest,
    ) -> Result<bool, StoreError> {
        let key = self.row(key)?;
        let json = serde_json::to_string(request).expect("a redaction request serialises");
        let done = sqlx::query(
            "UPDATE quarantine SET redaction = $3
             WHERE source = $1 AND message_token = $2 AND released_at IS NULL
               AND EXISTS (SELECT 1 FROM messages m WHERE m.source = $1
                           AND m.message_token = $2 AND m.state = 'quarantined')",
        )
        .bind(&key.source)
        .bind(&key.token)
        .bind(json)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// The reviewer's request for a message, if one was recorded.
    pub async fn redaction_request(
        &self,
        key: &(impl RowKey + ?Sized),
    ) -> Result<Option<RedactionRequest>, StoreError> {
        let key = self.row(key)?;
        let row = sqlx::query(
            "SELECT redaction FROM quarantine WHERE source = $1 AND message_token = $2",
        )
        .bind(&key.source)
        .bind(&key.token)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let json: Option<String> = row.try_get(0)?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }
}
