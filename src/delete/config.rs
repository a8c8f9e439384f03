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

fn parse_concurrency<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    match u16::deserialize(d)? {
        0 => Err(serde::de::Error::custom(
            "deletion.concurrency must be at least 1",
        )),
        n => Ok(n),
    }
}
