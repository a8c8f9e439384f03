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
/// completes ([`append_many`] with one leaf). Returns its index.
pub(super) async fn append(
    tx: &mut Transaction<'_, Any>,
    key: &MessageRef,
    leaf_data: &[u8],
    now_ms: i64,
) -> Result<u64, StoreError> {
    append_many(
        tx,
        &[NewLeaf {
            key,
            leaf_data,
            now_ms,
        }],
    )
    .await
}

/// A leaf to append: the message it proves, its RFC 9162 leaf data and
/// its creation time (Unix milliseconds).
pub(super) struct NewLeaf<'a> {
    pub key: &'a MessageRef,
    pub leaf_data: &'a [u8],
    pub now_ms: i64,
}

/// Rows per multi-row statement (at most 9 parameters each, far below
/// SQLite's and PostgreSQL's parameter limits).
pub(super) const ROWS_PER_INSERT: usize = 16;

/// Bytes of bound values per multi-row statement. sqlx does not set
/// `TCP_NODELAY`, and a PostgreSQL statement message much above 8 KiB was
/// measured to stall ~40 ms per statement (Nagle's algorithm against the
/// server's delayed ACK); statements are kept below that.
pub(super) const BYTES_PER_STATEMENT: usize = 6 * 1024;

/// `items` in consecutive runs of at most [`ROWS_PER_INSERT`] items and,
/// by `bytes` (an estimate of one item's bound values), at most
/// [`BYTES_PER_STATEMENT`] bytes; an item larger than that alone.
pub(super) fn statement_chunks<T>(items: &[T], bytes: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let b = bytes(item);
        if i > start && (i - start == ROWS_PER_INSERT || size + b > BYTES_PER_STATEMENT) {
            chunks.push(&items[start..i]);
            (start, size) = (i, 0);
        }
        size += b;
    }
    if start < items.len() {
        chunks.push(&items[start..]);
    }
    chunks
}

/// Appends `leaves`, in order, inside the caller's transaction and stores
/// the perfect subtree nodes they complete (RFC 9162 §2.1.1). Returns the
/// index of the first; the others follow densely. Empty `leaves`: nothing
/// written, returns the current size.
///
/// `log_head` is bumped once for all of them, which row-locks it on
/// PostgreSQL until the caller commits: concurrent transactions append one
/// after the other, without gaps. Callers write everything else of their
/// transaction first, so the lock is held only for these statements and
/// the commit. Node hashes are computed in memory; only the left siblings
/// that predate this append are read (at most one per tree level).
///
/// Errors: [`StoreError`] of a statement; `Corrupt` when a node the
/// append builds on is missing.
pub(super) async fn append_many(
    tx: &mut Transaction<'_, Any>,
    leaves: &[NewLeaf<'_>],
) -> Result<u64, StoreError> {
    let count = i64::try_from(leaves.len())
        .map_err(|_| StoreError::Corrupt("too many leaves in one append".into()))?;
    let size: i64 = sqlx::query("UPDATE log_head SET size = size + $1 WHERE id = 1 RETURNING size")
        .bind(count)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
    let first = index_of(size - count)?;
    let old = left_siblings_before(tx, first, leaves.len() as u64).await?;
    let mut fresh: HashMap<NodeId, Hash> = HashMap::with_capacity(leaves.len() * 2);
    let mut nodes: Vec<(NodeId, Hash)> = Vec::new();
    for (offset, leaf) in leaves.iter().enumerate() {
        let index = first + offset as u64;
        fresh.insert(NodeId::leaf(index), merkle::leaf_hash(leaf.leaf_data));
        for id in merkle::completed_by_append(index) {
            let (left, right) = id
                .children()
                .ok_or_else(|| StoreError::Corrupt(format!("node {id} has no children")))?;
            let left_hash = match fresh.get(&left).or_else(|| old.get(&left)) {
                Some(h) => *h,
                None => node_in_tx(tx, left).await?,
            };
            let right_hash = *fresh
                .get(&right)
                .ok_or_else(|| StoreError::Corrupt(format!("node {right} was not computed")))?;
            let hash = merkle::node_hash(&left_hash, &right_hash);
            fresh.insert(id, hash);
            nodes.push((id, hash));
        }
    }
    let mut index = first;
    for chunk in statement_chunks(leaves, |l| 200 + l.leaf_data.len()) {
        let sql = values_sql(
            "INSERT INTO log_leaves (leaf_index, source, message_token, leaf_data, leaf_hash, created_at) VALUES ",
            6,
            chunk.len(),
        );
        // Audited: `values_sql` writes only the fixed head and numbered placeholders.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for leaf in chunk {
            q = q
                .bind(index as i64)
                .bind(&leaf.key.source)
                .bind(&leaf.key.token)
                .bind(leaf.leaf_data.to_vec())
                .bind(fresh[&NodeId::leaf(index)].to_vec())
                .bind(leaf.now_ms);
            index += 1;
        }
        q.execute(&mut **tx).await?;
    }
    for chunk in nodes.chunks(ROWS_PER_INSERT) {
        let sql = values_sql(
            "INSERT INTO log_nodes (level, node_index, hash) VALUES ",
            3,
            chunk.len(),
        );
        // Audited: `values_sql` writes only the fixed head and numbered placeholders.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, hash) in chunk {
            q = q
                .bind(i32::from(id.level))
                .bind(id.index as i64)
                .bind(hash.to_vec());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(first)
}

/// The nodes an append of `count` leaves at `first` builds on: the left
/// children, ending at or before `first`, of the nodes it completes (at
/// most one per level), read in at most two statements (leaves, nodes).
/// A node missing here is reported by the caller's fallback read.
async fn left_siblings_before(
    tx: &mut Transaction<'_, Any>,
    first: u64,
    count: u64,
) -> Result<HashMap<NodeId, Hash>, StoreError> {
    let mut wanted: Vec<NodeId> = (first..first + count)
        .flat_map(merkle::completed_by_append)
        .filter_map(|id| id.children())
        .map(|(left, _)| left)
        .filter(|left| (u128::from(left.index) + 1) << left.level <= u128::from(first))
        .collect();
    wanted.sort_by_key(|id| (id.level, id.index));
    wanted.dedup();
    let mut found = HashMap::with_capacity(wanted.len());
    let (leaves, nodes): (Vec<NodeId>, Vec<NodeId>) =
        wanted.into_iter().partition(|id| id.level == 0);
    if !leaves.is_empty() {
        let sql = format!(
            "SELECT leaf_index, leaf_hash FROM log_leaves WHERE leaf_index IN ({})",
            placeholders(1, leaves.len())
        );
        // Audited: the statement holds only numbered placeholders.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in &leaves {
            q = q.bind(id.index as i64);
        }
        for row in q.fetch_all(&mut **tx).await? {
            let index = index_of(row.try_get(0)?)?;
            found.insert(NodeId::leaf(index), hash_of(row.try_get(1)?)?);
        }
    }
    if !nodes.is_empty() {
        let terms = (0..nodes.len())
            .map(|i| format!("(level = ${} AND node_index = ${})", 2 * i + 1, 2 * i + 2))
            .collect::<Vec<_>>()
            .join(" OR ");
        let sql =
            format!("SELECT CAST(level AS BIGINT), node_index, hash FROM log_nodes WHERE {terms}");
        // Audited: the statement holds only numbered placeholders.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in &nodes {
            q = q.bind(i32::from(id.level)).bind(id.index as i64);
        }
        for row in q.fetch_all(&mut **tx).await? {
            let level = u8::try_from(row.try_get::<i64, _>(0)?)
                .map_err(|_| StoreError::Corrupt("node level out of range".into()))?;
            let id = NodeId::new(level, index_of(row.try_get(1)?)?);
            found.insert(id, hash_of(row.try_get(2)?)?);
        }
    }
    Ok(found)
}

/// `n` numbered placeholders from `$first` on, comma-separated
/// (`$2, $3, $4`), for an `IN (…)` list.
pub(super) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `head` followed by `rows` tuples of `width` numbered placeholders
/// (`($1, $2), ($3, $4)`), as both SQLite and PostgreSQL read them.
pub(super) fn values_sql(head: &str, width: usize, rows: usize) -> String {
    let mut sql = String::with_capacity(head.len() + rows * width * 5);
    sql.push_str(head);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(r * width + c + 1).to_string());
        }
        sql.push(')');
    }
    sql
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

#[cfg(test)]
mod chunk_tests {
    use super::{BYTES_PER_STATEMENT, ROWS_PER_INSERT, statement_chunks};

    /// Runs are consecutive and complete, bounded by rows and by bytes; an
    /// item above the byte bound goes alone.
    #[test]
    fn statement_chunks_bound_rows_and_bytes() {
        let small = vec![10usize; 40];
        let runs = statement_chunks(&small, |b| *b);
        assert_eq!(
            runs.iter().map(|r| r.len()).collect::<Vec<_>>(),
            [ROWS_PER_INSERT, ROWS_PER_INSERT, 40 - 2 * ROWS_PER_INSERT]
        );
        let third = BYTES_PER_STATEMENT / 3;
        let mixed = vec![third, third, third, BYTES_PER_STATEMENT * 2, 1, third];
        let runs = statement_chunks(&mixed, |b| *b);
        assert_eq!(
            runs,
            [&mixed[0..3], &mixed[3..4], &mixed[4..6]],
            "three thirds fit, the oversized one goes alone"
        );
        assert!(statement_chunks(&[] as &[usize], |b| *b).is_empty());
    }
}
