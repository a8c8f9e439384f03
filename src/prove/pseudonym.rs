//! Keyed tokens and per-leaf salts of `chartbridge-leaf/v2`
//! (docs/verification.md, "Leaf v2"): the proof log, which is never
//! purged, names no messenger id (a WhatsApp id embeds the sender's phone
//! number) and allows no dictionary check of short contents.
//!
//! Both keys come from the operator's key by HKDF-SHA256 with their own
//! `info` ([`TOKEN_INFO`], [`SALT_INFO`]), apart from the sealing key:
//!
//! - `message-token = HMAC-SHA256(K_token, "<source>:<message_id>")`
//! - `salt = HMAC-SHA256(K_salt, message-token)` (32 bytes, per leaf)
//! - `hmac(bytes) = HMAC-SHA256(salt, SHA-256(bytes))`
//!
//! A proof bundle carries the salt, so whoever holds the bundle and the
//! content (or only its SHA-256) can check the leaf; the log alone reveals
//! neither the message nor the content.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::event::MessageKey;

/// HKDF `info` of the message-token key.
pub const TOKEN_INFO: &str = "proof-leaf/message-token/v2";
/// HKDF `info` of the per-leaf salt key.
pub const SALT_INFO: &str = "proof-leaf/content-salt/v2";

/// The two keys of leaf v2, derived from the operator's key
/// ([`crate::seal::Sealer::proof_keys`]).
#[derive(Clone)]
pub struct ProofKeys {
    token: [u8; 32],
    salt: [u8; 32],
}

impl std::fmt::Debug for ProofKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProofKeys(***)")
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

impl ProofKeys {
    /// From the derived keys (`HKDF(key, TOKEN_INFO)`, `HKDF(key, SALT_INFO)`).
    pub fn new(token: [u8; 32], salt: [u8; 32]) -> Self {
        Self { token, salt }
    }

    /// `HMAC-SHA256(K_token, "<source>:<message_id>")`.
    pub fn message_token(&self, key: &MessageKey) -> [u8; 32] {
        hmac(&self.token, &[key.to_string().as_bytes()])
    }

    /// The per-leaf salt of a message token, `HMAC-SHA256(K_salt, token)`.
    pub fn salt(&self, message_token: &[u8; 32]) -> [u8; 32] {
        hmac(&self.salt, &[message_token])
    }
}

/// `HMAC-SHA256(salt, sha256)`: the keyed content hash of a leaf v2, from
/// the content's SHA-256.
pub fn salted(salt: &[u8; 32], sha256: &[u8; 32]) -> [u8; 32] {
    hmac(salt, &[sha256])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2_and_separation() {
        // RFC 4231 test case 2: key "Jefe".
        assert_eq!(
            hex::encode(hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"])),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let keys = ProofKeys::new([1; 32], [2; 32]);
        let key = MessageKey {
            source: "whatsapp".into(),
            message_id: "wamid.X".into(),
        };
        let token = keys.message_token(&key);
        assert_eq!(token, hmac(&[1; 32], &[b"whatsapp:wamid.X"]));
        assert_ne!(keys.salt(&token), token);
        assert_ne!(
            ProofKeys::new([3; 32], [2; 32]).message_token(&key),
            token,
            "another key, another token"
        );
    }
}
