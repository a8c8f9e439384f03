//! Secrets from files: `CHARTBRIDGE_SECTION__KEY_FILE=/path` reads a secret
//! value from a file, and systemd credentials (`LoadCredential=`, seen as
//! files in `$CREDENTIALS_DIRECTORY`) named by their dotted config path
//! (`kis.auth.client_secret`, `store.key_file`) set that key: a secret to
//! the file's content, a `*_file` path to the credential's path.

use std::path::Path;

use super::ConfigError;

/// The keys that hold a [`super::Secret`]; only these may come from a
/// file's content.
pub const SECRET_KEYS: &[&str] = &[
    "url",
    "token",
    "access_token",
    "admin_access_token",
    "app_secret",
    "bearer_token",
    "client_secret",
];

/// A secret file's content without its final line break.
fn read_secret(path: &Path, var: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Env {
        var: var.to_owned(),
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    Ok(text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text)
        .to_owned())
}

/// `CHARTBRIDGE_KIS__AUTH__CLIENT_SECRET_FILE=/p` → (`…CLIENT_SECRET`, content
/// of /p), when the key without `_FILE` is a secret; `None` otherwise (the
/// variable is an ordinary override, such as `CHARTBRIDGE_STORE__KEY_FILE`).
pub(super) fn secret_from_file(
    var: &str,
    value: &str,
) -> Result<Option<(String, String)>, ConfigError> {
    let Some(stripped) = var.strip_suffix("_FILE") else {
        return Ok(None);
    };
    let last = stripped.rsplit("__").next().unwrap_or("");
    if !stripped.contains("__") || !SECRET_KEYS.contains(&last.to_ascii_lowercase().as_str()) {
        return Ok(None);
    }
    Ok(Some((
        stripped.to_owned(),
        read_secret(Path::new(value), var)?,
    )))
}

/// Overrides from the credentials in `dir`: (`CHARTBRIDGE_…` variable, value).
pub(super) fn credentials(dir: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let var = "CREDENTIALS_DIRECTORY";
    let entries = std::fs::read_dir(dir).map_err(|e| ConfigError::Env {
        var: var.into(),
        message: format!("cannot read {}: {e}", dir.display()),
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path: Vec<&str> = name.split('.').collect();
        if path.len() < 2 || path.iter().any(|s| s.is_empty()) {
            continue;
        }
        let last = path[path.len() - 1];
        let override_var = format!(
            "{}{}",
            super::ENV_PREFIX,
            path.join("__").to_ascii_uppercase()
        );
        if SECRET_KEYS.contains(&last) {
            out.push((override_var, read_secret(&entry.path(), var)?));
        } else if last.ends_with("_file") {
            out.push((override_var, entry.path().display().to_string()));
        }
    }
    out.sort();
    Ok(out)
}
