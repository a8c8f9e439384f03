//! `[store]`: where local state lives and the key that seals it.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use crate::config::secret::Secret;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://path?mode=rwc` (default, embedded) or `postgres://…`.
    #[serde(default = "url", deserialize_with = "parse_url")]
    pub url: Secret,
    /// File holding the 32-byte key (base64) that seals content at rest (DSK I.3).
    pub key_file: PathBuf,
    /// Connection pool size.
    #[serde(default = "max_connections")]
    pub max_connections: u32,
}

fn url() -> Secret {
    Secret::new("sqlite://chartbridge.db?mode=rwc")
}

fn max_connections() -> u32 {
    8
}

fn parse_url<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    let url = Secret::deserialize(d)?;
    let text = url.expose();
    if !(text.starts_with("sqlite:") || text.starts_with("postgres")) {
        return Err(serde::de::Error::custom(
            "store.url must start with sqlite: or postgres://",
        ));
    }
    Ok(url)
}
