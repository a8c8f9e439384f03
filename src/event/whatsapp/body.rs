//! The body of one Cloud API message by `type`: text, media, interactive
//! replies, locations and contact cards.

use super::*;

pub(super) fn body(
    wa: &Map<String, Value>,
    kind: &str,
    place: &str,
) -> Result<(Body, MessageKind), Hold> {
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
pub(super) fn interactive(i: &Map<String, Value>, place: &str) -> Result<String, Hold> {
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
            // A flow's PhotoPicker / DocumentPicker answer is a list of
            // uploaded media (`{file_name, mime_type, sha256, id}`, fetched
            // by id through the media API): content this version does not
            // fetch from a flow, so the reply is held, not archived as the
            // JSON of its media ids while the files stay behind.
            if let Some((key, _)) = answers.iter().find(|(_, v)| carries_media(v)) {
                return Err(unsupported(format!(
                    "{place}.interactive.nfm_reply.response_json.{}: a flow's media upload \
                     is not archived by this version",
                    term(key)
                )));
            }
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

/// Whether a flow answer is, or holds, an uploaded medium: an object with
/// a media `id` and a `mime_type` (WhatsApp Flows, PhotoPicker and
/// DocumentPicker responses).
fn carries_media(v: &Value) -> bool {
    match v {
        Value::Object(o) => {
            (o.contains_key("id") && o.contains_key("mime_type")) || o.values().any(carries_media)
        }
        Value::Array(items) => items.iter().any(carries_media),
        _ => false,
    }
}

/// A flow answer as text: strings as they are, lists joined with commas,
/// anything else as compact JSON.
pub(super) fn readable(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(readable).collect::<Vec<_>>().join(", "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `Location: {name}`, address, `{latitude}, {longitude}`, URL, one a line.
pub(super) fn location(l: &Map<String, Value>, place: &str) -> Result<String, Hold> {
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

/// ` ({type})` of a contact card's phone, e-mail, address or URL, or
/// nothing.
fn label(o: &Map<String, Value>) -> String {
    string(o, "type").map_or_else(String::new, |t| format!(" ({t})"))
}

/// Shared contact cards (Cloud API `contacts` object): `Contact:
/// {formatted name}` and a line per phone number, e-mail address, postal
/// address, URL, birthday and organisation (company, department, title):
/// everything the card carries reaches the record.
pub(super) fn contacts(cards: &[Value], place: &str) -> Result<String, Hold> {
    let mut blocks = Vec::new();
    for (i, card) in cards.iter().enumerate() {
        let Some(card) = card.as_object() else {
            return Err(invalid(format!("{place}.contacts[{i}]: not an object")));
        };
        // `formatted_name`, else the name's parts (prefix, first, middle,
        // last, suffix) as they stand.
        let name = card.get("name").and_then(Value::as_object).and_then(|n| {
            string(n, "formatted_name").map(str::to_owned).or_else(|| {
                let parts: Vec<&str> =
                    ["prefix", "first_name", "middle_name", "last_name", "suffix"]
                        .iter()
                        .filter_map(|k| string(n, k))
                        .collect();
                (!parts.is_empty()).then(|| parts.join(" "))
            })
        });
        let mut lines = vec![format!(
            "Contact: {}",
            name.as_deref().unwrap_or("(no name)")
        )];
        let list = |k: &str| card.get(k).and_then(Value::as_array).into_iter().flatten();
        for p in list("phones") {
            // `phone` as formatted by the sender, else the WhatsApp ID.
            if let Some(o) = p.as_object()
                && let Some(phone) = string(o, "phone").or(string(o, "wa_id"))
            {
                // Both given: the WhatsApp ID may name another number.
                let wa_id = match (string(o, "phone"), string(o, "wa_id")) {
                    (Some(_), Some(id)) => format!(" (WhatsApp {id})"),
                    _ => String::new(),
                };
                lines.push(format!("Phone{}: {phone}{wa_id}", label(o)));
            }
        }
        for e in list("emails") {
            if let Some(o) = e.as_object()
                && let Some(email) = string(o, "email")
            {
                lines.push(format!("E-mail{}: {email}", label(o)));
            }
        }
        for a in list("addresses") {
            let Some(o) = a.as_object() else { continue };
            let mut parts: Vec<&str> = ["street", "zip", "city", "state", "country"]
                .iter()
                .filter_map(|k| string(o, k))
                .collect();
            if let Some(code) = string(o, "country_code") {
                parts.push(code);
            }
            if !parts.is_empty() {
                lines.push(format!("Address{}: {}", label(o), parts.join(", ")));
            }
        }
        for u in list("urls") {
            if let Some(o) = u.as_object()
                && let Some(url) = string(o, "url")
            {
                lines.push(format!("URL{}: {url}", label(o)));
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

pub(super) fn media(m: &Map<String, Value>, place: &str, kind: &str) -> Result<Media, Hold> {
    let id = string(m, "id").ok_or_else(|| invalid(format!("{place}.{kind}.id: missing")))?;
    let declared_sha256 = match m.get("sha256") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            parse_sha256(s)
                .ok_or_else(|| invalid(format!("{place}.{kind}.sha256: not a SHA-256")))?,
        ),
        Some(_) => return Err(invalid(format!("{place}.{kind}.sha256: not a SHA-256"))),
    };
    let Some(mime_type) = string(m, "mime_type").and_then(crate::event::media_type_essence) else {
        return Err(invalid(format!(
            "{place}.{kind}.mime_type: not a media type"
        )));
    };
    Ok(Media {
        mime_type,
        file_name: string(m, "filename").map(str::to_owned),
        caption: string(m, "caption").map(str::to_owned),
        declared_size: None,
        declared_sha256,
        location: MediaLocation::Reference(id.to_owned()),
    })
}
