//! `[schedule]`: when the worker's jobs run. Cron expressions are parsed
//! once, at load, into [`Cron`] values; nothing parses them again.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A cron schedule (seconds first, UTC) with the text it was read from,
/// which `check-config` prints back.
#[derive(Clone)]
pub struct Cron {
    expr: String,
    schedule: cron::Schedule,
}

impl Cron {
    /// Parses `expr`; the error names the setting `name` and the expected
    /// form, never anything else.
    pub fn parse(name: &str, expr: &str) -> Result<Self, String> {
        Ok(Self {
            schedule: super::parse(name, expr)?,
            expr: expr.to_owned(),
        })
    }

    /// The parsed schedule.
    pub fn schedule(&self) -> &cron::Schedule {
        &self.schedule
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.expr
    }
}

impl std::str::FromStr for Cron {
    type Err = String;
    fn from_str(expr: &str) -> Result<Self, String> {
        Self::parse("cron expression", expr)
    }
}

impl std::fmt::Debug for Cron {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.expr, f)
    }
}

impl PartialEq<&str> for Cron {
    fn eq(&self, other: &&str) -> bool {
        self.expr == *other
    }
}

impl Serialize for Cron {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.expr)
    }
}

/// Deserializes a [`Cron`] whose errors name the setting `name`.
pub fn deserialize_named<'de, D: Deserializer<'de>>(d: D, name: &str) -> Result<Cron, D::Error> {
    let expr = String::deserialize(d)?;
    Cron::parse(name, &expr).map_err(serde::de::Error::custom)
}

/// One deserializer per cron setting, so an error names its setting.
macro_rules! cron_setting {
    ($($fn_name:ident => $name:literal, $default:literal;)*) => {
        $(
            pub(crate) fn $fn_name<'de, D: Deserializer<'de>>(d: D) -> Result<Cron, D::Error> {
                deserialize_named(d, $name)
            }
        )*
        pub(crate) mod default {
            $(
                pub fn $fn_name() -> super::Cron {
                    super::Cron::parse($name, $default).expect("a default cron expression parses")
                }
            )*
        }
    };
}

cron_setting! {
    retention_sweep => "schedule.retention_sweep", "0 */5 * * * *";
    metadata_purge => "schedule.metadata_purge", "0 17 3 * * *";
    split_sweep => "schedule.split_sweep", "0 * * * * *";
    transcript_close => "schedule.transcript_close", "0 */5 * * * *";
    checkpoint_schedule => "proofs.checkpoint_schedule", "0 */10 * * * *";
    integrity_audit => "schedule.integrity_audit", "0 41 2 * * *";
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Cron expression (seconds first) of the retention sweep.
    #[serde(
        default = "default::retention_sweep",
        deserialize_with = "retention_sweep"
    )]
    pub retention_sweep: Cron,
    /// How often the deletion relay looks for pending deletions.
    #[serde(default = "relay_interval", with = "humantime_serde")]
    pub relay_interval: Duration,
    /// Cron expression (seconds first) of the metadata purge (DSK II.3).
    #[serde(
        default = "default::metadata_purge",
        deserialize_with = "metadata_purge"
    )]
    pub metadata_purge: Cron,
    /// How long local metadata of a message stays after the messenger
    /// confirmed its deletion; then only what proofs need is kept.
    #[serde(default = "metadata_retention", with = "humantime_serde")]
    pub metadata_retention: Duration,
    /// Cron expression (seconds first) of the split sweep, which releases
    /// split-message groups whose wait ended (DSK II.2).
    #[serde(default = "default::split_sweep", deserialize_with = "split_sweep")]
    pub split_sweep: Cron,
    /// How long the parts of a split message wait for the missing ones,
    /// from the first part's arrival; then the group is archived marked
    /// incomplete.
    #[serde(default = "split_wait", with = "humantime_serde")]
    pub split_wait: Duration,
    /// Cron expression of the transcript closer (`kis.output =
    /// "document_reference_only"`), which archives transcript windows that ended.
    #[serde(
        default = "default::transcript_close",
        deserialize_with = "transcript_close"
    )]
    pub transcript_close: Cron,
    /// How often a worker tries to become the leader of the singleton jobs
    /// (PostgreSQL advisory lock) and checks that it still is; a dead
    /// leader is replaced within about this long.
    #[serde(default = "leader_interval", with = "humantime_serde")]
    pub leader_interval: Duration,
    /// Cron expression of the integrity audit: `integrity_audit_sample`
    /// archived resources drawn at random are read back from the KIS and
    /// verified against the ledger and the proof log, as `chartbridge audit
    /// --sample N` does; the result is recorded (`audit_samples`, the
    /// console's log page) and mismatches are logged (DSK I.12).
    #[serde(
        default = "default::integrity_audit",
        deserialize_with = "integrity_audit"
    )]
    pub integrity_audit: Cron,
    /// Resources per scheduled integrity audit; 0 turns it off.
    #[serde(default = "integrity_audit_sample")]
    pub integrity_audit_sample: u32,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            retention_sweep: default::retention_sweep(),
            relay_interval: relay_interval(),
            metadata_purge: default::metadata_purge(),
            metadata_retention: metadata_retention(),
            split_sweep: default::split_sweep(),
            split_wait: split_wait(),
            transcript_close: default::transcript_close(),
            leader_interval: leader_interval(),
            integrity_audit: default::integrity_audit(),
            integrity_audit_sample: integrity_audit_sample(),
        }
    }
}

fn integrity_audit_sample() -> u32 {
    20
}

fn leader_interval() -> Duration {
    Duration::from_secs(5)
}

fn relay_interval() -> Duration {
    Duration::from_millis(500)
}
fn metadata_retention() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn split_wait() -> Duration {
    Duration::from_secs(15 * 60)
}
