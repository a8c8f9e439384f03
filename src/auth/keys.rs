//! Gateway signatures: HMAC-SHA256 (RFC 2104) over the exact payload bytes
//! under a key named by its key id, carried in the AMQP header
//! `x-chartbridge-signature: kid=<key id>,sig=<64 hex digits>`.
//! Several keys may be valid at once (rotation: add the new key, move the
//! gateway to it, remove the old one).

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use hmac::{KeyInit, Mac};

use super::config::IntakeConfig;

/// AMQP header of the gateway signature.
pub const SIGNATURE_HEADER: &str = "x-chartbridge-signature";
/// Shortest accepted key, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("intake key {kid}: cannot read {path}: {error}")]
    Read {
        kid: String,
        path: String,
        error: std::io::Error,
    },
    #[error("intake key {kid}: {path} is readable by group or others (chmod 600)")]
    Permissions { kid: String, path: String },
    #[error("intake key {kid}: not base64 of at least {MIN_KEY_BYTES} bytes")]
    Format { kid: String },
}

/// Why a signature was not accepted; names no value of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is not kid=<key id>,sig=<hex>")]
    Malformed,
    #[error("the signature names an unknown key id")]
    UnknownKey,
    #[error("the signing key may not sign for this source")]
    WrongSource,
    #[error("the signature does not match the payload")]
    Mismatch,
}

struct GatewayKey {
    secret: Vec<u8>,
    sources: Vec<String>,
}

/// The keys of `[intake.keys]`, loaded from their files.
#[derive(Default)]
pub struct Keyring {
    keys: BTreeMap<String, GatewayKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.keys()).finish()
    }
}

impl Keyring {
    /// Reads every key file; refuses unreadable, short or shared ones.
    pub fn load(config: &IntakeConfig) -> Result<Self, KeyError> {
        let mut keys = BTreeMap::new();
        for (kid, key) in &config.keys {
            let secret = read_key(kid, &key.file)?;
            keys.insert(
                kid.clone(),
                GatewayKey {
                    secret,
                    sources: key.sources.clone(),
                },
            );
        }
        Ok(Self { keys })
    }

    /// The header value for `payload` signed with `kid`; `None` for an
    /// unknown key id.
    pub fn sign(&self, kid: &str, payload: &[u8]) -> Option<String> {
        self.keys
            .get(kid)
            .map(|k| signature_header(kid, &k.secret, payload))
    }

    /// Checks `header` against `payload` for a message of `source`, in
    /// constant time for the MAC comparison.
    pub fn verify(&self, header: &str, payload: &[u8], source: &str) -> Result<(), SignatureError> {
        let (kid, sig) = parse_header(header).ok_or(SignatureError::Malformed)?;
        let key = self.keys.get(kid).ok_or(SignatureError::UnknownKey)?;
        let mut mac =
            HmacSha256::new_from_slice(&key.secret).map_err(|_| SignatureError::Mismatch)?;
        mac.update(payload);
        mac.verify_slice(&sig)
            .map_err(|_| SignatureError::Mismatch)?;
        if !key.sources.iter().any(|s| s == source) {
            return Err(SignatureError::WrongSource);
        }
        Ok(())
    }
}

/// `kid=<kid>,sig=<hex HMAC-SHA256(key, payload)>`: what a gateway sends.
pub fn signature_header(kid: &str, key: &[u8], payload: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(payload);
    format!("kid={kid},sig={}", hex::encode(mac.finalize().into_bytes()))
}

fn parse_header(header: &str) -> Option<(&str, Vec<u8>)> {
    let (mut kid, mut sig) = (None, None);
    for part in header.trim().split(',') {
        match part.trim().split_once('=')? {
            ("kid", v) if kid.is_none() && !v.is_empty() => kid = Some(v),
            ("sig", v) if sig.is_none() => sig = Some(hex::decode(v).ok()?),
            _ => return None,
        }
    }
    Some((kid?, sig?))
}

fn read_key(kid: &str, path: &Path) -> Result<Vec<u8>, KeyError> {
    let shown = path.display().to_string();
    let read = |error| KeyError::Read {
        kid: kid.to_owned(),
        path: shown.clone(),
        error,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(read)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                kid: kid.to_owned(),
                path: shown,
            });
        }
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .filter(|k| k.len() >= MIN_KEY_BYTES)
        .ok_or_else(|| KeyError::Format {
            kid: kid.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        let mut keys = BTreeMap::new();
        for (kid, byte, source) in [
            ("wa-1", 1u8, "whatsapp"),
            ("wa-2", 2, "whatsapp"),
            ("mx-1", 3, "matrix"),
        ] {
            keys.insert(
                kid.to_owned(),
                GatewayKey {
                    secret: vec![byte; 32],
                    sources: vec![source.to_owned()],
                },
            );
        }
        Keyring { keys }
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let header = signature_header("k", b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            header,
            "kid=k,sig=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn signatures_bind_body_key_and_source() {
        let ring = ring();
        let body = br#"{"schema":"chartbridge.deletion-receipt/v1"}"#;
        // Both keys of a rotation are accepted.
        for kid in ["wa-1", "wa-2"] {
            let h = ring.sign(kid, body).unwrap();
            assert_eq!(ring.verify(&h, body, "whatsapp"), Ok(()));
        }
        let h = ring.sign("wa-1", body).unwrap();
        assert_eq!(
            ring.verify(&h, b"{}", "whatsapp"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            ring.verify(&h, body, "matrix"),
            Err(SignatureError::WrongSource)
        );
        let forged = signature_header("wa-1", &[9; 32], body);
        assert_eq!(
            ring.verify(&forged, body, "whatsapp"),
            Err(SignatureError::Mismatch)
        );
        let unknown = signature_header("old", &[1; 32], body);
        assert_eq!(
            ring.verify(&unknown, body, "whatsapp"),
            Err(SignatureError::UnknownKey)
        );
        for bad in [
            "",
            "kid=wa-1",
            "sig=00",
            "kid=wa-1,sig=zz",
            "kid=wa-1,sig=00,x=1",
            "kid=,sig=00",
        ] {
            assert_eq!(
                ring.verify(bad, body, "whatsapp"),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn key_files_are_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k");
        let key = |file: &Path| IntakeConfig {
            keys: [(
                "k".to_owned(),
                super::super::config::IntakeKey {
                    file: file.to_owned(),
                    sources: vec!["whatsapp".into()],
                },
            )]
            .into(),
            ..Default::default()
        };
        std::fs::write(
            &file,
            base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Keyring::load(&key(&file)),
            Err(KeyError::Permissions { .. })
        ));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ring = Keyring::load(&key(&file)).unwrap();
        assert!(ring.sign("k", b"x").is_some());
        std::fs::write(
            &file,
            base64::engine::general_purpose::STANDARD.encode([7u8; 16]),
        )
        .unwrap();
        assert!(matches!(
            Keyring::load(&key(&file)),
            Err(KeyError::Format { .. })
        ));
        assert!(matches!(
            Keyring::load(&key(&dir.path().join("absent"))),
            Err(KeyError::Read { .. })
        ));
    }
}
