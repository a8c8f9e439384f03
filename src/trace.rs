//! `chartbridge trace ID`: one message's whole path in one view — its
//! ledger row and state, its quarantine item (reason, correlation id,
//! review), its KIS resources, its proof-log leaf and the checkpoint that
//! covers it, its deletion and every receipt. The view holds opaque ids,
//! codes, hashes, KIS resource references and times only: no content, no
//! messenger ids, no sender, no patient reference.
//!
//! `ID` is what an operator holds: a quarantine item id (`quarantine
//! list`), a correlation id (log lines, `quarantine list --json`, dead
//! letters), a deletion id (`status`, `deletions list`) or a KIS resource
//! `Type/id`.

use serde::Serialize;

use crate::quarantine::item_id;
use crate::seal::Sealer;
use crate::store::MessageRef;
use crate::store::{DeletionView, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error(
        "nothing known under this id (a quarantine item id, a correlation id, a deletion id or a \
         KIS resource Type/id)"
    )]
    NotFound,
}

/// The ledger part of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ledger {
    pub state: String,
    /// Quarantine reason code or the deciding rule.
    pub reason: String,
    pub content_sha256: Option<String>,
    /// Every KIS resource written, the primary first.
    pub resources: Vec<String>,
    pub recorded_at: i64,
    pub updated_at: i64,
    /// When its metadata was purged (DSK II.3), if it was.
    pub purged_at: Option<i64>,
}

/// The quarantine part of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quarantine {
    pub reason: String,
    pub quarantined_at: i64,
    pub correlation_id: Option<String>,
    /// A phone-number match left a candidate patient.
    pub candidate: bool,
    /// Who resolved it to a patient, and when.
    pub resolved_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub released_at: Option<i64>,
    /// The conversation id `conversation list` shows.
    pub conversation: Option<String>,
}

/// The proof-log part of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leaf {
    pub index: u64,
    /// SHA-256 leaf hash, hex.
    pub leaf_hash: String,
    /// Size and signing time of the smallest checkpoint that covers it.
    pub checkpoint_size: Option<u64>,
    pub checkpoint_at: Option<i64>,
}

/// One deletion receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    pub at: i64,
    pub status: String,
    pub detail: Option<String>,
}

/// One message's path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trace {
    /// The message's opaque id (as `quarantine list` shows it).
    pub item_id: String,
    pub source: String,
    pub ledger: Option<Ledger>,
    pub quarantine: Option<Quarantine>,
    pub leaf: Option<Leaf>,
    pub deletion: Option<DeletionView>,
    pub receipts: Vec<Receipt>,
}

/// The messages `id` names (several for a correlation id of a batch).
pub async fn find(store: &Store, sealer: &Sealer, id: &str) -> Result<Vec<MessageRef>, TraceError> {
    let id = id.trim();
    if id.contains('/') {
        return Ok(store.message_with_resource(id).await?.into_iter().collect());
    }
    if let Some(key) = store.deletion_message(id).await? {
        return Ok(vec![key]);
    }
    let by_correlation = store.quarantine_by_correlation(id).await?;
    if !by_correlation.is_empty() {
        return Ok(by_correlation);
    }
    Ok(store
        .quarantine_keys()
        .await?
        .into_iter()
        .filter(|k| item_id(sealer, k) == id)
        .collect())
}

/// The trace of message `key`.
pub async fn of(store: &Store, sealer: &Sealer, key: &MessageRef) -> Result<Trace, TraceError> {
    let ledger = store.ledger_row(key).await?.map(|r| {
        let mut resources = r.resources;
        if let Some(primary) = r.resource {
            resources.retain(|x| *x != primary);
            resources.insert(0, primary);
        }
        Ledger {
            state: r.state,
            reason: r.reason,
            content_sha256: r.content_sha256,
            resources,
            recorded_at: r.created_at,
            updated_at: r.updated_at,
            purged_at: r.purged_at,
        }
    });
    let quarantine = store.quarantine_row(key).await?.map(|q| Quarantine {
        reason: q.reason,
        quarantined_at: q.created_at,
        correlation_id: q.correlation_id,
        candidate: q.has_candidate,
        resolved_by: q.resolved_by,
        resolved_at: q.resolved_at,
        released_at: q.released_at,
        conversation: q
            .conversation_token
            .map(|t| crate::review::conversation_id(sealer, &t)),
    });
    let leaf = match store.log_leaf(key).await? {
        Some(l) => {
            let cp = store.checkpoint_covering(l.index).await?;
            Some(Leaf {
                index: l.index,
                leaf_hash: hex::encode(l.leaf_hash),
                checkpoint_size: cp.as_ref().map(|c| c.size),
                checkpoint_at: cp.map(|c| c.timestamp_ms),
            })
        }
        None => None,
    };
    let deletion = store.deletion_of(key).await?;
    let receipts = match &deletion {
        Some(d) => store
            .deletion_receipts(&d.deletion_id)
            .await?
            .into_iter()
            .map(|(at, status, detail)| Receipt { at, status, detail })
            .collect(),
        None => Vec::new(),
    };
    Ok(Trace {
        item_id: item_id(sealer, key),
        source: key.source.clone(),
        ledger,
        quarantine,
        leaf,
        deletion,
        receipts,
    })
}

/// The traces of every message `id` names.
pub async fn trace(store: &Store, sealer: &Sealer, id: &str) -> Result<Vec<Trace>, TraceError> {
    let keys = find(store, sealer, id).await?;
    if keys.is_empty() {
        return Err(TraceError::NotFound);
    }
    let mut out = Vec::with_capacity(keys.len());
    for key in &keys {
        out.push(of(store, sealer, key).await?);
    }
    Ok(out)
}
