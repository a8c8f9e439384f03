//! Review of conversations that resolve to no patient, end to end: real
//! RabbitMQ, the real FHIR server, SQLite, and the real `chartbridge`
//! binary for the reviewer's commands. Held (sealed) first, no deletion;
//! one link releases every held message once; a dismissal is recorded and
//! leaves the deletion to the retention; the weaker policy keeps the old
//! behaviour; conflicting duplicates are visible; a closed output pipe
//! ends a command quietly.

mod common;

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use chartbridge::delete::DeletionReason;
use chartbridge::event::MessageKey;
use chartbridge::store::{ConversationDecision, DeletionState, MessageState};
use common::standins::{MediaApi, Medium};
use common::{Harness, wait_until};
use serde_json::{Value, json};
use sha2::Digest;

fn png() -> Vec<u8> {
    std::fs::read(common::repo().join("fixtures/media/wound.png")).unwrap()
}

const PHONE_NUMBER_ID: &str = "109283746501928";
/// A WhatsApp user the identity map does not know.
const WA_ID: &str = "4917612398745";

/// A Cloud API webhook from [`WA_ID`]: `texts` text messages, then one
/// image (media id `media_id`) when given. Ids `wamid.REVIEW{n}-{run}`.
fn webhook(h: &Harness, texts: usize, media_id: Option<&str>) -> (Vec<u8>, Vec<MessageKey>) {
    let mut messages = Vec::new();
    let mut keys = Vec::new();
    for n in 0..texts {
        let id = format!("wamid.REVIEW{n}-{}", h.run);
        messages.push(json!({
            "from": WA_ID, "id": id, "timestamp": (1764400000 + n).to_string(),
            "type": "text", "text": {"body": format!("Verband gewechselt, Tag {n}")}
        }));
        keys.push(MessageKey {
            source: "whatsapp".into(),
            message_id: id,
        });
    }
    if let Some(media_id) = media_id {
        let id = format!("wamid.REVIEWIMG-{}", h.run);
        let sha = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(png()));
        messages.push(json!({
            "from": WA_ID, "id": id, "timestamp": "1764400100", "type": "image",
            "image": {"mime_type": "image/png", "sha256": sha, "id": media_id}
        }));
        keys.push(MessageKey {
            source: "whatsapp".into(),
            message_id: id,
        });
    }
    let v = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "100200300400500", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "4930555000", "phone_number_id": PHONE_NUMBER_ID},
            "contacts": [{"profile": {"name": "Jonas Beispiel"}, "wa_id": WA_ID}],
            "messages": messages
        }}]}]
    });
    (serde_json::to_vec(&v).unwrap(), keys)
}

fn cli(h: &Harness, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chartbridge"))
        .arg("--config")
        .arg(h.config_file())
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The listing shows no phone number, messenger id or content.
fn assert_opaque(listing: &str) {
    for secret in [WA_ID, PHONE_NUMBER_ID, "wamid", "Verband", "Beispiel"] {
        assert!(!listing.contains(secret), "{listing}");
    }
}

/// The one conversation id `conversation list` shows.
fn conversation_id(h: &Harness) -> String {
    let listing = stdout(&cli(h, &["conversation", "list"]));
    assert_opaque(&listing);
    let rows: Vec<&str> = listing.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{listing}");
    rows[0].split_whitespace().next().unwrap().to_owned()
}

/// `conversation link` of the conversation `id` to `patient` and
/// `encounter`, by the reviewer `ward-3-review`.
fn link(h: &Harness, id: &str, patient: &str, encounter: &str) {
    let out = cli(
        h,
        &[
            "conversation",
            "link",
            id,
            "--patient",
            patient,
            "--encounter",
            encounter,
            "--by",
            "ward-3-review",
        ],
    );
    assert!(out.status.success(), "{out:?}");
}

async fn wait_all(h: &Harness, keys: &[MessageKey], state: MessageState, reason: &str) {
    for k in keys {
        let got = h.wait_state(k, state).await;
        assert_eq!(got.reason, reason, "{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_unlinked_conversation_is_held_then_linked_once_and_archived_once() {
    let media = MediaApi::start().await;
    let media_id = format!("77{}", &uuid::Uuid::new_v4().as_u128().to_string()[..12]);
    media.put(
        &media_id,
        Medium {
            bytes: png(),
            mime_type: "image/png".into(),
        },
    );
    let h = Harness::new(None, Some(&media.url)).await;
    let (patient, encounter) = h.seed_patient(&format!("P-rev-{}", h.run)).await;
    let worker = h.start_worker();
    let (payload, keys) = webhook(&h, 3, Some(&media_id));
    h.publish(&payload).await;

    // Held, sealed, for review: nothing in the KIS, no deletion.
    wait_all(
        &h,
        &keys,
        MessageState::Quarantined,
        "unresolved_conversation",
    )
    .await;
    for k in &keys {
        let (_, sealed, _) = h.store.quarantine_detail(k).await.unwrap().unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("Verband"));
        assert!(h.store.deletion_state(k).await.unwrap().is_none());
    }
    for k in &keys[..3] {
        assert!(h.kis_ids("Communication", k).await.is_empty());
    }
    // The conversation id itself is never stored, only its keyed token.
    let token = h.store.quarantine_conversation(&keys[0]).await.unwrap();
    let token = token.expect("a conversation token");
    assert!(!token.contains(WA_ID) && !token.contains(PHONE_NUMBER_ID));

    // Both listings show the same opaque conversation id.
    let id = conversation_id(&h);
    let listing = stdout(&cli(&h, &["quarantine", "list"]));
    assert_opaque(&listing);
    let rows: Vec<&str> = listing.lines().filter(|l| l.contains(&id)).collect();
    assert_eq!(rows.len(), 4, "{listing}");
    assert!(rows.iter().all(|r| r.contains("unresolved_conversation")));
    let status = stdout(&cli(&h, &["status"]));
    assert!(
        status.contains("conversations waiting for a link or dismissal 1"),
        "{status}"
    );
    assert!(h.deletion_commands().await.is_empty());

    // One decision for the conversation releases all four.
    link(&h, &id, &patient, &encounter);
    wait_all(&h, &keys[..3], MessageState::Archived, "linked-text").await;
    wait_all(&h, &keys[3..], MessageState::Archived, "linked-images").await;
    for k in &keys[..3] {
        let ids = h.kis_ids("Communication", k).await;
        assert_eq!(ids.len(), 1, "{k}");
        let c = h.kis.read(&ids[0]).await.unwrap();
        assert_eq!(c["subject"]["reference"], patient.as_str());
        assert_eq!(c["encounter"]["reference"], encounter.as_str());
    }
    assert_eq!(h.kis_ids("DocumentReference", &keys[3]).await.len(), 1);
    // Who decided is the account that ran the command; `--by` is a note.
    for k in &keys {
        let e = h.store.quarantine_entry(k).await.unwrap().unwrap();
        assert_eq!(e.resolved_by.as_deref(), Some(common::os_actor().as_str()));
    }
    let review = h.store.conversation_review(&token).await.unwrap().unwrap();
    assert_eq!(review.decision, ConversationDecision::Linked);
    assert_eq!(review.decided_by, common::os_actor());
    let audit = common::audit_rows(&h, "conversation.link").await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].actor, common::os_actor());
    assert_eq!(
        audit[0].target,
        format!("conversation {id} {patient} {encounter}")
    );
    assert!(
        audit[0].reason_digest.is_some(),
        "the --by note is kept sealed"
    );
    // Deletion of each after the KIS holds it (checked on arrival), once.
    let deletions = h.expect_deletions(4).await;
    assert!(
        deletions
            .iter()
            .all(|d| d.reason == DeletionReason::Archived)
    );
    let mut ids: Vec<&str> = deletions.iter().map(|d| d.message_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4);

    // Again: no conversation is held any more; `link` by source and id and
    // a redelivery of the webhook add nothing.
    assert!(
        !cli(&h, &["conversation", "link", &id, "--patient", &patient])
            .status
            .success()
    );
    let out = cli(
        &h,
        &[
            "link",
            "--source",
            "whatsapp",
            "--conversation",
            &format!("{PHONE_NUMBER_ID}:{WA_ID}"),
            "--patient",
            &patient,
        ],
    );
    assert!(out.status.success(), "{out:?}");
    h.publish(&payload).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    worker.stop().await;
    for k in &keys[..3] {
        assert_eq!(h.kis_ids("Communication", k).await.len(), 1, "{k}");
    }
    assert_eq!(h.kis_ids("DocumentReference", &keys[3]).await.len(), 1);
    assert!(h.deletion_commands().await.is_empty());
    assert_eq!(h.store.log_size().await.unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i7_dismissed_conversation_is_recorded_and_deleted_by_retention() {
    let h = Harness::new(None, None).await;
    let worker = h.start_worker();
    let (payload, keys) = webhook(&h, 2, None);
    h.publish(&payload).await;
    wait_all(
        &h,
        &keys,
        MessageState::Quarantined,
        "unresolved_conversation",
    )
    .await;
    let id = conversation_id(&h);
    let out = cli(
        &h,
        &["conversation", "dismiss", &id, "--by", "ward-3-review"],
    );
    assert!(out.status.success(), "{out:?}");
    wait_all(
        &h,
        &keys,
        MessageState::NotRelevant,
        "conversation-dismissed",
    )
    .await;
    let token = h
        .store
        .quarantine_conversation(&keys[0])
        .await
        .unwrap()
        .unwrap();
    let review = h.store.conversation_review(&token).await.unwrap().unwrap();
    assert_eq!(review.decision, ConversationDecision::Dismissed);
    assert_eq!(review.decided_by, common::os_actor());
    let audit = common::audit_rows(&h, "conversation.dismiss").await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (audit[0].actor.as_str(), audit[0].target.as_str()),
        (
            common::os_actor().as_str(),
            format!("conversation {id}").as_str()
        )
    );
    for k in &keys {
        assert_eq!(
            h.store.deletion_state(k).await.unwrap(),
            Some(DeletionState::Scheduled)
        );
        assert!(h.kis_ids("Communication", k).await.is_empty());
    }
    // A later message of the dismissed conversation follows the decision.
    let mut later: Value = serde_json::from_slice(&webhook(&h, 1, None).0).unwrap();
    let later_id = format!("wamid.REVIEWLATER-{}", h.run);
    later["entry"][0]["changes"][0]["value"]["messages"][0]["id"] = later_id.clone().into();
    h.publish(&serde_json::to_vec(&later).unwrap()).await;
    let later_key = MessageKey {
        source: "whatsapp".into(),
        message_id: later_id,
    };
    let got = h.wait_state(&later_key, MessageState::NotRelevant).await;
    assert_eq!(got.reason, "conversation-dismissed");
    worker.stop().await;
    // Nothing before the retention (the [default] 24 h), all three after it.
    assert!(h.deletion_commands().await.is_empty());
    let now = chrono::Utc::now();
    let sweep = chartbridge::schedule::jobs::retention_sweep;
    assert_eq!(
        sweep(&h.store, now + chrono::Duration::hours(23))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        sweep(&h.store, now + chrono::Duration::hours(25))
            .await
            .unwrap(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i7_weaker_policy_keeps_the_default_rule_for_unresolved_conversations() {
    let mut h = Harness::new(None, None).await;
    h.add_config("[resolve]\nunresolved = \"not_relevant\"\n");
    let worker = h.start_worker();
    let (payload, keys) = webhook(&h, 2, None);
    h.publish(&payload).await;
    wait_all(&h, &keys, MessageState::NotRelevant, "default").await;
    worker.stop().await;
    for k in &keys {
        assert_eq!(
            h.store.deletion_state(k).await.unwrap(),
            Some(DeletionState::Scheduled)
        );
    }
    assert!(h.store.held_conversations().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_duplicate_is_visible_in_status_and_review_list() {
    let h = Harness::new(None, None).await;
    let worker = h.start_worker();
    let (payload, keys) = webhook(&h, 1, None);
    h.publish(&payload).await;
    wait_all(
        &h,
        &keys,
        MessageState::Quarantined,
        "unresolved_conversation",
    )
    .await;
    // Another payload under the same message id.
    let mut other: Value = serde_json::from_slice(&payload).unwrap();
    other["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"] =
        "Ganz anderer Inhalt".into();
    h.publish(&serde_json::to_vec(&other).unwrap()).await;
    wait_until(
        Duration::from_secs(30),
        "the conflict to be kept",
        || async { !h.store.conflicts(&keys[0]).await.unwrap().is_empty() },
    )
    .await;
    worker.stop().await;
    let status = stdout(&cli(&h, &["status"]));
    assert!(
        status.contains("conflicting duplicates kept sealed (duplicate_id_conflict) 1"),
        "{status}"
    );
    let listing = stdout(&cli(&h, &["quarantine", "list"]));
    assert_opaque(&listing);
    assert!(!listing.contains("anderer"), "{listing}");
    let conflicts: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains("duplicate_id_conflict"))
        .collect();
    assert_eq!(conflicts.len(), 1, "{listing}");
    assert_eq!(
        listing
            .lines()
            .filter(|l| l.contains("unresolved_conversation"))
            .count(),
        1,
        "{listing}"
    );
}

/// `chartbridge status | head -1`: the real binary, its pipe closed after
/// the first line, exits 0 without a panic message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exits_quietly_when_its_output_pipe_closes() {
    let h = Harness::new(None, None).await;
    let bin = env!("CARGO_BIN_EXE_chartbridge");
    for command in [
        "status",
        "quarantine list",
        "conversation list",
        "check-config",
    ] {
        // `head -1` as an operator would; `true` closes the pipe before the
        // command has written anything, so every write meets EPIPE.
        for reader in ["head -1", "true"] {
            let script = format!(
                "set -o pipefail; '{bin}' --config '{cfg}' {command} | {reader} >/dev/null",
                cfg = h.config_file().display()
            );
            let out = Command::new("bash")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{command} | {reader}: {out:?}");
            assert!(!stderr.contains("panicked"), "{command}: {stderr}");
            assert!(!stderr.contains("Broken pipe"), "{command}: {stderr}");
        }
    }
}

/// Publishes a text from `sender` into a room linked to no patient (held
/// `unresolved_conversation`), then its sender's redaction, and waits
/// until the retraction waits sealed for its held target. Answers the
/// target's and the redaction's keys.
async fn held_then_retracted(h: &Harness, sender: &str, body: &str) -> (MessageKey, MessageKey) {
    let room = format!("!held-{}:hospital.invalid", h.run);
    let key = |id: String| MessageKey {
        source: "matrix".into(),
        message_id: id,
    };
    let now = chartbridge::store::millis(chrono::Utc::now());
    let (target, redaction) = (format!("$t-{}", h.run), format!("$r-{}", h.run));
    h.publish(
        &serde_json::to_vec(&json!({
            "type": "m.room.message", "room_id": room, "event_id": target,
            "sender": sender, "origin_server_ts": now,
            "content": {"msgtype": "m.text", "body": body}}))
        .unwrap(),
    )
    .await;
    let held = h
        .wait_state(&key(target.clone()), MessageState::Quarantined)
        .await;
    assert_eq!(held.reason, "unresolved_conversation");
    h.publish(
        &serde_json::to_vec(&json!({
            "type": "m.room.redaction", "room_id": room, "event_id": redaction,
            "sender": sender, "origin_server_ts": now + 1000,
            "redacts": target, "content": {"redacts": target}}))
        .unwrap(),
    )
    .await;
    let (target, redaction) = (key(target), key(redaction));
    wait_until(Duration::from_secs(30), "the retraction waits", || async {
        h.store.pending_redactions(&target).await.unwrap().len() == 1
    })
    .await;
    (target, redaction)
}

/// A Matrix message held for review (its room is linked to no patient)
/// that its sender redacts at the messenger: the retraction waits, sealed,
/// and when a reviewer's link archives the message, its record is marked
/// `retracted-at-source` as if it had been archived first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retraction_of_a_held_message_marks_its_record_when_released() {
    let h = Harness::new(None, None).await;
    let (patient, encounter) = h.seed_patient(&format!("P-ret-{}", h.run)).await;
    let worker = h.start_worker();
    let (target, redaction) =
        held_then_retracted(&h, "@patient-4711:hospital.invalid", "Bitte ignorieren").await;
    // Who retracted is sealed: the row holds tokens only.
    let dump = format!(
        "{:?}",
        sqlx::query_as::<_, (String, String, String)>(
            "SELECT source, redaction_token, target_token FROM pending_redactions"
        )
        .fetch_all(h.store.pool())
        .await
        .unwrap()
    );
    assert!(
        !dump.contains(&target.message_id) && !dump.contains("patient-4711"),
        "{dump}"
    );
    assert_eq!(h.store.redaction_mark(&redaction).await.unwrap(), None);

    let id = conversation_id(&h);
    link(&h, &id, &patient, &encounter);
    let archived = h.wait_state(&target, MessageState::Archived).await;
    let resource = archived.resource.unwrap();
    let mark = h
        .store
        .redaction_mark(&redaction)
        .await
        .unwrap()
        .expect("the waiting retraction is marked on release");
    assert_eq!(
        (mark.state.as_str(), mark.resource.as_str()),
        ("marked", resource.as_str())
    );
    let record = h.kis.read(&resource).await.unwrap();
    let tags = record["meta"]["tag"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        tags.iter().any(|t| t["code"] == "retracted-at-source"),
        "{record}"
    );
    assert!(
        h.store
            .pending_redactions(&target)
            .await
            .unwrap()
            .is_empty()
    );
    worker.stop().await;
}

/// A waiting retraction whose mark the release could not write (the KIS
/// answered 503 to every attempt) stays waiting, and the retention sweep's
/// pass over archived targets writes it later
/// (`Pipeline::apply_waiting_retractions`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retraction_left_waiting_by_its_release_is_marked_by_the_sweep() {
    use chartbridge::classify::Rules;
    use chartbridge::pipeline::Pipeline;
    use common::standins::FaultProxy;
    let proxy = FaultProxy::start(&common::fhir_url()).await;
    let h = Harness::new(Some(&proxy.url), None).await;
    let (patient, encounter) = h.seed_patient(&format!("P-rw-{}", h.run)).await;
    let worker = h.start_worker();
    let (target, redaction) =
        held_then_retracted(&h, "@patient-4712:hospital.invalid", "Doch nicht").await;
    worker.stop().await;

    // Every attempt at the mark after the release: 503.
    proxy.unavailable_containing("retracted-at-source", 4);
    let id = conversation_id(&h);
    link(&h, &id, &patient, &encounter);
    h.wait_state(&target, MessageState::Archived).await;
    assert_eq!(
        h.store.redaction_mark(&redaction).await.unwrap(),
        None,
        "not marked: the KIS was down for every attempt"
    );
    assert_eq!(
        h.store.archived_with_pending_redactions(10).await.unwrap(),
        vec![h.store.message_ref(&target).unwrap()]
    );

    let rules = Rules::load(&h.config.mappings.rules_file).unwrap();
    let pipeline = Pipeline::new(&h.config, h.store.clone(), h.sealer.clone(), rules).unwrap();
    // One attempt per run, no backoff: a 503 leaves it for the next run.
    proxy.unavailable_containing("retracted-at-source", 1);
    assert_eq!(pipeline.apply_waiting_retractions().await.unwrap(), 1);
    assert_eq!(
        h.store.redaction_mark(&redaction).await.unwrap(),
        None,
        "the sweep does not wait on a KIS that is down"
    );
    assert_eq!(pipeline.apply_waiting_retractions().await.unwrap(), 1);
    let mark = h
        .store
        .redaction_mark(&redaction)
        .await
        .unwrap()
        .expect("marked by the sweep");
    assert_eq!(mark.state, "marked");
    let record = h.kis.read(&mark.resource).await.unwrap();
    assert!(
        record["meta"]["tag"]
            .as_array()
            .is_some_and(|ts| ts.iter().any(|t| t["code"] == "retracted-at-source")),
        "{record}"
    );
    assert!(
        h.store
            .archived_with_pending_redactions(10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(pipeline.apply_waiting_retractions().await.unwrap(), 0);
}
