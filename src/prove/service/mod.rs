//! The glue between the pure proof core, the store and the KIS: signing
//! checkpoints, exporting proof bundles, consistency proofs, and checking
//! archived content in the KIS against the log. The only part of
//! [`crate::prove`] that does IO.

mod keys;
mod kis;
pub mod publish;
mod report;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use thiserror::Error;

pub use keys::{generate_signer_file, load_signer, load_trusted_keys};
pub use kis::{
    AuditReport, Check, CheckOutcome, KisReport, audit, audit_and_record, verify_against_kis,
};
pub use report::{BundleVerdict, verify_bundle_files};

use super::bundle::{ProofBundle, verify_bundle};
use super::checkpoint::{Checkpoint, CheckpointError, KeyInfo, KeyRejection, verify_checkpoint};
use super::leaf_v2::Leaf;
use super::merkle::{Hash, verify_consistency};
use super::note::Signer;
use super::pseudonym::ProofKeys;
use crate::event::MessageKey;
use crate::push::PushError;
use crate::store::{MessageRef, Store, StoreError, StoredCheckpoint};

/// Why a proof operation could not be done.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The KIS failed or refused.
    #[error("KIS: {0}")]
    Kis(#[from] PushError),
    /// A key or bundle file is unreadable or malformed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The request names nothing usable (bad message id, resource, sizes).
    #[error("{0}")]
    Request(String),
    /// No signer key is configured.
    #[error(
        "no checkpoint signing key configured: create one with `chartbridge keygen-signing --name NAME` \
         and set proofs.signing_key_file"
    )]
    NoSigningKey,
    /// The signer key is not registered, or not valid now.
    #[error("signing key {key}: {reason}")]
    SigningKey {
        /// `name+key id`.
        key: String,
        /// Why it may not sign.
        reason: &'static str,
    },
    /// The message or resource has no leaf in the log.
    #[error("{0} is not archived in the proof log")]
    NotArchived(String),
    /// No checkpoint covers the leaf and none can be signed here.
    #[error(
        "no signed checkpoint covers leaf {0} yet, and no signing key is configured to sign one \
         (set proofs.signing_key_file, or wait for the worker's next checkpoint)"
    )]
    NotCovered(u64),
    /// Signing or reading a checkpoint failed.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The stored log contradicts itself or a signed checkpoint.
    #[error("proof log is inconsistent: {0}")]
    Inconsistent(String),
}

/// What a proof bundle is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofTarget {
    /// A messenger message, `source:message_id`.
    Message(MessageKey),
    /// A KIS resource, `Type/id`.
    Resource(String),
}

impl ProofTarget {
    /// Parses `source:message_id`.
    pub fn message(text: &str) -> Result<Self, ServiceError> {
        match text.split_once(':') {
            Some((source, id)) if !source.is_empty() && !id.is_empty() => {
                Ok(Self::Message(MessageKey {
                    source: source.to_owned(),
                    message_id: id.to_owned(),
                }))
            }
            _ => Err(ServiceError::Request(
                "a message id must be SOURCE:ID, e.g. whatsapp:wamid.…".into(),
            )),
        }
    }

    /// Parses `Type/id`.
    pub fn resource(text: &str) -> Result<Self, ServiceError> {
        check_resource(text)?;
        Ok(Self::Resource(text.to_owned()))
    }
}

pub(crate) fn check_resource(text: &str) -> Result<(), ServiceError> {
    let ok = text
        .split_once('/')
        .is_some_and(|(t, id)| !t.is_empty() && !id.is_empty() && !id.contains('/'))
        && !text.contains(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Request(
            "a resource must be Type/id, e.g. DocumentReference/123".into(),
        ))
    }
}

fn key_label(signer: &Signer) -> String {
    format!("{}+{:08x}", signer.name(), signer.key_id())
}

/// The registered entry of `signer`, if it may sign at `now_ms`.
fn usable_key<'a>(
    signer: &Signer,
    keys: &'a [KeyInfo],
    now_ms: i64,
) -> Result<&'a KeyInfo, ServiceError> {
    let id = format!("{:08x}", signer.key_id());
    let info = keys
        .iter()
        .find(|k| k.name == signer.name() && k.key_id == id)
        .ok_or_else(|| ServiceError::SigningKey {
            key: key_label(signer),
            reason: "not registered in signing_keys (create keys with `chartbridge keygen-signing`)",
        })?;
    info.check_signing_time(now_ms)
        .map_err(|r| ServiceError::SigningKey {
            key: key_label(signer),
            reason: match r {
                KeyRejection::Revoked => "revoked",
                KeyRejection::NotValid => "outside its validity (rotated out?)",
            },
        })?;
    Ok(info)
}

/// Signs a checkpoint of the whole log at `now_ms`, if the log grew since
/// the latest checkpoint (or that one no longer verifies, e.g. its key was
/// revoked). Before signing, the new root is checked to be consistent with
/// the latest checkpoint. `None`: nothing to sign.
pub async fn sign_checkpoint(
    store: &Store,
    signer: &Signer,
    origin: &str,
    now_ms: i64,
) -> Result<Option<StoredCheckpoint>, ServiceError> {
    let keys = store.signing_keys().await?;
    usable_key(signer, &keys, now_ms)?;
    let size = store.log_size().await?;
    let latest = store.latest_checkpoint().await?;
    if let Some(cp) = latest.as_ref().filter(|cp| cp.size > size) {
        return Err(ServiceError::Inconsistent(format!(
            "the log has {size} leaves, fewer than its checkpoint of size {}",
            cp.size
        )));
    }
    let needed = match &latest {
        None => size > 0,
        Some(cp) => size > cp.size || verify_checkpoint(&cp.note, &keys).is_err(),
    };
    if !needed {
        return Ok(None);
    }
    let root = store.log_root(size).await?;
    if let Some(cp) = &latest {
        let proof = store.log_consistency(cp.size, size).await?;
        verify_consistency(cp.size, size, &cp.root, &root, &proof).map_err(|e| {
            ServiceError::Inconsistent(format!(
                "tree {size} does not extend checkpoint {}: {e}",
                cp.size
            ))
        })?;
    }
    let note = Checkpoint::new(origin, size, root, now_ms).sign(&[signer])?;
    let stored = StoredCheckpoint {
        size,
        root,
        timestamp_ms: now_ms,
        note,
        key_name: signer.name().to_owned(),
        key_id: format!("{:08x}", signer.key_id()),
    };
    if store.save_checkpoint(&stored, now_ms).await? {
        tracing::info!(size, key_id = %stored.key_id, "checkpoint signed");
        return Ok(Some(stored));
    }
    // Another worker signed this size with this key first: use theirs.
    Ok(store.checkpoint_of_size(size).await?.or(Some(stored)))
}

/// Whether the `message` field of a v1 leaf (`source:message_id`) names
/// the message the store names `key`.
pub(super) fn v1_names(proof_keys: &ProofKeys, message: &str, key: &MessageRef) -> bool {
    message.split_once(':').is_some_and(|(source, id)| {
        source == key.source
            && hex::encode(proof_keys.message_token(&MessageKey {
                source: source.to_owned(),
                message_id: id.to_owned(),
            })) == key.token
    })
}

async fn resolve_key(store: &Store, target: &ProofTarget) -> Result<MessageRef, ServiceError> {
    match target {
        ProofTarget::Message(key) => Ok(store.message_ref(key)?),
        ProofTarget::Resource(resource) => store
            .message_by_resource(resource)
            .await?
            .ok_or_else(|| ServiceError::NotArchived(resource.clone())),
    }
}

/// Builds the proof bundle of an archived message or resource, against the
/// smallest signed checkpoint that holds its leaf and verifies with the
/// registered keys. Without one, signs a new checkpoint when `signer` is
/// given. The bundle is verified before it is returned.
pub async fn export_bundle(
    store: &Store,
    target: &ProofTarget,
    (signer, proof_keys): (Option<&Signer>, &ProofKeys),
    origin: &str,
    now_ms: i64,
) -> Result<ProofBundle, ServiceError> {
    let key = resolve_key(store, target).await?;
    let leaf = store
        .log_leaf(&key)
        .await?
        .ok_or_else(|| ServiceError::NotArchived(key.to_string()))?;
    let record = Leaf::decode(&leaf.leaf_data)
        .map_err(|e| ServiceError::Inconsistent(format!("leaf {}: {e}", leaf.index)))?;
    let salt = match &record {
        Leaf::V1(_) => None,
        Leaf::V2(r) if hex::encode(r.message_token) == key.token => {
            Some(proof_keys.salt(&r.message_token))
        }
        Leaf::V2(_) => {
            return Err(ServiceError::Inconsistent(format!(
                "leaf {} holds another message token (or another key file is in use)",
                leaf.index
            )));
        }
    };
    let keys = store.signing_keys().await?;
    let usable = |cp: &Option<StoredCheckpoint>| {
        cp.as_ref()
            .filter(|cp| cp.size > leaf.index && verify_checkpoint(&cp.note, &keys).is_ok())
            .cloned()
    };
    let mut checkpoint = usable(&store.checkpoint_covering(leaf.index).await?);
    if checkpoint.is_none() {
        checkpoint = usable(&store.latest_checkpoint().await?);
    }
    let checkpoint = match (checkpoint, signer) {
        (Some(cp), _) => cp,
        (None, Some(signer)) => {
            sign_checkpoint(store, signer, origin, now_ms).await?;
            usable(&store.latest_checkpoint().await?).ok_or(ServiceError::NotCovered(leaf.index))?
        }
        (None, None) => return Err(ServiceError::NotCovered(leaf.index)),
    };
    let path = store.log_inclusion(leaf.index, checkpoint.size).await?;
    let bundle = ProofBundle::of(
        &record,
        salt,
        (leaf.index, checkpoint.size),
        &path,
        &checkpoint.note,
        keys.clone(),
    );
    verify_bundle(&bundle, None, Some(&keys))
        .map_err(|e| ServiceError::Inconsistent(format!("exported bundle fails {e}")))?;
    Ok(bundle)
}

/// A consistency proof between two tree sizes (RFC 9162 §2.1.4), with the
/// signed checkpoints of those sizes where they exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsistencyProof {
    /// The older tree size.
    pub first: u64,
    /// The newer tree size.
    pub second: u64,
    /// Root of the older tree, base64.
    pub first_root: String,
    /// Root of the newer tree, base64.
    pub second_root: String,
    /// Proof hashes, base64.
    pub proof: Vec<String>,
    /// The signed checkpoint of the older size, if one was signed.
    pub first_checkpoint: Option<String>,
    /// The signed checkpoint of the newer size, if one was signed.
    pub second_checkpoint: Option<String>,
}

async fn root_of(store: &Store, size: u64) -> Result<(Hash, Option<String>), ServiceError> {
    let root = store.log_root(size).await?;
    match store.checkpoint_of_size(size).await? {
        Some(cp) if cp.root != root => Err(ServiceError::Inconsistent(format!(
            "the log's root at size {size} differs from its signed checkpoint"
        ))),
        Some(cp) => Ok((root, Some(cp.note))),
        None => Ok((root, None)),
    }
}

/// The consistency proof from `first` to `second` leaves, verified before it
/// is returned.
pub async fn consistency(
    store: &Store,
    first: u64,
    second: u64,
) -> Result<ConsistencyProof, ServiceError> {
    let size = store.log_size().await?;
    if first > second || second > size {
        return Err(ServiceError::Request(format!(
            "need 0 <= from <= to <= {size} (the log size)"
        )));
    }
    let (first_root, first_checkpoint) = root_of(store, first).await?;
    let (second_root, second_checkpoint) = root_of(store, second).await?;
    let proof = store.log_consistency(first, second).await?;
    verify_consistency(first, second, &first_root, &second_root, &proof)
        .map_err(|e| ServiceError::Inconsistent(e.to_string()))?;
    Ok(ConsistencyProof {
        first,
        second,
        first_root: STANDARD.encode(first_root),
        second_root: STANDARD.encode(second_root),
        proof: proof.iter().map(|h| STANDARD.encode(h)).collect(),
        first_checkpoint,
        second_checkpoint,
    })
}

#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod tests;
