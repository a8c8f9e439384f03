//! Encryption at rest (DSK I.3, I.10): everything chartbridge keeps locally
//! that could carry content or direct identifiers (quarantined messages,
//! pending deletion commands) is sealed with ChaCha20-Poly1305 under a key
//! the operator holds in a separate file, never in the database.

use std::path::Path;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} must hold 32 bytes in base64")]
    BadKey { path: String },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("sealed data is damaged or was sealed with another key")]
    Open,
}

/// Seals and opens local data with the operator's key.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    pepper: [u8; 32],
    kdf: hkdf::Hkdf<Sha256>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    pub fn from_key(key: [u8; 32]) -> Self {
        let pepper: [u8; 32] = Sha256::new()
            .chain_update(b"chartbridge/pepper/v1\0")
            .chain_update(key)
            .finalize()
            .into();
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            pepper,
            kdf: hkdf::Hkdf::<Sha256>::new(Some(b"chartbridge/derive/v1"), &key),
        }
    }

    /// A 32-byte key for another local store, derived from the operator's
    /// key with HKDF-SHA256 (RFC 5869; salt `chartbridge/derive/v1`, `info`
    /// names the use, e.g. `matrix-crypto-store/v1`). The same key file and
    /// `info` always give the same key; different `info`s are independent.
    pub fn derive(&self, info: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        self.kdf
            .expand(info.as_bytes(), &mut out)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    /// The keys of proof leaf v2 (`crate::prove::pseudonym`), derived
    /// with HKDF apart from the sealing key and the token pepper.
    pub fn proof_keys(&self) -> crate::prove::pseudonym::ProofKeys {
        use crate::prove::pseudonym::{ProofKeys, SALT_INFO, TOKEN_INFO};
        ProofKeys::new(self.derive(TOKEN_INFO), self.derive(SALT_INFO))
    }

    pub fn load(path: &Path) -> Result<Self, SealError> {
        let text = std::fs::read_to_string(path).map_err(|source| SealError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let bad = || SealError::BadKey {
            path: path.display().to_string(),
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| bad())?;
        Ok(Self::from_key(bytes.try_into().map_err(|_| bad())?))
    }

    /// Writes a new random key readable by the owner only; refuses to
    /// overwrite an existing file.
    pub fn generate_key_file(path: &Path) -> Result<(), SealError> {
        use std::io::Write;
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let write_err = |source| SealError::Write {
            path: path.display().to_string(),
            source,
        };
        let mut file = options.open(path).map_err(write_err)?;
        writeln!(
            file,
            "{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        )
        .map_err(write_err)
    }

    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .expect("ChaCha20-Poly1305 encryption does not fail for in-memory buffers");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| SealError::Open)
    }

    /// A keyed, one-way token for a direct identifier (a conversation id),
    /// so link tables can be looked up without storing the identifier.
    pub fn token(&self, parts: &[&str]) -> String {
        let mut h = Sha256::new().chain_update(self.pepper);
        for p in parts {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_are_stable_and_independent() {
        let a = Sealer::from_key([7; 32]);
        let b = Sealer::from_key([8; 32]);
        assert_eq!(a.derive("x/v1"), Sealer::from_key([7; 32]).derive("x/v1"));
        assert_ne!(a.derive("x/v1"), a.derive("y/v1"));
        assert_ne!(a.derive("x/v1"), b.derive("x/v1"));
        // Neither the key itself nor the pepper.
        assert_ne!(a.derive("x/v1"), [7; 32]);
        assert_ne!(a.derive("x/v1"), a.pepper);
    }

    #[test]
    fn seal_round_trip_and_tamper() {
        let s = Sealer::from_key([7; 32]);
        let sealed = s.seal(b"Befund: Wunde reizlos");
        assert!(!sealed.windows(5).any(|w| w == b"Wunde"));
        assert_eq!(s.open(&sealed).unwrap(), b"Befund: Wunde reizlos");
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(s.open(&bad).is_err());
        assert!(Sealer::from_key([8; 32]).open(&sealed).is_err());
    }

    #[test]
    fn key_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        Sealer::generate_key_file(&path).unwrap();
        assert!(Sealer::generate_key_file(&path).is_err());
        let a = Sealer::load(&path).unwrap();
        assert_eq!(
            a.token(&["whatsapp", "4917"]),
            Sealer::load(&path).unwrap().token(&["whatsapp", "4917"])
        );
        assert_ne!(a.token(&["whatsapp", "4917"]), a.token(&["whatsapp4917"]));
    }
}
