//! `[deletion]`: the deletion lifecycle and which adapter serves a source.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeletionConfig {
    /// A deletion requested longer ago than this without a final receipt is
    /// stuck: shown by `status` and counted in the `deletions_stuck` gauge.
    #[serde(default = "stuck_after", with = "humantime_serde")]
    pub stuck_after: Duration,
    /// First retry delay of an adapter after a transient failure.
    #[serde(default = "backoff_initial", with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Upper bound of an adapter's retry delay.
    #[serde(default = "backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Commands one adapter executes at once; at least 1.
    #[serde(default = "concurrency", deserialize_with = "parse_concurrency")]
    pub concurrency: u16,
    /// Deletion commands the relay claims, publishes (confirms
    /// overlapping) and marks per pass; 1 to 1000. A full pass starts the
    /// next one at once instead of waiting `schedule.relay_interval`.
    #[serde(default = "relay_batch", deserialize_with = "parse_relay_batch")]
    pub relay_batch: u16,
    /// Who deletes Matrix messages: `none` or `matrix`.
    #[serde(default)]
    pub matrix: SourceDeletion,
    /// Who deletes WhatsApp media: `none` or `whatsapp`.
    #[serde(default)]
    pub whatsapp: SourceDeletion,
}

impl Default for DeletionConfig {
    fn default() -> Self {
        Self {
            stuck_after: stuck_after(),
            backoff_initial: backoff_initial(),
            backoff_max: backoff_max(),
            concurrency: concurrency(),
            relay_batch: relay_batch(),
            matrix: SourceDeletion::default(),
            whatsapp: SourceDeletion::default(),
        }
    }
}

impl DeletionConfig {
    /// Each source's adapter is `none` or the adapter of that source; the
    /// error names the key.
    pub fn check(&self) -> Result<(), String> {
        for (source, kind) in [
            ("matrix", self.matrix.adapter),
            ("whatsapp", self.whatsapp.adapter),
        ] {
            let fits = match kind {
                AdapterKind::None => true,
                AdapterKind::Matrix => source == "matrix",
                AdapterKind::Whatsapp => source == "whatsapp",
            };
            if !fits {
                return Err(format!(
                    "deletion.{source}.adapter must be \"none\" or \"{source}\""
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDeletion {
    /// `none`: an external gateway consumes `{deletion_exchange}.{source}`
    /// and sends receipts; `matrix` / `whatsapp`: `chartbridge run` does it.
    #[serde(default)]
    pub adapter: AdapterKind,
}

/// Which deletion adapter serves a source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    #[default]
    None,
    Matrix,
    Whatsapp,
}

fn stuck_after() -> Duration {
    Duration::from_secs(3600)
}
fn backoff_initial() -> Duration {
    Duration::from_secs(1)
}
fn backoff_max() -> Duration {
    Duration::from_secs(300)
}
fn concurrency() -> u16 {
    8
}

fn relay_batch() -> u16 {
    256
}

fn parse_relay_batch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    match u16::deserialize(d)? {
        n @ 1..=1000 => Ok(n),
        _ => Err(serde::de::Error::custom(
            "deletion.relay_batch must be between 1 and 1000",
        )),
    }
}

fn parse_concurrency<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    match u16::deserialize(d)? {
        0 => Err(serde::de::Error::custom(
            "deletion.concurrency must be at least 1",
        )),
        n => Ok(n),
    }
}
