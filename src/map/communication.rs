//! Text → Communication.

use fhir_sdk::Base64Binary;
use fhir_sdk::r4b::codes::EventStatus;
use fhir_sdk::r4b::resources::{Communication, CommunicationPayload, CommunicationPayloadContent};
use fhir_sdk::r4b::types::{Annotation, Attachment, Extension, Reference};
use serde_json::Value;

use super::fhir::{
    build_err, complex_extension, date_time, identifier, int_extension, literal, logical,
    string_extension, to_json,
};
use super::{MapError, MapInput, MapSettings, PART_EXTENSION, SHA256_EXTENSION, identifier_value};
use crate::event::{Message, Party};

/// The media type of a text carried as `payload.contentAttachment`.
pub const TEXT_ATTACHMENT_TYPE: &str = "text/plain; charset=utf-8";

/// Whether `text` may be a FHIR `string` as sent: not empty, and no
/// character a `string` may not hold ([`super::fhir::not_in_string`]).
pub fn is_fhir_string(text: &str) -> bool {
    !text.is_empty() && !text.chars().any(super::fhir::not_in_string)
}

/// The text bytes of a Communication's `payload` element as built here:
/// `contentString`, or the base64 `contentAttachment.data` of a text with
/// control characters ([`is_fhir_string`]). `None` when it has neither.
pub fn payload_text(payload: &Value) -> Option<Vec<u8>> {
    match payload["contentString"].as_str() {
        Some(text) => Some(text.as_bytes().to_vec()),
        None => payload["contentAttachment"]["data"]
            .as_str()
            .and_then(super::fhir::decode_base64_binary),
    }
}

pub(super) fn build(
    input: &MapInput<'_>,
    text: &str,
    settings: &MapSettings,
) -> Result<Value, MapError> {
    let m = input.message;
    let content = if is_fhir_string(text) {
        CommunicationPayloadContent::String(text.to_owned())
    } else {
        // Control characters a `string` must not carry (FHIR R4
        // datatypes, "string"; a KIS refuses them, a database column may
        // not hold U+0000): the text travels unchanged as a text/plain
        // attachment, so it is archived as sent rather than held.
        let attachment = Attachment::builder()
            .content_type(TEXT_ATTACHMENT_TYPE.to_owned())
            .language(settings.language.clone())
            .data(Base64Binary(text.as_bytes().to_vec()))
            .size(u32::try_from(text.len()).unwrap_or(u32::MAX))
            .hash(Base64Binary(input.hashes.sha1.to_vec()))
            .build()
            .map_err(build_err("Communication.payload.contentAttachment"))?;
        CommunicationPayloadContent::Attachment(attachment)
    };
    let payload = CommunicationPayload::builder()
        .extension(vec![string_extension(
            SHA256_EXTENSION,
            &input.hashes.sha256_hex(),
        )?])
        .content(content)
        .build()
        .map_err(build_err("Communication.payload"))?;
    let mut b = Communication::builder()
        .language(settings.language.clone())
        .identifier(vec![Some(identifier(
            &settings.identifier_system,
            &identifier_value(&m.key),
        )?)])
        .status(EventStatus::Completed)
        .subject(literal(input.patient)?)
        .sent(date_time(m.sent_at)?)
        .sender(party(m, &m.sender)?)
        .payload(vec![Some(payload)]);
    if let Some(encounter) = input.encounter {
        b = b.encounter(literal(encounter)?);
    }
    if let Some(received) = m.received_at {
        b = b.received(date_time(received)?);
    }
    if !m.recipients.is_empty() {
        let recipients = m
            .recipients
            .iter()
            .map(|r| party(m, r).map(Some))
            .collect::<Result<Vec<_>, _>>()?;
        b = b.recipient(recipients);
    }
    if let Some(target) = reply_target(m, settings)? {
        b = b.in_response_to(vec![Some(target)]);
    }
    if let Some(forwarded) = m.forwarded {
        // Readable where the text is read; the Provenance names it too.
        let note = Annotation::builder()
            .text(forwarded.note().to_owned())
            .build()
            .map_err(build_err("Communication.note"))?;
        b = b.note(vec![Some(note)]);
    }
    if let Some(part) = part_extension(m)? {
        b = b.extension(vec![part]);
    }
    Ok(to_json(&b.build().map_err(build_err("Communication"))?))
}

/// A participant by messenger identifier; the KIS may resolve it to a Practitioner.
pub(super) fn party(m: &Message, p: &Party) -> Result<Reference, MapError> {
    logical(
        identifier(&super::participant_system(&m.key.source), &p.id)?,
        p.display.as_deref(),
    )
}

/// The message `m` answers (WhatsApp `context.id`, Matrix `m.in_reply_to`
/// or a thread's root), as a logical reference by its message identifier
/// (`{source}:{id}`); `None` when it answers none.
pub(super) fn reply_target(
    m: &Message,
    settings: &MapSettings,
) -> Result<Option<Reference>, MapError> {
    let Some(reply_to) = &m.in_reply_to else {
        return Ok(None);
    };
    let target = identifier(
        &settings.identifier_system,
        &format!("{}:{reply_to}", m.key.source),
    )?;
    Ok(Some(logical(target, None)?))
}

pub(super) fn part_extension(m: &Message) -> Result<Option<Extension>, MapError> {
    let Some(part) = &m.part else {
        return Ok(None);
    };
    Ok(Some(complex_extension(
        PART_EXTENSION,
        vec![
            string_extension("group", &part.group_id)?,
            int_extension("index", part.index)?,
            int_extension("count", part.count)?,
        ],
    )?))
}
