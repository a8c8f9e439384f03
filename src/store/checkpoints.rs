//! Signed checkpoints of the proof log and the public keys that sign them
//! (DSK I.5), plus the lookups proof export and audits need.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{MessageRef, Store, StoreError};
use crate::prove::checkpoint::KeyInfo;
use crate::prove::merkle::Hash;

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Tree size it signs.
    pub size: u64,
    /// Root hash of that tree.
    pub root: Hash,
    /// Signing time (the note's `timestamp` line), Unix milliseconds.
    pub timestamp_ms: i64,
    /// The full signed note, verbatim.
    pub note: String,
    /// Name of the signing key.
    pub key_name: String,
    /// Id of the signing key, 8 lowercase hex digits.
    pub key_id: String,
}

const CHECKPOINT_COLUMNS: &str = "tree_size, root, timestamp_ms, note, key_name, key_id";
const KEY_COLUMNS: &str = "name, key_id, verifier_key, valid_from, valid_until, revoked_at";

fn checkpoint_of(r: &AnyRow) -> Result<StoredCheckpoint, StoreError> {
    let size: i64 = r.try_get(0)?;
    let root: Vec<u8> = r.try_get(1)?;
    Ok(StoredCheckpoint {
        size: u64::try_from(size)
            .map_err(|_| StoreError::Corrupt("negative checkpoint size".into()))?,
        root: root
            .try_into()
            .map_err(|_| StoreError::Corrupt("a checkpoint root is not 32 bytes".into()))?,
        timestamp_ms: r.try_get(2)?,
        note: r.try_get(3)?,
        key_name: r.try_get(4)?,
        key_id: r.try_get(5)?,
    })
}

fn key_of(r: &AnyRow) -> Result<KeyInfo, StoreError> {
    Ok(KeyInfo {
        name: r.try_get(0)?,
        key_id: r.try_get(1)?,
        verifier_key: r.try_get(2)?,
        valid_from_ms: r.try_get(3)?,
        valid_until_ms: r.try_get(4)?,
        revoked_at_ms: r.try_get(5)?,
    })
}

fn size_param(size: u64) -> Result<i64, StoreError> {
    i64::try_from(size).map_err(|_| StoreError::Corrupt("tree size beyond i64".into()))
}

impl Store {
    /// Stores a signed checkpoint; `false` if this key already signed this
    /// tree size (another worker was first), in which case nothing changes.
    pub async fn save_checkpoint(
        &self,
        cp: &StoredCheckpoint,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO checkpoints
                (tree_size, root, timestamp_ms, note, key_name, key_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (tree_size, key_name, key_id) DO NOTHING",
        )
        .bind(size_param(cp.size)?)
        .bind(cp.root.to_vec())
        .bind(cp.timestamp_ms)
        .bind(&cp.note)
        .bind(&cp.key_name)
        .bind(&cp.key_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The checkpoint of the largest tree, the most recently signed first.
    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints
             ORDER BY tree_size DESC, timestamp_ms DESC LIMIT 1"
        )))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(checkpoint_of).transpose()
    }

    /// The `limit` most recently signed checkpoints, newest first.
    pub async fn recent_checkpoints(
        &self,
        limit: i64,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints
             ORDER BY timestamp_ms DESC, tree_size DESC LIMIT $1"
        )))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(checkpoint_of).collect()
    }

    /// The checkpoint of the smallest tree that holds leaf `index`
    /// (size > index), the most recently signed first.
    pub async fn checkpoint_covering(
        &self,
        index: u64,
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE tree_size > $1
             ORDER BY tree_size ASC, timestamp_ms DESC LIMIT 1"
        )))
        .bind(size_param(index)?)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(checkpoint_of).transpose()
    }

    /// The most recently signed checkpoint of exactly `size` leaves.
    pub async fn checkpoint_of_size(
        &self,
        size: u64,
    ) -> Result<Option<StoredCheckpoint>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE tree_size = $1
             ORDER BY timestamp_ms DESC LIMIT 1"
        )))
        .bind(size_param(size)?)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(checkpoint_of).transpose()
    }

    /// Every signing key ever registered, oldest first.
    pub async fn signing_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM signing_keys ORDER BY valid_from, name, key_id"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_of).collect()
    }

    /// Registers a public key; `false` if it was already registered.
    pub async fn add_signing_key(&self, key: &KeyInfo, now_ms: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let added = insert_key(&mut tx, key, now_ms).await?;
        tx.commit().await?;
        Ok(added)
    }

    /// Rotates to `key`: every current key (no end of validity, not
    /// revoked) ends at `key.valid_from_ms`, and `key` is registered, in one
    /// transaction. Rotated keys still vouch for what they signed before.
    /// `false` if `key` was already registered (nothing changes).
    pub async fn rotate_signing_key(&self, key: &KeyInfo, now_ms: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !insert_key(&mut tx, key, now_ms).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE signing_keys SET valid_until = $1
             WHERE valid_until IS NULL AND revoked_at IS NULL
               AND NOT (name = $2 AND key_id = $3)",
        )
        .bind(key.valid_from_ms)
        .bind(&key.name)
        .bind(&key.key_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Revokes the keys with `key_id` as of `at_ms`: checkpoints they signed
    /// at or after it no longer verify. An earlier revocation is kept.
    /// Returns the keys with that id after the change (empty: unknown id).
    pub async fn revoke_signing_key(
        &self,
        key_id: &str,
        at_ms: i64,
    ) -> Result<Vec<KeyInfo>, StoreError> {
        sqlx::query(
            "UPDATE signing_keys SET revoked_at = $2
             WHERE key_id = $1 AND (revoked_at IS NULL OR revoked_at > $2)",
        )
        .bind(key_id)
        .bind(at_ms)
        .execute(&self.pool)
        .await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM signing_keys WHERE key_id = $1 ORDER BY name"
        )))
        .bind(key_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_of).collect()
    }

    /// The archived message whose primary KIS resource is `resource`.
    pub async fn message_by_resource(
        &self,
        resource: &str,
    ) -> Result<Option<MessageRef>, StoreError> {
        let row = sqlx::query(
            "SELECT source, message_token FROM messages
             WHERE resource = $1 AND state = 'archived'
             ORDER BY created_at LIMIT 1",
        )
        .bind(resource)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(MessageRef {
                source: r.try_get(0)?,
                token: r.try_get(1)?,
            })
        })
        .transpose()
    }

    /// Up to `n` archived messages drawn at random, with their primary
    /// resource, for audits.
    pub async fn archived_sample(&self, n: u32) -> Result<Vec<(MessageRef, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT source, message_token, resource FROM messages
             WHERE state = 'archived' AND resource IS NOT NULL
             ORDER BY random() LIMIT $1",
        )
        .bind(i64::from(n))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    MessageRef {
                        source: r.try_get(0)?,
                        token: r.try_get(1)?,
                    },
                    r.try_get(2)?,
                ))
            })
            .collect()
    }
}

async fn insert_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    key: &KeyInfo,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO signing_keys
            (name, key_id, verifier_key, valid_from, valid_until, revoked_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT DO NOTHING",
    )
    .bind(&key.name)
    .bind(&key.key_id)
    .bind(&key.verifier_key)
    .bind(key.valid_from_ms)
    .bind(key.valid_until_ms)
    .bind(key.revoked_at_ms)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}
