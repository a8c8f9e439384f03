//! WhatsApp Business: deletion of archived media at the Graph API (a local
//! stand-in speaking its documented shapes, including its error answers),
//! verification of forwarded `X-Hub-Signature-256` headers, and
//! deduplication on the wamid.

mod common;

use std::time::Duration;

use chartbridge::delete::adapter::{ExecError, Executed, Executor};
use chartbridge::delete::whatsapp::WhatsAppDeleter;
use chartbridge::delete::{DeletionCommand, DeletionReason};
use chartbridge::event::MessageKey;
use chartbridge::event::signature::{SIGNATURE_HEADER, sign};
use chartbridge::resolve::conversation_token;
use chartbridge::store::{DeletionState, Link, MessageState};
use common::standins::{GraphFault, MediaApi, Medium};
use common::{Harness, wait_until};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};

const MEDIA_ID: &str = "1376223850470843";
const TEXT: &str = "wamid.HBgLNDkxNTExMjM0NTY3OBUCABIYFDNBMDA1";
const IMAGE: &str = "wamid.HBgLNDkxNTExMjM0NTY3OBUCABIYFDNBMDA2";

fn png() -> Vec<u8> {
    std::fs::read(common::repo().join("fixtures/media/wound.png")).unwrap()
}

async fn media_api() -> MediaApi {
    let media = MediaApi::start().await;
    media.put(
        MEDIA_ID,
        Medium {
            bytes: png(),
            mime_type: "image/png".into(),
        },
    );
    media
}

/// Links the fixtures' WhatsApp conversation to the seeded patient.
async fn link_fixture_conversation(h: &Harness) {
    let (patient, _) = h.seed_patient("P-1001").await;
    h.store
        .set_link(
            &conversation_token(&h.sealer, "whatsapp", "106540352242922:4915112345678"),
            &Link {
                patient,
                encounter: None,
            },
            0,
        )
        .await
        .unwrap();
}

/// A harness whose worker runs the WhatsApp deletion adapter, with the
/// fixture's conversation linked to a patient.
async fn harness(media: &MediaApi, extra: &str) -> Harness {
    let mut h = Harness::new(None, Some(&media.url)).await;
    h.add_config(&format!(
        "[deletion]\nbackoff_initial = \"20ms\"\nbackoff_max = \"200ms\"\n\
         [deletion.whatsapp]\nadapter = \"whatsapp\"\n{extra}"
    ));
    link_fixture_conversation(&h).await;
    h
}

fn deletion_id(key: &MessageKey) -> String {
    chartbridge::map::stable_id(key, "deletion").to_string()
}

async fn wait_deletion(h: &Harness, key: &MessageKey, want: DeletionState) {
    wait_until(
        Duration::from_secs(60),
        &format!("deletion {want:?}"),
        || async { h.store.deletion_state(key).await.unwrap() == Some(want) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iv8_whatsapp_media_deleted_after_archive_with_retries() {
    let media = media_api().await;
    // Two transient answers first: 503, then Graph's rate limit.
    media.fail_deletes([GraphFault::Unavailable, GraphFault::Throttled]);
    let h = harness(&media, "").await;
    let worker = h.start_worker();
    h.publish(&h.fixture("events/whatsapp-text-image.json"))
        .await;
    let text = h.key("whatsapp", TEXT);
    let image = h.key("whatsapp", IMAGE);
    h.wait_state(&image, MessageState::Archived).await;
    h.wait_state(&text, MessageState::Archived).await;
    wait_deletion(&h, &image, DeletionState::Confirmed).await;
    wait_deletion(&h, &text, DeletionState::Confirmed).await;
    worker.stop().await;

    assert!(
        !media.holds(MEDIA_ID),
        "the medium is deleted at the Graph API"
    );
    assert_eq!(*media.deletes.lock().unwrap(), vec![MEDIA_ID; 3]);
    // The KIS held the document before the deletion was asked for.
    assert_eq!(h.kis_ids("DocumentReference", &image).await.len(), 1);
    let receipts = h
        .store
        .deletion_receipts(&deletion_id(&image))
        .await
        .unwrap();
    let statuses: Vec<(&str, Option<&str>)> = receipts
        .iter()
        .map(|r| (r.1.as_str(), r.2.as_deref()))
        .collect();
    assert_eq!(
        statuses,
        [("retrying", Some("graph_http_503")), ("deleted", None)]
    );
    // Text has nothing at the Graph API: confirmed without a request.
    let receipts = h
        .store
        .deletion_receipts(&deletion_id(&text))
        .await
        .unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].1, "deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iv8_whatsapp_permanent_failure_is_recorded_with_reason() {
    let media = media_api().await;
    media.fail_deletes([GraphFault::InvalidToken]);
    let h = harness(&media, "").await;
    let worker = h.start_worker();
    h.publish(&h.fixture("events/whatsapp-text-image.json"))
        .await;
    let image = h.key("whatsapp", IMAGE);
    wait_deletion(&h, &image, DeletionState::Failed).await;
    worker.stop().await;
    assert!(media.holds(MEDIA_ID), "nothing deleted");
    assert_eq!(
        h.store.failed_deletions().await.unwrap(),
        vec![("whatsapp".to_owned(), "graph_error_190".to_owned(), 1)]
    );
    let receipts = h
        .store
        .deletion_receipts(&deletion_id(&image))
        .await
        .unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(
        (receipts[0].1.as_str(), receipts[0].2.as_deref()),
        ("failed", Some("graph_error_190"))
    );
}

fn command(media_reference: Option<&str>) -> DeletionCommand {
    DeletionCommand {
        schema: chartbridge::delete::COMMAND_SCHEMA.into(),
        deletion_id: "d-1".into(),
        source: "whatsapp".into(),
        message_id: "wamid.x".into(),
        conversation: "c".into(),
        media_reference: media_reference.map(str::to_owned),
        reason: DeletionReason::Archived,
        archive: None,
    }
}

#[tokio::test]
async fn iv8_whatsapp_graph_answers_are_classified() {
    let media = media_api().await;
    let config = chartbridge::config::MediaConfig {
        api_base_url: Some(media.url.clone()),
        access_token: Some(chartbridge::config::Secret::new("test-token")),
        ..Default::default()
    };
    let deleter = WhatsAppDeleter::new(&config).unwrap().unwrap();
    let cmd = command(Some(MEDIA_ID));
    media.fail_deletes([
        GraphFault::Unavailable,
        GraphFault::Throttled,
        GraphFault::InvalidToken,
    ]);
    let e = deleter.execute(&cmd).await.unwrap_err();
    assert!(e.transient && e.reason == "graph_http_503", "{e}");
    let e = deleter.execute(&cmd).await.unwrap_err();
    assert!(e.transient && e.reason == "graph_error_80007", "{e}");
    assert_eq!(
        deleter.execute(&cmd).await.unwrap_err(),
        ExecError::permanent("graph_error_190")
    );
    assert_eq!(deleter.execute(&cmd).await.unwrap(), Executed::Deleted);
    // Again: Graph says the object does not exist (100/33) — already gone.
    assert_eq!(deleter.execute(&cmd).await.unwrap(), Executed::NotFound);
    // No media: nothing to ask the Graph API.
    let before = media.deletes.lock().unwrap().len();
    assert_eq!(
        deleter.execute(&command(None)).await.unwrap(),
        Executed::Deleted
    );
    assert_eq!(media.deletes.lock().unwrap().len(), before);
    // A wrong token is refused by the API itself.
    let wrong = WhatsAppDeleter::new(&chartbridge::config::MediaConfig {
        access_token: Some(chartbridge::config::Secret::new("expired")),
        ..config
    })
    .unwrap()
    .unwrap();
    let e = wrong.execute(&command(Some("other"))).await.unwrap_err();
    assert_eq!(e, ExecError::permanent("graph_error_190"));
}

/// A deletion command published while no other copy of its medium was
/// known, executed after another message with the same media id was held
/// (a medium the business or a contact sent again): the adapter asks
/// `media_uses` again before the Graph `DELETE`, so the medium is kept for
/// the held copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iv8_the_whatsapp_adapter_keeps_a_medium_a_copy_held_since_the_command_uses() {
    let media = media_api().await;
    // No adapter in the worker: the commands wait in their queue.
    let h = Harness::new(None, Some(&media.url)).await;
    link_fixture_conversation(&h).await;
    let worker = h.start_worker();
    h.publish(&h.fixture("events/whatsapp-text-image.json"))
        .await;
    let image = h.key("whatsapp", IMAGE);
    h.wait_state(&image, MessageState::Archived).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut commands = Vec::new();
    let command = loop {
        commands.extend(h.deletion_commands().await);
        if let Some(c) = commands.iter().find(|c| c.media_reference.is_some()) {
            break c.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no deletion command with a medium"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(command.media_reference.as_deref(), Some(MEDIA_ID));

    // The same media id from a contact whose conversation names no patient.
    let mut again: serde_json::Value =
        serde_json::from_slice(&h.fixture("events/whatsapp-text-image.json")).unwrap();
    let value = &mut again["entry"][0]["changes"][0]["value"];
    value["contacts"][0]["wa_id"] = "4917612345678".into();
    let mut message = value["messages"][1].take();
    message["from"] = "4917612345678".into();
    message["id"] = format!("wamid.again-{}", h.run).into();
    value["messages"] = serde_json::json!([message]);
    h.publish(&serde_json::to_vec(&again).unwrap()).await;
    let held = MessageKey {
        source: "whatsapp".into(),
        message_id: format!("wamid.again-{}", h.run),
    };
    h.wait_state(&held, MessageState::Quarantined).await;

    let config = chartbridge::config::MediaConfig {
        api_base_url: Some(media.url.clone()),
        access_token: Some(chartbridge::config::Secret::new("test-token")),
        ..Default::default()
    };
    let adapter = WhatsAppDeleter::new(&config)
        .unwrap()
        .unwrap()
        .with_media_uses(h.store.clone());
    assert_eq!(adapter.execute(&command).await.unwrap(), Executed::Deleted);
    assert!(
        media.holds(MEDIA_ID),
        "the medium of the copy held since the command was published is kept"
    );
    assert!(media.deletes.lock().unwrap().is_empty(), "no Graph DELETE");
    // Without the check the same command deletes it: the test can fail.
    let unchecked = WhatsAppDeleter::new(&config).unwrap().unwrap();
    assert_eq!(
        unchecked.execute(&command).await.unwrap(),
        Executed::Deleted
    );
    assert!(!media.holds(MEDIA_ID));
    worker.stop().await;
}

/// Waits for the next dead letter and returns its reason header.
async fn next_dead_letter_reason(h: &Harness) -> String {
    let dead_queue = h.config.broker.dead_letter_queue.clone();
    let mut dead = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while dead.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        dead.extend(h.drain_queue(&dead_queue).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead.len(), 1, "one dead letter at a time");
    let headers = dead[0].delivery.properties.headers().clone().unwrap();
    match headers.inner().get(chartbridge::consume::REASON_HEADER) {
        Some(AMQPValue::LongString(s)) => String::from_utf8(s.as_bytes().to_vec()).unwrap(),
        other => panic!("no reason header: {other:?}"),
    }
}

async fn publish_signed(h: &Harness, payload: &[u8], signature: &str) {
    let mut headers = FieldTable::default();
    headers.insert(
        SIGNATURE_HEADER.into(),
        AMQPValue::LongString(LongString::from(signature.as_bytes().to_vec())),
    );
    h.broker
        .publish_confirmed(
            "",
            &h.config.broker.events_queue,
            payload,
            BasicProperties::default().with_headers(headers),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ii4_forwarded_webhook_signatures_are_verified_and_wamids_deduplicated() {
    let media = media_api().await;
    let h = harness(&media, "[whatsapp]\napp_secret = \"meta-app-secret\"\n").await;
    let worker = h.start_worker();
    let payload = h.fixture("events/whatsapp-text-image.json");

    // Forged: signed with another secret → dead-lettered with its reason,
    // nothing recorded.
    publish_signed(&h, &payload, &sign(b"not-the-secret", &payload)).await;
    assert_eq!(next_dead_letter_reason(&h).await, "bad_signature");
    let text = h.key("whatsapp", TEXT);
    assert!(h.state(&text).await.is_none());

    // Unsigned while a secret is set: refused, the check fails closed.
    h.publish(&payload).await;
    assert_eq!(next_dead_letter_reason(&h).await, "missing_signature");
    assert!(h.state(&text).await.is_none());

    // Genuine, and the same webhook delivered twice (Meta retries): one
    // archive per wamid, one resource, one deletion.
    let good = sign(b"meta-app-secret", &payload);
    publish_signed(&h, &payload, &good).await;
    publish_signed(&h, &payload, &good).await;
    h.wait_state(&text, MessageState::Archived).await;
    let image = h.key("whatsapp", IMAGE);
    h.wait_state(&image, MessageState::Archived).await;
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
    wait_deletion(&h, &image, DeletionState::Confirmed).await;
    worker.stop().await;
    assert_eq!(h.kis_ids("Communication", &text).await.len(), 1);
    assert_eq!(h.kis_ids("DocumentReference", &image).await.len(), 1);
    assert_eq!(h.store.log_size().await.unwrap(), 2);
    assert_eq!(
        h.deletion_commands().await.len(),
        2,
        "one command per wamid"
    );
    assert_eq!(*media.deletes.lock().unwrap(), vec![MEDIA_ID]);
}
