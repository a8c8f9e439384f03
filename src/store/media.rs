//! Media that several messages reference at the messenger: a Matrix
//! `mxc://` URI is reused by a forward, a caption edit (`m.new_content`
//! carries the same `url`) or a file sent again, and deleting it (the
//! Synapse admin media API) removes it for every event that uses it. The
//! deletion relay therefore deletes a medium only when every other message
//! that uses it has a due deletion of its own (archived, or not relevant by
//! a rule or a person with its retention over); while one is held for
//! review or its retention runs, the messenger copy is redacted and the
//! medium kept. Only messages chartbridge has claimed or held count: a
//! copy still in the queue is not seen.

use std::collections::HashSet;

use sqlx::Row;

use super::log::{ROWS_PER_INSERT, placeholders};

/// The job run that records the media of items held before `media_uses`
/// existed ([`Store::backfill_held_media`]).
const BACKFILL_JOB: &str = "media-uses-backfill";
use super::{RowKey, Store, StoreError};
use crate::seal::Sealer;

impl Store {
    /// Records that the message `key` references the medium `reference`
    /// (its messenger id: an `mxc://` URI, a WhatsApp media id), both as
    /// keyed tokens. Recording it again changes nothing.
    pub async fn record_media_use(
        &self,
        key: &(impl RowKey + ?Sized),
        reference: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let message = self.row(key)?;
        let medium = self.names()?.medium(&message.source, reference);
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
    /// another message still uses without a due deletion of its own (none,
    /// or one still `scheduled`): their
    /// command must leave the medium alone (the last of the messages to get
    /// a deletion deletes it).
    pub async fn media_still_in_use(
        &self,
        deletion_ids: &[&str],
    ) -> Result<HashSet<String>, StoreError> {
        let mut kept = HashSet::new();
        for chunk in deletion_ids.chunks(ROWS_PER_INSERT) {
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
                       WHERE od.source = other.source AND od.message_token = other.message_token
                         AND od.state <> 'scheduled')",
                placeholders(1, chunk.len())
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

    /// [`Store::record_held_media`] once per database, at the first start
    /// with the table, so that items held before it existed keep their
    /// media as later holds do: recorded as the job run
    /// `media-uses-backfill` of `worker`; a run that did not finish is done
    /// again. `None` when it ran before, else the uses read.
    pub async fn backfill_held_media(
        &self,
        sealer: &Sealer,
        worker: &str,
    ) -> Result<Option<usize>, StoreError> {
        let runs = self.job_runs(BACKFILL_JOB, 0).await?;
        if runs.iter().any(|run| run.finished_at.is_some()) {
            return Ok(None);
        }
        let now = super::millis(chrono::Utc::now());
        self.claim_job_run(BACKFILL_JOB, 0, worker, now).await?;
        let uses = self.record_held_media(sealer, now).await?;
        self.finish_job_run(BACKFILL_JOB, 0, super::millis(chrono::Utc::now()))
            .await?;
        Ok(Some(uses))
    }

    /// Records the media uses of every open Matrix quarantine item from its
    /// sealed event (each `mxc://` URI in it): items held before the table
    /// existed (migration 0023). Recording again changes nothing. An item
    /// whose event does not open is skipped (and logged by its reason
    /// only). Returns the uses read.
    pub async fn record_held_media(
        &self,
        sealer: &Sealer,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let mut recorded = 0;
        for item in self.quarantine_list().await? {
            if item.key.source != crate::event::matrix::SOURCE {
                continue;
            }
            let Some(entry) = self.quarantine_entry(&item.key).await? else {
                continue;
            };
            if entry.sealed_event.is_empty() {
                continue;
            }
            let place = super::sealed::quarantine_event(&item.key);
            let event = match sealer.open(&place, &entry.sealed_event) {
                Ok(plain) => serde_json::from_slice::<serde_json::Value>(&plain).ok(),
                Err(_) => None,
            };
            let Some(event) = event else {
                tracing::warn!(reason = %item.reason, "a held event did not open; its media uses are not recorded");
                continue;
            };
            for uri in crate::event::mxc_uris(&event) {
                self.record_media_use(&item.key, uri, now_ms).await?;
                recorded += 1;
            }
        }
        Ok(recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{archive, both_backends, fresh, key, sealed, test_sealer};
    use super::super::{Backend, DeletionState, NewDeletion};
    use super::*;
    use crate::event::MessageKey;

    async fn uses(store: &Store) -> Vec<String> {
        sqlx::query_scalar("SELECT media_token FROM media_uses ORDER BY media_token")
            .fetch_all(&store.pool)
            .await
            .unwrap()
    }

    /// One medium, three messages: two archived, one held. The held one
    /// keeps the medium of the others until it has a deletion that is due
    /// (a retention still running keeps it too); a medium used once is
    /// never kept; the purge takes the uses of purged messages.
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
        // Tokens only: 64 hex digits, two media, no URI.
        let tokens = uses(&store).await;
        assert_eq!(tokens.len(), 4);
        assert!(
            tokens
                .iter()
                .all(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        );
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
        // A person dismisses the held copy: while its retention runs the
        // medium stays; once its deletion is due, the medium may go.
        let dismissed = NewDeletion {
            deletion_id: "del-held".into(),
            key: held.clone(),
            reason: "not-relevant",
            sealed_command: sealed(b"command"),
            not_before_ms: 20,
            state: DeletionState::Scheduled,
        };
        store
            .record_not_relevant(&held, "reviewer", &dismissed, 15)
            .await
            .unwrap();
        assert_eq!(store.media_still_in_use(&ids).await.unwrap().len(), 2);
        store.release_due_deletions(20).await.unwrap();
        assert!(store.media_still_in_use(&ids).await.unwrap().is_empty());
        // Confirmed and purged: the uses of the purged messages go.
        for id in [ids[0], ids[1], "del-held"] {
            store
                .record_deletion_receipt(id, DeletionState::Confirmed, "deleted", None, 30)
                .await
                .unwrap();
        }
        store.purge_metadata(40, 50).await.unwrap();
        assert_eq!(
            uses(&store).await.len(),
            1,
            "the unpurged message's use stays"
        );
    }

    /// Items quarantined before the table existed: their sealed events'
    /// `mxc://` URIs are recorded at start, Matrix only.
    async fn held_events_media_are_recorded_at_start(backend: Backend) {
        let (store, _dir) = fresh(backend).await;
        let held = MessageKey {
            source: "matrix".into(),
            message_id: "$held".into(),
        };
        let event = serde_json::json!({"type": "m.room.message", "content": {
            "msgtype": "m.image", "url": "mxc://h/a",
            "info": {"thumbnail_url": "mxc://h/thumb"}}});
        store
            .record_quarantine(
                &held,
                "unresolved_conversation",
                &sealed(event.to_string().as_bytes()),
                None,
                1,
            )
            .await
            .unwrap();
        store
            .record_quarantine(
                &key(9),
                "invalid_entry",
                &sealed(b"{\"url\": \"mxc://h/a\"}"),
                None,
                1,
            )
            .await
            .unwrap();
        assert_eq!(store.record_held_media(&test_sealer(), 2).await.unwrap(), 2);
        assert_eq!(store.record_held_media(&test_sealer(), 3).await.unwrap(), 2);
        assert_eq!(uses(&store).await.len(), 2, "again: no second rows");
        // At start: once per database.
        let sealer = test_sealer();
        assert_eq!(
            store.backfill_held_media(&sealer, "w1").await.unwrap(),
            Some(2)
        );
        assert_eq!(
            store.backfill_held_media(&sealer, "w2").await.unwrap(),
            None
        );
    }

    both_backends!(
        a_medium_is_kept_while_another_user_has_no_deletion,
        held_events_media_are_recorded_at_start
    );
}
