//! `[kis]`: the hospital information system's FHIR R4 endpoint, how
//! requests to it authenticate (`[kis.auth]`), TLS and the output mode.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::config::secret::Secret;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KisConfig {
    /// FHIR R4 base URL, e.g. `https://kis.example/fhir`; `http://` only to
    /// loopback unless `allow_plaintext`.
    #[serde(deserialize_with = "http_url")]
    pub base_url: String,
    /// Accept `http://` base and token URLs to a host other than loopback.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// Bearer token sent with every request, if the KIS wants one.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// Identifier system of the messenger message id in every resource.
    #[serde(default = "d::identifier_system")]
    pub identifier_system: String,
    /// Request timeout.
    #[serde(default = "d::timeout", with = "humantime_serde")]
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
    /// Take the stored resource for the read-back from the
    /// transaction-response when the KIS returns it there (`Prefer:
    /// return=representation`) instead of reading it again; `false` always
    /// reads (`GET`).
    #[serde(default = "d::read_back")]
    pub read_back_from_response: bool,
    /// How long a Patient/Encounter identifier search's match is reused
    /// (`push::SearchCache`); `0s` searches every time. ADT updates and
    /// merges received by this worker invalidate the identifiers they name.
    #[serde(default = "d::search_cache_ttl", with = "humantime_serde")]
    pub search_cache_ttl: Duration,
    /// Matches the search cache holds at most; `0` disables it.
    #[serde(default = "d::search_cache_size")]
    pub search_cache_size: usize,
    /// Messages per FHIR transaction (`push::Batcher`): `1` (default) sends
    /// each message's Bundle alone; `N > 1` sends the Bundles of up to N
    /// messages ready close together as one transaction, split in halves
    /// when the KIS refuses it. Opt-in per KIS: atomicity then spans
    /// messages (docs/kis-output.md).
    #[serde(default = "d::batch_max")]
    pub batch_max: usize,
    /// How long a batch waits for more messages after its first.
    #[serde(default = "d::batch_linger", with = "humantime_serde")]
    pub batch_linger: Duration,
    /// Archived media longer than this many bytes are spooled to disk
    /// while they download and uploaded as a Binary of their own (`PUT
    /// Binary/{id}`, streamed) before the transaction, which then carries
    /// only the DocumentReference pointing at it; shorter ones travel
    /// base64 inside the transaction. Default 1 MiB (docs/kis-output.md).
    #[serde(default = "d::binary_upload_threshold")]
    pub binary_upload_threshold: u64,
    /// How requests to the KIS authenticate (OAuth2, DSK II.1).
    #[serde(default)]
    pub auth: super::auth_config::AuthConfig,
    /// Client certificate and CA bundle for mutual TLS (DSK I.4, II.1).
    #[serde(default)]
    pub tls: TlsConfig,
    /// `fhir` (default) or `hl7v2_mdm` (MDM^T02 over MLLP, `[kis.mllp]`).
    #[serde(default)]
    pub output: OutputMode,
    /// The MLLP peer of `output = "hl7v2_mdm"`.
    #[serde(default)]
    pub mllp: MllpConfig,
    /// `output = "document_reference_only"`: the length of a transcript
    /// window (UTC-aligned; `1d` = one transcript per conversation and day).
    #[serde(default = "d::transcript_window", with = "humantime_serde")]
    pub transcript_window: Duration,
    /// The KDL document type of transcripts.
    #[serde(default = "d::transcript_document_type")]
    pub transcript_document_type: crate::classify::DocumentType,
}

impl KisConfig {
    /// The checks that span keys of `[kis]`; the error names the keys.
    pub fn check(&self) -> Result<(), String> {
        if self.backoff_initial > self.backoff_max {
            return Err("kis.backoff_initial must not exceed kis.backoff_max".into());
        }
        self.tls.validate()?;
        super::url::check_transport("kis.base_url", &self.base_url, self.allow_plaintext)?;
        if let Some(token_url) = self.auth.token_url() {
            super::url::check_transport("kis.auth.token_url", token_url, self.allow_plaintext)?;
        }
        if self.output == OutputMode::Hl7v2Mdm {
            if self.mllp.address.is_empty() {
                return Err("kis.mllp.address is required for output = \"hl7v2_mdm\"".into());
            }
            if self.mllp.tls.is_none() {
                crate::transport::check_plaintext(
                    "kis.mllp.address",
                    &self.mllp.address,
                    self.mllp.allow_plaintext,
                )?;
            }
        }
        Ok(())
    }
}

fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let url = String::deserialize(d)?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(serde::de::Error::custom(
            "kis.base_url must be an http(s) URL",
        ));
    }
    Ok(url)
}

/// A FHIR Coding given in configuration.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CodingConfig {
    pub system: String,
    pub code: String,
    pub display: String,
}

/// `[kis] output`: how archived content reaches the KIS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputMode {
    /// FHIR R4 transactions (Communication / DocumentReference + Binary).
    #[default]
    Fhir,
    /// HL7 v2.5 MDM^T02 over MLLP (`[kis.mllp]`), from the same mapping.
    Hl7v2Mdm,
    /// FHIR, with text held and archived as one transcript document per
    /// conversation and window (`crate::transcript`); media as `Fhir`.
    DocumentReferenceOnly,
}

/// `[kis.tls]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain presented to the KIS (leaf first).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1) of the client certificate.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// PEM CA bundle; when set, only these CAs are trusted for the KIS and
    /// its token endpoint (the system roots are not).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl TlsConfig {
    /// A client certificate comes with its key; the error names the keys.
    pub fn validate(&self) -> Result<(), String> {
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err("kis.tls.client_cert_file and kis.tls.client_key_file go together".into());
        }
        Ok(())
    }
}

/// `[kis.mllp]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MllpConfig {
    /// `host:port` of the KIS's MLLP listener.
    #[serde(default)]
    pub address: String,
    #[serde(default = "d::mllp_app")]
    pub sending_application: String,
    #[serde(default = "d::mllp_app")]
    pub sending_facility: String,
    #[serde(default = "d::mllp_kis")]
    pub receiving_application: String,
    #[serde(default = "d::mllp_kis")]
    pub receiving_facility: String,
    /// Assigning authority of patient and visit numbers (PID-3, PV1-19).
    #[serde(default = "d::mllp_kis")]
    pub assigning_authority: String,
    /// How long to wait for the ACK.
    #[serde(default = "d::mllp_ack_timeout", with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// TLS towards the peer; without it `address` must be loopback unless
    /// `allow_plaintext`.
    #[serde(default)]
    pub tls: Option<MllpClientTls>,
    /// Accept plaintext MLLP to a host other than loopback.
    #[serde(default)]
    pub allow_plaintext: bool,
}

/// `[kis.mllp.tls]`: whom the MLLP peer must prove to be, and who we are.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MllpClientTls {
    /// CA bundle (PEM) the peer's certificate must chain to (only these roots).
    pub ca_file: PathBuf,
    /// Client certificate (PEM) presented to the peer.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Name the peer's certificate must carry; default the host of `address`.
    #[serde(default)]
    pub server_name: Option<String>,
}

impl Default for MllpConfig {
    fn default() -> Self {
        Self {
            address: String::new(),
            sending_application: d::mllp_app(),
            sending_facility: d::mllp_app(),
            receiving_application: d::mllp_kis(),
            receiving_facility: d::mllp_kis(),
            assigning_authority: d::mllp_kis(),
            ack_timeout: d::mllp_ack_timeout(),
            tls: None,
            allow_plaintext: false,
        }
    }
}

/// Defaults of `[kis]`.
mod d {
    use super::CodingConfig;
    use std::time::Duration;

    pub fn identifier_system() -> String {
        "urn:chartbridge:messenger-message".into()
    }
    pub fn timeout() -> Duration {
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
    pub fn search_cache_ttl() -> Duration {
        Duration::from_secs(60)
    }
    pub fn batch_max() -> usize {
        1
    }
    pub fn batch_linger() -> Duration {
        Duration::from_millis(5)
    }
    pub fn search_cache_size() -> usize {
        10_000
    }
    pub fn binary_upload_threshold() -> u64 {
        1024 * 1024
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
    pub fn mllp_app() -> String {
        "CHARTBRIDGE".into()
    }
    pub fn mllp_kis() -> String {
        "KIS".into()
    }
    pub fn mllp_ack_timeout() -> Duration {
        Duration::from_secs(30)
    }
}
