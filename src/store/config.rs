//! `[store]`: where local state lives and the key that seals it.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use crate::config::secret::Secret;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://path?mode=rwc` (default, embedded) or `postgres://…`. A
    /// PostgreSQL host other than loopback gets `sslmode=verify-full` when
    /// the URL names none (CA via `sslrootcert=`, client certificate via
    /// `sslcert=`/`sslkey=`); `disable`, `allow` and `prefer` (which may
    /// fall back to plaintext) are refused there unless `allow_plaintext`.
    #[serde(default = "url", deserialize_with = "parse_url")]
    pub url: Secret,
    /// Accept a PostgreSQL connection that may be plaintext to a host other
    /// than loopback.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// File holding the 32-byte key (base64) that seals content at rest (DSK I.3).
    pub key_file: PathBuf,
    /// Connection pool size.
    #[serde(default = "max_connections")]
    pub max_connections: u32,
    /// Whether `chartbridge run` applies pending migrations at start. Set
    /// `false` where several workers share a database or upgrades follow a
    /// change procedure: then only `chartbridge migrate` migrates, and a
    /// worker whose schema is behind refuses to start. Other commands never
    /// migrate.
    #[serde(default = "migrate_on_start")]
    pub migrate_on_start: bool,
}

fn migrate_on_start() -> bool {
    true
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

/// `sslmode` values that may connect without TLS.
const PLAINTEXT_MODES: [&str; 3] = ["disable", "allow", "prefer"];

impl StoreConfig {
    /// Makes `verify-full` the default towards a PostgreSQL host other than
    /// loopback and refuses a mode that may be plaintext there unless
    /// `allow_plaintext`. SQLite and loopback hosts are left as they are.
    pub fn secure_transport(&mut self) -> Result<(), String> {
        let text = self.url.expose();
        if !text.starts_with("postgres") {
            return Ok(());
        }
        let url = reqwest::Url::parse(text).map_err(|_| "store.url is not a URL".to_owned())?;
        let query = |key: &str| {
            url.query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        let host = query("host").unwrap_or_else(|| url.host_str().unwrap_or("").to_owned());
        if crate::transport::is_loopback_host(&host) {
            return Ok(());
        }
        match query("sslmode") {
            None => {
                let sep = if url.query().is_some() { '&' } else { '?' };
                self.url = Secret::new(format!("{text}{sep}sslmode=verify-full"));
                Ok(())
            }
            Some(mode) if PLAINTEXT_MODES.contains(&mode.as_str()) && !self.allow_plaintext => {
                Err(format!(
                    "store.url: sslmode={mode} may connect in plaintext to a host other than loopback; use verify-full or set store.allow_plaintext = true"
                ))
            }
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(url: &str, allow_plaintext: bool) -> Result<String, String> {
        let mut c = StoreConfig {
            url: Secret::new(url),
            key_file: "k".into(),
            max_connections: 1,
            allow_plaintext,
            migrate_on_start: true,
        };
        c.secure_transport().map(|()| c.url.expose().to_owned())
    }

    #[test]
    fn remote_postgres_verifies_the_server_by_default() {
        assert_eq!(
            store("postgres://cb@db.example/cb", false).unwrap(),
            "postgres://cb@db.example/cb?sslmode=verify-full"
        );
        assert_eq!(
            store("postgres://cb@db.example/cb?sslrootcert=/etc/ca.pem", false).unwrap(),
            "postgres://cb@db.example/cb?sslrootcert=/etc/ca.pem&sslmode=verify-full"
        );
        for mode in ["disable", "allow", "prefer"] {
            let url = format!("postgres://cb@db.example/cb?sslmode={mode}");
            assert!(
                store(&url, false).unwrap_err().contains("plaintext"),
                "{mode}"
            );
            assert_eq!(store(&url, true).unwrap(), url);
        }
        let ca = "postgres://cb@db.example/cb?sslmode=verify-ca";
        assert_eq!(store(ca, false).unwrap(), ca);
        // Loopback, sockets and SQLite are left alone.
        for url in [
            "postgres://postgres@127.0.0.1:5432/cb",
            "postgres://postgres@localhost/cb?sslmode=disable",
            "postgres:///cb?host=/var/run/postgresql",
            "sqlite://state.db?mode=rwc",
        ] {
            assert_eq!(store(url, false).unwrap(), url);
        }
        assert!(store("postgres:///cb?host=db.example&sslmode=disable", false).is_err());
    }
}
