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
    assert_eq!(held.reason, Reason::InvalidEntry);
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
    let d =
        decoded(json!([{"from": USER, "timestamp": "1", "type": "text", "text": {"body": "x"}}]));
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
        assert_eq!(held.reason, Reason::InvalidEntry);
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
    assert_eq!(held.reason, Reason::InvalidEntry);
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
    assert_eq!(held.reason, Reason::UnsupportedMessageType);
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
            "emails": [{"email": "anna@pflege.example.invalid", "type": "WORK"}],
            "addresses": [{"street": "Hafenstr. 2", "zip": "20457", "city": "Hamburg",
                           "country": "Deutschland", "country_code": "DE", "type": "WORK"},
                          {"country_code": "AT"}],
            "urls": [{"url": "https://pflege.example.invalid", "type": "WORK"}],
            "birthday": "1980-02-29",
            "org": {"company": "Pflegedienst Süd", "department": "Wundmanagement", "title": "Leitung"}}]);
    let d = decoded(json!([cards]));
    assert_eq!(
        text_of(&d.messages[0]),
        "Contact: Anna Pflege\nPhone (WORK): +49 40 5550 (WhatsApp 49405550)\n\
             E-mail (WORK): anna@pflege.example.invalid\n\
             Address (WORK): Hafenstr. 2, 20457, Hamburg, Deutschland, DE\n\
             Address: AT\n\
             URL (WORK): https://pflege.example.invalid\nBirthday: 1980-02-29\n\
             Organisation: Pflegedienst Süd, Wundmanagement, Leitung"
    );
    // No formatted name: the name's parts; a phone entry with only its
    // WhatsApp ID.
    let mut parts = msg("wamid.C3", "contacts", Value::Null);
    parts["contacts"] = json!([{"name": {"prefix": "Dr.", "first_name": "Jan", "last_name": "Kurz"},
            "phones": [{"wa_id": "49405551"}]}]);
    let d = decoded(json!([parts]));
    assert_eq!(
        text_of(&d.messages[0]),
        "Contact: Dr. Jan Kurz\nPhone: 49405551"
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
    let mut other = msg(
        "wamid.S2",
        "system",
        json!({"body": "x", "type": "conversation_started"}),
    );
    other["from"] = json!("4917555");
    let d = decoded(json!([system, reaction, other]));
    assert!(d.messages.is_empty() && d.held.is_empty());
    assert_eq!(
        d.skipped,
        [SkipKind::System, SkipKind::Reaction, SkipKind::System]
    );
    // The number change retires the old number's conversation, nothing else.
    assert_eq!(
        d.identity_changes,
        [IdentityChange {
            source: SOURCE.into(),
            conversation: format!("{PN}:{USER}"),
            at: DateTime::from_timestamp(1_764_320_000, 0),
        }]
    );
    // Seen in a group: the user's own chat and the group are retired.
    let mut in_group = msg(
        "wamid.S3",
        "system",
        json!({"body": "x", "type": "customer_identity_changed"}),
    );
    in_group["group_id"] = json!("G7");
    let d = decoded(json!([in_group]));
    let retired: Vec<&str> = d
        .identity_changes
        .iter()
        .map(|c| c.conversation.as_str())
        .collect();
    assert_eq!(retired, [format!("{PN}:{USER}"), format!("{PN}:group:G7")]);
    // The name before 2025, with the user in `system.customer` only.
    let mut old_name = msg(
        "wamid.S4",
        "system",
        json!({"body": "x", "type": "customer_changed_number",
            "customer": "4917111", "new_wa_id": "4917222"}),
    );
    old_name.as_object_mut().unwrap().remove("from");
    let d = decoded(json!([old_name]));
    assert_eq!(d.identity_changes[0].conversation, format!("{PN}:4917111"));
    // A change that names no user at all is held for a person.
    let mut nobody = msg(
        "wamid.S5",
        "system",
        json!({"body": "x", "type": "user_changed_number"}),
    );
    nobody.as_object_mut().unwrap().remove("from");
    let d = decoded(json!([nobody]));
    assert!(d.identity_changes.is_empty());
    assert_eq!(held_one(&d).reason, Reason::InvalidEntry);
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
    let got: Vec<(&str, Reason, &str)> = d
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
                Reason::UnsupportedMessageType,
                &*format!("{p}[0].errors[0]: code 131051 (type unsupported)")
            ),
            (
                "wamid.U2",
                Reason::UnsupportedMessageType,
                &*format!("{p}[1].type: hologram is not a type this version archives")
            ),
            (
                "wamid.U3",
                Reason::UnsupportedMessageType,
                &*format!("{p}[2].type: order is not a type this version archives")
            ),
            (
                "wamid.U4",
                Reason::UnsupportedMessageType,
                &*format!("{p}[3].type: edit of an earlier message is not applied by this version")
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
    assert_eq!(held.reason, Reason::MessageError);
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

/// The `history` webhook (coexistence onboarding): chunks of threads,
/// each one user's chat, messages from both sides. The user's become
/// incoming messages of `{PN}:{user}`, the business's outgoing ones to the
/// thread's user; a declined share (`errors`) is counted; an unreadable
/// thread or message is held, never skipped.
#[test]
fn history_threads_are_read_like_messages() {
    let d = decode_payload(
        &webhook(json!([{"field": "history", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "4930000", "phone_number_id": PN},
            "history": [
                {"metadata": {"phase": 0, "chunk_order": 1, "progress": 100},
                 "threads": [
                    {"id": USER, "messages": [
                        {"from": USER, "id": "wamid.H1", "timestamp": "1764320000", "type": "text",
                         "text": {"body": "Fieber seit gestern"}, "history_context": {"status": "READ"}},
                        {"from": "4930000", "id": "wamid.H2", "timestamp": "1764320060", "type": "text",
                         "text": {"body": "Bitte kommen Sie vorbei"}, "history_context": {"status": "DELIVERED"}},
                        {"from": USER, "id": "wamid.H3", "timestamp": "soon", "type": "text",
                         "text": {"body": "x"}},
                        {"from": "4917999", "id": "wamid.H6", "timestamp": "1764320090", "type": "text",
                         "text": {"body": "wer?"}},
                        {"from": format!("+{USER}"), "id": "wamid.H7", "timestamp": "1764320100",
                         "type": "text", "text": {"body": "Danke"}},
                        {"from": "4930000", "to": "4917333", "id": "wamid.H8", "timestamp": "1764320110",
                         "type": "text", "text": {"body": "an jemand anderen"}},
                        {"from": USER, "to": "+49 30000", "id": "wamid.H9", "timestamp": "1764320120",
                         "type": "text", "text": {"body": "mit Empfänger"}}
                    ]},
                    {"messages": [{"from": "4917111", "id": "wamid.H4", "timestamp": "1764320000",
                                   "type": "text", "text": {"body": "y"}}]},
                    {"id": "4917222", "messages": "wamid.H5"}
                 ]},
                {"errors": [{"code": 2593109, "title": "History sharing declined"}]}
            ]}}])),
        1 << 20,
    )
    .unwrap();
    let got: Vec<(&str, &str, &str, Role)> = d
        .messages
        .iter()
        .map(|m| {
            (
                m.key.message_id.as_str(),
                m.conversation.as_str(),
                text_of(m),
                m.sender.role,
            )
        })
        .collect();
    let conversation = format!("{PN}:{USER}");
    assert_eq!(
        got,
        [
            (
                "wamid.H1",
                conversation.as_str(),
                "Fieber seit gestern",
                Role::Unknown
            ),
            (
                "wamid.H2",
                conversation.as_str(),
                "Bitte kommen Sie vorbei",
                Role::Clinician
            ),
            ("wamid.H7", conversation.as_str(), "Danke", Role::Unknown),
            (
                "wamid.H9",
                conversation.as_str(),
                "mit Empfänger",
                Role::Unknown
            ),
        ]
    );
    assert_eq!(d.messages[1].recipients[0].id, USER);
    let held: Vec<(&str, &str)> = d
        .held
        .iter()
        .map(|h| (h.key.message_id.as_str(), h.detail.as_str()))
        .collect();
    let at = "entry[0].changes[0].value.history[0]";
    assert_eq!(held.len(), 5, "{held:?}");
    let stranger = format!(
        "{at}.threads[0].messages[3]: from/to not the thread's user and the business number"
    );
    let stranger_to = stranger.replace("messages[3]", "messages[5]");
    assert_eq!(
        held[..4],
        [
            (
                "wamid.H3",
                format!("{at}.threads[0].messages[2].timestamp: not a unix time").as_str()
            ),
            ("wamid.H6", stranger.as_str()),
            ("wamid.H8", stranger_to.as_str()),
            ("wamid.H4", format!("{at}.threads[1].id: missing").as_str()),
        ]
    );
    assert_eq!(held[4].1, format!("{at}.threads[2].messages: not a list"));
    // Held whole: what was not a list is kept in the sealed entry.
    assert_eq!(d.held[4].raw["messages"], "wamid.H5");
    assert_eq!(d.skipped, [SkipKind::NonMessageChange]);
}

/// History media arrive in two steps: first without their asset id (held
/// `media_unavailable`), then in a later history webhook with it, whose
/// copy supersedes that hold.
#[test]
fn history_media_wait_for_their_id() {
    let history = |image: Value| {
        decode_payload(
            &webhook(json!([{"field": "history", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "4930000", "phone_number_id": PN},
                "history": [{"threads": [{"id": USER, "messages": [
                    {"from": USER, "id": "wamid.HM", "timestamp": "1764320000", "type": "image",
                     "image": image}]}]}]}}])),
            1 << 20,
        )
        .unwrap()
    };
    let first = history(json!({"mime_type": "image/jpeg", "sha256": "a".repeat(64)}));
    assert!(first.messages.is_empty());
    let held = held_one(&first);
    assert_eq!(held.reason, Reason::MediaUnavailable);
    assert_eq!(held.key.message_id, "wamid.HM");
    assert!(
        held.detail
            .ends_with(".image.id: missing (history media ids come in a later history webhook)")
    );
    let later = history(json!({"id": "1234", "mime_type": "image/jpeg", "sha256": "a".repeat(64)}));
    assert!(later.held.is_empty());
    assert_eq!(later.messages[0].key.message_id, "wamid.HM");
    assert_eq!(later.supersedes_hold, Some(Reason::MediaUnavailable));
}

/// A message in a group chat (Groups API `group_id`) is filed under the
/// group, not under the writer's one-to-one chat, and its members' phone
/// numbers name no patient.
#[test]
fn group_messages_are_filed_under_the_group() {
    let mut m = msg("wamid.G1", "text", json!({"body": "Mama hat Atemnot"}));
    m["group_id"] = json!("120363025555555555");
    let d = decoded(json!([m]));
    let got = &d.messages[0];
    assert_eq!(got.conversation, format!("{PN}:group:120363025555555555"));
    assert!(is_group_conversation(&got.conversation));
    assert_eq!(got.sender.id, USER);
    assert!(crate::resolve::phone_numbers(got, "49").is_empty());
    let one_to_one = decoded(json!([msg("wamid.G2", "text", json!({"body": "a"}))]));
    assert!(!is_group_conversation(&one_to_one.messages[0].conversation));
    assert_eq!(
        crate::resolve::phone_numbers(&one_to_one.messages[0], "49").len(),
        1
    );
}

#[test]
fn a_change_of_another_field_carrying_messages_is_held() {
    let d = decode_payload(
        &webhook(
            json!([{"field": "partner_solutions", "value": {"metadata": {"phone_number_id": PN},
                "messages": [msg("wamid.H", "text", json!({"body": "alt"}))]}}]),
        ),
        1 << 20,
    )
    .unwrap();
    let held = held_one(&d);
    assert_eq!(held.reason, Reason::UnsupportedMessageType);
    assert_eq!(
        held.detail,
        "entry[0].changes[0]: field partner_solutions carries messages this version does not archive"
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

#[test]
fn a_value_with_messages_and_echoes_loses_neither() {
    for field in [json!("messages"), json!("smb_message_echoes"), Value::Null] {
        let mut change = json!({"value": {
            "metadata": {"phone_number_id": PN},
            "messages": [msg("wamid.In", "text", json!({"body": "Schmerzen seit gestern"}))],
            "message_echoes": [{"from": "4930000", "to": USER, "id": "wamid.Out",
                                "timestamp": "1764320001", "type": "text",
                                "text": {"body": "Bitte Foto schicken"}}]
        }});
        if !field.is_null() {
            change["field"] = field.clone();
        }
        let d = decode_payload(&webhook(json!([change])), 1 << 20).unwrap();
        let ids: Vec<(&str, Role)> = d
            .messages
            .iter()
            .map(|m| (m.key.message_id.as_str(), m.sender.role))
            .collect();
        assert_eq!(
            ids,
            [("wamid.In", Role::Unknown), ("wamid.Out", Role::Clinician)],
            "{field}"
        );
        assert!(d.held.is_empty(), "{:?}", d.held);
    }
}

#[test]
fn a_flow_reply_with_uploaded_media_is_held_not_archived_as_text() {
    let upload = json!({"flow_token": "t", "wound_photo": [{
        "file_name": "IMG_1.jpg", "mime_type": "image/jpeg",
        "sha256": "PqHgadp8cJ/N6mvAYGNMxhs9Ra5hbZFcctCtCClXsMU=", "id": "3631120727156756"}]});
    let d = decoded(json!([msg(
        "wamid.F",
        "interactive",
        json!({"type": "nfm_reply", "nfm_reply": {"name": "flow", "body": "Sent",
               "response_json": upload.to_string()}})
    )]));
    let held = held_one(&d);
    assert_eq!(held.reason, Reason::UnsupportedMessageType);
    assert!(
        held.detail
            .ends_with("nfm_reply.response_json.wound_photo: a flow's media upload is not archived by this version"),
        "{}",
        held.detail
    );
}

/// An echo names its user as the number was sent (`+4917000`, the
/// smb_message_echoes reference), a group message or notice its sender
/// likewise: by the number's digits each is one conversation with the
/// user's own messages (`from` / `wa_id` `4917000`), and the contact card
/// is found by them.
#[test]
fn numbers_written_with_a_plus_are_one_conversation_with_the_users() {
    let payload = webhook(json!([{"field": "smb_message_echoes", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "+49 30000", "phone_number_id": PN},
        "contacts": [{"profile": {"name": "Erika"}, "wa_id": USER}],
        "message_echoes": [
            {"from": "+49 30000", "to": format!("+{USER}"), "id": "wamid.E", "timestamp": 1764320000,
             "type": "text", "text": {"body": "Bitte morgen kommen"}}
        ]
    }}]));
    let d = decode_payload(&payload, 1 << 20).unwrap();
    let e = &d.messages[0];
    assert_eq!(e.conversation, format!("{PN}:{USER}"));
    assert_eq!(e.recipients[0].id, USER);
    assert_eq!(e.recipients[0].display.as_deref(), Some("Erika"));
    // A number change seen in a group retires the user's own chat too.
    let mut notice = msg(
        "wamid.G",
        "system",
        json!({"body": "changed", "type": "user_changed_number", "new_wa_id": "4917999"}),
    );
    notice["from"] = json!(format!("+{USER}"));
    notice["group_id"] = json!("G1");
    let d = decoded(json!([notice]));
    assert_eq!(d.identity_changes[0].conversation, format!("{PN}:{USER}"));
}

/// `to: null` is no recipient: the patient's message is incoming. With
/// `from` and `to` both set, the business number decides the side; when
/// neither is the business's, the entry is held, never credited to a
/// side by guess.
#[test]
fn a_recipient_decides_the_side_only_when_it_is_one() {
    let mut m = msg("wamid.N", "text", json!({"body": "Schmerzen seit gestern"}));
    m["to"] = Value::Null;
    let d = decoded(json!([m]));
    assert_eq!(d.messages[0].sender.id, USER);
    assert!(d.messages[0].recipients.is_empty());
    // `to` is the business number: the user wrote it.
    let mut m = msg("wamid.T", "text", json!({"body": "Schmerzen seit gestern"}));
    m["to"] = json!("4930000");
    let d = decoded(json!([m]));
    assert_eq!(d.messages[0].sender.id, USER);
    assert_eq!(d.messages[0].conversation, format!("{PN}:{USER}"));
    // `from` is the business number: the business wrote it.
    let m = json!({"from": "4930000", "to": USER, "id": "wamid.B", "timestamp": "1764320000",
                   "type": "text", "text": {"body": "Termin bestätigt"}});
    let d = decoded(json!([m]));
    assert_eq!(d.messages[0].sender.role, Role::Clinician);
    assert_eq!(d.messages[0].recipients[0].id, USER);
    // Neither side is the business's.
    let m = json!({"from": USER, "to": "4917333", "id": "wamid.X", "timestamp": "1764320000",
                   "type": "text", "text": {"body": "?"}});
    let d = decoded(json!([m]));
    assert_eq!(held_one(&d).reason, Reason::InvalidEntry);
    assert!(
        held_one(&d)
            .detail
            .contains("neither is the business number")
    );
}

/// `request_welcome` (the user opened the chat for the first time; no
/// content) is counted as a system notice, not held for review.
#[test]
fn a_welcome_request_is_a_system_notice() {
    let d = decoded(json!([msg("wamid.W", "request_welcome", Value::Null)]));
    assert!(d.messages.is_empty() && d.held.is_empty());
    assert_eq!(d.skipped, [SkipKind::System]);
}
