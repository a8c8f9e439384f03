//! The KIS search cache against the real FHIR server (a counting proxy in
//! front of it): a conversation's messages search their Patient and
//! Encounter once, and an ADT A40 merge that moves the identifier to
//! another Patient in the KIS is seen by the next message.

mod common;

use std::time::Duration;

use chartbridge::event::MessageKey;
use chartbridge::store::MessageState;
use common::standins::FaultProxy;
use common::{CASE_SYSTEM, Harness, PATIENT_SYSTEM};
use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};

/// Enables the ADT feed (authority `KIS` → the test systems) and a
/// ten-minute search cache; returns the ADT queue and the reply queue.
async fn enable_adt_and_cache(h: &mut Harness) -> (String, String) {
    let text = std::fs::read_to_string(&h.config_path).unwrap().replace(
        "[kis]\n",
        "[kis]\nsearch_cache_ttl = \"10m\"\nsearch_cache_size = 100\n",
    );
    std::fs::write(&h.config_path, &text).unwrap();
    h.enable_adt("").await
}

/// Publishes an ADT message and returns its ACK's text once it came.
async fn send_adt(h: &Harness, (queue, replies): &(String, String), text: &str) -> String {
    h.broker
        .publish_confirmed(
            "",
            queue,
            text.as_bytes(),
            BasicProperties::default().with_reply_to(replies.as_str().into()),
        )
        .await
        .unwrap();
    let ch = h.broker.consumer_channel(1).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            replies.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("ACK in time")
        .unwrap()
        .unwrap();
    d.ack(BasicAckOptions::default()).await.unwrap();
    ch.close(200, "done".into()).await.unwrap();
    String::from_utf8(d.data).unwrap()
}

/// A Patient with `identifiers` of the test system, created in the KIS.
async fn create_patient(identifiers: &[&str]) -> String {
    let ids: Vec<Value> = identifiers
        .iter()
        .map(|v| json!({"system": PATIENT_SYSTEM, "value": v}))
        .collect();
    let created: Value = reqwest::Client::new()
        .post(format!("{}/Patient", common::fhir_url()))
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient", "identifier": ids}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    format!("Patient/{}", created["id"].as_str().unwrap())
}

/// Replaces `reference` (`Type/id`) in the KIS by `resource`.
async fn put(patient: &str, mut resource: Value) {
    let id = patient.split_once('/').unwrap().1;
    resource["id"] = Value::String(id.into());
    let status = reqwest::Client::new()
        .put(format!("{}/{patient}", common::fhir_url()))
        .header("content-type", "application/fhir+json")
        .body(resource.to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "PUT {patient}: {status}");
}

/// The text fixture as message `i`, its case naming the patient and the
/// encounter by identifier.
fn event(h: &Harness, i: usize, patient: &str, case: &str) -> (MessageKey, Vec<u8>) {
    let mut e: Value = serde_json::from_slice(&h.fixture("events/text-canonical.json")).unwrap();
    let id = format!("{}-c{i}", e["message_id"].as_str().unwrap());
    e["message_id"] = Value::String(id.clone());
    e["event_id"] = Value::String(format!("{}-c{i}", e["event_id"].as_str().unwrap()));
    e["case"] = json!({
        "patient": {"identifier": {"system": PATIENT_SYSTEM, "value": patient}},
        "encounter": {"identifier": {"system": CASE_SYSTEM, "value": case}},
    });
    let key = MessageKey {
        source: "matrix".into(),
        message_id: id,
    };
    (key, serde_json::to_vec(&e).unwrap())
}

async fn subject(h: &Harness, key: &MessageKey) -> String {
    let got = h.wait_state(key, MessageState::Archived).await;
    let c = h.kis.read(got.resource.as_deref().unwrap()).await.unwrap();
    c["subject"]["reference"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_are_cached_and_an_adt_merge_invalidates_them() {
    let proxy = FaultProxy::start(&common::fhir_url()).await;
    let mut h = Harness::new(Some(&proxy.url), None).await;
    let adt = enable_adt_and_cache(&mut h).await;
    let (prior_id, survivor_id) = (format!("P-{}", h.run), format!("PS-{}", h.run));
    let prior = create_patient(&[&prior_id]).await;
    let case = format!("F-{}", h.run);
    let encounter = |subject: &str| {
        json!({"resourceType": "Encounter", "status": "in-progress",
               "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
               "identifier": [{"system": CASE_SYSTEM, "value": case}],
               "subject": {"reference": subject}})
    };
    let encounter_ref = h
        .kis
        .create_if_none_exist(
            &encounter(&prior),
            &[(
                "identifier",
                chartbridge::push::url::SearchValue::Token {
                    system: CASE_SYSTEM,
                    code: &case,
                },
            )],
        )
        .await
        .unwrap();
    let worker = h.start_worker();

    // Three messages of one case: one Patient and one Encounter search.
    for i in 0..3 {
        let (key, payload) = event(&h, i, &prior_id, &case);
        h.publish(&payload).await;
        assert_eq!(subject(&h, &key).await, prior);
    }
    assert_eq!(
        (proxy.searches("Patient"), proxy.searches("Encounter")),
        (1, 1),
        "three messages, one search each"
    );

    // The KIS merges: the prior identifier now belongs to the survivor.
    let survivor = create_patient(&[&survivor_id]).await;
    put(&prior, json!({"resourceType": "Patient", "active": false})).await;
    put(
        &survivor,
        json!({"resourceType": "Patient", "identifier": [
            {"system": PATIENT_SYSTEM, "value": survivor_id},
            {"system": PATIENT_SYSTEM, "value": prior_id}]}),
    )
    .await;
    put(&encounter_ref, encounter(&survivor)).await;
    // Without an ADT message the cached match is still used.
    let (key, payload) = event(&h, 3, &prior_id, &case);
    h.publish(&payload).await;
    assert_eq!(subject(&h, &key).await, prior, "cached until invalidated");
    assert_eq!(proxy.searches("Patient"), 1);

    // The A40 names both identifiers: the next message searches again.
    let a40 = std::fs::read_to_string(common::repo().join("fixtures/hl7/adt-a40.hl7"))
        .unwrap()
        .replace("P-1001", &survivor_id)
        .replace("P-1002", &prior_id)
        .replace("MSG-A40-0001", &format!("MSG-{}", h.run));
    let ack = send_adt(&h, &adt, &a40).await;
    assert!(ack.contains("MSA|AA|"), "{ack}");
    // (The feed searched both identifiers itself, once per attempt.)
    let before = proxy.searches("Patient");
    let (key, payload) = event(&h, 4, &prior_id, &case);
    h.publish(&payload).await;
    assert_eq!(subject(&h, &key).await, survivor, "the merge is seen");
    assert_eq!(proxy.searches("Patient"), before + 1, "searched again once");
    // The Encounter is cached per patient: for the survivor it is searched
    // once more, and its subject checked (it is the survivor's now).
    assert_eq!(
        proxy.searches("Encounter"),
        2,
        "the encounter searched again for the survivor"
    );
    let c = h
        .kis
        .read(&h.state(&key).await.unwrap().resource.unwrap())
        .await
        .unwrap();
    assert_eq!(c["encounter"]["reference"], encounter_ref.as_str());
    worker.stop().await;
    let ch = h.broker.consumer_channel(1).await.unwrap();
    for q in [&adt.0, &adt.1, &h.config.adt.ack_queue] {
        let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
    }
}
