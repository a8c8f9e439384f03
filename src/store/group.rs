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

#[cfg(test)]
mod tests {
    use super::super::tests::{archive, both_backends, fresh, key};
    use super::super::{Backend, DeletionState, MessageState};

    /// A batch appends dense leaves in batch order, skips what is already
    /// terminal (also a duplicate inside the batch) and matches the log a
    /// record-by-record run builds.
    async fn a_batch_appends_dense_leaves_and_skips_terminal_ones(backend: Backend) {
        let (store, _dir) = fresh(backend).await;
        assert_eq!(store.record_archive(&archive(0), 1).await.unwrap(), Some(0));
        let (a0, a1, a2, a3) = (archive(0), archive(1), archive(2), archive(3));
        let got = store
            .record_archives(&[(&a1, 2), (&a0, 2), (&a2, 2), (&a1, 2), (&a3, 2)])
            .await
            .unwrap();
        assert_eq!(got, [Some(1), None, Some(2), None, Some(3)]);
        assert_eq!(store.log_size().await.unwrap(), 4);
        for i in 0..4 {
            let m = store.message(&key(i)).await.unwrap().unwrap();
            assert_eq!(m.state, MessageState::Archived);
            assert_eq!(
                store.deletion_state(&key(i)).await.unwrap(),
                Some(DeletionState::Pending)
            );
            assert_eq!(
                store.log_leaf(&key(i)).await.unwrap().unwrap().index,
                u64::from(i)
            );
        }
        let (alone, _dir2) = fresh(backend).await;
        for i in 0..4 {
            alone.record_archive(&archive(i), 1).await.unwrap();
        }
        assert_eq!(
            store.log_root(4).await.unwrap(),
            alone.log_root(4).await.unwrap()
        );
    }

    both_backends!(a_batch_appends_dense_leaves_and_skips_terminal_ones);
}
