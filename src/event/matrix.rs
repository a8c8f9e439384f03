//! Matrix room events as a sync loop or an appservice sees them (Matrix
//! client-server API v1.10+, "Room events" and "Instant messaging").
//!
//! - `m.room.message` with the msgtypes `m.text`, `m.notice`, `m.emote`
//!   (text), `m.location` (text: `body` and `geo_uri`) and `m.image`,
//!   `m.file`, `m.audio`, `m.video` (media by `mxc://` reference). With a
//!   `filename`, `body` is the medium's caption (v1.10 "Media captions").
//!   Any other msgtype is held (`unsupported_message_type`).
//! - Edits (`m.relates_to.rel_type = m.replace`, "Event replacements") are
//!   archived from `m.new_content`, never from the `* ` fallback `body`, and
//!   name the event they correct in [`Message::replaces`].
//! - Replies (`m.relates_to.m.in_reply_to`, "Rich replies") keep the
//!   relation; a legacy reply fallback (leading `> ` lines and the empty
//!   line after them) is stripped from `body`. `formatted_body` is not
//!   archived, so its `<mx-reply>` needs no stripping.
//! - Encrypted attachments (`file`, an `EncryptedFile` v2, instead of
//!   `url`) carry their key: the medium is [`MediaLocation::Encrypted`],
//!   downloaded, checked against `hashes.sha256` and decrypted by the
//!   pipeline; an unreadable `file` is held (`encrypted_content`).
//! - `m.room.encrypted` events are held (`encrypted_content`): this worker
//!   has no room keys. The E2EE source decrypts them and marks what it
//!   publishes ([`E2EE_MARKER`]): a sender device the trust policy refuses
//!   is held `untrusted_device`, an event whose keys never came
//!   `undecryptable`, and a later decrypted copy releases that hold.
//! - `m.room.redaction` becomes a [`Redaction`] of the event named in
//!   `redacts` (top level in room versions 1–10, in `content` from v11).
//! - Numbers follow canonical JSON: integers in ±(2^53−1); a number sent
//!   as a float (`1795939200000.0`, `1.7e12`) is accepted when integral,
//!   otherwise refused as `invalid_field` naming the field. Unknown members
//!   are ignored.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::{
    Body, DecodeError, DecodeErrorCode, Decoded, EncryptedAttachment, Format, HeldEntry, Media,
    MediaLocation, Message, MessageKey, Party, Redaction, Role, SkipKind, hold,
};

/// Source name of Matrix messages.
pub const SOURCE: &str = "matrix";

/// Canonical JSON's integer bound, 2^53 − 1.
const CANONICAL_MAX: i64 = (1 << 53) - 1;

#[derive(Deserialize)]
struct RoomEvent {
    #[serde(rename = "type")]
    kind: String,
    room_id: String,
    event_id: String,
    sender: String,
    origin_server_ts: Value,
    #[serde(default)]
    content: Value,
    /// The redacted event of an `m.room.redaction` (room versions 1–10).
    redacts: Option<Value>,
    /// Present on state events (room configuration, never content).
    state_key: Option<Value>,
}

#[derive(Deserialize, Default)]
struct Content {
    msgtype: Option<String>,
    body: Option<String>,
    url: Option<String>,
    /// An `EncryptedFile` (`url`, `key`, `iv`, `hashes`, `v`).
    file: Option<Value>,
    filename: Option<String>,
    geo_uri: Option<String>,
    info: Option<Info>,
}

#[derive(Deserialize)]
struct Info {
    mimetype: Option<String>,
    size: Option<Value>,
}

#[derive(Deserialize, Default)]
struct RelatesTo {
    rel_type: Option<String>,
    event_id: Option<String>,
    #[serde(rename = "m.in_reply_to")]
    in_reply_to: Option<InReplyTo>,
    /// In a thread: the `m.in_reply_to` is only a fallback for clients
    /// without threads.
    #[serde(default)]
    is_falling_back: bool,
}

#[derive(Deserialize)]
struct InReplyTo {
    event_id: String,
}

fn invalid(detail: impl Into<String>) -> DecodeError {
    DecodeError::new(DecodeErrorCode::InvalidField, detail)
}

fn schema(place: &str, e: &serde_json::Error) -> DecodeError {
    DecodeError::new(
        DecodeErrorCode::SchemaViolation,
        format!("{place}: {}", super::json_error_class(e)),
    )
}

/// An integer by canonical JSON's rules: within ±(2^53−1); a float is
/// accepted when it has no fractional part. `place` names the field.
fn integral(v: &Value, place: &str) -> Result<i64, DecodeError> {
    let n = v
        .as_number()
        .ok_or_else(|| invalid(format!("{place}: not a number")))?;
    let i = match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => i,
        (None, Some(f)) if f.is_finite() && f.fract() == 0.0 && f.abs() <= CANONICAL_MAX as f64 => {
            f as i64
        }
        (None, Some(f)) if f.is_finite() && f.fract() != 0.0 => {
            return Err(invalid(format!("{place}: not an integer")));
        }
        _ => {
            return Err(invalid(format!(
                "{place}: outside the canonical JSON integer range"
            )));
        }
    };
    if i.abs() > CANONICAL_MAX {
        return Err(invalid(format!(
            "{place}: outside the canonical JSON integer range"
        )));
    }
    Ok(i)
}

/// The member the Matrix source (`chartbridge matrix-source` with
/// `matrix.e2ee`) adds to the events it decrypted or could not decrypt; it
/// removes any member of that name from events as the homeserver sent
/// them, so only the source sets it.
pub const E2EE_MARKER: &str = "chartbridge_e2ee";

/// What the source's [`E2EE_MARKER`] says, all absent on plain events:
/// `{"algorithm", "verification", "hold"?, "undecryptable"?, "supersedes"?}`.
#[derive(Default)]
struct E2ee {
    /// The sender device's verification state (`verified`,
    /// `unverified_identity`, `unsigned_device`, ...).
    verification: Option<String>,
    /// The trust policy refused the device: the policy's name.
    hold: Option<String>,
    /// The still-encrypted event after the wait for its keys.
    undecryptable: bool,
    /// A decrypted copy of an event held `undecryptable` earlier.
    supersedes: bool,
}

impl E2ee {
    fn of(raw: &Value) -> Self {
        let m = &raw[E2EE_MARKER];
        Self {
            verification: m["verification"].as_str().map(str::to_owned),
            hold: m["hold"].as_str().map(str::to_owned),
            undecryptable: m["undecryptable"].as_bool() == Some(true),
            supersedes: m["supersedes"].as_str() == Some(hold::UNDECRYPTABLE),
        }
    }
}

/// Unpadded (or padded) base64 in the standard or the URL-safe alphabet
/// (Matrix "Unpadded Base64"; JWK `k` is base64url).
fn base64_any(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let s = s.trim_end_matches('=');
    STANDARD_NO_PAD
        .decode(s)
        .or_else(|_| URL_SAFE_NO_PAD.decode(s))
        .ok()
}

/// An `EncryptedFile` (v1.10 "Sending encrypted attachments"): `v` is
/// `v2`, `key` a JWK with `kty: oct`, `alg: A256CTR` and a 256-bit `k`,
/// `iv` 16 bytes, `hashes.sha256` of the ciphertext, `url` an `mxc://`
/// URI. The error names the member that is wrong.
fn encrypted_file(file: &Value) -> Result<EncryptedAttachment, &'static str> {
    if file["v"].as_str() != Some("v2") {
        return Err("v");
    }
    let url = file["url"]
        .as_str()
        .filter(|u| u.starts_with("mxc://"))
        .ok_or("url")?;
    let jwk = &file["key"];
    if jwk["kty"].as_str() != Some("oct") || jwk["alg"].as_str() != Some("A256CTR") {
        return Err("key.alg");
    }
    let key = jwk["k"]
        .as_str()
        .and_then(base64_any)
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or("key.k")?;
    let iv = file["iv"]
        .as_str()
        .and_then(base64_any)
        .and_then(|k| <[u8; 16]>::try_from(k).ok())
        .ok_or("iv")?;
    let ciphertext_sha256 = file["hashes"]["sha256"]
        .as_str()
        .and_then(base64_any)
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or("hashes.sha256")?;
    Ok(EncryptedAttachment {
        url: url.to_owned(),
        key,
        iv,
        ciphertext_sha256,
    })
}

/// Removes a legacy rich-reply fallback from a plain-text `body`: the
/// leading lines starting with `> ` (the first one quoting the replied-to
/// sender, `> <@user:server> …` or `> * <@user:server> …` for an emote)
/// and the empty line after them. A body without that shape is returned
/// unchanged.
pub fn strip_reply_fallback(body: &str) -> &str {
    if !(body.starts_with("> <") || body.starts_with("> * <")) || !body.contains('\n') {
        return body;
    }
    let mut rest = body;
    while rest.starts_with("> ") || rest.starts_with(">\n") || rest == ">" {
        match rest.split_once('\n') {
            Some((_, tail)) => rest = tail,
            None => return "",
        }
    }
    rest.strip_prefix('\n').unwrap_or(rest)
}

/// Poll events (MSC3381), stable (`m.poll.*`) and unstable
/// (`org.matrix.msc3381.poll.*`): questions and a patient's answers.
fn is_poll(kind: &str) -> bool {
    kind.starts_with("m.poll.") || kind.starts_with("org.matrix.msc3381.poll.")
}

/// Whether an event of a type not known here carries text: a `body` (the
/// Matrix fallback convention) or an extensible-events text block.
fn carries_text(content: &Value) -> bool {
    ["body", "m.text", "org.matrix.msc1767.text"]
        .iter()
        .any(|k| content.get(k).is_some())
}

/// An event type for a detail: namespaced names are spec terms, not
/// values, but an over-long or odd one is cut to a safe form.
fn event_type_name(kind: &str) -> String {
    if kind.len() <= 64
        && kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
    {
        kind.to_owned()
    } else {
        "(not a namespaced name)".to_owned()
    }
}

pub(super) fn decode(value: Value) -> Result<Decoded, DecodeError> {
    let raw = value.clone();
    let event: RoomEvent = serde_json::from_value(value).map_err(|e| {
        DecodeError::new(
            DecodeErrorCode::SchemaViolation,
            format!("not a Matrix room event: {}", super::json_error_class(&e)),
        )
    })?;
    if !super::is_message_id(&event.event_id) {
        return Err(invalid("event_id: not an event id"));
    }
    let ts = integral(&event.origin_server_ts, "origin_server_ts")?;
    let sent_at = DateTime::<Utc>::from_timestamp_millis(ts)
        .ok_or_else(|| invalid("origin_server_ts: out of range"))?;
    let held = |reason: &'static str, detail: &str| {
        Ok(Decoded {
            held: vec![HeldEntry::new(
                SOURCE,
                Some(&event.event_id),
                reason,
                detail,
                raw.clone(),
            )],
            ..Decoded::of(Format::Matrix)
        })
    };
    let e2ee = E2ee::of(&raw);
    match event.kind.as_str() {
        "m.room.message" => {
            if let Some(hold) = &e2ee.hold {
                // Sealed without the hold: an operator who accepts the
                // device releases it (`quarantine release`) and it decodes
                // as the message it is.
                let mut accepted = raw.clone();
                if let Some(m) = accepted[E2EE_MARKER].as_object_mut() {
                    m.remove("hold");
                }
                return Ok(Decoded {
                    held: vec![HeldEntry::new(
                        SOURCE,
                        Some(&event.event_id),
                        hold::UNTRUSTED_DEVICE,
                        format!(
                            "sender device: {}, not accepted by matrix.e2ee.trust ({hold})",
                            e2ee.verification.as_deref().unwrap_or("unknown")
                        ),
                        accepted,
                    )],
                    ..Decoded::of(Format::Matrix)
                });
            }
        }
        "m.room.encrypted" if e2ee.undecryptable => {
            return held(
                hold::UNDECRYPTABLE,
                "m.room.encrypted: room keys did not arrive within matrix.e2ee.undecryptable_after",
            );
        }
        "m.room.encrypted" => {
            let algorithm = match event.content["algorithm"].as_str() {
                Some("m.megolm.v1.aes-sha2") => "megolm",
                Some("m.olm.v1.curve25519-aes-sha2") => "olm",
                _ => "unknown-algorithm",
            };
            return held(
                hold::ENCRYPTED_CONTENT,
                &format!("m.room.encrypted: {algorithm} event, no room keys"),
            );
        }
        "m.room.redaction" => return redaction(&event, sent_at),
        // An annotation (emoji reaction) carries no patient content.
        "m.reaction" => return Ok(Decoded::skip(Format::Matrix, SkipKind::Reaction)),
        "m.sticker" => {}
        _ if event.state_key.is_some() => {
            return Ok(Decoded::skip(Format::Matrix, SkipKind::NonMessageEvent));
        }
        other if is_poll(other) || carries_text(&event.content) => {
            return held(
                hold::UNSUPPORTED_MESSAGE_TYPE,
                &format!(
                    "type {}: an event type with content this version does not archive",
                    event_type_name(other)
                ),
            );
        }
        _ => return Ok(Decoded::skip(Format::Matrix, SkipKind::NonMessageEvent)),
    }
    let Some(outer) = event.content.as_object() else {
        return Err(invalid("content: not an object"));
    };
    if outer.is_empty() {
        // A redacted event: its content is gone, nothing to archive.
        return Ok(Decoded::skip(Format::Matrix, SkipKind::NonMessageEvent));
    }
    let relates: RelatesTo = match outer.get("m.relates_to") {
        Some(r) => {
            serde_json::from_value(r.clone()).map_err(|e| schema("content.m.relates_to", &e))?
        }
        None => RelatesTo::default(),
    };
    let replaces = match relates.rel_type.as_deref() {
        Some("m.replace") => Some(
            relates
                .event_id
                .clone()
                .filter(|id| super::is_message_id(id))
                .ok_or_else(|| invalid("content.m.relates_to.event_id: not an event id"))?,
        ),
        _ => None,
    };
    // In a thread (`m.thread`, CS API 11.22), an `m.in_reply_to` marked
    // `is_falling_back` only serves clients without threads: the message
    // answers the thread, whose root is `event_id`.
    let in_reply_to = match (relates.rel_type.as_deref(), relates.in_reply_to) {
        (Some("m.thread"), Some(_)) if relates.is_falling_back => relates.event_id.clone(),
        (Some("m.thread"), None) => relates.event_id.clone(),
        (_, r) => r.map(|r| r.event_id),
    };
    let (effective, place) = match &replaces {
        Some(_) => match outer.get("m.new_content") {
            Some(new) if new.is_object() => (new.clone(), "content.m.new_content"),
            _ => {
                return held(
                    hold::INVALID_ENTRY,
                    "content.m.new_content: missing in an m.replace edit",
                );
            }
        },
        None => (event.content.clone(), "content"),
    };
    let mut content: Content = serde_json::from_value(effective).map_err(|e| schema(place, &e))?;
    let sticker = event.kind == "m.sticker";
    if sticker {
        // `m.sticker` (CS API 11.21): an image event whose `body` describes
        // the sticker; there is no msgtype.
        content.msgtype = Some("m.image".to_owned());
        content.filename = None;
    }
    let text = |body: Option<String>| -> Result<String, DecodeError> {
        let body = body.unwrap_or_default();
        let body = if in_reply_to.is_some() {
            strip_reply_fallback(&body).to_owned()
        } else {
            body
        };
        if body.trim().is_empty() {
            return Err(invalid(format!("{place}.body: missing")));
        }
        Ok(body)
    };
    let body = match content.msgtype.as_deref() {
        Some("m.text" | "m.notice" | "m.emote") => Body::Text(text(content.body)?),
        Some("m.location") => {
            let geo = content
                .geo_uri
                .filter(|g| g.starts_with("geo:"))
                .ok_or_else(|| invalid(format!("{place}.geo_uri: not a geo: URI")))?;
            Body::Text(format!("{}\n{geo}", text(content.body)?))
        }
        Some("m.image" | "m.file" | "m.video" | "m.audio") => {
            let location = match (content.url, &content.file) {
                (None, Some(file)) => match encrypted_file(file) {
                    Ok(attachment) => MediaLocation::Encrypted(Box::new(attachment)),
                    Err(field) => {
                        return held(
                            hold::ENCRYPTED_CONTENT,
                            &format!("{place}.file.{field}: encrypted attachment not readable"),
                        );
                    }
                },
                (url, _) => MediaLocation::Reference(
                    url.filter(|u| u.starts_with("mxc://"))
                        .ok_or_else(|| invalid(format!("{place}.url: not an mxc:// URI")))?,
                ),
            };
            let info = content.info;
            let declared_size = match info.as_ref().and_then(|i| i.size.as_ref()) {
                Some(size) => Some(
                    u64::try_from(integral(size, &format!("{place}.info.size"))?)
                        .map_err(|_| invalid(format!("{place}.info.size: negative")))?,
                ),
                None => None,
            };
            let body = content.body.filter(|b| !b.trim().is_empty());
            // v1.10: with `filename` present, `body` is a caption; a
            // sticker's `body` describes it.
            let (file_name, caption) = match content.filename.filter(|f| !f.is_empty()) {
                Some(name) => {
                    let caption = body.filter(|b| *b != name);
                    (Some(name), caption)
                }
                None if sticker => (None, body),
                None => (body, None),
            };
            // `info.mimetype` is optional (CS API 11.2.1.7, FileInfo): guess
            // from the file name's extension; the downloaded bytes are
            // checked against the type's family before anything is archived.
            let declared = info
                .as_ref()
                .and_then(|i| i.mimetype.clone())
                .filter(|m| m.contains('/'));
            let guessed = || {
                file_name
                    .as_deref()
                    .and_then(|n| mime_guess::from_path(n).first())
                    .map(|m| m.essence_str().to_owned())
            };
            let Some(mime_type) = declared.or_else(guessed) else {
                return held(
                    crate::intake::reason::UNSUPPORTED_MEDIA_TYPE,
                    &format!(
                        "{place}.info.mimetype: missing, and the file name gives no media type"
                    ),
                );
            };
            Body::Media(Media {
                mime_type: mime_type.to_ascii_lowercase(),
                file_name,
                caption,
                declared_size,
                declared_sha256: None,
                location,
            })
        }
        Some(_) => {
            return held(
                hold::UNSUPPORTED_MESSAGE_TYPE,
                &format!("{place}.msgtype: not a known message type"),
            );
        }
        None => {
            return held(
                hold::UNSUPPORTED_MESSAGE_TYPE,
                &format!("{place}.msgtype: missing"),
            );
        }
    };
    Ok(Decoded {
        supersedes_hold: e2ee.supersedes.then_some(hold::UNDECRYPTABLE),
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
            in_reply_to,
            replaces,
            body,
            part: None,
            case: None,
            mark: None,
            kind: sticker.then_some(super::MessageKind::Sticker),
            forwarded: None,
        }],
        ..Decoded::of(Format::Matrix)
    })
}

/// An `m.room.redaction`: `redacts` at the top level (room versions 1–10)
/// or in `content` (v11).
fn redaction(event: &RoomEvent, at: DateTime<Utc>) -> Result<Decoded, DecodeError> {
    let target = event
        .redacts
        .as_ref()
        .or_else(|| event.content.get("redacts"))
        .and_then(Value::as_str)
        .filter(|id| super::is_message_id(id))
        .ok_or_else(|| invalid("redacts: not an event id"))?;
    let key = |id: &str| MessageKey {
        source: SOURCE.to_owned(),
        message_id: id.to_owned(),
    };
    Ok(Decoded {
        redactions: vec![Redaction {
            key: key(&event.event_id),
            target: key(target),
            sender: event.sender.clone(),
            at,
        }],
        ..Decoded::of(Format::Matrix)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::MediaLocation;
    use super::super::{Body, DecodeErrorCode, Decoded, decode as decode_payload, hold};
    use super::{E2EE_MARKER, strip_reply_fallback};

    fn event(kind: &str, content: Value) -> Value {
        json!({"type": kind, "room_id": "!ward3:example.org", "event_id": "$ev1",
            "sender": "@nurse:example.org", "origin_server_ts": 1764320000000i64,
            "content": content, "unsigned": {"age": 12}})
    }

    fn decode(v: &Value) -> Decoded {
        decode_payload(v.to_string().as_bytes(), 1 << 20).unwrap()
    }

    fn text_of(d: &Decoded) -> &str {
        match &d.messages[0].body {
            Body::Text(t) => t,
            Body::Media(_) => panic!("not text"),
        }
    }

    #[test]
    fn text_and_image_events() {
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": "m.text", "body": "hi"}),
        ));
        assert_eq!(d.messages[0].key.to_string(), "matrix:$ev1");
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": "m.image", "body": "wound.png", "url": "mxc://localhost/abc",
                   "info": {"mimetype": "image/png", "size": 10}}),
        ));
        assert_eq!(d.messages[0].content_type(), "image/png");
        let Body::Media(m) = &d.messages[0].body else {
            panic!()
        };
        assert_eq!(
            (m.file_name.as_deref(), m.caption.as_deref()),
            (Some("wound.png"), None)
        );
        let redaction = json!({"type": "m.room.redaction", "room_id": "!r",
            "event_id": "$x", "sender": "@a:localhost", "origin_server_ts": 1});
        let err = decode_payload(redaction.to_string().as_bytes(), 1 << 20).unwrap_err();
        assert_eq!(err.code, DecodeErrorCode::InvalidField, "no redacts");
        let member = event("m.room.member", json!({"membership": "join"}));
        let d = decode(&member);
        assert_eq!((d.messages.len(), d.skipped.len()), (0, 1));
    }

    #[test]
    fn notice_emote_and_location_are_text() {
        for kind in ["m.notice", "m.emote"] {
            let d = decode(&event(
                "m.room.message",
                json!({"msgtype": kind, "body": "checks the drain"}),
            ));
            assert_eq!(text_of(&d), "checks the drain", "{kind}");
        }
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": "m.location", "body": "Station 4B",
                   "geo_uri": "geo:52.52,13.40;u=20"}),
        ));
        assert_eq!(text_of(&d), "Station 4B\ngeo:52.52,13.40;u=20");
        let err = decode_payload(
            event(
                "m.room.message",
                json!({"msgtype": "m.location", "body": "x"}),
            )
            .to_string()
            .as_bytes(),
            1 << 20,
        )
        .unwrap_err();
        assert_eq!(err.detail, "content.geo_uri: not a geo: URI");
    }

    #[test]
    fn audio_and_video_are_media() {
        for (kind, mime) in [("m.audio", "audio/ogg"), ("m.video", "video/mp4")] {
            let d = decode(&event(
                "m.room.message",
                json!({"msgtype": kind, "body": "clip", "url": "mxc://h/m1",
                       "info": {"mimetype": mime, "size": 99, "duration": 3000}}),
            ));
            assert_eq!(d.messages[0].content_type(), mime);
        }
    }

    #[test]
    fn edits_archive_the_new_content_and_name_the_original() {
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": "m.text", "body": "* Drainage 40 ml",
                   "m.new_content": {"msgtype": "m.text", "body": "Drainage 40 ml"},
                   "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig1"}}),
        ));
        assert_eq!(text_of(&d), "Drainage 40 ml");
        assert_eq!(d.messages[0].replaces.as_deref(), Some("$orig1"));
        assert_eq!(d.messages[0].in_reply_to, None);
        // Without m.new_content the edit is held, never archived from `* `.
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": "m.text", "body": "* Drainage 40 ml",
                   "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig1"}}),
        ));
        assert_eq!(d.held[0].reason, hold::INVALID_ENTRY);
        assert!(d.messages.is_empty());
        // Other relation types (threads) are ordinary messages.
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": "m.text", "body": "in thread",
                   "m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}}),
        ));
        assert_eq!(
            (text_of(&d), d.messages[0].replaces.as_deref()),
            ("in thread", None)
        );
    }

    #[test]
    fn captions_when_a_filename_is_present() {
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": "m.image", "body": "Dekubitus sakral, Grad 2",
                   "filename": "IMG_2231.jpg", "url": "mxc://h/m2",
                   "info": {"mimetype": "image/jpeg"}}),
        ));
        let Body::Media(m) = &d.messages[0].body else {
            panic!()
        };
        assert_eq!(m.file_name.as_deref(), Some("IMG_2231.jpg"));
        assert_eq!(m.caption.as_deref(), Some("Dekubitus sakral, Grad 2"));
        // body equal to filename: no caption.
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": "m.file", "body": "a.pdf", "filename": "a.pdf",
                   "url": "mxc://h/m3"}),
        ));
        let Body::Media(m) = &d.messages[0].body else {
            panic!()
        };
        assert_eq!(m.caption, None);
    }

    #[test]
    fn reply_fallbacks_are_stripped_and_the_relation_kept() {
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": "m.text",
                   "body": "> <@doc:example.org> Fieber?\n> zweite Zeile\n\n38,2 um 14 Uhr",
                   "format": "org.matrix.custom.html",
                   "formatted_body": "<mx-reply><blockquote>Fieber?</blockquote></mx-reply>38,2",
                   "m.relates_to": {"m.in_reply_to": {"event_id": "$q1"}}}),
        ));
        assert_eq!(text_of(&d), "38,2 um 14 Uhr");
        assert_eq!(d.messages[0].in_reply_to.as_deref(), Some("$q1"));
        // A quote without a reply relation is the author's text.
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": "m.text", "body": "> <@x:y> quoted\n\nmine"}),
        ));
        assert_eq!(text_of(&d), "> <@x:y> quoted\n\nmine");
        assert_eq!(strip_reply_fallback("> * <@a:b> waves\n\nok"), "ok");
        assert_eq!(strip_reply_fallback("no fallback\n> x"), "no fallback\n> x");
        assert_eq!(strip_reply_fallback("> <@a:b> only"), "> <@a:b> only");
        // A reply that is nothing but its fallback has no text.
        let v = event(
            "m.room.message",
            json!({"msgtype": "m.text", "body": "> <@a:b> x\n\n",
                   "m.relates_to": {"m.in_reply_to": {"event_id": "$q1"}}}),
        );
        let err = decode_payload(v.to_string().as_bytes(), 1 << 20).unwrap_err();
        assert_eq!(err.detail, "content.body: missing");
    }

    #[test]
    fn encrypted_content_is_held_naming_the_defect() {
        // An EncryptedFile whose key is not 256 bits.
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": "m.image", "body": "x.jpg",
                   "file": {"url": "mxc://h/enc", "key": {"kty": "oct", "alg": "A256CTR",
                   "k": "abc", "key_ops": ["encrypt", "decrypt"], "ext": true},
                   "iv": "AAAA", "hashes": {"sha256": "BBBB"}, "v": "v2"}}),
        ));
        assert_eq!(d.held[0].reason, hold::ENCRYPTED_CONTENT);
        assert_eq!(
            d.held[0].detail,
            "content.file.key.k: encrypted attachment not readable"
        );
        assert_eq!(d.held[0].key.message_id, "$ev1");
        // v1 attachments (64-bit counter) and other algorithms are refused.
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": "m.file", "body": "a.pdf",
                   "file": {"url": "mxc://h/enc", "v": "v1"}}),
        ));
        assert_eq!(
            d.held[0].detail,
            "content.file.v: encrypted attachment not readable"
        );
        let d = decode(&event(
            "m.room.encrypted",
            json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA",
                   "session_id": "s", "device_id": "D", "sender_key": "k"}),
        ));
        assert_eq!(d.held[0].reason, hold::ENCRYPTED_CONTENT);
        assert_eq!(
            d.held[0].detail,
            "m.room.encrypted: megolm event, no room keys"
        );
    }

    /// NIST SP 800-38A F.5.5 (CTR-AES256.Encrypt), two blocks, as a Matrix
    /// EncryptedFile: unpadded base64 `iv` and hash, base64url `k`.
    #[test]
    fn encrypted_attachments_decode_check_the_hash_and_decrypt() {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        use sha2::Digest;
        let key = hex::decode("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
            .unwrap();
        let iv = hex::decode("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff").unwrap();
        let plain = hex::decode("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
            .unwrap();
        let cipher =
            hex::decode("601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5")
                .unwrap();
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": "m.file", "body": "lab.pdf",
                   "info": {"mimetype": "application/pdf", "size": 32},
                   "file": {"url": "mxc://h/enc2", "v": "v2",
                            "key": {"kty": "oct", "alg": "A256CTR", "ext": true,
                                    "key_ops": ["encrypt", "decrypt"],
                                    "k": URL_SAFE_NO_PAD.encode(&key)},
                            "iv": STANDARD_NO_PAD.encode(&iv),
                            "hashes": {"sha256": STANDARD_NO_PAD.encode(sha2::Sha256::digest(&cipher))}}}),
        ));
        assert!(d.held.is_empty(), "{:?}", d.held);
        let Body::Media(m) = &d.messages[0].body else {
            panic!("not media")
        };
        let MediaLocation::Encrypted(file) = &m.location else {
            panic!("not encrypted: {:?}", m.location)
        };
        assert_eq!(file.url, "mxc://h/enc2");
        assert_eq!(file.decrypt(&cipher).as_deref(), Some(&plain[..]));
        // A substituted ciphertext fails the declared hash.
        let mut other = cipher.clone();
        other[0] ^= 1;
        assert_eq!(file.decrypt(&other), None);
        // The deletion command names the ciphertext's media.
        let command = crate::delete::DeletionCommand::for_message(
            &d.messages[0],
            crate::delete::DeletionReason::Archived,
            None,
        );
        assert_eq!(command.media_reference.as_deref(), Some("mxc://h/enc2"));
        // The canonical form (quarantine, conflicts) keeps the keys.
        let canonical =
            serde_json::to_vec(&super::super::CanonicalEvent::from_message(&d.messages[0]))
                .unwrap();
        let again = super::super::decode(&canonical, usize::MAX).unwrap();
        assert_eq!(again.messages[0].body, d.messages[0].body);
    }

    #[test]
    fn the_sources_marker_holds_untrusted_and_undecryptable_events() {
        let mut e = event(
            "m.room.message",
            json!({"msgtype": "m.text", "body": "bp 120/80"}),
        );
        e[E2EE_MARKER] = json!({"algorithm": "m.megolm.v1.aes-sha2",
                                "verification": "unsigned_device", "hold": "verified"});
        let d = decode(&e);
        assert!(d.messages.is_empty());
        assert_eq!(d.held[0].reason, hold::UNTRUSTED_DEVICE);
        assert_eq!(
            d.held[0].detail,
            "sender device: unsigned_device, not accepted by matrix.e2ee.trust (verified)"
        );
        // What is sealed decodes as the message once released.
        let released = decode(&d.held[0].raw);
        assert_eq!(text_of(&released), "bp 120/80");
        e[E2EE_MARKER] = json!({"algorithm": "m.megolm.v1.aes-sha2",
                                "verification": "verified", "supersedes": "undecryptable"});
        let d = decode(&e);
        assert_eq!(d.messages.len(), 1);
        assert_eq!(d.supersedes_hold, Some(hold::UNDECRYPTABLE));
        let mut e = event(
            "m.room.encrypted",
            json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA",
                   "session_id": "s", "device_id": "D", "sender_key": "k"}),
        );
        e[E2EE_MARKER] = json!({"undecryptable": true});
        let d = decode(&e);
        assert_eq!(d.held[0].reason, hold::UNDECRYPTABLE);
    }

    #[test]
    fn unknown_msgtypes_are_held() {
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": "m.key.verification.request", "body": "x"}),
        ));
        assert_eq!(d.held[0].reason, hold::UNSUPPORTED_MESSAGE_TYPE);
        assert_eq!(
            d.held[0].detail,
            "content.msgtype: not a known message type"
        );
        // A redacted event (empty content) carries nothing.
        let d = decode(&event("m.room.message", json!({})));
        assert_eq!((d.held.len(), d.skipped.len()), (0, 1));
    }

    #[test]
    fn stickers_polls_reactions_and_unknown_event_types_each_have_a_state() {
        use super::super::{MessageKind, SkipKind};
        // m.sticker is an event type of its own: an image whose body
        // describes it, kind `sticker` for the rules.
        let d = decode(&event(
            "m.sticker",
            json!({"body": "thumbs up", "url": "mxc://h/st1",
                   "info": {"mimetype": "image/webp", "w": 128, "h": 128}}),
        ));
        assert_eq!(d.messages[0].kind(), MessageKind::Sticker);
        let Body::Media(m) = &d.messages[0].body else {
            panic!("not media")
        };
        assert_eq!(
            (m.mime_type.as_str(), m.caption.as_deref()),
            ("image/webp", Some("thumbs up"))
        );
        // Polls, stable and unstable names, question and answer: held.
        for kind in [
            "m.poll.start",
            "m.poll.response",
            "org.matrix.msc3381.poll.start",
            "org.matrix.msc3381.poll.response",
        ] {
            let d = decode(&event(kind, json!({"m.selections": ["a1"]})));
            assert_eq!(d.held.len(), 1, "{kind}");
            assert_eq!(d.held[0].reason, hold::UNSUPPORTED_MESSAGE_TYPE, "{kind}");
            assert!(d.held[0].detail.contains(kind), "{kind}");
        }
        // A type not known here that carries a body: held; one without any
        // text (call signalling): skipped and counted.
        let d = decode(&event("com.example.vitals", json!({"body": "Puls 88"})));
        assert_eq!(d.held[0].reason, hold::UNSUPPORTED_MESSAGE_TYPE);
        assert!(!d.held[0].detail.contains("Puls"));
        let d = decode(&event(
            "m.call.hangup",
            json!({"call_id": "c1", "version": "1"}),
        ));
        assert_eq!(d.skipped, vec![SkipKind::NonMessageEvent]);
        // Reactions and state events carry no patient content.
        let d = decode(&event(
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x", "key": "👍"}}),
        ));
        assert_eq!(d.skipped, vec![SkipKind::Reaction]);
        let mut topic = event("m.room.topic", json!({"topic": "Station 3"}));
        topic["state_key"] = json!("");
        assert_eq!(decode(&topic).skipped, vec![SkipKind::NonMessageEvent]);
    }

    #[test]
    fn missing_mimetypes_come_from_the_file_name_or_hold_the_event() {
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": "m.file", "body": "Arztbrief.pdf", "url": "mxc://h/f1"}),
        ));
        assert_eq!(d.messages[0].content_type(), "application/pdf");
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": "m.file", "body": "Befund", "url": "mxc://h/f2", "info": {"size": 9}}),
        ));
        assert_eq!(d.held[0].reason, "unsupported_media_type");
        assert_eq!(
            d.held[0].detail,
            "content.info.mimetype: missing, and the file name gives no media type"
        );
    }

    #[test]
    fn thread_fallback_replies_answer_the_thread_root() {
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": "m.text", "body": "im Thread",
                   "m.relates_to": {"rel_type": "m.thread", "event_id": "$root",
                       "is_falling_back": true, "m.in_reply_to": {"event_id": "$latest"}}}),
        ));
        assert_eq!(d.messages[0].in_reply_to.as_deref(), Some("$root"));
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": "m.text", "body": "Antwort",
                   "m.relates_to": {"rel_type": "m.thread", "event_id": "$root",
                       "m.in_reply_to": {"event_id": "$quoted"}}}),
        ));
        assert_eq!(d.messages[0].in_reply_to.as_deref(), Some("$quoted"));
    }

    #[test]
    fn redactions_name_their_target_in_either_room_version() {
        let mut v10 = event("m.room.redaction", json!({"reason": "typo"}));
        v10["redacts"] = json!("$target1");
        let d = decode(&v10);
        assert_eq!(d.redactions[0].target.message_id, "$target1");
        assert_eq!(d.redactions[0].key.message_id, "$ev1");
        let v11 = event("m.room.redaction", json!({"redacts": "$target2"}));
        assert_eq!(decode(&v11).redactions[0].target.message_id, "$target2");
    }

    #[test]
    fn integral_floats_are_accepted_and_fractions_refused() {
        let mut v = event(
            "m.room.message",
            json!({"msgtype": "m.file", "body": "r.pdf", "url": "mxc://h/m4",
                   "info": {"size": 1234.0, "mimetype": "application/pdf",
                            "x.vendor.extra": {"nested": [1.5]}}}),
        );
        v["origin_server_ts"] = json!(1.7e12);
        v["x.unknown.top"] = json!(true);
        let d = decode(&v);
        assert_eq!(d.messages[0].sent_at.timestamp_millis(), 1_700_000_000_000);
        let Body::Media(m) = &d.messages[0].body else {
            panic!()
        };
        assert_eq!(m.declared_size, Some(1234));
        // 1795939200000.0 written out with a fraction part of zero.
        let text = event("m.room.message", json!({"msgtype": "m.text", "body": "x"}))
            .to_string()
            .replace("1764320000000", "1795939200000.0");
        let d = decode_payload(text.as_bytes(), 1 << 20).unwrap();
        assert_eq!(d.messages[0].sent_at.timestamp_millis(), 1_795_939_200_000);
        for (field, value, detail) in [
            (
                "ts",
                json!(1764320000000.5),
                "origin_server_ts: not an integer",
            ),
            ("size", json!(12.25), "content.info.size: not an integer"),
            (
                "ts",
                json!(1e300),
                "origin_server_ts: outside the canonical JSON integer range",
            ),
            ("size", json!(-3), "content.info.size: negative"),
        ] {
            let mut v = event(
                "m.room.message",
                json!({"msgtype": "m.file", "body": "r", "url": "mxc://h/m5", "info": {}}),
            );
            if field == "ts" {
                v["origin_server_ts"] = value;
            } else {
                v["content"]["info"]["size"] = value;
            }
            let err = decode_payload(v.to_string().as_bytes(), 1 << 20).unwrap_err();
            assert_eq!(
                (err.code, err.detail.as_str()),
                (DecodeErrorCode::InvalidField, detail)
            );
        }
    }
}
