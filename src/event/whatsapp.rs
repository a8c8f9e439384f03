//! WhatsApp Business Cloud API webhook payloads, as Meta posts them.
//!
//! Text, image, document, audio, video and sticker messages become
//! [`Message`]s; media are references resolved through the media API.
//! Statuses, reactions and other entries without archivable content are
//! counted as skipped.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{
    Body, DecodeError, DecodeErrorCode, Decoded, Format, Media, MediaLocation, Message, MessageKey,
    Party, Role, SkipKind, parse_sha256,
};

/// Source name of WhatsApp messages.
pub const SOURCE: &str = "whatsapp";

#[derive(Deserialize)]
struct Webhook {
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    value: Value,
}

#[derive(Deserialize)]
struct Value {
    metadata: Metadata,
    #[serde(default)]
    contacts: Vec<Contact>,
    #[serde(default)]
    messages: Vec<WaMessage>,
    #[serde(default)]
    statuses: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Metadata {
    phone_number_id: String,
}

#[derive(Deserialize)]
struct Contact {
    wa_id: String,
    #[serde(default)]
    profile: Option<Profile>,
}

#[derive(Deserialize)]
struct Profile {
    name: Option<String>,
}

#[derive(Deserialize)]
struct WaMessage {
    from: String,
    id: String,
    timestamp: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    context: Option<Context>,
    #[serde(default)]
    text: Option<Text>,
    #[serde(default)]
    image: Option<WaMedia>,
    #[serde(default)]
    document: Option<WaMedia>,
    #[serde(default)]
    audio: Option<WaMedia>,
    #[serde(default)]
    video: Option<WaMedia>,
    #[serde(default)]
    sticker: Option<WaMedia>,
}

#[derive(Deserialize)]
struct Context {
    id: Option<String>,
}

#[derive(Deserialize)]
struct Text {
    body: String,
}

#[derive(Deserialize)]
struct WaMedia {
    id: String,
    mime_type: String,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    caption: Option<String>,
    #[serde(default)]
    filename: Option<String>,
}

fn invalid(detail: impl Into<String>) -> DecodeError {
    DecodeError::new(DecodeErrorCode::InvalidField, detail)
}

pub(super) fn decode(value: serde_json::Value) -> Result<Decoded, DecodeError> {
    let hook: Webhook = serde_json::from_value(value).map_err(|e| {
        DecodeError::new(
            DecodeErrorCode::SchemaViolation,
            format!(
                "not a WhatsApp webhook payload: {}",
                super::json_error_class(&e)
            ),
        )
    })?;
    let mut decoded = Decoded::of(Format::WhatsApp);
    for (e, entry) in hook.entry.into_iter().enumerate() {
        for (c, change) in entry.changes.into_iter().enumerate() {
            let value = change.value;
            decoded
                .skipped
                .extend(std::iter::repeat_n(SkipKind::Status, value.statuses.len()));
            for (m, wa) in value.messages.into_iter().enumerate() {
                let place = format!("entry[{e}].changes[{c}].value.messages[{m}]");
                match message(&value.metadata, &value.contacts, wa, &place)? {
                    Some(msg) => decoded.messages.push(msg),
                    None => decoded.skipped.push(SkipKind::Reaction),
                }
            }
        }
    }
    Ok(decoded)
}

fn message(
    metadata: &Metadata,
    contacts: &[Contact],
    wa: WaMessage,
    place: &str,
) -> Result<Option<Message>, DecodeError> {
    if wa.id.is_empty() || wa.id.len() > 255 || wa.id.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(invalid(format!("{place}.id: not a message id")));
    }
    if wa.from.is_empty() {
        return Err(invalid(format!("{place}.from: empty")));
    }
    let sent_at = wa
        .timestamp
        .parse::<i64>()
        .ok()
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0))
        .ok_or_else(|| invalid(format!("{place}.timestamp: not a unix time")))?;
    let body = match wa.kind.as_str() {
        "text" => match wa.text {
            Some(t) if !t.body.is_empty() => Body::Text(t.body),
            _ => return Err(invalid(format!("{place}.text: missing body"))),
        },
        kind @ ("image" | "document" | "audio" | "video" | "sticker") => {
            let media = match kind {
                "image" => wa.image,
                "document" => wa.document,
                "audio" => wa.audio,
                "video" => wa.video,
                _ => wa.sticker,
            }
            .ok_or_else(|| invalid(format!("{place}.{kind}: missing")))?;
            Body::Media(self::media(media, place, kind)?)
        }
        _ => return Ok(None),
    };
    let display = contacts
        .iter()
        .find(|c| c.wa_id == wa.from)
        .and_then(|c| c.profile.as_ref())
        .and_then(|p| p.name.clone());
    Ok(Some(Message {
        key: MessageKey {
            source: SOURCE.to_owned(),
            message_id: wa.id.clone(),
        },
        event_id: wa.id,
        conversation: format!("{}:{}", metadata.phone_number_id, wa.from),
        sender: Party {
            id: wa.from,
            role: Role::Unknown,
            display,
        },
        recipients: Vec::new(),
        sent_at,
        received_at: None,
        in_reply_to: wa.context.and_then(|c| c.id),
        replaces: None,
        body,
        part: None,
        case: None,
        mark: None,
    }))
}

fn media(media: WaMedia, place: &str, kind: &str) -> Result<Media, DecodeError> {
    let declared_sha256 = media
        .sha256
        .as_deref()
        .map(|s| {
            parse_sha256(s).ok_or_else(|| invalid(format!("{place}.{kind}.sha256: not a SHA-256")))
        })
        .transpose()?;
    let mime_type = media
        .mime_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if !mime_type.contains('/') {
        return Err(invalid(format!(
            "{place}.{kind}.mime_type: not a media type"
        )));
    }
    Ok(Media {
        mime_type,
        file_name: media.filename,
        caption: media.caption,
        declared_size: None,
        declared_sha256,
        location: MediaLocation::Reference(media.id),
    })
}

#[cfg(test)]
mod tests {
    use super::super::decode as decode_payload;
    use super::*;

    fn hook(messages: serde_json::Value) -> Vec<u8> {
        serde_json::json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "4930000", "phone_number_id": "PN1"},
                "contacts": [{"profile": {"name": "Erika"}, "wa_id": "4917000"}],
                "messages": messages
            }}]}]
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn several_messages_in_one_payload() {
        let payload = hook(serde_json::json!([
            {"from": "4917000", "id": "wamid.A", "timestamp": "1764320000", "type": "text",
             "text": {"body": "Hello"}},
            {"from": "4917000", "id": "wamid.B", "timestamp": "1764320001", "type": "image",
             "image": {"mime_type": "image/jpeg", "sha256": "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=", "id": "M1"},
             "context": {"from": "4930000", "id": "wamid.A"}},
            {"from": "4917000", "id": "wamid.C", "timestamp": "1764320002", "type": "reaction",
             "reaction": {"message_id": "wamid.A", "emoji": "x"}}
        ]));
        let decoded = decode_payload(&payload, 1 << 20).unwrap();
        assert_eq!(decoded.format, Format::WhatsApp);
        assert_eq!(decoded.messages.len(), 2);
        assert_eq!(decoded.skipped, vec![SkipKind::Reaction]);
        let image = &decoded.messages[1];
        assert_eq!(image.conversation, "PN1:4917000");
        assert_eq!(image.in_reply_to.as_deref(), Some("wamid.A"));
        assert_eq!(image.sender.display.as_deref(), Some("Erika"));
        let Body::Media(m) = &image.body else {
            panic!("not media")
        };
        assert_eq!(m.location, MediaLocation::Reference("M1".into()));
        assert!(m.declared_sha256.is_some());
    }

    #[test]
    fn broken_messages_are_refused_with_their_place() {
        let payload = hook(serde_json::json!([
            {"from": "4917000", "id": "wamid.A", "timestamp": "yesterday", "type": "text",
             "text": {"body": "Hello"}}
        ]));
        let err = decode_payload(&payload, 1 << 20).unwrap_err();
        assert_eq!(err.code, DecodeErrorCode::InvalidField);
        assert!(err.detail.contains("messages[0].timestamp"), "{err}");
        let payload = hook(serde_json::json!([{"id": "wamid.A"}]));
        let err = decode_payload(&payload, 1 << 20).unwrap_err();
        assert_eq!(err.code, DecodeErrorCode::SchemaViolation);
    }
}
