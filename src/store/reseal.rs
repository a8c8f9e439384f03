//! Re-sealing for `keys rotate-at-rest` (migration 0016): blobs not sealed
//! under the current key, found by their header, opened and sealed again
//! at their place, one batch per transaction. A batch that a crash cut
//! short rolls back; re-running finds what is left.

use sqlx::Row;

use super::sealed::{COLUMNS, Column};
use super::{Store, StoreError};
use crate::seal::{KeyId, SealError, Sealer};

/// A rotation to a key: started, finished when no blob is left under
/// another key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub key_id: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub resealed: i64,
}

/// What one batch did.
#[derive(Debug, Default)]
pub struct Batch {
    /// Rows read (0: the column has nothing left to re-seal).
    pub read: usize,
    pub resealed: usize,
    /// Blobs that did not open, each with its error (naming its place).
    pub failed: Vec<SealError>,
}

/// The blob header of the current key: version 2 and the key id.
fn current_header(key: KeyId) -> Vec<u8> {
    let mut h = vec![2u8];
    h.extend_from_slice(&key.bytes());
    h
}

/// Rows whose blob is present and not under `$1`'s key.
fn stale(c: &Column) -> String {
    format!(
        "{col} IS NOT NULL AND length({col}) > 0 AND substr({col}, 1, 5) <> $1",
        col = c.column
    )
}

impl Store {
    /// Blobs per sealed column not sealed under `key`.
    pub async fn stale_blob_count(&self, key: KeyId) -> Result<u64, StoreError> {
        let mut total = 0;
        for c in COLUMNS {
            let sql = format!("SELECT COUNT(*) FROM {} WHERE {}", c.table, stale(c));
            let n: i64 = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(current_header(key))
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
            total += n as u64;
        }
        Ok(total)
    }

    /// Re-seals up to `limit` stale blobs of `column` under the sealer's
    /// current key, in one transaction; `skip` stale rows (ones that did
    /// not open before) are passed over. A row changed meanwhile is left
    /// for the next batch.
    pub async fn reseal_batch(
        &self,
        sealer: &Sealer,
        column: &Column,
        skip: usize,
        limit: usize,
    ) -> Result<Batch, StoreError> {
        let keys = column.keys.join(", ");
        let select = format!(
            "SELECT {keys}, {col} FROM {table} WHERE {stale} ORDER BY {keys} LIMIT {limit} OFFSET {skip}",
            col = column.column,
            table = column.table,
            stale = stale(column),
        );
        let mut set: Vec<String> = column
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{k} = ${}", i + 3))
            .collect();
        set.push(format!("{} = $2", column.column));
        let update = format!(
            "UPDATE {table} SET {col} = $1 WHERE {cond}",
            table = column.table,
            col = column.column,
            cond = set.join(" AND "),
        );
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(select))
            .bind(current_header(sealer.current_key_id()))
            .fetch_all(&mut *tx)
            .await?;
        let mut batch = Batch {
            read: rows.len(),
            ..Batch::default()
        };
        for r in rows {
            let ids = (0..column.keys.len())
                .map(|i| r.try_get::<String, _>(i))
                .collect::<Result<Vec<String>, _>>()?;
            let old: Vec<u8> = r.try_get(column.keys.len())?;
            let place = (column.place)(&ids);
            let plain = match sealer.open(&place, &old) {
                Ok(p) => zeroize::Zeroizing::new(p),
                Err(e) => {
                    batch.failed.push(e);
                    continue;
                }
            };
            let mut q = sqlx::query(sqlx::AssertSqlSafe(update.clone()))
                .bind(sealer.seal_at(&place, &plain))
                .bind(old);
            for id in &ids {
                q = q.bind(id.clone());
            }
            batch.resealed += q.execute(&mut *tx).await?.rows_affected() as usize;
        }
        tx.commit().await?;
        Ok(batch)
    }

    /// The rotation to `key_id`, if one was started.
    pub async fn rotation(&self, key_id: &str) -> Result<Option<Rotation>, StoreError> {
        let row = sqlx::query(
            "SELECT key_id, started_at, finished_at, resealed FROM at_rest_rotations
             WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Rotation {
                key_id: r.try_get(0)?,
                started_at: r.try_get(1)?,
                finished_at: r.try_get(2)?,
                resealed: r.try_get(3)?,
            })
        })
        .transpose()
    }

    /// Records that a rotation to `key_id` started (once).
    pub async fn start_rotation(&self, key_id: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO at_rest_rotations (key_id, started_at, finished_at, resealed)
             VALUES ($1, $2, NULL, 0) ON CONFLICT (key_id) DO NOTHING",
        )
        .bind(key_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Adds `n` re-sealed blobs to the rotation's count.
    pub async fn count_resealed(&self, key_id: &str, n: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE at_rest_rotations SET resealed = resealed + $2 WHERE key_id = $1")
            .bind(key_id)
            .bind(n)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn finish_rotation(&self, key_id: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE at_rest_rotations SET finished_at = $2 WHERE key_id = $1 AND finished_at IS NULL",
        )
        .bind(key_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
