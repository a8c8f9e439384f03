//! DocumentReference-only output (DSK I.6) end to end: real RabbitMQ, the
//! real FHIR server (validation on), SQLite. Text messages of a
//! conversation are held in their transcript window; the closer archives
//! the window as one Binary + DocumentReference, and only then are the
//! messages archived and their deletions issued.

mod common;

use base64::Engine;
use chartbridge::classify::Rules;
use chartbridge::event::MessageKey;
use chartbridge::pipeline::Pipeline;
use chartbridge::push::OutputMode;
use chartbridge::store::MessageState;
use chrono::Utc;
use common::{Harness, wait_until};
use serde_json::{Value, json};
use sha2::Digest;
use std::time::Duration;

const SHA256_EXTENSION: &str = chartbridge::map::SHA256_EXTENSION;

/// Text message `n` of this run's conversation, sent on 2026-11-28 (a day
/// that has ended, so its window is due for the closer).
fn text(h: &Harness, n: u32, body: &str) -> (Vec<u8>, MessageKey) {
    let mut v: Value = serde_json::from_slice(
        &std::fs::read(common::repo().join("fixtures/events/text-canonical.json")).unwrap(),
    )
    .unwrap();
    let id = format!("$tx-{n}");
    v["message_id"] = json!(id);
    v["event_id"] = json!(format!("evt-tx-{n}"));
    v["conversation"]["id"] = json!(format!("!transcript-{}:hospital.invalid", h.run));
    v["sent_at"] = json!(format!("2026-11-28T09:{:02}:00Z", 10 + n));
    v["text"] = json!(body);
    if n == 2 {
        v["sender"] = json!({"id": "@patient-4711:hospital.invalid", "role": "patient"});
    }
    h.uniquify(&mut v);
    (serde_json::to_vec(&v).unwrap(), h.key("matrix", &id))
}

/// Waits until `n` messages are held in transcript windows, stops the
/// worker, and returns a pipeline over the harness's store (the test runs
/// its closer) with the transcript document type.
async fn held_then_closer(
    h: &Harness,
    n: i64,
    worker: common::Worker,
) -> (Pipeline, chartbridge::classify::DocumentType) {
    wait_until(Duration::from_secs(30), "messages held", || async {
        h.store.held_transcript_messages().await.unwrap() == n
    })
    .await;
    worker.stop().await;
    let rules = Rules::load(&h.config.mappings.rules_file).unwrap();
    let pipeline = Pipeline::new(&h.config, h.store.clone(), h.sealer.clone(), rules).unwrap();
    let doc_type = pipeline.transcript_document_type().clone();
    (pipeline, doc_type)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_document_reference_only_archives_one_transcript_then_deletes() {
    let mut h = Harness::new(None, None).await;
    h.config.kis.output = OutputMode::DocumentReferenceOnly;
    // The worker's own closer never fires during the test; it is run below.
    h.config.schedule.transcript_close = "0 0 0 1 1 *".parse().unwrap();
    let (patient, encounter) = h.seed_patient("P-1001").await;
    let worker = h.start_worker();
    let bodies = [
        "Wundkontrolle heute: Rötung rückläufig.",
        "Danke, Schmerzen deutlich besser.",
        "Verbandwechsel morgen 10 Uhr.",
    ];
    let msgs: Vec<_> = (1..=3u32)
        .map(|n| text(&h, n, bodies[n as usize - 1]))
        .collect();
    // Published out of order: the transcript follows the send time.
    for i in [2, 0, 1] {
        h.publish(&msgs[i].0).await;
    }
    wait_until(Duration::from_secs(30), "three messages held", || async {
        h.store.held_transcript_messages().await.unwrap() == 3
    })
    .await;
    worker.stop().await;
    for (_, key) in &msgs {
        assert_eq!(h.state(key).await, None, "{key} waits for its transcript");
        assert!(h.kis_ids("Communication", key).await.is_empty());
    }
    assert!(
        h.deletion_commands().await.is_empty(),
        "no deletion before the transcript"
    );

    let rules = Rules::load(&h.config.mappings.rules_file).unwrap();
    let pipeline = Pipeline::new(&h.config, h.store.clone(), h.sealer.clone(), rules).unwrap();
    let doc_type = pipeline.transcript_document_type().clone();
    let summary = pipeline
        .close_due_transcripts(&doc_type, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        (summary.archived, summary.messages, summary.deferred),
        (1, 3, 0)
    );

    let mut resource = None;
    for (_, key) in &msgs {
        let m = h.wait_state(key, MessageState::Archived).await;
        let r = m.resource.clone().unwrap();
        assert!(r.starts_with("DocumentReference/"), "{r}");
        assert_eq!(
            *resource.get_or_insert(r.clone()),
            r,
            "one transcript for all three"
        );
    }
    let resource = resource.unwrap();
    let doc = h.kis.read(&resource).await.unwrap();
    assert_eq!(doc["subject"]["reference"], patient);
    assert_eq!(doc["context"]["encounter"][0]["reference"], encounter);
    assert_eq!(doc["type"]["coding"][0]["code"], "ED190199");
    let attachment = &doc["content"][0]["attachment"];
    assert!(
        attachment["contentType"]
            .as_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let binary = h
        .kis
        .read(attachment["url"].as_str().unwrap())
        .await
        .unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(binary["data"].as_str().unwrap())
        .unwrap();
    let transcript = String::from_utf8(bytes.clone()).unwrap();
    let lines: Vec<&str> = transcript.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            format!("2026-11-28T09:11:00Z [clinician] {}", bodies[0]),
            format!("2026-11-28T09:12:00Z [patient] {}", bodies[1]),
            format!("2026-11-28T09:13:00Z [clinician] {}", bodies[2]),
        ]
    );
    assert!(!transcript.contains("@dr.mueller") && !transcript.contains("@patient-4711"));
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let ext = attachment["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == SHA256_EXTENSION)
        .expect("content-sha256 extension");
    assert_eq!(ext["valueString"], sha);
    // One leaf, for the transcript.
    assert_eq!(h.store.log_size().await.unwrap(), 1);

    // The relay of a running worker publishes the deletion commands.
    let worker = h.start_worker();
    let deletions = h.expect_deletions(3).await;
    let mut deleted: Vec<String> = deletions.iter().map(|d| d.message_id.clone()).collect();
    deleted.sort();
    let mut want: Vec<String> = msgs.iter().map(|(_, k)| k.message_id.clone()).collect();
    want.sort();
    assert_eq!(deleted, want);
    for d in &deletions {
        let a = d.archive.as_ref().unwrap();
        assert_eq!(
            (a.resource.as_str(), a.content_sha256.as_str()),
            (resource.as_str(), sha.as_str())
        );
    }

    // The closer again, and a redelivery: nothing new anywhere.
    let again = pipeline
        .close_due_transcripts(&doc_type, Utc::now())
        .await
        .unwrap();
    assert_eq!(again.archived, 0);
    h.publish(&msgs[0].0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    worker.stop().await;
    assert_eq!(h.store.held_transcript_messages().await.unwrap(), 0);
    let identifier = doc["identifier"][0]["value"].as_str().unwrap();
    assert!(identifier.starts_with("matrix:transcript-"), "{identifier}");
    let found = h
        .kis
        .search(
            "DocumentReference",
            &[(
                "identifier",
                chartbridge::push::url::SearchValue::Token {
                    system: &h.config.kis.identifier_system,
                    code: identifier,
                },
            )],
        )
        .await
        .unwrap();
    let ours = found["entry"].as_array().map_or(0, Vec::len);
    assert_eq!(ours, 1);
    assert_eq!(h.store.log_size().await.unwrap(), 1);
    assert!(h.deletion_commands().await.is_empty(), "no second deletion");
}

/// The KIS identifier value of the transcript a held message belongs to.
fn transcript_identifier(
    h: &Harness,
    payload: &[u8],
    patient: &str,
    encounter: Option<&str>,
) -> String {
    let m = chartbridge::event::decode(payload, usize::MAX)
        .unwrap()
        .messages
        .remove(0);
    let (start, _) = chartbridge::transcript::window_of(m.sent_at, 86_400_000);
    let token = chartbridge::transcript::window_token(&h.sealer, &m, patient, encounter, start);
    chartbridge::transcript::transcript_key("matrix", &token).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_transcript_read_back_mismatch_keeps_messages_held_and_a_retry_does_not_duplicate() {
    let proxy = common::standins::FaultProxy::start(&common::fhir_url()).await;
    let mut h = Harness::new(Some(&proxy.url), None).await;
    h.config.kis.output = OutputMode::DocumentReferenceOnly;
    h.config.schedule.transcript_close = "0 0 0 1 1 *".parse().unwrap();
    let (patient, encounter) = h.seed_patient("P-1001").await;
    let worker = h.start_worker();
    let msgs: Vec<_> = (1..=2u32)
        .map(|n| text(&h, n, &format!("Nachricht {n}")))
        .collect();
    for (payload, _) in &msgs {
        h.publish(payload).await;
    }
    let (pipeline, doc_type) = held_then_closer(&h, 2, worker).await;
    // The KIS stores the transcript but returns altered content in its
    // transaction-response (the read-back's source).
    proxy.tamper_answers(1);
    let first = pipeline
        .close_due_transcripts(&doc_type, Utc::now())
        .await
        .unwrap();
    assert_eq!((first.archived, first.deferred), (0, 1));
    assert_eq!(
        proxy.tamper_answers_pending(),
        0,
        "the returned Binary was checked"
    );
    for (_, key) in &msgs {
        assert_eq!(h.state(key).await, None, "{key} stays held");
        assert_eq!(
            h.store.deletion_state(key).await.unwrap(),
            None,
            "no deletion"
        );
    }
    assert_eq!(h.store.held_transcript_messages().await.unwrap(), 2);
    assert_eq!(h.store.log_size().await.unwrap(), 0);

    // The next run closes it: the same document, not a second one.
    let second = pipeline
        .close_due_transcripts(&doc_type, Utc::now())
        .await
        .unwrap();
    assert_eq!((second.archived, second.messages), (1, 2));
    let identifier = transcript_identifier(&h, &msgs[0].0, &patient, Some(&encounter));
    let found = h
        .kis
        .search(
            "DocumentReference",
            &[(
                "identifier",
                chartbridge::push::url::SearchValue::Token {
                    system: &h.config.kis.identifier_system,
                    code: &identifier,
                },
            )],
        )
        .await
        .unwrap();
    assert_eq!(found["entry"].as_array().map_or(0, Vec::len), 1);
    for (_, key) in &msgs {
        assert_eq!(h.state(key).await.unwrap().state, MessageState::Archived);
        assert_eq!(
            h.store.deletion_state(key).await.unwrap(),
            Some(chartbridge::store::DeletionState::Pending)
        );
    }
    assert_eq!(h.store.log_size().await.unwrap(), 1);
}

/// Two encounters of one patient within one window (a discharge and a
/// readmission the same day): each text goes to a transcript of its own
/// encounter, never all under the first one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_a_window_with_two_encounters_gives_a_transcript_per_encounter() {
    let mut h = Harness::new(None, None).await;
    h.config.kis.output = OutputMode::DocumentReferenceOnly;
    h.config.schedule.transcript_close = "0 0 0 1 1 *".parse().unwrap();
    let (patient, first) = h.seed_patient("P-1001").await;
    let readmission = format!("F-R-{}", h.run);
    let second = h
        .kis
        .create_if_none_exist(
            &json!({"resourceType": "Encounter", "status": "in-progress",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                    "identifier": [{"system": common::CASE_SYSTEM, "value": readmission}],
                    "subject": {"reference": patient}}),
            &[(
                "identifier",
                chartbridge::push::url::SearchValue::Token {
                    system: common::CASE_SYSTEM,
                    code: &readmission,
                },
            )],
        )
        .await
        .unwrap();
    let worker = h.start_worker();
    let before = text(&h, 1, "Entlassung heute.");
    let (payload, after_key) = text(&h, 2, "Wieder aufgenommen, Schmerzen.");
    let mut v: Value = serde_json::from_slice(&payload).unwrap();
    v["case"]["encounter"]["identifier"]["value"] = json!(readmission);
    let after = (serde_json::to_vec(&v).unwrap(), after_key);
    for (p, _) in [&before, &after] {
        h.publish(p).await;
    }
    let (pipeline, doc_type) = held_then_closer(&h, 2, worker).await;
    let summary = pipeline
        .close_due_transcripts(&doc_type, Utc::now())
        .await
        .unwrap();
    assert_eq!((summary.archived, summary.messages), (2, 2));
    for ((_, key), encounter) in [(&before, &first), (&after, &second)] {
        let m = h.wait_state(key, MessageState::Archived).await;
        let doc = h.kis.read(&m.resource.unwrap()).await.unwrap();
        assert_eq!(doc["subject"]["reference"], patient);
        assert_eq!(
            doc["context"]["encounter"][0]["reference"], *encounter,
            "{key}"
        );
    }
}
