//! Sections whose owners sit outside the worker's edges: the pipeline's
//! concurrency and intake limits, the classification rules file, patient
//! resolution policy, webhook verification.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::secret::Secret;

/// What a phone-number-only match leads to.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PhoneMatch {
    /// Archive to the single patient with that phone number.
    Accept,
    /// Quarantine as `patient_candidate` until an operator confirms.
    #[default]
    Quarantine,
}

/// What happens when the patient resolves but the event's encounter does not.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnknownEncounter {
    /// Quarantine as `unknown_encounter` (a case id the KIS does not know
    /// may be a mix-up).
    #[default]
    Quarantine,
    /// Archive linked to the patient only, counted and logged.
    PatientOnly,
}

/// What happens to a message of a conversation that resolves to no patient
/// (no case reference, no link, no identity-map phone number) when no named
/// rule decided it — only the `[default]` rule matched.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Unresolved {
    /// Quarantine sealed as `unresolved_conversation` until a reviewer links
    /// the conversation (`chartbridge conversation link`) or dismisses it
    /// (`chartbridge conversation dismiss`).
    #[default]
    Hold,
    /// The weaker policy: apply the `[default]` rule as it stands (with the
    /// shipped rules: not relevant, messenger copy deleted after 24 h) —
    /// patient content from a number not yet in the ADT feed is deleted
    /// unread.
    NotRelevant,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveConfig {
    #[serde(default)]
    pub phone_match: PhoneMatch,
    #[serde(default)]
    pub unknown_encounter: UnknownEncounter,
    /// `resolve.unresolved`: `"hold"` (default) or `"not_relevant"`.
    #[serde(default)]
    pub unresolved: Unresolved,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MappingsConfig {
    /// Relevance and document type rules; read at start, no recompilation.
    #[serde(default = "rules_file")]
    pub rules_file: PathBuf,
}

impl Default for MappingsConfig {
    fn default() -> Self {
        Self {
            rules_file: rules_file(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Deliveries processed at once.
    #[serde(default = "concurrency", deserialize_with = "parse_concurrency")]
    pub concurrency: usize,
    /// How long SIGTERM waits for in-flight work before leaving it to redelivery.
    #[serde(default = "drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How far a message's send time may lie ahead of the worker's clock;
    /// later ones are quarantined as `timestamp_in_future`.
    #[serde(default = "max_clock_skew", with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Writes recorded in one SQL transaction at most (group commit: the
    /// content claims of new deliveries, and the ledger rows, proof leaves
    /// and deletion outbox rows of finished ones, each delivery acked after
    /// the commit of its archive); 1 to 256, `1` records each alone.
    #[serde(
        default = "group_commit_max",
        deserialize_with = "parse_group_commit_max"
    )]
    pub group_commit_max: usize,
    /// How long a group waits for more writes after its first; at most
    /// 50 ms. `0s` (default) takes only what is already waiting, which
    /// batches under load and adds no latency when idle.
    #[serde(
        default,
        serialize_with = "humantime_serde::serialize",
        deserialize_with = "parse_group_commit_linger"
    )]
    pub group_commit_linger: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            concurrency: concurrency(),
            drain_timeout: drain_timeout(),
            max_clock_skew: max_clock_skew(),
            group_commit_max: group_commit_max(),
            group_commit_linger: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppConfig {
    /// The Meta app secret. When set, a webhook the gateway forwards with its
    /// `X-Hub-Signature-256` header (AMQP header `x-hub-signature-256`, the
    /// raw body as payload) is verified; a mismatch is dead-lettered.
    #[serde(default)]
    pub app_secret: Option<Secret>,
}

fn rules_file() -> PathBuf {
    PathBuf::from("mappings/rules.toml")
}
fn concurrency() -> usize {
    32
}
fn drain_timeout() -> Duration {
    Duration::from_secs(20)
}
fn max_clock_skew() -> Duration {
    Duration::from_secs(300)
}

fn group_commit_max() -> usize {
    32
}

fn parse_group_commit_max<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        n @ 1..=256 => Ok(n),
        _ => Err(serde::de::Error::custom(
            "pipeline.group_commit_max must be between 1 and 256",
        )),
    }
}

fn parse_group_commit_linger<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let linger: Duration = humantime_serde::deserialize(d)?;
    if linger > Duration::from_millis(50) {
        return Err(serde::de::Error::custom(
            "pipeline.group_commit_linger must be at most 50ms",
        ));
    }
    Ok(linger)
}

fn parse_concurrency<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(serde::de::Error::custom(
            "pipeline.concurrency must be at least 1",
        )),
        n => Ok(n),
    }
}
