//! Group commit: the archives of several deliveries in one transaction
//! (ledger rows, proof leaves, deletion outbox rows), so a burst of
//! deliveries pays one commit (one fsync or WAL flush) instead of one each.

use sqlx::{Any, Connection, Transaction};

use super::ledger::{ArchiveRecord, INSERT_MESSAGE, discard_on_error};
use super::{MessageState, Store, StoreError, log, outbox};

impl Store {
    /// Records `batch` — `(archive, now_ms)` pairs, each as
    /// [`Store::record_archive`] would — in one transaction, in order, so
    /// the leaves they append are dense and in batch order. Per record:
    /// `Some(leaf index)`, or `None` when its message already had a terminal
    /// state (nothing of it written). All or nothing: on an error nothing of
    /// the batch is recorded and the connection is closed.
    ///
    /// Errors: [`StoreError`] of any statement or of the commit.
    pub async fn record_archives(
        &self,
        batch: &[(&ArchiveRecord, i64)],
    ) -> Result<Vec<Option<u64>>, StoreError> {
        let _stage = crate::telemetry::measure::Stage::start("store");
        let mut conn = self.pool.acquire().await?;
        let result = async {
            let mut tx = conn.begin().await?;
            let mut out = Vec::with_capacity(batch.len());
            for (rec, now_ms) in batch {
                out.push(self.archive_in(&mut tx, rec, *now_ms).await?);
            }
            tx.commit().await?;
            Ok(out)
        }
        .await;
        discard_on_error(conn, &result);
        result
    }

    async fn archive_in(
        &self,
        tx: &mut Transaction<'_, Any>,
        rec: &ArchiveRecord,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let key = self.row(&rec.key)?;
        let deletion = self.row(&rec.deletion.key)?;
        let inserted = sqlx::query(INSERT_MESSAGE)
            .bind(&key.source)
            .bind(&key.token)
            .bind(MessageState::Archived.as_str())
            .bind(&rec.rule)
            .bind(&rec.content_sha256)
            .bind(&rec.resource)
            .bind(serde_json::to_string(&rec.resources).unwrap_or_default())
            .bind(now_ms)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if inserted == 0 {
            return Ok(None);
        }
        let index = log::append(tx, &key, &rec.leaf_data, now_ms).await?;
        outbox::insert(tx, &rec.deletion, &deletion, now_ms).await?;
        Ok(Some(index))
    }
}
