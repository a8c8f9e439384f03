//! WhatsApp Business Cloud API webhook payloads, as Meta posts them
//! (Webhooks reference: `messages`, `smb_message_echoes`; Business-scoped
//! user IDs).
//!
//! Decoding goes change by change and entry by entry, each from its own
//! JSON value, so one malformed entry never takes its neighbours down:
//!
//! - a payload that is not a webhook (no `entry` list) is refused;
//! - a `messages` entry becomes a [`Message`], is held ([`HeldEntry`],
//!   sealed for review, with a reason and a detail naming the field) or is
//!   counted as skipped ([`SkipKind`]) when it carries no patient content;
//! - `statuses` are counted ([`SkipKind::Status`]); a change of another
//!   `field` (`message_template_status_update`, `account_update`, ...) is
//!   counted ([`SkipKind::NonMessageChange`]) unless it carries message
//!   arrays, which are held unread;
//! - a `history` change (the chats a WhatsApp Business app number shares
//!   when it moves to the Cloud API) is read thread by thread like
//!   `messages`;
//! - `smb_message_echoes` (`message_echoes`) and entries naming a recipient
//!   (`to`, `to_user_id`) are what the business sent: the hospital is the
//!   sender ([`Role::Clinician`]), the user the recipient, and the
//!   conversation is keyed by the user's side like an incoming message's.
//!
//! The user is named by `from` (phone number, `wa_id`) or, for a user known
//! only by username, by the business-scoped user ID `from_user_id`; the
//! conversation is `{phone_number_id}:{phone number or user id}`, or
//! `{phone_number_id}:group:{group_id}` for a message in a group chat
//! (Groups API), whose members' phone numbers name no patient.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{
    Body, DecodeError, DecodeErrorCode, Decoded, Format, Forwarded, HeldEntry, IdentityChange,
    Media, MediaLocation, Message, MessageKey, MessageKind, Party, Role, SkipKind, is_message_id,
    parse_sha256,
};
use crate::reason::Reason;

mod body;
use body::body;

/// Source name of WhatsApp messages.
pub const SOURCE: &str = "whatsapp";

/// Webhook `field` values whose changes carry messages this module reads.
const MESSAGES: &str = "messages";
const ECHOES: &str = "smb_message_echoes";
/// The chat history a WhatsApp Business app number shares when it is
/// onboarded to the Cloud API (coexistence): `value.history[].threads[]`,
/// each thread one user (`id`) with its `messages[]`, sent by either side.
const HISTORY: &str = "history";

/// Marks a group chat's conversation: `{phone_number_id}:group:{group_id}`.
const GROUP: &str = "group:";

/// Whether `conversation` is a WhatsApp group chat (Groups API: the
/// message names its `group_id`). Its members are not the patient by
/// their phone numbers: a relative may write there.
pub fn is_group_conversation(conversation: &str) -> bool {
    conversation
        .split_once(':')
        .is_some_and(|(_, rest)| rest.starts_with(GROUP))
}

/// Why one entry cannot be archived as decoded.
struct Hold {
    reason: Reason,
    detail: String,
}

fn invalid(detail: impl Into<String>) -> Hold {
    Hold {
        reason: Reason::InvalidEntry,
        detail: detail.into(),
    }
}

fn unsupported(detail: impl Into<String>) -> Hold {
    Hold {
        reason: Reason::UnsupportedMessageType,
        detail: detail.into(),
    }
}

/// What one entry decodes to.
enum Entry {
    Message(Box<Message>),
    Skip(SkipKind),
    /// A `system` notice that the user's identity changed, with the
    /// conversation it concerns.
    IdentityChanged(Vec<String>, Option<DateTime<Utc>>),
}

/// `system.type` values that say the conversation's user may now be
/// someone else (Webhooks reference, system messages).
/// `customer_changed_number` is the name of `user_changed_number` in the
/// references before 2025, still sent to apps on older webhook versions.
const IDENTITY_CHANGES: [&str; 4] = [
    "user_changed_number",
    "customer_changed_number",
    "customer_identity_changed",
    "user_changed_user_id",
];

/// Files the outcome of the entry `raw` in `decoded`: a message, a
/// skipped kind, an identity change, or `raw` held with why.
fn file(decoded: &mut Decoded, outcome: Result<Entry, Hold>, raw: Value) {
    let entry = match outcome {
        Ok(entry) => entry,
        Err(hold) => {
            let id = raw.get("id").and_then(Value::as_str).map(str::to_owned);
            return hold_raw(decoded, id.as_deref(), hold, raw);
        }
    };
    match entry {
        Entry::Message(msg) => decoded.messages.push(*msg),
        Entry::Skip(kind) => decoded.skipped.push(kind),
        Entry::IdentityChanged(conversations, at) => {
            decoded.skipped.push(SkipKind::System);
            decoded
                .identity_changes
                .extend(
                    conversations
                        .into_iter()
                        .map(|conversation| IdentityChange {
                            source: SOURCE.to_owned(),
                            conversation,
                            at,
                        }),
                );
        }
    }
}

pub(super) fn decode(value: Value) -> Result<Decoded, DecodeError> {
    let not_webhook = |what: &str| {
        DecodeError::new(
            DecodeErrorCode::SchemaViolation,
            format!("not a WhatsApp webhook payload: {what}"),
        )
    };
    let Value::Object(mut hook) = value else {
        return Err(not_webhook("not an object"));
    };
    let entries = match hook.remove("entry") {
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(not_webhook("entry is not a list")),
        None => return Err(not_webhook("no entry list")),
    };
    let mut decoded = Decoded::of(Format::WhatsApp);
    for (e, entry) in entries.into_iter().enumerate() {
        let place = format!("entry[{e}]");
        let changes = match entry.get("changes") {
            None | Some(Value::Null) if entry.is_object() => continue,
            Some(Value::Array(changes)) => changes.clone(),
            _ => {
                let detail = if entry.is_object() {
                    format!("{place}.changes: not a list")
                } else {
                    format!("{place}: not an object")
                };
                hold_raw(&mut decoded, None, invalid(detail), entry);
                continue;
            }
        };
        for (c, change) in changes.into_iter().enumerate() {
            decode_change(&mut decoded, change, &format!("{place}.changes[{c}]"));
        }
    }
    Ok(decoded)
}

fn hold_raw(decoded: &mut Decoded, id: Option<&str>, hold: Hold, raw: Value) {
    decoded
        .held
        .push(HeldEntry::new(SOURCE, id, hold.reason, hold.detail, raw));
}

/// A spec term from the payload (a `field` or `type` value) that may be
/// named in a detail: lowercase letters and underscores only, so that no
/// identifier or text can pass through.
fn term(s: &str) -> &str {
    if !s.is_empty() && s.len() <= 40 && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        s
    } else {
        "(not a known term)"
    }
}

fn decode_change(decoded: &mut Decoded, change: Value, place: &str) {
    let Value::Object(mut change) = change else {
        hold_raw(
            decoded,
            None,
            invalid(format!("{place}: not an object")),
            change,
        );
        return;
    };
    let field = match change.get("field") {
        Some(Value::String(f)) => Some(f.clone()),
        _ => None,
    };
    let Some(Value::Object(mut value)) = change.remove("value") else {
        // A change without a value object: nothing to read, but it may have
        // been meant to carry messages.
        let detail = format!("{place}.value: not an object");
        match field.as_deref() {
            None | Some(MESSAGES) | Some(ECHOES) => {
                hold_raw(decoded, None, invalid(detail), Value::Object(change))
            }
            Some(_) => decoded.skipped.push(SkipKind::NonMessageChange),
        }
        return;
    };
    let place = format!("{place}.value");
    if field.as_deref() == Some(HISTORY) || (field.is_none() && value.contains_key(HISTORY)) {
        decode_history(decoded, value, &place);
        return;
    }
    match field.as_deref() {
        // Older forwarders omit `field`; the value's arrays say what it is.
        // Both lists are read whatever `field` names: a value that carries
        // incoming messages and echoes (a forwarder merging changes) loses
        // neither.
        None | Some(MESSAGES) | Some(ECHOES) => {}
        Some(other) => {
            if ["messages", "message_echoes"]
                .iter()
                .any(|k| value.get(*k).is_some_and(|v| !v.is_null()))
            {
                let detail = format!(
                    "{}: field {} carries messages this version does not archive",
                    place.trim_end_matches(".value"),
                    term(other)
                );
                hold_raw(decoded, None, unsupported(detail), Value::Object(value));
            } else {
                decoded.skipped.push(SkipKind::NonMessageChange);
            }
            return;
        }
    };
    match value.remove("statuses") {
        None | Some(Value::Null) => {}
        Some(Value::Array(statuses)) => decoded
            .skipped
            .extend(std::iter::repeat_n(SkipKind::Status, statuses.len())),
        // Statuses describe messages the business sent; no patient content.
        Some(_) => decoded.skipped.push(SkipKind::Status),
    }
    // `errors` on the value itself (not on a message) report a webhook-level
    // problem without any message content.
    if let Some(Value::Array(errors)) = value.get("errors") {
        decoded.skipped.extend(std::iter::repeat_n(
            SkipKind::NonMessageChange,
            errors.len(),
        ));
    }
    let mut lists = Vec::with_capacity(2);
    for (list, outgoing) in [("messages", false), ("message_echoes", true)] {
        match value.remove(list) {
            None | Some(Value::Null) => {}
            Some(Value::Array(entries)) => lists.push((list, outgoing, entries)),
            Some(other) => {
                let detail = format!("{place}.{list}: not a list");
                hold_raw(decoded, None, invalid(detail), other);
            }
        }
    }
    let phone_number_id = phone_number_id(&value);
    let business = business_number(&value);
    let contacts = match value.get("contacts") {
        Some(Value::Array(c)) => c.as_slice(),
        _ => &[],
    };
    let value_place = &place;
    let entries = lists.into_iter().flat_map(|(list, outgoing, entries)| {
        entries
            .into_iter()
            .enumerate()
            .map(move |(m, raw)| (list, outgoing, m, raw))
    });
    for (list, outgoing, m, raw) in entries {
        let place = format!("{value_place}.{list}[{m}]");
        let id = raw.get("id").and_then(Value::as_str).map(str::to_owned);
        let Some(phone_number_id) = &phone_number_id else {
            // Without the business number there is no conversation to file
            // the message under: held, never dropped.
            let detail = format!("{value_place}.metadata.phone_number_id: missing");
            hold_raw(decoded, id.as_deref(), invalid(detail), raw);
            continue;
        };
        file(
            decoded,
            entry(
                &raw,
                phone_number_id,
                business.as_deref(),
                contacts,
                outgoing,
                &place,
            ),
            raw,
        );
    }
}

/// The phone number ID of a change's `value.metadata`.
fn phone_number_id(value: &Map<String, Value>) -> Option<String> {
    match value.get("metadata").and_then(|m| m.get("phone_number_id")) {
        Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
        _ => None,
    }
}

/// What [`take_list`] found under a key.
enum Taken {
    List(Vec<Value>),
    /// No such key, or `null`.
    Absent,
    /// Not an object, or not a list under the key: left where it was, so
    /// the whole value can be held.
    Other,
}

/// Takes the list under `key` out of the object `v`.
fn take_list(v: &mut Value, key: &str) -> Taken {
    let Some(obj) = v.as_object_mut() else {
        return Taken::Other;
    };
    match obj.remove(key) {
        Some(Value::Array(list)) => Taken::List(list),
        None | Some(Value::Null) => Taken::Absent,
        Some(other) => {
            obj.insert(key.to_owned(), other);
            Taken::Other
        }
    }
}

/// `{phone_number_id}:group:{group_id}`, a group chat's conversation.
fn group_conversation(phone_number_id: &str, group: &str) -> String {
    format!("{phone_number_id}:{GROUP}{group}")
}

/// The business's own number (`metadata.display_phone_number`), digits
/// only: what a message the business sent names as its `from`.
fn business_number(value: &Map<String, Value>) -> Option<String> {
    value
        .get("metadata")
        .and_then(|m| m.get("display_phone_number"))
        .and_then(Value::as_str)
        .map(digits)
        .filter(|d| !d.is_empty())
}

/// The phone number `obj[key]` names, by its digits (`+49 151 …` and
/// `49151…` are one number); `None` when absent, `null`, or without digits.
fn number(obj: &Map<String, Value>, key: &str) -> Option<String> {
    string(obj, key).map(digits).filter(|d| !d.is_empty())
}

/// The digits of a phone number as WhatsApp writes it (`+49 151 …`,
/// `49151…`).
fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// A `history` change: `value.history[]` chunks of `threads[]`, each the
/// chat with one user (`threads[].id`, the user's phone number) and its
/// `messages[]`. A message whose `from` is the thread's user is the
/// user's; one whose `from` is the business number
/// (`metadata.display_phone_number`, and a `to`, if any, the thread's
/// user) the business's, to the thread's user. Numbers are compared by
/// their digits. Any other sender or recipient is held (`invalid_entry`):
/// the two sides are never guessed. A chunk of `errors` (the user declined
/// to share the history) carries no content and is counted; anything that
/// may hold messages but cannot be read is held, never skipped.
fn decode_history(decoded: &mut Decoded, mut value: Map<String, Value>, place: &str) {
    let phone_number_id = phone_number_id(&value);
    let business = business_number(&value);
    let chunks = match value.remove(HISTORY) {
        None | Some(Value::Null) => {
            decoded.skipped.push(SkipKind::NonMessageChange);
            return;
        }
        Some(Value::Array(chunks)) => chunks,
        Some(other) => {
            let detail = format!("{place}.history: not a list");
            hold_raw(decoded, None, invalid(detail), other);
            return;
        }
    };
    for (h, mut chunk) in chunks.into_iter().enumerate() {
        let chunk_place = format!("{place}.history[{h}]");
        let threads = match take_list(&mut chunk, "threads") {
            Taken::List(threads) => threads,
            Taken::Absent if chunk.get("errors").is_some_and(Value::is_array) => {
                decoded.skipped.push(SkipKind::NonMessageChange);
                continue;
            }
            Taken::Absent => continue,
            Taken::Other => {
                let detail = format!("{chunk_place}.threads: not a list");
                hold_raw(decoded, None, invalid(detail), chunk);
                continue;
            }
        };
        for (t, mut thread) in threads.into_iter().enumerate() {
            let thread_place = format!("{chunk_place}.threads[{t}]");
            let user = thread.get("id").and_then(Value::as_str).map(str::to_owned);
            let messages = match take_list(&mut thread, "messages") {
                Taken::List(messages) => messages,
                Taken::Absent => continue,
                Taken::Other => {
                    let detail = format!("{thread_place}.messages: not a list");
                    hold_raw(decoded, None, invalid(detail), thread);
                    continue;
                }
            };
            for (m, mut raw) in messages.into_iter().enumerate() {
                let place = format!("{thread_place}.messages[{m}]");
                let id = raw.get("id").and_then(Value::as_str).map(str::to_owned);
                let (Some(phone_number_id), Some(user)) = (&phone_number_id, &user) else {
                    let detail = if phone_number_id.is_none() {
                        format!("{place}: metadata.phone_number_id missing")
                    } else {
                        format!("{thread_place}.id: missing")
                    };
                    hold_raw(decoded, id.as_deref(), invalid(detail), raw);
                    continue;
                };
                if let Value::Object(wa) = &mut raw {
                    let thread = digits(user);
                    let (from, to) = (number(wa, "from"), number(wa, "to"));
                    let by_user = !thread.is_empty() && from.as_deref() == Some(thread.as_str());
                    let by_business = from.is_some() && from == business;
                    let to_user = !thread.is_empty() && to.as_deref() == Some(thread.as_str());
                    let to_business = to.is_some() && to == business;
                    match (to.is_some(), by_user, by_business, to_user) {
                        // Keyed like the thread and like live messages
                        // (`+49…` and `49…` are one conversation); the
                        // user's message may name the business as `to`.
                        (false, true, false, _) => {
                            wa.insert("from".into(), Value::String(thread));
                        }
                        (true, true, false, false) if to_business => {
                            wa.insert("from".into(), Value::String(thread));
                        }
                        (false, false, true, _) | (true, false, true, true) => {
                            wa.insert("to".into(), Value::String(thread));
                        }
                        _ => {
                            // Neither side for sure: never credit the
                            // patient's words to the hospital, or back.
                            let detail = format!(
                                "{place}: from/to not the thread's user and the business number"
                            );
                            hold_raw(decoded, id.as_deref(), invalid(detail), raw);
                            continue;
                        }
                    }
                }
                if let Some(kind) = awaiting_media(&raw) {
                    let detail = format!(
                        "{place}.{kind}.id: missing (history media ids come in a later history webhook)"
                    );
                    let hold = Hold {
                        reason: Reason::MediaUnavailable,
                        detail,
                    };
                    hold_raw(decoded, id.as_deref(), hold, raw);
                    continue;
                }
                file(
                    decoded,
                    entry(
                        &raw,
                        phone_number_id,
                        business.as_deref(),
                        &[],
                        false,
                        &place,
                    ),
                    raw,
                );
            }
        }
    }
    // A later history webhook repeats a medium with its id: that copy
    // replaces the one held for want of it and is archived.
    decoded.supersedes_hold = Some(Reason::MediaUnavailable);
}

/// The media type (`image`, `video`, …) of a history message whose medium
/// has no `id` yet. The history reference: "media messages will not
/// include media asset IDs; additional history webhooks containing media
/// message asset IDs will be sent separately". Held `media_unavailable`
/// until that copy arrives; never a defect of the entry.
fn awaiting_media(raw: &Value) -> Option<&'static str> {
    let kind = raw.get("type").and_then(Value::as_str)?;
    let kind = ["image", "video", "audio", "document", "sticker"]
        .into_iter()
        .find(|k| *k == kind)?;
    let media = raw.get(kind)?.as_object()?;
    let has_id = media
        .get("id")
        .and_then(Value::as_str)
        .is_some_and(|id| !id.is_empty());
    (!has_id).then_some(kind)
}

fn string<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Whether an entry of a `messages` list was sent by the business: it
/// names a recipient (`to` / `to_user_id`, a business message a forwarder
/// put there; incoming messages carry none, Webhooks reference). With both
/// `from` and `to`, the side that is the business number
/// (`metadata.display_phone_number`, `business`, digits) decides; when
/// neither is, the entry is held: the patient's words are never credited
/// to the hospital, or back. `null` or `""` is no recipient.
fn sent_by_business(
    wa: &Map<String, Value>,
    business: Option<&str>,
    place: &str,
) -> Result<bool, Hold> {
    let (from, to) = (number(wa, "from"), number(wa, "to"));
    if to.is_none() && string(wa, "to_user_id").is_none() {
        return Ok(false);
    }
    if from.is_none() && string(wa, "from_user_id").is_none() {
        return Ok(true);
    }
    match business {
        Some(b) if from.as_deref() == Some(b) => Ok(true),
        Some(b) if to.as_deref() == Some(b) => Ok(false),
        _ => Err(invalid(format!(
            "{place}: from and to both set, and neither is the business number (metadata.display_phone_number)"
        ))),
    }
}

/// One `messages[]` / `message_echoes[]` entry.
fn entry(
    raw: &Value,
    phone_number_id: &str,
    business: Option<&str>,
    contacts: &[Value],
    outgoing: bool,
    place: &str,
) -> Result<Entry, Hold> {
    let Value::Object(wa) = raw else {
        return Err(invalid(format!("{place}: not an object")));
    };
    let id = match wa.get("id") {
        Some(Value::String(id)) if is_message_id(id) => id.clone(),
        Some(_) => return Err(invalid(format!("{place}.id: not a message id"))),
        None => return Err(invalid(format!("{place}.id: missing"))),
    };
    let kind = match wa.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return Err(invalid(format!("{place}.type: not a string"))),
        None => return Err(invalid(format!("{place}.type: missing"))),
    };
    // Entries without patient content are counted before anything else is
    // required of them.
    match kind {
        "reaction" => return Ok(Entry::Skip(SkipKind::Reaction)),
        // The user opened the chat for the first time (Cloud API welcome
        // messages: `type: request_welcome`, no content): generated by
        // WhatsApp, nothing the user wrote.
        "request_welcome" => return Ok(Entry::Skip(SkipKind::System)),
        // A notice generated by WhatsApp, not written by the user: no
        // patient content (Webhooks reference, system messages). One that
        // says the user's identity changed retires the conversation's link.
        "system" => {
            let change = wa
                .get("system")
                .and_then(|s| s.get("type"))
                .and_then(Value::as_str)
                .is_some_and(|t| IDENTITY_CHANGES.contains(&t));
            // Older notices name the user in `system.customer` only. Phone
            // numbers and WhatsApp IDs by their digits, as every
            // conversation is keyed (a group notice writes `+49…`).
            let user = number(wa, "from")
                .or(string(wa, "from_user_id").map(str::to_owned))
                .or(wa
                    .get("system")
                    .and_then(Value::as_object)
                    .and_then(|s| number(s, "customer")));
            return Ok(match (change, user) {
                // A change that names no user cannot retire anything:
                // a person looks at it.
                (true, None) => {
                    return Err(invalid(
                        "system: an identity change without from, from_user_id or system.customer",
                    ));
                }
                (true, Some(user)) => {
                    // The user's own chat, and the group the notice
                    // came in.
                    let mut conversations = vec![format!("{phone_number_id}:{user}")];
                    if let Some(group) = string(wa, "group_id") {
                        conversations.push(group_conversation(phone_number_id, group));
                    }
                    Entry::IdentityChanged(conversations, timestamp(wa.get("timestamp")))
                }
                _ => Entry::Skip(SkipKind::System),
            });
        }
        _ => {}
    }
    if let Some(errors) = wa.get("errors").and_then(Value::as_array)
        && !errors.is_empty()
    {
        let code = errors[0]
            .get("code")
            .and_then(Value::as_i64)
            .map_or_else(|| "without a code".to_owned(), |c| format!("code {c}"));
        let reason = if matches!(kind, "unsupported" | "unknown") {
            Reason::UnsupportedMessageType
        } else {
            Reason::MessageError
        };
        return Err(Hold {
            reason,
            detail: format!("{place}.errors[0]: {code} (type {})", term(kind)),
        });
    }
    let sent_at = timestamp(wa.get("timestamp"))
        .ok_or_else(|| invalid(format!("{place}.timestamp: not a unix time")))?;
    // The user's side: `from` / `from_user_id` of what the user sent,
    // `to` / `to_user_id` of what the business sent.
    let outgoing = outgoing || sent_by_business(wa, business, place)?;
    let (phone_key, user_key) = if outgoing {
        ("to", "to_user_id")
    } else {
        ("from", "from_user_id")
    };
    // A phone number by its digits: `from` / `wa_id` are written `49151…`,
    // an echo's or a group message's number as it was sent (`+49151…`,
    // smb_message_echoes and group webhooks reference); one person, one
    // conversation.
    let phone = string(wa, phone_key).map(digits);
    let user = match (phone.as_deref(), string(wa, user_key)) {
        (Some(""), _) => {
            return Err(invalid(format!("{place}.{phone_key}: not a phone number")));
        }
        (Some(phone), _) => phone.to_owned(),
        (None, Some(user_id)) => user_id.to_owned(),
        (None, None) => {
            return Err(invalid(format!(
                "{place}.{phone_key}: missing (and no {user_key})"
            )));
        }
    };
    let user_id = string(wa, user_key);
    let display = contacts
        .iter()
        .find(|c| {
            let wa_id = c.get("wa_id").and_then(Value::as_str).map(digits);
            phone.is_some() && wa_id == phone
                || user_id.is_some() && c.get("user_id").and_then(Value::as_str) == user_id
        })
        .and_then(|c| c.get("profile"))
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (body, kind) = body(wa, kind, place)?;
    let user_party = Party {
        id: user.clone(),
        role: Role::Unknown,
        display,
    };
    let (sender, recipients) = if outgoing {
        let business = Party {
            id: phone_number_id.to_owned(),
            role: Role::Clinician,
            display: None,
        };
        (business, vec![user_party])
    } else {
        (user_party, Vec::new())
    };
    let context = wa.get("context");
    let flag = |k: &str| context.and_then(|c| c.get(k)).and_then(Value::as_bool) == Some(true);
    let forwarded = if flag("frequently_forwarded") {
        Some(Forwarded::Frequently)
    } else if flag("forwarded") {
        Some(Forwarded::Once)
    } else {
        None
    };
    let in_reply_to = wa
        .get("context")
        .and_then(|c| c.get("id"))
        .and_then(Value::as_str)
        .filter(|i| is_message_id(i))
        .map(str::to_owned);
    Ok(Entry::Message(Box::new(Message {
        key: MessageKey {
            source: SOURCE.to_owned(),
            message_id: id.clone(),
        },
        event_id: id,
        conversation: match string(wa, "group_id") {
            Some(group) => group_conversation(phone_number_id, group),
            None => format!("{phone_number_id}:{user}"),
        },
        sender,
        recipients,
        sent_at,
        received_at: None,
        in_reply_to,
        replaces: None,
        body,
        part: None,
        case: None,
        mark: None,
        kind: Some(kind),
        forwarded,
    })))
}

/// A unix time in seconds, as a string (the reference's form) or a number,
/// within the years 0001-9999 a FHIR date can hold.
fn timestamp(v: Option<&Value>) -> Option<DateTime<Utc>> {
    use chrono::Datelike;
    let seconds = match v? {
        Value::String(s) => s.parse::<i64>().ok()?,
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    DateTime::<Utc>::from_timestamp(seconds, 0).filter(|t| (1..=9999).contains(&t.year()))
}

#[cfg(test)]
mod tests;
