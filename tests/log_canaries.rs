//! No patient data in logs (DSK I.9) and no messenger id in what lives long
//! (issue 11, "Pseudonyms for what lives long"): the real binary runs with
//! `RUST_LOG=trace` (every crate: lapin, sqlx, reqwest, hyper, …) over events
//! whose text, names, phone numbers, WhatsApp message ids (which embed the
//! phone number), Matrix event and user ids, conversation and sender ids,
//! patient identifier, file names and captions carry canary strings, through
//! the archive, not-relevant, quarantine and dead-letter paths and the whole
//! deletion cycle (receipts, metadata purge). Both log formats are captured
//! (stderr and stdout), the `/metrics` exposition is scraped after each run,
//! and at the end every table of the store (the proof log included), the
//! SQLite file and its write-ahead log, the dead letters, and the output of
//! `status`, `quarantine list`, `conversation list` and `dlq list`
//! are read; no canary may appear in any of them.

mod common;

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use chartbridge::store::{DeletionState, MessageState};
use common::standins::{MediaApi, Medium};
use common::{Harness, repo, wait_until};
use serde_json::{Value, json};
use sha2::Digest;

const TEXT: &str = "CANARYTEXT Wundkontrolle bei Frau Canary";
const NAME: &str = "CANARYNAME Erika";
const PHONE: &str = "4915100731731";
const ROOM: &str = "!CANARYROOM:hospital.invalid";
const SENDER: &str = "@CANARYSENDER:hospital.invalid";
const PATIENT_ID: &str = "CANARY4711";
const FILE: &str = "CANARYFILE-knoechel.png";
const CAPTION: &str = "CANARYCAPTION Knöchel links";

/// Marks the WhatsApp message ids of this test.
const WAMID: &str = "CANARYWAMID";
/// Marks the Matrix event ids (canonical `message_id`, `event_id`).
const EVENT: &str = "CANARYEVT";

/// Everything that must never reach a log. The KIS holds the seeded
/// patient's name ("Mustermann"): answers of the KIS must not be logged either.
const CANARIES: [&str; 12] = [
    "CANARYTEXT",
    "CANARYNAME",
    PHONE,
    "CANARYROOM",
    "CANARYSENDER",
    PATIENT_ID,
    "CANARYFILE",
    "CANARYCAPTION",
    "Mustermann",
    "Wundkontrolle",
    WAMID,
    EVENT,
];

/// The canaries, and the phone number as a WhatsApp id embeds it (base64).
fn canaries() -> Vec<String> {
    let mut all: Vec<String> = CANARIES.iter().map(|c| (*c).to_owned()).collect();
    all.push(phone_b64());
    all
}

/// [`PHONE`] in base64 without padding, as a wamid carries it.
fn phone_b64() -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(PHONE)
}

/// A WhatsApp message id shaped like Meta's (`wamid.HBgN` and base64 of a
/// structure holding the sender's number), without the run's suffix.
fn wamid(name: &str) -> String {
    format!("wamid.HBgN{}{WAMID}{name}", phone_b64())
}

/// The first canary in `bytes`, with the text around it.
fn find_canary(bytes: &[u8]) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(bytes);
    canaries().into_iter().find_map(|c| {
        text.find(&c).map(|at| {
            let from = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let to = text[at..].find('\n').map_or(text.len(), |i| at + i);
            (c, text[from..to.min(from + 2000)].to_owned())
        })
    })
}

/// Runs the CLI against the harness's configuration; its standard output.
fn cli(h: &Harness, args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chartbridge"));
    cmd.arg("--config").arg(h.config_file()).args(args);
    for (var, _) in std::env::vars() {
        if var.starts_with(chartbridge::config::ENV_PREFIX) {
            cmd.env_remove(var);
        }
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "chartbridge {args:?}: {out:?}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct Bridge {
    child: Child,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(h: &Harness, json_logs: bool) -> Bridge {
    let name = if json_logs { "json" } else { "text" };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chartbridge"));
    cmd.arg("--config").arg(h.config_file());
    if json_logs {
        cmd.arg("--json-logs");
    }
    cmd.arg("run")
        .current_dir(h.dir.path())
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(File::create(h.dir.path().join(format!("{name}.stdout"))).unwrap())
        .stderr(File::create(h.dir.path().join(format!("{name}.stderr"))).unwrap());
    for (var, _) in std::env::vars() {
        if var.starts_with(chartbridge::config::ENV_PREFIX) {
            cmd.env_remove(var);
        }
    }
    Bridge {
        child: cmd.spawn().expect("start chartbridge run"),
    }
}

async fn stop(mut bridge: Bridge) {
    let pid = bridge.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    while bridge.child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(30), "no exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /metrics` of the running binary.
async fn scrape(port: u16) -> String {
    let r = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("/metrics answers");
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

fn canonical(h: &Harness, id: &str) -> Value {
    let mut v: Value = serde_json::from_slice(&h.fixture("events/text-canonical.json")).unwrap();
    v["message_id"] = format!("${EVENT}-{id}-{}", h.run).into();
    v["event_id"] = format!("${EVENT}-event-{id}-{}", h.run).into();
    v["text"] = TEXT.into();
    v["conversation"]["id"] = ROOM.into();
    v["sender"] = json!({"id": SENDER, "role": "clinician", "display": NAME});
    v["recipients"] =
        json!([{"id": format!("@{PHONE}:hospital.invalid"), "role": "patient", "display": NAME}]);
    v["case"]["patient"]["identifier"]["value"] = PATIENT_ID.into();
    // The case seed_patient creates for the patient.
    v["case"]["encounter"]["identifier"]["value"] =
        format!("F-{}", PATIENT_ID.replacen('1', "2", 1)).into();
    v
}

fn image(v: &mut Value, png: &[u8], sha256: Option<String>) {
    v.as_object_mut().unwrap().remove("text");
    let mut media = json!({"mime_type": "image/png", "file_name": FILE, "caption": CAPTION,
        "data_base64": base64::engine::general_purpose::STANDARD.encode(png)});
    if let Some(s) = sha256 {
        media["sha256"] = s.into();
    }
    v["media"] = media;
}

fn whatsapp(h: &Harness, media_id: &str) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
    "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "4930123456", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": NAME}, "wa_id": PHONE}],
        "messages": [
            {"from": PHONE, "id": format!("{}-{}", wamid("text"), h.run), "timestamp": "1764322200",
             "type": "text", "text": {"body": TEXT}},
            {"from": PHONE, "id": format!("{}-{}", wamid("image"), h.run), "timestamp": "1764322260",
             "type": "document", "document": {"id": media_id, "mime_type": "image/png",
                "filename": FILE, "caption": CAPTION}}
        ]}}]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i9_no_patient_data_in_trace_logs() {
    let png = std::fs::read(repo().join("fixtures/media/wound.png")).unwrap();
    let media = MediaApi::start().await;
    media.put(
        "canary-medium",
        Medium {
            bytes: png.clone(),
            mime_type: "image/png".into(),
        },
    );
    let h = Harness::new(None, Some(&media.url)).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = std::fs::read_to_string(h.config_file()).unwrap();
    std::fs::write(
        h.config_file(),
        config.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        ),
    )
    .unwrap();
    let (patient, _) = h.seed_patient(PATIENT_ID).await;
    h.store
        .set_link(
            &chartbridge::resolve::conversation_token(
                &h.sealer,
                "whatsapp",
                &format!("106540352242922:{PHONE}"),
            ),
            &chartbridge::store::Link {
                patient,
                encounter: None,
            },
            0,
        )
        .await
        .unwrap();

    let mut payloads: Vec<Vec<u8>> = Vec::new();
    let mut expect = Vec::new();
    let key = |id: &str| h.key("matrix", &format!("${EVENT}-{id}"));
    // Archived: text, inline image with file name and caption; WhatsApp text and document.
    payloads.push(serde_json::to_vec(&canonical(&h, "text")).unwrap());
    expect.push((key("text"), MessageState::Archived, ""));
    let mut v = canonical(&h, "image");
    image(&mut v, &png, Some(hex::encode(sha2::Sha256::digest(&png))));
    payloads.push(serde_json::to_vec(&v).unwrap());
    expect.push((key("image"), MessageState::Archived, ""));
    payloads.push(serde_json::to_vec(&whatsapp(&h, "canary-medium")).unwrap());
    expect.push((
        h.key("whatsapp", &wamid("text")),
        MessageState::Archived,
        "",
    ));
    expect.push((
        h.key("whatsapp", &wamid("image")),
        MessageState::Archived,
        "",
    ));
    // Not relevant.
    let mut v = canonical(&h, "nr");
    v["mark"] = "not-relevant".into();
    payloads.push(serde_json::to_vec(&v).unwrap());
    expect.push((key("nr"), MessageState::NotRelevant, "marked-not-relevant"));
    // Quarantined: unknown patient, hash mismatch, future send time.
    let mut v = canonical(&h, "unknown");
    v["case"]["patient"]["identifier"]["value"] = format!("{PATIENT_ID}-nobody").into();
    v.as_object_mut().unwrap()["case"]
        .as_object_mut()
        .unwrap()
        .remove("encounter");
    payloads.push(serde_json::to_vec(&v).unwrap());
    expect.push((key("unknown"), MessageState::Quarantined, "unknown_patient"));
    let mut v = canonical(&h, "hash");
    image(&mut v, &png, Some("ab".repeat(32)));
    payloads.push(serde_json::to_vec(&v).unwrap());
    expect.push((
        key("hash"),
        MessageState::Quarantined,
        "media_hash_mismatch",
    ));
    let mut v = canonical(&h, "future");
    v["sent_at"] = "2099-01-01T00:00:00Z".into();
    payloads.push(serde_json::to_vec(&v).unwrap());
    expect.push((
        key("future"),
        MessageState::Quarantined,
        "timestamp_in_future",
    ));
    // Held: WhatsApp messages with broken timestamps, each quarantined on its
    // own (invalid_entry) with the entry sealed, full of canaries.
    let mut v = whatsapp(&h, "canary-medium");
    for (i, ts) in [PHONE, NAME].into_iter().enumerate() {
        let m = &mut v["entry"][0]["changes"][0]["value"]["messages"][i];
        m["timestamp"] = ts.into();
        m["id"] = format!("{}-{}", wamid(&format!("broken{i}")), h.run).into();
        expect.push((
            h.key("whatsapp", &wamid(&format!("broken{i}"))),
            MessageState::Quarantined,
            "invalid_entry",
        ));
    }
    payloads.push(serde_json::to_vec(&v).unwrap());
    // Dead-lettered: broken JSON, a schema violation, an impossible value,
    // all full of canaries.
    let whole = serde_json::to_string(&canonical(&h, "dead")).unwrap();
    let dead: Vec<Vec<u8>> = vec![
        whole.as_bytes()[..whole.len() - 40].to_vec(),
        {
            let mut v = canonical(&h, "dead2");
            v["sent_at"] = PHONE.into();
            v[NAME] = TEXT.into();
            serde_json::to_vec(&v).unwrap()
        },
        {
            let mut v = canonical(&h, "dead3");
            v["sent_at"] = "2026-02-30T10:00:00Z".into();
            serde_json::to_vec(&v).unwrap()
        },
        format!("{{\"{NAME}\": \"{TEXT}\", \"{PHONE}\": [1, 2,").into_bytes(),
    ];
    for p in &dead {
        assert!(
            CANARIES
                .iter()
                .any(|c| String::from_utf8_lossy(p).contains(c))
        );
    }

    let mut outputs: Vec<(&str, String)> = Vec::new();
    let mut dead_letters = Vec::new();
    for json_logs in [false, true] {
        let bridge = start(&h, json_logs);
        if !json_logs {
            for p in payloads.iter().chain(&dead) {
                h.publish(p).await;
            }
            for (k, state, reason) in &expect {
                let got = h.wait_state(k, *state).await;
                if !reason.is_empty() {
                    assert_eq!(&got.reason, reason, "{k}");
                }
            }
            // The dead letters wait in their queue; `dlq list`
            // shows them (and hands them back), then they are taken.
            wait_until(Duration::from_secs(30), "dead letters", || async {
                h.broker.queue_depths().await.unwrap().1 as usize >= dead.len()
            })
            .await;
            outputs.push(("dlq list", cli(&h, &["dlq", "list"])));
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while got.len() < dead.len() {
                assert!(Instant::now() < deadline, "dead letters: {}", got.len());
                got.extend(h.drain_queue(&h.config.broker.dead_letter_queue).await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            dead_letters.extend(got);
        } else {
            // The second worker, logging JSON, sees the redeliveries and
            // another bad payload.
            for p in payloads.iter().take(2).chain(dead.iter().take(1)) {
                h.publish(p).await;
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut got = Vec::new();
            while got.is_empty() {
                assert!(Instant::now() < deadline, "redeliveries handled");
                got.extend(h.drain_queue(&h.config.broker.dead_letter_queue).await);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            dead_letters.extend(got);
        }
        let commands = h.expect_deletions(if json_logs { 0 } else { 4 }).await;
        // The ids were live: the gateway gets them, to delete the copies.
        let sent = serde_json::to_string(&commands).unwrap();
        assert!(json_logs || (sent.contains(WAMID) && sent.contains(EVENT)));
        // The deletion cycle: the gateway confirms each deletion.
        for c in &commands {
            let receipt = serde_json::json!({"schema": chartbridge::delete::RECEIPT_SCHEMA,
                "deletion_id": c.deletion_id, "status": "deleted"});
            h.broker
                .publish_receipt(&serde_json::to_vec(&receipt).unwrap())
                .await
                .unwrap();
        }
        let archived = expect.iter().filter(|e| e.1 == MessageState::Archived);
        for (k, _, _) in archived.filter(|_| !json_logs) {
            wait_until(Duration::from_secs(30), "deletion confirmed", || async {
                h.store.deletion_state(k).await.unwrap() == Some(DeletionState::Confirmed)
            })
            .await;
        }
        let metrics = scrape(port).await;
        std::fs::write(
            h.dir.path().join(format!(
                "{}.metrics",
                if json_logs { "json" } else { "text" }
            )),
            &metrics,
        )
        .unwrap();
        stop(bridge).await;
    }

    // The exposition was really scraped after the traffic: the paths above
    // show up in it, by codes only.
    let metrics = std::fs::read_to_string(h.dir.path().join("text.metrics")).unwrap();
    for needle in [
        "chartbridge_messages_total{state=\"archived\",reason=\"\"} 4",
        "chartbridge_messages_total{state=\"quarantined\",reason=\"unknown_patient\"} 1",
        "chartbridge_messages_total{state=\"quarantined\",reason=\"invalid_entry\"} 2",
        "chartbridge_dead_lettered_total{reason=",
        "chartbridge_quarantine_items{reason=\"media_hash_mismatch\",age=\"lt_1h\"} 1",
        "chartbridge_kis_request_duration_seconds_bucket{operation=\"transaction\",outcome=\"success\"",
        "chartbridge_media_download_duration_seconds_count{outcome=\"ok\"} 1",
        "chartbridge_proof_log_size 4",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} not in /metrics:\n{metrics}"
        );
    }
    let mut total = 0;
    for name in [
        "text.stderr",
        "text.stdout",
        "json.stderr",
        "json.stdout",
        "text.metrics",
        "json.metrics",
    ] {
        let log = std::fs::read_to_string(h.dir.path().join(name)).unwrap();
        total += log.len();
        for canary in canaries() {
            if let Some(at) = log.find(&canary) {
                let line_start = log[..at].rfind('\n').map_or(0, |i| i + 1);
                let line_end = log[at..].find('\n').map_or(log.len(), |i| at + i);
                panic!(
                    "{canary} in {name}:\n{}",
                    &log[line_start..line_end.min(line_start + 2000)]
                );
            }
        }
    }
    // The capture really was at the most verbose level, dependencies included.
    let text = std::fs::read_to_string(h.dir.path().join("text.stderr")).unwrap();
    for needle in [
        "TRACE",
        "lapin",
        "sqlx",
        "hyper",
        "message terminal",
        "event refused",
    ] {
        assert!(text.contains(needle), "no {needle:?} in the trace log");
    }
    eprintln!("captured {total} bytes of log output");
    assert!(
        total > 10_000,
        "suspiciously little log output: {total} bytes"
    );

    // What the operator's commands print.
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["quarantine", "list"],
        &["conversation", "list"],
    ] {
        outputs.push((args[0], cli(&h, args)));
    }
    assert!(
        outputs
            .iter()
            .any(|(_, o)| o.contains("invalid_json") || o.contains("schema_violation")),
        "dlq list shows the reasons: {outputs:?}"
    );
    for (command, output) in &outputs {
        if let Some((canary, around)) = find_canary(output.as_bytes()) {
            panic!("{canary} in the output of `{command}`:\n{around}");
        }
    }
    // The dead letters: sealed, their reasons and places in clear.
    assert_eq!(dead_letters.len(), dead.len() + 1);
    for m in &dead_letters {
        let mut all = m.delivery.data.clone();
        for (name, value) in m.delivery.properties.headers().clone().unwrap().inner() {
            all.extend_from_slice(format!("\n{name}: {value:?}").as_bytes());
        }
        all.extend_from_slice(format!("\n{:?}", m.delivery.properties).as_bytes());
        if let Some((canary, around)) = find_canary(&all) {
            panic!("{canary} in a dead letter:\n{around}");
        }
    }

    // The end of the deletion cycle: the metadata purge, then every table
    // of the store (the proof log included), and the database file itself.
    let now = chartbridge::store::millis(chrono::Utc::now());
    let purged = h.store.purge_metadata(now, now).await.unwrap();
    assert_eq!(purged.archived, 4, "{purged:?}");
    let tables = h.store.every_value().await.unwrap();
    for table in ["messages", "log_leaves", "quarantine", "content_digests"] {
        assert!(
            tables.iter().any(|t| t.table == table && t.rows > 0),
            "{table} holds rows"
        );
    }
    let mut read = 0;
    for t in &tables {
        read += t.bytes.len();
        if let Some((canary, around)) = find_canary(&t.bytes) {
            panic!("{canary} in table {}:\n{around}", t.table);
        }
    }
    assert!(
        read > 1_000,
        "suspiciously little in the store: {read} bytes"
    );
    for file in ["state.db", "state.db-wal"] {
        if let Ok(raw) = std::fs::read(h.dir.path().join(file))
            && let Some((canary, _)) = find_canary(&raw)
        {
            panic!("{canary} in {file}");
        }
    }
}
