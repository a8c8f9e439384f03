//! Pure mapping of one message into one FHIR R4 (4.0.1) transaction Bundle.
//!
//! Text becomes a Communication; media become a DocumentReference (ISiK
//! Dokumentenaustausch elements) with its Binary; each gets a Provenance.
//! Resources are built with fhir-sdk's R4B model, whose Communication,
//! DocumentReference, Binary and Provenance serialise to valid R4; the
//! integration tests check that against a validating R4 server.
//!
//! Idempotency: Communication and DocumentReference are conditional creates
//! (`ifNoneExist` on the message identifier); Binary and Provenance, which
//! have no searchable identifier, are `PUT` to ids derived from the message
//! key, so a retry rewrites the same resource instead of adding one. A
//! medium above `kis.binary_upload_threshold` is `PUT` to the same Binary
//! id before the transaction, outside it ([`MapInput::binary`]).

mod communication;
pub use communication::{TEXT_ATTACHMENT_TYPE, is_fhir_string, payload_text};
pub mod document;
mod fhir;
pub use fhir::decode_base64_binary;
pub mod mdm;
pub mod provenance;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

pub use crate::classify::DocumentType;
use crate::event::{Body, Message, MessageKey};
use crate::prove::ContentHashes;
use crate::push::config::{CodingConfig, KisConfig};

/// URL of the extension carrying the SHA-256 (lowercase hex) of archived
/// content; see `schemas/StructureDefinition-content-sha256.json`.
pub const SHA256_EXTENSION: &str =
    "https://chartbridge.dev/fhir/StructureDefinition/content-sha256";

/// The lowercase hex SHA-256 of the [`SHA256_EXTENSION`] in a resource's or
/// attachment's `extension` array; `None` when there is none.
pub fn sha256_extension(extensions: &Value) -> Option<&str> {
    extensions
        .as_array()?
        .iter()
        .find(|e| e["url"] == SHA256_EXTENSION)?["valueString"]
        .as_str()
}
/// URL of the complex extension saying "part x of y" (DSK II.2).
pub const PART_EXTENSION: &str = "https://chartbridge.dev/fhir/StructureDefinition/message-part";

const UUID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_3a8e_52d4_4c1b_9e0a_7b2d_c4e5_f601);

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("cannot build {resource}: {message}")]
    Build {
        resource: &'static str,
        message: String,
    },
    #[error("media content needs a document type")]
    NoDocumentType,
}

/// Settings that shape every mapped resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSettings {
    pub identifier_system: String,
    pub language: String,
    pub facility_type: CodingConfig,
    pub practice_setting: CodingConfig,
    pub confidentiality: CodingConfig,
    pub agent_name: String,
}

impl From<&KisConfig> for MapSettings {
    fn from(k: &KisConfig) -> Self {
        Self {
            identifier_system: k.identifier_system.clone(),
            language: k.language.clone(),
            facility_type: k.facility_type.clone(),
            practice_setting: k.practice_setting.clone(),
            confidentiality: k.confidentiality.clone(),
            agent_name: k.agent_name.clone(),
        }
    }
}

/// Everything the mapping needs, resolved beforehand.
#[derive(Debug)]
pub struct MapInput<'a> {
    pub message: &'a Message,
    /// The bytes to archive: the text's UTF-8 or the medium's bytes; empty
    /// when `binary` holds them.
    pub content: &'a [u8],
    /// A medium longer than `kis.binary_upload_threshold`, spooled: it is
    /// uploaded as `Binary/{stable id}` before the transaction
    /// ([`crate::push::Kis::put_binary`]), and the transaction carries only
    /// the DocumentReference that points at it.
    pub binary: Option<&'a crate::media::spool::Spool>,
    pub hashes: &'a ContentHashes,
    /// Literal reference, `Patient/{id}`.
    pub patient: &'a str,
    /// Literal reference, `Encounter/{id}`.
    pub encounter: Option<&'a str>,
    pub document_type: Option<&'a DocumentType>,
    /// The archive time; also Provenance.recorded and DocumentReference.date.
    pub archived_at: DateTime<Utc>,
}

/// The resource that represents the content in the KIS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primary {
    Communication,
    DocumentReference,
}

impl Primary {
    pub fn resource_type(self) -> &'static str {
        match self {
            Self::Communication => "Communication",
            Self::DocumentReference => "DocumentReference",
        }
    }
}

/// A transaction ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    pub bundle: Value,
    pub primary: Primary,
    /// Index of the primary resource's entry in the bundle.
    pub primary_entry: usize,
}

/// The identifier value of a message in every resource: `{source}:{message id}`.
pub fn identifier_value(key: &MessageKey) -> String {
    key.to_string()
}

/// The identifier system of a messenger's participants
/// (`Communication.sender`, `DocumentReference.author`, a retraction's
/// Provenance agent): `urn:chartbridge:{source}:participant`.
pub fn participant_system(source: &str) -> String {
    format!("urn:chartbridge:{source}:participant")
}

/// The messenger sender an archived record names: `Communication.sender`
/// or a `DocumentReference`'s first `author`, when its identifier is under
/// [`participant_system`] of `source` (`""` when that identifier has no
/// `value`: it names nobody, so no sender matches it). `None` when the
/// record carries no such identifier (a KIS that rewrote it, media
/// archived before authors were mapped): the sender is then not known
/// from the record.
pub fn recorded_sender<'a>(record: &'a serde_json::Value, source: &str) -> Option<&'a str> {
    let author = match record["resourceType"].as_str() {
        Some("DocumentReference") => &record["author"][0],
        _ => &record["sender"],
    };
    let identifier = &author["identifier"];
    (identifier["system"].as_str() == Some(participant_system(source).as_str()))
        .then(|| identifier["value"].as_str().unwrap_or_default())
}

/// A stable UUID for `what` of a message, the same on every retry.
pub fn stable_id(key: &MessageKey, what: &str) -> Uuid {
    Uuid::new_v5(&UUID_NAMESPACE, format!("{key}/{what}").as_bytes())
}

/// Maps one message into its transaction Bundle.
pub fn transaction(input: &MapInput<'_>, settings: &MapSettings) -> Result<Transaction, MapError> {
    let key = &input.message.key;
    let value = identifier_value(key);
    let identifier = crate::push::url::query(&[(
        "identifier",
        crate::push::url::SearchValue::Token {
            system: &settings.identifier_system,
            code: &value,
        },
    )]);
    let mut entries = Vec::new();
    let primary = match &input.message.body {
        Body::Text(text) => {
            let url = urn(stable_id(key, "Communication"));
            let resource = communication::build(input, text, settings)?;
            entries.push(json!({
                "fullUrl": url,
                "resource": resource,
                "request": {"method": "POST", "url": "Communication", "ifNoneExist": identifier}
            }));
            let prov = provenance::build(input, settings, &[url.as_str()])?;
            entries.push(put(key, "Provenance", prov));
            Primary::Communication
        }
        Body::Media(media) => {
            let document_type = input.document_type.ok_or(MapError::NoDocumentType)?;
            let url = urn(stable_id(key, "DocumentReference"));
            let binary_id = stable_id(key, "Binary");
            if input.binary.is_none() {
                let binary = document::binary(input, media, &url)?;
                entries.push(put(key, "Binary", binary));
            }
            let doc = document::document_reference(
                input,
                media,
                document_type,
                &format!("Binary/{binary_id}"),
                settings,
            )?;
            entries.push(json!({
                "fullUrl": url,
                "resource": doc,
                "request": {"method": "POST", "url": "DocumentReference", "ifNoneExist": identifier}
            }));
            let binary_ref = format!("Binary/{binary_id}");
            let prov = provenance::build(input, settings, &[url.as_str(), binary_ref.as_str()])?;
            entries.push(put(key, "Provenance", prov));
            Primary::DocumentReference
        }
    };
    let primary_entry = match primary {
        Primary::Communication => 0,
        Primary::DocumentReference if input.binary.is_some() => 0,
        Primary::DocumentReference => 1,
    };
    Ok(Transaction {
        bundle: json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        primary,
        primary_entry,
    })
}

fn urn(id: Uuid) -> String {
    format!("urn:uuid:{id}")
}

/// An update-as-create entry at the stable id of `resource_type`.
fn put(key: &MessageKey, resource_type: &str, mut resource: Value) -> Value {
    let id = stable_id(key, resource_type);
    resource["id"] = Value::String(id.to_string());
    json!({
        "resource": resource,
        "request": {"method": "PUT", "url": format!("{resource_type}/{id}")}
    })
}

#[cfg(test)]
mod tests;
