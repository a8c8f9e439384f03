//! Integrity proofs (DSK II.2, I.12): content hashes, the canonical leaf
//! record, the RFC 9162 Merkle log, signed checkpoints and proof bundles.
//! Everything here is pure except [`service`], the glue that signs
//! checkpoints, exports bundles and re-verifies the KIS through the store
//! (where the log's storage lives, [`crate::store`]) and the KIS client.

pub mod bundle;
pub mod checkpoint;
pub mod config;
pub mod leaf;
pub mod leaf_v2;
pub mod merkle;
pub mod note;
pub mod pseudonym;
pub mod service;

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Hashes of archived content: SHA-256 for the proof log and our extension,
/// SHA-1 because FHIR's `Attachment.hash` is SHA-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentHashes {
    pub sha256: [u8; 32],
    pub sha1: [u8; 20],
}

impl ContentHashes {
    pub fn of(content: &[u8]) -> Self {
        Self {
            sha256: Sha256::digest(content).into(),
            sha1: Sha1::digest(content).into(),
        }
    }

    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        let h = ContentHashes::of(b"abc");
        assert_eq!(
            h.sha256_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(h.sha1),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
