//! C2SP tlog-checkpoints (<https://c2sp.org/tlog-checkpoint>) signed as
//! notes, and which signing keys are acceptable when (DSK I.5).
//!
//! The body is the standard three lines plus one optional extension line
//! `timestamp <unix millis>` holding the signing time; any further
//! extension lines are kept verbatim after it:
//!
//! ```text
//! <origin>
//! <tree size, decimal>
//! <base64 root hash>
//! timestamp <unix millis, decimal>
//! ```

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::merkle::Hash;
use super::note::{self, NoteError, OpenedNote, Signer, Verifier};

/// Prefix of the signing-time extension line.
pub const TIMESTAMP_PREFIX: &str = "timestamp ";

/// Errors from parsing, signing or verifying checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckpointError {
    /// The checkpoint body or note does not follow the format.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// The checkpoint has no `timestamp` line, so key validity is unknown.
    #[error("checkpoint has no timestamp line")]
    MissingTimestamp,
    /// A key entry is unusable.
    #[error("key {name:?} is invalid: {reason}")]
    InvalidKey {
        /// The entry's name.
        name: String,
        /// Why it is unusable.
        reason: String,
    },
    /// No valid signature by a given key, or a bad one.
    #[error("checkpoint signature: {0}")]
    Signature(NoteError),
    /// Every key that signed was revoked at or before the signing time.
    #[error(
        "key {name}+{key_id} was revoked at {revoked_at_ms} ms, checkpoint signed at {signed_at_ms} ms"
    )]
    KeyRevoked {
        /// Key name.
        name: String,
        /// Key id (hex).
        key_id: String,
        /// Revocation time.
        revoked_at_ms: i64,
        /// Checkpoint signing time.
        signed_at_ms: i64,
    },
    /// Every key that signed was outside its validity at the signing time.
    #[error("key {name}+{key_id} was not valid at {signed_at_ms} ms")]
    KeyNotValid {
        /// Key name.
        name: String,
        /// Key id (hex).
        key_id: String,
        /// Checkpoint signing time.
        signed_at_ms: i64,
    },
}

/// A signed tree head: log origin, tree size, root and signing time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Log identity, first line.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 9162 root hash of the first `size` leaves.
    pub root: Hash,
    /// Signing time in Unix milliseconds (`timestamp` extension line).
    pub timestamp_ms: Option<i64>,
    /// Other extension lines, verbatim, after the timestamp line.
    pub extensions: Vec<String>,
}

fn valid_line(line: &str) -> bool {
    !line.is_empty() && !line.chars().any(|c| c < ' ')
}

fn parse_decimal(s: &str) -> Option<u64> {
    let canonical = s == "0" || (!s.starts_with('0') && !s.is_empty());
    if !canonical || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl Checkpoint {
    /// A checkpoint with a signing time and no other extension lines.
    pub fn new(origin: &str, size: u64, root: Hash, timestamp_ms: i64) -> Self {
        Self {
            origin: origin.to_string(),
            size,
            root,
            timestamp_ms: Some(timestamp_ms),
            extensions: Vec::new(),
        }
    }

    /// The note body (text to sign).
    pub fn to_body(&self) -> String {
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        );
        if let Some(ts) = self.timestamp_ms {
            body.push_str(&format!("{TIMESTAMP_PREFIX}{ts}\n"));
        }
        for line in &self.extensions {
            body.push_str(line);
            body.push('\n');
        }
        body
    }

    /// Parses a body, accepting only the form [`Checkpoint::to_body`] writes.
    pub fn parse(body: &str) -> Result<Self, CheckpointError> {
        let lines = body
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("body must end with a newline"))?;
        let lines: Vec<&str> = lines.split('\n').collect();
        let [origin, size, root, ext @ ..] = &lines[..] else {
            return Err(CheckpointError::Malformed("fewer than three lines"));
        };
        if !lines.iter().all(|l| valid_line(l)) {
            return Err(CheckpointError::Malformed(
                "empty line or control character",
            ));
        }
        let size = parse_decimal(size).ok_or(CheckpointError::Malformed("bad tree size"))?;
        let raw = STANDARD
            .decode(root)
            .map_err(|_| CheckpointError::Malformed("root hash is not base64"))?;
        let root: Hash = raw
            .try_into()
            .map_err(|_| CheckpointError::Malformed("root hash is not 32 bytes"))?;
        let (timestamp_ms, rest) = match ext.split_first() {
            Some((line, rest)) if line.starts_with(TIMESTAMP_PREFIX) => {
                let ts = parse_decimal(&line[TIMESTAMP_PREFIX.len()..])
                    .and_then(|v| i64::try_from(v).ok())
                    .ok_or(CheckpointError::Malformed("bad timestamp"))?;
                (Some(ts), rest)
            }
            _ => (None, ext),
        };
        if rest.iter().any(|l| l.starts_with(TIMESTAMP_PREFIX)) {
            return Err(CheckpointError::Malformed(
                "misplaced or repeated timestamp",
            ));
        }
        let checkpoint = Self {
            origin: origin.to_string(),
            size,
            root,
            timestamp_ms,
            extensions: rest.iter().map(|l| l.to_string()).collect(),
        };
        if checkpoint.to_body() != body {
            return Err(CheckpointError::Malformed("not in canonical form"));
        }
        Ok(checkpoint)
    }

    /// Signs the body as a note.
    pub fn sign(&self, signers: &[&Signer]) -> Result<String, CheckpointError> {
        if !valid_line(&self.origin) || self.extensions.iter().any(|l| !valid_line(l)) {
            return Err(CheckpointError::Malformed(
                "empty line or control character",
            ));
        }
        note::sign(&self.to_body(), signers).map_err(CheckpointError::Signature)
    }

    /// Parses a signed checkpoint note without checking signatures.
    pub fn from_note_unverified(note: &str) -> Result<Self, CheckpointError> {
        let text = note::note_text(note).map_err(|e| match e {
            NoteError::Malformed(why) => CheckpointError::Malformed(why),
            other => CheckpointError::Signature(other),
        })?;
        Self::parse(text)
    }
}

/// Opens a signed checkpoint with the given verifiers (no key-time policy).
pub fn open_checkpoint(
    note: &str,
    verifiers: &[Verifier],
) -> Result<(Checkpoint, OpenedNote), CheckpointError> {
    let checkpoint = Checkpoint::from_note_unverified(note)?;
    let opened = note::open(note, verifiers).map_err(CheckpointError::Signature)?;
    Ok((checkpoint, opened))
}

/// A published checkpoint key with its validity (DSK I.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyInfo {
    /// Key name (as on signature lines).
    pub name: String,
    /// Key id, 8 lowercase hex digits.
    pub key_id: String,
    /// Verifier key `<name>+<key id>+<base64(0x01 || public key)>`.
    pub verifier_key: String,
    /// Start of validity, Unix milliseconds (inclusive).
    pub valid_from_ms: i64,
    /// End of validity (exclusive); `None` while the key is current.
    #[serde(default)]
    pub valid_until_ms: Option<i64>,
    /// Revocation time: signatures on checkpoints timestamped at or after
    /// it are rejected.
    #[serde(default)]
    pub revoked_at_ms: Option<i64>,
}

/// Why a key does not vouch for a checkpoint signed at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRejection {
    /// Revoked at or before the signing time.
    Revoked,
    /// Signing time before `valid_from_ms` or at/after `valid_until_ms`.
    NotValid,
}

impl KeyInfo {
    /// Key info for `verifier`, valid from `valid_from_ms` with no end.
    pub fn new(verifier: &Verifier, valid_from_ms: i64) -> Self {
        Self {
            name: verifier.name().to_string(),
            key_id: verifier.key_id_hex(),
            verifier_key: verifier.to_string(),
            valid_from_ms,
            valid_until_ms: None,
            revoked_at_ms: None,
        }
    }

    /// The verifier, checking that `name` and `key_id` agree with the key.
    pub fn verifier(&self) -> Result<Verifier, CheckpointError> {
        let invalid = |reason: String| CheckpointError::InvalidKey {
            name: self.name.clone(),
            reason,
        };
        let verifier = Verifier::parse(&self.verifier_key).map_err(|e| invalid(e.to_string()))?;
        if verifier.name() != self.name || verifier.key_id_hex() != self.key_id {
            return Err(invalid("name or key_id differ from verifier_key".into()));
        }
        Ok(verifier)
    }

    /// Whether this key may vouch for a checkpoint signed at `signed_at_ms`:
    /// not revoked at or before it, and inside `[valid_from, valid_until)`.
    /// A rotated (expired, unrevoked) key still vouches for older checkpoints.
    pub fn check_signing_time(&self, signed_at_ms: i64) -> Result<(), KeyRejection> {
        if self.revoked_at_ms.is_some_and(|r| r <= signed_at_ms) {
            return Err(KeyRejection::Revoked);
        }
        let before = signed_at_ms < self.valid_from_ms;
        let after = self.valid_until_ms.is_some_and(|u| signed_at_ms >= u);
        if before || after {
            return Err(KeyRejection::NotValid);
        }
        Ok(())
    }
}

/// A checkpoint whose signature and key validity were verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// Signing time from the timestamp line.
    pub signed_at_ms: i64,
    /// Keys whose signatures verified and that were valid at that time.
    pub signed_by: Vec<KeyInfo>,
}

/// Verifies a signed checkpoint against `keys`: well-formed with a
/// timestamp, at least one signature by one of `keys` (a bad signature by
/// any of them rejects it), and at least one verifying key valid and
/// unrevoked at the timestamp.
pub fn verify_checkpoint(
    note: &str,
    keys: &[KeyInfo],
) -> Result<VerifiedCheckpoint, CheckpointError> {
    let checkpoint = Checkpoint::from_note_unverified(note)?;
    let signed_at_ms = checkpoint
        .timestamp_ms
        .ok_or(CheckpointError::MissingTimestamp)?;
    let verifiers = keys
        .iter()
        .map(KeyInfo::verifier)
        .collect::<Result<Vec<_>, _>>()?;
    let opened = note::open(note, &verifiers).map_err(CheckpointError::Signature)?;
    let mut signed_by = Vec::new();
    let mut first_rejection = None;
    for key in &opened.verified {
        let Some(info) = keys
            .iter()
            .find(|k| k.name == key.name && k.key_id == format!("{:08x}", key.key_id))
        else {
            continue;
        };
        match info.check_signing_time(signed_at_ms) {
            Ok(()) => signed_by.push(info.clone()),
            Err(r) => {
                let worse = r == KeyRejection::Revoked
                    && first_rejection
                        .as_ref()
                        .is_none_or(|(k, _)| *k != KeyRejection::Revoked);
                if first_rejection.is_none() || worse {
                    first_rejection = Some((r, info.clone()));
                }
            }
        }
    }
    if !signed_by.is_empty() {
        return Ok(VerifiedCheckpoint {
            checkpoint,
            signed_at_ms,
            signed_by,
        });
    }
    match first_rejection {
        Some((KeyRejection::Revoked, info)) => Err(CheckpointError::KeyRevoked {
            name: info.name,
            key_id: info.key_id,
            revoked_at_ms: info.revoked_at_ms.unwrap_or_default(),
            signed_at_ms,
        }),
        Some((KeyRejection::NotValid, info)) => Err(CheckpointError::KeyNotValid {
            name: info.name,
            key_id: info.key_id,
            signed_at_ms,
        }),
        None => Err(CheckpointError::Signature(NoteError::UnknownKey)),
    }
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod tests;
