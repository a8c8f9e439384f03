//! Storage of the append-only proof log: leaves with dense indexes and the
//! perfect subtree nodes, so roots and proofs cost O(log n) reads.

use std::collections::HashMap;

use sqlx::{Any, Row, Transaction};

use super::{MessageRef, RowKey, Store, StoreError};
use crate::prove::merkle::{self, Hash, NodeId};

/// A stored leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLeaf {
    pub index: u64,
    pub key: MessageRef,
    pub leaf_data: Vec<u8>,
    pub leaf_hash: Hash,
}

fn hash_of(bytes: Vec<u8>) -> Result<Hash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("a stored hash is not 32 bytes".into()))
}

fn index_of(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt("negative log index".into()))
}

/// Appends a leaf inside the caller's transaction and stores the nodes it
/// completes. Bumping `log_head` first row-locks it on PostgreSQL, so
/// concurrent archive transactions append one after the other, without gaps.
pub(super) async fn append(
    tx: &mut Transaction<'_, Any>,
    key: &MessageRef,
    leaf_data: &[u8],
    now_ms: i64,
) -> Result<u64, StoreError> {
    let size: i64 = sqlx::query("UPDATE log_head SET size = size + 1 WHERE id = 1 RETURNING size")
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
    let index = index_of(size - 1)?;
    let leaf = merkle::leaf_hash(leaf_data);
    sqlx::query(
        "INSERT INTO log_leaves (leaf_index, source, message_token, leaf_data, leaf_hash, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(size - 1)
    .bind(&key.source)
    .bind(&key.token)
    .bind(leaf_data.to_vec())
    .bind(leaf.to_vec())
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    let mut fresh: HashMap<NodeId, Hash> = HashMap::from([(NodeId::leaf(index), leaf)]);
    for id in merkle::completed_by_append(index) {
        let (left, right) = id
            .children()
            .ok_or_else(|| StoreError::Corrupt(format!("node {id} has no children")))?;
        let left_hash = node_in_tx(tx, left).await?;
        let right_hash = *fresh
            .get(&right)
            .ok_or_else(|| StoreError::Corrupt(format!("node {right} was not computed")))?;
        let hash = merkle::node_hash(&left_hash, &right_hash);
        sqlx::query("INSERT INTO log_nodes (level, node_index, hash) VALUES ($1, $2, $3)")
            .bind(i32::from(id.level))
            .bind(id.index as i64)
            .bind(hash.to_vec())
            .execute(&mut **tx)
            .await?;
        fresh.insert(id, hash);
    }
    Ok(index)
}

async fn node_in_tx(tx: &mut Transaction<'_, Any>, id: NodeId) -> Result<Hash, StoreError> {
    let row = if id.level == 0 {
        sqlx::query("SELECT leaf_hash FROM log_leaves WHERE leaf_index = $1")
            .bind(id.index as i64)
            .fetch_optional(&mut **tx)
            .await?
    } else {
        sqlx::query("SELECT hash FROM log_nodes WHERE level = $1 AND node_index = $2")
            .bind(i32::from(id.level))
            .bind(id.index as i64)
            .fetch_optional(&mut **tx)
            .await?
    };
    let row = row.ok_or_else(|| StoreError::Corrupt(format!("log node {id} is missing")))?;
    hash_of(row.try_get(0)?)
}

impl Store {
    /// The number of leaves in the log.
    pub async fn log_size(&self) -> Result<u64, StoreError> {
        let size: i64 = sqlx::query("SELECT size FROM log_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        index_of(size)
    }

    /// The stored hashes of `ids` (perfect nodes and leaves).
    pub async fn log_nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, StoreError> {
        let mut out = HashMap::with_capacity(ids.len());
        let mut conn = self.pool.acquire().await?;
        for &id in ids {
            let row = if id.level == 0 {
                sqlx::query("SELECT leaf_hash FROM log_leaves WHERE leaf_index = $1")
                    .bind(id.index as i64)
                    .fetch_optional(&mut *conn)
                    .await?
            } else {
                sqlx::query("SELECT hash FROM log_nodes WHERE level = $1 AND node_index = $2")
                    .bind(i32::from(id.level))
                    .bind(id.index as i64)
                    .fetch_optional(&mut *conn)
                    .await?
            };
            if let Some(row) = row {
                out.insert(id, hash_of(row.try_get(0)?)?);
            }
        }
        Ok(out)
    }

    /// The root of the first `size` leaves.
    pub async fn log_root(&self, size: u64) -> Result<Hash, StoreError> {
        let plan = merkle::root_plan(size);
        let nodes = self.log_nodes(plan.nodes()).await?;
        plan.assemble(&|id| nodes.get(&id).copied())
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// The inclusion path of leaf `index` in the tree of `size` leaves.
    pub async fn log_inclusion(&self, index: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
        let plan =
            merkle::inclusion_plan(index, size).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let nodes = self.log_nodes(plan.nodes()).await?;
        plan.assemble(&|id| nodes.get(&id).copied())
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// The consistency proof between the trees of `first` and `second` leaves.
    pub async fn log_consistency(&self, first: u64, second: u64) -> Result<Vec<Hash>, StoreError> {
        let plan = merkle::consistency_plan(first, second)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let nodes = self.log_nodes(plan.nodes()).await?;
        plan.assemble(&|id| nodes.get(&id).copied())
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// The leaf of a message, if it was archived.
    pub async fn log_leaf(
        &self,
        key: &(impl RowKey + ?Sized),
    ) -> Result<Option<LogLeaf>, StoreError> {
        let key = self.row(key)?;
        let row = sqlx::query(
            "SELECT leaf_index, leaf_data, leaf_hash FROM log_leaves
             WHERE source = $1 AND message_token = $2",
        )
        .bind(&key.source)
        .bind(&key.token)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(LogLeaf {
                index: index_of(r.try_get(0)?)?,
                key: key.clone(),
                leaf_data: r.try_get(1)?,
                leaf_hash: hash_of(r.try_get(2)?)?,
            })
        })
        .transpose()
    }
}
