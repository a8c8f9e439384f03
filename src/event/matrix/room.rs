//! One room event to messages: text, media, edits, replies, threads,
//! stickers, polls, redactions, held events.

use super::*;

/// Event types that never carry content: a defective one is refused.
const NO_CONTENT_TYPES: [&str; 2] = ["m.room.redaction", "m.reaction"];

/// One room event. A defect in a non-state event that may carry content
/// (a message, sticker, poll, encrypted event, a type not known yet: any
/// but [`NO_CONTENT_TYPES`]) — a field of the wrong type, a missing
/// `sender` or `body`, a timestamp out of range, a URL that is not
/// `mxc://` — holds it sealed for review under `invalid_entry`, keyed by
/// its event id or, when that is unusable, by a digest of the event: it
/// is neither dead-lettered nor dropped. A defective state event,
/// redaction or reaction is refused.
pub(in crate::event) fn decode(value: Value) -> Result<Decoded, DecodeError> {
    let content_type = value.get("state_key").is_none()
        && value
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| !NO_CONTENT_TYPES.contains(&t));
    if !content_type {
        return decode_event(value);
    }
    let raw = value.clone();
    decode_event(value).or_else(|e| {
        let id = raw.get("event_id").and_then(Value::as_str);
        Ok(Decoded {
            held: vec![HeldEntry::new(
                SOURCE,
                id,
                Reason::InvalidEntry,
                e.detail,
                raw.clone(),
            )],
            ..Decoded::of(Format::Matrix)
        })
    })
}

fn decode_event(value: Value) -> Result<Decoded, DecodeError> {
    let raw = value.clone();
    let event: RoomEvent = serde_json::from_value(value).map_err(|e| {
        DecodeError::new(
            DecodeErrorCode::SchemaViolation,
            format!(
                "not a Matrix room event: {}",
                super::super::json_error_class(&e)
            ),
        )
    })?;
    if !super::super::is_message_id(&event.event_id) {
        return Err(invalid("event_id: not an event id"));
    }
    let ts = integral(&event.origin_server_ts, "origin_server_ts")?;
    let sent_at = DateTime::<Utc>::from_timestamp_millis(ts)
        .ok_or_else(|| invalid("origin_server_ts: out of range"))?;
    // FHIR dates have four-digit years (also checked for every format
    // after decoding; here so that a message event is held, not refused).
    if !(1..=9999).contains(&chrono::Datelike::year(&sent_at)) {
        return Err(invalid("origin_server_ts: outside the years 0001-9999"));
    }
    let held = |reason: Reason, detail: &str| {
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
    // A device the trust policy refuses: every event with content it sent
    // (a message, a sticker, a poll, a type not known yet) is held, never
    // decided by a rule. Sealed without the hold: an operator who accepts
    // the device releases it (`quarantine release`) and it decodes as the
    // event it is.
    let untrusted = |hold: &str| {
        let mut accepted = raw.clone();
        if let Some(m) = accepted[E2EE_MARKER].as_object_mut() {
            m.remove("hold");
        }
        Ok(Decoded {
            held: vec![HeldEntry::new(
                SOURCE,
                Some(&event.event_id),
                Reason::UntrustedDevice,
                format!(
                    "sender device: {}, not accepted by matrix.e2ee.trust ({hold})",
                    e2ee.verification.as_deref().unwrap_or("unknown")
                ),
                accepted,
            )],
            ..Decoded::of(Format::Matrix)
        })
    };
    match event.kind.as_str() {
        "m.room.message" | "m.sticker" => {
            if let Some(hold) = &e2ee.hold {
                return untrusted(hold);
            }
        }
        "m.room.encrypted" if e2ee.undecryptable => {
            return held(
                Reason::Undecryptable,
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
                Reason::EncryptedContent,
                &format!("m.room.encrypted: {algorithm} event, no room keys"),
            );
        }
        // A redaction the source decrypted redacted nothing: the
        // homeserver must read `redacts` to apply one, so real redactions
        // travel in the clear (CS API "Redactions"). It marks no record.
        "m.room.redaction" if e2ee.decrypted => {
            return Ok(Decoded::skip(Format::Matrix, SkipKind::NonMessageEvent));
        }
        "m.room.redaction" => return redaction(&event, sent_at),
        // An annotation (emoji reaction) carries no patient content.
        "m.reaction" => return Ok(Decoded::skip(Format::Matrix, SkipKind::Reaction)),
        _ if event.state_key.is_some() => {
            return Ok(Decoded::skip(Format::Matrix, SkipKind::NonMessageEvent));
        }
        // Call signalling and in-room verification carry no patient
        // content, and neither does a redacted event (empty content).
        other
            if carries_nothing(other)
                || event
                    .content
                    .as_object()
                    .is_some_and(serde_json::Map::is_empty) =>
        {
            return Ok(Decoded::skip(Format::Matrix, SkipKind::NonMessageEvent));
        }
        // Any other type (polls, live location, extensible events in any
        // of their drafts, a type not known yet) is held: what it carries
        // is not known here, so it is never counted away.
        other => {
            if let Some(hold) = &e2ee.hold {
                return untrusted(hold);
            }
            return held(
                Reason::UnsupportedMessageType,
                &format!(
                    "type {}: an event type with content this version does not archive",
                    event_type_name(other)
                ),
            );
        }
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
                .filter(|id| super::super::is_message_id(id))
                .ok_or_else(|| invalid("content.m.relates_to.event_id: not an event id"))?,
        ),
        _ => None,
    };
    // In a thread (`m.thread`, CS API 11.22), an `m.in_reply_to` marked
    // `is_falling_back` only serves clients without threads: the message
    // answers the thread, whose root is `event_id`.
    // Only a message id names what is answered; a relation to anything
    // else is dropped, the message's own content stays.
    let replying = relates.in_reply_to.is_some();
    let in_reply_to = match (relates.rel_type.as_deref(), relates.in_reply_to) {
        (Some("m.thread"), Some(_)) if relates.is_falling_back == Some(true) => {
            relates.event_id.clone()
        }
        (Some("m.thread"), None) => relates.event_id.clone(),
        (_, r) => r.and_then(|r| r.event_id),
    }
    .filter(|id| super::super::is_message_id(id));
    let (effective, place) = match &replaces {
        Some(_) => match outer.get("m.new_content") {
            Some(new) if new.is_object() => (new.clone(), "content.m.new_content"),
            _ => {
                return held(
                    Reason::InvalidEntry,
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
        let body = if replying {
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
        // In-room key verification starts with an `m.room.message` of
        // this msgtype (CS API 11.12.2.1.1, "Key verification framework":
        // `from_device`, `methods`, `to`); its `body` is a fallback notice
        // for clients without verification, written by the client, not
        // the sender. Skipped like the `m.key.verification.*` events.
        Some("m.key.verification.request") if place == "content" => {
            return Ok(Decoded::skip(Format::Matrix, SkipKind::NonMessageEvent));
        }
        Some("m.text" | "m.notice") => Body::Text(text(content.body)?),
        // An action in the third person (CS API 11.3.1.2, rendered
        // "* Sender body"): marked so that it does not read as a statement.
        Some("m.emote") => Body::Text(format!("* {}", text(content.body)?)),
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
                            Reason::EncryptedContent,
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
            // Its essence only (`audio/ogg; codecs=opus` → `audio/ogg`): a
            // held medium's sealed canonical form carries it.
            let declared = info
                .as_ref()
                .and_then(|i| i.mimetype.as_deref())
                .and_then(crate::event::media_type_essence);
            let guessed = || {
                file_name
                    .as_deref()
                    .and_then(|n| mime_guess::from_path(n).first())
                    .and_then(|m| crate::event::media_type_essence(m.essence_str()))
            };
            let Some(mime_type) = declared.or_else(guessed) else {
                return held(
                    Reason::UnsupportedMediaType,
                    &format!(
                        "{place}.info.mimetype: missing or not a media type, and the file name gives none"
                    ),
                );
            };
            Body::Media(Media {
                mime_type,
                file_name,
                caption,
                declared_size,
                declared_sha256: None,
                location,
            })
        }
        Some(_) => {
            return held(
                Reason::UnsupportedMessageType,
                &format!("{place}.msgtype: not a known message type"),
            );
        }
        None => {
            return held(
                Reason::UnsupportedMessageType,
                &format!("{place}.msgtype: missing"),
            );
        }
    };
    Ok(Decoded {
        supersedes_hold: e2ee.supersedes.then_some(Reason::Undecryptable),
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
            kind: sticker.then_some(super::super::MessageKind::Sticker),
            forwarded: None,
        }],
        ..Decoded::of(Format::Matrix)
    })
}

/// An `m.room.redaction`: `redacts` at the top level (room versions 1–10)
/// or in `content` (v11).
pub(super) fn redaction(event: &RoomEvent, at: DateTime<Utc>) -> Result<Decoded, DecodeError> {
    let named = event
        .redacts
        .as_ref()
        .or_else(|| event.content.get("redacts"));
    // A redaction that was itself redacted in room versions 1-10 lost its
    // top-level `redacts` (not kept by the redaction algorithm before
    // v11; the homeserver says so in `unsigned.redacted_because`): it
    // names nothing any more, and carries nothing.
    if named.is_none()
        && event.content.as_object().is_some_and(|c| c.is_empty())
        && !event.unsigned["redacted_because"].is_null()
    {
        return Ok(Decoded::skip(Format::Matrix, SkipKind::NonMessageEvent));
    }
    let target = named
        .and_then(Value::as_str)
        .filter(|id| super::super::is_message_id(id))
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
