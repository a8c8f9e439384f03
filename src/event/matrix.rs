//! Matrix room events (`m.room.message` with `m.text`, `m.image`, `m.file`)
//! as a sync loop or an appservice sees them. Media are `mxc://` references.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{
    Body, DecodeError, DecodeErrorCode, Decoded, Format, Media, MediaLocation, Message, MessageKey,
    Party, Role, SkipKind,
};

/// Source name of Matrix messages.
pub const SOURCE: &str = "matrix";

#[derive(Deserialize)]
struct RoomEvent {
    #[serde(rename = "type")]
    kind: String,
    room_id: String,
    event_id: String,
    sender: String,
    origin_server_ts: i64,
    #[serde(default)]
    content: Content,
}

#[derive(Deserialize, Default)]
struct Content {
    msgtype: Option<String>,
    body: Option<String>,
    url: Option<String>,
    filename: Option<String>,
    info: Option<Info>,
    #[serde(rename = "m.relates_to")]
    relates_to: Option<RelatesTo>,
}

#[derive(Deserialize)]
struct Info {
    mimetype: Option<String>,
    size: Option<u64>,
}

#[derive(Deserialize)]
struct RelatesTo {
    #[serde(rename = "m.in_reply_to")]
    in_reply_to: Option<InReplyTo>,
}

#[derive(Deserialize)]
struct InReplyTo {
    event_id: String,
}

fn invalid(detail: &str) -> DecodeError {
    DecodeError::new(DecodeErrorCode::InvalidField, detail)
}

pub(super) fn decode(value: serde_json::Value) -> Result<Decoded, DecodeError> {
    let event: RoomEvent = serde_json::from_value(value).map_err(|e| {
        DecodeError::new(
            DecodeErrorCode::SchemaViolation,
            format!("not a Matrix room event: {}", super::json_error_class(&e)),
        )
    })?;
    let skip = Decoded::skip(Format::Matrix, SkipKind::NonMessageEvent);
    if event.kind != "m.room.message" {
        return Ok(skip);
    }
    if event.event_id.is_empty() || event.event_id.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(invalid("event_id: not an event id"));
    }
    let sent_at = DateTime::<Utc>::from_timestamp_millis(event.origin_server_ts)
        .ok_or_else(|| invalid("origin_server_ts: out of range"))?;
    let content = event.content;
    let body = match content.msgtype.as_deref() {
        Some("m.text") | Some("m.notice") => match content.body {
            Some(b) if !b.is_empty() => Body::Text(b),
            _ => return Err(invalid("content.body: missing")),
        },
        Some(kind @ ("m.image" | "m.file" | "m.video" | "m.audio")) => {
            let url = content
                .url
                .filter(|u| u.starts_with("mxc://"))
                .ok_or_else(|| invalid("content.url: not an mxc:// URI"))?;
            let info = content.info;
            let default_type = if kind == "m.image" {
                "image/jpeg"
            } else {
                "application/octet-stream"
            };
            let file_name = content.filename.or_else(|| content.body.clone());
            Body::Media(Media {
                mime_type: info
                    .as_ref()
                    .and_then(|i| i.mimetype.clone())
                    .unwrap_or_else(|| default_type.to_owned())
                    .to_ascii_lowercase(),
                file_name,
                caption: None,
                declared_size: info.as_ref().and_then(|i| i.size),
                declared_sha256: None,
                location: MediaLocation::Reference(url),
            })
        }
        _ => return Ok(skip),
    };
    Ok(Decoded {
        messages: vec![Message {
            key: MessageKey {
                source: SOURCE.to_owned(),
                message_id: event.event_id.clone(),
            },
            event_id: event.event_id,
            conversation: event.room_id,
            sender: Party {
                id: event.sender,
                role: Role::Unknown,
                display: None,
            },
            recipients: Vec::new(),
            sent_at,
            received_at: None,
            in_reply_to: content
                .relates_to
                .and_then(|r| r.in_reply_to)
                .map(|r| r.event_id),
            body,
            part: None,
            case: None,
            mark: None,
            kind: None,
        }],
        ..Decoded::of(Format::Matrix)
    })
}

#[cfg(test)]
mod tests {
    use super::super::decode as decode_payload;

    #[test]
    fn text_and_image_events() {
        let text = serde_json::json!({"type": "m.room.message", "room_id": "!r", "event_id": "$t",
            "sender": "@a:localhost", "origin_server_ts": 1764320000000i64,
            "content": {"msgtype": "m.text", "body": "hi"}});
        let d = decode_payload(text.to_string().as_bytes(), 1 << 20).unwrap();
        assert_eq!(d.messages[0].key.to_string(), "matrix:$t");
        let image = serde_json::json!({"type": "m.room.message", "room_id": "!r", "event_id": "$i",
            "sender": "@a:localhost", "origin_server_ts": 1764320000000i64,
            "content": {"msgtype": "m.image", "body": "wound.png", "url": "mxc://localhost/abc",
                        "info": {"mimetype": "image/png", "size": 10}}});
        let d = decode_payload(image.to_string().as_bytes(), 1 << 20).unwrap();
        assert_eq!(d.messages[0].content_type(), "image/png");
        let redaction = serde_json::json!({"type": "m.room.redaction", "room_id": "!r",
            "event_id": "$x", "sender": "@a:localhost", "origin_server_ts": 1});
        let d = decode_payload(redaction.to_string().as_bytes(), 1 << 20).unwrap();
        assert_eq!((d.messages.len(), d.skipped.len()), (0, 1));
    }
}
