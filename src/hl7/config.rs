//! `[adt]`: the HL7 v2 ADT feed that maintains the identity map.

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
    /// Where ACKs go when a message names no reply-to queue.
    #[serde(default = "adt_ack_queue")]
    pub ack_queue: String,
    /// Country code for national phone numbers (`0151…` → `49151…`).
    #[serde(default = "default_country_code")]
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
            queue: adt_queue(),
            ack_queue: adt_ack_queue(),
            default_country_code: default_country_code(),
            patient_system: None,
            case_system: None,
            patient_authorities: Default::default(),
            case_authorities: Default::default(),
            mllp_listen: None,
        }
    }
}

fn adt_queue() -> String {
    "chartbridge.adt".into()
}
fn adt_ack_queue() -> String {
    "chartbridge.adt.acks".into()
}
fn default_country_code() -> String {
    "49".into()
}
