use serde_json::{Value, json};

use super::super::MediaLocation;
use super::super::{Body, DecodeErrorCode, Decoded, decode as decode_payload};
use super::{E2EE_MARKER, strip_reply_fallback};
use crate::reason::Reason;

fn event(kind: &str, content: Value) -> Value {
    json!({"type": kind, "room_id": "!ward3:example.org", "event_id": "$ev1",
            "sender": "@nurse:example.org", "origin_server_ts": 1764320000000i64,
            "content": content, "unsigned": {"age": 12}})
}

fn decode(v: &Value) -> Decoded {
    decode_payload(v.to_string().as_bytes(), 1 << 20).unwrap()
}

/// The detail of the one entry `v` decodes to, held as `invalid_entry`.
fn held_invalid(v: &Value) -> String {
    let d = decode(v);
    assert!(d.messages.is_empty(), "{:?}", d.messages);
    assert_eq!(d.held.len(), 1);
    assert_eq!(d.held[0].reason, Reason::InvalidEntry);
    d.held[0].detail.clone()
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
    for (kind, text) in [
        ("m.notice", "checks the drain"),
        ("m.emote", "* checks the drain"),
    ] {
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": kind, "body": "checks the drain"}),
        ));
        assert_eq!(text_of(&d), text, "{kind}");
    }
    let d = decode(&event(
        "m.room.message",
        json!({"msgtype": "m.location", "body": "Station 4B",
                   "geo_uri": "geo:52.52,13.40;u=20"}),
    ));
    assert_eq!(text_of(&d), "Station 4B\ngeo:52.52,13.40;u=20");
    let detail = held_invalid(&event(
        "m.room.message",
        json!({"msgtype": "m.location", "body": "x", "geo_uri": "https://maps.example/x"}),
    ));
    assert_eq!(detail, "content.geo_uri: not a geo: URI");
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
    assert_eq!(d.held[0].reason, Reason::InvalidEntry);
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
    // The author's own quotes stay: a first line naming no user ID, quoted
    // lines without the fallback's empty line after them.
    for own in [
        "> <38 Grad gestern abend\nheute 37,5",
        "> < 5 mm\n\nSchnitt verheilt",
        "> <@a:b> zitiert\nohne Leerzeile",
        "> <@nobody> x\n\nrest",
        "> <@a b:c> x\n\nrest",
    ] {
        assert_eq!(strip_reply_fallback(own), own);
    }
    let v = event(
        "m.room.message",
        json!({"msgtype": "m.text", "body": "> <38 Grad gestern abend\nheute 37,5",
                   "m.relates_to": {"m.in_reply_to": {"event_id": "$q1"}}}),
    );
    assert_eq!(text_of(&decode(&v)), "> <38 Grad gestern abend\nheute 37,5");
    // A relation without a usable event id, `is_falling_back: null`: the
    // text is read all the same, without a reply target.
    for relates in [
        json!({"m.in_reply_to": {}}),
        json!({"m.in_reply_to": {"event_id": "kein Bezug"}}),
        json!({"m.in_reply_to": {"event_id": "$q2"}, "is_falling_back": null}),
    ] {
        let d = decode(&event(
            "m.room.message",
            json!({"msgtype": "m.text", "body": "> <@doc:example.org> Fieber?\n\n38,2",
                   "m.relates_to": relates}),
        ));
        assert_eq!(text_of(&d), "38,2", "{relates}");
        let target = relates["m.in_reply_to"]["event_id"]
            .as_str()
            .filter(|id| id.starts_with('$'));
        assert_eq!(d.messages[0].in_reply_to.as_deref(), target);
    }
    // A reply that is nothing but its fallback has no text.
    let v = event(
        "m.room.message",
        json!({"msgtype": "m.text", "body": "> <@a:b> x\n\n",
                   "m.relates_to": {"m.in_reply_to": {"event_id": "$q1"}}}),
    );
    assert_eq!(held_invalid(&v), "content.body: missing");
}

/// A non-state event with a defect may carry patient content: it is held
/// sealed, keyed by its event id or (unusable id) a digest of it, never
/// dead-lettered. A defective state event, redaction or reaction is
/// refused.
#[test]
fn defective_content_events_are_held_not_refused() {
    let mut no_sender = event(
        "m.room.message",
        json!({"msgtype": "m.text", "body": "Fieber"}),
    );
    no_sender.as_object_mut().unwrap().remove("sender");
    assert!(held_invalid(&no_sender).starts_with("not a Matrix room event"));
    assert_eq!(decode(&no_sender).held[0].key.message_id, "$ev1");
    let mut bad_id = event("m.sticker", json!({"body": "x", "url": "mxc://h/s"}));
    bad_id["event_id"] = json!("$a b");
    held_invalid(&bad_id);
    assert!(decode(&bad_id).held[0].key.message_id.starts_with("entry-"));
    let mut edit = event(
        "m.room.message",
        json!({"msgtype": "m.text", "body": "* x", "m.new_content": {"msgtype": "m.text", "body": ""},
               "m.relates_to": {"rel_type": "m.replace", "event_id": "$ev0"}}),
    );
    assert_eq!(held_invalid(&edit), "content.m.new_content.body: missing");
    edit["content"]["m.relates_to"] = json!("$ev0");
    assert!(held_invalid(&edit).starts_with("content.m.relates_to: "));
    let mut poll = event("m.poll.start", json!({"m.text": [{"body": "Schmerz?"}]}));
    poll["origin_server_ts"] = json!("soon");
    held_invalid(&poll);
    let mut state = event("m.room.topic", json!({"topic": "x"}));
    state["state_key"] = json!("");
    state["origin_server_ts"] = json!("soon");
    let err = decode_payload(state.to_string().as_bytes(), 1 << 20).unwrap_err();
    assert_eq!(err.code, DecodeErrorCode::InvalidField);
    let mut reaction = event("m.reaction", json!({}));
    reaction["origin_server_ts"] = json!("soon");
    assert!(decode_payload(reaction.to_string().as_bytes(), 1 << 20).is_err());
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
    assert_eq!(d.held[0].reason, Reason::EncryptedContent);
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
    assert_eq!(d.held[0].reason, Reason::EncryptedContent);
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
    let key =
        hex::decode("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4").unwrap();
    let iv = hex::decode("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff").unwrap();
    let plain =
        hex::decode("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51").unwrap();
    let cipher =
        hex::decode("601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5").unwrap();
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
        serde_json::to_vec(&super::super::CanonicalEvent::from_message(&d.messages[0])).unwrap();
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
    assert_eq!(d.held[0].reason, Reason::UntrustedDevice);
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
    assert_eq!(d.supersedes_hold, Some(Reason::Undecryptable));
    let mut e = event(
        "m.room.encrypted",
        json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA",
                   "session_id": "s", "device_id": "D", "sender_key": "k"}),
    );
    e[E2EE_MARKER] = json!({"undecryptable": true});
    let d = decode(&e);
    assert_eq!(d.held[0].reason, Reason::Undecryptable);
}

/// The trust policy holds every decrypted event with content a refused
/// device sent, not only messages: a sticker (which a rule would delete)
/// and a poll are held `untrusted_device`; a decrypted redaction (the
/// homeserver redacted nothing) marks nothing.
#[test]
fn an_untrusted_device_is_held_for_every_event_with_content() {
    let refused = json!({"algorithm": "m.megolm.v1.aes-sha2",
                         "verification": "unsigned_device", "hold": "verified"});
    for (kind, content) in [
        (
            "m.sticker",
            json!({"body": "thumbs up", "url": "mxc://h/st",
                             "info": {"mimetype": "image/webp"}}),
        ),
        (
            "m.poll.start",
            json!({"m.poll": {"question": {"m.text": [{"body": "Pain?"}]},
                                "answers": [{"m.id": "a", "m.text": [{"body": "yes"}]}]}}),
        ),
    ] {
        let mut e = event(kind, content);
        e[E2EE_MARKER] = refused.clone();
        let d = decode(&e);
        assert!(d.messages.is_empty(), "{kind}");
        assert_eq!(d.held[0].reason, Reason::UntrustedDevice, "{kind}");
        // Released, it decodes as what it is.
        let released = decode(&d.held[0].raw);
        assert!(
            released
                .held
                .iter()
                .all(|h| h.reason != Reason::UntrustedDevice),
            "{kind}"
        );
    }
    let mut r = event("m.room.redaction", json!({"redacts": "$target"}));
    r[E2EE_MARKER] = json!({"algorithm": "m.megolm.v1.aes-sha2", "verification": "verified"});
    let d = decode(&r);
    assert!(d.redactions.is_empty());
    assert_eq!(d.skipped.len(), 1);
}

#[test]
fn unknown_msgtypes_are_held() {
    let d = decode(&event(
        "m.room.message",
        json!({"msgtype": "org.example.vital_signs", "body": "x"}),
    ));
    assert_eq!(d.held[0].reason, Reason::UnsupportedMessageType);
    assert_eq!(
        d.held[0].detail,
        "content.msgtype: not a known message type"
    );
    // In-room verification starts with a message of its own msgtype
    // (CS API 11.12.2.1.1): its body is a client's fallback notice.
    let d = decode(&event(
        "m.room.message",
        json!({"msgtype": "m.key.verification.request",
               "body": "Alice is requesting to verify your key, but your client does not support in-chat key verification.",
               "from_device": "ABCDEF", "methods": ["m.sas.v1"], "to": "@bot:h"}),
    ));
    assert_eq!((d.messages.len(), d.held.len(), d.skipped.len()), (0, 0, 1));
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
        assert_eq!(d.held[0].reason, Reason::UnsupportedMessageType, "{kind}");
        assert!(d.held[0].detail.contains(kind), "{kind}");
    }
    // A type not known here with any content is held, whatever its keys
    // (a body, extensible-events markup of any draft, live location);
    // call signalling and in-room verification are skipped and counted.
    for (kind, content) in [
        ("com.example.vitals", json!({"body": "Puls 88"})),
        (
            "m.message",
            json!({"m.markup": [{"body": "Die Wunde nässt"}]}),
        ),
        (
            "org.matrix.msc1767.message",
            json!({"org.matrix.msc1767.markup": [{"body": "Die Wunde nässt"}]}),
        ),
        (
            "org.matrix.msc3672.beacon",
            json!({"m.relates_to": {"rel_type": "m.reference", "event_id": "$info"},
                "org.matrix.msc3488.location": {"uri": "geo:52.52,13.40;u=10"}}),
        ),
        (
            "m.beacon",
            json!({"m.location": {"uri": "geo:52.52,13.40"}}),
        ),
    ] {
        let d = decode(&event(kind, content));
        assert_eq!(d.held[0].reason, Reason::UnsupportedMessageType, "{kind}");
        assert!(!d.held[0].detail.contains("Puls") && !d.held[0].detail.contains("Wunde"));
    }
    for kind in [
        "m.key.verification.start",
        "org.matrix.msc3401.call.member",
        "m.call.invite",
    ] {
        let d = decode(&event(kind, json!({"call_id": "c1"})));
        assert_eq!(d.skipped, vec![SkipKind::NonMessageEvent], "{kind}");
    }
    // A redacted event of a type not known here: its content is gone.
    let d = decode(&event("com.example.vitals", json!({})));
    assert_eq!(d.skipped, vec![SkipKind::NonMessageEvent]);
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
    assert_eq!(d.held[0].reason.as_str(), "unsupported_media_type");
    assert_eq!(
        d.held[0].detail,
        "content.info.mimetype: missing or not a media type, and the file name gives none"
    );
}

/// A declared `info.mimetype` with parameters (a bridged voice note)
/// keeps its essence, and every held Matrix message can be opened again
/// from its sealed canonical form, also one the publishers' schema would
/// refuse (a caption longer than its 4096 characters, a reply to an event
/// id of another shape).
#[test]
fn media_types_keep_their_essence_and_held_forms_reopen() {
    use crate::event::{CanonicalEvent, reopen};
    let d = decode(&event(
        "m.room.message",
        json!({"msgtype": "m.audio", "body": "voice", "url": "mxc://h/v1",
               "info": {"mimetype": "Audio/OGG; codecs=opus"}}),
    ));
    assert_eq!(d.messages[0].content_type(), "audio/ogg");
    let d = decode(&event(
        "m.room.message",
        json!({"msgtype": "m.file", "body": "x", "url": "mxc://h/v2",
               "info": {"mimetype": "image/*"}}),
    ));
    assert_eq!(d.held[0].reason.as_str(), "unsupported_media_type");
    let caption = "Wundverlauf ".repeat(500);
    let d = decode(&event(
        "m.room.message",
        json!({"msgtype": "m.image", "body": caption, "filename": "w.png",
               "url": "mxc://h/v3", "info": {"mimetype": "image/png"},
               "m.relates_to": {"m.in_reply_to": {"event_id": "not an event id"}}}),
    ));
    let sealed = serde_json::to_vec(&CanonicalEvent::from_message(&d.messages[0])).unwrap();
    assert!(
        decode_payload(&sealed, usize::MAX).is_err(),
        "the publishers' schema refuses this form"
    );
    let reopened = reopen(&sealed).unwrap();
    assert_eq!(reopened.messages, d.messages);
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
    // A redacted redaction of room versions 1-10 lost `redacts`: it names
    // nothing and carries nothing (skipped, not dead-lettered); one with
    // content but no target is still refused.
    let mut redacted = event("m.room.redaction", json!({}));
    redacted["unsigned"]["redacted_because"] = json!({"type": "m.room.redaction"});
    let d = decode(&redacted);
    assert!(d.redactions.is_empty());
    assert_eq!(d.skipped, vec![super::super::SkipKind::NonMessageEvent]);
    // Without the homeserver's mark it is a malformed redaction.
    for bad in [
        event("m.room.redaction", json!({"reason": "typo"})),
        event("m.room.redaction", json!({})),
    ] {
        assert!(decode_payload(bad.to_string().as_bytes(), 1 << 20).is_err());
    }
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
        assert_eq!(held_invalid(&v), detail);
    }
}

/// Every `mxc://` URI of an event, once each, but none the homeserver
/// bundled in `unsigned` (another event's media).
#[test]
fn media_uris_of_an_event_leave_out_bundled_events() {
    let event = json!({"type": "m.room.message", "content": {
        "msgtype": "m.image", "url": "mxc://h/a",
        "info": {"thumbnail_url": "mxc://h/t"},
        "m.new_content": {"url": "mxc://h/a"}},
        "unsigned": {"m.relations": {"m.thread": {"latest_event": {
            "content": {"url": "mxc://h/reply"}}}}}});
    let mut uris = crate::event::mxc_uris(&event);
    uris.sort_unstable();
    assert_eq!(uris, ["mxc://h/a", "mxc://h/t"]);
}
