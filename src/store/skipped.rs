//! Counts of entries without patient content, per source and kind
//! (`event::SkipKind`), kept so that `chartbridge status`, another process,
//! can show them. Counts only: nothing identifies a message.

use sqlx::Row;

use super::{Store, StoreError};

impl Store {
    /// Adds `counts` (kind, entries) of `source` in one transaction.
    pub async fn add_skipped(
        &self,
        source: &str,
        counts: &[(&str, u64)],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (kind, n) in counts {
            sqlx::query(
                "INSERT INTO skipped_entries (source, kind, count, updated_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (source, kind)
                 DO UPDATE SET count = skipped_entries.count + excluded.count,
                               updated_at = excluded.updated_at",
            )
            .bind(source)
            .bind(*kind)
            .bind(i64::try_from(*n).unwrap_or(i64::MAX))
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every (source, kind, count), ordered by source and kind.
    pub async fn skipped_counts(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        let rows =
            sqlx::query("SELECT source, kind, count FROM skipped_entries ORDER BY source, kind")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get("count")?;
                Ok((r.try_get("source")?, r.try_get("kind")?, n.max(0) as u64))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Backend;
    use super::super::tests::{both_backends, fresh};

    async fn skipped_entries_add_up_per_source_and_kind(backend: Backend) {
        let (store, _dir) = fresh(backend).await;
        assert!(store.skipped_counts().await.unwrap().is_empty());
        store
            .add_skipped("whatsapp", &[("status", 2), ("reaction", 1)], 10)
            .await
            .unwrap();
        store
            .add_skipped("whatsapp", &[("status", 3)], 20)
            .await
            .unwrap();
        store
            .add_skipped("matrix", &[("non_message_event", 4)], 30)
            .await
            .unwrap();
        assert_eq!(
            store.skipped_counts().await.unwrap(),
            vec![
                ("matrix".into(), "non_message_event".into(), 4),
                ("whatsapp".into(), "reaction".into(), 1),
                ("whatsapp".into(), "status".into(), 5),
            ]
        );
    }

    both_backends!(skipped_entries_add_up_per_source_and_kind);
}
