//! `[adt]`: the HL7 v2 ADT feed that maintains the identity map.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdtConfig {
    /// Consume ADT messages (HL7 v2, ER7 text) from `queue`.
    #[serde(default)]
    pub enabled: bool,
    /// Queue the KIS (or an interface engine) publishes ADT messages to.
    #[serde(default = "adt_queue")]
    pub queue: String,
    /// Where ACKs go when a message names no reply-to queue, or one that is
    /// not listed in `reply_to_allowed`.
    #[serde(default = "adt_ack_queue")]
    pub ack_queue: String,
    /// Queues besides `ack_queue` that a message's AMQP `reply_to` may name;
    /// ACKs never go anywhere else.
    #[serde(default)]
    pub reply_to_allowed: Vec<String>,
    /// Country code for national phone numbers (`0151…` → `49151…`).
    #[serde(default = "default_country_code")]
    pub default_country_code: String,
    /// MSH-11 processing IDs (HL7 table 0103) whose messages are applied:
    /// `["P"]` (production) unless set. A message of another ID (`T`
    /// training, `D` debugging) is answered AR 202 and changes nothing, so
    /// a test feed pointed at a production receiver cannot re-point its
    /// patients. A test deployment sets `["T"]`.
    #[serde(default = "production_only")]
    pub processing_ids: Vec<String>,
    /// FHIR identifier system of PID-3 / MRG-1 identifiers that name no
    /// assigning authority (CX-4 empty), and of every identifier while
    /// `patient_authorities` is empty (a feed of one authority). Once
    /// authorities are listed, an identifier of another authority (a
    /// laboratory's, an insurer's) is never searched in this system.
    #[serde(default)]
    pub patient_system: Option<String>,
    /// FHIR identifier system of PV1-19 visit numbers that name no
    /// assigning authority, and of every visit number while
    /// `case_authorities` is empty; as `patient_system`.
    #[serde(default)]
    pub case_system: Option<String>,
    /// PID-3 assigning authority (CX-4 namespace) → FHIR identifier system.
    #[serde(default)]
    pub patient_authorities: std::collections::BTreeMap<String, String>,
    /// PV1-19 assigning authority → FHIR identifier system.
    #[serde(default)]
    pub case_authorities: std::collections::BTreeMap<String, String>,
    /// Also accept ADT over MLLP on this address (`host:port`); off when unset.
    /// Without `[adt.mllp_tls]` only a loopback address is accepted, unless
    /// `mllp_allow_plaintext`.
    #[serde(default)]
    pub mllp_listen: Option<String>,
    /// TLS of the MLLP listener with an allow-list of client certificates.
    #[serde(default)]
    pub mllp_tls: Option<MllpServerTls>,
    /// Accept plaintext MLLP on an address other than loopback.
    #[serde(default)]
    pub mllp_allow_plaintext: bool,
    /// MLLP connections served at once; more wait in the accept backlog.
    #[serde(default = "mllp_max_connections")]
    pub mllp_max_connections: usize,
    /// An MLLP connection that sends nothing for this long is closed.
    #[serde(default = "mllp_idle_timeout", with = "humantime_serde")]
    pub mllp_idle_timeout: Duration,
    /// A message (and a TLS handshake) must arrive whole within this long
    /// of its first byte.
    #[serde(default = "mllp_read_timeout", with = "humantime_serde")]
    pub mllp_read_timeout: Duration,
}

/// `[adt.mllp_tls]`: the listener's certificate and who may connect.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MllpServerTls {
    /// Server certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// CA bundle (PEM) client certificates must chain to.
    pub client_ca_file: PathBuf,
    /// SHA-256 fingerprints (hex, colons allowed) of the client
    /// certificates let in; any other is disconnected after the handshake.
    pub allowed_clients: Vec<String>,
}

impl AdtConfig {
    /// Plaintext MLLP only on loopback unless allowed; TLS needs clients.
    pub fn check(&self) -> Result<(), String> {
        if let Some(addr) = &self.mllp_listen {
            match &self.mllp_tls {
                Some(tls) if tls.allowed_clients.is_empty() => {
                    return Err("adt.mllp_tls.allowed_clients is empty".into());
                }
                Some(_) => {}
                None => crate::transport::check_plaintext(
                    "adt.mllp_listen",
                    addr,
                    self.mllp_allow_plaintext,
                )?,
            }
        }
        if self.mllp_max_connections == 0 {
            return Err("adt.mllp_max_connections must be at least 1".into());
        }
        Ok(())
    }

    /// Whether an ACK may go to `queue`.
    pub fn may_reply_to(&self, queue: &str) -> bool {
        queue == self.ack_queue || self.reply_to_allowed.iter().any(|q| q == queue)
    }

    /// The FHIR identifier system of a patient identifier's assigning
    /// authority (CX-4): the one `patient_authorities` lists for it, else
    /// `patient_system` for an identifier without an authority or while no
    /// authority is listed. `None`: the identifier belongs to an authority
    /// that is not the hospital's (HL7 v2 CX: an ID is unique only within
    /// its assigning authority; the v2-to-FHIR map takes CX-4 to
    /// `Identifier.system`), and is not searched in the KIS.
    pub fn patient_system_of(&self, authority: &str) -> Option<&str> {
        system_of(&self.patient_authorities, &self.patient_system, authority)
    }

    /// The FHIR identifier system of a visit number's assigning authority,
    /// as [`AdtConfig::patient_system_of`] with `case_authorities` and
    /// `case_system`.
    pub fn case_system_of(&self, authority: &str) -> Option<&str> {
        system_of(&self.case_authorities, &self.case_system, authority)
    }
}

fn system_of<'a>(
    listed: &'a std::collections::BTreeMap<String, String>,
    fallback: &'a Option<String>,
    authority: &str,
) -> Option<&'a str> {
    match listed.get(authority) {
        Some(system) => Some(system),
        None if authority.is_empty() || listed.is_empty() => fallback.as_deref(),
        None => None,
    }
}

impl Default for AdtConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            queue: adt_queue(),
            ack_queue: adt_ack_queue(),
            default_country_code: default_country_code(),
            processing_ids: production_only(),
            patient_system: None,
            case_system: None,
            patient_authorities: Default::default(),
            case_authorities: Default::default(),
            reply_to_allowed: Vec::new(),
            mllp_listen: None,
            mllp_tls: None,
            mllp_allow_plaintext: false,
            mllp_max_connections: mllp_max_connections(),
            mllp_idle_timeout: mllp_idle_timeout(),
            mllp_read_timeout: mllp_read_timeout(),
        }
    }
}

fn adt_queue() -> String {
    "chartbridge.adt".into()
}
fn adt_ack_queue() -> String {
    "chartbridge.adt.acks".into()
}
fn production_only() -> Vec<String> {
    vec![super::PRODUCTION.to_owned()]
}

fn default_country_code() -> String {
    "49".into()
}
fn mllp_max_connections() -> usize {
    16
}
fn mllp_idle_timeout() -> Duration {
    Duration::from_secs(300)
}
fn mllp_read_timeout() -> Duration {
    Duration::from_secs(30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identifier_of_an_authority_not_listed_is_not_the_hospitals() {
        let mut c = AdtConfig {
            patient_system: Some("urn:kis".into()),
            case_system: Some("urn:case".into()),
            ..AdtConfig::default()
        };
        // One authority fed, none listed: every identifier is the KIS's.
        assert_eq!(c.patient_system_of("KIS"), Some("urn:kis"));
        assert_eq!(c.patient_system_of("LABOR"), Some("urn:kis"));
        assert_eq!(c.patient_system_of(""), Some("urn:kis"));
        c.patient_authorities
            .insert("KIS".into(), "urn:kis:listed".into());
        c.case_authorities
            .insert("KIS".into(), "urn:case:listed".into());
        assert_eq!(c.patient_system_of("KIS"), Some("urn:kis:listed"));
        // PID-3 `88123^^^LABOR` is the laboratory's number, not a KIS one.
        assert_eq!(c.patient_system_of("LABOR"), None);
        assert_eq!(c.patient_system_of(""), Some("urn:kis"));
        assert_eq!(c.case_system_of("KIS"), Some("urn:case:listed"));
        assert_eq!(c.case_system_of("OTHER"), None);
        assert_eq!(c.case_system_of(""), Some("urn:case"));
        c.patient_system = None;
        assert_eq!(c.patient_system_of(""), None);
    }
}
