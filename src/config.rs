//! Configuration: one TOML file, overridden by `CHARTBRIDGE_SECTION__KEY`
//! environment variables. Unknown keys are errors, secrets never print.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

/// A value that must never be printed or logged.
#[derive(Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
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
    /// Liveness and readiness endpoint.
    #[serde(default)]
    pub health: HealthConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdtConfig {
    /// Consume ADT messages (HL7 v2, ER7 text) from `queue`.
    #[serde(default)]
    pub enabled: bool,
    /// Queue the KIS (or an interface engine) publishes ADT messages to.
    #[serde(default = "d::adt_queue")]
    pub queue: String,
    /// Where ACKs go when a message names no reply-to queue.
    #[serde(default = "d::adt_ack_queue")]
    pub ack_queue: String,
    /// Country code for national phone numbers (`0151…` → `49151…`).
    #[serde(default = "d::default_country_code")]
    pub default_country_code: String,
    /// FHIR identifier system of PID-3 / MRG-1 identifiers whose assigning
    /// authority is not listed in `patient_authorities`.
    #[serde(default)]
    pub patient_system: Option<String>,
    /// FHIR identifier system of PV1-19 visit numbers whose assigning
    /// authority is not listed in `case_authorities`.
    #[serde(default)]
    pub case_system: Option<String>,
    /// PID-3 assigning authority (CX-4 namespace) → FHIR identifier system.
    #[serde(default)]
    pub patient_authorities: std::collections::BTreeMap<String, String>,
    /// PV1-19 assigning authority → FHIR identifier system.
    #[serde(default)]
    pub case_authorities: std::collections::BTreeMap<String, String>,
    /// Also accept ADT over MLLP on this address (`host:port`); off when unset.
    #[serde(default)]
    pub mllp_listen: Option<String>,
}

impl AdtConfig {
    /// The FHIR identifier system of a patient identifier's authority.
    pub fn patient_system_of(&self, authority: &str) -> Option<&str> {
        self.patient_authorities
            .get(authority)
            .or(self.patient_system.as_ref())
            .map(String::as_str)
    }

    /// The FHIR identifier system of a visit number's authority.
    pub fn case_system_of(&self, authority: &str) -> Option<&str> {
        self.case_authorities
            .get(authority)
            .or(self.case_system.as_ref())
            .map(String::as_str)
    }
}

impl Default for AdtConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            queue: d::adt_queue(),
            ack_queue: d::adt_ack_queue(),
            default_country_code: d::default_country_code(),
            patient_system: None,
            case_system: None,
            patient_authorities: Default::default(),
            case_authorities: Default::default(),
            mllp_listen: None,
        }
    }
}

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

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Address of the `/healthz` and `/readyz` endpoint, e.g.
    /// `127.0.0.1:9464` (keep it on loopback); none by default.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// AMQP URL; use `amqps://` outside a single host (DSK II.1).
    pub url: Secret,
    /// Quorum queue the messenger gateways publish events to.
    #[serde(default = "d::events_queue")]
    pub events_queue: String,
    /// Exchange that receives dead-lettered events.
    #[serde(default = "d::dead_letter_exchange")]
    pub dead_letter_exchange: String,
    /// Queue bound to the dead-letter exchange, kept for human review.
    #[serde(default = "d::dead_letter_queue")]
    pub dead_letter_queue: String,
    /// Topic exchange deletion commands are published to, routing key = source.
    #[serde(default = "d::deletion_exchange")]
    pub deletion_exchange: String,
    /// Sources whose deletion commands wait in a durable queue
    /// `{deletion_exchange}.{source}` until that messenger's gateway takes them.
    #[serde(default = "d::deletion_sources")]
    pub deletion_sources: Vec<String>,
    /// Queue the gateways publish deletion receipts to.
    #[serde(default = "d::receipts_queue")]
    pub receipts_queue: String,
    /// Unacknowledged deliveries in flight per worker.
    #[serde(default = "d::prefetch")]
    pub prefetch: u16,
    /// Redeliveries after which the broker dead-letters an event itself.
    #[serde(default = "d::delivery_limit")]
    pub delivery_limit: u32,
    /// Largest accepted event in bytes; larger ones are dead-lettered.
    #[serde(default = "d::max_event_bytes")]
    pub max_event_bytes: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://path?mode=rwc` (default, embedded) or `postgres://…`.
    #[serde(default = "d::store_url")]
    pub url: Secret,
    /// File holding the 32-byte key (base64) that seals content at rest (DSK I.3).
    pub key_file: PathBuf,
    /// Connection pool size.
    #[serde(default = "d::max_connections")]
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KisConfig {
    /// FHIR R4 base URL, e.g. `https://kis.example/fhir`.
    pub base_url: String,
    /// Bearer token sent with every request, if the KIS wants one.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// Identifier system of the messenger message id in every resource.
    #[serde(default = "d::identifier_system")]
    pub identifier_system: String,
    /// Request timeout.
    #[serde(default = "d::kis_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// First retry delay after a transient failure.
    #[serde(default = "d::backoff_initial", with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Upper bound of the retry delay.
    #[serde(default = "d::backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Attempts per content before the delivery is handed back to the broker
    /// (while the KIS as a whole answers; an open circuit waits instead).
    #[serde(default = "d::max_attempts")]
    pub max_attempts: u32,
    /// Transient failures in a row that open the circuit breaker.
    #[serde(default = "d::breaker_threshold")]
    pub breaker_threshold: u32,
    /// How long an open circuit waits before one probe request.
    #[serde(default = "d::breaker_cooldown", with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    /// Upper bound of the open period (doubles after each failed probe).
    #[serde(default = "d::breaker_cooldown_max", with = "humantime_serde")]
    pub breaker_cooldown_max: Duration,
    /// Language of archived content (BCP 47).
    #[serde(default = "d::language")]
    pub language: String,
    /// DocumentReference.context.facilityType.
    #[serde(default = "d::facility_type")]
    pub facility_type: CodingConfig,
    /// DocumentReference.context.practiceSetting.
    #[serde(default = "d::practice_setting")]
    pub practice_setting: CodingConfig,
    /// Confidentiality label on every archived document.
    #[serde(default = "d::confidentiality")]
    pub confidentiality: CodingConfig,
    /// The display name this bridge uses as Provenance agent.
    #[serde(default = "d::agent_name")]
    pub agent_name: String,
    /// Read the stored resource (and Binary) back and compare its hashes
    /// before the deletion is released; `false` only for a KIS that does not
    /// allow reads (a weaker guarantee, docs/kis-output.md).
    #[serde(default = "d::read_back")]
    pub read_back: bool,
    /// How requests to the KIS authenticate (OAuth2, DSK II.1).
    #[serde(default)]
    pub auth: crate::push::auth::AuthConfig,
    /// Client certificate and CA bundle for mutual TLS (DSK I.4, II.1).
    #[serde(default)]
    pub tls: crate::push::tls::TlsConfig,
    /// `fhir` (default) or `hl7v2_mdm` (MDM^T02 over MLLP, `[kis.mllp]`).
    #[serde(default)]
    pub output: crate::push::OutputMode,
    /// The MLLP peer of `output = "hl7v2_mdm"`.
    #[serde(default)]
    pub mllp: crate::push::mllp::MllpConfig,
    /// `output = "document_reference_only"`: the length of a transcript
    /// window (UTC-aligned; `1d` = one transcript per conversation and day).
    #[serde(default = "d::transcript_window", with = "humantime_serde")]
    pub transcript_window: Duration,
    /// The KDL document type of transcripts.
    #[serde(default = "d::transcript_document_type")]
    pub transcript_document_type: crate::classify::DocumentType,
}

/// A FHIR Coding given in configuration.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CodingConfig {
    pub system: String,
    pub code: String,
    pub display: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Base of a WhatsApp-style media API: `GET {base}/{media-id}` answers the URL.
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// Bearer token for the media API and the download.
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// Largest accepted medium; larger ones are quarantined.
    #[serde(default = "d::max_media_bytes")]
    pub max_bytes: u64,
    /// Timeout of one media download.
    #[serde(default = "d::media_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Media types archived (`type/subtype` or `type/*`); others are
    /// quarantined as `unsupported_media_type`.
    #[serde(default = "d::allowed_media_types")]
    pub allowed_types: Vec<String>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            api_base_url: None,
            access_token: None,
            max_bytes: d::max_media_bytes(),
            timeout: d::media_timeout(),
            allowed_types: d::allowed_media_types(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MappingsConfig {
    /// Relevance and document type rules; read at start, no recompilation.
    #[serde(default = "d::rules_file")]
    pub rules_file: PathBuf,
}

impl Default for MappingsConfig {
    fn default() -> Self {
        Self {
            rules_file: d::rules_file(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Deliveries processed at once.
    #[serde(default = "d::concurrency")]
    pub concurrency: usize,
    /// How long SIGTERM waits for in-flight work before leaving it to redelivery.
    #[serde(default = "d::drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How far a message's send time may lie ahead of the worker's clock;
    /// later ones are quarantined as `timestamp_in_future`.
    #[serde(default = "d::max_clock_skew", with = "humantime_serde")]
    pub max_clock_skew: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            concurrency: d::concurrency(),
            drain_timeout: d::drain_timeout(),
            max_clock_skew: d::max_clock_skew(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Cron expression (seconds first) of the retention sweep.
    #[serde(default = "d::retention_sweep")]
    pub retention_sweep: String,
    /// How often the deletion relay looks for pending deletions.
    #[serde(default = "d::relay_interval", with = "humantime_serde")]
    pub relay_interval: Duration,
    /// Cron expression (seconds first) of the metadata purge (DSK II.3).
    #[serde(default = "d::metadata_purge")]
    pub metadata_purge: String,
    /// How long local metadata of a message stays after the messenger
    /// confirmed its deletion; then only what proofs need is kept.
    #[serde(default = "d::metadata_retention", with = "humantime_serde")]
    pub metadata_retention: Duration,
    /// Cron expression (seconds first) of the split sweep, which releases
    /// split-message groups whose wait ended (DSK II.2).
    #[serde(default = "d::split_sweep")]
    pub split_sweep: String,
    /// How long the parts of a split message wait for the missing ones,
    /// from the first part's arrival; then the group is archived marked
    /// incomplete.
    #[serde(default = "d::split_wait", with = "humantime_serde")]
    pub split_wait: Duration,
    /// Cron expression of the transcript closer (`kis.output =
    /// "document_reference_only"`), which archives transcript windows that ended.
    #[serde(default = "d::transcript_close")]
    pub transcript_close: String,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            retention_sweep: d::retention_sweep(),
            relay_interval: d::relay_interval(),
            metadata_purge: d::metadata_purge(),
            metadata_retention: d::metadata_retention(),
            split_sweep: d::split_sweep(),
            split_wait: d::split_wait(),
            transcript_close: d::transcript_close(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProofsConfig {
    /// Log identity, the first line of every checkpoint; set your own,
    /// e.g. `kis.example-hospital.de/chartbridge`.
    #[serde(default = "d::origin")]
    pub origin: String,
    /// File holding the checkpoint signer key (`PRIVATE+KEY+…`, written by
    /// `chartbridge keygen-signing`). Without it nothing is signed.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// Cron expression (seconds first) of checkpoint signing.
    #[serde(default = "d::checkpoint_schedule")]
    pub checkpoint_schedule: String,
}

impl Default for ProofsConfig {
    fn default() -> Self {
        Self {
            origin: d::origin(),
            signing_key_file: None,
            checkpoint_schedule: d::checkpoint_schedule(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeletionConfig {
    /// A deletion requested longer ago than this without a final receipt is
    /// stuck: shown by `status` and counted in the `deletions_stuck` gauge.
    #[serde(default = "d::stuck_after", with = "humantime_serde")]
    pub stuck_after: Duration,
    /// First retry delay of an adapter after a transient failure.
    #[serde(default = "d::deletion_backoff_initial", with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Upper bound of an adapter's retry delay.
    #[serde(default = "d::deletion_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Commands one adapter executes at once.
    #[serde(default = "d::deletion_concurrency")]
    pub concurrency: u16,
    /// Who deletes Matrix messages.
    #[serde(default)]
    pub matrix: SourceDeletion,
    /// Who deletes WhatsApp media.
    #[serde(default)]
    pub whatsapp: SourceDeletion,
}

impl Default for DeletionConfig {
    fn default() -> Self {
        Self {
            stuck_after: d::stuck_after(),
            backoff_initial: d::deletion_backoff_initial(),
            backoff_max: d::deletion_backoff_max(),
            concurrency: d::deletion_concurrency(),
            matrix: SourceDeletion::default(),
            whatsapp: SourceDeletion::default(),
        }
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
    #[serde(default = "d::sync_timeout", with = "humantime_serde")]
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
    #[serde(default = "d::undecryptable_after", with = "humantime_serde")]
    pub undecryptable_after: Duration,
    /// The recovery key of the account's server-side key backup and secret
    /// storage (Matrix "Server-side key backups", "Secret storage"). The
    /// file exists: the source recovers the backup key from it at start
    /// (a replaced bot reads the history). Absent: the source creates the
    /// backup and writes its new recovery key here (mode 0600).
    #[serde(default)]
    pub recovery_key_file: Option<PathBuf>,
}

impl Default for MatrixConfig {
    fn default() -> Self {
        Self {
            homeserver_url: None,
            access_token: None,
            admin_access_token: None,
            sync_timeout: d::sync_timeout(),
            purge_history: false,
            e2ee: None,
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

/// Defaults: private by default (DSK I.13), short retention, no telemetry.
mod d {
    use super::{CodingConfig, Secret};
    use std::path::PathBuf;
    use std::time::Duration;

    pub fn undecryptable_after() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    pub fn events_queue() -> String {
        "chartbridge.events".into()
    }
    pub fn dead_letter_exchange() -> String {
        "chartbridge.dlx".into()
    }
    pub fn dead_letter_queue() -> String {
        "chartbridge.events.dead".into()
    }
    pub fn deletion_exchange() -> String {
        "chartbridge.deletions".into()
    }
    pub fn deletion_sources() -> Vec<String> {
        vec!["whatsapp".into(), "matrix".into()]
    }
    pub fn receipts_queue() -> String {
        "chartbridge.deletion-receipts".into()
    }
    pub fn prefetch() -> u16 {
        64
    }
    pub fn delivery_limit() -> u32 {
        20
    }
    pub fn max_event_bytes() -> usize {
        32 * 1024 * 1024
    }
    pub fn store_url() -> Secret {
        Secret::new("sqlite://chartbridge.db?mode=rwc")
    }
    pub fn max_connections() -> u32 {
        8
    }
    pub fn identifier_system() -> String {
        "urn:chartbridge:messenger-message".into()
    }
    pub fn kis_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn backoff_initial() -> Duration {
        Duration::from_millis(200)
    }
    pub fn backoff_max() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_attempts() -> u32 {
        8
    }
    pub fn breaker_threshold() -> u32 {
        5
    }
    pub fn breaker_cooldown() -> Duration {
        Duration::from_secs(2)
    }
    pub fn breaker_cooldown_max() -> Duration {
        Duration::from_secs(60)
    }
    pub fn language() -> String {
        "de".into()
    }
    pub fn facility_type() -> CodingConfig {
        CodingConfig {
            system: "http://ihe-d.de/CodeSystems/PatientBezogenenGesundheitsversorgung".into(),
            code: "KHS".into(),
            display: "Krankenhaus".into(),
        }
    }
    pub fn practice_setting() -> CodingConfig {
        CodingConfig {
            system: "http://ihe-d.de/CodeSystems/AerztlicheFachrichtungen".into(),
            code: "ALLG".into(),
            display: "Allgemeinmedizin".into(),
        }
    }
    pub fn confidentiality() -> CodingConfig {
        CodingConfig {
            system: "http://terminology.hl7.org/CodeSystem/v3-Confidentiality".into(),
            code: "R".into(),
            display: "restricted".into(),
        }
    }
    pub fn agent_name() -> String {
        "chartbridge".into()
    }
    pub fn read_back() -> bool {
        true
    }
    pub fn max_media_bytes() -> u64 {
        64 * 1024 * 1024
    }

    pub fn allowed_media_types() -> Vec<String> {
        [
            "image/*",
            "video/*",
            "audio/*",
            "application/pdf",
            "text/plain",
        ]
        .map(String::from)
        .to_vec()
    }

    pub fn max_clock_skew() -> Duration {
        Duration::from_secs(300)
    }
    pub fn media_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn rules_file() -> PathBuf {
        PathBuf::from("mappings/rules.toml")
    }
    pub fn concurrency() -> usize {
        32
    }
    pub fn drain_timeout() -> Duration {
        Duration::from_secs(20)
    }
    pub fn retention_sweep() -> String {
        "0 */5 * * * *".into()
    }
    pub fn relay_interval() -> Duration {
        Duration::from_millis(500)
    }
    pub fn metadata_purge() -> String {
        "0 17 3 * * *".into()
    }
    pub fn metadata_retention() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
    pub fn split_sweep() -> String {
        "0 * * * * *".into()
    }
    pub fn split_wait() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn transcript_close() -> String {
        "0 */5 * * * *".into()
    }
    pub fn transcript_window() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    pub fn transcript_document_type() -> crate::classify::DocumentType {
        crate::classify::DocumentType {
            code: "ED190199".into(),
            display: "Sonstiger elektronischer Schriftverkehr".into(),
        }
    }
    pub fn origin() -> String {
        "chartbridge.invalid/log".into()
    }
    pub fn checkpoint_schedule() -> String {
        "0 */10 * * * *".into()
    }
    pub fn stuck_after() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn deletion_backoff_initial() -> Duration {
        Duration::from_secs(1)
    }
    pub fn deletion_backoff_max() -> Duration {
        Duration::from_secs(300)
    }
    pub fn deletion_concurrency() -> u16 {
        8
    }
    pub fn sync_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn adt_queue() -> String {
        "chartbridge.adt".into()
    }
    pub fn adt_ack_queue() -> String {
        "chartbridge.adt.acks".into()
    }
    pub fn default_country_code() -> String {
        "49".into()
    }
}

impl Config {
    /// Reads `path`, applies the process environment's overrides, validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_parts(path, &text, std::env::vars())
    }

    /// Parses `text`, applies `env` overrides, validates. `path` only names errors.
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
        for (var, value) in env {
            apply_override(&mut table, &var, &value)?;
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_owned()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.broker.prefetch == 0 {
            return invalid("broker.prefetch must be at least 1");
        }
        if self.pipeline.concurrency == 0 {
            return invalid("pipeline.concurrency must be at least 1");
        }
        if !(self.kis.base_url.starts_with("http://") || self.kis.base_url.starts_with("https://"))
        {
            return invalid("kis.base_url must be an http(s) URL");
        }
        let url = self.store.url.expose();
        if !(url.starts_with("sqlite:") || url.starts_with("postgres")) {
            return invalid("store.url must start with sqlite: or postgres://");
        }
        let s = &self.schedule;
        for (name, expr) in [
            ("schedule.retention_sweep", &s.retention_sweep),
            ("schedule.metadata_purge", &s.metadata_purge),
            ("schedule.split_sweep", &s.split_sweep),
            ("schedule.transcript_close", &s.transcript_close),
            (
                "proofs.checkpoint_schedule",
                &self.proofs.checkpoint_schedule,
            ),
        ] {
            crate::schedule::parse(name, expr).map_err(ConfigError::Invalid)?;
        }
        if !crate::prove::note::is_valid_name(&self.proofs.origin)
            || self.proofs.origin.chars().any(char::is_control)
        {
            return invalid("proofs.origin must be non-empty, without spaces or `+`");
        }
        for (source, kind) in [
            ("matrix", self.deletion.matrix.adapter),
            ("whatsapp", self.deletion.whatsapp.adapter),
        ] {
            let fits = match kind {
                AdapterKind::None => true,
                AdapterKind::Matrix => source == "matrix",
                AdapterKind::Whatsapp => source == "whatsapp",
            };
            if !fits {
                return Err(ConfigError::Invalid(format!(
                    "deletion.{source}.adapter must be \"none\" or \"{source}\""
                )));
            }
        }
        if self.deletion.matrix.adapter == AdapterKind::Matrix
            && (self.matrix.homeserver_url.is_none() || self.matrix.access_token.is_none())
        {
            return invalid(
                "deletion.matrix.adapter = \"matrix\" needs matrix.homeserver_url and matrix.access_token",
            );
        }
        if self.deletion.whatsapp.adapter == AdapterKind::Whatsapp
            && (self.media.api_base_url.is_none() || self.media.access_token.is_none())
        {
            return invalid(
                "deletion.whatsapp.adapter = \"whatsapp\" needs media.api_base_url and media.access_token",
            );
        }
        if self.deletion.concurrency == 0 {
            return invalid("deletion.concurrency must be at least 1");
        }
        if self.kis.backoff_initial > self.kis.backoff_max {
            return invalid("kis.backoff_initial must not exceed kis.backoff_max");
        }
        self.kis.auth.validate().map_err(ConfigError::Invalid)?;
        self.kis.tls.validate().map_err(ConfigError::Invalid)?;
        if self.kis.output == crate::push::OutputMode::Hl7v2Mdm && self.kis.mllp.address.is_empty()
        {
            return invalid("kis.mllp.address is required for output = \"hl7v2_mdm\"");
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

/// `CHARTBRIDGE_KIS__BASE_URL=…` sets `kis.base_url`. Variables without `__`
/// after the prefix (such as `CHARTBRIDGE_CONFIG`) are not overrides.
fn apply_override(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    if !rest.contains("__") {
        return Ok(());
    }
    let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Env {
            var: var.to_owned(),
            message: "empty key segment".into(),
        });
    }
    let (last, parents) = path
        .split_last()
        .expect("split yields one segment at least");
    let mut node = table;
    for key in parents {
        let entry = node
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry.as_table_mut().ok_or_else(|| ConfigError::Env {
            var: var.to_owned(),
            message: format!("`{key}` is not a section"),
        })?;
    }
    node.insert(last.clone(), parse_env_value(value));
    Ok(())
}

/// Numbers and booleans keep their type; everything else is a string.
fn parse_env_value(value: &str) -> toml::Value {
    if let Ok(i) = value.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match value {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [broker]
        url = "amqp://guest:guest@127.0.0.1:5672/%2f"
        [store]
        key_file = "k"
        [kis]
        base_url = "http://127.0.0.1:8090"
    "#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_parts(
            Path::new("test.toml"),
            text,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_are_private_and_short() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.broker.prefetch, 64);
        assert!(c.store.url.expose().starts_with("sqlite:"));
        assert_eq!(c.kis.confidentiality.code, "R");
    }

    #[test]
    fn unknown_key_is_rejected_by_name() {
        let err = load(&format!("{MINIMAL}\n[kis2]\nx = 1"), &[]).unwrap_err();
        assert!(err.to_string().contains("kis2"), "{err}");
        let err = load(MINIMAL, &[("CHARTBRIDGE_KIS__BASEURL", "x")]).unwrap_err();
        assert!(err.to_string().contains("baseurl"), "{err}");
    }

    #[test]
    fn env_overrides_file_and_keeps_types() {
        let c = load(
            MINIMAL,
            &[
                ("CHARTBRIDGE_KIS__BASE_URL", "https://kis.invalid/fhir"),
                ("CHARTBRIDGE_BROKER__PREFETCH", "7"),
                ("CHARTBRIDGE_CONFIG", "ignored.toml"),
                ("OTHER__X", "ignored"),
            ],
        )
        .unwrap();
        assert_eq!(c.kis.base_url, "https://kis.invalid/fhir");
        assert_eq!(c.broker.prefetch, 7);
    }

    #[test]
    fn ii3_identity_defaults_are_cautious() {
        let c = load(MINIMAL, &[]).unwrap();
        assert!(!c.adt.enabled);
        assert_eq!(c.resolve.phone_match, PhoneMatch::Quarantine);
        assert_eq!(c.resolve.unknown_encounter, UnknownEncounter::Quarantine);
        let c = load(
            &format!(
                "{MINIMAL}\n[adt]\nenabled = true\n[adt.patient_authorities]\nKIS = \"urn:x\"\n[resolve]\nphone_match = \"accept\""
            ),
            &[("CHARTBRIDGE_RESOLVE__UNKNOWN_ENCOUNTER", "patient_only")],
        )
        .unwrap();
        assert!(c.adt.enabled);
        assert_eq!(c.adt.patient_authorities["KIS"], "urn:x");
        assert_eq!(c.resolve.phone_match, PhoneMatch::Accept);
        assert_eq!(c.resolve.unknown_encounter, UnknownEncounter::PatientOnly);
        assert!(
            load(
                &format!("{MINIMAL}\n[resolve]\nphone_match = \"maybe\""),
                &[]
            )
            .is_err()
        );
    }

    #[test]
    fn matrix_e2ee_section() {
        let c = load(MINIMAL, &[]).unwrap();
        assert!(c.matrix.e2ee.is_none());
        let c = load(
            &format!("{MINIMAL}\n[matrix.e2ee]\nstore_dir = \"sdk\"\ntrust = \"tofu\""),
            &[],
        )
        .unwrap();
        let e = c.matrix.e2ee.unwrap();
        assert_eq!(e.store_dir, PathBuf::from("sdk"));
        assert_eq!(e.trust, TrustPolicy::Tofu);
        assert_eq!(e.undecryptable_after, Duration::from_secs(86_400));
        assert_eq!(e.recovery_key_file, None);
        let c = load(
            &format!("{MINIMAL}\n[matrix.e2ee]\nstore_dir = \"sdk\""),
            &[],
        )
        .unwrap();
        assert_eq!(c.matrix.e2ee.unwrap().trust, TrustPolicy::Verified);
        for bad in ["trust = \"maybe\"", "unknown = 1"] {
            assert!(
                load(
                    &format!("{MINIMAL}\n[matrix.e2ee]\nstore_dir = \"sdk\"\n{bad}"),
                    &[]
                )
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn secrets_are_masked() {
        let c = load(MINIMAL, &[("CHARTBRIDGE_KIS__BEARER_TOKEN", "tok-123")]).unwrap();
        let shown = c.to_masked_toml();
        assert!(!shown.contains("guest:guest"), "{shown}");
        assert!(!shown.contains("tok-123"), "{shown}");
        assert!(!format!("{c:?}").contains("tok-123"));
        assert_eq!(c.kis.bearer_token.unwrap().expose(), "tok-123");
    }

    #[test]
    fn invalid_cron_is_explained() {
        let err = load(
            &format!("{MINIMAL}\n[schedule]\nretention_sweep = \"*/5 * * * *\""),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("retention_sweep"), "{err}");
    }

    #[test]
    fn deletion_adapters_are_chosen_per_source() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.deletion.matrix.adapter, AdapterKind::None);
        assert_eq!(c.deletion.stuck_after, Duration::from_secs(3600));
        let err = load(
            &format!("{MINIMAL}\n[deletion.matrix]\nadapter = \"whatsapp\""),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("deletion.matrix.adapter"), "{err}");
        let err = load(
            &format!("{MINIMAL}\n[deletion.matrix]\nadapter = \"matrix\""),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("matrix.homeserver_url"), "{err}");
        let c = load(
            &format!(
                "{MINIMAL}\n[deletion]\nstuck_after = \"10m\"\n[deletion.matrix]\nadapter = \"matrix\"\n\
                 [matrix]\nhomeserver_url = \"http://127.0.0.1:8448\"\naccess_token = \"syt_x\""
            ),
            &[("CHARTBRIDGE_DELETION__WHATSAPP__ADAPTER", "none")],
        )
        .unwrap();
        assert_eq!(c.deletion.matrix.adapter, AdapterKind::Matrix);
        assert_eq!(c.deletion.stuck_after, Duration::from_secs(600));
        assert!(!c.to_masked_toml().contains("syt_x"));
    }

    #[test]
    fn i13_schedules_default_to_short_retention_and_refuse_bad_cron() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(
            c.schedule.metadata_retention,
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(c.schedule.split_wait, Duration::from_secs(900));
        let c = load(
            &format!("{MINIMAL}\n[schedule]\nmetadata_purge = \"0 0 * * * *\"\nmetadata_retention = \"2d\"\nsplit_wait = \"90s\""),
            &[("CHARTBRIDGE_SCHEDULE__SPLIT_SWEEP", "*/10 * * * * *")],
        )
        .unwrap();
        assert_eq!(
            c.schedule.metadata_retention,
            Duration::from_secs(2 * 86_400)
        );
        assert_eq!(c.schedule.split_wait, Duration::from_secs(90));
        assert_eq!(c.schedule.split_sweep, "*/10 * * * * *");
        for key in ["metadata_purge", "split_sweep"] {
            let err = load(
                &format!("{MINIMAL}\n[schedule]\n{key} = \"every day\""),
                &[],
            )
            .unwrap_err();
            let text = err.to_string();
            assert!(text.contains(&format!("schedule.{key}")), "{text}");
            assert!(text.contains("seconds first"), "{text}");
        }
        let err = load(
            &format!("{MINIMAL}\n[schedule]\nsplit_wait = \"soon\""),
            &[],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("split_wait") || err.to_string().contains("soon"),
            "{err}"
        );
    }

    #[test]
    fn example_config_loads() {
        let text = include_str!("../deploy/chartbridge.example.toml");
        let c = load(text, &[]).unwrap();
        assert_eq!(c.schedule.split_sweep, "0 * * * * *");
    }

    #[test]
    fn proofs_default_to_unsigned_every_ten_minutes() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.proofs.origin, "chartbridge.invalid/log");
        assert_eq!(c.proofs.signing_key_file, None);
        assert_eq!(c.proofs.checkpoint_schedule, "0 */10 * * * *");
        let c = load(
            &format!(
                "{MINIMAL}\n[proofs]\norigin = \"kis.example/log\"\nsigning_key_file = \"s.key\""
            ),
            &[],
        )
        .unwrap();
        assert_eq!(c.proofs.origin, "kis.example/log");
        assert_eq!(c.proofs.signing_key_file, Some(PathBuf::from("s.key")));
        let err = load(&format!("{MINIMAL}\n[proofs]\nsigning_key = \"x\""), &[]).unwrap_err();
        assert!(err.to_string().contains("signing_key"), "{err}");
        let err = load(&format!("{MINIMAL}\n[proofs]\norigin = \"a b\""), &[]).unwrap_err();
        assert!(err.to_string().contains("proofs.origin"), "{err}");
    }
}
