//! The audit trail of human actions (docs/audit-trail.md): who (an
//! authenticated [`Actor`]), when, what ([`Action`] and opaque target ids:
//! no content, no messenger ids) and why (a free-text reason, sealed).
//! Rows are chained: `hash = SHA-256("chartbridge/audit/v1\0" || prev_hash
//! || canonical row)`, so a deleted or edited row breaks [`verify`]. The
//! chain is pure; `crate::store` appends and reads it.

mod actor;
pub mod reviewers;

use sha2::{Digest, Sha256};

pub use actor::{Actor, ActorError};

/// A human action. The string forms are stable: they are in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A conversation linked to a patient (`link`, `conversation link`,
    /// `quarantine resolve --conversation`).
    ConversationLink,
    /// A conversation's link removed.
    ConversationUnlink,
    /// A conversation dismissed as not relevant.
    ConversationDismiss,
    /// A quarantined item resolved to a patient (`quarantine resolve`).
    QuarantineResolve,
    /// A quarantined item released into the pipeline again.
    QuarantineRelease,
    /// A quarantined item dismissed.
    QuarantineDismiss,
    /// A held original opened for review (`quarantine view`).
    QuarantineView,
    /// A reviewer's redaction of held content (`quarantine redact`).
    QuarantineRedact,
    /// Dead letters replayed into their queue (`dlq replay`).
    Replay,
    /// A checkpoint signing key revoked (`keys revoke`).
    SigningKeyRevoke,
    /// A new checkpoint signing key (`keygen-signing`).
    SigningKeyRotate,
    /// A new at-rest key and re-sealing (`keys rotate-at-rest`).
    AtRestKeyRotate,
    /// A proof bundle exported (`proof export`).
    ProofExport,
    /// A worker started with a configuration unlike the last start's.
    ConfigChange,
    /// A quarantined item's sealed content and sender shown (`quarantine show`).
    QuarantineShow,
    /// A dead letter's payload shown (`dlq show`).
    DeadLetterShow,
    /// Dead letters removed from the queue (`dlq purge`).
    DeadLetterPurge,
    /// Failed or stuck deletions requested again (`deletions retry`).
    DeletionRetry,
    /// A directory of exported events published (`import`).
    Import,
    /// Published checkpoints the local proof log contradicts, accepted
    /// (`log accept-rollback`).
    LogRollbackAccept,
    /// A sealed backup of the database written (`backup`).
    BackupCreate,
    /// A sealed backup restored into a new database file (`restore`).
    BackupRestore,
    /// Pending schema migrations applied (`migrate`).
    SchemaMigrate,
    /// A console login (OpenID Connect); the target names the roles.
    ConsoleLogin,
    /// A console logout.
    ConsoleLogout,
    /// A reviewer's KIS patient search in the console (the identifier
    /// searched is the sealed reason).
    PatientSearch,
}

impl Action {
    pub const ALL: [Action; 26] = [
        Action::ConversationLink,
        Action::ConversationUnlink,
        Action::ConversationDismiss,
        Action::QuarantineResolve,
        Action::QuarantineRelease,
        Action::QuarantineDismiss,
        Action::QuarantineView,
        Action::QuarantineRedact,
        Action::Replay,
        Action::SigningKeyRevoke,
        Action::SigningKeyRotate,
        Action::AtRestKeyRotate,
        Action::ProofExport,
        Action::ConfigChange,
        Action::QuarantineShow,
        Action::DeadLetterShow,
        Action::DeadLetterPurge,
        Action::DeletionRetry,
        Action::Import,
        Action::LogRollbackAccept,
        Action::BackupCreate,
        Action::BackupRestore,
        Action::SchemaMigrate,
        Action::ConsoleLogin,
        Action::ConsoleLogout,
        Action::PatientSearch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::ConversationLink => "conversation.link",
            Action::ConversationUnlink => "conversation.unlink",
            Action::ConversationDismiss => "conversation.dismiss",
            Action::QuarantineResolve => "quarantine.resolve",
            Action::QuarantineRelease => "quarantine.release",
            Action::QuarantineDismiss => "quarantine.dismiss",
            Action::QuarantineView => "quarantine.view",
            Action::QuarantineRedact => "quarantine.redact",
            Action::Replay => "replay",
            Action::SigningKeyRevoke => "signing-key.revoke",
            Action::SigningKeyRotate => "signing-key.rotate",
            Action::AtRestKeyRotate => "at-rest-key.rotate",
            Action::ProofExport => "proof.export",
            Action::ConfigChange => "config.change",
            Action::QuarantineShow => "quarantine.show",
            Action::DeadLetterShow => "dlq.show",
            Action::DeadLetterPurge => "dlq.purge",
            Action::DeletionRetry => "deletion.retry",
            Action::Import => "import",
            Action::LogRollbackAccept => "log.accept-rollback",
            Action::BackupCreate => "backup.create",
            Action::BackupRestore => "backup.restore",
            Action::SchemaMigrate => "store.migrate",
            Action::ConsoleLogin => "console.login",
            Action::ConsoleLogout => "console.logout",
            Action::PatientSearch => "patient.search",
        }
    }
}

/// One row as the chain covers it. `reason_digest` is a keyed token of
/// the reason (the reason itself is kept sealed beside it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    pub seq: i64,
    /// Unix milliseconds.
    pub at: i64,
    pub actor: String,
    pub action: String,
    /// Opaque ids, space-separated (`item 3fa9…`, `key 1a2b3c4d`).
    pub target: String,
    pub reason_digest: Option<String>,
    #[serde(with = "hex_bytes")]
    pub prev_hash: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub hash: Vec<u8>,
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
}

/// The `prev_hash` of the first row.
pub const GENESIS: [u8; 32] = [0; 32];

/// `SHA-256("chartbridge/audit/v1\0" || prev_hash || canonical)`, where
/// the canonical row is seq and at (i64, big-endian), then actor, action,
/// target and the reason digest (empty when none), each preceded by its
/// length (u64, big-endian), then a byte 1 or 0 for whether there is a
/// reason.
pub fn chain_hash(
    prev_hash: &[u8],
    seq: i64,
    at: i64,
    actor: &str,
    action: &str,
    target: &str,
    reason_digest: Option<&str>,
) -> Vec<u8> {
    let mut h = Sha256::new()
        .chain_update(b"chartbridge/audit/v1\0")
        .chain_update(prev_hash)
        .chain_update(seq.to_be_bytes())
        .chain_update(at.to_be_bytes());
    for s in [actor, action, target, reason_digest.unwrap_or("")] {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    }
    h.update([u8::from(reason_digest.is_some())]);
    h.finalize().to_vec()
}

/// Why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("audit trail gap: rows {from}..={to} are missing (deleted)")]
    Gap { from: i64, to: i64 },
    #[error(
        "audit trail row {seq} does not follow row {prev}: its prev_hash differs (a row was removed or replaced)"
    )]
    Broken { seq: i64, prev: i64 },
    #[error("audit trail row {seq} was changed: its hash does not match its content")]
    Changed { seq: i64 },
}

/// The head of a verified chain: how many rows, and the last hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub rows: i64,
    pub seq: i64,
    pub hash: Vec<u8>,
}

/// Checks `rows` (ascending `seq`) form one unbroken chain from row 1.
pub fn verify(rows: &[Row]) -> Result<Head, ChainError> {
    let mut prev_seq = 0;
    let mut prev_hash = GENESIS.to_vec();
    for r in rows {
        if r.seq != prev_seq + 1 {
            return Err(ChainError::Gap {
                from: prev_seq + 1,
                to: r.seq - 1,
            });
        }
        if r.prev_hash != prev_hash {
            return Err(ChainError::Broken {
                seq: r.seq,
                prev: prev_seq,
            });
        }
        let expected = chain_hash(
            &r.prev_hash,
            r.seq,
            r.at,
            &r.actor,
            &r.action,
            &r.target,
            r.reason_digest.as_deref(),
        );
        if expected != r.hash {
            return Err(ChainError::Changed { seq: r.seq });
        }
        prev_seq = r.seq;
        prev_hash = r.hash.clone();
    }
    Ok(Head {
        rows: rows.len() as i64,
        seq: prev_seq,
        hash: prev_hash,
    })
}

/// What to append: the store fills seq, time and the chain.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub actor: &'a Actor,
    pub action: Action,
    pub target: String,
    /// Free text that may carry patient data: kept sealed.
    pub reason: Option<&'a str>,
}

#[cfg(test)]
mod tests;
