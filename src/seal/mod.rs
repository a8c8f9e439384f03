//! Encryption at rest (DSK I.3, I.10): everything chartbridge keeps locally
//! that could carry content or direct identifiers (quarantined messages,
//! pending deletion commands) is sealed with ChaCha20-Poly1305 under a
//! keyring the operator holds in a separate file, never in the database.
//!
//! A sealed blob (version 2) is `0x02 || key id (4) || nonce (12) ||
//! ciphertext+tag`; its associated data binds it to its [`Place`] (table,
//! column, row), so a blob moved to another row does not open. Keys are
//! separated with HKDF-SHA256 (RFC 5869, salt `chartbridge/keyring/v2`)
//! from each key in the file: `at-rest-seal/v2` seals, `at-rest-key-id/v2`
//! names the key; lookup tokens (`lookup-token/v2`) and [`Sealer::derive`]
//! (its own salt) come from the root. Version-1 blobs (`0x01 || nonce || ciphertext`, sealed
//! with the raw key of a version-1 key file, no associated data) still
//! open until `keys rotate-at-rest` re-seals them. docs/key-management.md.

pub mod keyring;
mod place;

use std::path::Path;
use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use keyring::{KeyFile, TokenScheme};
pub use place::Place;

const V1: u8 = 1;
const V2: u8 = 2;
const NONCE_LEN: usize = 12;
const KEY_ID_LEN: usize = 4;
/// Salt of [`Sealer::derive`], used since version 1.
const SALT_DERIVE: &[u8] = b"chartbridge/derive/v1";
/// Salt of the keys this module derives for itself, so that no `info` given
/// to [`Sealer::derive`] can yield one of them.
const SALT: &[u8] = b"chartbridge/keyring/v2";
const INFO_SEAL: &str = "at-rest-seal/v2";
const INFO_KEY_ID: &str = "at-rest-key-id/v2";
const INFO_TOKEN: &str = "lookup-token/v2";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} must hold 32-byte keys in base64")]
    BadKey { path: String },
    #[error("key file {path}: {detail}")]
    KeyFile { path: String, detail: String },
    #[error(
        "key file {path} has mode {mode:03o}: group or others may access it; \
         allow the owner only (chmod 600)"
    )]
    Permissions { path: String, mode: u32 },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("sealed data in {place} is not a sealed blob of a known version")]
    Format { place: String },
    #[error("sealed data in {place} was sealed under key {key_id}, which is not in the keyring")]
    UnknownKey { place: String, key_id: String },
    #[error(
        "sealed data in {place} does not open: it belongs to another row or column, \
         or it is damaged"
    )]
    Open { place: String },
}

/// A key id: the first 4 bytes of an HKDF output of the key, 8 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    /// The 4 bytes a version-2 blob carries after its version byte.
    pub fn bytes(&self) -> [u8; KEY_ID_LEN] {
        self.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

struct AtRestKey {
    id: KeyId,
    cipher: ChaCha20Poly1305,
}

struct Keyring {
    /// File order; the last seals.
    keys: Vec<AtRestKey>,
    /// The raw root key of a version-1 key file: opens version-1 blobs.
    v1: Option<ChaCha20Poly1305>,
    pepper: Zeroizing<[u8; 32]>,
    root_kdf: Hkdf<Sha256>,
}

/// Seals and opens local data with the operator's keyring. Cheap to clone.
#[derive(Clone)]
pub struct Sealer {
    ring: Arc<Keyring>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

fn expand(kdf: &Hkdf<Sha256>, info: &str) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    kdf.expand(info.as_bytes(), out.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

fn at_rest_key(raw: &[u8; 32]) -> AtRestKey {
    let kdf = Hkdf::<Sha256>::new(Some(SALT), raw);
    let id = expand(&kdf, INFO_KEY_ID);
    AtRestKey {
        id: KeyId(id[..KEY_ID_LEN].try_into().expect("4 bytes")),
        cipher: ChaCha20Poly1305::new(Key::from_slice(expand(&kdf, INFO_SEAL).as_ref())),
    }
}

impl Sealer {
    /// A keyring of one version-1 key: what a version-1 key file holds.
    pub fn from_key(key: [u8; 32]) -> Self {
        Self::from_file(&KeyFile {
            tokens: TokenScheme::V1Pepper,
            keys: vec![key],
        })
        .expect("one key, no duplicate ids")
    }

    /// The keyring of a parsed key file. Fails when two keys share an id.
    pub fn from_file(file: &KeyFile) -> Result<Self, SealError> {
        let root = &file.keys[0];
        let keys: Vec<AtRestKey> = file.keys.iter().map(at_rest_key).collect();
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.id == k.id) {
                return Err(SealError::KeyFile {
                    path: String::new(),
                    detail: format!("key {} appears twice", k.id),
                });
            }
        }
        let root_kdf = Hkdf::<Sha256>::new(Some(SALT_DERIVE), root);
        let (v1, pepper) = match file.tokens {
            TokenScheme::V1Pepper => (
                Some(ChaCha20Poly1305::new(Key::from_slice(root))),
                Zeroizing::new(
                    Sha256::new()
                        .chain_update(b"chartbridge/pepper/v1\0")
                        .chain_update(root)
                        .finalize()
                        .into(),
                ),
            ),
            TokenScheme::Hkdf => (
                None,
                expand(&Hkdf::<Sha256>::new(Some(SALT), root), INFO_TOKEN),
            ),
        };
        Ok(Self {
            ring: Arc::new(Keyring {
                keys,
                v1,
                pepper,
                root_kdf,
            }),
        })
    }

    /// Loads the key file at `path` (refused when its group or others may
    /// access it).
    pub fn load(path: &Path) -> Result<Self, SealError> {
        Self::from_file(&KeyFile::read(path)?).map_err(|e| match e {
            SealError::KeyFile { detail, .. } => SealError::KeyFile {
                path: path.display().to_string(),
                detail,
            },
            e => e,
        })
    }

    /// Writes a new keyring with one random root key, readable by the owner
    /// only; refuses to overwrite an existing file.
    pub fn generate_key_file(path: &Path) -> Result<(), SealError> {
        KeyFile {
            tokens: TokenScheme::Hkdf,
            keys: vec![keyring::random_key()],
        }
        .write(path, true)
    }

    /// A 32-byte key for another local store, derived from the root key
    /// with HKDF-SHA256 (RFC 5869; salt `chartbridge/derive/v1`, `info`
    /// names the use, e.g. `matrix-crypto-store/v1`). The same key file and
    /// `info` always give the same key, across `keys rotate-at-rest` too;
    /// different `info`s are independent, and independent of the sealing
    /// and token keys (those use another salt).
    pub fn derive(&self, info: &str) -> [u8; 32] {
        *expand(&self.ring.root_kdf, info)
    }

    /// The keys of proof leaf v2 (`crate::prove::pseudonym`), derived
    /// with HKDF apart from the sealing key and the token pepper.
    pub fn proof_keys(&self) -> crate::prove::pseudonym::ProofKeys {
        use crate::prove::pseudonym::{ProofKeys, SALT_INFO, TOKEN_INFO};
        ProofKeys::new(self.derive(TOKEN_INFO), self.derive(SALT_INFO))
    }

    /// The key that seals new data.
    pub fn current_key_id(&self) -> KeyId {
        self.current().id
    }

    /// Every key id in the keyring, file order.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.ring.keys.iter().map(|k| k.id).collect()
    }

    fn current(&self) -> &AtRestKey {
        self.ring.keys.last().expect("a keyring has a key")
    }

    /// Prepares `plaintext` for the store, which seals it when it writes
    /// it and binds it to the row it writes (see [`Sealing::at`]).
    pub fn seal(&self, plaintext: &[u8]) -> Sealing {
        Sealing {
            sealer: self.clone(),
            plaintext: Zeroizing::new(plaintext.to_vec()),
        }
    }

    /// Seals `plaintext` under the current key, bound to `place`.
    pub fn seal_at(&self, place: &Place, plaintext: &[u8]) -> Vec<u8> {
        let key = self.current();
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = place.associated_data(&key.id.0);
        let ciphertext = key
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("ChaCha20-Poly1305 encryption does not fail for in-memory buffers");
        let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + ciphertext.len());
        out.push(V2);
        out.extend_from_slice(&key.id.0);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// The key id a blob names; `None` for a version-1 blob or no blob.
    pub fn key_id_of(sealed: &[u8]) -> Option<KeyId> {
        (sealed.len() > 1 + KEY_ID_LEN && sealed[0] == V2)
            .then(|| KeyId(sealed[1..1 + KEY_ID_LEN].try_into().expect("4 bytes")))
    }

    /// Opens a blob read from `place`. Errors name the place (table, column
    /// and an opaque row id), never content.
    pub fn open(&self, place: &Place, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let shown = || place.describe(self);
        match sealed.first() {
            Some(&V2) if sealed.len() >= 1 + KEY_ID_LEN + NONCE_LEN => {
                let id = &sealed[1..1 + KEY_ID_LEN];
                let key = self
                    .ring
                    .keys
                    .iter()
                    .find(|k| k.id.0 == id)
                    .ok_or_else(|| SealError::UnknownKey {
                        place: shown(),
                        key_id: hex::encode(id),
                    })?;
                let (nonce, ciphertext) = sealed[1 + KEY_ID_LEN..].split_at(NONCE_LEN);
                key.cipher
                    .decrypt(
                        Nonce::from_slice(nonce),
                        Payload {
                            msg: ciphertext,
                            aad: &place.associated_data(id),
                        },
                    )
                    .map_err(|_| SealError::Open { place: shown() })
            }
            Some(&V1) if sealed.len() > NONCE_LEN => {
                let cipher = self
                    .ring
                    .v1
                    .as_ref()
                    .ok_or_else(|| SealError::Format { place: shown() })?;
                let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
                cipher
                    .decrypt(Nonce::from_slice(nonce), ciphertext)
                    .map_err(|_| SealError::Open { place: shown() })
            }
            _ => Err(SealError::Format { place: shown() }),
        }
    }

    /// A keyed, one-way token for a direct identifier (a conversation id),
    /// so link tables can be looked up without storing the identifier.
    pub fn token(&self, parts: &[&str]) -> String {
        let mut h = Sha256::new().chain_update(self.ring.pepper.as_ref());
        for p in parts {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// Plaintext on its way into the store with the keyring that seals it.
/// The store seals it when it writes the row ([`Sealing::at`]): only the
/// store knows the table, column and row the blob is bound to.
#[derive(Clone)]
pub struct Sealing {
    sealer: Sealer,
    plaintext: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealing(***)")
    }
}

impl Sealing {
    /// The blob for `place`, sealed under the current key.
    pub fn at(&self, place: &Place) -> Vec<u8> {
        self.sealer.seal_at(place, &self.plaintext)
    }
}

#[cfg(test)]
mod tests;
