//! The HL7 v2 ADT feed end to end: ADT messages over the real RabbitMQ
//! maintain the identity map and are ACKed; a WhatsApp message carrying
//! only the phone number is then resolved (or quarantined as a candidate,
//! resolved by an operator with `chartbridge quarantine`) and archived in
//! the real FHIR server linked to the right Patient and Encounter.

mod common;

use std::process::Command;
use std::time::Duration;

use chartbridge::config::Config;
use chartbridge::store::MessageState;
use common::{CASE_SYSTEM, Harness, PATIENT_SYSTEM, wait_until};
use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};

struct Feed {
    queue: String,
    replies: String,
}

/// Enables the ADT feed (`Harness::enable_adt`) with the phone match policy.
async fn enable_adt(h: &mut Harness, phone_match: &str) -> Feed {
    let (queue, replies) = h
        .enable_adt(&format!("[resolve]\nphone_match = \"{phone_match}\"\n"))
        .await;
    Feed { queue, replies }
}

async fn delete_queues(h: &Harness, feed: &Feed) {
    let ch = h.broker.consumer_channel(1).await.unwrap();
    for q in [
        feed.queue.clone(),
        feed.replies.clone(),
        h.config.adt.ack_queue.clone(),
    ] {
        let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
    }
}

/// The A01 fixture with this run's patient and case numbers.
fn a01(h: &Harness) -> String {
    std::fs::read_to_string(common::repo().join("fixtures/hl7/adt-a01.hl7"))
        .unwrap()
        .replace("P-1001", &format!("P-{}", h.run))
        .replace("F-2001", &format!("F-{}", h.run))
        .replace("MSG-A01-0001", &format!("MSG-{}", h.run))
}

/// Publishes an ADT message asking for the ACK on `feed.replies`, and
/// returns the ACK's MSA-1, MSA-2 and ERR-3.1.
async fn send_adt(h: &Harness, feed: &Feed, text: &str) -> (String, String, String) {
    h.broker
        .publish_confirmed(
            "",
            &feed.queue,
            text.as_bytes(),
            BasicProperties::default().with_reply_to(feed.replies.as_str().into()),
        )
        .await
        .unwrap();
    let ch = h.broker.consumer_channel(1).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            feed.replies.as_str().into(),
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
    let ack = String::from_utf8(d.data).unwrap();
    let m = hl7_parser::Message::parse(&ack).unwrap();
    assert_eq!(
        m.segment("MSH")
            .unwrap()
            .field(9)
            .unwrap()
            .component(1)
            .unwrap()
            .raw_value(),
        "ACK"
    );
    let msa = m.segment("MSA").unwrap();
    let err = m
        .segment("ERR")
        .and_then(|e| e.field(3))
        .and_then(|f| f.component(1))
        .map(|c| c.raw_value().to_owned())
        .unwrap_or_default();
    (
        msa.field(1).unwrap().raw_value().to_owned(),
        msa.field(2).unwrap().raw_value().to_owned(),
        err,
    )
}

/// The Patient and Encounter of this run in the KIS.
async fn seed(h: &Harness) -> (String, String) {
    let patient = h
        .kis
        .create_if_none_exist(
            &json!({"resourceType": "Patient",
                    "identifier": [{"system": PATIENT_SYSTEM, "value": format!("P-{}", h.run)}],
                    "name": [{"family": "Mustermann", "given": ["Erika"]}]}),
            &[(
                "identifier",
                chartbridge::push::url::SearchValue::Token {
                    system: PATIENT_SYSTEM,
                    code: &format!("P-{}", h.run),
                },
            )],
        )
        .await
        .unwrap();
    let encounter = h
        .kis
        .create_if_none_exist(
            &json!({"resourceType": "Encounter", "status": "in-progress",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                    "identifier": [{"system": CASE_SYSTEM, "value": format!("F-{}", h.run)}],
                    "subject": {"reference": patient}}),
            &[(
                    "identifier",
                    chartbridge::push::url::SearchValue::Token {
                        system: CASE_SYSTEM,
                        code: &format!("F-{}", h.run),
                    },
                )],
        )
        .await
        .unwrap();
    (patient, encounter)
}

/// The WhatsApp fixture's text message alone: it names no patient, only
/// its conversation (the phone number the A01 carries in PID-13).
fn whatsapp_text(h: &Harness) -> Vec<u8> {
    let mut v: Value =
        serde_json::from_slice(&h.fixture("events/whatsapp-text-image.json")).unwrap();
    v["entry"][0]["changes"][0]["value"]["messages"]
        .as_array_mut()
        .unwrap()
        .truncate(1);
    serde_json::to_vec(&v).unwrap()
}

const TEXT_ID: &str = "wamid.HBgLNDkxNTExMjM0NTY3OBUCABIYFDNBMDA1";

async fn assert_linked(h: &Harness, resource: &str, patient: &str, encounter: &str) {
    let c = h.kis.read(resource).await.unwrap();
    assert_eq!(c["subject"]["reference"], patient, "{c}");
    assert_eq!(c["encounter"]["reference"], encounter, "{c}");
}

fn cli(h: &Harness, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chartbridge"))
        .arg("--config")
        .arg(h.config_file())
        .args(args)
        .env("CHARTBRIDGE_TEST_FHIR_URL", common::fhir_url())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_adt_a01_then_phone_only_message_archives_to_patient_and_encounter() {
    let mut h = Harness::new(None, None).await;
    let feed = enable_adt(&mut h, "accept").await;
    let (patient, encounter) = seed(&h).await;
    let worker = h.start_worker();
    let (ack, control, _) = send_adt(&h, &feed, &a01(&h)).await;
    assert_eq!((ack.as_str(), control), ("AA", format!("MSG-{}", h.run)));
    // The same message again (a resend): AA, nothing applied twice.
    let (ack, _, _) = send_adt(&h, &feed, &a01(&h)).await;
    assert_eq!(ack, "AA");
    h.publish(&whatsapp_text(&h)).await;
    let key = h.key("whatsapp", TEXT_ID);
    let got = h.wait_state(&key, MessageState::Archived).await;
    let resource = got.resource.unwrap();
    assert_linked(&h, &resource, &patient, &encounter).await;
    assert_eq!(
        h.kis_ids("Communication", &key).await,
        vec![resource.clone()]
    );
    let deletions = h.expect_deletions(1).await;
    assert_eq!(deletions[0].message_id, key.message_id);
    worker.stop().await;
    delete_queues(&h, &feed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_phone_candidate_is_quarantined_then_resolved_and_archived_once() {
    let mut h = Harness::new(None, None).await;
    let feed = enable_adt(&mut h, "quarantine").await;
    let (patient, encounter) = seed(&h).await;
    let worker = h.start_worker();
    assert_eq!(send_adt(&h, &feed, &a01(&h)).await.0, "AA");
    h.publish(&whatsapp_text(&h)).await;
    let key = h.key("whatsapp", TEXT_ID);
    let got = h.wait_state(&key, MessageState::Quarantined).await;
    assert_eq!(got.reason, "patient_candidate");
    assert!(h.kis_ids("Communication", &key).await.is_empty());
    assert_eq!(h.store.deletion_state(&key).await.unwrap(), None);

    // The list shows an opaque id, the reason and the age: no phone
    // number, no messenger id, no content.
    let out = cli(&h, &["quarantine", "list"]);
    assert!(out.status.success(), "{out:?}");
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(listing.contains("patient_candidate"), "{listing}");
    for secret in [
        "4915112345678",
        "wamid",
        "Schwellung",
        &format!("P-{}", h.run),
    ] {
        assert!(!listing.contains(secret), "{listing}");
    }
    let id = listing
        .lines()
        .find(|l| l.contains("patient_candidate"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();

    let out = cli(
        &h,
        &[
            "quarantine",
            "resolve",
            &id,
            "--accept-candidate",
            "--by",
            "ward-7-admin",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let got = h.state(&key).await.unwrap();
    assert_eq!(got.state, MessageState::Archived);
    let resource = got.resource.unwrap();
    assert_linked(&h, &resource, &patient, &encounter).await;
    let entry = h.store.quarantine_entry(&key).await.unwrap().unwrap();
    assert_eq!(
        entry.resolved_by.as_deref(),
        Some(common::os_actor().as_str())
    );
    let audit = common::audit_rows(&h, "quarantine.resolve").await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].actor, common::os_actor());
    assert!(
        audit[0].target.starts_with(&format!("item {id} ")),
        "{audit:?}"
    );
    assert!(entry.released_at.is_some() && entry.sealed_event.is_empty());
    // Deletion only after the KIS holds it (checked on arrival), once.
    let deletions = h.expect_deletions(1).await;
    assert_eq!(deletions[0].message_id, key.message_id);

    // Releasing again, or the gateway redelivering, changes nothing.
    let out = cli(&h, &["quarantine", "release", &id]);
    assert!(!out.status.success());
    h.publish(&whatsapp_text(&h)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.kis_ids("Communication", &key).await, vec![resource]);
    assert_eq!(h.store.log_size().await.unwrap(), 1);
    worker.stop().await;
    assert!(h.deletion_commands().await.is_empty());
    delete_queues(&h, &feed).await;
}

/// Three messages of one conversation whose phone number matches one
/// identity-map patient are held as `patient_candidate`; confirming the
/// candidate once for the conversation releases all three, each archived
/// once, deletions after; later messages resolve through the new link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_candidate_confirmed_once_for_the_conversation_releases_all_its_messages() {
    let mut h = Harness::new(None, None).await;
    let feed = enable_adt(&mut h, "quarantine").await;
    let (patient, encounter) = seed(&h).await;
    let worker = h.start_worker();
    assert_eq!(send_adt(&h, &feed, &a01(&h)).await.0, "AA");
    let mut v: Value =
        serde_json::from_slice(&h.fixture("events/whatsapp-text-image.json")).unwrap();
    let messages = v["entry"][0]["changes"][0]["value"]["messages"]
        .as_array_mut()
        .unwrap();
    messages.truncate(1);
    let mut keys = Vec::new();
    for n in 0..3 {
        let mut m = messages[0].clone();
        let id = format!("wamid.CANDIDATE{n}-{}", h.run);
        m["id"] = id.clone().into();
        m["text"]["body"] = format!("Frage Nummer {n} zur Nachsorge").into();
        keys.push(chartbridge::event::MessageKey {
            source: "whatsapp".into(),
            message_id: id,
        });
        messages.push(m);
    }
    messages.remove(0);
    h.publish(&serde_json::to_vec(&v).unwrap()).await;
    for k in &keys {
        let got = h.wait_state(k, MessageState::Quarantined).await;
        assert_eq!(got.reason, "patient_candidate");
    }
    // A second patient with the same number (a family's shared phone):
    // the next message matches both, held `patient_ambiguous`.
    let sibling = a01(&h)
        .replace(&format!("P-{}", h.run), &format!("Q-{}", h.run))
        .replace(&format!("F-{}", h.run), &format!("G-{}", h.run))
        .replace(&format!("MSG-{}", h.run), &format!("MSG-Q-{}", h.run))
        .replace("0815^^^LAB", &format!("Q-LAB-{}^^^LAB", h.run));
    assert_eq!(send_adt(&h, &feed, &sibling).await.0, "AA");
    let mut later = v.clone();
    let ambiguous = format!("wamid.AMBIGUOUS-{}", h.run);
    later["entry"][0]["changes"][0]["value"]["messages"] = json!([{
        "from": v["entry"][0]["changes"][0]["value"]["messages"][0]["from"],
        "id": ambiguous, "timestamp": "1764400500", "type": "text",
        "text": {"body": "Noch eine Frage"}}]);
    h.publish(&serde_json::to_vec(&later).unwrap()).await;
    let ambiguous = chartbridge::event::MessageKey {
        source: "whatsapp".into(),
        message_id: ambiguous,
    };
    assert_eq!(
        h.wait_state(&ambiguous, MessageState::Quarantined)
            .await
            .reason,
        "patient_ambiguous"
    );
    let listing = String::from_utf8(cli(&h, &["conversation", "list"]).stdout).unwrap();
    for secret in ["4915112345678", "wamid", "Nachsorge"] {
        assert!(!listing.contains(secret), "{listing}");
    }
    let rows: Vec<&str> = listing.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{listing}");
    assert!(rows[0].contains("patient_candidate"), "{listing}");
    let id = rows[0].split_whitespace().next().unwrap().to_owned();
    let out = cli(
        &h,
        &[
            "conversation",
            "link",
            &id,
            "--accept-candidate",
            "--by",
            "ward-7-admin",
        ],
    );
    // Accepting the candidate decides the candidate's messages, not the
    // one that matched two patients: left held for a person's choice.
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("matched several patients"),
        "{out:?}"
    );
    let still = h.state(&ambiguous).await.unwrap();
    assert_eq!(
        (still.state, still.reason.as_str()),
        (MessageState::Quarantined, "patient_ambiguous")
    );
    for k in &keys {
        let got = h.state(k).await.unwrap();
        assert_eq!(got.state, MessageState::Archived, "{k}");
        assert_linked(&h, got.resource.as_deref().unwrap(), &patient, &encounter).await;
        assert_eq!(h.kis_ids("Communication", k).await.len(), 1);
    }
    let deletions = h.expect_deletions(3).await;
    let mut ids: Vec<&str> = deletions.iter().map(|d| d.message_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    // Confirming again finds nothing held; a redelivery adds nothing.
    assert!(
        !cli(&h, &["conversation", "link", &id, "--accept-candidate"])
            .status
            .success()
    );
    h.publish(&serde_json::to_vec(&v).unwrap()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.stop().await;
    for k in &keys {
        assert_eq!(h.kis_ids("Communication", k).await.len(), 1);
    }
    assert_eq!(h.store.log_size().await.unwrap(), 3);
    assert!(h.deletion_commands().await.is_empty());
    delete_queues(&h, &feed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_bad_adt_messages_are_answered_with_reasons_over_rabbitmq() {
    let mut h = Harness::new(None, None).await;
    let feed = enable_adt(&mut h, "quarantine").await;
    let worker = h.start_worker();
    let expected: toml::Table =
        std::fs::read_to_string(common::repo().join("fixtures/hl7/bad/expected-acks.toml"))
            .unwrap()
            .parse()
            .unwrap();
    for (name, want) in &expected {
        let text =
            std::fs::read_to_string(common::repo().join(format!("fixtures/hl7/bad/{name}.hl7")))
                .unwrap();
        let (ack, _, code) = send_adt(&h, &feed, &text).await;
        assert_eq!(ack, want["ack"].as_str().unwrap(), "{name}");
        assert_eq!(code, want["code"].as_str().unwrap(), "{name}");
    }
    // Nothing was applied by any of them.
    let patients: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM adt_patients")
        .fetch_one(h.store.pool())
        .await
        .unwrap();
    assert_eq!(patients, 0);
    wait_until(Duration::from_secs(5), "feed idle", || async { true }).await;
    worker.stop().await;
    delete_queues(&h, &feed).await;
}

/// The gateway's case names a known patient but an encounter the KIS does
/// not know: quarantined as `unknown_encounter` by default; with
/// `unknown_encounter = "patient_only"` archived linked to the patient only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_unknown_encounter_is_quarantined_or_archived_to_the_patient_as_configured() {
    for policy in ["quarantine", "patient_only"] {
        let mut h = Harness::new(None, None).await;
        let mut text = std::fs::read_to_string(&h.config_path).unwrap();
        text.push_str(&format!("\n[resolve]\nunknown_encounter = \"{policy}\"\n"));
        std::fs::write(&h.config_path, &text).unwrap();
        h.config = Config::from_parts(&h.config_path, &text, std::iter::empty()).unwrap();
        let (patient, _) = seed(&h).await;
        let mut v: Value =
            serde_json::from_slice(&h.fixture("events/text-canonical.json")).unwrap();
        v["case"]["patient"]["identifier"]["value"] = format!("P-{}", h.run).into();
        v["case"]["encounter"]["identifier"]["value"] = format!("F-none-{}", h.run).into();
        let worker = h.start_worker();
        h.publish(&serde_json::to_vec(&v).unwrap()).await;
        let key = h.key("matrix", "$msg-0001");
        wait_until(Duration::from_secs(60), "terminal state", || async {
            h.state(&key).await.is_some()
        })
        .await;
        let got = h.state(&key).await.unwrap();
        if policy == "quarantine" {
            assert_eq!(got.state, MessageState::Quarantined);
            assert_eq!(got.reason, "unknown_encounter");
            assert!(h.kis_ids("Communication", &key).await.is_empty());
        } else {
            assert_eq!(got.state, MessageState::Archived);
            let c = h.kis.read(&got.resource.unwrap()).await.unwrap();
            assert_eq!(c["subject"]["reference"], patient.as_str());
            assert!(c.get("encounter").is_none(), "{c}");
        }
        worker.stop().await;
    }
}

/// A visit number whose Encounter belongs to another patient is not used:
/// the message is held `unknown_encounter` (the default policy), never
/// filed under someone else's visit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_an_encounter_of_another_patient_is_treated_as_unknown() {
    let h = Harness::new(None, None).await;
    // Patient P-{run} with visit F-{run}; a second patient without visits.
    seed(&h).await;
    let other = format!("Q-{}", h.run);
    h.kis
        .create_if_none_exist(
            &json!({"resourceType": "Patient",
                    "identifier": [{"system": PATIENT_SYSTEM, "value": other}]}),
            &[(
                "identifier",
                chartbridge::push::url::SearchValue::Token {
                    system: PATIENT_SYSTEM,
                    code: &other,
                },
            )],
        )
        .await
        .unwrap();
    let mut v: Value = serde_json::from_slice(&h.fixture("events/text-canonical.json")).unwrap();
    v["case"]["patient"]["identifier"]["value"] = other.clone().into();
    v["case"]["encounter"]["identifier"]["value"] = format!("F-{}", h.run).into();
    let worker = h.start_worker();
    h.publish(&serde_json::to_vec(&v).unwrap()).await;
    let key = h.key("matrix", "$msg-0001");
    let got = h.wait_state(&key, MessageState::Quarantined).await;
    assert_eq!(got.reason, "unknown_encounter");
    assert!(h.kis_ids("Communication", &key).await.is_empty());
    worker.stop().await;
}

/// An unknown patient is quarantined; an operator resolves it to literal
/// references; it is archived in the KIS exactly once, deletion after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_unknown_patient_resolved_by_operator_is_archived_once() {
    let h = Harness::new(None, None).await;
    let (patient, encounter) = seed(&h).await;
    let mut v: Value = serde_json::from_slice(&h.fixture("events/text-canonical.json")).unwrap();
    v["case"]["patient"]["identifier"]["value"] = format!("P-nobody-{}", h.run).into();
    v.as_object_mut().unwrap()["case"]
        .as_object_mut()
        .unwrap()
        .remove("encounter");
    let worker = h.start_worker();
    h.publish(&serde_json::to_vec(&v).unwrap()).await;
    let key = h.key("matrix", "$msg-0001");
    assert_eq!(
        h.wait_state(&key, MessageState::Quarantined).await.reason,
        "unknown_patient"
    );
    let id = chartbridge::quarantine::item_id(&h.sealer, &h.store.message_ref(&key).unwrap());
    let out = cli(
        &h,
        &[
            "quarantine",
            "resolve",
            &id,
            "--patient",
            &patient,
            "--encounter",
            &encounter,
            "--by",
            "ward-7-admin",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let got = h.state(&key).await.unwrap();
    assert_eq!(got.state, MessageState::Archived);
    assert_linked(&h, got.resource.as_ref().unwrap(), &patient, &encounter).await;
    assert_eq!(h.kis_ids("Communication", &key).await.len(), 1);
    let deletions = h.expect_deletions(1).await;
    assert_eq!(deletions[0].message_id, key.message_id);
    worker.stop().await;
}

/// ADT over MLLP: framed messages on one connection, each answered with a
/// framed ACK after it was applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_adt_over_mllp_is_applied_and_acked() {
    use chartbridge::hl7::mllp::{frame, take_frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut h = Harness::new(None, None).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut text = std::fs::read_to_string(&h.config_path).unwrap();
    text.push_str(&format!("\n[adt]\nenabled = true\nqueue = \"t.{run}.adt\"\nack_queue = \"t.{run}.adt.acks\"\nmllp_listen = \"127.0.0.1:{port}\"\n", run = h.run));
    std::fs::write(&h.config_path, &text).unwrap();
    h.config = Config::from_parts(&h.config_path, &text, std::iter::empty()).unwrap();
    let feed = Feed {
        queue: h.config.adt.queue.clone(),
        replies: h.config.adt.ack_queue.clone(),
    };
    let worker = h.start_worker();
    wait_until(Duration::from_secs(20), "MLLP listener", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut out = frame(a01(&h).as_bytes());
    out.extend(frame(b"not HL7 at all"));
    stream.write_all(&out).await.unwrap();
    let mut buf = Vec::new();
    let mut acks = Vec::new();
    let mut chunk = [0u8; 4096];
    while acks.len() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
            .await
            .expect("ACK in time")
            .unwrap();
        assert!(n > 0, "connection closed early");
        buf.extend_from_slice(&chunk[..n]);
        while let Some(m) = take_frame(&mut buf) {
            acks.push(String::from_utf8(m).unwrap());
        }
    }
    let msa = |ack: &str| {
        let m = hl7_parser::Message::parse(ack).unwrap();
        let msa = m.segment("MSA").unwrap();
        (
            msa.field(1).unwrap().raw_value().to_owned(),
            msa.field(2)
                .map(|f| f.raw_value().to_owned())
                .unwrap_or_default(),
        )
    };
    assert_eq!(msa(&acks[0]), ("AA".to_owned(), format!("MSG-{}", h.run)));
    assert_eq!(msa(&acks[1]).0, "AR");
    let patients: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM adt_patients")
        .fetch_one(h.store.pool())
        .await
        .unwrap();
    assert_eq!(patients, 1);
    worker.stop().await;
    delete_queues(&h, &feed).await;
}

/// A40 over the broker: the prior patient's conversation link is re-pointed
/// to the survivor (both looked up in the KIS), and the next message of
/// that conversation is archived to the survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_a40_merge_repoints_conversation_links() {
    let mut h = Harness::new(None, None).await;
    let feed = enable_adt(&mut h, "quarantine").await;
    let (survivor, _) = seed(&h).await;
    let prior = h
        .kis
        .create_if_none_exist(
            &json!({"resourceType": "Patient",
                    "identifier": [{"system": PATIENT_SYSTEM, "value": format!("P-old-{}", h.run)}]}),
            &[(
                    "identifier",
                    chartbridge::push::url::SearchValue::Token {
                        system: PATIENT_SYSTEM,
                        code: &format!("P-old-{}", h.run),
                    },
                )],
        )
        .await
        .unwrap();
    let fixture = |name: &str| {
        std::fs::read_to_string(common::repo().join("fixtures/hl7").join(name))
            .unwrap()
            .replace("P-1001", &format!("P-{}", h.run))
            .replace("P-1002", &format!("P-old-{}", h.run))
    };
    let conversation = "106540352242922:4915112345678";
    h.store
        .set_link(
            &chartbridge::resolve::conversation_token(&h.sealer, "whatsapp", conversation),
            &chartbridge::store::Link {
                patient: prior.clone(),
                encounter: None,
            },
            0,
        )
        .await
        .unwrap();
    let worker = h.start_worker();
    assert_eq!(send_adt(&h, &feed, &a01(&h)).await.0, "AA");
    assert_eq!(send_adt(&h, &feed, &fixture("adt-a04.hl7")).await.0, "AA");
    assert_eq!(send_adt(&h, &feed, &fixture("adt-a40.hl7")).await.0, "AA");
    let link = h
        .store
        .link(&chartbridge::resolve::conversation_token(
            &h.sealer,
            "whatsapp",
            conversation,
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(link.patient, survivor);
    h.publish(&whatsapp_text(&h)).await;
    let key = h.key("whatsapp", TEXT_ID);
    let got = h.wait_state(&key, MessageState::Archived).await;
    let c = h.kis.read(&got.resource.unwrap()).await.unwrap();
    assert_eq!(c["subject"]["reference"], survivor.as_str());
    worker.stop().await;
    delete_queues(&h, &feed).await;
}

/// One ACK of a reply: MSA-1, MSA-2, ERR-3.1, ERR-2, ERR-4.
type AckRow = (String, String, String, String, String);

/// The ACKs in a reply: a single ACK, or each ACK of a response batch
/// (BHS … BTS).
fn ack_rows(reply: &[u8]) -> Vec<AckRow> {
    let text = String::from_utf8(reply.to_vec()).unwrap();
    if text.starts_with("BHS") {
        let bts = text
            .split('\r')
            .find(|s| s.starts_with("BTS|"))
            .expect("BTS closes the response batch");
        let count: usize = bts[4..].parse().unwrap();
        let rows: Vec<AckRow> = chartbridge::hl7::er7::split(reply)
            .messages
            .iter()
            .flat_map(|m| ack_rows(&m.bytes))
            .collect();
        assert_eq!(rows.len(), count, "BTS-1 counts the ACKs");
        return rows;
    }
    let m = hl7_parser::Message::parse(text.trim_end_matches('\r')).unwrap();
    assert_eq!(
        m.segment("MSH")
            .unwrap()
            .field(9)
            .unwrap()
            .component(1)
            .unwrap()
            .raw_value(),
        "ACK"
    );
    let get = |seg: &str, n: usize| {
        m.segment(seg)
            .and_then(|s| s.field(n))
            .map(|f| f.raw_value().to_owned())
            .unwrap_or_default()
    };
    let code = m
        .segment("ERR")
        .and_then(|e| e.field(3))
        .and_then(|f| f.component(1))
        .map(|c| c.raw_value().to_owned())
        .unwrap_or_default();
    vec![(
        get("MSA", 1),
        get("MSA", 2),
        code,
        get("ERR", 2),
        get("ERR", 4),
    )]
}

/// Publishes raw bytes to the ADT queue and returns the reply's ACKs.
async fn send_payload(h: &Harness, feed: &Feed, payload: &[u8]) -> Vec<AckRow> {
    ack_rows(&send_raw(h, feed, payload).await)
}

/// Publishes raw bytes to the ADT queue and returns the reply as sent.
async fn send_raw(h: &Harness, feed: &Feed, payload: &[u8]) -> Vec<u8> {
    h.broker
        .publish_confirmed(
            "",
            &feed.queue,
            payload,
            BasicProperties::default().with_reply_to(feed.replies.as_str().into()),
        )
        .await
        .unwrap();
    let ch = h.broker.consumer_channel(1).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            feed.replies.as_str().into(),
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
    d.data
}

fn wire(name: &str) -> Vec<u8> {
    std::fs::read(common::repo().join(format!("fixtures/hl7/wire/{name}.hl7"))).unwrap()
}

fn strings(v: &toml::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

async fn phone_owners(h: &Harness, digits: &str) -> Vec<String> {
    h.store
        .patients_by_phone(&[chartbridge::store::phone_token(&h.sealer, digits)])
        .await
        .unwrap()
}

/// Every wire fixture over the real RabbitMQ: answered as the manifest
/// says (one reply per payload; a batch answered with a response batch),
/// applied when AA, never applied when refused; PID-13 `""` clears the
/// phones stored before; a reused control id with other content is
/// refused AE 205 while an identical redelivery is AA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_wire_fixtures_are_answered_and_applied_over_rabbitmq() {
    let mut h = Harness::new(None, None).await;
    let feed = enable_adt(&mut h, "quarantine").await;
    let worker = h.start_worker();
    let manifest: toml::Table =
        std::fs::read_to_string(common::repo().join("fixtures/hl7/wire/expected.toml"))
            .unwrap()
            .parse()
            .unwrap();
    // The A08 with PID-13 `""` comes after the A01 that stored the phone.
    let mut names: Vec<&String> = manifest.keys().collect();
    names.sort_by_key(|n| n.as_str() == "a08-phone-null");
    for name in names {
        let want = &manifest[name.as_str()];
        let rows = send_payload(&h, &feed, &wire(name)).await;
        let got: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(got, strings(&want["acks"]), "{name}: {rows:?}");
        let controls: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        assert_eq!(controls, strings(&want["controls"]), "{name}");
        let codes: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
        assert_eq!(codes, strings(&want["codes"]), "{name}");
        if let Some(err2) = want.get("err2") {
            assert_eq!(rows[0].3, err2.as_str().unwrap(), "{name}");
            assert_eq!(rows[0].4, want["severity"].as_str().unwrap(), "{name}");
        }
    }
    // Applied: each AA fixture's phones lead to one patient.
    for (name, digits) in [
        ("bom-leading-bytes", "4917655501102"),
        ("latin1-8859-1", "4917655501103"),
        ("stray-lf-in-field", "4917655501104"),
        ("repeated-pid3-pid13", "4917655501106"),
        ("repeated-pid3-pid13", "492285550106"),
        ("batch-enveloped", "4917655501115"),
        ("batch-enveloped", "4917655501116"),
        ("batch-bare", "4917655501119"),
        ("a40-unknown-prior", "4917655501120"),
        ("trunk-zero-a01", "4915112345678"),
    ] {
        assert_eq!(phone_owners(&h, digits).await.len(), 1, "{name}");
    }
    // The A08 of batch-bare replaced the A01's phone; PID-13 `""` cleared
    // the phone msh2-truncation had stored.
    assert!(phone_owners(&h, "4917655501118").await.is_empty());
    assert!(phone_owners(&h, "4917655501101").await.is_empty());
    let anna = chartbridge::hl7::Cx {
        value: "Q-7101".into(),
        authority: "HIS".into(),
    };
    assert!(
        h.store
            .patient_by_identifier(&h.sealer, &anna)
            .await
            .unwrap()
            .is_some()
    );
    // Refused: nothing of them is in the map.
    for id in [
        "Q-7107", "Q-7108", "Q-7109", "Q-7110", "Q-7111", "Q-7112", "Q-7113", "Q-7114", "Q-7117",
        "Q-7145", "Q-7146",
    ] {
        let cx = chartbridge::hl7::Cx {
            value: id.into(),
            authority: "HIS".into(),
        };
        assert_eq!(
            h.store.patient_by_identifier(&h.sealer, &cx).await.unwrap(),
            None,
            "{id}"
        );
    }
    // Same control id: identical → AA (nothing applied); other content →
    // AE 205 at MSH-10, nothing applied.
    let first = wire("trunk-zero-a01");
    let patients: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM adt_patients")
        .fetch_one(h.store.pool())
        .await
        .unwrap();
    assert_eq!(send_payload(&h, &feed, &first).await[0].0, "AA");
    let other = String::from_utf8(first)
        .unwrap()
        .replace("Q-7121", "Q-7199")
        .replace("1234 5678", "5550 1199");
    let rows = send_payload(&h, &feed, other.as_bytes()).await;
    assert_eq!(
        (rows[0].0.as_str(), rows[0].2.as_str(), rows[0].3.as_str()),
        ("AE", "205", "MSH^1^10")
    );
    let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM adt_patients")
        .fetch_one(h.store.pool())
        .await
        .unwrap();
    assert_eq!(after, patients);
    assert!(phone_owners(&h, "4915155501199").await.is_empty());
    worker.stop().await;
    delete_queues(&h, &feed).await;
}

/// A batch over MLLP is answered in one frame with a response batch; an
/// A40 whose prior patient is unknown is answered AA with an ERR of
/// severity W naming MRG-1, and the survivor is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_batches_and_survivor_only_merges_over_mllp() {
    use chartbridge::hl7::mllp::{frame, take_frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut h = Harness::new(None, None).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut text = std::fs::read_to_string(&h.config_path).unwrap();
    text.push_str(&format!("\n[adt]\nenabled = true\nqueue = \"t.{run}.adt\"\nack_queue = \"t.{run}.adt.acks\"\nmllp_listen = \"127.0.0.1:{port}\"\n", run = h.run));
    std::fs::write(&h.config_path, &text).unwrap();
    h.config = Config::from_parts(&h.config_path, &text, std::iter::empty()).unwrap();
    let feed = Feed {
        queue: h.config.adt.queue.clone(),
        replies: h.config.adt.ack_queue.clone(),
    };
    let worker = h.start_worker();
    wait_until(Duration::from_secs(20), "MLLP listener", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut out = frame(&wire("batch-enveloped"));
    out.extend(frame(&wire("a40-unknown-prior")));
    out.extend(frame(&wire("cut-mid-segment")));
    stream.write_all(&out).await.unwrap();
    let mut buf = Vec::new();
    let mut replies = Vec::new();
    let mut chunk = [0u8; 4096];
    while replies.len() < 3 {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
            .await
            .expect("ACK in time")
            .unwrap();
        assert!(n > 0, "connection closed early");
        buf.extend_from_slice(&chunk[..n]);
        while let Some(m) = take_frame(&mut buf) {
            replies.push(m);
        }
    }
    let batch = ack_rows(&replies[0]);
    let codes: Vec<(&str, &str, &str)> = batch
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str(), r.2.as_str()))
        .collect();
    assert_eq!(
        codes,
        vec![
            ("AA", "WIRE-15A", ""),
            ("AA", "WIRE-15B", ""),
            ("AR", "WIRE-15C", "201")
        ]
    );
    let a40 = ack_rows(&replies[1]);
    assert_eq!(
        a40,
        vec![(
            "AA".to_owned(),
            "WIRE-17".to_owned(),
            "204".to_owned(),
            "MRG^1^1".to_owned(),
            "W".to_owned()
        )]
    );
    let text = String::from_utf8(replies[1].clone()).unwrap();
    assert!(
        text.contains("prior patient unknown; survivor applied"),
        "{text}"
    );
    assert!(
        !text.contains("Q-7999") && !text.contains("Q-7120"),
        "{text}"
    );
    let cut = ack_rows(&replies[2]);
    assert_eq!((cut[0].0.as_str(), cut[0].1.as_str()), ("AR", "WIRE-07"));
    assert_eq!(phone_owners(&h, "4917655501120").await.len(), 1);
    assert_eq!(phone_owners(&h, "4917655501115").await.len(), 1);
    assert!(phone_owners(&h, "4917655501107").await.is_empty());
    worker.stop().await;
    delete_queues(&h, &feed).await;
}

/// The wire fixture `trunk-zero-a01` (a phone written `+49 (0)151 …`) with
/// this run's patient, case and control id.
fn trunk_zero_a01(h: &Harness) -> String {
    String::from_utf8(wire("trunk-zero-a01"))
        .unwrap()
        .replace("Q-7121^^^HIS", &format!("P-{}^^^KIS", h.run))
        .replace("V-7121^^^HIS", &format!("F-{}^^^KIS", h.run))
        .replace("WIRE-18", &format!("WIRE-{}", h.run))
}

/// An A01 with PID-13 `+49 (0)151 …` (trunk zero in brackets) is matched
/// by a WhatsApp text from `wa_id` `49151…`: archived to the right Patient
/// and Encounter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_trunk_zero_phone_matches_whatsapp_wa_id() {
    let mut h = Harness::new(None, None).await;
    let feed = enable_adt(&mut h, "accept").await;
    let (patient, encounter) = seed(&h).await;
    let worker = h.start_worker();
    let a01 = trunk_zero_a01(&h);
    assert!(a01.contains("+49 (0)151 1234 5678"));
    let rows = send_payload(&h, &feed, a01.as_bytes()).await;
    assert_eq!(rows[0].0, "AA", "{rows:?}");
    h.publish(&whatsapp_text(&h)).await;
    let key = h.key("whatsapp", TEXT_ID);
    let got = h.wait_state(&key, MessageState::Archived).await;
    assert_linked(&h, &got.resource.unwrap(), &patient, &encounter).await;
    worker.stop().await;
    delete_queues(&h, &feed).await;
}

/// MSA-1, MSA-3 and every ERR (ERR-2, ERR-3.1, ERR-4) of a single ACK.
fn ack_detail(reply: &[u8]) -> (String, String, Vec<(String, String, String)>) {
    let text = String::from_utf8(reply.to_vec()).unwrap();
    let m = hl7_parser::Message::parse(text.trim_end_matches('\r')).unwrap();
    let msa = m.segment("MSA").unwrap();
    let field = |f: Option<&hl7_parser::message::Field>| {
        f.map(|f| f.raw_value().to_owned()).unwrap_or_default()
    };
    let errs = m
        .segments()
        .filter(|s| s.name == "ERR")
        .map(|e| {
            let code = e
                .field(3)
                .and_then(|f| f.component(1))
                .map(|c| c.raw_value().to_owned())
                .unwrap_or_default();
            (field(e.field(2)), code, field(e.field(4)))
        })
        .collect();
    (field(msa.field(1)), field(msa.field(3)), errs)
}

/// An ADT message of sender HIS written inline (segments joined by CR).
fn adt_msg(control: &str, trigger: &str, structure: &str, body: &[&str]) -> String {
    let mut text = format!(
        "MSH|^~\\&|HIS|ST-MARIEN|CHARTBRIDGE|ST-MARIEN|20270315083000||ADT^{trigger}^{structure}|{control}|P|2.5\rEVN|{trigger}|20270315083000\r"
    );
    for seg in body {
        text.push_str(seg);
        text.push('\r');
    }
    text
}

/// An A01 of patient `id` (authority HIS) with one mobile number.
fn admit(control: &str, id: &str, phone: &str) -> String {
    adt_msg(
        control,
        "A01",
        "ADT_A01",
        &[
            &format!("PID|1||{id}^^^HIS^PI||||||||||{phone}^PRN^CP"),
            &format!("PV1|1|I|||||||||||||||||V-{id}^^^HIS^VN"),
        ],
    )
}

async fn owner(h: &Harness, id: &str) -> Option<String> {
    let cx = chartbridge::hl7::Cx {
        value: id.into(),
        authority: "HIS".into(),
    };
    h.store.patient_by_identifier(&h.sealer, &cx).await.unwrap()
}

fn rows(errs: &[(String, String, String)]) -> Vec<(&str, &str, &str)> {
    errs.iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect()
}

/// An A40 with several patient groups (ADT_A39) over the real RabbitMQ:
/// every group is applied in one transaction and the ACK says per group
/// what was done (ERR I `PID^n` merged, W 204 `MRG^n^1` prior unknown);
/// when one group is refused, nothing is applied and the AE names that
/// group's segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_a40_applies_every_patient_group_over_rabbitmq() {
    let mut h = Harness::new(None, None).await;
    let feed = enable_adt(&mut h, "quarantine").await;
    let worker = h.start_worker();
    for (c, id, phone) in [
        ("G-1", "Q-7130", "+49 176 5550 1230"),
        ("G-2", "Q-7132", "+49 176 5550 1232"),
        ("G-3", "Q-7161", "+49 176 5550 1261"),
        ("G-4", "Q-7162", "+49 176 5550 1262"),
        ("G-5", "Q-7163", "+49 176 5550 1263"),
        ("G-6", "Q-7164", "+49 176 5550 1264"),
    ] {
        assert_eq!(
            send_payload(&h, &feed, admit(c, id, phone).as_bytes()).await[0].0,
            "AA"
        );
    }
    // Both groups known: both merged, one ERR I per group.
    let (code, text, errs) = ack_detail(&send_raw(&h, &feed, &wire("a40-two-groups")).await);
    assert_eq!(code, "AA");
    assert_eq!(rows(&errs), [("PID^1", "0", "I"), ("PID^2", "0", "I")]);
    assert!(text.contains("group 2: prior patient merged"), "{text}");
    assert!(!text.contains("Q-71"), "{text}");
    for (prior, survivor) in [("Q-7130", "Q-7131"), ("Q-7132", "Q-7133")] {
        let s = owner(&h, survivor).await;
        assert!(s.is_some(), "{survivor}");
        assert_eq!(owner(&h, prior).await, s, "{prior}");
    }
    assert_ne!(owner(&h, "Q-7131").await, owner(&h, "Q-7133").await);
    // Group 1's prior unknown, group 2's known: W for group 1 only.
    let mixed = adt_msg(
        "G-7",
        "A40",
        "ADT_A39",
        &[
            "PID|1||Q-7170^^^HIS^PI",
            "MRG|Q-7160^^^HIS^PI",
            "PID|2||Q-7171^^^HIS^PI",
            "MRG|Q-7161^^^HIS^PI",
        ],
    );
    let (code, _, errs) = ack_detail(&send_raw(&h, &feed, mixed.as_bytes()).await);
    assert_eq!(code, "AA");
    assert_eq!(rows(&errs), [("MRG^1^1", "204", "W"), ("PID^2", "0", "I")]);
    assert!(owner(&h, "Q-7170").await.is_some());
    assert_eq!(owner(&h, "Q-7161").await, owner(&h, "Q-7171").await);
    // Group 2's survivor names two patients: AE 205 at PID^2^3, and
    // group 1 (a valid merge) is not applied either.
    let refused = adt_msg(
        "G-8",
        "A40",
        "ADT_A39",
        &[
            "PID|1||Q-7165^^^HIS^PI",
            "MRG|Q-7164^^^HIS^PI",
            "PID|2||Q-7162^^^HIS^PI~Q-7163^^^HIS^PI",
            "MRG|Q-7166^^^HIS^PI",
        ],
    );
    let (code, _, errs) = ack_detail(&send_raw(&h, &feed, refused.as_bytes()).await);
    assert_eq!(code, "AE");
    assert_eq!(rows(&errs), [("PID^2^3", "205", "E")]);
    assert_eq!(owner(&h, "Q-7165").await, None);
    assert_ne!(owner(&h, "Q-7164").await, None);
    assert_ne!(owner(&h, "Q-7162").await, owner(&h, "Q-7163").await);
    assert_eq!(
        phone_owners(&h, "4917655501264").await,
        vec![owner(&h, "Q-7164").await.unwrap()]
    );
    worker.stop().await;
    delete_queues(&h, &feed).await;
}

/// Over the real RabbitMQ and MLLP: a PID-13 whose telephone repetitions
/// are no numbers keeps the stored phones (AA, ERR W 102 per repetition);
/// A31 replaces a patient's phones without touching its encounter; A28
/// adds a person; A47 stays AR 201; a second PID in an A01 is AE 100 at
/// `PID^2`, nothing applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_unreadable_phones_and_person_updates_over_rabbitmq_and_mllp() {
    use chartbridge::hl7::mllp::{frame, take_frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut h = Harness::new(None, None).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let feed = enable_adt(&mut h, "quarantine").await;
    let mut text = std::fs::read_to_string(&h.config_path).unwrap();
    text = text.replace(
        "\n[adt]\nenabled = true\n",
        &format!("\n[adt]\nenabled = true\nmllp_listen = \"127.0.0.1:{port}\"\n"),
    );
    std::fs::write(&h.config_path, &text).unwrap();
    h.config = Config::from_parts(&h.config_path, &text, std::iter::empty()).unwrap();
    let worker = h.start_worker();
    assert_eq!(
        send_payload(
            &h,
            &feed,
            admit("P-1", "Q-7140", "+49 176 5550 1140").as_bytes()
        )
        .await[0]
            .0,
        "AA"
    );
    let ida = owner(&h, "Q-7140").await.unwrap();
    let reply = send_raw(&h, &feed, &wire("a08-phone-unreadable")).await;
    let (code, text, errs) = ack_detail(&reply);
    assert_eq!(code, "AA");
    assert_eq!(
        rows(&errs),
        [("PID^1^13^1", "102", "W"), ("PID^1^13^2", "102", "W")]
    );
    assert!(
        !text.contains("unbekannt") && !text.contains("5550"),
        "{text}"
    );
    assert_eq!(phone_owners(&h, "4917655501140").await, vec![ida.clone()]);
    assert_eq!(phone_owners(&h, "4917655501141").await, vec![ida]);
    // A31 over MLLP after an A01 over the queue.
    assert_eq!(
        send_payload(
            &h,
            &feed,
            admit("P-2", "Q-7142", "+49 176 5550 1143").as_bytes()
        )
        .await[0]
            .0,
        "AA"
    );
    let paul = owner(&h, "Q-7142").await.unwrap();
    wait_until(Duration::from_secs(20), "MLLP listener", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut out = frame(&wire("a31-person-update"));
    out.extend(frame(&wire("a28-person-add")));
    stream.write_all(&out).await.unwrap();
    let mut buf = Vec::new();
    let mut replies = Vec::new();
    let mut chunk = [0u8; 4096];
    while replies.len() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
            .await
            .expect("ACK in time")
            .unwrap();
        assert!(n > 0, "connection closed early");
        buf.extend_from_slice(&chunk[..n]);
        while let Some(m) = take_frame(&mut buf) {
            replies.push(m);
        }
    }
    assert_eq!(ack_detail(&replies[0]).0, "AA");
    assert!(ack_detail(&replies[0]).2.is_empty());
    assert_eq!(ack_detail(&replies[1]).0, "AA");
    assert!(phone_owners(&h, "4917655501143").await.is_empty());
    assert_eq!(phone_owners(&h, "4917655501142").await, vec![paul.clone()]);
    let visit = chartbridge::hl7::Cx {
        value: "V-Q-7142".into(),
        authority: "HIS".into(),
    };
    assert_eq!(
        h.store.encounter_state(&h.sealer, &visit).await.unwrap(),
        Some(("in-progress".to_owned(), paul))
    );
    let rosa = owner(&h, "Q-7144").await.unwrap();
    assert_eq!(phone_owners(&h, "4917655501144").await, vec![rosa.clone()]);
    let encounters: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM adt_encounters WHERE patient_id = $1")
            .bind(&rosa)
            .fetch_one(h.store.pool())
            .await
            .unwrap();
    assert_eq!(encounters, 0);
    // A47 (change patient identifier list) is not applied.
    let a47 = adt_msg(
        "P-3",
        "A47",
        "ADT_A30",
        &["PID|1||Q-7147^^^HIS^PI", "MRG|Q-7140^^^HIS^PI"],
    );
    let (code, _, errs) = ack_detail(&send_raw(&h, &feed, a47.as_bytes()).await);
    assert_eq!((code.as_str(), errs[0].1.as_str()), ("AR", "201"));
    assert_eq!(owner(&h, "Q-7147").await, None);
    // A second PID in an A01: AE 100 at PID^2, neither patient applied.
    let (code, _, errs) = ack_detail(&send_raw(&h, &feed, &wire("a01-second-pid")).await);
    assert_eq!(code, "AE");
    assert_eq!(rows(&errs), [("PID^2", "100", "E")]);
    assert_eq!(owner(&h, "Q-7145").await, None);
    assert_eq!(owner(&h, "Q-7146").await, None);
    worker.stop().await;
    delete_queues(&h, &feed).await;
}

/// A WhatsApp notice that the user changed number retires the
/// conversation: even under `phone_match = "accept"`, the number in the
/// identity map no longer names the patient, so the next message from it
/// is held for review instead of being filed (and later deleted) under the
/// patient the number used to belong to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_number_change_notice_stops_phone_matching() {
    let mut h = Harness::new(None, None).await;
    let feed = enable_adt(&mut h, "accept").await;
    let (patient, encounter) = seed(&h).await;
    let worker = h.start_worker();
    let a01 = trunk_zero_a01(&h);
    let rows = send_payload(&h, &feed, a01.as_bytes()).await;
    assert_eq!(rows[0].0, "AA", "{rows:?}");
    h.publish(&whatsapp_text(&h)).await;
    let got = h
        .wait_state(&h.key("whatsapp", TEXT_ID), MessageState::Archived)
        .await;
    assert_linked(&h, &got.resource.unwrap(), &patient, &encounter).await;

    let hook: Value = serde_json::from_slice(&whatsapp_text(&h)).unwrap();
    let value = &hook["entry"][0]["changes"][0]["value"];
    let first = &value["messages"][0];
    let (from, id, ts) = (
        first["from"].as_str().unwrap().to_owned(),
        first["id"].as_str().unwrap().to_owned(),
        first["timestamp"].as_str().unwrap().to_owned(),
    );
    let conversation = format!(
        "{}:{from}",
        value["metadata"]["phone_number_id"].as_str().unwrap()
    );
    let with_message = |m: Value| {
        let mut v = hook.clone();
        v["entry"][0]["changes"][0]["value"]["messages"] = json!([m]);
        serde_json::to_vec(&v).unwrap()
    };
    h.publish(&with_message(json!({"from": from, "id": format!("{id}-sys"),
        "timestamp": ts, "type": "system",
        "system": {"body": "changed", "type": "user_changed_number", "new_wa_id": "4915799999999"}})))
        .await;
    let token = chartbridge::resolve::conversation_token(&h.sealer, "whatsapp", &conversation);
    wait_until(Duration::from_secs(60), "conversation retired", || async {
        h.store.conversation_retired(&token).await.unwrap()
    })
    .await;
    h.publish(&with_message(
        json!({"from": from, "id": format!("{id}-next"),
        "timestamp": ts, "type": "text", "text": {"body": "Hallo, wer ist da?"}}),
    ))
    .await;
    let next = chartbridge::event::MessageKey {
        source: "whatsapp".into(),
        message_id: format!("{id}-next"),
    };
    let held = h.wait_state(&next, MessageState::Quarantined).await;
    assert_eq!(held.reason, "unresolved_conversation");
    worker.stop().await;
    delete_queues(&h, &feed).await;
}
