#![no_main]
//! Decode, classify and map: every message that decodes must classify and
//! either map into a transaction Bundle that serialises, or be refused with
//! a `MapError` (which the worker turns into a quarantine).

use std::sync::LazyLock;

use chartbridge::classify::{Outcome, Rules};
use chartbridge::config::CodingConfig;
use chartbridge::event::{self, Body, MediaLocation};
use chartbridge::map::{self, MapInput, MapSettings};
use chartbridge::prove::ContentHashes;
use libfuzzer_sys::fuzz_target;

static RULES: LazyLock<Rules> = LazyLock::new(|| {
    Rules::parse(include_str!("../../mappings/rules.toml")).expect("the shipped rules parse")
});

static SETTINGS: LazyLock<MapSettings> = LazyLock::new(|| MapSettings {
    identifier_system: "urn:chartbridge:messenger-message".into(),
    language: "de".into(),
    facility_type: coding("KHS"),
    practice_setting: coding("ALLG"),
    confidentiality: coding("R"),
    agent_name: "chartbridge".into(),
});

fn coding(code: &str) -> CodingConfig {
    CodingConfig {
        system: "urn:fuzz".into(),
        code: code.into(),
        display: code.into(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(decoded) = event::decode(data, 1 << 20) else {
        return;
    };
    for message in &decoded.messages {
        let decision = RULES.classify(message, data.first().is_some_and(|b| b & 1 == 1));
        let document_type = match decision.outcome {
            Outcome::Relevant { document_type } => Some(document_type),
            Outcome::NotRelevant { .. } => None,
        };
        // Referenced media: the bytes would come from the media API.
        let content: &[u8] = match &message.body {
            Body::Text(t) => t.as_bytes(),
            Body::Media(m) => match &m.location {
                MediaLocation::Inline(bytes) => bytes,
                MediaLocation::Reference(_) => data,
            },
        };
        let hashes = ContentHashes::of(content);
        let input = MapInput {
            message,
            content,
            hashes: &hashes,
            patient: "Patient/p1",
            encounter: Some("Encounter/e1"),
            document_type: document_type.as_ref(),
            archived_at: chrono::DateTime::UNIX_EPOCH,
        };
        if let Ok(tx) = map::transaction(&input, &SETTINGS) {
            let bytes = serde_json::to_vec(&tx.bundle).expect("a mapped bundle serialises");
            assert!(!bytes.is_empty());
        }
    }
});
