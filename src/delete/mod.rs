//! Deleting the messenger copy, only after the KIS confirmed the archive
//! (or a not-relevant message's retention ended).
//!
//! The deletion command is written to the outbox in the same transaction as
//! the archive; the [`relay`] publishes it with publisher confirms and the
//! gateway's receipts are recorded by [`receipts`].

pub mod adapter;
pub mod config;
pub mod matrix;
pub mod receipts;
pub mod relay;
pub mod whatsapp;

use serde::{Deserialize, Serialize};

use crate::event::Message;
use crate::map::stable_id;

/// Counts deletions without a final receipt older than `stuck_after` into
/// the `deletions_stuck` gauge; returns the count.
pub async fn gauge_stuck(
    store: &crate::store::Store,
    stuck_after: std::time::Duration,
    now_ms: i64,
) -> Option<i64> {
    let before = now_ms - stuck_after.as_millis() as i64;
    match store.deletion_counts(before).await {
        Ok((_, stuck)) => {
            crate::telemetry::measure::deletions_stuck(stuck);
            Some(stuck)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot count stuck deletions");
            None
        }
    }
}

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
        let media_reference = m.media_reference().map(str::to_owned);
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
    /// A transient failure; the adapter keeps trying.
    Retrying,
    /// A permanent failure; `detail` holds the reason code.
    Failed,
}

impl ReceiptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deleted => "deleted",
            Self::NotFound => "not-found",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
        }
    }
}

/// The `detail` kept of a receipt whose own is not a reason code.
pub const UNREADABLE_DETAIL: &str = "unreadable_detail";

/// Whether `detail` is a reason code (`graph_error_190`, `M_FORBIDDEN`,
/// `http:503`): 1–64 ASCII letters, digits and `_ . : -`. Anything else
/// could carry what a gateway echoed (a wamid embeds a phone number).
fn is_reason_code(detail: &str) -> bool {
    (1..=64).contains(&detail.len())
        && detail
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c))
}

impl DeletionReceipt {
    /// Parses a receipt (`schemas/deletion-receipt.schema.json`). A
    /// `detail` that is not a reason code is replaced by
    /// [`UNREADABLE_DETAIL`]: it is stored and shown to operators, and a
    /// gateway's free text could name a person; the receipt's status still
    /// counts.
    ///
    /// Errors: not JSON of the receipt's shape, or another `schema`.
    pub fn parse(payload: &[u8]) -> Result<Self, String> {
        let mut r: Self =
            serde_json::from_slice(payload).map_err(|e| format!("{:?}", e.classify()))?;
        if r.schema != RECEIPT_SCHEMA {
            return Err("unknown receipt schema".into());
        }
        if r.detail.as_deref().is_some_and(|d| !is_reason_code(d)) {
            r.detail = Some(UNREADABLE_DETAIL.to_owned());
        }
        Ok(r)
    }

    pub fn new(deletion_id: &str, status: ReceiptStatus, detail: Option<&str>) -> Self {
        Self {
            schema: RECEIPT_SCHEMA.into(),
            deletion_id: deletion_id.to_owned(),
            status,
            detail: detail.map(str::to_owned),
        }
    }

    /// The deletion state this receipt moves its deletion to.
    pub fn state(&self) -> crate::store::DeletionState {
        use crate::store::DeletionState;
        match self.status {
            ReceiptStatus::Deleted | ReceiptStatus::NotFound => DeletionState::Confirmed,
            ReceiptStatus::Retrying => DeletionState::Retrying,
            ReceiptStatus::Failed => DeletionState::Failed,
        }
    }

    pub fn deleted(&self) -> bool {
        matches!(
            self.status,
            ReceiptStatus::Deleted | ReceiptStatus::NotFound
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator(schema: &str) -> jsonschema::Validator {
        jsonschema::validator_for(&serde_json::from_str(schema).unwrap()).unwrap()
    }

    #[test]
    fn commands_and_receipts_follow_their_schemas() {
        let payload = std::fs::read("fixtures/events/whatsapp-text-image.json").unwrap();
        let decoded = crate::event::decode(&payload, 1 << 20).unwrap();
        let commands = validator(include_str!("../../schemas/deletion-command.schema.json"));
        for m in &decoded.messages {
            let archived = DeletionCommand::for_message(
                m,
                DeletionReason::Archived,
                Some(ArchiveProof {
                    resource: "DocumentReference/1".into(),
                    content_sha256: "ab".repeat(32),
                }),
            );
            let v = serde_json::to_value(&archived).unwrap();
            assert!(commands.is_valid(&v), "{v}");
            let later = DeletionCommand::for_message(m, DeletionReason::NotRelevant, None);
            assert_eq!(
                later.deletion_id, archived.deletion_id,
                "stable per message"
            );
        }
        let receipts = validator(include_str!("../../schemas/deletion-receipt.schema.json"));
        let r = serde_json::json!({"schema": RECEIPT_SCHEMA, "deletion_id": "x", "status": "not-found"});
        assert!(receipts.is_valid(&r));
        for status in [ReceiptStatus::Retrying, ReceiptStatus::Failed] {
            let r = DeletionReceipt::new("x", status, Some("graph_error_190"));
            assert!(receipts.is_valid(&serde_json::to_value(&r).unwrap()));
            assert!(!r.deleted());
        }
        assert!(
            DeletionReceipt::parse(r.to_string().as_bytes())
                .unwrap()
                .deleted()
        );
        assert!(DeletionReceipt::parse(b"{\"schema\":\"other\"}").is_err());
        // A detail that is no reason code is not kept.
        for (detail, kept) in [
            ("graph_error_100_33", "graph_error_100_33"),
            ("M_FORBIDDEN", "M_FORBIDDEN"),
            ("wamid.HBgLNDkxNTEx MjM0NTY3OBU", UNREADABLE_DETAIL),
            ("Erika Mustermann +49 151 1234567", UNREADABLE_DETAIL),
            ("", UNREADABLE_DETAIL),
        ] {
            let r = serde_json::json!({"schema": RECEIPT_SCHEMA, "deletion_id": "x",
                                       "status": "failed", "detail": detail});
            let parsed = DeletionReceipt::parse(r.to_string().as_bytes()).unwrap();
            assert_eq!(parsed.detail.as_deref(), Some(kept), "{detail}");
        }
    }

    #[tokio::test]
    async fn iv8_stuck_deletions_show_in_the_gauge() {
        use crate::store::{DeletionState, NewDeletion};
        let (store, _dir) = crate::store::tests::fresh(crate::store::Backend::Sqlite).await;
        let key = crate::event::MessageKey {
            source: "matrix".into(),
            message_id: "$e".into(),
        };
        let d = NewDeletion {
            deletion_id: "d".into(),
            key: key.clone(),
            reason: "not-relevant",
            sealed_command: crate::seal::Sealer::from_key([1; 32]).seal(b"command"),
            not_before_ms: 0,
            state: DeletionState::Pending,
        };
        store.record_not_relevant(&key, "r", &d, 0).await.unwrap();
        store.claim_deletions(1_000, 10, 10).await.unwrap();
        store.mark_deletion_requested("d", 1_000).await.unwrap();
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(gauge_stuck(&store, hour, 1_000 + 60_000).await, Some(0));
        assert_eq!(crate::telemetry::gauges()["deletions_stuck"], 0);
        assert_eq!(gauge_stuck(&store, hour, 1_001 + 3_600_000).await, Some(1));
        assert_eq!(crate::telemetry::gauges()["deletions_stuck"], 1);
        store
            .record_deletion_receipt("d", DeletionState::Confirmed, "deleted", None, 5_000_000)
            .await
            .unwrap();
        assert_eq!(gauge_stuck(&store, hour, 9_000_000).await, Some(0));
    }

    #[test]
    fn quarantined_messages_keep_a_schema_valid_canonical_form() {
        let payload = std::fs::read("fixtures/events/whatsapp-text-image.json").unwrap();
        for m in crate::event::decode(&payload, 1 << 20).unwrap().messages {
            let canonical =
                serde_json::to_vec(&crate::event::CanonicalEvent::from_message(&m)).unwrap();
            let again = crate::event::decode(&canonical, 1 << 20).unwrap();
            assert_eq!(again.messages, vec![m]);
        }
    }
}
