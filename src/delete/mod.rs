//! Deleting the messenger copy, only after the KIS confirmed the archive
//! (or a not-relevant message's retention ended).
//!
//! The deletion command is written to the outbox in the same transaction as
//! the archive; the [`relay`] publishes it with publisher confirms and the
//! gateway's receipts are recorded by [`receipts`].

pub mod relay;

use serde::{Deserialize, Serialize};

use crate::event::{Body, MediaLocation, Message};
use crate::map::stable_id;

/// Value of the `schema` member of a deletion command.
pub const COMMAND_SCHEMA: &str = "chartbridge.deletion/v1";
/// Value of the `schema` member of a deletion receipt.
pub const RECEIPT_SCHEMA: &str = "chartbridge.deletion-receipt/v1";

/// Why the messenger copy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeletionReason {
    Archived,
    NotRelevant,
}

impl DeletionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Archived => "archived",
            Self::NotRelevant => "not-relevant",
        }
    }
}

/// Proof that the content is in the KIS, carried by an archive deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveProof {
    /// The primary KIS resource, `Type/id`.
    pub resource: String,
    /// SHA-256 (hex) of the archived content.
    pub content_sha256: String,
}

/// The command a messenger gateway executes (`schemas/deletion-command.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionCommand {
    pub schema: String,
    pub deletion_id: String,
    pub source: String,
    pub message_id: String,
    /// Chat or room the message is in (the gateway needs it to redact).
    pub conversation: String,
    /// Media id to delete at the media API, for media messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_reference: Option<String>,
    pub reason: DeletionReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveProof>,
}

impl DeletionCommand {
    pub fn for_message(m: &Message, reason: DeletionReason, archive: Option<ArchiveProof>) -> Self {
        let media_reference = match &m.body {
            Body::Media(media) => match &media.location {
                MediaLocation::Reference(r) => Some(r.clone()),
                MediaLocation::Inline(_) => None,
            },
            Body::Text(_) => None,
        };
        Self {
            schema: COMMAND_SCHEMA.into(),
            deletion_id: stable_id(&m.key, "deletion").to_string(),
            source: m.key.source.clone(),
            message_id: m.key.message_id.clone(),
            conversation: m.conversation.clone(),
            media_reference,
            reason,
            archive,
        }
    }
}

/// What the gateway reports back (`schemas/deletion-receipt.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionReceipt {
    pub schema: String,
    pub deletion_id: String,
    pub status: ReceiptStatus,
    /// Machine-readable reason for a failure; no content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReceiptStatus {
    Deleted,
    /// Already gone: counts as deleted.
    NotFound,
    Failed,
}

impl DeletionReceipt {
    pub fn parse(payload: &[u8]) -> Result<Self, String> {
        let r: Self = serde_json::from_slice(payload).map_err(|e| format!("{:?}", e.classify()))?;
        if r.schema != RECEIPT_SCHEMA {
            return Err("unknown receipt schema".into());
        }
        Ok(r)
    }

    pub fn deleted(&self) -> bool {
        matches!(
            self.status,
            ReceiptStatus::Deleted | ReceiptStatus::NotFound
        )
    }
}
