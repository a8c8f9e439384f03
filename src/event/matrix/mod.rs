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
//! - A non-state event other than a redaction or reaction with any such
//!   defect (also a missing `sender` or `body`, a `geo_uri` that is not
//!   `geo:`, a `url` that is not `mxc://`) is held sealed (`invalid_entry`,
//!   the defect as detail), not dead-lettered: it may carry patient
//!   content.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::{
    Body, DecodeError, DecodeErrorCode, Decoded, EncryptedAttachment, Format, HeldEntry, Media,
    MediaLocation, Message, MessageKey, Party, Redaction, Role, SkipKind,
};
use crate::reason::Reason;

mod e2ee;
mod room;

pub use e2ee::E2EE_MARKER;
use e2ee::*;
pub(super) use room::decode;

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
    /// `redacted_because` here marks an event the homeserver redacted.
    #[serde(default)]
    unsigned: Value,
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
    /// without threads (`null` counts as absent: `false`).
    is_falling_back: Option<bool>,
}

/// `m.in_reply_to`; a relation without a usable `event_id` is no relation
/// (the message's own content is read all the same).
#[derive(Deserialize)]
struct InReplyTo {
    event_id: Option<String>,
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

/// Removes a legacy rich-reply fallback from a plain-text `body` (CS API
/// v1.12, 11.19.2.2 "Fallbacks for rich replies"; clients stopped sending
/// them in v1.13): the leading lines starting with `>`, the first one
/// quoting the replied-to sender's user ID (`> <@user:server> …`, or
/// `> * <@user:server> …` for an emote), and the empty line that must
/// follow them. Any other body is the author's text and is returned
/// unchanged: a quote whose first line names no user ID (`> <38 Grad`),
/// or quoted lines not followed by an empty line.
pub fn strip_reply_fallback(body: &str) -> &str {
    let Some(first) = body.lines().next() else {
        return body;
    };
    let Some(quoted) = first
        .strip_prefix("> * <")
        .or_else(|| first.strip_prefix("> <"))
    else {
        return body;
    };
    let names_a_user = quoted.split_once('>').is_some_and(|(id, _)| {
        id.strip_prefix('@')
            .and_then(|id| id.split_once(':'))
            .is_some_and(|(local, server)| {
                !local.is_empty()
                    && !server.is_empty()
                    && !id.contains(|c: char| c.is_whitespace() || c == '<')
            })
    });
    if !names_a_user {
        return body;
    }
    let mut rest = body;
    while rest.starts_with('>') {
        match rest.split_once('\n') {
            Some((_, tail)) => rest = tail,
            // Quoted lines to the end: no fallback's empty line.
            None => return body,
        }
    }
    match rest.strip_prefix('\n') {
        Some(reply) => reply,
        None => body,
    }
}

/// Event types that never carry patient content: VoIP call signalling
/// (CS API 11.12, `m.call.*`, and the MatrixRTC drafts MSC3401/MSC4075),
/// in-room key verification (`m.key.verification.*`, CS API 11.12.2), and
/// the spec's room-configuration state types, also when one comes without
/// its `state_key`. Every other type is held when it has content.
fn carries_nothing(kind: &str) -> bool {
    const STATE: [&str; 17] = [
        "m.room.create",
        "m.room.member",
        "m.room.name",
        "m.room.topic",
        "m.room.avatar",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.history_visibility",
        "m.room.guest_access",
        "m.room.canonical_alias",
        "m.room.encryption",
        "m.room.server_acl",
        "m.room.tombstone",
        "m.room.pinned_events",
        "m.room.third_party_invite",
        "m.space.child",
        "m.space.parent",
    ];
    STATE.contains(&kind)
        || [
            "m.call.",
            "org.matrix.call.",
            "org.matrix.msc3401.call.",
            "org.matrix.msc4075.",
            "m.rtc.",
            "m.key.verification.",
        ]
        .iter()
        .any(|prefix| kind.starts_with(prefix))
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

#[cfg(test)]
mod tests;
