//! The end-to-end-encryption marker the Matrix source adds, and
//! encrypted attachments (`EncryptedFile`).

use super::*;

/// The member the Matrix source (`chartbridge matrix-source` with
/// `matrix.e2ee`) adds to the events it decrypted or could not decrypt; it
/// removes any member of that name from events as the homeserver sent
/// them, so only the source sets it.
pub const E2EE_MARKER: &str = "chartbridge_e2ee";

/// What the source's [`E2EE_MARKER`] says, all absent on plain events:
/// `{"algorithm", "verification", "hold"?, "undecryptable"?, "supersedes"?}`.
#[derive(Default)]
pub(super) struct E2ee {
    /// The sender device's verification state (`verified`,
    /// `unverified_identity`, `unsigned_device`, ...).
    pub(super) verification: Option<String>,
    /// The trust policy refused the device: the policy's name.
    pub(super) hold: Option<String>,
    /// The still-encrypted event after the wait for its keys.
    pub(super) undecryptable: bool,
    /// A decrypted copy of an event held `undecryptable` earlier.
    pub(super) supersedes: bool,
    /// Decrypted by the source (the marker is present, and the event is
    /// not the still-encrypted one).
    pub(super) decrypted: bool,
}

impl E2ee {
    pub(super) fn of(raw: &Value) -> Self {
        let m = &raw[E2EE_MARKER];
        Self {
            verification: m["verification"].as_str().map(str::to_owned),
            hold: m["hold"].as_str().map(str::to_owned),
            undecryptable: m["undecryptable"].as_bool() == Some(true),
            supersedes: m["supersedes"].as_str() == Some(Reason::Undecryptable.as_str()),
            decrypted: m.is_object() && m["undecryptable"].as_bool() != Some(true),
        }
    }
}

/// Unpadded (or padded) base64 in the standard or the URL-safe alphabet
/// (Matrix "Unpadded Base64"; JWK `k` is base64url).
pub(super) fn base64_any(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let s = s.trim_end_matches('=');
    STANDARD_NO_PAD
        .decode(s)
        .or_else(|_| URL_SAFE_NO_PAD.decode(s))
        .ok()
}

/// An `EncryptedFile` (v1.10 "Sending encrypted attachments"): `v` is
/// `v2`, `key` a JWK with `kty: oct`, `alg: A256CTR` and a 256-bit `k`,
/// `iv` 16 bytes, `hashes.sha256` of the ciphertext, `url` an `mxc://`
/// URI. The error names the member that is wrong.
pub(super) fn encrypted_file(file: &Value) -> Result<EncryptedAttachment, &'static str> {
    if file["v"].as_str() != Some("v2") {
        return Err("v");
    }
    let url = file["url"]
        .as_str()
        .filter(|u| u.starts_with("mxc://"))
        .ok_or("url")?;
    let jwk = &file["key"];
    if jwk["kty"].as_str() != Some("oct") || jwk["alg"].as_str() != Some("A256CTR") {
        return Err("key.alg");
    }
    let key = jwk["k"]
        .as_str()
        .and_then(base64_any)
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or("key.k")?;
    let iv = file["iv"]
        .as_str()
        .and_then(base64_any)
        .and_then(|k| <[u8; 16]>::try_from(k).ok())
        .ok_or("iv")?;
    let ciphertext_sha256 = file["hashes"]["sha256"]
        .as_str()
        .and_then(base64_any)
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or("hashes.sha256")?;
    Ok(EncryptedAttachment {
        url: url.to_owned(),
        key,
        iv,
        ciphertext_sha256,
    })
}
