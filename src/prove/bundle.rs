//! Proof bundles: the leaf record, its inclusion path and the signed
//! checkpoint, so a third party holding the content bytes and the log's
//! public key can verify an archived content without chartbridge.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::checkpoint::{Checkpoint, CheckpointError, KeyInfo, verify_checkpoint};
use super::leaf::LeafRecord;
use super::leaf_v2::Leaf;
use super::merkle::{Hash, verify_inclusion};

#[path = "bundle_leaf.rs"]
mod leaf_fields;
pub use leaf_fields::{LeafSummary, LeafSummaryV1, LeafSummaryV2};
use leaf_fields::{check_content, check_leaf};

/// Value of the `format` field of a bundle of a v1 leaf.
pub const BUNDLE_FORMAT: &str = "chartbridge-proof-bundle/v1";
/// Value of the `format` field of a bundle of a v2 leaf.
pub const BUNDLE_FORMAT_V2: &str = "chartbridge-proof-bundle/v2";

/// Value of the informative `hash_algorithms` field.
pub const HASH_ALGORITHMS: &str = "RFC 9162 SHA-256 Merkle tree: leaf hash = SHA-256(0x00 || leaf_data), \
node hash = SHA-256(0x01 || left || right); content_sha256 = SHA-256(content); \
v2: content_hmac = HMAC-SHA256(content_salt, SHA-256(content)); \
checkpoint = C2SP tlog-checkpoint in a C2SP signed note, Ed25519, \
key id = SHA-256(name || 0x0A || 0x01 || public key)[0..4]";

const MAX_PATH_LEN: usize = 64;

/// A proof bundle (`chartbridge-proof-bundle/v1` for a v1 leaf, `/v2` for
/// a v2 leaf, JSON); see `schemas/proof-bundle.schema.json`. It holds no
/// message content; a v2 bundle names no messenger id either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofBundle {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// Base64 of the canonical leaf record; its leaf hash is in the log.
    pub leaf_data: String,
    /// The leaf record's fields, for humans.
    pub leaf: LeafSummary,
    /// v2 only: the leaf's salt, 64 lowercase hex digits
    /// (`HMAC-SHA256(K_salt, message-token)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_salt: Option<String>,
    /// 0-based leaf index.
    pub leaf_index: u64,
    /// Tree size of the checkpoint.
    pub tree_size: u64,
    /// Base64 inclusion path hashes, leaf to root (RFC 9162 §2.1.3).
    pub inclusion_path: Vec<String>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: String,
    /// The log's published keys with validity and revocation.
    pub keys: Vec<KeyInfo>,
    /// Informative description of the hashes and signatures.
    pub hash_algorithms: String,
}

/// A verification step, in the order [`verify_bundle`] runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Step {
    /// The bundle parses and names a known format.
    Format,
    /// `leaf_data` is a canonical leaf record agreeing with `leaf`.
    LeafData,
    /// The content's SHA-256 equals the leaf's `content_sha256`.
    ContentHash,
    /// The checkpoint note and body are well formed, with a timestamp.
    Checkpoint,
    /// The inclusion path leads from the leaf hash to the checkpoint root.
    Inclusion,
    /// A trusted key validly signed the checkpoint.
    Signature,
    /// The signing key was not revoked at the checkpoint time.
    KeyRevoked,
    /// The signing key was valid at the checkpoint time.
    KeyNotValid,
}

/// Why a bundle failed, naming the failed step.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// Not a bundle of a known format.
    #[error("bundle format: {0}")]
    Format(String),
    /// Leaf data undecodable, non-canonical, or disagreeing with `leaf`.
    #[error("leaf data: {0}")]
    LeafData(String),
    /// The content does not hash to the leaf's `content_sha256`.
    #[error("content hash: {0}")]
    ContentHash(String),
    /// The checkpoint is malformed.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The inclusion path does not lead to the checkpoint root.
    #[error("inclusion: {0}")]
    Inclusion(String),
    /// No valid signature by a trusted key.
    #[error("signature: {0}")]
    Signature(String),
    /// The signing key was revoked at or before the checkpoint time.
    #[error("key revoked: {0}")]
    KeyRevoked(String),
    /// The signing key was outside its validity at the checkpoint time.
    #[error("key not valid: {0}")]
    KeyNotValid(String),
}

impl VerifyError {
    /// The step that failed.
    pub fn step(&self) -> Step {
        match self {
            Self::Format(_) => Step::Format,
            Self::LeafData(_) => Step::LeafData,
            Self::ContentHash(_) => Step::ContentHash,
            Self::Checkpoint(_) => Step::Checkpoint,
            Self::Inclusion(_) => Step::Inclusion,
            Self::Signature(_) => Step::Signature,
            Self::KeyRevoked(_) => Step::KeyRevoked,
            Self::KeyNotValid(_) => Step::KeyNotValid,
        }
    }
}

/// Where the keys used for the signature check came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TrustSource {
    /// Keys given by the operator (`--key`): only those were trusted.
    Operator,
    /// The bundle's own `keys`: proves consistency, not origin (weaker).
    Bundle,
}

/// One passed step and what it established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PassedStep {
    /// The step.
    pub step: Step,
    /// What was checked.
    pub detail: String,
}

/// The outcome of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Every step passed, in order.
    pub passed: Vec<PassedStep>,
    /// Where the trusted keys came from.
    pub trust: TrustSource,
    /// Whether content bytes were checked against the leaf.
    pub content_checked: bool,
    /// Things a reader must know (unchecked content, bundle-supplied keys).
    pub warnings: Vec<String>,
    /// Log origin of the checkpoint.
    pub origin: String,
    /// Checkpoint tree size.
    pub tree_size: u64,
    /// Leaf index.
    pub leaf_index: u64,
    /// Checkpoint root, lowercase hex.
    pub root_hex: String,
    /// Checkpoint signing time, Unix milliseconds.
    pub signed_at_ms: i64,
    /// Keys (`name+key_id`) whose valid signatures vouch for the checkpoint.
    pub signed_by: Vec<String>,
}

impl ProofBundle {
    /// Assembles a bundle for the v1 `record` at `leaf_index` in the tree
    /// of the signed `checkpoint_note`.
    pub fn new(
        record: &LeafRecord,
        leaf_index: u64,
        tree_size: u64,
        inclusion_path: &[Hash],
        checkpoint_note: &str,
        keys: Vec<KeyInfo>,
    ) -> Self {
        let leaf = Leaf::V1(record.clone());
        Self::of(
            &leaf,
            None,
            (leaf_index, tree_size),
            inclusion_path,
            checkpoint_note,
            keys,
        )
    }

    /// Assembles a bundle for a leaf of either version; a v2 leaf needs its
    /// `salt`.
    pub fn of(
        record: &Leaf,
        salt: Option<[u8; 32]>,
        (leaf_index, tree_size): (u64, u64),
        inclusion_path: &[Hash],
        checkpoint_note: &str,
        keys: Vec<KeyInfo>,
    ) -> Self {
        let format = match record {
            Leaf::V1(_) => BUNDLE_FORMAT,
            Leaf::V2(_) => BUNDLE_FORMAT_V2,
        };
        Self {
            format: format.to_string(),
            leaf_data: STANDARD.encode(record.encode()),
            leaf: LeafSummary::of(record),
            content_salt: salt.map(hex::encode),
            leaf_index,
            tree_size,
            inclusion_path: inclusion_path.iter().map(|h| STANDARD.encode(h)).collect(),
            checkpoint: checkpoint_note.to_string(),
            keys,
            hash_algorithms: HASH_ALGORITHMS.to_string(),
        }
    }

    /// Parses bundle JSON; failures are [`VerifyError::Format`].
    pub fn from_json(json: &str) -> Result<Self, VerifyError> {
        serde_json::from_str(json).map_err(|e| VerifyError::Format(e.to_string()))
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

fn decode_path(path: &[String]) -> Result<Vec<Hash>, VerifyError> {
    if path.len() > MAX_PATH_LEN {
        return Err(VerifyError::Inclusion("inclusion path too long".into()));
    }
    path.iter()
        .enumerate()
        .map(|(i, b64)| {
            STANDARD
                .decode(b64)
                .ok()
                .and_then(|raw| Hash::try_from(raw).ok())
                .ok_or_else(|| {
                    VerifyError::Inclusion(format!("path element {i} is not a base64 SHA-256 hash"))
                })
        })
        .collect()
}

fn map_checkpoint_error(e: CheckpointError) -> VerifyError {
    match e {
        CheckpointError::Malformed(_) | CheckpointError::MissingTimestamp => {
            VerifyError::Checkpoint(e.to_string())
        }
        CheckpointError::InvalidKey { .. } | CheckpointError::Signature(_) => {
            VerifyError::Signature(e.to_string())
        }
        CheckpointError::KeyRevoked { .. } => VerifyError::KeyRevoked(e.to_string()),
        CheckpointError::KeyNotValid { .. } => VerifyError::KeyNotValid(e.to_string()),
    }
}

/// Verifies a bundle: format, leaf data, content hash (if `content` is
/// given), checkpoint form, inclusion, signature by a trusted key, key not
/// revoked and valid at the checkpoint time — stopping at the first failure.
///
/// With `trusted_keys` only those keys are trusted; without, the bundle's
/// own keys are used and the report says so.
pub fn verify_bundle(
    bundle: &ProofBundle,
    content: Option<&[u8]>,
    trusted_keys: Option<&[KeyInfo]>,
) -> Result<Report, VerifyError> {
    let mut passed = Vec::new();
    let mut pass = |step, detail: String| passed.push(PassedStep { step, detail });
    if bundle.format != BUNDLE_FORMAT && bundle.format != BUNDLE_FORMAT_V2 {
        return Err(VerifyError::Format(format!(
            "unknown format {:?}",
            bundle.format
        )));
    }
    pass(Step::Format, bundle.format.clone());

    let (record, salt) = check_leaf(bundle)?;
    let described = match &record {
        Leaf::V1(r) => format!("canonical leaf record for {}", r.message()),
        Leaf::V2(r) => format!(
            "canonical v2 leaf record, message token {}, transformation {}",
            hex::encode(r.message_token),
            r.transformation()
        ),
    };
    pass(Step::LeafData, described);

    let mut warnings = Vec::new();
    if let Some(content) = content {
        pass(
            Step::ContentHash,
            check_content(&record, salt.as_ref(), content)?,
        );
    } else {
        warnings.push("no content given: the content hash was not checked".to_string());
    }

    let checkpoint =
        Checkpoint::from_note_unverified(&bundle.checkpoint).map_err(map_checkpoint_error)?;
    if checkpoint.timestamp_ms.is_none() {
        return Err(map_checkpoint_error(CheckpointError::MissingTimestamp));
    }
    pass(
        Step::Checkpoint,
        format!("{} at size {}", checkpoint.origin, checkpoint.size),
    );

    if bundle.tree_size != checkpoint.size {
        return Err(VerifyError::Inclusion(format!(
            "tree_size {} differs from checkpoint size {}",
            bundle.tree_size, checkpoint.size
        )));
    }
    let path = decode_path(&bundle.inclusion_path)?;
    verify_inclusion(
        &record.leaf_hash(),
        bundle.leaf_index,
        bundle.tree_size,
        &path,
        &checkpoint.root,
    )
    .map_err(|e| VerifyError::Inclusion(e.to_string()))?;
    pass(
        Step::Inclusion,
        format!(
            "leaf {} of {} leads to root {}",
            bundle.leaf_index,
            bundle.tree_size,
            hex::encode(checkpoint.root)
        ),
    );

    let (keys, trust) = match trusted_keys {
        Some(keys) => (keys, TrustSource::Operator),
        None => {
            warnings.push(
                "keys taken from the bundle itself: compare the key id with the log's published key"
                    .to_string(),
            );
            (&bundle.keys[..], TrustSource::Bundle)
        }
    };
    let verified = verify_checkpoint(&bundle.checkpoint, keys).map_err(map_checkpoint_error)?;
    let signed_by: Vec<String> = verified
        .signed_by
        .iter()
        .map(|k| format!("{}+{}", k.name, k.key_id))
        .collect();
    pass(
        Step::Signature,
        format!("signed by {}", signed_by.join(", ")),
    );
    pass(
        Step::KeyRevoked,
        format!("not revoked at {} ms", verified.signed_at_ms),
    );
    pass(
        Step::KeyNotValid,
        format!("valid at {} ms", verified.signed_at_ms),
    );

    Ok(Report {
        passed,
        trust,
        content_checked: content.is_some(),
        warnings,
        origin: checkpoint.origin,
        tree_size: checkpoint.size,
        leaf_index: bundle.leaf_index,
        root_hex: hex::encode(checkpoint.root),
        signed_at_ms: verified.signed_at_ms,
        signed_by,
    })
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod tests;
