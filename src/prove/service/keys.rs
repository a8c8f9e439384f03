//! Signer key files and trusted-key files.

use std::io::Write;
use std::path::Path;

use rand::RngCore;

use super::ServiceError;
use crate::prove::checkpoint::KeyInfo;
use crate::prove::note::{Signer, Verifier};

fn read(path: &Path) -> Result<String, ServiceError> {
    std::fs::read_to_string(path).map_err(|e| ServiceError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Loads the checkpoint signer key (`PRIVATE+KEY+…`) from `path`.
pub fn load_signer(path: &Path) -> Result<Signer, ServiceError> {
    crate::seal::keyring::check_owner_only(path).map_err(|e| ServiceError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Signer::parse(read(path)?.trim()).map_err(|e| ServiceError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Draws a new Ed25519 signer named `name` and writes it to `path`,
/// readable by the owner only; refuses to overwrite an existing file.
pub fn generate_signer_file(name: &str, path: &Path) -> Result<Signer, ServiceError> {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let signer =
        Signer::from_seed(name, &seed).map_err(|e| ServiceError::Request(e.to_string()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let write_err = |e: std::io::Error| ServiceError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut file = options.open(path).map_err(write_err)?;
    writeln!(file, "{}", signer.to_private_key_string()).map_err(write_err)?;
    Ok(signer)
}

/// Reads trusted keys: a JSON array of key entries (as in a bundle's
/// `keys`, with validity and revocation), or verifier keys one per line,
/// trusted without time limits.
pub fn load_trusted_keys(path: &Path) -> Result<Vec<KeyInfo>, ServiceError> {
    let text = read(path)?;
    let bad = |reason: String| ServiceError::File {
        path: path.display().to_string(),
        reason,
    };
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text).map_err(|e| bad(e.to_string()));
    }
    let keys = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            Verifier::parse(l)
                .map(|v| KeyInfo::new(&v, i64::MIN))
                .map_err(|e| bad(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(bad("no verifier key in the file".into()));
    }
    Ok(keys)
}
