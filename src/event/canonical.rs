//! The canonical event: validated against `schemas/event.schema.json`, then
//! parsed into a [`Message`]. Also the form quarantined messages are kept in.

use std::sync::LazyLock;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    Body, CaseLink, DecodeError, DecodeErrorCode, Forwarded, Mark, Media, MediaLocation, Message,
    MessageKey, MessageKind, Part, Party, parse_sha256,
};

/// Value of the `schema` member of a canonical event.
pub const SCHEMA_ID: &str = "chartbridge.event/v1";

static VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../schemas/event.schema.json"))
            .expect("the bundled event schema is JSON");
    jsonschema::validator_for(&schema).expect("the bundled event schema compiles")
});

/// The canonical event on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanonicalEvent {
    pub schema: String,
    pub source: String,
    pub event_id: String,
    pub message_id: String,
    pub conversation: Conversation,
    pub sender: Party,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<Party>,
    pub sent_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<CanonicalMedia>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<Part>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<CaseLink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<Mark>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<MessageKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded: Option<Forwarded>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanonicalMedia {
    pub mime_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The referenced bytes are a Matrix encrypted attachment's ciphertext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<CanonicalEncryption>,
}

/// Keys of an encrypted referenced medium: `key` and `iv` in standard
/// base64, `ciphertext_sha256` in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanonicalEncryption {
    pub key: String,
    pub iv: String,
    pub ciphertext_sha256: String,
}

/// Validates `value` against the schema, then parses it.
pub(super) fn decode(value: serde_json::Value) -> Result<Message, DecodeError> {
    if let Some(first) = VALIDATOR.iter_errors(&value).next() {
        let count = VALIDATOR.iter_errors(&value).count();
        return Err(DecodeError::new(
            DecodeErrorCode::SchemaViolation,
            format!(
                "{count} violation(s); first at '{}' ({})",
                first.instance_path(),
                first.kind().keyword()
            ),
        ));
    }
    let event: CanonicalEvent = serde_json::from_value(value).map_err(|e| {
        DecodeError::new(
            DecodeErrorCode::SchemaViolation,
            format!(
                "does not fit the event type: {}",
                super::json_error_class(&e)
            ),
        )
    })?;
    event.into_message()
}

fn field_error(field: &str, problem: &str) -> DecodeError {
    DecodeError::new(DecodeErrorCode::InvalidField, format!("{field}: {problem}"))
}

fn timestamp(field: &str, text: &str) -> Result<DateTime<Utc>, DecodeError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| field_error(field, "not an RFC 3339 timestamp"))
}

impl CanonicalEvent {
    /// Parses a schema-valid event into a message (values the schema cannot
    /// express, such as real dates and base64, are checked here).
    pub fn into_message(self) -> Result<Message, DecodeError> {
        let sent_at = timestamp("sent_at", &self.sent_at)?;
        let received_at = self
            .received_at
            .as_deref()
            .map(|t| timestamp("received_at", t))
            .transpose()?;
        let body = match (self.text, self.media) {
            (Some(text), None) => Body::Text(text),
            (None, Some(media)) => Body::Media(media.into_media()?),
            _ => return Err(field_error("text/media", "exactly one is required")),
        };
        if let Some(part) = &self.part
            && part.index > part.count
        {
            return Err(field_error("part", "index exceeds count"));
        }
        Ok(Message {
            key: MessageKey {
                source: self.source,
                message_id: self.message_id,
            },
            event_id: self.event_id,
            conversation: self.conversation.id,
            sender: self.sender,
            recipients: self.recipients,
            sent_at,
            received_at,
            in_reply_to: self.in_reply_to,
            replaces: self.replaces,
            body,
            part: self.part,
            case: self.case,
            mark: self.mark,
            kind: self.kind,
            forwarded: self.forwarded,
        })
    }

    /// The canonical form of a message, for quarantine and re-publication.
    pub fn from_message(message: &Message) -> Self {
        let (text, media) = match &message.body {
            Body::Text(t) => (Some(t.clone()), None),
            Body::Media(m) => (None, Some(CanonicalMedia::from_media(m))),
        };
        Self {
            schema: SCHEMA_ID.to_owned(),
            source: message.key.source.clone(),
            event_id: message.event_id.clone(),
            message_id: message.key.message_id.clone(),
            conversation: Conversation {
                id: message.conversation.clone(),
            },
            sender: message.sender.clone(),
            recipients: message.recipients.clone(),
            sent_at: rfc3339(message.sent_at),
            received_at: message.received_at.map(rfc3339),
            in_reply_to: message.in_reply_to.clone(),
            replaces: message.replaces.clone(),
            text,
            media,
            part: message.part.clone(),
            case: message.case.clone(),
            mark: message.mark,
            kind: message.kind,
            forwarded: message.forwarded,
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

impl CanonicalMedia {
    fn into_media(self) -> Result<Media, DecodeError> {
        let declared_sha256 = self
            .sha256
            .as_deref()
            .map(|s| parse_sha256(s).ok_or_else(|| field_error("media.sha256", "not a SHA-256")))
            .transpose()?;
        let location = match (self.data_base64, self.reference) {
            (Some(data), None) => MediaLocation::Inline(
                base64::engine::general_purpose::STANDARD
                    .decode(data.as_bytes())
                    .map_err(|_| field_error("media.data_base64", "not base64"))?,
            ),
            (None, Some(reference)) => match self.encryption {
                None => MediaLocation::Reference(reference),
                Some(enc) => {
                    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).ok();
                    let bad = || field_error("media.encryption", "not a key, iv and SHA-256");
                    MediaLocation::Encrypted(Box::new(crate::event::EncryptedAttachment {
                        url: reference,
                        key: b64(&enc.key)
                            .and_then(|k| k.try_into().ok())
                            .ok_or_else(bad)?,
                        iv: b64(&enc.iv)
                            .and_then(|k| k.try_into().ok())
                            .ok_or_else(bad)?,
                        ciphertext_sha256: hex::decode(&enc.ciphertext_sha256)
                            .ok()
                            .and_then(|k| k.try_into().ok())
                            .ok_or_else(bad)?,
                    }))
                }
            },
            _ => {
                return Err(field_error(
                    "media",
                    "exactly one of data_base64 and reference is required",
                ));
            }
        };
        Ok(Media {
            mime_type: self.mime_type,
            file_name: self.file_name,
            caption: self.caption,
            declared_size: self.size,
            declared_sha256,
            location,
        })
    }

    fn from_media(media: &Media) -> Self {
        let mut encryption = None;
        let (data_base64, reference) = match &media.location {
            MediaLocation::Inline(bytes) => (
                Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
                None,
            ),
            MediaLocation::Reference(r) => (None, Some(r.clone())),
            MediaLocation::Encrypted(e) => {
                let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
                encryption = Some(CanonicalEncryption {
                    key: b64(&e.key),
                    iv: b64(&e.iv),
                    ciphertext_sha256: hex::encode(e.ciphertext_sha256),
                });
                (None, Some(e.url.clone()))
            }
        };
        Self {
            mime_type: media.mime_type.clone(),
            file_name: media.file_name.clone(),
            caption: media.caption.clone(),
            size: media.declared_size,
            sha256: media.declared_sha256.map(hex::encode),
            data_base64,
            reference,
            encryption,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DecodeErrorCode, decode as decode_payload};
    use super::*;

    fn event() -> serde_json::Value {
        serde_json::json!({
            "schema": SCHEMA_ID,
            "source": "matrix",
            "event_id": "ev-1",
            "message_id": "$m1",
            "conversation": {"id": "!room"},
            "sender": {"id": "@dr:localhost", "role": "clinician"},
            "sent_at": "2026-11-28T10:00:00Z",
            "text": "Wound healing well",
            "case": {"patient": {"reference": "Patient/p1"}},
            "mark": "relevant"
        })
    }

    fn refusal(value: serde_json::Value) -> DecodeError {
        decode_payload(value.to_string().as_bytes(), 1 << 20).unwrap_err()
    }

    #[test]
    fn valid_event_round_trips() {
        let bytes = event().to_string();
        let decoded = decode_payload(bytes.as_bytes(), 1 << 20).unwrap();
        let message = &decoded.messages[0];
        assert_eq!(message.key.to_string(), "matrix:$m1");
        assert_eq!(message.mark, Some(Mark::Relevant));
        let back = serde_json::to_value(CanonicalEvent::from_message(message)).unwrap();
        assert_eq!(back, event());
    }

    #[test]
    fn schema_violations_name_the_place_not_the_value() {
        let mut v = event();
        v["sent_at"] = serde_json::json!(12);
        let err = refusal(v);
        assert_eq!(err.code, DecodeErrorCode::SchemaViolation);
        assert!(err.detail.contains("/sent_at"), "{err}");

        let mut v = event();
        v["media"] = serde_json::json!({"mime_type": "image/jpeg", "reference": "x"});
        assert_eq!(refusal(v).code, DecodeErrorCode::SchemaViolation);

        let mut v = event();
        v["text"] = serde_json::json!(["Wound healing well"]);
        let err = refusal(v);
        assert!(!err.to_string().contains("Wound"), "{err}");
    }

    #[test]
    fn impossible_values_are_invalid_fields() {
        let mut v = event();
        v["sent_at"] = serde_json::json!("2026-02-30T10:00:00Z");
        assert_eq!(refusal(v).code, DecodeErrorCode::InvalidField);
        let mut v = event();
        v["part"] = serde_json::json!({"group_id": "g", "index": 3, "count": 2});
        assert_eq!(refusal(v).code, DecodeErrorCode::InvalidField);
    }
}
