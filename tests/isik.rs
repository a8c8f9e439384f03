//! ISiK Dokumentenaustausch conformance checklist (DSK I.6).
//!
//! The ISiK package (npm-format tarball from the FHIR package registry) and
//! a profile validator cannot be brought to this machine, so every
//! ISiKDokumentenMetadaten must-support and cardinality element (stage 3,
//! 3.0.2; unchanged in the stage 4 release candidate) is checked here on the
//! DocumentReference mapped for every document type of
//! `mappings/rules.toml`, with and without an encounter. The same resources
//! pass the real FHIR server's R4 validation (`isik_documents_pass_r4_validation`).
//! Element → where set → check: docs/isik.md.

mod common;

use chartbridge::classify::DocumentType;
use chartbridge::event::{self, Body, Message};
use chartbridge::map::{self, MapInput, MapSettings};
use chartbridge::prove::ContentHashes;
use chrono::{TimeZone, Utc};
use common::{fhir_url, repo};
use serde_json::{Value, json};

const PATIENT: &str = "Patient/isik-example";
const ENCOUNTER: &str = "Encounter/isik-example";
const KDL: &str = "http://dvmd.de/fhir/CodeSystem/kdl";

/// Every `[document_types.*]` of the shipped rules.
fn document_types() -> Vec<(String, DocumentType)> {
    let text = std::fs::read_to_string(repo().join("mappings/rules.toml")).unwrap();
    let table: toml::Table = text.parse().unwrap();
    let types = table["document_types"].as_table().unwrap();
    assert!(!types.is_empty());
    types
        .iter()
        .map(|(name, v)| {
            (
                name.clone(),
                DocumentType {
                    code: v["code"].as_str().unwrap().into(),
                    display: v["display"].as_str().unwrap().into(),
                },
            )
        })
        .collect()
}

fn media_message(mime: &str) -> Message {
    let payload = std::fs::read(repo().join("fixtures/events/image-canonical.json")).unwrap();
    let mut m = event::decode(&payload, 1 << 24).unwrap().messages.remove(0);
    if let Body::Media(media) = &mut m.body {
        media.mime_type = mime.into();
    }
    m
}

fn settings() -> MapSettings {
    let text = "[broker]\nurl = \"amqp://127.0.0.1\"\n[store]\nkey_file = \"k\"\n[kis]\nbase_url = \"http://127.0.0.1:1\"\n";
    let c =
        chartbridge::config::Config::from_parts(std::path::Path::new("t.toml"), text, []).unwrap();
    MapSettings::from(&c.kis)
}

/// The DocumentReference (and its Binary) mapped for one case.
fn mapped(m: &Message, dt: &DocumentType, encounter: Option<&str>) -> (Value, Value) {
    let content = m.inline_content().unwrap().to_vec();
    let hashes = ContentHashes::of(&content);
    let input = MapInput {
        message: m,
        content: &content,
        binary: None,
        hashes: &hashes,
        patient: PATIENT,
        encounter,
        document_type: Some(dt),
        archived_at: Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap(),
    };
    let tx = map::transaction(&input, &settings()).unwrap();
    let entries = tx.bundle["entry"].as_array().unwrap();
    let doc = entries[tx.primary_entry]["resource"].clone();
    let binary = entries
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Binary")
        .unwrap()["resource"]
        .clone();
    (doc, binary)
}

fn string(v: &Value, path: &str) -> String {
    v.pointer(path)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| panic!("{path} missing or empty"))
        .to_owned()
}

fn array_len(v: &Value, path: &str) -> usize {
    v.pointer(path)
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

/// The ISiKDokumentenMetadaten checklist; panics naming the element.
fn check_isik(doc: &Value, binary: &Value, dt: &DocumentType, encounter: Option<&str>) {
    assert_eq!(doc["resourceType"], "DocumentReference");
    // masterIdentifier 1..1 MS, system = urn:ietf:rfc:3986, value 1..1 (a URN)
    assert_eq!(string(doc, "/masterIdentifier/system"), "urn:ietf:rfc:3986");
    assert!(string(doc, "/masterIdentifier/value").starts_with("urn:uuid:"));
    // identifier MS
    assert!(array_len(doc, "/identifier") >= 1, "identifier");
    string(doc, "/identifier/0/system");
    string(doc, "/identifier/0/value");
    // status MS (required by R4), docStatus MS
    assert_eq!(string(doc, "/status"), "current");
    assert_eq!(string(doc, "/docStatus"), "final");
    // type 1..1 MS, coding:KDL 1..1 MS with system, code, display 1..1
    let kdl: Vec<&Value> = doc["type"]["coding"]
        .as_array()
        .expect("type.coding")
        .iter()
        .filter(|c| c["system"] == KDL)
        .collect();
    assert_eq!(kdl.len(), 1, "type.coding:KDL 1..1");
    assert_eq!(kdl[0]["code"], dt.code.as_str(), "KDL code from the rules");
    assert_eq!(kdl[0]["display"], dt.display.as_str(), "KDL display");
    assert!(
        dt.code.len() == 8
            && dt.code[..2].chars().all(|c| c.is_ascii_uppercase())
            && dt.code[2..].chars().all(|c| c.is_ascii_digit()),
        "KDL codes are two letters and six digits: {}",
        dt.code
    );
    // category 0..1 MS: left to the KIS (derived from KDL), never more than one
    assert!(array_len(doc, "/category") <= 1, "category 0..1");
    // subject 1..1 MS, Reference(Patient), literal reference
    assert_eq!(string(doc, "/subject/reference"), PATIENT);
    // author MS with display MS
    assert!(array_len(doc, "/author") >= 1, "author");
    string(doc, "/author/0/display");
    // custodian 0..0
    assert!(doc.get("custodian").is_none(), "custodian must be absent");
    // description 1..1 MS
    string(doc, "/description");
    // securityLabel 1..* MS from ISiKConfidentialityCodes (v3 N | R | V)
    assert!(array_len(doc, "/securityLabel") >= 1, "securityLabel");
    assert_eq!(
        string(doc, "/securityLabel/0/coding/0/system"),
        "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
    );
    assert!(["N", "R", "V"].contains(&string(doc, "/securityLabel/0/coding/0/code").as_str()));
    // content 1..1 MS; attachment MS: contentType, language, creation 1..1;
    // data or url MS (url to the Binary)
    assert_eq!(array_len(doc, "/content"), 1, "content 1..1");
    let att = &doc["content"][0]["attachment"];
    assert_eq!(string(att, "/contentType"), string(binary, "/contentType"));
    assert_eq!(string(att, "/language"), "de");
    string(att, "/creation");
    let url = string(att, "/url");
    assert!(
        url.starts_with("Binary/"),
        "attachment.url points to the Binary"
    );
    // content.format 1..1 MS (IHE-D format codes)
    assert_eq!(
        string(doc, "/content/0/format/system"),
        "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
    );
    assert_eq!(
        string(doc, "/content/0/format/code"),
        "urn:ihe:iti:xds:2017:mimeTypeSufficient"
    );
    // context 1..1 MS; encounter 0..1 MS (literal); facilityType, practiceSetting 1..1 MS
    match encounter {
        Some(e) => {
            assert_eq!(
                array_len(doc, "/context/encounter"),
                1,
                "context.encounter 0..1"
            );
            assert_eq!(string(doc, "/context/encounter/0/reference"), e);
        }
        None => assert_eq!(array_len(doc, "/context/encounter"), 0),
    }
    assert_eq!(
        string(doc, "/context/facilityType/coding/0/system"),
        "http://ihe-d.de/CodeSystems/PatientBezogenenGesundheitsversorgung"
    );
    string(doc, "/context/facilityType/coding/0/code");
    assert_eq!(
        string(doc, "/context/practiceSetting/coding/0/system"),
        "http://ihe-d.de/CodeSystems/AerztlicheFachrichtungen"
    );
    string(doc, "/context/practiceSetting/coding/0/code");
}

#[test]
fn i6_isik_checklist_for_every_document_type() {
    let mut checked = 0;
    for (name, dt) in document_types() {
        for mime in ["image/png", "image/jpeg", "application/pdf", "video/mp4"] {
            let m = media_message(mime);
            for encounter in [Some(ENCOUNTER), None] {
                let (doc, binary) = mapped(&m, &dt, encounter);
                let result = std::panic::catch_unwind(|| check_isik(&doc, &binary, &dt, encounter));
                assert!(
                    result.is_ok(),
                    "document type {name}, {mime}, encounter {encounter:?}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 8);
}

#[test]
fn i6_isik_checklist_catches_a_missing_element() {
    // The checklist can fail: drop one must-support element at a time.
    let (name, dt) = document_types().remove(0);
    let (doc, binary) = mapped(&media_message("image/png"), &dt, Some(ENCOUNTER));
    for pointer in [
        "/masterIdentifier",
        "/docStatus",
        "/author",
        "/description",
        "/securityLabel",
        "/context",
    ] {
        let mut broken = doc.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let target = if parent.is_empty() {
            &mut broken
        } else {
            broken.pointer_mut(parent).unwrap()
        };
        target.as_object_mut().unwrap().remove(key);
        let r = std::panic::catch_unwind(|| check_isik(&broken, &binary, &dt, Some(ENCOUNTER)));
        assert!(r.is_err(), "{name}: removing {pointer} went unnoticed");
    }
    let mut other = doc.clone();
    other["type"]["coding"][0]["code"] = json!("XX000000");
    assert!(std::panic::catch_unwind(|| check_isik(&other, &binary, &dt, None)).is_err());
}

#[tokio::test]
async fn i6_isik_documents_pass_r4_validation() {
    // One transaction per document type against the real, validating server:
    // the ISiK elements are valid R4.
    let http = reqwest::Client::new();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let patient = json!({"resourceType": "Patient", "identifier": [{"system": "urn:chartbridge:test:isik", "value": run}]});
    let created: Value = http
        .post(format!("{}/Patient", fhir_url()))
        .header("content-type", "application/fhir+json")
        .body(patient.to_string())
        .send()
        .await
        .expect("FHIR server running (deploy/dev/fhir-server.sh start)")
        .json()
        .await
        .unwrap();
    let patient_ref = format!("Patient/{}", created["id"].as_str().unwrap());
    for (i, (name, dt)) in document_types().into_iter().enumerate() {
        let mut m = media_message("image/png");
        m.key.message_id = format!("isik-{name}-{run}");
        // Every other one sent in reply: `context.related` names the
        // message it answers (a logical reference), valid R4 too.
        if i % 2 == 1 {
            m.in_reply_to = Some(format!("question-{run}"));
        }
        let content = m.inline_content().unwrap().to_vec();
        let hashes = ContentHashes::of(&content);
        let input = MapInput {
            message: &m,
            content: &content,
            binary: None,
            hashes: &hashes,
            patient: &patient_ref,
            encounter: None,
            document_type: Some(&dt),
            archived_at: Utc::now(),
        };
        let tx = map::transaction(&input, &settings()).unwrap();
        let doc = &tx.bundle["entry"][tx.primary_entry]["resource"];
        assert_eq!(
            doc["context"].get("related").is_some(),
            m.in_reply_to.is_some(),
            "{name}"
        );
        let r = http
            .post(fhir_url())
            .header("content-type", "application/fhir+json")
            .body(tx.bundle.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert!(status.is_success(), "{name}: {status} {body}");
        for e in body["entry"].as_array().unwrap() {
            assert!(
                e["response"]["status"].as_str().unwrap().starts_with('2'),
                "{name}"
            );
        }
    }
}
