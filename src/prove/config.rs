//! `[proofs]`: the log's identity and when checkpoints are signed.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use crate::schedule::Cron;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProofsConfig {
    /// Log identity, the first line of every checkpoint; set your own,
    /// e.g. `kis.example-hospital.de/chartbridge`. A C2SP note name: not
    /// empty, no spaces, no `+`, no control characters.
    #[serde(default = "origin", deserialize_with = "parse_origin")]
    pub origin: String,
    /// File holding the checkpoint signer key (`PRIVATE+KEY+…`, written by
    /// `chartbridge keygen-signing`). Without it nothing is signed.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// Cron expression (seconds first) of checkpoint signing.
    #[serde(
        default = "crate::schedule::config::default::checkpoint_schedule",
        deserialize_with = "crate::schedule::config::checkpoint_schedule"
    )]
    pub checkpoint_schedule: Cron,
    /// A directory outside the database (another volume, a share the KIS
    /// side keeps) where every signed checkpoint is also written, as
    /// `{size:020}-{timestamp_ms}.checkpoint`. At start the worker compares
    /// the proof log with the newest one and refuses to run when the log
    /// is older (a restored backup) or forked, until an operator decides
    /// (`chartbridge log accept-rollback`).
    #[serde(default)]
    pub checkpoint_dir: Option<PathBuf>,
}

impl Default for ProofsConfig {
    fn default() -> Self {
        Self {
            origin: origin(),
            signing_key_file: None,
            checkpoint_schedule: crate::schedule::config::default::checkpoint_schedule(),
            checkpoint_dir: None,
        }
    }
}

fn origin() -> String {
    "chartbridge.invalid/log".into()
}

fn parse_origin<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let origin = String::deserialize(d)?;
    if !super::note::is_valid_name(&origin) || origin.chars().any(char::is_control) {
        return Err(serde::de::Error::custom(
            "proofs.origin must be non-empty, without spaces or `+`",
        ));
    }
    Ok(origin)
}
