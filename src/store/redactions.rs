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

/// A retraction waiting for its held target to be archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRedaction {
    /// The retraction event, as the store names it.
    pub redaction: MessageRef,
    /// What [`Store::record_pending_redaction`] sealed, still sealed
    /// ([`super::sealed::pending_redaction`] of `redaction`).
    pub sealed: Vec<u8>,
}

impl Store {
    /// Records that the retraction `redaction` of the held message
    /// `target` waits for the target to be archived, with `sealed` (who
    /// retracted and when) sealed to the row. Recording it again changes
    /// nothing. `true` when recorded now.
    pub async fn record_pending_redaction(
        &self,
        redaction: &MessageKey,
        target: &MessageKey,
        sealed: &crate::seal::Sealing,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let redaction = self.row(redaction)?;
        let target = self.row(target)?;
        let done = sqlx::query(
            "INSERT INTO pending_redactions
                 (source, redaction_token, target_token, sealed_redaction, created_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (source, redaction_token) DO NOTHING",
        )
        .bind(&redaction.source)
        .bind(&redaction.token)
        .bind(&target.token)
        .bind(sealed.at(&super::sealed::pending_redaction(&redaction)))
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Targets (at most `limit`) that are archived and still have a
    /// retraction waiting for them ([`Store::record_pending_redaction`]):
    /// their release archived them, but the mark was not written (the KIS
    /// was down for every attempt, the worker stopped in between, or the
    /// release held the text in a transcript window that archived it
    /// later).
    pub async fn archived_with_pending_redactions(
        &self,
        limit: u32,
    ) -> Result<Vec<MessageRef>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT p.source, p.target_token FROM pending_redactions p
             JOIN messages m ON m.source = p.source AND m.message_token = p.target_token
             WHERE m.state = 'archived'
             ORDER BY p.source, p.target_token LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(MessageRef {
                    source: r.try_get(0)?,
                    token: r.try_get(1)?,
                })
            })
            .collect()
    }

    /// The retractions waiting for `target`, oldest first.
    pub async fn pending_redactions(
        &self,
        target: &(impl super::RowKey + ?Sized),
    ) -> Result<Vec<PendingRedaction>, StoreError> {
        let target = self.row(target)?;
        let rows = sqlx::query(
            "SELECT redaction_token, sealed_redaction FROM pending_redactions
             WHERE source = $1 AND target_token = $2 ORDER BY created_at, redaction_token",
        )
        .bind(&target.source)
        .bind(&target.token)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(PendingRedaction {
                    redaction: MessageRef {
                        source: target.source.clone(),
                        token: r.try_get(0)?,
                    },
                    sealed: r.try_get(1)?,
                })
            })
            .collect()
    }

    /// Drops the waiting retraction `redaction` (its mark is recorded).
    pub async fn drop_pending_redaction(&self, redaction: &MessageRef) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM pending_redactions WHERE source = $1 AND redaction_token = $2")
            .bind(&redaction.source)
            .bind(&redaction.token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

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

    async fn pending_redactions_wait_for_their_target(backend: Backend) {
        let (store, _dir) = fresh(backend).await;
        let sealer = crate::store::tests::test_sealer();
        let key = |id: &str| MessageKey {
            source: "matrix".into(),
            message_id: id.into(),
        };
        let target = key("$held");
        assert!(store.pending_redactions(&target).await.unwrap().is_empty());
        let sealing = sealer.seal(b"who and when");
        for (id, now) in [("$r1", 10), ("$r2", 20)] {
            assert!(
                store
                    .record_pending_redaction(&key(id), &target, &sealing, now)
                    .await
                    .unwrap()
            );
        }
        assert!(
            !store
                .record_pending_redaction(&key("$r1"), &target, &sealing, 30)
                .await
                .unwrap()
        );
        let pending = store.pending_redactions(&target).await.unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(
            pending[0].redaction,
            store.message_ref(&key("$r1")).unwrap()
        );
        let opened = sealer
            .open(
                &crate::store::sealed::pending_redaction(&pending[0].redaction),
                &pending[0].sealed,
            )
            .unwrap();
        assert_eq!(opened, b"who and when");
        store
            .drop_pending_redaction(&pending[0].redaction)
            .await
            .unwrap();
        assert_eq!(store.pending_redactions(&target).await.unwrap().len(), 1);
        assert!(
            store
                .pending_redactions(&key("$other"))
                .await
                .unwrap()
                .is_empty()
        );
    }

    both_backends!(
        redaction_marks_are_recorded_once,
        pending_redactions_wait_for_their_target
    );
}
