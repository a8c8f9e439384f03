//! Published checkpoints an operator accepted that the local proof log
//! contradicts (`log_rollbacks`, `chartbridge log accept-rollback`).

use sqlx::Row;

use super::{Store, StoreError};
use crate::prove::merkle::Hash;

impl Store {
    /// `(size, root)` of every accepted published checkpoint.
    pub async fn accepted_rollbacks(&self) -> Result<Vec<(u64, Hash)>, StoreError> {
        sqlx::query("SELECT published_size, published_root FROM log_rollbacks")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                let size: i64 = r.try_get(0)?;
                let root: Vec<u8> = r.try_get(1)?;
                Ok((
                    u64::try_from(size)
                        .map_err(|_| StoreError::Corrupt("negative published size".into()))?,
                    root.try_into().map_err(|_| {
                        StoreError::Corrupt("a published root is not 32 bytes".into())
                    })?,
                ))
            })
            .collect()
    }

    /// Records that `by` accepted the published checkpoint `(size, root)`
    /// while the local log had `local_size` leaves. `false` if it was
    /// accepted before.
    pub async fn accept_rollback(
        &self,
        (size, root): (u64, &Hash),
        local_size: u64,
        by: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let n =
            |v: u64| i64::try_from(v).map_err(|_| StoreError::Corrupt("size beyond i64".into()));
        Ok(sqlx::query(
            "INSERT INTO log_rollbacks (published_size, published_root, local_size, accepted_at, accepted_by)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(n(size)?)
        .bind(root.to_vec())
        .bind(n(local_size)?)
        .bind(now_ms)
        .bind(by)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }
}
