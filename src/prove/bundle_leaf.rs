//! The leaf part of a proof bundle: the fields repeated for readers (v1
//! and v2), the LeafData check and the ContentHash check of either version.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{BUNDLE_FORMAT, BUNDLE_FORMAT_V2, ProofBundle, VerifyError};
use crate::prove::leaf_v2::Leaf;
use crate::prove::pseudonym::salted;

/// The decoded fields of a v1 leaf, repeated for human readers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafSummaryV1 {
    /// SHA-256 of the content, 64 lowercase hex digits.
    pub content_sha256: String,
    /// `source:message_id`.
    pub message: String,
    /// `Type/id` in the hospital record.
    pub resource: String,
    /// Archive time, RFC 3339 UTC with milliseconds.
    pub archived: String,
}

/// The decoded fields of a v2 leaf, repeated for human readers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafSummaryV2 {
    /// Keyed token of the message, 64 lowercase hex digits.
    pub message_token: String,
    /// `HMAC-SHA256(salt, SHA-256(archived bytes))`, hex.
    pub content_hmac: String,
    /// `HMAC-SHA256(salt, SHA-256(received bytes))`, hex.
    pub received_hmac: String,
    /// How the archived bytes derive from the received ones.
    pub transformation: String,
    /// `Type/id` in the hospital record.
    pub resource: String,
    /// Archive time, RFC 3339 UTC with milliseconds.
    pub archived: String,
}

/// The leaf's fields, by leaf version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LeafSummary {
    V1(LeafSummaryV1),
    V2(LeafSummaryV2),
}

impl LeafSummary {
    pub(super) fn of(record: &Leaf) -> Self {
        match record {
            Leaf::V1(r) => Self::V1(LeafSummaryV1 {
                content_sha256: hex::encode(r.content_sha256()),
                message: r.message().to_string(),
                resource: r.resource().to_string(),
                archived: r.archived_rfc3339(),
            }),
            Leaf::V2(r) => Self::V2(LeafSummaryV2 {
                message_token: hex::encode(r.message_token),
                content_hmac: hex::encode(r.content_hmac),
                received_hmac: hex::encode(r.received_hmac),
                transformation: r.transformation().to_string(),
                resource: r.resource().to_string(),
                archived: r.archived_rfc3339(),
            }),
        }
    }

    /// The hospital record resource, `Type/id`.
    pub fn resource(&self) -> &str {
        match self {
            Self::V1(s) => &s.resource,
            Self::V2(s) => &s.resource,
        }
    }
}

pub(super) fn check_leaf(bundle: &ProofBundle) -> Result<(Leaf, Option<[u8; 32]>), VerifyError> {
    let bytes = STANDARD
        .decode(&bundle.leaf_data)
        .map_err(|_| VerifyError::LeafData("leaf_data is not base64".into()))?;
    let record = Leaf::decode(&bytes).map_err(|e| VerifyError::LeafData(e.to_string()))?;
    if LeafSummary::of(&record) != bundle.leaf {
        return Err(VerifyError::LeafData(
            "leaf fields disagree with leaf_data".into(),
        ));
    }
    let salt = match (&record, &bundle.content_salt) {
        (Leaf::V1(_), None) if bundle.format == BUNDLE_FORMAT => None,
        (Leaf::V2(_), Some(salt)) if bundle.format == BUNDLE_FORMAT_V2 => {
            let mut out = [0u8; 32];
            let lower = salt.bytes().all(|b| !b.is_ascii_uppercase());
            hex::decode_to_slice(salt, &mut out)
                .ok()
                .filter(|_| lower)
                .ok_or_else(|| {
                    VerifyError::LeafData("content_salt is not 64 lowercase hex digits".into())
                })?;
            Some(out)
        }
        _ => {
            return Err(VerifyError::LeafData(
                "a v1 leaf needs format /v1 and no content_salt, a v2 leaf format /v2 and a content_salt".into(),
            ));
        }
    };
    Ok((record, salt))
}

/// The ContentHash step: SHA-256 for a v1 leaf; for a v2 leaf the salted
/// hash, which may match the archived bytes or the received original.
pub(super) fn check_content(
    record: &Leaf,
    salt: Option<&[u8; 32]>,
    content: &[u8],
) -> Result<String, VerifyError> {
    let digest: [u8; 32] = Sha256::digest(content).into();
    match (record, salt) {
        (Leaf::V1(r), _) if &digest == r.content_sha256() => {
            Ok(format!("SHA-256 {}", hex::encode(digest)))
        }
        (Leaf::V1(r), _) => Err(VerifyError::ContentHash(format!(
            "content SHA-256 {} differs from leaf {}",
            hex::encode(digest),
            hex::encode(r.content_sha256())
        ))),
        (Leaf::V2(r), Some(salt)) => {
            let keyed = salted(salt, &digest);
            if keyed == r.content_hmac {
                Ok(format!(
                    "HMAC-SHA256(content_salt, SHA-256 {}) equals content-hmac: the archived content",
                    hex::encode(digest)
                ))
            } else if keyed == r.received_hmac {
                Ok(format!(
                    "HMAC-SHA256(content_salt, SHA-256 {}) equals received-hmac: the content as received, before {}",
                    hex::encode(digest),
                    r.transformation()
                ))
            } else {
                Err(VerifyError::ContentHash(format!(
                    "HMAC-SHA256(content_salt, SHA-256 {}) is neither content-hmac nor received-hmac",
                    hex::encode(digest)
                )))
            }
        }
        (Leaf::V2(_), None) => Err(VerifyError::ContentHash("no content_salt".into())),
    }
}
