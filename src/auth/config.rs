//! `[intake]`: who may publish each source's events and deletion receipts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Whether a source's events and receipts must be authenticated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthPolicy {
    /// A gateway signature (or, for WhatsApp webhooks, Meta's) is required,
    /// and the AMQP `user_id` must be listed when `publishers` is set.
    #[default]
    Required,
    /// Nothing is checked beyond broker access (tests, a single host).
    None,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// Policy of a source without its own `[intake.sources.<name>]`.
    #[serde(default)]
    pub default_auth: AuthPolicy,
    /// Per source (`whatsapp`, `matrix`, the `source` of canonical events).
    #[serde(default)]
    pub sources: BTreeMap<String, SourceIntake>,
    /// HMAC-SHA256 keys by key id (`kid`); several per source while a key
    /// is rotated.
    #[serde(default)]
    pub keys: BTreeMap<String, IntakeKey>,
    /// Key id this process signs what it publishes itself with (the Matrix
    /// source's events, `chartbridge publish`, built-in deletion adapters'
    /// receipts). Unsigned when not set.
    #[serde(default)]
    pub sign_with: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceIntake {
    #[serde(default)]
    pub auth: AuthPolicy,
    /// AMQP `user_id` values allowed to publish this source's events and
    /// receipts. RabbitMQ refuses a publish whose `user_id` is not the
    /// connection's user, so this binds a broker account to the source.
    /// Not checked when empty.
    #[serde(default)]
    pub publishers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeKey {
    /// File holding the key, base64 of at least 32 random bytes
    /// (`openssl rand -base64 32`); readable by the owner only.
    pub file: PathBuf,
    /// Sources this key may sign for.
    pub sources: Vec<String>,
}

impl IntakeConfig {
    /// The policy and publisher allow-list of `source`.
    pub fn policy(&self, source: &str) -> (AuthPolicy, &[String]) {
        match self.sources.get(source) {
            Some(s) => (s.auth, &s.publishers),
            None => (self.default_auth, &[]),
        }
    }

    /// Checks that name other entries: `sign_with` must be a key.
    pub fn check(&self) -> Result<(), String> {
        if let Some(kid) = &self.sign_with
            && !self.keys.contains_key(kid)
        {
            return Err("intake.sign_with names no key of [intake.keys]".into());
        }
        if let Some((kid, _)) = self.keys.iter().find(|(_, k)| k.sources.is_empty()) {
            return Err(format!("intake.keys.{kid}.sources is empty"));
        }
        Ok(())
    }
}
