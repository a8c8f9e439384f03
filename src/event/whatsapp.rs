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
//!   arrays (`history`), which are held unread;
//! - `smb_message_echoes` (`message_echoes`) and entries naming a recipient
//!   (`to`, `to_user_id`) are what the business sent: the hospital is the
//!   sender ([`Role::Clinician`]), the user the recipient, and the
//!   conversation is keyed by the user's side like an incoming message's.
//!
//! The user is named by `from` (phone number, `wa_id`) or, for a user known
//! only by username, by the business-scoped user ID `from_user_id`; the
//! conversation is `{phone_number_id}:{phone number or user id}`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{
    Body, DecodeError, DecodeErrorCode, Decoded, Format, Forwarded, HeldEntry, Media,
    MediaLocation, Message, MessageKey, MessageKind, Party, Role, SkipKind, hold, is_message_id,
    parse_sha256,
};

/// Source name of WhatsApp messages.
pub const SOURCE: &str = "whatsapp";

/// Webhook `field` values whose changes carry messages this module reads.
const MESSAGES: &str = "messages";
const ECHOES: &str = "smb_message_echoes";

/// Why one entry cannot be archived as decoded.
struct Hold {
    reason: &'static str,
    detail: String,
}

fn invalid(detail: impl Into<String>) -> Hold {
    Hold {
        reason: hold::INVALID_ENTRY,
        detail: detail.into(),
    }
}

fn unsupported(detail: impl Into<String>) -> Hold {
    Hold {
        reason: hold::UNSUPPORTED_MESSAGE_TYPE,
        detail: detail.into(),
    }
}

/// What one entry decodes to.
enum Entry {
    Message(Box<Message>),
    Skip(SkipKind),
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
    let (list, outgoing) = match field.as_deref() {
        // Older forwarders omit `field`; the value's arrays say what it is.
        None if value.contains_key("message_echoes") && !value.contains_key("messages") => {
            ("message_echoes", true)
        }
        Some(MESSAGES) | None => ("messages", false),
        Some(ECHOES) => ("message_echoes", true),
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
    let entries = match value.remove(list) {
        None | Some(Value::Null) => return,
        Some(Value::Array(entries)) => entries,
        Some(other) => {
            let detail = format!("{place}.{list}: not a list");
            hold_raw(decoded, None, invalid(detail), other);
            return;
        }
    };
    let phone_number_id = match value.get("metadata").and_then(|m| m.get("phone_number_id")) {
        Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
        _ => None,
    };
    let contacts = match value.get("contacts") {
        Some(Value::Array(c)) => c.as_slice(),
        _ => &[],
    };
    let value_place = &place;
    for (m, raw) in entries.into_iter().enumerate() {
        let place = format!("{value_place}.{list}[{m}]");
        let id = raw.get("id").and_then(Value::as_str).map(str::to_owned);
        let Some(phone_number_id) = &phone_number_id else {
            // Without the business number there is no conversation to file
            // the message under: held, never dropped.
            let detail = format!("{value_place}.metadata.phone_number_id: missing");
            hold_raw(decoded, id.as_deref(), invalid(detail), raw);
            continue;
        };
        match entry(&raw, phone_number_id, contacts, outgoing, &place) {
            Ok(Entry::Message(msg)) => decoded.messages.push(*msg),
            Ok(Entry::Skip(kind)) => decoded.skipped.push(kind),
            Err(hold) => hold_raw(decoded, id.as_deref(), hold, raw),
        }
    }
}

fn string<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// One `messages[]` / `message_echoes[]` entry.
fn entry(
    raw: &Value,
    phone_number_id: &str,
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
        // A notice generated by WhatsApp (the user changed number or
        // business-scoped user ID), not written by the user: no patient
        // content (Webhooks reference, system messages).
        "system" => return Ok(Entry::Skip(SkipKind::System)),
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
            hold::UNSUPPORTED_MESSAGE_TYPE
        } else {
            hold::MESSAGE_ERROR
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
    let outgoing = outgoing || wa.contains_key("to") || wa.contains_key("to_user_id");
    let (phone_key, user_key) = if outgoing {
        ("to", "to_user_id")
    } else {
        ("from", "from_user_id")
    };
    let user = match (string(wa, phone_key), string(wa, user_key)) {
        (Some(phone), _) => phone.to_owned(),
        (None, Some(user_id)) => user_id.to_owned(),
        (None, None) => {
            return Err(invalid(format!(
                "{place}.{phone_key}: missing (and no {user_key})"
            )));
        }
    };
    let user_ids = [string(wa, phone_key), string(wa, user_key)];
    let display = contacts
        .iter()
        .find(|c| {
            user_ids.iter().flatten().any(|u| {
                c.get("wa_id").and_then(Value::as_str) == Some(u)
                    || c.get("user_id").and_then(Value::as_str) == Some(u)
            })
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
        conversation: format!("{phone_number_id}:{user}"),
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

fn body(wa: &Map<String, Value>, kind: &str, place: &str) -> Result<(Body, MessageKind), Hold> {
    let object = |name: &str| -> Result<&Map<String, Value>, Hold> {
        wa.get(name)
            .and_then(Value::as_object)
            .ok_or_else(|| invalid(format!("{place}.{name}: missing")))
    };
    let text = |t: String| -> Result<Body, Hold> {
        if t.trim().is_empty() {
            Err(invalid(format!("{place}.{kind}: no readable text")))
        } else {
            Ok(Body::Text(t))
        }
    };
    Ok(match kind {
        "text" => match object("text")?.get("body") {
            Some(Value::String(b)) if !b.is_empty() => (Body::Text(b.clone()), MessageKind::Text),
            _ => return Err(invalid(format!("{place}.text: missing body"))),
        },
        "image" | "document" | "audio" | "video" | "sticker" => {
            let media_obj = object(kind)?;
            let message_kind = match kind {
                "image" => MessageKind::Image,
                "document" => MessageKind::Document,
                "audio" if media_obj.get("voice") == Some(&Value::Bool(true)) => MessageKind::Voice,
                "audio" => MessageKind::Audio,
                "video" => MessageKind::Video,
                _ => MessageKind::Sticker,
            };
            (Body::Media(media(media_obj, place, kind)?), message_kind)
        }
        "interactive" => (
            text(interactive(object("interactive")?, place)?)?,
            MessageKind::Interactive,
        ),
        // A quick reply to a template's button: its visible text.
        "button" => match object("button")?.get("text") {
            Some(Value::String(t)) => (text(t.clone())?, MessageKind::Interactive),
            _ => return Err(invalid(format!("{place}.button.text: missing"))),
        },
        "location" => (
            text(location(object("location")?, place)?)?,
            MessageKind::Location,
        ),
        "contacts" => match wa.get("contacts") {
            Some(Value::Array(cards)) => (text(contacts(cards, place)?)?, MessageKind::Contacts),
            _ => return Err(invalid(format!("{place}.contacts: missing"))),
        },
        // An edit or a revocation of an earlier message: new or withdrawn
        // content this version does not apply to the archived record.
        "edit" | "revoke" => {
            return Err(unsupported(format!(
                "{place}.type: {kind} of an earlier message is not applied by this version"
            )));
        }
        // `unsupported`, `unknown`, `order` and any future type: held sealed
        // for review, never dropped.
        other => {
            return Err(unsupported(format!(
                "{place}.type: {} is not a type this version archives",
                term(other)
            )));
        }
    })
}

/// The readable text of an interactive reply: the button's title; the list
/// row's title and description; a flow's answers as `key: value` lines.
fn interactive(i: &Map<String, Value>, place: &str) -> Result<String, Hold> {
    let reply_type = i.get("type").and_then(Value::as_str).unwrap_or_default();
    let reply = |name: &str| {
        i.get(name)
            .and_then(Value::as_object)
            .ok_or_else(|| invalid(format!("{place}.interactive.{name}: missing")))
    };
    let field = |obj: &Map<String, Value>, name: &str, of: &str| -> Result<String, Hold> {
        match obj.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            _ => Err(invalid(format!("{place}.interactive.{of}.{name}: missing"))),
        }
    };
    match reply_type {
        "button_reply" => field(reply("button_reply")?, "title", "button_reply"),
        "list_reply" => {
            let r = reply("list_reply")?;
            let title = field(r, "title", "list_reply")?;
            Ok(match r.get("description").and_then(Value::as_str) {
                Some(d) if !d.trim().is_empty() => format!("{title}\n{d}"),
                _ => title,
            })
        }
        "nfm_reply" => {
            let r = reply("nfm_reply")?;
            let json = field(r, "response_json", "nfm_reply")?;
            let answers: Map<String, Value> = serde_json::from_str(&json).map_err(|_| {
                invalid(format!(
                    "{place}.interactive.nfm_reply.response_json: not a JSON object"
                ))
            })?;
            let lines: Vec<String> = answers
                .iter()
                // The flow token identifies the flow session, not an answer.
                .filter(|(k, _)| k.as_str() != "flow_token")
                .map(|(k, v)| format!("{k}: {}", readable(v)))
                .collect();
            if lines.is_empty() {
                return Err(invalid(format!(
                    "{place}.interactive.nfm_reply.response_json: no answers"
                )));
            }
            Ok(lines.join("\n"))
        }
        other => Err(unsupported(format!(
            "{place}.interactive.type: {} is not a reply this version archives",
            term(other)
        ))),
    }
}

/// A flow answer as text: strings as they are, lists joined with commas,
/// anything else as compact JSON.
fn readable(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(readable).collect::<Vec<_>>().join(", "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `Location: {name}`, address, `{latitude}, {longitude}`, URL, one a line.
fn location(l: &Map<String, Value>, place: &str) -> Result<String, Hold> {
    let coordinate = |k: &str| match l.get(k) {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.parse::<f64>().ok(),
        _ => None,
    };
    let (Some(lat), Some(lon)) = (coordinate("latitude"), coordinate("longitude")) else {
        return Err(invalid(format!(
            "{place}.location: latitude or longitude missing"
        )));
    };
    let mut lines = vec![match string(l, "name") {
        Some(name) => format!("Location: {name}"),
        None => "Location".to_owned(),
    }];
    lines.extend(string(l, "address").map(str::to_owned));
    lines.push(format!("{lat}, {lon}"));
    lines.extend(string(l, "url").map(str::to_owned));
    Ok(lines.join("\n"))
}

/// Shared contact cards (Cloud API `contacts` object): `Contact:
/// {formatted name}` and a line per phone number, e-mail address, postal
/// address, URL, birthday and organisation (company, department, title):
/// everything the card carries reaches the record.
fn contacts(cards: &[Value], place: &str) -> Result<String, Hold> {
    let mut blocks = Vec::new();
    for (i, card) in cards.iter().enumerate() {
        let Some(card) = card.as_object() else {
            return Err(invalid(format!("{place}.contacts[{i}]: not an object")));
        };
        let name = card
            .get("name")
            .and_then(Value::as_object)
            .and_then(|n| string(n, "formatted_name"));
        let mut lines = vec![format!("Contact: {}", name.unwrap_or("(no name)"))];
        let list = |k: &str| card.get(k).and_then(Value::as_array).into_iter().flatten();
        for p in list("phones") {
            if let Some(o) = p.as_object()
                && let Some(phone) = string(o, "phone")
            {
                match string(o, "type") {
                    Some(t) => lines.push(format!("Phone ({t}): {phone}")),
                    None => lines.push(format!("Phone: {phone}")),
                }
            }
        }
        for e in list("emails") {
            if let Some(email) = e.as_object().and_then(|o| string(o, "email")) {
                lines.push(format!("E-mail: {email}"));
            }
        }
        for a in list("addresses") {
            let Some(o) = a.as_object() else { continue };
            let parts: Vec<&str> = ["street", "zip", "city", "state", "country"]
                .iter()
                .filter_map(|k| string(o, k))
                .collect();
            if !parts.is_empty() {
                let label = string(o, "type").map_or_else(String::new, |t| format!(" ({t})"));
                lines.push(format!("Address{label}: {}", parts.join(", ")));
            }
        }
        for u in list("urls") {
            if let Some(url) = u.as_object().and_then(|o| string(o, "url")) {
                lines.push(format!("URL: {url}"));
            }
        }
        if let Some(birthday) = card.get("birthday").and_then(Value::as_str) {
            lines.push(format!("Birthday: {birthday}"));
        }
        if let Some(org) = card.get("org").and_then(Value::as_object) {
            let parts: Vec<&str> = ["company", "department", "title"]
                .iter()
                .filter_map(|k| string(org, k))
                .collect();
            if !parts.is_empty() {
                lines.push(format!("Organisation: {}", parts.join(", ")));
            }
        }
        blocks.push(lines.join("\n"));
    }
    if blocks.is_empty() {
        return Err(invalid(format!("{place}.contacts: empty")));
    }
    Ok(blocks.join("\n\n"))
}

fn media(m: &Map<String, Value>, place: &str, kind: &str) -> Result<Media, Hold> {
    let id = string(m, "id").ok_or_else(|| invalid(format!("{place}.{kind}.id: missing")))?;
    let declared_sha256 = match m.get("sha256") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            parse_sha256(s)
                .ok_or_else(|| invalid(format!("{place}.{kind}.sha256: not a SHA-256")))?,
        ),
        Some(_) => return Err(invalid(format!("{place}.{kind}.sha256: not a SHA-256"))),
    };
    let mime_type = string(m, "mime_type")
        .unwrap_or_default()
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
        file_name: string(m, "filename").map(str::to_owned),
        caption: string(m, "caption").map(str::to_owned),
        declared_size: None,
        declared_sha256,
        location: MediaLocation::Reference(id.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::super::decode as decode_payload;
    use super::*;
    use serde_json::json;

    const PN: &str = "PN1";
    const USER: &str = "4917000";

    fn webhook(changes: Value) -> Vec<u8> {
        json!({"object": "whatsapp_business_account",
               "entry": [{"id": "WABA", "changes": changes}]})
        .to_string()
        .into_bytes()
    }

    fn hook(messages: Value) -> Vec<u8> {
        webhook(json!([{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "4930000", "phone_number_id": PN},
            "contacts": [{"profile": {"name": "Erika"}, "wa_id": USER}],
            "messages": messages
        }}]))
    }

    fn decoded(messages: Value) -> Decoded {
        decode_payload(&hook(messages), 1 << 20).unwrap()
    }

    fn msg(id: &str, kind: &str, content: Value) -> Value {
        let mut m = json!({"from": USER, "id": id, "timestamp": "1764320000", "type": kind});
        if !content.is_null() {
            m[kind] = content;
        }
        m
    }

    fn text_of(m: &Message) -> &str {
        match &m.body {
            Body::Text(t) => t,
            Body::Media(_) => panic!("not text"),
        }
    }

    fn held_one(d: &Decoded) -> &HeldEntry {
        assert!(d.messages.is_empty(), "{:?}", d.messages);
        assert_eq!(d.held.len(), 1, "{:?}", d.held);
        &d.held[0]
    }

    #[test]
    fn several_messages_in_one_payload() {
        let payload = hook(json!([
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
        assert_eq!(image.kind(), MessageKind::Image);
        let Body::Media(m) = &image.body else {
            panic!("not media")
        };
        assert_eq!(m.location, MediaLocation::Reference("M1".into()));
        assert!(m.declared_sha256.is_some());
    }

    /// A broken entry is held with its place; it no longer refuses the
    /// payload. Only a payload that is no webhook is refused.
    #[test]
    fn broken_messages_are_held_with_their_place() {
        let d = decoded(json!([
            {"from": "4917000", "id": "wamid.A", "timestamp": "yesterday", "type": "text",
             "text": {"body": "Hello"}}
        ]));
        let held = held_one(&d);
        assert_eq!(held.reason, hold::INVALID_ENTRY);
        assert_eq!(held.key.message_id, "wamid.A");
        assert_eq!(
            held.detail,
            "entry[0].changes[0].value.messages[0].timestamp: not a unix time"
        );
        let d = decoded(json!([{"id": "wamid.A"}]));
        assert_eq!(
            held_one(&d).detail,
            "entry[0].changes[0].value.messages[0].type: missing"
        );
        for not_a_webhook in [
            json!({"object": "whatsapp_business_account"}),
            json!({"object": "whatsapp_business_account", "entry": {"id": "1"}}),
        ] {
            let err = decode_payload(not_a_webhook.to_string().as_bytes(), 1 << 20).unwrap_err();
            assert_eq!(err.code, DecodeErrorCode::SchemaViolation);
        }
    }

    #[test]
    fn a_malformed_entry_between_good_ones_is_held_alone() {
        let d = decoded(json!([
            msg("wamid.1", "text", json!({"body": "vorher"})),
            {"from": USER, "id": "wamid.2", "timestamp": "later", "type": "text", "text": {"body": "kaputt"}},
            msg("wamid.3", "text", json!({"body": "nachher"})),
        ]));
        let ids: Vec<&str> = d
            .messages
            .iter()
            .map(|m| m.key.message_id.as_str())
            .collect();
        assert_eq!(ids, ["wamid.1", "wamid.3"]);
        assert_eq!(d.held.len(), 1);
        assert_eq!(
            d.held[0].detail,
            "entry[0].changes[0].value.messages[1].timestamp: not a unix time"
        );
        assert_eq!(d.held[0].raw["id"], "wamid.2");
    }

    #[test]
    fn unusable_ids_are_held_under_a_digest_of_the_entry() {
        for (id, what) in [
            (json!(""), "not a message id"),
            (json!(12345), "not a message id"),
            (json!("wamid.\u{7}\n"), "not a message id"),
            (json!("x".repeat(300)), "not a message id"),
        ] {
            let d = decoded(
                json!([{"from": USER, "id": id, "timestamp": "1", "type": "text",
                                    "text": {"body": "x"}}]),
            );
            let held = held_one(&d);
            assert!(held.key.message_id.starts_with("entry-"), "{:?}", held.key);
            assert!(
                held.detail.ends_with(&format!(".id: {what}")),
                "{}",
                held.detail
            );
        }
        let d = decoded(
            json!([{"from": USER, "timestamp": "1", "type": "text", "text": {"body": "x"}}]),
        );
        assert!(held_one(&d).detail.ends_with(".messages[0].id: missing"));
    }

    #[test]
    fn times_beyond_four_digit_years_are_held() {
        for ts in [
            json!("99999999999999999999"),
            json!("9223372036854775807"),
            json!("253402300800"),
        ] {
            let d = decoded(
                json!([{"from": USER, "id": "wamid.T", "timestamp": ts, "type": "text",
                                    "text": {"body": "x"}}]),
            );
            assert!(held_one(&d).detail.ends_with(".timestamp: not a unix time"));
        }
        let d = decoded(
            json!([{"from": USER, "id": "wamid.T", "timestamp": 1764320000, "type": "text",
                                "text": {"body": "x"}}]),
        );
        assert_eq!(d.messages.len(), 1, "a numeric timestamp is read too");
    }

    #[test]
    fn broken_media_are_held_with_the_field() {
        for (content, want) in [
            (Value::Null, "image: missing"),
            (
                json!({"id": "M1", "mime_type": "garbage"}),
                "image.mime_type: not a media type",
            ),
            (
                json!({"id": "M1", "mime_type": "image/png", "sha256": "nope"}),
                "image.sha256: not a SHA-256",
            ),
            (json!({"mime_type": "image/png"}), "image.id: missing"),
        ] {
            let d = decoded(json!([msg("wamid.M", "image", content)]));
            let held = held_one(&d);
            assert_eq!(held.reason, hold::INVALID_ENTRY);
            assert!(held.detail.ends_with(want), "{} / {want}", held.detail);
        }
        let d = decoded(json!([msg("wamid.T", "text", Value::Null)]));
        assert!(held_one(&d).detail.ends_with("messages[0].text: missing"));
    }

    #[test]
    fn interactive_replies_are_readable_text_in_reply_to_the_question() {
        let mut button = msg(
            "wamid.I1",
            "interactive",
            json!({"type": "button_reply", "button_reply": {"id": "b-2", "title": "Fieber über 38"}}),
        );
        button["context"] = json!({"from": "4930000", "id": "wamid.Q1"});
        let list = msg(
            "wamid.I2",
            "interactive",
            json!({"type": "list_reply", "list_reply": {"id": "r-4", "title": "Nachts",
                   "description": "Schmerzen vor allem nachts"}}),
        );
        let flow = msg(
            "wamid.I3",
            "interactive",
            json!({"type": "nfm_reply", "nfm_reply": {"name": "flow", "body": "Sent",
                   "response_json": "{\"flow_token\":\"tok-1\",\"schmerzskala\":\"6\",\"symptome\":[\"Schwellung\",\"Wärme\"]}"}}),
        );
        let quick = msg(
            "wamid.I4",
            "button",
            json!({"payload": "YES", "text": "Ja, Termin passt"}),
        );
        let d = decoded(json!([button, list, flow, quick]));
        assert!(d.held.is_empty(), "{:?}", d.held);
        let texts: Vec<&str> = d.messages.iter().map(text_of).collect();
        assert_eq!(
            texts,
            [
                "Fieber über 38",
                "Nachts\nSchmerzen vor allem nachts",
                "schmerzskala: 6\nsymptome: Schwellung, Wärme",
                "Ja, Termin passt",
            ]
        );
        assert!(
            d.messages
                .iter()
                .all(|m| m.kind() == MessageKind::Interactive)
        );
        assert_eq!(d.messages[0].in_reply_to.as_deref(), Some("wamid.Q1"));
        assert_eq!(d.messages[0].content_type(), "text/plain");
    }

    #[test]
    fn broken_or_unknown_interactive_replies_are_held() {
        let d = decoded(json!([msg(
            "wamid.X",
            "interactive",
            json!({"type": "nfm_reply", "nfm_reply": {"response_json": "not json"}})
        )]));
        let held = held_one(&d);
        assert_eq!(held.reason, hold::INVALID_ENTRY);
        assert!(
            held.detail
                .ends_with("interactive.nfm_reply.response_json: not a JSON object")
        );
        let d = decoded(json!([msg(
            "wamid.X",
            "interactive",
            json!({"type": "carousel_reply", "carousel_reply": {}})
        )]));
        let held = held_one(&d);
        assert_eq!(held.reason, hold::UNSUPPORTED_MESSAGE_TYPE);
        assert!(
            held.detail.contains("interactive.type: carousel_reply"),
            "{}",
            held.detail
        );
    }

    #[test]
    fn locations_and_contact_cards_become_readable_text() {
        let location = msg(
            "wamid.L",
            "location",
            json!({"latitude": 52.52, "longitude": 13.405,
            "name": "Praxis am Park", "address": "Parkweg 1"}),
        );
        let cards = msg("wamid.C", "contacts", Value::Null);
        let mut cards = cards;
        cards["contacts"] = json!([{"name": {"formatted_name": "Max Muster", "first_name": "Max"},
            "phones": [{"phone": "+49 30 1234", "type": "HOME"}],
            "emails": [{"email": "max@example.invalid"}], "org": {"company": "Pflegedienst Nord"}}]);
        let d = decoded(json!([location, cards]));
        assert!(d.held.is_empty(), "{:?}", d.held);
        assert_eq!(
            text_of(&d.messages[0]),
            "Location: Praxis am Park\nParkweg 1\n52.52, 13.405"
        );
        assert_eq!(d.messages[0].kind(), MessageKind::Location);
        assert_eq!(
            text_of(&d.messages[1]),
            "Contact: Max Muster\nPhone (HOME): +49 30 1234\nE-mail: max@example.invalid\nOrganisation: Pflegedienst Nord"
        );
        assert_eq!(d.messages[1].kind(), MessageKind::Contacts);
        let d = decoded(json!([msg("wamid.L2", "location", json!({"name": "x"}))]));
        assert!(
            held_one(&d)
                .detail
                .ends_with("location: latitude or longitude missing")
        );
    }

    #[test]
    fn every_part_of_a_contact_card_reaches_the_text() {
        let mut cards = msg("wamid.C2", "contacts", Value::Null);
        cards["contacts"] = json!([{"name": {"formatted_name": "Anna Pflege"},
            "phones": [{"phone": "+49 40 5550", "type": "WORK", "wa_id": "49405550"}],
            "addresses": [{"street": "Hafenstr. 2", "zip": "20457", "city": "Hamburg",
                           "country": "Deutschland", "type": "WORK"}],
            "urls": [{"url": "https://pflege.example.invalid", "type": "WORK"}],
            "birthday": "1980-02-29",
            "org": {"company": "Pflegedienst Süd", "department": "Wundmanagement", "title": "Leitung"}}]);
        let d = decoded(json!([cards]));
        assert_eq!(
            text_of(&d.messages[0]),
            "Contact: Anna Pflege\nPhone (WORK): +49 40 5550\n\
             Address (WORK): Hafenstr. 2, 20457, Hamburg, Deutschland\n\
             URL: https://pflege.example.invalid\nBirthday: 1980-02-29\n\
             Organisation: Pflegedienst Süd, Wundmanagement, Leitung"
        );
    }

    #[test]
    fn forwarded_messages_are_marked() {
        let mut once = msg("wamid.F1", "text", json!({"body": "Befund meiner Mutter"}));
        once["context"] = json!({"forwarded": true});
        let mut chain = msg("wamid.F2", "text", json!({"body": "Kettenbrief"}));
        chain["context"] = json!({"forwarded": true, "frequently_forwarded": true});
        let own = msg("wamid.F3", "text", json!({"body": "Eigene Worte"}));
        let d = decoded(json!([once, chain, own]));
        let marks: Vec<_> = d.messages.iter().map(|m| m.forwarded).collect();
        assert_eq!(
            marks,
            vec![Some(Forwarded::Once), Some(Forwarded::Frequently), None]
        );
    }

    #[test]
    fn reactions_and_system_notices_are_skipped_by_kind() {
        let system = msg(
            "wamid.S",
            "system",
            json!({"body": "User changed number", "type": "user_changed_number",
            "wa_id": USER, "new_wa_id": "4917999"}),
        );
        let reaction = msg(
            "wamid.R",
            "reaction",
            json!({"message_id": "wamid.A", "emoji": "x"}),
        );
        let d = decoded(json!([system, reaction]));
        assert!(d.messages.is_empty() && d.held.is_empty());
        assert_eq!(d.skipped, [SkipKind::System, SkipKind::Reaction]);
    }

    #[test]
    fn unknown_and_unsupported_types_are_held_never_dropped() {
        let mut unsupported = msg("wamid.U1", "unsupported", json!({"type": "poll_creation"}));
        unsupported["errors"] = json!([{"code": 131051, "title": "Message type unknown",
            "message": "Message type unknown", "error_data": {"details": "Message type is currently not supported."}}]);
        let future = msg("wamid.U2", "hologram", json!({"body": "x"}));
        let order = msg(
            "wamid.U3",
            "order",
            json!({"catalog_id": "1", "product_items": []}),
        );
        let edit = msg("wamid.U4", "edit", json!({"text": {"body": "korrigiert"}}));
        let d = decoded(json!([unsupported, future, order, edit]));
        assert!(d.messages.is_empty());
        let got: Vec<(&str, &str, &str)> = d
            .held
            .iter()
            .map(|h| (h.key.message_id.as_str(), h.reason, h.detail.as_str()))
            .collect();
        let p = "entry[0].changes[0].value.messages";
        assert_eq!(
            got,
            [
                (
                    "wamid.U1",
                    hold::UNSUPPORTED_MESSAGE_TYPE,
                    &*format!("{p}[0].errors[0]: code 131051 (type unsupported)")
                ),
                (
                    "wamid.U2",
                    hold::UNSUPPORTED_MESSAGE_TYPE,
                    &*format!("{p}[1].type: hologram is not a type this version archives")
                ),
                (
                    "wamid.U3",
                    hold::UNSUPPORTED_MESSAGE_TYPE,
                    &*format!("{p}[2].type: order is not a type this version archives")
                ),
                (
                    "wamid.U4",
                    hold::UNSUPPORTED_MESSAGE_TYPE,
                    &*format!(
                        "{p}[3].type: edit of an earlier message is not applied by this version"
                    )
                ),
            ]
        );
        assert_eq!(d.held[0].raw["unsupported"]["type"], "poll_creation");
    }

    #[test]
    fn errors_on_a_message_are_held_with_the_code_only() {
        let mut m = msg("wamid.E", "text", json!({"body": "Geheimnis"}));
        m["errors"] =
            json!([{"code": 131052, "title": "Media download error", "message": "Geheimnis"}]);
        let d = decoded(json!([m]));
        let held = held_one(&d);
        assert_eq!(held.reason, hold::MESSAGE_ERROR);
        assert_eq!(
            held.detail,
            "entry[0].changes[0].value.messages[0].errors[0]: code 131052 (type text)"
        );
    }

    #[test]
    fn a_username_sender_is_keyed_by_the_business_scoped_user_id() {
        let payload = webhook(json!([{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "4930000", "phone_number_id": PN},
            "contacts": [{"profile": {"name": "Kim", "username": "@kim"}, "user_id": "DE.8812345"}],
            "messages": [{"from_user_id": "DE.8812345", "id": "wamid.U", "timestamp": "1764320000",
                          "type": "text", "text": {"body": "Hallo"}}]
        }}]));
        let d = decode_payload(&payload, 1 << 20).unwrap();
        assert!(d.held.is_empty(), "{:?}", d.held);
        let m = &d.messages[0];
        assert_eq!(m.conversation, "PN1:DE.8812345");
        assert_eq!(m.sender.id, "DE.8812345");
        assert_eq!(m.sender.display.as_deref(), Some("Kim"));
        // With both, the phone number keys the conversation (existing links
        // stay valid); the contact is found by either.
        let payload = webhook(json!([{"field": "messages", "value": {
            "metadata": {"phone_number_id": PN},
            "contacts": [{"profile": {"name": "Kim"}, "user_id": "DE.8812345"}],
            "messages": [{"from": USER, "from_user_id": "DE.8812345", "id": "wamid.V",
                          "timestamp": "1764320000", "type": "text", "text": {"body": "Hallo"}}]
        }}]));
        let d = decode_payload(&payload, 1 << 20).unwrap();
        assert_eq!(d.messages[0].conversation, format!("PN1:{USER}"));
        assert_eq!(d.messages[0].sender.display.as_deref(), Some("Kim"));
        // Neither: held, naming both fields.
        let d = decoded(
            json!([{"id": "wamid.W", "timestamp": "1", "type": "text", "text": {"body": "x"}}]),
        );
        assert!(
            held_one(&d)
                .detail
                .ends_with(".from: missing (and no from_user_id)")
        );
    }

    #[test]
    fn echoes_are_sent_by_the_hospital_in_the_patients_conversation() {
        let payload = webhook(json!([{"field": "smb_message_echoes", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "4930000", "phone_number_id": PN},
            "message_echoes": [
                {"from": "4930000", "to": USER, "id": "wamid.E1", "timestamp": "1764320000",
                 "type": "text", "text": {"body": "Bitte morgen zur Kontrolle kommen."}},
                {"from": "4930000", "to_user_id": "DE.77", "id": "wamid.E2", "timestamp": "1764320001",
                 "type": "text", "text": {"body": "Gute Besserung"}},
                {"from": "4930000", "id": "wamid.E3", "timestamp": "1764320002",
                 "type": "text", "text": {"body": "an wen?"}}
            ]
        }}]));
        let d = decode_payload(&payload, 1 << 20).unwrap();
        assert_eq!(d.messages.len(), 2);
        let e = &d.messages[0];
        assert_eq!(e.conversation, format!("PN1:{USER}"));
        assert_eq!(e.sender.role, Role::Clinician);
        assert_eq!(e.sender.id, PN);
        assert_eq!(e.recipients[0].id, USER);
        assert_eq!(d.messages[1].conversation, "PN1:DE.77");
        assert_eq!(
            held_one(&Decoded {
                messages: vec![],
                ..d.clone()
            })
            .detail,
            "entry[0].changes[0].value.message_echoes[2].to: missing (and no to_user_id)"
        );
        // A business message forwarded in a `messages` change names `to`.
        let d = decoded(
            json!([{"to": USER, "id": "wamid.F", "timestamp": "1764320000",
                                "type": "text", "text": {"body": "Termin bestätigt"}}]),
        );
        assert_eq!(d.messages[0].sender.role, Role::Clinician);
        assert_eq!(d.messages[0].conversation, format!("PN1:{USER}"));
    }

    #[test]
    fn voice_notes_stickers_audio_and_video_have_their_kind() {
        let media = |mime: &str| json!({"id": "M", "mime_type": mime});
        let mut voice = media("audio/ogg; codecs=opus");
        voice["voice"] = json!(true);
        let d = decoded(json!([
            msg("wamid.1", "audio", voice),
            msg("wamid.2", "audio", media("audio/mpeg")),
            msg("wamid.3", "sticker", media("image/webp")),
            msg("wamid.4", "video", media("video/mp4")),
            msg("wamid.5", "document", media("application/pdf")),
        ]));
        let kinds: Vec<MessageKind> = d.messages.iter().map(Message::kind).collect();
        assert_eq!(
            kinds,
            [
                MessageKind::Voice,
                MessageKind::Audio,
                MessageKind::Sticker,
                MessageKind::Video,
                MessageKind::Document
            ]
        );
        assert_eq!(d.messages[0].content_type(), "audio/ogg");
    }

    #[test]
    fn changes_without_a_field_are_read_by_their_arrays_and_broken_entries_held() {
        let d = decode_payload(
            &json!({"object": "whatsapp_business_account", "entry": [
                {"changes": [{"value": {"metadata": {"phone_number_id": PN},
                    "message_echoes": [{"to": USER, "id": "wamid.E", "timestamp": "1",
                                        "type": "text", "text": {"body": "x"}}]}}]},
                "not an entry",
                {"changes": {"field": "messages"}},
                {"id": "WABA-without-changes"}
            ]})
            .to_string()
            .into_bytes(),
            1 << 20,
        )
        .unwrap();
        assert_eq!(d.messages.len(), 1);
        assert_eq!(d.messages[0].sender.role, Role::Clinician);
        let details: Vec<&str> = d.held.iter().map(|h| h.detail.as_str()).collect();
        assert_eq!(
            details,
            ["entry[1]: not an object", "entry[2].changes: not a list"]
        );
    }

    #[test]
    fn other_fields_are_counted_and_statuses_skipped() {
        let d = decode_payload(
            &webhook(json!([
                {"field": "message_template_status_update", "value": {"event": "APPROVED",
                  "message_template_id": 1, "message_template_name": "t", "reason": "NONE"}},
                {"field": "account_update", "value": {"event": "VERIFIED_ACCOUNT"}},
                {"field": "messages", "value": {"metadata": {"phone_number_id": PN},
                  "statuses": [{"id": "wamid.s", "status": "read"}, {"id": "wamid.t", "status": "sent"}]}},
            ])),
            1 << 20,
        )
        .unwrap();
        assert!(d.messages.is_empty() && d.held.is_empty());
        assert_eq!(
            d.skipped,
            [
                SkipKind::NonMessageChange,
                SkipKind::NonMessageChange,
                SkipKind::Status,
                SkipKind::Status
            ]
        );
    }

    #[test]
    fn a_change_of_another_field_carrying_messages_is_held() {
        let d = decode_payload(
            &webhook(
                json!([{"field": "history", "value": {"metadata": {"phone_number_id": PN},
                "messages": [msg("wamid.H", "text", json!({"body": "alt"}))]}}]),
            ),
            1 << 20,
        )
        .unwrap();
        let held = held_one(&d);
        assert_eq!(held.reason, hold::UNSUPPORTED_MESSAGE_TYPE);
        assert_eq!(
            held.detail,
            "entry[0].changes[0]: field history carries messages this version does not archive"
        );
    }

    /// Without `metadata` a change that carries messages has no conversation
    /// to file them under: every message is held with the missing field.
    /// Without messages, nothing is missing.
    #[test]
    fn messages_without_metadata_are_held_each() {
        let d = decode_payload(
            &webhook(json!([{"field": "messages", "value": {
                "messages": [msg("wamid.N1", "text", json!({"body": "a"})),
                             msg("wamid.N2", "text", json!({"body": "b"}))]}}])),
            1 << 20,
        )
        .unwrap();
        assert!(d.messages.is_empty());
        let got: Vec<(&str, &str)> = d
            .held
            .iter()
            .map(|h| (h.key.message_id.as_str(), h.detail.as_str()))
            .collect();
        let detail = "entry[0].changes[0].value.metadata.phone_number_id: missing";
        assert_eq!(got, [("wamid.N1", detail), ("wamid.N2", detail)]);
        let d = decode_payload(
            &webhook(json!([{"field": "messages", "value": {"statuses": [{"id": "s"}]}}])),
            1 << 20,
        )
        .unwrap();
        assert_eq!(d.skipped, [SkipKind::Status]);
        let d = decode_payload(
            &webhook(
                json!([{"field": "messages", "value": {"metadata": {"phone_number_id": PN},
                "messages": "wamid.bad"}}]),
            ),
            1 << 20,
        )
        .unwrap();
        assert_eq!(
            held_one(&d).detail,
            "entry[0].changes[0].value.messages: not a list"
        );
    }

    #[test]
    fn details_name_places_never_values() {
        let secret = "Erika-Mustermann-4917000";
        let d = decoded(json!([
            {"from": secret, "id": "wamid.P1", "timestamp": secret, "type": "text", "text": {"body": secret}},
            {"from": secret, "id": "wamid.P2", "timestamp": "1", "type": secret, secret: {"body": secret}},
            msg("wamid.P3", "interactive", json!({"type": secret})),
        ]));
        assert_eq!(d.held.len(), 3);
        for h in &d.held {
            assert!(
                !h.detail.contains("Erika") && !h.detail.contains("4917000"),
                "{}",
                h.detail
            );
        }
    }
}
