//! Every value in a KIS URL is escaped and encoded (`chartbridge::push::url`):
//! message ids and identifier values carrying `+ / = & % , | $ \` (and
//! spaces, where the format allows them) never create a duplicate in the
//! real FHIR server and never match another message's resource — also when
//! the store write after a successful push is lost and the message comes
//! again (conditional create finds the existing resource).

mod common;

use chartbridge::classify::Rules;
use chartbridge::pipeline::{Outcome, Pipeline};
use chartbridge::push::url::SearchValue;
use chartbridge::store::Store;
use common::{CASE_SYSTEM, Harness, PATIENT_SYSTEM};
use serde_json::{Value, json};

/// A pipeline over the harness's KIS and a store of its own.
async fn pipeline(h: &Harness, name: &str) -> (Pipeline, Store) {
    let db = h.dir.path().join(format!("{name}.db"));
    let store = Store::open(&format!("sqlite://{}?mode=rwc", db.display()), 2, &h.sealer)
        .await
        .unwrap();
    let rules = Rules::load(&h.config.mappings.rules_file).unwrap();
    let p = Pipeline::new(&h.config, store.clone(), h.sealer.clone(), rules).unwrap();
    (p, store)
}

/// The text fixture under `message_id`, its case naming `patient`.
fn message(h: &Harness, message_id: &str, patient: &str) -> chartbridge::event::Message {
    let mut v: Value = serde_json::from_slice(
        &std::fs::read(common::repo().join("fixtures/events/text-canonical.json")).unwrap(),
    )
    .unwrap();
    v["message_id"] = message_id.into();
    v["event_id"] = format!("evt-{}", h.run).into();
    v["case"] = json!({"patient": {"identifier": {"system": PATIENT_SYSTEM, "value": patient}}});
    chartbridge::event::decode(&serde_json::to_vec(&v).unwrap(), 1 << 20)
        .unwrap()
        .messages
        .remove(0)
}

async fn archived(p: &Pipeline, m: &chartbridge::event::Message) -> String {
    match p.process(m, chrono::Utc::now()).await.unwrap() {
        Outcome::Archived { resource } => resource,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_hostile_message_ids_never_duplicate_or_match_another_resource() {
    let h = Harness::new(None, None).await;
    // A patient identifier value with spaces and every reserved character.
    let patient_value = format!("P 7+7/7=7&7%7,7|7$7\\7 {}", h.run);
    let created = h
        .kis
        .create_if_none_exist(
            &json!({"resourceType": "Patient",
                    "identifier": [{"system": PATIENT_SYSTEM, "value": patient_value}]}),
            &[(
                "identifier",
                SearchValue::Token {
                    system: PATIENT_SYSTEM,
                    code: &patient_value,
                },
            )],
        )
        .await
        .unwrap();
    let again = h
        .kis
        .create_if_none_exist(
            &json!({"resourceType": "Patient",
                    "identifier": [{"system": PATIENT_SYSTEM, "value": patient_value}]}),
            &[(
                "identifier",
                SearchValue::Token {
                    system: PATIENT_SYSTEM,
                    code: &patient_value,
                },
            )],
        )
        .await
        .unwrap();
    assert_eq!(created, again, "conditional create made a duplicate");
    assert_eq!(
        h.kis
            .search_identifier("Patient", PATIENT_SYSTEM, &patient_value)
            .await
            .unwrap(),
        Some(created.clone())
    );
    // A value that is a prefix, or an alternative, of it matches nothing.
    let prefix = "P 7+7/7=7&7%7";
    assert_eq!(
        h.kis
            .search_identifier("Patient", PATIENT_SYSTEM, prefix)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        h.kis
            .search_identifier("Encounter", CASE_SYSTEM, &patient_value)
            .await
            .unwrap(),
        None
    );

    // A plain message first; then one whose id continues it with `,` and
    // `|`: unescaped, its conditional create would name the first one's
    // identifier as an alternative and "find" that resource.
    // Case references in events are printable ASCII without spaces.
    let case_value = format!("P+7/7=7&7%7,7|7$7\\7-{}", h.run);
    let case_patient = h
        .kis
        .create_if_none_exist(
            &json!({"resourceType": "Patient",
                    "identifier": [{"system": PATIENT_SYSTEM, "value": case_value}]}),
            &[(
                "identifier",
                SearchValue::Token {
                    system: PATIENT_SYSTEM,
                    code: &case_value,
                },
            )],
        )
        .await
        .unwrap();
    assert_ne!(case_patient, created);
    let plain_id = format!("msg-{}", h.run);
    let hostile_id = format!("msg-{},matrix:msg-{}|x+y/z=1&2%25$3\\4", h.run, h.run);
    let (p1, _s1) = pipeline(&h, "first").await;
    let plain = message(&h, &plain_id, &case_value);
    let hostile = message(&h, &hostile_id, &case_value);
    let r_plain = archived(&p1, &plain).await;
    let r_hostile = archived(&p1, &hostile).await;
    assert_ne!(
        r_plain, r_hostile,
        "the hostile id matched another message's resource"
    );
    let c = h.kis.read(&r_hostile).await.unwrap();
    assert_eq!(c["identifier"][0]["value"], format!("matrix:{hostile_id}"));
    assert_eq!(c["subject"]["reference"], case_patient.as_str());

    // Push succeeded, store write lost: the same message through a fresh
    // store finds the existing resource instead of creating a second one.
    let (p2, _s2) = pipeline(&h, "lost").await;
    assert_eq!(archived(&p2, &hostile).await, r_hostile);
    assert_eq!(archived(&p2, &plain).await, r_plain);
    for key in [&hostile.key, &plain.key] {
        assert_eq!(h.kis_ids("Communication", key).await.len(), 1, "{key}");
    }
}

/// An identifier search counts only matches (R4 search.html): an entry of
/// `search.mode` `outcome` (an OperationOutcome with an id), a resource of
/// another type, or a resource that does not carry the searched
/// `system|value` (a lenient server that ignored the parameter and
/// answered what it holds) never names the patient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_resources_that_carry_the_identifier_are_matches() {
    let h = Harness::new(None, None).await;
    let app = axum::Router::new().fallback(|uri: axum::http::Uri| async move {
        let q = uri.query().unwrap_or_default().to_owned();
        let mut entry = vec![
            json!({"search": {"mode": "outcome"},
                   "resource": {"resourceType": "OperationOutcome", "id": "warn-1",
                                "issue": [{"severity": "warning", "code": "processing"}]}}),
            json!({"resource": {"resourceType": "Patient", "id": "someone-else",
                                "identifier": [{"system": PATIENT_SYSTEM, "value": "OTHER"}]}}),
        ];
        if q.contains("P-THERE") || q.contains("P-PAGED") {
            let value = if q.contains("P-THERE") {
                "P-THERE"
            } else {
                "P-PAGED"
            };
            entry.push(json!({"search": {"mode": "match"},
                "resource": {"resourceType": "Patient", "id": "p-there",
                             "identifier": [{"system": PATIENT_SYSTEM, "value": value}]}}));
        }
        // A page of a server that matches tokens loosely: the entry that
        // does not carry the value was dropped, and a further page may
        // hold another exact match.
        let link = if q.contains("P-PAGED") {
            json!([{"relation": "next", "url": "http://kis.invalid/Patient?page=2"}])
        } else {
            json!([])
        };
        (
            [("content-type", "application/fhir+json")],
            json!({"resourceType": "Bundle", "type": "searchset", "entry": entry, "link": link})
                .to_string(),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let text = std::fs::read_to_string(h.config_file()).unwrap();
    let config = chartbridge::config::Config::from_parts(
        h.config_file(),
        &text.replace(&common::fhir_url(), &url),
        std::iter::empty(),
    )
    .unwrap();
    let kis = chartbridge::push::Kis::new(&config.kis).unwrap();
    assert_eq!(
        kis.search_identifier("Patient", PATIENT_SYSTEM, "P-ABSENT")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        kis.search_identifier("Patient", PATIENT_SYSTEM, "P-THERE")
            .await
            .unwrap()
            .as_deref(),
        Some("Patient/p-there")
    );
    // One exact match kept, and a further page: not known to be unique.
    assert!(
        kis.search_identifier("Patient", PATIENT_SYSTEM, "P-PAGED")
            .await
            .is_err()
    );
}
