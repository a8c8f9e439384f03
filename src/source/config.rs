//! `[matrix]`: the Matrix homeserver, shared by the source, media
//! downloads and the deletion adapter.

use std::path::PathBuf;
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
    /// End-to-end encryption: the source as an E2EE device (cargo feature
    /// `e2ee`; docs/matrix.md, "End-to-end encryption"). Absent: the plain
    /// `/sync` source, encrypted events are quarantined `encrypted_content`.
    #[serde(default)]
    pub e2ee: Option<MatrixE2eeConfig>,
}

/// Whose devices' messages are archived from encrypted rooms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustPolicy {
    /// Only devices verified through cross-signing (the bot's user identity
    /// verified the sender's identity, which signed the device).
    #[default]
    Verified,
    /// Trust on first use: the sender's cross-signing identity is pinned
    /// the first time it is seen (an audit record in the log); its signed
    /// devices are trusted until the identity changes.
    Tofu,
    /// Any device, including unsigned ones (the verification state is
    /// still recorded with each archived message).
    Any,
}

/// `[matrix.e2ee]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixE2eeConfig {
    /// Directory of the SDK's SQLite stores (crypto and state), beside the
    /// chartbridge store; encrypted with a key derived from
    /// `store.key_file` (HKDF-SHA256, info `matrix-crypto-store/v1`).
    pub store_dir: PathBuf,
    /// Trust policy for senders' devices.
    #[serde(default)]
    pub trust: TrustPolicy,
    /// How long an event waits for its room keys before it is quarantined
    /// `undecryptable` (it is still retried after that).
    #[serde(default = "undecryptable_after", with = "humantime_serde")]
    pub undecryptable_after: Duration,
    /// The recovery key of the account's server-side key backup and secret
    /// storage (Matrix "Server-side key backups", "Secret storage"). The
    /// file exists: the source recovers the backup key from it at start
    /// (a replaced bot reads the history). Absent: the source creates the
    /// backup and writes its new recovery key here (mode 0600).
    #[serde(default)]
    pub recovery_key_file: Option<PathBuf>,
}

fn undecryptable_after() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl Default for MatrixConfig {
    fn default() -> Self {
        Self {
            homeserver_url: None,
            access_token: None,
            admin_access_token: None,
            sync_timeout: sync_timeout(),
            purge_history: false,
            e2ee: None,
        }
    }
}

fn sync_timeout() -> Duration {
    Duration::from_secs(30)
}
