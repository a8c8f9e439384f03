//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519 keys, in
//! the key encodings of Go's `golang.org/x/mod/sumdb/note`.
//!
//! A note is a text ending in `\n`, a blank line, and signature lines
//! `— <name> <base64(4-byte key id || 64-byte Ed25519 signature)>\n`.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Signature type byte of Ed25519 keys.
pub const ALG_ED25519: u8 = 0x01;

/// Most signature lines [`open`] reads before rejecting a note.
pub const MAX_SIGNATURES: usize = 100;

const SIG_PREFIX: &str = "\u{2014} ";

/// Errors from keys, signing and opening notes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NoteError {
    /// The note text or signature block does not follow the format.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// A key name is empty or has a space or `+`.
    #[error("invalid key name {0:?}")]
    InvalidName(String),
    /// A signer or verifier key string does not parse or its key id does
    /// not match its key.
    #[error("malformed key: {0}")]
    MalformedKey(&'static str),
    /// No signature in the note is by a known key.
    #[error("note has no signature by a known key")]
    UnknownKey,
    /// A known key's signature does not verify.
    #[error("invalid signature for key {name}+{key_id:08x}")]
    BadSignature {
        /// Key name.
        name: String,
        /// Key id.
        key_id: u32,
    },
    /// Two verifiers share a name and key id.
    #[error("ambiguous key {name}+{key_id:08x}")]
    AmbiguousKey {
        /// Key name.
        name: String,
        /// Key id.
        key_id: u32,
    },
}

/// Whether `name` may name a key: non-empty, without Unicode spaces or `+`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || c == '+')
}

/// The key id `SHA-256(name || "\n" || 0x01 || public key)[..4]`, big-endian.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

fn parse_key_id(hex8: &str) -> Option<u32> {
    if hex8.len() != 8 || !hex8.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex8, 16).ok()
}

fn parse_ed25519_key(name: &str, hex8: &str, b64: &str) -> Result<(u32, [u8; 32]), NoteError> {
    if !is_valid_name(name) {
        return Err(NoteError::InvalidName(name.to_string()));
    }
    let id = parse_key_id(hex8).ok_or(NoteError::MalformedKey("key id is not 8 hex digits"))?;
    let raw = STANDARD
        .decode(b64)
        .map_err(|_| NoteError::MalformedKey("key is not base64"))?;
    let (&alg, key) = raw
        .split_first()
        .ok_or(NoteError::MalformedKey("key is empty"))?;
    if alg != ALG_ED25519 {
        return Err(NoteError::MalformedKey("unknown key algorithm"));
    }
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| NoteError::MalformedKey("Ed25519 key is not 32 bytes"))?;
    Ok((id, key))
}

fn encode_key(key: &[u8; 32]) -> String {
    let mut raw = Vec::with_capacity(33);
    raw.push(ALG_ED25519);
    raw.extend_from_slice(key);
    STANDARD.encode(raw)
}

/// A note signing key.
#[derive(Clone)]
pub struct Signer {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer named `name` from a 32-byte Ed25519 seed (the caller draws
    /// the seed from a CSPRNG).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::InvalidName(name.to_string()));
        }
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(name, key.verifying_key().as_bytes());
        Ok(Self {
            name: name.to_string(),
            key_id,
            key,
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>`.
    pub fn parse(skey: &str) -> Result<Self, NoteError> {
        let rest = skey
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::MalformedKey(
                "signer key must start with PRIVATE+KEY+",
            ))?;
        let (name, rest) = rest.split_once('+').unwrap_or((rest, ""));
        let (hex8, b64) = rest.split_once('+').unwrap_or((rest, ""));
        let (id, seed) = parse_ed25519_key(name, hex8, b64)?;
        let signer = Self::from_seed(name, &seed)?;
        if signer.key_id != id {
            return Err(NoteError::MalformedKey("key id does not match key"));
        }
        Ok(signer)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The secret signer key string `PRIVATE+KEY+<name>+<id>+<base64>`.
    pub fn to_private_key_string(&self) -> String {
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id,
            encode_key(self.key.as_bytes())
        )
    }

    fn signature_line(&self, text: &str) -> String {
        let sig = self.key.sign(text.as_bytes());
        let mut raw = Vec::with_capacity(68);
        raw.extend_from_slice(&self.key_id.to_be_bytes());
        raw.extend_from_slice(&sig.to_bytes());
        format!("{SIG_PREFIX}{} {}\n", self.name, STANDARD.encode(raw))
    }
}

/// A note verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl Verifier {
    /// Parses `<name>+<hex key id>+<base64(0x01 || public key)>`.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let (name, rest) = vkey.split_once('+').unwrap_or((vkey, ""));
        let (hex8, b64) = rest.split_once('+').unwrap_or((rest, ""));
        let (id, key) = parse_ed25519_key(name, hex8, b64)?;
        let verifier = Self::from_public_key(name, &key)?;
        if verifier.key_id != id {
            return Err(NoteError::MalformedKey("key id does not match key"));
        }
        Ok(verifier)
    }

    /// A verifier named `name` for a 32-byte Ed25519 public key.
    pub fn from_public_key(name: &str, key: &[u8; 32]) -> Result<Self, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::InvalidName(name.to_string()));
        }
        let key = VerifyingKey::from_bytes(key)
            .map_err(|_| NoteError::MalformedKey("not an Ed25519 public key"))?;
        Ok(Self {
            name: name.to_string(),
            key_id: key_id(name, key.as_bytes()),
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The key id as 8 lowercase hex digits.
    pub fn key_id_hex(&self) -> String {
        format!("{:08x}", self.key_id)
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Whether `sig` is a valid Ed25519 signature of `msg` by this key.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        Signature::from_slice(sig).is_ok_and(|s| self.key.verify_strict(msg, &s).is_ok())
    }
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            encode_key(self.key.as_bytes())
        )
    }
}

/// The name and key id on a signature line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyRef {
    /// Key name.
    pub name: String,
    /// Key id.
    pub key_id: u32,
}

/// An opened note: its text and which signatures were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedNote {
    /// The signed text, including its final newline.
    pub text: String,
    /// Keys whose signatures verified, in note order, without repeats.
    pub verified: Vec<KeyRef>,
    /// Signatures by keys not among the verifiers (ignored, per the spec).
    pub unverified: Vec<KeyRef>,
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed("control character"));
    }
    Ok(())
}

/// Signs `text` (which must end in `\n`) with every signer.
pub fn sign(text: &str, signers: &[&Signer]) -> Result<String, NoteError> {
    check_text(text)?;
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("text must end with a newline"));
    }
    if signers.is_empty() {
        return Err(NoteError::Malformed("no signers"));
    }
    let mut out = format!("{text}\n");
    for signer in signers {
        out.push_str(&signer.signature_line(text));
    }
    Ok(out)
}

fn parse_signature_line(line: &str) -> Result<SignatureLine, NoteError> {
    let rest = line.strip_prefix(SIG_PREFIX).ok_or(NoteError::Malformed(
        "signature line must start with an em dash",
    ))?;
    let (name, b64) = rest.split_once(' ').unwrap_or((rest, ""));
    let raw = STANDARD
        .decode(b64)
        .map_err(|_| NoteError::Malformed("signature is not base64"))?;
    if !is_valid_name(name) || raw.len() < 5 {
        return Err(NoteError::Malformed("bad signature line"));
    }
    let key_id = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let key = KeyRef {
        name: name.to_string(),
        key_id,
    };
    Ok((key, raw[4..].to_vec()))
}

type SignatureLine = (KeyRef, Vec<u8>);

fn split_note(note: &str) -> Result<(&str, Vec<SignatureLine>), NoteError> {
    check_text(note)?;
    let split = note
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("no blank line before signatures"))?;
    let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
    let sigs = sigs
        .strip_suffix('\n')
        .ok_or(NoteError::Malformed("signatures must end with a newline"))?;
    let mut parsed = Vec::new();
    for line in sigs.split('\n') {
        if parsed.len() >= MAX_SIGNATURES {
            return Err(NoteError::Malformed("too many signatures"));
        }
        parsed.push(parse_signature_line(line)?);
    }
    Ok((text, parsed))
}

/// The text of a well-formed note, without checking any signature.
pub fn note_text(note: &str) -> Result<&str, NoteError> {
    split_note(note).map(|(text, _)| text)
}

/// Opens a note: parses it, verifies every signature by a known key and
/// requires at least one. A known key's failing signature rejects the note.
pub fn open(note: &str, verifiers: &[Verifier]) -> Result<OpenedNote, NoteError> {
    let (text, sigs) = split_note(note)?;
    let mut opened = OpenedNote {
        text: text.to_string(),
        verified: Vec::new(),
        unverified: Vec::new(),
    };
    for (key, sig) in sigs {
        let matching: Vec<&Verifier> = verifiers
            .iter()
            .filter(|v| v.name == key.name && v.key_id == key.key_id)
            .collect();
        let verifier = match matching[..] {
            [] => {
                if !opened.unverified.contains(&key) {
                    opened.unverified.push(key);
                }
                continue;
            }
            [verifier] => verifier,
            _ => {
                return Err(NoteError::AmbiguousKey {
                    name: key.name,
                    key_id: key.key_id,
                });
            }
        };
        if opened.verified.contains(&key) {
            continue;
        }
        if !verifier.verify(text.as_bytes(), &sig) {
            return Err(NoteError::BadSignature {
                name: key.name,
                key_id: key.key_id,
            });
        }
        opened.verified.push(key);
    }
    if opened.verified.is_empty() {
        return Err(NoteError::UnknownKey);
    }
    Ok(opened)
}

#[cfg(test)]
#[path = "note_tests.rs"]
mod tests;
