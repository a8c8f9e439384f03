//! Media → Binary + DocumentReference (ISiK Dokumentenaustausch,
//! ISiKDokumentenMetadaten; IHE MHD).

use base64::Engine;
use fhir_sdk::Base64Binary;
use fhir_sdk::r4b::codes::{CompositionStatus, DocumentReferenceStatus};
use fhir_sdk::r4b::resources::{
    Binary, DocumentReference, DocumentReferenceContent, DocumentReferenceContext,
};
use fhir_sdk::r4b::types::{Attachment, Identifier};
use serde_json::Value;

use super::communication::{part_extension, party, reply_target};
use super::fhir::{
    build_err, coding, concept, concept_of, date_time, fhir_string, identifier, instant, literal,
    string_extension, to_json,
};
use super::{MapError, MapInput, MapSettings, SHA256_EXTENSION, identifier_value, stable_id};
use crate::classify::DocumentType;
use crate::event::Media;

/// The KDL code system (Klinische Dokumentenklassen-Liste).
pub const KDL_SYSTEM: &str = "http://dvmd.de/fhir/CodeSystem/kdl";
const FORMAT_SYSTEM: &str = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode";
const FORMAT_CODE: &str = "urn:ihe:iti:xds:2017:mimeTypeSufficient";

pub(super) fn binary(
    input: &MapInput<'_>,
    media: &Media,
    document: &str,
) -> Result<Value, MapError> {
    let b = Binary::builder()
        .content_type(media.mime_type.clone())
        .security_context(literal(document)?)
        .data(Base64Binary(input.content.to_vec()))
        .build()
        .map_err(build_err("Binary"))?;
    Ok(to_json(&b))
}

pub(super) fn document_reference(
    input: &MapInput<'_>,
    media: &Media,
    document_type: &DocumentType,
    binary_url: &str,
    settings: &MapSettings,
) -> Result<Value, MapError> {
    let m = input.message;
    let len = input
        .binary
        .map_or(input.content.len() as u64, crate::media::spool::Spool::len);
    let size = u32::try_from(len).map_err(|_| MapError::Build {
        resource: "Attachment",
        message: "content larger than 4 GiB".into(),
    })?;
    let mut attachment = Attachment::builder()
        .extension(vec![string_extension(
            SHA256_EXTENSION,
            &input.hashes.sha256_hex(),
        )?])
        .content_type(media.mime_type.clone())
        .language(settings.language.clone())
        .url(binary_url.to_owned())
        .size(size)
        .hash(Base64Binary(input.hashes.sha1.to_vec()))
        .creation(date_time(m.sent_at)?);
    if let Some(name) = media.file_name.as_deref().and_then(fhir_string) {
        attachment = attachment.title(name);
    }
    let content = DocumentReferenceContent::builder()
        .attachment(attachment.build().map_err(build_err("Attachment"))?)
        .format(coding(FORMAT_SYSTEM, FORMAT_CODE, "mimeType Sufficient")?)
        .build()
        .map_err(build_err("DocumentReference.content"))?;
    let mut context = DocumentReferenceContext::builder()
        .facility_type(concept(&settings.facility_type)?)
        .practice_setting(concept(&settings.practice_setting)?);
    if let Some(encounter) = input.encounter {
        context = context.encounter(vec![Some(literal(encounter)?)]);
    }
    // A medium sent in reply (a photo answering "please send a picture";
    // WhatsApp `context.id`, Matrix `m.in_reply_to` or a thread's root):
    // the message it answers, by its logical identifier, as
    // Communication.inResponseTo names it for a text.
    if let Some(target) = reply_target(m, settings)? {
        context = context.related(vec![Some(target)]);
    }
    let description = media
        .caption
        .as_deref()
        .and_then(fhir_string)
        .or_else(|| media.file_name.as_deref().and_then(fhir_string))
        .unwrap_or_else(|| format!("{} ({})", document_type.display, m.key.source));
    let description = match m.forwarded {
        Some(f) => format!("{}. {description}", f.note()),
        None => description,
    };
    let mut b = DocumentReference::builder()
        .master_identifier(master_identifier(input)?)
        .identifier(vec![Some(identifier(
            &settings.identifier_system,
            &identifier_value(&m.key),
        )?)])
        .status(DocumentReferenceStatus::Current)
        .doc_status(CompositionStatus::Final)
        .r#type(concept_of(coding(
            KDL_SYSTEM,
            &document_type.code,
            &document_type.display,
        )?)?)
        .subject(literal(input.patient)?)
        .author(vec![Some(author(m)?)])
        .date(instant(input.archived_at)?)
        .description(description)
        .security_label(vec![Some(concept(&settings.confidentiality)?)])
        .content(vec![Some(content)])
        .context(
            context
                .build()
                .map_err(build_err("DocumentReference.context"))?,
        );
    if let Some(part) = part_extension(m)? {
        b = b.extension(vec![part]);
    }
    Ok(to_json(&b.build().map_err(build_err("DocumentReference"))?))
}

/// The sender as author (ISiK must-support `author.display`): a logical
/// reference by messenger identifier, with the sender's display name or,
/// without one, the messenger's name.
fn author(m: &crate::event::Message) -> Result<fhir_sdk::r4b::types::Reference, MapError> {
    let mut sender = m.sender.clone();
    if sender.display.as_deref().and_then(fhir_string).is_none() {
        sender.display = Some(format!("{} participant", m.key.source));
    }
    party(m, &sender)
}

/// `urn:ietf:rfc:3986` + `urn:uuid:` derived from the message key, as ISiK asks.
fn master_identifier(input: &MapInput<'_>) -> Result<Identifier, MapError> {
    identifier(
        "urn:ietf:rfc:3986",
        &format!("urn:uuid:{}", stable_id(&input.message.key, "document")),
    )
}

/// Base64 of the SHA-1, as FHIR's Attachment.hash wants it.
pub fn sha1_base64(sha1: &[u8; 20]) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha1)
}
