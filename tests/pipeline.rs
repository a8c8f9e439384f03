//! End to end: real RabbitMQ, the real FHIR server (validation on), SQLite.
//! Test names start with the DSK requirement they show.

mod common;

use std::time::Duration;

use base64::Engine;
use chartbridge::consume::REASON_HEADER;
use chartbridge::delete::DeletionReason;
use chartbridge::store::sealed;
use chartbridge::store::{DeletionState, MessageState};
use common::standins::{Fault, FaultProxy, MediaApi, Medium};
use common::{Harness, fhir_url, wait_until};
use sha2::Digest;

fn png() -> Vec<u8> {
    std::fs::read(common::repo().join("fixtures/media/wound.png")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_fixtures_land_in_kis_then_deletions_follow() {
    let media = MediaApi::start().await;
    media.put(
        "1376223850470843",
        Medium {
            bytes: png(),
            mime_type: "image/png".into(),
        },
    );
    let mut h = Harness::new(None, Some(&media.url)).await;
    // The team-chat fixture is an unlinked conversation decided by no named
    // rule: under the default `resolve.unresolved = "hold"` it would be held
    // for review; this test covers the weaker policy's not-relevant path.
    h.config.resolve.unresolved = chartbridge::config::Unresolved::NotRelevant;
    let (patient, encounter) = h.seed_patient("P-1001").await;
    chartbridge::store::Store::set_link(
        &h.store,
        &chartbridge::resolve::conversation_token(
            &h.sealer,
            "whatsapp",
            "106540352242922:4915112345678",
        ),
        &chartbridge::store::Link {
            patient: patient.clone(),
            encounter: None,
        },
        0,
    )
    .await
    .unwrap();
    let worker = h.start_worker();
    for f in [
        "events/text-canonical.json",
        "events/image-canonical.json",
        "events/team-chat.json",
        "events/whatsapp-text-image.json",
    ] {
        h.publish(&h.fixture(f)).await;
    }

    let text = h.key("matrix", "$msg-0001");
    let image = h.key("matrix", "$msg-0002");
    let team = h.key("matrix", "$msg-0003");
    let wa_text = h.key("whatsapp", "wamid.HBgLNDkxNTExMjM0NTY3OBUCABIYFDNBMDA1");
    let wa_image = h.key("whatsapp", "wamid.HBgLNDkxNTExMjM0NTY3OBUCABIYFDNBMDA2");
    for k in [&text, &image, &wa_text, &wa_image] {
        h.wait_state(k, MessageState::Archived).await;
    }
    h.wait_state(&team, MessageState::NotRelevant).await;
    let deletions = h.expect_deletions(4).await;
    assert!(
        deletions
            .iter()
            .all(|d| d.reason == DeletionReason::Archived)
    );

    // Text: a Communication linked to patient and case, content and hash intact.
    let comm_ids = h.kis_ids("Communication", &text).await;
    assert_eq!(comm_ids.len(), 1);
    let comm = h.kis.read(&comm_ids[0]).await.unwrap();
    let sent_text = "Wundkontrolle heute: Rötung rückläufig, Verbandwechsel morgen.";
    assert_eq!(comm["payload"][0]["contentString"], sent_text);
    assert_eq!(comm["subject"]["reference"], patient);
    assert_eq!(comm["encounter"]["reference"], encounter);
    let stored = h.state(&text).await.unwrap();
    assert_eq!(
        stored.content_sha256.unwrap(),
        hex::encode(sha2::Sha256::digest(sent_text.as_bytes()))
    );

    // Images: DocumentReference + Binary; the bytes read back hash as recorded.
    for key in [&image, &wa_image] {
        let ids = h.kis_ids("DocumentReference", key).await;
        assert_eq!(ids.len(), 1, "{key}");
        let doc = h.kis.read(&ids[0]).await.unwrap();
        assert_eq!(doc["subject"]["reference"], patient);
        assert_eq!(
            doc["type"]["coding"][0]["system"],
            "http://dvmd.de/fhir/CodeSystem/kdl"
        );
        let att = &doc["content"][0]["attachment"];
        let binary = h.kis.read(att["url"].as_str().unwrap()).await.unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(binary["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes, png());
        let sha1 = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(&bytes));
        assert_eq!(att["hash"], sha1);
        assert_eq!(
            att["extension"][0]["valueString"],
            hex::encode(sha2::Sha256::digest(&bytes))
        );
        assert_eq!(h.state(key).await.unwrap().resource.unwrap(), ids[0]);
    }

    // The not-relevant message waits for its retention; nothing else is queued.
    assert_eq!(
        h.store.deletion_state(&team).await.unwrap(),
        Some(DeletionState::Scheduled)
    );
    assert_eq!(h.store.log_size().await.unwrap(), 4);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_same_event_twice_gives_one_resource() {
    let h = Harness::new(None, None).await;
    h.seed_patient("P-1001").await;
    let payload = h.fixture("events/text-canonical.json");
    let worker = h.start_worker();
    h.publish(&payload).await;
    h.publish(&payload).await;
    let key = h.key("matrix", "$msg-0001");
    h.wait_state(&key, MessageState::Archived).await;
    h.expect_deletions(1).await;
    // The second delivery is acked as a redelivery, not archived again.
    wait_until(
        Duration::from_secs(30),
        "both deliveries handled",
        || async {
            chartbridge::telemetry::snapshot()
                .iter()
                .any(|(k, _)| k.contains("state=redelivered"))
        },
    )
    .await;
    worker.stop().await;
    assert_eq!(h.kis_ids("Communication", &key).await.len(), 1);
    assert_eq!(h.store.log_size().await.unwrap(), 1);
    assert!(
        h.deletion_commands().await.is_empty(),
        "a second deletion was issued"
    );

    // A second worker with a fresh store (as after losing local state) still
    // finds the existing resource through conditional create.
    let h2 = Harness::new(None, None).await;
    let mut v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    v["conversation"]["id"] = "x".into();
    let worker = h2.start_worker();
    h2.publish(&serde_json::to_vec(&v).unwrap()).await;
    let again = h2.wait_state(&key, MessageState::Archived).await;
    worker.stop().await;
    assert_eq!(h.kis_ids("Communication", &key).await.len(), 1);
    assert_eq!(again.resource, h.state(&key).await.unwrap().resource);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i12_malformed_events_are_dead_lettered_with_reason_sealed() {
    let h = Harness::new(None, None).await;
    let worker = h.start_worker();
    let mut cases = vec![
        (
            std::fs::read(common::repo().join("fixtures/bad/invalid-json.json")).unwrap(),
            "invalid_json",
        ),
        (h.fixture("bad/schema-violation.json"), "schema_violation"),
        (
            std::fs::read(common::repo().join("fixtures/bad/unknown-format.json")).unwrap(),
            "unknown_format",
        ),
        (vec![b'{', 0xC3, 0x28, b'}'], "invalid_utf8"),
    ];
    for (payload, _) in &cases {
        h.publish(payload).await;
    }
    let dead_queue = h.config.broker.dead_letter_queue.clone();
    let mut dead = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while dead.len() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for dead letters"
        );
        dead.extend(h.drain_queue(&dead_queue).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.stop().await;
    let mut reasons: Vec<String> = dead
        .iter()
        .map(|m| {
            let headers = m.delivery.properties.headers().clone().unwrap();
            let v = headers
                .inner()
                .get(REASON_HEADER)
                .expect("reason header")
                .clone();
            match v {
                lapin::types::AMQPValue::LongString(s) => {
                    String::from_utf8_lossy(s.as_bytes()).into_owned()
                }
                other => panic!("{other:?}"),
            }
        })
        .collect();
    reasons.sort();
    cases.sort_by_key(|c| c.1);
    assert_eq!(
        reasons,
        cases.iter().map(|c| c.1.to_owned()).collect::<Vec<_>>()
    );
    // Each payload is in the queue sealed (the reason in clear beside it),
    // and opens, with the keyring, to what was published.
    let mut opened: Vec<Vec<u8>> = dead
        .iter()
        .map(|m| {
            assert!(
                !cases.iter().any(|(p, _)| m.delivery.data == *p),
                "a dead letter in the clear"
            );
            chartbridge::consume::open_dead_letter(
                &h.sealer,
                &m.delivery.properties,
                &m.delivery.data,
            )
            .unwrap()
        })
        .collect();
    let mut published: Vec<Vec<u8>> = cases.iter().map(|(p, _)| p.clone()).collect();
    opened.sort();
    published.sort();
    assert_eq!(opened, published);
    // Originals were acked after the dead-letter publish: the events queue is empty.
    assert!(
        h.drain_queue(&h.config.broker.events_queue)
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_unknown_patient_is_quarantined_and_kept() {
    let h = Harness::new(None, None).await;
    let mut v: serde_json::Value =
        serde_json::from_slice(&h.fixture("events/text-canonical.json")).unwrap();
    v["case"]["patient"]["identifier"]["value"] = format!("P-nobody-{}", h.run).into();
    v.as_object_mut().unwrap()["case"]
        .as_object_mut()
        .unwrap()
        .remove("encounter");
    let worker = h.start_worker();
    h.publish(&serde_json::to_vec(&v).unwrap()).await;
    let key = h.key("matrix", "$msg-0001");
    let got = h.wait_state(&key, MessageState::Quarantined).await;
    assert_eq!(got.reason, "unknown_patient");
    worker.stop().await;
    assert_eq!(h.store.deletion_state(&key).await.unwrap(), None);
    assert!(h.deletion_commands().await.is_empty());
    assert!(h.kis_ids("Communication", &key).await.is_empty());
    let (_, sealed, _) = h.store.quarantine_detail(&key).await.unwrap().unwrap();
    let event = h
        .sealer
        .open(
            &sealed::quarantine_event(&h.store.message_ref(&key).unwrap()),
            &sealed,
        )
        .unwrap();
    assert!(String::from_utf8(event).unwrap().contains("Wundkontrolle"));
    assert!(!String::from_utf8_lossy(&sealed).contains("Wundkontrolle"));
}

/// An event naming its patient by identifier and its encounter by a
/// literal reference: the Encounter is read, and one of another patient
/// (or another type in the encounter's place) is never filed under; the
/// message is held `unknown_encounter`. The patient's own Encounter
/// archives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_literal_encounter_of_another_patient_is_not_filed_under() {
    let h = Harness::new(None, None).await;
    let (_, own) = h.seed_patient("P-1001").await;
    let (other_patient, others) = h.seed_patient(&format!("P-3{}", &h.run[..6])).await;
    let worker = h.start_worker();
    let event = |id: &str, encounter: &str| {
        let mut v: serde_json::Value =
            serde_json::from_slice(&h.fixture("events/text-canonical.json")).unwrap();
        v["message_id"] = format!("$lit-{id}-{}", h.run).into();
        v["event_id"] = format!("evt-lit-{id}-{}", h.run).into();
        v["case"]["encounter"] = serde_json::json!({"reference": encounter});
        serde_json::to_vec(&v).unwrap()
    };
    let key = |id: &str| chartbridge::event::MessageKey {
        source: "matrix".into(),
        message_id: format!("$lit-{id}-{}", h.run),
    };
    h.publish(&event("other", &others)).await;
    h.publish(&event("patient", &other_patient)).await;
    h.publish(&event("own", &own)).await;
    for id in ["other", "patient"] {
        let got = h.wait_state(&key(id), MessageState::Quarantined).await;
        assert_eq!(got.reason, "unknown_encounter", "{id}");
        assert_eq!(h.store.deletion_state(&key(id)).await.unwrap(), None);
    }
    let archived = h.wait_state(&key("own"), MessageState::Archived).await;
    let c = h.kis.read(&archived.resource.unwrap()).await.unwrap();
    assert_eq!(c["encounter"]["reference"], own);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ii2_media_hash_mismatch_is_quarantined() {
    let media = MediaApi::start().await;
    let mut tampered = png();
    *tampered.last_mut().unwrap() ^= 0xff;
    media.put(
        "1376223850470843",
        Medium {
            bytes: tampered,
            mime_type: "image/png".into(),
        },
    );
    let h = Harness::new(None, Some(&media.url)).await;
    let (patient, _) = h.seed_patient("P-1001").await;
    h.store
        .set_link(
            &chartbridge::resolve::conversation_token(
                &h.sealer,
                "whatsapp",
                "106540352242922:4915112345678",
            ),
            &chartbridge::store::Link {
                patient,
                encounter: None,
            },
            0,
        )
        .await
        .unwrap();
    let worker = h.start_worker();
    h.publish(&h.fixture("events/whatsapp-text-image.json"))
        .await;
    let image = h.key("whatsapp", "wamid.HBgLNDkxNTExMjM0NTY3OBUCABIYFDNBMDA2");
    let got = h.wait_state(&image, MessageState::Quarantined).await;
    assert_eq!(got.reason, "media_hash_mismatch");
    let text = h.key("whatsapp", "wamid.HBgLNDkxNTExMjM0NTY3OBUCABIYFDNBMDA1");
    h.wait_state(&text, MessageState::Archived).await;
    let deletions = h.expect_deletions(1).await;
    worker.stop().await;
    assert_eq!(deletions[0].message_id, text.message_id);
    assert!(h.kis_ids("DocumentReference", &image).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_kis_503_then_success_archives_once() {
    let proxy = FaultProxy::start(&fhir_url()).await;
    proxy.inject([Fault::Status(503), Fault::Status(503), Fault::Status(429)]);
    let h = Harness::new(Some(&proxy.url), None).await;
    h.seed_patient("P-1001").await;
    let worker = h.start_worker();
    h.publish(&h.fixture("events/image-canonical.json")).await;
    let key = h.key("matrix", "$msg-0002");
    h.wait_state(&key, MessageState::Archived).await;
    h.expect_deletions(1).await;
    worker.stop().await;
    assert_eq!(*proxy.injected.lock().unwrap(), 3);
    assert_eq!(h.kis_ids("DocumentReference", &key).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_kis_422_quarantines_with_operation_outcome() {
    let proxy = FaultProxy::start(&fhir_url()).await;
    proxy.inject([Fault::Unprocessable]);
    let h = Harness::new(Some(&proxy.url), None).await;
    h.seed_patient("P-1001").await;
    let worker = h.start_worker();
    h.publish(&h.fixture("events/text-canonical.json")).await;
    let key = h.key("matrix", "$msg-0001");
    let got = h.wait_state(&key, MessageState::Quarantined).await;
    worker.stop().await;
    assert_eq!(got.reason, "kis_rejected");
    let (_, _, detail) = h.store.quarantine_detail(&key).await.unwrap().unwrap();
    let outcome: serde_json::Value = serde_json::from_slice(
        &h.sealer
            .open(
                &sealed::quarantine_detail(&h.store.message_ref(&key).unwrap()),
                &detail.unwrap(),
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(h.store.deletion_state(&key).await.unwrap(), None);
    assert!(h.kis_ids("Communication", &key).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_real_validator_rejects_invalid_resources() {
    // The server's own validation (not an injected fault) answers 422.
    let h = Harness::new(None, None).await;
    let bad = serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": "urn:uuid:0b0e3c52-6a55-4d8a-9d1e-2f2f4f7b9a10",
        "resource": {"resourceType": "Communication", "status": "finished-ish", "sent": 12},
        "request": {"method": "POST", "url": "Communication"}}]});
    match h.kis.transaction(&bad).await {
        Err(chartbridge::push::PushError::Rejected { status, outcome }) => {
            assert!((400..500).contains(&status));
            assert_eq!(outcome.unwrap()["resourceType"], "OperationOutcome");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Batched settling (`consume::settle`) against RabbitMQ: the acks of a
/// settled run of deliveries go out together, a requeued delivery comes
/// back, and one its handler never settled is not covered by the `multiple`
/// ack of a later tag: it is still in the queue after the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_acks_settle_what_handlers_settled_and_nothing_else() {
    use chartbridge::consume::consumer::{Spec, consume};
    use chartbridge::shutdown::Shutdown;
    use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
    use std::sync::{Arc, Mutex};

    let h = Harness::new(None, None).await;
    let queue = format!("t.{}.settle", h.run);
    let ch = h.broker.consumer_channel(1).await.unwrap();
    ch.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions::default(),
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
    for n in 0..40 {
        h.broker
            .publish_confirmed("", &queue, n.to_string().as_bytes(), Default::default())
            .await
            .unwrap();
    }
    // Every handler call, in order: (payload, redelivered).
    let seen: Arc<Mutex<Vec<(u32, bool)>>> = Arc::default();
    let (trigger, shutdown) = Shutdown::new();
    let trigger = Arc::new(trigger);
    let spec = Spec {
        queue: &queue,
        tag: "chartbridge-settle-test",
        prefetch: 64,
        concurrency: 16,
        drain: Duration::from_secs(2),
        gate: None,
        batch_acks: true,
    };
    let handler = |delivery: lapin::message::Delivery,
                   settler: chartbridge::consume::settle::Settler| {
        let (seen, trigger) = (seen.clone(), trigger.clone());
        async move {
            let n: u32 = std::str::from_utf8(&delivery.data)
                .unwrap()
                .parse()
                .unwrap();
            let calls = {
                let mut seen = seen.lock().unwrap();
                seen.push((n, delivery.redelivered));
                seen.len()
            };
            match n {
                // Never settled: left to redelivery when the channel closes.
                7 => {}
                // Requeued once, acked when it comes back.
                3 if !delivery.redelivered => settler.requeue(&delivery).await.unwrap(),
                // Late, so the acks after it are sent before it settles,
                // and the prefix then resumes past it.
                1 => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    settler.ack(&delivery).await.unwrap();
                }
                _ => settler.ack(&delivery).await.unwrap(),
            }
            if calls == 41 {
                trigger.fire();
            }
        }
    };
    let end = tokio::time::timeout(
        Duration::from_secs(30),
        consume(&h.broker, spec, shutdown, handler),
    )
    .await
    .expect("all 41 deliveries handled");
    end.into_result().unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 41, "{seen:?}");
    assert!(
        seen.contains(&(3, true)),
        "3 requeued and redelivered: {seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|(_, again)| *again).count(),
        1,
        "{seen:?}"
    );
    // Only 7 is left, ready again; everything else was acked exactly once
    // (an ack of an unknown tag would have closed the channel with an error).
    let left = h.drain_queue(&queue).await;
    let left: Vec<_> = left
        .iter()
        .map(|m| {
            (
                std::str::from_utf8(&m.delivery.data).unwrap().to_owned(),
                m.delivery.redelivered,
            )
        })
        .collect();
    assert_eq!(left, [("7".to_owned(), true)]);
    let _ = ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
}
