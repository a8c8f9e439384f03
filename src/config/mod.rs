//! Configuration: one TOML file, overridden by `CHARTBRIDGE_SECTION__KEY`
//! environment variables. Unknown keys are errors, secrets never print.
//!
//! Each section lives with the module that uses it and is parsed into typed
//! values at load (cron schedules, `[kis.auth]` variants, URLs, positive
//! counts), so nothing past [`Config::load`] re-checks a setting. This module
//! holds the root, the loader and the checks that span sections; the section
//! types are re-exported here under their old paths.

mod env;
pub mod files;
pub mod secret;
mod sections;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::audit::reviewers::ReviewConfig;
pub use crate::auth::config::{AuthPolicy, IntakeConfig, IntakeKey, SourceIntake};
pub use crate::consume::config::BrokerConfig;
pub use crate::delete::config::{AdapterKind, DeletionConfig, SourceDeletion};
pub use crate::hl7::config::AdtConfig;
pub use crate::http::HttpConfig;
pub use crate::media::MediaConfig;
pub use crate::prove::config::ProofsConfig;
pub use crate::push::auth_config::{AuthConfig, JwtAlgorithm, OAuthClient};
pub use crate::push::config::{CodingConfig, KisConfig};
pub use crate::schedule::config::{Cron, ScheduleConfig};
pub use crate::source::config::{MatrixConfig, MatrixE2eeConfig, TrustPolicy};
pub use crate::store::config::StoreConfig;
pub use secret::Secret;
pub use sections::{
    MappingsConfig, PhoneMatch, PipelineConfig, ResolveConfig, UnknownEncounter, Unresolved,
    WhatsAppConfig,
};

/// Prefix of environment overrides; `CHARTBRIDGE_KIS__BASE_URL` sets `kis.base_url`.
pub const ENV_PREFIX: &str = "CHARTBRIDGE_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("environment override {var}: {message}")]
    Env { var: String, message: String },
}

/// The whole configuration of a worker.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// RabbitMQ connection and topology.
    pub broker: BrokerConfig,
    /// Local state.
    pub store: StoreConfig,
    /// The hospital information system's FHIR R4 endpoint.
    pub kis: KisConfig,
    /// Where media referenced by id are fetched from.
    #[serde(default)]
    pub media: MediaConfig,
    /// Classification rules.
    #[serde(default)]
    pub mappings: MappingsConfig,
    /// Concurrency of the pipeline.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Scheduled jobs.
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Signed checkpoints of the proof log.
    #[serde(default)]
    pub proofs: ProofsConfig,
    /// Deletion adapters per source and the deletion lifecycle.
    #[serde(default)]
    pub deletion: DeletionConfig,
    /// The Matrix homeserver (source, media, deletion).
    #[serde(default)]
    pub matrix: MatrixConfig,
    /// WhatsApp Business webhook verification.
    #[serde(default)]
    pub whatsapp: WhatsAppConfig,
    /// The HL7 v2 ADT feed that maintains the identity map.
    #[serde(default)]
    pub adt: AdtConfig,
    /// How messages are matched to patients.
    #[serde(default)]
    pub resolve: ResolveConfig,
    /// The HTTP endpoint: liveness, readiness, metrics.
    #[serde(default)]
    pub http: HttpConfig,
    /// Who may publish each source's events and deletion receipts.
    #[serde(default)]
    pub intake: IntakeConfig,
    /// Who may see held content.
    #[serde(default)]
    pub review: ReviewConfig,
    /// The web console under `/console` (off by default).
    #[serde(default)]
    pub console: crate::console::config::ConsoleConfig,
}

impl Config {
    /// Reads `path`, applies the process environment's overrides, parses.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_parts(path, &text, std::env::vars())
    }

    /// Parses `text`, applies the systemd credentials in
    /// `$CREDENTIALS_DIRECTORY` and then the `env` overrides (`*_FILE`
    /// variables read a secret from a file; see [`files`]), parses the
    /// sections and runs the checks that span them. `path` only names errors.
    pub fn from_parts(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_owned(),
                    message: e.message().to_owned(),
                })?;
        let env: Vec<(String, String)> = env.into_iter().collect();
        if let Some((_, dir)) = env.iter().find(|(k, _)| k == "CREDENTIALS_DIRECTORY") {
            for (var, value) in files::credentials(Path::new(dir))? {
                env::apply_string(&mut table, &var, &value)?;
            }
        }
        for (var, value) in &env {
            match files::secret_from_file(var, value)? {
                Some((var, secret)) => env::apply_string(&mut table, &var, &secret)?,
                None => env::apply_override(&mut table, var, value)?,
            }
        }
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_owned()))?;
        config
            .store
            .secure_transport()
            .map_err(ConfigError::Invalid)?;
        config.check().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// What a section cannot know alone: an adapter needs its
    /// messenger's credentials, `[kis]` keys that depend on each other.
    fn check(&self) -> Result<(), String> {
        self.deletion.check()?;
        if self.deletion.matrix.adapter == AdapterKind::Matrix
            && (self.matrix.homeserver_url.is_none() || self.matrix.access_token.is_none())
        {
            return Err("deletion.matrix.adapter = \"matrix\" needs matrix.homeserver_url and matrix.access_token".into());
        }
        if self.deletion.whatsapp.adapter == AdapterKind::Whatsapp
            && (self.media.api_base_url.is_none() || self.media.access_token.is_none())
        {
            return Err("deletion.whatsapp.adapter = \"whatsapp\" needs media.api_base_url and media.access_token".into());
        }
        self.intake.check()?;
        self.console.check(&self.http)?;
        self.broker.check()?;
        self.adt.check()?;
        self.kis.check()
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

#[cfg(test)]
mod tests;
