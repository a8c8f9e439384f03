//! Retractions at the messenger of archived messages (a Matrix
//! `m.room.redaction` by the sender): one recorded state per retraction
//! event, after the KIS record was marked or refused the mark.

use sqlx::Row;

use super::{MessageRef, Store, StoreError};
use crate::event::MessageKey;

/// How a retraction of an archived message ended. Both the retraction and
/// its target are kept as message tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactionMark {
    /// The retracted message.
    pub target: MessageRef,
    /// `marked` or `rejected`.
    pub state: String,
    /// The KIS resource of the retracted message, `Type/id`.
    pub resource: String,
    /// The Provenance that records the retraction (`marked` only).
    pub provenance: Option<String>,
}

impl Store {
    /// Records how the retraction `redaction` of `target` ended; a second
    /// record of the same retraction changes nothing. `true` when recorded now.
    pub async fn record_redaction_mark(
        &self,
        redaction: &MessageKey,
        mark: &RedactionMark,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let redaction = self.row(redaction)?;
        let done = sqlx::query(
            "INSERT INTO source_redactions
                 (source, redaction_token, target_token, state, resource, provenance, recorded_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (source, redaction_token) DO NOTHING",
        )
        .bind(&redaction.source)
        .bind(&redaction.token)
        .bind(&mark.target.token)
        .bind(&mark.state)
        .bind(&mark.resource)
        .bind(&mark.provenance)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The recorded end of the retraction `redaction`, if any.
    pub async fn redaction_mark(
        &self,
        redaction: &MessageKey,
    ) -> Result<Option<RedactionMark>, StoreError> {
        let redaction = self.row(redaction)?;
        let row = sqlx::query(
            "SELECT target_token, state, resource, provenance FROM source_redactions
             WHERE source = $1 AND redaction_token = $2",
        )
        .bind(&redaction.source)
        .bind(&redaction.token)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(RedactionMark {
                target: MessageRef {
                    source: redaction.source.clone(),
                    token: r.try_get(0)?,
                },
                state: r.try_get(1)?,
                resource: r.try_get(2)?,
                provenance: r.try_get(3)?,
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Backend;
    use super::super::tests::{both_backends, fresh};
    use super::*;

    async fn redaction_marks_are_recorded_once(backend: Backend) {
        let (store, _dir) = fresh(backend).await;
        let key = MessageKey {
            source: "matrix".into(),
            message_id: "$red1".into(),
        };
        assert_eq!(store.redaction_mark(&key).await.unwrap(), None);
        let target = MessageKey {
            source: "matrix".into(),
            message_id: "$orig1".into(),
        };
        let mark = RedactionMark {
            target: store.message_ref(&target).unwrap(),
            state: "marked".into(),
            resource: "Communication/7".into(),
            provenance: Some("Provenance/p".into()),
        };
        assert!(store.record_redaction_mark(&key, &mark, 10).await.unwrap());
        let other = RedactionMark {
            state: "rejected".into(),
            provenance: None,
            ..mark.clone()
        };
        assert!(!store.record_redaction_mark(&key, &other, 20).await.unwrap());
        assert_eq!(store.redaction_mark(&key).await.unwrap(), Some(mark));
    }

    both_backends!(redaction_marks_are_recorded_once);
}
