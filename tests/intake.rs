//! Fail closed, per source (docs/security.md), against the real RabbitMQ,
//! FHIR server and store: with `[intake]` required, an unsigned canonical
//! event and a forged `deleted` receipt are dead-lettered with their reason
//! and change nothing; the gateway's keys (two at once, as in a rotation)
//! are accepted; ADT ACKs go only to configured queues.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use chartbridge::auth::{SIGNATURE_HEADER, signature_header};
use chartbridge::delete::{DeletionReceipt, ReceiptStatus};
use chartbridge::store::{DeletionState, MessageState};
use common::{Harness, wait_until};
use lapin::BasicProperties;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};

const OLD_KEY: [u8; 32] = [0x11; 32];
const NEW_KEY: [u8; 32] = [0x22; 32];

fn key_file(h: &Harness, name: &str, key: &[u8]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = h.dir.path().join(name);
    std::fs::write(&path, base64::engine::general_purpose::STANDARD.encode(key)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The harness with every source's intake policy required and the Matrix
/// gateway's two keys of a rotation.
async fn required() -> Harness {
    let mut h = Harness::new(None, None).await;
    let (old, new) = (
        key_file(&h, "gw-matrix-1.key", &OLD_KEY),
        key_file(&h, "gw-matrix-2.key", &NEW_KEY),
    );
    let text = std::fs::read_to_string(&h.config_path).unwrap().replace(
        "default_auth = \"none\"",
        &format!(
            "default_auth = \"required\"\n\
                 [intake.keys.gw-matrix-1]\nfile = \"{}\"\nsources = [\"matrix\"]\n\
                 [intake.keys.gw-matrix-2]\nfile = \"{}\"\nsources = [\"matrix\"]\n",
            old.display(),
            new.display()
        ),
    );
    std::fs::write(&h.config_path, &text).unwrap();
    h.config =
        chartbridge::config::Config::from_parts(&h.config_path, &text, std::iter::empty()).unwrap();
    h
}

async fn publish(h: &Harness, queue: &str, payload: &[u8], signature: Option<String>) {
    let mut headers = FieldTable::default();
    if let Some(sig) = signature {
        headers.insert(
            SIGNATURE_HEADER.into(),
            AMQPValue::LongString(LongString::from(sig.into_bytes())),
        );
    }
    h.broker
        .publish_confirmed(
            "",
            queue,
            payload,
            BasicProperties::default().with_headers(headers),
        )
        .await
        .unwrap();
}

/// Waits for the next dead letter; returns its reason header.
async fn next_dead_letter_reason(h: &Harness) -> String {
    let queue = h.config.broker.dead_letter_queue.clone();
    let dead = drain_until_some(h, &queue).await;
    assert_eq!(dead.len(), 1, "one dead letter at a time");
    let headers = dead[0].delivery.properties.headers().clone().unwrap();
    match headers.inner().get(chartbridge::consume::REASON_HEADER) {
        Some(AMQPValue::LongString(s)) => String::from_utf8(s.as_bytes().to_vec()).unwrap(),
        other => panic!("no reason header: {other:?}"),
    }
}

/// Takes what `queue` holds once it holds something (30 s at most).
async fn drain_until_some(h: &Harness, queue: &str) -> Vec<lapin::message::BasicGetMessage> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = h.drain_queue(queue).await;
        if !got.is_empty() {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing arrived in {queue}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gzip body (AMQP `content-encoding: gzip`) is dead-lettered as
/// `unsupported_encoding`, not as invalid UTF-8; the same body unencoded
/// is archived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_body_is_refused_for_its_encoding() {
    let h = Harness::new(None, None).await;
    h.seed_patient("P-1001").await;
    let worker = h.start_worker();
    let events = h.config.broker.events_queue.clone();
    let event = h.fixture("events/text-canonical.json");
    let mut gzip = vec![0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff];
    gzip.extend_from_slice(&event);
    h.broker
        .publish_confirmed(
            "",
            &events,
            &gzip,
            BasicProperties::default()
                .with_content_type("application/json; charset=utf-8".into())
                .with_content_encoding("gzip".into()),
        )
        .await
        .unwrap();
    assert_eq!(next_dead_letter_reason(&h).await, "unsupported_encoding");
    h.broker
        .publish_confirmed(
            "",
            &events,
            &event,
            BasicProperties::default().with_content_encoding("identity".into()),
        )
        .await
        .unwrap();
    h.wait_state(&h.key("matrix", "$msg-0001"), MessageState::Archived)
        .await;
    worker.stop().await;
}

fn receipt(deletion_id: &str) -> Vec<u8> {
    serde_json::to_vec(&DeletionReceipt::new(
        deletion_id,
        ReceiptStatus::Deleted,
        None,
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_deleted_receipt_does_not_confirm_a_deletion() {
    let h = required().await;
    h.seed_patient("P-1001").await;
    let worker = h.start_worker();
    let events = h.config.broker.events_queue.clone();
    let receipts = h.config.broker.receipts_queue.clone();
    let event = h.fixture("events/text-canonical.json");
    let key = h.key("matrix", "$msg-0001");

    // Unsigned: refused before decoding, nothing recorded.
    publish(&h, &events, &event, None).await;
    assert_eq!(next_dead_letter_reason(&h).await, "missing_signature");
    assert!(h.state(&key).await.is_none());

    // Signed by the gateway's older key: archived, deletion requested.
    publish(
        &h,
        &events,
        &event,
        Some(signature_header("gw-matrix-1", &OLD_KEY, &event)),
    )
    .await;
    h.wait_state(&key, MessageState::Archived).await;
    let command = h.expect_deletions(1).await.remove(0);
    wait_until(Duration::from_secs(30), "deletion requested", || async {
        h.store.deletion_state(&key).await.unwrap() == Some(DeletionState::Requested)
    })
    .await;

    // A forged `deleted` receipt without a signature, and one signed with
    // a key the worker does not hold: dead-lettered, the deletion stays
    // open and no receipt is recorded.
    let forged = receipt(&command.deletion_id);
    publish(&h, &receipts, &forged, None).await;
    assert_eq!(next_dead_letter_reason(&h).await, "missing_signature");
    let guessed = signature_header("gw-matrix-1", &[0x33; 32], &forged);
    publish(&h, &receipts, &forged, Some(guessed)).await;
    assert_eq!(next_dead_letter_reason(&h).await, "bad_signature");
    assert_eq!(
        h.store.deletion_state(&key).await.unwrap(),
        Some(DeletionState::Requested)
    );
    assert!(
        h.store
            .deletion_receipts(&command.deletion_id)
            .await
            .unwrap()
            .is_empty()
    );

    // The genuine receipt, signed with the rotation's new key, confirms.
    let genuine = receipt(&command.deletion_id);
    publish(
        &h,
        &receipts,
        &genuine,
        Some(signature_header("gw-matrix-2", &NEW_KEY, &genuine)),
    )
    .await;
    wait_until(Duration::from_secs(30), "deletion confirmed", || async {
        h.store.deletion_state(&key).await.unwrap() == Some(DeletionState::Confirmed)
    })
    .await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adt_acks_go_only_to_configured_queues() {
    let mut h = Harness::new(None, None).await;
    let queue = format!("t.{}.adt", h.run);
    let acks = format!("t.{}.adt.acks", h.run);
    let elsewhere = format!("t.{}.adt.elsewhere", h.run);
    h.add_config(&format!(
        "[adt]\nenabled = true\nqueue = \"{queue}\"\nack_queue = \"{acks}\"\n\
         [adt.patient_authorities]\nKIS = \"{}\"\n[adt.case_authorities]\nKIS = \"{}\"\n",
        common::PATIENT_SYSTEM,
        common::CASE_SYSTEM
    ));
    chartbridge::hl7::feed::declare(&h.broker, &h.config.adt)
        .await
        .unwrap();
    let ch = h.broker.consumer_channel(1).await.unwrap();
    ch.queue_declare(
        elsewhere.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let worker = h.start_worker();
    let a01 = std::fs::read_to_string(common::repo().join("fixtures/hl7/adt-a01.hl7"))
        .unwrap()
        .replace("P-1001", &format!("P-{}", h.run))
        .replace("MSG-A01-0001", &format!("MSG-{}", h.run));
    h.broker
        .publish_confirmed(
            "",
            &queue,
            a01.as_bytes(),
            BasicProperties::default().with_reply_to(elsewhere.as_str().into()),
        )
        .await
        .unwrap();
    let answered = drain_until_some(&h, &acks).await;
    let ack = String::from_utf8(answered[0].delivery.data.clone()).unwrap();
    assert!(ack.contains(&format!("MSA|AA|MSG-{}", h.run)), "{ack}");
    assert!(
        h.drain_queue(&elsewhere).await.is_empty(),
        "an ACK went to the producer's reply_to"
    );
    worker.stop().await;
    for q in [queue, acks, elsewhere] {
        let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
    }
}
