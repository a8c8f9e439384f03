use super::*;
use crate::event::{Body, Media, MediaLocation, Message, MessageKey, Party, Role};

fn settings() -> MapSettings {
    MapSettings {
        identifier_system: "urn:chartbridge:messenger-message".into(),
        language: "de".into(),
        facility_type: CodingConfig {
            system: "f".into(),
            code: "KHS".into(),
            display: "Krankenhaus".into(),
        },
        practice_setting: CodingConfig {
            system: "p".into(),
            code: "ALLG".into(),
            display: "Allgemeinmedizin".into(),
        },
        confidentiality: CodingConfig {
            system: "c".into(),
            code: "R".into(),
            display: "restricted".into(),
        },
        agent_name: "chartbridge".into(),
    }
}

fn message(body: Body) -> Message {
    Message {
        key: MessageKey {
            source: "whatsapp".into(),
            message_id: "wamid.1".into(),
        },
        event_id: "e".into(),
        conversation: "c".into(),
        sender: Party {
            id: "4917".into(),
            role: Role::Patient,
            display: None,
        },
        recipients: vec![],
        sent_at: DateTime::UNIX_EPOCH,
        received_at: None,
        in_reply_to: None,
        replaces: None,
        body,
        part: None,
        case: None,
        mark: None,
        kind: None,
        forwarded: None,
    }
}

#[test]
fn media_becomes_binary_document_reference_and_provenance() {
    let m = message(Body::Media(Media {
        mime_type: "image/png".into(),
        file_name: Some("wound.png".into()),
        caption: None,
        declared_size: None,
        declared_sha256: None,
        location: MediaLocation::Inline(b"png".to_vec()),
    }));
    let hashes = ContentHashes::of(b"png");
    let doc_type = DocumentType {
        code: "ED020199".into(),
        display: "Foto".into(),
    };
    let input = MapInput {
        message: &m,
        content: b"png",
        binary: None,
        hashes: &hashes,
        patient: "Patient/1",
        encounter: Some("Encounter/2"),
        document_type: Some(&doc_type),
        archived_at: DateTime::UNIX_EPOCH,
    };
    let tx = transaction(&input, &settings()).unwrap();
    let entries = tx.bundle["entry"].as_array().unwrap();
    let types: Vec<_> = entries
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Binary", "DocumentReference", "Provenance"]);
    assert_eq!(tx.primary, Primary::DocumentReference);
    let doc = &entries[tx.primary_entry]["resource"];
    let attachment = &doc["content"][0]["attachment"];
    assert_eq!(
        attachment["hash"],
        crate::map::document::sha1_base64(&hashes.sha1)
    );
    assert_eq!(
        attachment["extension"][0]["valueString"],
        hashes.sha256_hex()
    );
    assert_eq!(attachment["url"], entries[0]["request"]["url"]);
    assert_eq!(doc["type"]["coding"][0]["code"], "ED020199");
    assert_eq!(doc["context"]["encounter"][0]["reference"], "Encounter/2");
    // The conditional create's query, escaped and percent-encoded
    // (`crate::push::url`): system `|` value as one encoded token.
    assert_eq!(
        entries[1]["request"]["ifNoneExist"],
        "identifier=urn%3Achartbridge%3Amessenger-message%7Cwhatsapp%3Awamid.1"
    );
    let again = transaction(&input, &settings()).unwrap();
    assert_eq!(again, tx, "mapping is deterministic");
    assert!(doc["context"].get("related").is_none());
    // A medium sent in reply names the message it answers, as a text's
    // Communication.inResponseTo does.
    let mut reply = m.clone();
    reply.in_reply_to = Some("wamid.question".into());
    let tx = transaction(
        &MapInput {
            message: &reply,
            ..input
        },
        &settings(),
    )
    .unwrap();
    let doc = &tx.bundle["entry"][tx.primary_entry]["resource"];
    assert_eq!(
        doc["context"]["related"][0]["identifier"]["value"],
        "whatsapp:wamid.question"
    );
}

/// The mapping input of the text message `m` (content `text`) for
/// `Patient/1`, no encounter, archived at the epoch.
fn text_input<'a>(m: &'a Message, text: &'a str, hashes: &'a ContentHashes) -> MapInput<'a> {
    MapInput {
        message: m,
        content: text.as_bytes(),
        binary: None,
        hashes,
        patient: "Patient/1",
        encounter: None,
        document_type: None,
        archived_at: DateTime::UNIX_EPOCH,
    }
}

#[test]
fn text_becomes_communication() {
    let m = message(Body::Text("Schmerzen seit gestern".into()));
    let hashes = ContentHashes::of("Schmerzen seit gestern".as_bytes());
    let input = text_input(&m, "Schmerzen seit gestern", &hashes);
    let tx = transaction(&input, &settings()).unwrap();
    let c = &tx.bundle["entry"][0]["resource"];
    assert_eq!(c["resourceType"], "Communication");
    assert_eq!(c["status"], "completed");
    assert_eq!(c["payload"][0]["contentString"], "Schmerzen seit gestern");
    assert_eq!(c["subject"]["reference"], "Patient/1");
    let p = &tx.bundle["entry"][1]["resource"];
    assert_eq!(
        p["target"][0]["reference"],
        tx.bundle["entry"][0]["fullUrl"]
    );
}

/// A text with control characters a FHIR `string` must not carry travels
/// unchanged as a text/plain attachment; TAB, CR and LF stay a string.
#[test]
fn texts_with_control_characters_become_a_text_attachment() {
    use base64::Engine;
    for (text, attached) in [
        ("a\u{0b}b", true),
        ("nul\u{0}", true),
        ("del\u{7f}", true),
        ("c1\u{85}", true),
        ("tab\tcr\rlf\n", false),
    ] {
        let m = message(Body::Text(text.into()));
        let hashes = ContentHashes::of(text.as_bytes());
        let input = text_input(&m, text, &hashes);
        let tx = transaction(&input, &settings()).unwrap();
        let payload = &tx.bundle["entry"][0]["resource"]["payload"][0];
        assert_eq!(crate::map::payload_text(payload).unwrap(), text.as_bytes());
        if attached {
            assert!(payload["contentString"].is_null(), "{text:?}");
            let a = &payload["contentAttachment"];
            assert_eq!(a["contentType"], crate::map::TEXT_ATTACHMENT_TYPE);
            assert_eq!(
                base64::engine::general_purpose::STANDARD
                    .decode(a["data"].as_str().unwrap())
                    .unwrap(),
                text.as_bytes()
            );
        } else {
            assert_eq!(payload["contentString"], text);
        }
    }
}

/// Captions, file names and display names become FHIR strings a KIS
/// takes: whitespace-only ones are left out, control characters become
/// U+FFFD.
#[test]
fn short_texts_are_valid_fhir_strings() {
    use crate::map::fhir::fhir_string;
    assert_eq!(fhir_string(""), None);
    assert_eq!(fhir_string(" \n "), None);
    assert_eq!(
        fhir_string("Wunde\u{0b}links").as_deref(),
        Some("Wunde\u{fffd}links")
    );
    assert_eq!(fhir_string("a\tb").as_deref(), Some("a\tb"));
}

/// base64Binary admits whitespace between quads (servers wrap lines).
#[test]
fn base64_binary_with_whitespace_decodes() {
    assert_eq!(
        crate::map::decode_base64_binary("AAEC AwQF\r\nBgc=").unwrap(),
        [0, 1, 2, 3, 4, 5, 6, 7]
    );
    assert_eq!(crate::map::decode_base64_binary("not base64!"), None);
}

/// Found by fuzzing: a time FHIR cannot express is a refusal, not a panic.
#[test]
fn times_fhir_cannot_express_are_refused() {
    let mut m = message(Body::Text("x".into()));
    m.sent_at = "+10000-01-01T00:00:00Z".parse().unwrap();
    let hashes = ContentHashes::of(b"x");
    let input = MapInput {
        message: &m,
        content: b"x",
        binary: None,
        hashes: &hashes,
        patient: "Patient/p1",
        encounter: None,
        document_type: None,
        archived_at: DateTime::UNIX_EPOCH,
    };
    assert!(matches!(
        transaction(&input, &settings()),
        Err(MapError::Build { .. })
    ));
}

#[test]
fn an_edit_names_the_corrected_message_as_revised() {
    let mut m = message(Body::Text("Drain 200 ml".into()));
    m.replaces = Some("wamid.0".into());
    let hashes = ContentHashes::of(b"Drain 200 ml");
    let input = MapInput {
        message: &m,
        content: b"Drain 200 ml",
        binary: None,
        hashes: &hashes,
        patient: "Patient/1",
        encounter: None,
        document_type: None,
        archived_at: DateTime::UNIX_EPOCH,
    };
    let mut tx = transaction(&input, &settings()).unwrap();
    let revision = |tx: &Transaction| tx.bundle["entry"][1]["resource"]["entity"][1].clone();
    assert_eq!(revision(&tx)["role"], "revision");
    assert_eq!(
        revision(&tx)["what"]["identifier"]["value"],
        "whatsapp:wamid.0"
    );
    assert!(revision(&tx)["what"].get("reference").is_none());
    provenance::link_revision(&mut tx.bundle, "Communication/9");
    assert_eq!(revision(&tx)["what"]["reference"], "Communication/9");
    assert_eq!(
        tx.bundle["entry"][1]["resource"]["entity"][0]["role"],
        "source"
    );
    // Without an edit there is only the source entity.
    let plain = message(Body::Text("Drain 200 ml".into()));
    let tx = transaction(
        &MapInput {
            message: &plain,
            ..input
        },
        &settings(),
    )
    .unwrap();
    assert_eq!(
        tx.bundle["entry"][1]["resource"]["entity"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
