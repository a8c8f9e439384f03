//! The at-rest key file: one key per line, the first the root (lookup
//! tokens and [`Sealer::derive`](super::Sealer::derive)), the last the key
//! that seals new data.
//!
//! ```text
//! # comments and blank lines are ignored
//! root <base64 32 bytes>      a keyring created by `keygen`
//! root-v1 <base64 32 bytes>   or: the key of a version-1 key file
//! key <base64 32 bytes>       each `keys rotate-at-rest` appends one
//! ```
//!
//! A version-1 file is the bare base64 key alone on its line; it reads as
//! `root-v1`. The file must be readable by its owner only.

use std::path::Path;

use base64::Engine;
use rand::RngCore;

use super::SealError;

/// How lookup tokens are keyed (docs/key-management.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenScheme {
    /// `SHA-256("chartbridge/pepper/v1\0" || root)`: the version-1 pepper,
    /// kept so that tokens written before the keyring stay valid.
    V1Pepper,
    /// HKDF-SHA256 of the root with info `lookup-token/v2`.
    Hkdf,
}

/// The parsed key file.
#[derive(Debug)]
pub struct KeyFile {
    pub tokens: TokenScheme,
    /// Raw keys in file order; `[0]` is the root, the last is current.
    pub keys: Vec<[u8; 32]>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn decode_key(text: &str, path: &Path) -> Result<[u8; 32], SealError> {
    let bad = || SealError::BadKey {
        path: path.display().to_string(),
    };
    b64()
        .decode(text)
        .map_err(|_| bad())?
        .try_into()
        .map_err(|_| bad())
}

impl KeyFile {
    pub fn parse(text: &str, path: &Path) -> Result<Self, SealError> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let malformed = |line: usize, why: &str| SealError::KeyFile {
            path: path.display().to_string(),
            detail: format!("key line {}: {why}", line + 1),
        };
        if let [only] = lines.as_slice()
            && !only.contains(' ')
        {
            return Ok(Self {
                tokens: TokenScheme::V1Pepper,
                keys: vec![decode_key(only, path)?],
            });
        }
        let mut tokens = None;
        let mut keys = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            let (role, key) = line
                .split_once(' ')
                .ok_or_else(|| malformed(i, "expected `ROLE BASE64`"))?;
            match (i, role) {
                (0, "root") => tokens = Some(TokenScheme::Hkdf),
                (0, "root-v1") => tokens = Some(TokenScheme::V1Pepper),
                (0, _) => return Err(malformed(i, "the first key must be `root` or `root-v1`")),
                (_, "key") => {}
                _ => {
                    return Err(malformed(
                        i,
                        "only the first key is a root; others are `key`",
                    ));
                }
            }
            keys.push(decode_key(key.trim(), path)?);
        }
        Ok(Self {
            tokens: tokens.ok_or_else(|| SealError::KeyFile {
                path: path.display().to_string(),
                detail: "no key".into(),
            })?,
            keys,
        })
    }

    pub fn render(&self) -> String {
        let mut out = String::from(
            "# chartbridge at-rest keyring (docs/key-management.md): the first key is the\n\
             # root of lookup tokens and derived keys, the last seals new data.\n",
        );
        for (i, k) in self.keys.iter().enumerate() {
            let role = match (i, self.tokens) {
                (0, TokenScheme::Hkdf) => "root",
                (0, TokenScheme::V1Pepper) => "root-v1",
                _ => "key",
            };
            out.push_str(&format!("{role} {}\n", b64().encode(k)));
        }
        out
    }

    /// Reads `path`, refusing a file that its group or others may access.
    pub fn read(path: &Path) -> Result<Self, SealError> {
        check_owner_only(path)?;
        let text = std::fs::read_to_string(path).map_err(|source| SealError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Writes `self` to `path`: a new file owner-only, replacing an
    /// existing one atomically (a temporary file beside it, then rename).
    pub fn write(&self, path: &Path, create_new: bool) -> Result<(), SealError> {
        use std::io::Write;
        let write_err = |source| SealError::Write {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("tmp");
        let target = if create_new { path } else { tmp.as_path() };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        if !create_new {
            let _ = std::fs::remove_file(&tmp);
        }
        let mut file = options.open(target).map_err(write_err)?;
        file.write_all(self.render().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(write_err)?;
        if !create_new {
            std::fs::rename(&tmp, path).map_err(write_err)?;
        }
        Ok(())
    }
}

/// A fresh random 32-byte key.
pub fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    key
}

/// Refuses a key file whose mode grants anything to group or others.
pub fn check_owner_only(path: &Path) -> Result<(), SealError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|source| SealError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SealError::Permissions {
                path: path.display().to_string(),
                mode,
            });
        }
    }
    Ok(())
}
