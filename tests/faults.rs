//! Fault handling of the worker, end to end: the KIS down (circuit breaker,
//! readiness, no busy loop), the broker restarted and a consumer cancelled
//! (reconnect, re-subscribe, nothing lost or doubled), the store's disk full
//! (stop consuming, nothing acked, recover), size limits (dead letter and
//! quarantine with reason codes). Real RabbitMQ (the shared node, or a
//! private node from `deploy/dev/chaos-rabbit.sh` where it is restarted),
//! the real FHIR server, SQLite.

mod common;

use std::process::Command;
use std::time::Duration;

use chartbridge::config::Config;
use chartbridge::consume::{Broker, REASON_HEADER};
use chartbridge::event::MessageKey;
use chartbridge::store::{MessageState, Store};
use common::chaos_proxy::ChaosProxy;
use common::standins::{MediaApi, Medium};
use common::{Harness, fhir_url, repo, wait_until};
use serde_json::Value;

/// Rewrites the harness config file and reloads `h.config`.
fn reconfigure(h: &mut Harness, edit: impl FnOnce(String) -> String) {
    let text = edit(std::fs::read_to_string(&h.config_path).unwrap());
    std::fs::write(&h.config_path, &text).unwrap();
    h.config = Config::from_parts(&h.config_path, &text, std::iter::empty()).unwrap();
}

/// The harness's `[http] listen` line (any free port).
const HTTP_ANY_PORT: &str = "listen = \"127.0.0.1:0\"";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `/readyz`: status and body.
async fn readyz(port: u16) -> (u16, String) {
    match reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

async fn wait_ready(port: u16, want: u16, part: &str) {
    wait_until(
        Duration::from_secs(60),
        &format!("/readyz {want} with {part}"),
        || async move {
            let (status, body) = readyz(port).await;
            status == want && body.contains(part)
        },
    )
    .await;
}

/// `n` distinct text and image events; their keys.
fn events(h: &Harness, n: usize) -> (Vec<Vec<u8>>, Vec<(MessageKey, &'static str)>) {
    let fixtures = [
        ("events/text-canonical.json", "Communication"),
        ("events/image-canonical.json", "DocumentReference"),
    ];
    let mut payloads = Vec::new();
    let mut keys = Vec::new();
    for i in 0..n {
        let (fixture, rt) = fixtures[i % 2];
        let mut v: Value = serde_json::from_slice(&h.fixture(fixture)).unwrap();
        for k in ["message_id", "event_id"] {
            v[k] = format!("{}-{i:03}", v[k].as_str().unwrap()).into();
        }
        keys.push((
            MessageKey {
                source: v["source"].as_str().unwrap().into(),
                message_id: v["message_id"].as_str().unwrap().into(),
            },
            rt,
        ));
        payloads.push(serde_json::to_vec(&v).unwrap());
    }
    (payloads, keys)
}

async fn archived(store: &Store) -> i64 {
    store
        .state_counts()
        .await
        .unwrap()
        .iter()
        .filter(|c| c.state == MessageState::Archived.as_str())
        .map(|c| c.count)
        .sum()
}

async fn assert_each_archived_once(h: &Harness, keys: &[(MessageKey, &str)]) {
    for (key, rt) in keys {
        let stored = h.state(key).await.expect("terminal");
        assert_eq!(stored.state, MessageState::Archived, "{key}");
        let ids = h.kis_ids(rt, key).await;
        assert_eq!(ids.len(), 1, "{key}: {ids:?}");
        assert_eq!(stored.resource.as_deref(), Some(ids[0].as_str()));
    }
    assert_eq!(h.store.log_size().await.unwrap(), keys.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_kis_outage_opens_the_circuit_readiness_follows_nothing_lost() {
    chartbridge::telemetry::init(false);
    let proxy = ChaosProxy::start(&fhir_url(), Duration::from_secs(3)).await;
    let mut h = Harness::new(Some(&proxy.url), None).await;
    h.seed_patient("P-1001").await;
    let port = free_port();
    reconfigure(&mut h, |t| {
        t.replace(
            "backoff_max = \"200ms\"",
            "backoff_max = \"200ms\"\ntimeout = \"10s\"\nbreaker_threshold = 3\n\
             breaker_cooldown = \"250ms\"\nbreaker_cooldown_max = \"1s\"",
        )
        .replace(HTTP_ANY_PORT, &format!("listen = \"127.0.0.1:{port}\""))
    });
    let (payloads, keys) = events(&h, 20);
    proxy.set_outage(true);
    let worker = h.start_worker();
    for p in &payloads {
        h.publish(p).await;
    }
    wait_ready(port, 503, r#""kis":"down""#).await;
    assert!(readyz(port).await.1.contains(r#""broker":"up""#));

    // While the circuit is open, requests are probes only: a handful per
    // second at the capped cooldown, not a retry storm from 8 tasks.
    let before = proxy.stats.outage_refusals();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = proxy.stats.outage_refusals() - before;
    assert!(during <= 10, "{during} requests in 4 s of outage");
    assert_eq!(archived(&h.store).await, 0);
    let (status, _) = readyz(port).await;
    assert_eq!(status, 503);

    proxy.set_outage(false);
    wait_ready(port, 200, r#""kis":"up""#).await;
    wait_until(Duration::from_secs(60), "all archived", || async {
        archived(&h.store).await == keys.len() as i64
    })
    .await;
    worker.stop().await;
    assert_each_archived_once(&h, &keys).await;
    let counters = chartbridge::telemetry::snapshot();
    assert!(
        counters
            .get("kis_circuit_opened_total")
            .copied()
            .unwrap_or(0)
            >= 1
    );
}

/// A private RabbitMQ node, stopped when dropped.
struct PrivateBroker {
    port: u16,
}

impl PrivateBroker {
    fn start(port: u16) -> (Self, String) {
        let out = Command::new(repo().join("deploy/dev/chaos-rabbit.sh"))
            .arg("start")
            .env("CHAOS_RABBIT_PORT", port.to_string())
            .output()
            .expect("run chaos-rabbit.sh");
        assert!(
            out.status.success(),
            "chaos-rabbit.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        (Self { port }, url)
    }

    fn run(&self, action: &str) {
        let ok = Command::new(repo().join("deploy/dev/chaos-rabbit.sh"))
            .arg(action)
            .env("CHAOS_RABBIT_PORT", self.port.to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "chaos-rabbit.sh {action}");
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("deploy/dev/chaos-rabbit.sh"))
            .arg("stop")
            .env("CHAOS_RABBIT_PORT", self.port.to_string())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_broker_restart_reconnects_and_loses_nothing() {
    let (node, url) = PrivateBroker::start(5674);
    let mut h = Harness::on_broker(None, None, &url).await;
    h.seed_patient("P-1001").await;
    let port = free_port();
    reconfigure(&mut h, |t| {
        t.replace(HTTP_ANY_PORT, &format!("listen = \"127.0.0.1:{port}\""))
    });
    let (payloads, keys) = events(&h, 40);
    for p in &payloads {
        h.publish(p).await;
    }
    let worker = h.start_worker();
    wait_until(Duration::from_secs(60), "some archived", || async {
        archived(&h.store).await >= 5
    })
    .await;
    node.run("stop_app");
    wait_ready(port, 503, r#""broker":"down""#).await;
    let at_stop = archived(&h.store).await;
    node.run("start_app");
    wait_ready(port, 200, r#""broker":"up""#).await;
    wait_until(Duration::from_secs(90), "all archived", || async {
        archived(&h.store).await == keys.len() as i64
    })
    .await;
    eprintln!("broker stopped with {at_stop}/{} archived", keys.len());
    // The harness's own connection died with the broker.
    h.broker = Broker::connect(&h.config.broker).await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < keys.len() {
        for c in h.expect_deletions(1).await {
            seen.insert(c.deletion_id);
        }
    }
    worker.stop().await;
    assert_each_archived_once(&h, &keys).await;
    let counters = chartbridge::telemetry::snapshot();
    assert!(
        counters
            .keys()
            .any(|k| k.starts_with("broker_reconnects_total")),
        "{counters:?}"
    );
    drop(h);
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_cancelled_consumer_resubscribes() {
    let h = Harness::new(None, None).await;
    h.seed_patient("P-1001").await;
    let (payloads, keys) = events(&h, 4);
    let worker = h.start_worker();
    h.publish(&payloads[0]).await;
    wait_until(Duration::from_secs(30), "first archived", || async {
        archived(&h.store).await == 1
    })
    .await;
    // Deleting the queue cancels the worker's consumer; the next session
    // declares it again and consumes from it.
    let ch = h.broker.consumer_channel(1).await.unwrap();
    ch.queue_delete(
        h.config.broker.events_queue.as_str().into(),
        lapin::options::QueueDeleteOptions::default(),
    )
    .await
    .unwrap();
    let queue = h.config.broker.events_queue.clone();
    wait_until(Duration::from_secs(30), "the queue declared again", || {
        let queue = queue.clone();
        let h = &h;
        async move {
            // A failed passive declare closes its channel: a fresh one each time.
            let ch = h.broker.consumer_channel(1).await.unwrap();
            ch.queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .is_ok()
        }
    })
    .await;
    // A queue declared a moment ago may nack the first publishes while its
    // leader starts.
    for p in &payloads[1..] {
        let mut tries = 0;
        while let Err(e) = h.broker.publish_event(p).await {
            tries += 1;
            assert!(tries < 50, "publish to the declared queue: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    wait_until(Duration::from_secs(30), "all archived", || async {
        archived(&h.store).await == keys.len() as i64
    })
    .await;
    worker.stop().await;
    assert_each_archived_once(&h, &keys).await;
    let counters = chartbridge::telemetry::snapshot();
    assert!(
        counters.contains_key("broker_reconnects_total{cause=consumer_cancelled}"),
        "{counters:?}"
    );
}

/// A tmpfs of `size` mounted at `path`, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &std::path::Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(path.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `path` with a filler file.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_disk_full_stops_consuming_acks_nothing_then_recovers() {
    chartbridge::telemetry::init(false);
    let mut h = Harness::new(None, None).await;
    let mount = h.dir.path().join("small");
    let Some(_tmpfs) = Tmpfs::mount(&mount, "4m") else {
        // Mounting needs CAP_SYS_ADMIN (root in CI); elsewhere this cannot run.
        panic!("cannot mount a tmpfs at {}: run as root", mount.display());
    };
    h.seed_patient("P-1001").await;
    let port = free_port();
    let db = mount.join("state.db");
    let old_url = h.config.store.url.expose().to_owned();
    let new_url = format!("sqlite://{}?mode=rwc", db.display());
    reconfigure(&mut h, |t| {
        t.replace(&old_url, &new_url)
            .replace(HTTP_ANY_PORT, &format!("listen = \"127.0.0.1:{port}\""))
    });
    h.store = Store::open(&new_url, 2, &h.sealer).await.unwrap();
    let (payloads, keys) = events(&h, 12);
    let worker = h.start_worker();
    h.publish(&payloads[0]).await;
    wait_until(Duration::from_secs(30), "first archived", || async {
        archived(&h.store).await == 1
    })
    .await;
    wait_ready(port, 200, r#""store":"up""#).await;

    let filler = mount.join("filler");
    fill(&filler);
    for p in &payloads[1..] {
        h.publish(p).await;
    }
    wait_ready(port, 503, r#""store":"down""#).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stuck = archived(&h.store).await;
    assert!(
        stuck < keys.len() as i64,
        "everything stored on a full disk"
    );

    std::fs::remove_file(&filler).unwrap();
    wait_ready(port, 200, r#""store":"up""#).await;
    wait_until(Duration::from_secs(60), "all archived", || async {
        let counts = h.store.state_counts().await.unwrap();
        eprintln!("{counts:?}");
        archived(&h.store).await == keys.len() as i64
    })
    .await;
    worker.stop().await;
    assert_each_archived_once(&h, &keys).await;
    // Nothing was dead-lettered, nothing quarantined: the full disk only delayed.
    assert!(
        h.drain_queue(&h.config.broker.dead_letter_queue)
            .await
            .is_empty()
    );
    h.store.close().await;
    eprintln!("disk full with {stuck}/{} archived", keys.len());
}

fn reason(m: &lapin::message::BasicGetMessage) -> String {
    let headers = m.delivery.properties.headers().clone().unwrap();
    match headers.inner().get(REASON_HEADER).expect("reason header") {
        lapin::types::AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i12_event_and_media_over_the_limits_end_with_reason_codes() {
    let media = MediaApi::start().await;
    let mut h = Harness::new(None, Some(&media.url)).await;
    let (patient, _) = h.seed_patient("P-1001").await;
    reconfigure(&mut h, |t| {
        t.replace("prefetch = 16", "prefetch = 16\nmax_event_bytes = 4096")
    });
    // A medium one byte over media.max_bytes (1 MiB in the harness).
    media.put(
        "1376223850470843",
        Medium {
            bytes: vec![7u8; 1024 * 1024 + 1],
            mime_type: "image/png".into(),
        },
    );
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
    let mut big: Value = serde_json::from_slice(&h.fixture("events/text-canonical.json")).unwrap();
    big["text"] = "x".repeat(5000).into();
    h.publish(&serde_json::to_vec(&big).unwrap()).await;
    h.publish(&h.fixture("events/whatsapp-text-image.json"))
        .await;

    let image = h.key("whatsapp", "wamid.HBgLNDkxNTExMjM0NTY3OBUCABIYFDNBMDA2");
    let got = h.wait_state(&image, MessageState::Quarantined).await;
    assert_eq!(got.reason, "media_too_large");
    let text = h.key("whatsapp", "wamid.HBgLNDkxNTExMjM0NTY3OBUCABIYFDNBMDA1");
    h.wait_state(&text, MessageState::Archived).await;
    let mut dead = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while dead.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        dead.extend(h.drain_queue(&h.config.broker.dead_letter_queue).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.stop().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(reason(&dead[0]), "too_large");
    let big_key = h.key("matrix", "$msg-0001");
    assert!(h.state(&big_key).await.is_none());
    assert!(h.kis_ids("DocumentReference", &image).await.is_empty());
}

/// A Matrix redaction handled while its target is still being processed
/// (claimed, the KIS down, so not archived yet) waits for the target: once
/// the KIS is back and the target archived, its record is marked. Before,
/// the redaction found nothing archived, was counted and forgotten, and
/// the record was archived without the mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redaction_waits_for_its_target_still_in_flight() {
    let proxy = ChaosProxy::start(&fhir_url(), Duration::from_secs(3)).await;
    let mut h = Harness::new(Some(&proxy.url), None).await;
    reconfigure(&mut h, |t| {
        t.replace(
            "backoff_max = \"200ms\"",
            "backoff_max = \"200ms\"\nbreaker_threshold = 3\n\
             breaker_cooldown = \"250ms\"\nbreaker_cooldown_max = \"1s\"",
        )
    });
    let (patient, encounter) = h.seed_patient("P-1001").await;
    let room = format!("!inflight-{}:hospital.invalid", h.run);
    let key = |id: &str| MessageKey {
        source: "matrix".into(),
        message_id: id.to_owned(),
    };
    h.store
        .set_link(
            &chartbridge::resolve::conversation_token(&h.sealer, "matrix", &room),
            &chartbridge::store::Link {
                patient,
                encounter: Some(encounter),
            },
            0,
        )
        .await
        .unwrap();
    let now = chartbridge::store::millis(chrono::Utc::now());
    let target = format!("$target-{}", h.run);
    let event = |body: Value| serde_json::to_vec(&body).unwrap();
    // The worker is up (it reads the KIS's capabilities at start), then
    // the KIS goes down.
    let worker = h.start_worker();
    let warm = format!("$warm-{}", h.run);
    h.publish(&event(serde_json::json!({
        "type": "m.room.message", "room_id": room, "event_id": warm,
        "sender": "@nurse:hospital.invalid", "origin_server_ts": now,
        "content": {"msgtype": "m.text", "body": "Visite 10 Uhr"}})))
        .await;
    h.wait_state(&key(&warm), MessageState::Archived).await;
    proxy.set_outage(true);
    h.publish(&event(serde_json::json!({
        "type": "m.room.message", "room_id": room, "event_id": target,
        "sender": "@nurse:hospital.invalid", "origin_server_ts": now,
        "content": {"msgtype": "m.text", "body": "Falsches Zimmer"}})))
        .await;
    let target_key = key(&target);
    wait_until(Duration::from_secs(30), "target claimed", || async {
        h.store.content_in_flight(&target_key).await.unwrap()
    })
    .await;
    let redaction = format!("$redaction-{}", h.run);
    h.publish(&event(serde_json::json!({
        "type": "m.room.redaction", "room_id": room, "event_id": redaction,
        "sender": "@nurse:hospital.invalid", "origin_server_ts": now + 1000,
        "redacts": target, "content": {"redacts": target}})))
        .await;
    // The redaction is being retried, not forgotten, while the KIS is down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let redaction_key = key(&redaction);
    assert_eq!(h.store.redaction_mark(&redaction_key).await.unwrap(), None);
    assert_eq!(h.store.message(&target_key).await.unwrap(), None);

    proxy.set_outage(false);
    let archived = h.wait_state(&target_key, MessageState::Archived).await;
    let mark = h.wait_redaction_mark(&redaction_key).await;
    worker.stop().await;
    assert_eq!(mark.state, "marked");
    assert_eq!(Some(mark.resource), archived.resource);
}
