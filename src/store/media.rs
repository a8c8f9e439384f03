//! Media that several messages reference at the messenger: a Matrix
//! `mxc://` URI is reused by a forward, a caption edit (`m.new_content`
//! carries the same `url`) or a file sent again, and deleting it (the
//! Synapse admin media API) removes it for every event that uses it. The
//! deletion relay therefore deletes a medium only when every other message
//! that uses it has a deletion of its own (archived, or not relevant by a
//! rule or a person); while one is held for review or not decided yet, the
//! messenger copy is redacted and the medium kept.

use std::collections::HashSet;

use sqlx::Row;

use super::{Store, StoreError};
use crate::event::MessageKey;

impl Store {
    /// Records that the message `key` references the medium `reference`
    /// (its messenger id: an `mxc://` URI, a WhatsApp media id), both as
    /// keyed tokens. Recording it again changes nothing.
    pub async fn record_media_use(
        &self,
        key: &MessageKey,
        reference: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let message = self.row(key)?;
        let medium = self.names()?.medium(&key.source, reference);
        sqlx::query(
            "INSERT INTO media_uses (source, media_token, message_token, created_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (source, media_token, message_token) DO NOTHING",
        )
        .bind(&message.source)
        .bind(&medium)
        .bind(&message.token)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Of the deletions `deletion_ids`, those whose message's medium
    /// another message still uses without a deletion of its own: their
    /// command must leave the medium alone (the last of the messages to get
    /// a deletion deletes it).
    pub async fn media_still_in_use(
        &self,
        deletion_ids: &[&str],
    ) -> Result<HashSet<String>, StoreError> {
        let mut kept = HashSet::new();
        for chunk in deletion_ids.chunks(200) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            // Audited: only numbered placeholders are formatted in.
            let sql = format!(
                "SELECT DISTINCT d.deletion_id FROM deletions d
                 JOIN media_uses mine
                   ON mine.source = d.source AND mine.message_token = d.message_token
                 JOIN media_uses other
                   ON other.source = mine.source AND other.media_token = mine.media_token
                  AND other.message_token <> mine.message_token
                 WHERE d.deletion_id IN ({})
                   AND NOT EXISTS (SELECT 1 FROM deletions od
                       WHERE od.source = other.source AND od.message_token = other.message_token)",
                placeholders.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&self.pool).await? {
                kept.insert(r.try_get::<String, _>(0)?);
            }
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{archive, both_backends, fresh, key};
    use super::super::{Backend, DeletionState, NewDeletion};
    use super::*;

    /// One medium, three messages: archived, held, and one with a
    /// not-relevant deletion. The held one keeps the medium of the others
    /// until it has a deletion too; a medium used once is never kept.
    async fn a_medium_is_kept_while_another_user_has_no_deletion(backend: Backend) {
        let (store, _dir) = fresh(backend).await;
        let (a, held, b, alone) = (archive(1), key(2), archive(3), archive(4));
        for k in [&a.key, &held, &b.key] {
            store
                .record_media_use(k, "mxc://h/shared", 1)
                .await
                .unwrap();
            // Recorded twice: no second row.
            store
                .record_media_use(k, "mxc://h/shared", 2)
                .await
                .unwrap();
        }
        store
            .record_media_use(&alone.key, "mxc://h/own", 1)
            .await
            .unwrap();
        for rec in [&a, &b, &alone] {
            store.record_archive(rec, 10).await.unwrap();
        }
        let ids = [
            a.deletion.deletion_id.as_str(),
            b.deletion.deletion_id.as_str(),
            alone.deletion.deletion_id.as_str(),
        ];
        let kept = store.media_still_in_use(&ids).await.unwrap();
        assert_eq!(
            kept,
            HashSet::from([
                a.deletion.deletion_id.clone(),
                b.deletion.deletion_id.clone()
            ])
        );
        // A person dismisses the held copy: its deletion lets the medium go.
        let dismissed = NewDeletion {
            deletion_id: "del-held".into(),
            key: held.clone(),
            reason: "not-relevant",
            sealed_command: super::super::tests::sealed(b"command"),
            not_before_ms: 20,
            state: DeletionState::Scheduled,
        };
        store
            .record_not_relevant(&held, "reviewer", &dismissed, 20)
            .await
            .unwrap();
        assert!(store.media_still_in_use(&ids).await.unwrap().is_empty());
        // Tokens only: no URI in the table.
        let uris: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM media_uses WHERE media_token LIKE '%mxc%'")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(uris, 0);
    }

    both_backends!(a_medium_is_kept_while_another_user_has_no_deletion);
}
