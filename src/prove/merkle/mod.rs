//! RFC 9162 §2.1 Merkle tree hashing, proof planning and proof verification.
//!
//! A log persists only *perfect* subtree roots ([`NodeId`]); every root,
//! inclusion proof and consistency proof is planned as a small set of such
//! nodes (O(log n)), fetched by the caller, and assembled here without IO.

use std::collections::HashMap;
use std::fmt;

use sha2::{Digest, Sha256};
use thiserror::Error;

/// A SHA-256 hash of a leaf, a node or a tree root.
pub type Hash = [u8; 32];

mod verify;
pub use verify::{ProofError, root_from_inclusion, verify_consistency, verify_inclusion};

/// Root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Leaf hash `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// Interior node hash `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// A perfect subtree: the root of leaves `[index·2^level, (index+1)·2^level)`.
///
/// Level 0 nodes are leaf hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// Height above the leaves.
    pub level: u8,
    /// Position among the nodes of this level, from the left.
    pub index: u64,
}

impl NodeId {
    /// The node at `level`, `index`.
    pub const fn new(level: u8, index: u64) -> Self {
        Self { level, index }
    }

    /// The leaf hash node of leaf `index`.
    pub const fn leaf(index: u64) -> Self {
        Self { level: 0, index }
    }

    /// The two children of this node, or `None` for a leaf (or an index too
    /// large to have children).
    pub fn children(&self) -> Option<(NodeId, NodeId)> {
        let level = self.level.checked_sub(1)?;
        let left = self.index.checked_mul(2)?;
        let right = left.checked_add(1)?;
        Some((NodeId::new(level, left), NodeId::new(level, right)))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.level, self.index)
    }
}

/// Errors from planning or assembling roots and proofs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MerkleError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// Requested leaf index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// A consistency proof was requested from a larger to a smaller tree.
    #[error("cannot prove consistency from size {first} to smaller size {second}")]
    SizeOrder {
        /// Older tree size.
        first: u64,
        /// Newer tree size.
        second: u64,
    },
    /// The node source did not have a node the plan needs.
    #[error("node {0} is not available")]
    MissingNode(NodeId),
}

/// The perfect nodes (level ≥ 1) that become complete when leaf `leaf_index`
/// is appended, bottom-up; each is `node_hash` of its two children.
///
/// A store persists the leaf hash and then these nodes on every append
/// (amortised one node per leaf, at most 63).
pub fn completed_by_append(leaf_index: u64) -> Vec<NodeId> {
    let size = u128::from(leaf_index) + 1;
    (1u8..64)
        .take_while(|&level| size % (1u128 << level) == 0)
        .map(|level| NodeId::new(level, ((size >> level) - 1) as u64))
        .collect()
}

/// Decomposition of leaves `[start, end)` into the fewest perfect nodes, left
/// to right. For the RFC subtrees used in proofs (`start` aligned to the
/// largest power of two not above `end - start`) the sizes are descending and
/// the subtree hash is the right fold of these nodes.
pub fn range_nodes(start: u64, end: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let align = if pos == 0 { 63 } else { pos.trailing_zeros() };
        let fit = 63 - (end - pos).leading_zeros();
        let level = align.min(fit);
        out.push(NodeId::new(level as u8, pos >> level));
        pos += 1u64 << level;
    }
    out
}

fn largest_pow2_below(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

fn fold_subtree(nodes: &[Hash]) -> Option<Hash> {
    let (last, rest) = nodes.split_last()?;
    Some(rest.iter().rev().fold(*last, |acc, h| node_hash(h, &acc)))
}

fn fetch_all(
    nodes: &[NodeId],
    fetch: &impl Fn(NodeId) -> Option<Hash>,
) -> Result<HashMap<NodeId, Hash>, MerkleError> {
    nodes
        .iter()
        .map(|&id| {
            fetch(id)
                .map(|h| (id, h))
                .ok_or(MerkleError::MissingNode(id))
        })
        .collect()
}

fn assemble_part(part: &[NodeId], have: &HashMap<NodeId, Hash>) -> Result<Hash, MerkleError> {
    let hashes = part
        .iter()
        .map(|id| have.get(id).copied().ok_or(MerkleError::MissingNode(*id)))
        .collect::<Result<Vec<_>, _>>()?;
    fold_subtree(&hashes).ok_or(MerkleError::MissingNode(NodeId::new(0, 0)))
}

fn dedup_nodes(parts: &[Vec<NodeId>]) -> Vec<NodeId> {
    let mut nodes: Vec<NodeId> = parts.iter().flatten().copied().collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

/// The nodes to fetch for a tree root, and how to combine them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootPlan {
    nodes: Vec<NodeId>,
}

impl RootPlan {
    /// The nodes to fetch (at most 64).
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// Builds the root from fetched nodes; the empty tree needs none.
    pub fn assemble(&self, fetch: &impl Fn(NodeId) -> Option<Hash>) -> Result<Hash, MerkleError> {
        if self.nodes.is_empty() {
            return Ok(empty_root());
        }
        let have = fetch_all(&self.nodes, fetch)?;
        assemble_part(&self.nodes, &have)
    }
}

/// The nodes to fetch for an inclusion or consistency proof, and how to
/// combine them into proof elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    parts: Vec<Vec<NodeId>>,
    nodes: Vec<NodeId>,
}

impl Plan {
    fn from_parts(parts: Vec<Vec<NodeId>>) -> Self {
        let nodes = dedup_nodes(&parts);
        Self { parts, nodes }
    }

    /// The distinct nodes to fetch, sorted (O(log n)).
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// The number of proof elements the plan produces.
    pub fn proof_len(&self) -> usize {
        self.parts.len()
    }

    /// Builds the proof (RFC 9162 order) from fetched nodes.
    pub fn assemble(
        &self,
        fetch: &impl Fn(NodeId) -> Option<Hash>,
    ) -> Result<Vec<Hash>, MerkleError> {
        let have = fetch_all(&self.nodes, fetch)?;
        self.parts
            .iter()
            .map(|part| assemble_part(part, &have))
            .collect()
    }
}

/// Plan for the root of the tree of `size` leaves.
pub fn root_plan(size: u64) -> RootPlan {
    RootPlan {
        nodes: range_nodes(0, size),
    }
}

/// Plan for the inclusion proof (RFC 9162 §2.1.3.1) of leaf `index` in the
/// tree of `size` leaves.
pub fn inclusion_plan(index: u64, size: u64) -> Result<Plan, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let (mut lo, mut hi) = (0u64, size);
    let mut parts = Vec::new();
    while hi - lo > 1 {
        let mid = lo + largest_pow2_below(hi - lo);
        if index < mid {
            parts.push(range_nodes(mid, hi));
            hi = mid;
        } else {
            parts.push(range_nodes(lo, mid));
            lo = mid;
        }
    }
    parts.reverse();
    Ok(Plan::from_parts(parts))
}

/// Plan for the consistency proof (RFC 9162 §2.1.4.1) from the tree of
/// `first` leaves to the tree of `second` leaves. Empty when `first` is 0 or
/// equal to `second`.
pub fn consistency_plan(first: u64, second: u64) -> Result<Plan, MerkleError> {
    if first > second {
        return Err(MerkleError::SizeOrder { first, second });
    }
    let mut parts = Vec::new();
    if first == 0 || first == second {
        return Ok(Plan::from_parts(parts));
    }
    let (mut lo, mut hi, mut whole) = (0u64, second, true);
    loop {
        if first - lo == hi - lo {
            if !whole {
                parts.push(range_nodes(lo, hi));
            }
            break;
        }
        let mid = lo + largest_pow2_below(hi - lo);
        if first <= mid {
            parts.push(range_nodes(mid, hi));
            hi = mid;
        } else {
            parts.push(range_nodes(lo, mid));
            lo = mid;
            whole = false;
        }
    }
    parts.reverse();
    Ok(Plan::from_parts(parts))
}

/// A simple in-memory log storing only perfect nodes, for tests and tools.
#[derive(Debug, Clone, Default)]
pub struct MemoryLog {
    nodes: HashMap<NodeId, Hash>,
    size: u64,
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends leaf data (hashed with [`leaf_hash`]); returns its index.
    pub fn append(&mut self, data: &[u8]) -> u64 {
        self.append_leaf_hash(leaf_hash(data))
    }

    /// Appends an already computed leaf hash; returns its index.
    pub fn append_leaf_hash(&mut self, leaf: Hash) -> u64 {
        let index = self.size;
        self.nodes.insert(NodeId::leaf(index), leaf);
        for id in completed_by_append(index) {
            let hash = id
                .children()
                .and_then(|(l, r)| Some(node_hash(self.nodes.get(&l)?, self.nodes.get(&r)?)));
            if let Some(hash) = hash {
                self.nodes.insert(id, hash);
            }
        }
        self.size += 1;
        index
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// A stored perfect node.
    pub fn node(&self, id: NodeId) -> Option<Hash> {
        self.nodes.get(&id).copied()
    }

    /// Root of the tree of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, MerkleError> {
        root_plan(size).assemble(&|id| self.node(id))
    }

    /// Inclusion proof of leaf `index` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, MerkleError> {
        inclusion_plan(index, size)?.assemble(&|id| self.node(id))
    }

    /// Consistency proof from size `first` to size `second`.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, MerkleError> {
        consistency_plan(first, second)?.assemble(&|id| self.node(id))
    }
}

#[cfg(test)]
mod tests;
