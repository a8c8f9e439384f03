//! `[matrix]`: the Matrix homeserver, shared by the source, media
//! downloads and the deletion adapter.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::secret::Secret;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixConfig {
    /// Client-server API base, e.g. `https://matrix.example-hospital.de`.
    #[serde(default)]
    pub homeserver_url: Option<String>,
    /// The bot account's access token (sync, media download, redaction).
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// A server admin's token for Synapse's admin API (media deletion,
    /// history purge); default `access_token` (the bot is then an admin).
    #[serde(default)]
    pub admin_access_token: Option<Secret>,
    /// Long-poll timeout of one `/sync`.
    #[serde(default = "sync_timeout", with = "humantime_serde")]
    pub sync_timeout: Duration,
    /// Also purge the room history up to a deleted event with the admin API.
    #[serde(default)]
    pub purge_history: bool,
}

impl Default for MatrixConfig {
    fn default() -> Self {
        Self {
            homeserver_url: None,
            access_token: None,
            admin_access_token: None,
            sync_timeout: sync_timeout(),
            purge_history: false,
        }
    }
}

fn sync_timeout() -> Duration {
    Duration::from_secs(30)
}
