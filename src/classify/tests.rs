use super::*;
use crate::event::{Media, MediaLocation, MessageKey, Party};

fn rules() -> Rules {
    Rules::parse(include_str!("../../mappings/rules.toml")).expect("shipped rules parse")
}

fn message(body: Body, mark: Option<Mark>) -> Message {
    Message {
        key: MessageKey {
            source: "whatsapp".into(),
            message_id: "m".into(),
        },
        event_id: "e".into(),
        conversation: "c".into(),
        sender: Party {
            id: "s".into(),
            role: Role::Unknown,
            display: None,
        },
        recipients: vec![],
        sent_at: chrono::DateTime::UNIX_EPOCH,
        received_at: None,
        in_reply_to: None,
        replaces: None,
        body,
        part: None,
        case: None,
        mark,
        kind: None,
        forwarded: None,
    }
}

fn image() -> Body {
    Body::Media(Media {
        mime_type: "image/jpeg".into(),
        file_name: None,
        caption: None,
        declared_size: None,
        declared_sha256: None,
        location: MediaLocation::Inline(vec![1]),
    })
}

fn check(body: Body, mark: Option<Mark>, linked: bool, rule: &str, relevant: bool) {
    let d = rules().classify(&message(body, mark), linked);
    assert_eq!(d.rule, rule);
    assert_eq!(matches!(d.outcome, Outcome::Relevant { .. }), relevant);
}

#[test]
fn shipped_rules_decide_as_documented() {
    let text = || Body::Text("x".into());
    check(
        image(),
        Some(Mark::NotRelevant),
        true,
        "marked-not-relevant",
        false,
    );
    check(
        image(),
        Some(Mark::Relevant),
        false,
        "marked-relevant-image",
        true,
    );
    check(text(), Some(Mark::Relevant), false, "marked-relevant", true);
    check(image(), None, true, "linked-images", true);
    check(text(), None, true, "linked-text", true);
    check(text(), None, false, "default", false);
    check(image(), None, false, "default", false);
}

fn media(mime: &str) -> Body {
    Body::Media(Media {
        mime_type: mime.into(),
        file_name: None,
        caption: None,
        declared_size: None,
        declared_sha256: None,
        location: MediaLocation::Reference("M".into()),
    })
}

fn decide(body: Body, kind: Option<MessageKind>, mark: Option<Mark>, linked: bool) -> Decision {
    let mut m = message(body, mark);
    m.kind = kind;
    rules().classify(&m, linked)
}

fn code(d: &Decision) -> &str {
    match &d.outcome {
        Outcome::Relevant { document_type } => &document_type.code,
        Outcome::NotRelevant { .. } => "-",
    }
}

#[test]
fn kinds_decide_stickers_voice_notes_audio_and_video() {
    let sticker = || media("image/webp");
    let d = decide(sticker(), Some(MessageKind::Sticker), None, true);
    assert_eq!((d.rule.as_str(), code(&d)), ("stickers", "-"));
    // A clinician's mark still archives a sticker; an image stays a photo.
    let d = decide(
        sticker(),
        Some(MessageKind::Sticker),
        Some(Mark::Relevant),
        true,
    );
    assert_eq!(d.rule, "marked-relevant-image");
    let d = decide(sticker(), Some(MessageKind::Image), None, true);
    assert_eq!((d.rule.as_str(), code(&d)), ("linked-images", "ED020199"));
    for kind in [Some(MessageKind::Voice), Some(MessageKind::Audio), None] {
        let d = decide(media("audio/ogg"), kind, None, true);
        assert_eq!(
            (d.rule.as_str(), code(&d)),
            ("linked-audio", "ED010199"),
            "{kind:?}"
        );
    }
    let d = decide(media("audio/ogg"), Some(MessageKind::Voice), None, false);
    assert_eq!(d.rule, "default");
    let d = decide(media("video/mp4"), Some(MessageKind::Video), None, true);
    assert_eq!((d.rule.as_str(), code(&d)), ("linked-images", "ED020199"));
    for kind in [
        MessageKind::Interactive,
        MessageKind::Location,
        MessageKind::Contacts,
    ] {
        let d = decide(Body::Text("x".into()), Some(kind), None, true);
        assert_eq!(d.rule, "linked-text", "{kind:?}");
    }
}

#[test]
fn forwarded_condition_matches_forwarded_messages() {
    let base = "[default]\nrelevant = false\nretention = \"24h\"\n[document_types.a]\ncode = \"X\"\ndisplay = \"Y\"\n";
    let rules = Rules::parse(&format!(
        "{base}[[rule]]\nname = \"fw\"\nforwarded = true\nrelevant = false\nretention = \"1h\"\n"
    ))
    .unwrap();
    let mut m = message(Body::Text("x".into()), None);
    assert_eq!(rules.classify(&m, true).rule, "default");
    m.forwarded = Some(crate::event::Forwarded::Frequently);
    assert_eq!(rules.classify(&m, true).rule, "fw");
}

#[test]
fn kind_conditions_parse_and_refuse_unknown_kinds() {
    let base = "[default]\nrelevant = false\nretention = \"1h\"\n[document_types.a]\ncode = \"X\"\ndisplay = \"Y\"\n";
    let rules = Rules::parse(&format!(
        "{base}[[rule]]\nname = \"v\"\nkind = [\"voice\", \"interactive\"]\nrelevant = true\n"
    ))
    .unwrap();
    let mut m = message(Body::Text("x".into()), None);
    m.kind = Some(MessageKind::Interactive);
    assert_eq!(rules.classify(&m, false).rule, "v");
    m.kind = None;
    assert_eq!(rules.classify(&m, false).rule, "default");
    let err = Rules::parse(&format!(
        "{base}[[rule]]\nname = \"w\"\nkind = [\"gif\"]\nrelevant = true\n"
    ))
    .unwrap_err();
    assert!(err.contains("gif"), "{err}");
}

#[test]
fn image_rule_files_as_kdl_photo() {
    let d = rules().classify(&message(image(), None), true);
    let Outcome::Relevant { document_type } = d.outcome else {
        panic!("not relevant")
    };
    assert_eq!(document_type.code, "ED020199");
}

#[test]
fn bad_rules_are_refused_with_the_rule_name() {
    let base = "[default]\nrelevant = false\nretention = \"1h\"\n[document_types.a]\ncode = \"X\"\ndisplay = \"Y\"\n";
    let err = Rules::parse(&format!(
        "{base}[[rule]]\nname = \"r1\"\nrelevant = true\ndocument_type = \"nope\"\n"
    ))
    .unwrap_err();
    assert!(err.contains("r1") && err.contains("nope"), "{err}");
    let err = Rules::parse(&format!(
        "{base}[[rule]]\nname = \"r2\"\nrelevant = false\n"
    ))
    .unwrap_err();
    assert!(err.contains("r2"), "{err}");
    let err =
        Rules::parse(&format!("{base}[[rule]]\nname = \"r3\"\nrelevnt = true\n")).unwrap_err();
    assert!(err.contains("relevnt"), "{err}");
}

#[test]
fn media_type_patterns() {
    assert!(media_type_matches("image/*", "image/png"));
    assert!(!media_type_matches("image/*", "application/pdf"));
    assert!(media_type_matches("application/pdf", "application/pdf"));
}
