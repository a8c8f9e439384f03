use chrono::DateTime;
use serde_json::{Value, json};

use super::*;
use crate::classify::{DocumentType, Rules};
use crate::config::CodingConfig;
use crate::map::{MapInput, MapSettings, transaction};
use crate::prove::ContentHashes;

fn settings() -> MapSettings {
    let coding = |code: &str| CodingConfig {
        system: "s".into(),
        code: code.into(),
        display: code.into(),
    };
    MapSettings {
        identifier_system: "urn:chartbridge:messenger-message".into(),
        language: "de".into(),
        facility_type: coding("KHS"),
        practice_setting: coding("ALLG"),
        confidentiality: coding("R"),
        agent_name: "chartbridge".into(),
    }
}

fn part(index: u32, count: u32, body: Value) -> Message {
    let mut event = json!({
        "schema": "chartbridge.event/v1", "source": "whatsapp",
        "event_id": format!("e{index}"), "message_id": format!("m{index}"),
        "conversation": {"id": "4915112345678"},
        "sender": {"id": "4915112345678", "role": "patient"},
        "sent_at": "2026-11-28T09:00:00Z",
        "part": {"group_id": "g1", "index": index, "count": count}
    });
    for (k, v) in body.as_object().unwrap() {
        event[k] = v.clone();
    }
    let decoded = crate::event::decode(event.to_string().as_bytes(), 1 << 20).unwrap();
    decoded.messages.into_iter().next().unwrap()
}

fn mapped(m: &Message, missing: &[u32], count: u32) -> Value {
    let content = m.inline_content().unwrap();
    let hashes = ContentHashes::of(content);
    let doc_type = DocumentType {
        code: "ED020199".into(),
        display: "Foto".into(),
    };
    let input = MapInput {
        message: m,
        content,
        binary: None,
        hashes: &hashes,
        patient: "Patient/1",
        encounter: None,
        document_type: Some(&doc_type),
        archived_at: DateTime::UNIX_EPOCH,
    };
    let mut tx = transaction(&input, &settings()).unwrap();
    mark_incomplete(&mut tx.bundle, tx.primary_entry, missing, count);
    tx.bundle["entry"][tx.primary_entry]["resource"].clone()
}

fn part_extension(resource: &Value) -> Vec<Value> {
    resource["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == PART_EXTENSION)
        .unwrap()["extension"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn ii2_marker_text_names_the_missing_parts() {
    assert_eq!(marker_text(&[2], 3), "incomplete: part 2 of 3 missing");
    assert_eq!(
        marker_text(&[2, 4], 5),
        "incomplete: parts 2, 4 of 5 missing"
    );
}

#[test]
fn ii2_incomplete_communication_carries_extension_and_note() {
    let m = part(1, 3, json!({"text": "Teil eins"}));
    let c = mapped(&m, &[2, 3], 3);
    let ext = part_extension(&c);
    assert!(ext.contains(&json!({"url": "group", "valueString": "g1"})));
    assert!(ext.contains(&json!({"url": "complete", "valueBoolean": false})));
    assert!(ext.contains(&json!({"url": "missing", "valueUnsignedInt": 2})));
    assert!(ext.contains(&json!({"url": "missing", "valueUnsignedInt": 3})));
    assert_eq!(c["note"][0]["text"], "incomplete: parts 2, 3 of 3 missing");
    assert_eq!(
        c["payload"][0]["contentString"], "Teil eins",
        "content untouched"
    );
}

#[test]
fn ii2_incomplete_document_reference_says_so_in_its_description() {
    let m = part(
        2,
        2,
        json!({"media": {"mime_type": "image/png", "caption": "Wunde", "data_base64": "iVBORw=="}}),
    );
    let d = mapped(&m, &[1], 2);
    assert_eq!(d["description"], "Wunde [incomplete: part 1 of 2 missing]");
    assert!(part_extension(&d).contains(&json!({"url": "missing", "valueUnsignedInt": 1})));
}

#[test]
fn ii2_complete_group_is_mapped_unchanged() {
    let m = part(1, 2, json!({"text": "x"}));
    let c = mapped(&m, &[], 2);
    assert_eq!(part_extension(&c).len(), 3, "group, index, count only");
    assert!(c.get("note").is_none());
}

#[test]
fn split_detection_and_group_tokens() {
    let sealer = crate::seal::Sealer::from_key([7; 32]);
    let a = part(1, 2, json!({"text": "x"}));
    let mut b = part(2, 2, json!({"text": "y"}));
    assert!(is_split(&a));
    assert_eq!(group_token(&sealer, &a), group_token(&sealer, &b));
    b.conversation = "other".into();
    assert_ne!(
        group_token(&sealer, &a),
        group_token(&sealer, &b),
        "groups of different conversations never mix"
    );
    assert!(!group_token(&sealer, &a).unwrap().contains("g1"));
    assert!(!is_split(&part(1, 1, json!({"text": "x"}))));
}

#[test]
fn group_decision_archives_every_part_when_one_is_relevant() {
    let rules = Rules::parse(include_str!("../../mappings/rules.toml")).unwrap();
    let m = part(1, 2, json!({"text": "x"}));
    let own = rules.classify(&m, false);
    assert!(matches!(own.outcome, Outcome::NotRelevant { .. }));
    let relevant = rules.classify(&m, true);
    let ctx = GroupContext {
        relevant: Some(relevant.clone()),
        missing: vec![],
        count: 2,
        late: false,
    };
    assert_eq!(ctx.decision(own.clone()), relevant);
    assert_eq!(GroupContext::default().decision(own.clone()), own);
}
