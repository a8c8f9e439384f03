//! Metadata purge (DSK II.3): once the messenger confirmed a deletion and
//! `metadata_retention` has passed, local details go and only what
//! verification needs stays. See `docs/retention.md` for the full list.
//!
//! - archived message: the deletion row (sealed command naming the
//!   conversation and media, receipt detail, request and receipt times) is
//!   deleted; the ledger row keeps key, state, rule, content SHA-256 and KIS
//!   resources, the archive time (it is in the log leaf anyway) and gets
//!   `purged_at`. Log leaves, nodes, checkpoints and keys are never touched.
//! - not-relevant message: nothing about it is needed, the ledger row and
//!   the deletion row are deleted.
//! - released split groups: their row (token, count, missing list) is deleted.
//! - the media uses of both (`media_uses`) are deleted, and retractions
//!   still waiting for such a target (`pending_redactions`) unless it is
//!   archived: then the mark is still to write (the retention sweep).
//!
//! Quarantined messages have no deletion and are kept for review; links are
//! the operator's own mapping and are kept.

use sqlx::Row;

use super::{Store, StoreError};

/// What one purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    /// Archived messages reduced to their proof data.
    pub archived: u64,
    /// Not-relevant messages removed entirely.
    pub not_relevant: u64,
    /// Released split groups removed.
    pub groups: u64,
}

impl PurgeCounts {
    pub fn total(&self) -> u64 {
        self.archived + self.not_relevant + self.groups
    }
}

const DELETION_SETTLED: &str = "EXISTS (SELECT 1 FROM deletions d
    WHERE d.source = messages.source AND d.message_token = messages.message_token
      AND d.state = 'confirmed' AND d.settled_at <= $1)";

impl Store {
    /// Purges the metadata of every message whose deletion was confirmed at
    /// or before `settled_before_ms`, and of split groups released by then.
    /// One transaction; running it again changes nothing.
    pub async fn purge_metadata(
        &self,
        settled_before_ms: i64,
        now_ms: i64,
    ) -> Result<PurgeCounts, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The first-content digests of the messages this purge reduces or
        // removes: their conflicts can no longer be told from a new message.
        sqlx::query(
            "DELETE FROM content_digests WHERE EXISTS (SELECT 1 FROM messages m
                 WHERE m.source = content_digests.source AND m.message_token = content_digests.message_token
                   AND m.state IN ('archived', 'not_relevant')
                   AND EXISTS (SELECT 1 FROM deletions d
                       WHERE d.source = m.source AND d.message_token = m.message_token
                         AND d.state = 'confirmed' AND d.settled_at <= $1))",
        )
        .bind(settled_before_ms)
        .execute(&mut *tx)
        .await?;
        let archived = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE messages SET purged_at = $2, updated_at = $2
             WHERE state = 'archived' AND purged_at IS NULL AND {DELETION_SETTLED}"
        )))
        .bind(settled_before_ms)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let not_relevant = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM messages WHERE state = 'not_relevant' AND {DELETION_SETTLED}"
        )))
        .bind(settled_before_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "DELETE FROM deletion_receipts WHERE deletion_id IN
                 (SELECT deletion_id FROM deletions WHERE state = 'confirmed' AND settled_at <= $1)",
        )
        .bind(settled_before_ms)
        .execute(&mut *tx)
        .await?;
        // Which media the purged messages used: the messages are done with
        // their media, which need not wait for them any more.
        sqlx::query(
            "DELETE FROM media_uses WHERE EXISTS (SELECT 1 FROM deletions d
                 WHERE d.source = media_uses.source AND d.message_token = media_uses.message_token
                   AND d.state = 'confirmed' AND d.settled_at <= $1)",
        )
        .bind(settled_before_ms)
        .execute(&mut *tx)
        .await?;
        // Retractions still waiting for a target whose messenger copy is
        // gone for good: nothing will archive it any more. One whose target
        // is archived still has its mark to write
        // (`Store::archived_with_pending_redactions`) and stays.
        sqlx::query(
            "DELETE FROM pending_redactions WHERE EXISTS (SELECT 1 FROM deletions d
                 WHERE d.source = pending_redactions.source
                   AND d.message_token = pending_redactions.target_token
                   AND d.state = 'confirmed' AND d.settled_at <= $1)
               AND NOT EXISTS (SELECT 1 FROM messages m
                 WHERE m.source = pending_redactions.source
                   AND m.message_token = pending_redactions.target_token
                   AND m.state = 'archived')",
        )
        .bind(settled_before_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM deletions WHERE state = 'confirmed' AND settled_at <= $1")
            .bind(settled_before_ms)
            .execute(&mut *tx)
            .await?;
        let groups = sqlx::query(
            "DELETE FROM split_groups
             WHERE state <> 'waiting' AND released_at <= $1
               AND NOT EXISTS (SELECT 1 FROM held_parts h
                   WHERE h.source = split_groups.source AND h.group_token = split_groups.group_token)",
        )
        .bind(settled_before_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(PurgeCounts {
            archived,
            not_relevant,
            groups,
        })
    }

    /// How many archived messages were reduced to their proof data.
    pub async fn purged_count(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT COUNT(*) FROM messages WHERE purged_at IS NOT NULL")
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?,
        )
    }
}
