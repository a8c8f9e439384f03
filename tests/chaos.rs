//! The chaos run: N events (text and media, some split "x of y", some
//! duplicates, some malformed, some for an unknown patient, some not
//! relevant) on a private RabbitMQ node; the real `chartbridge run` against
//! the real FHIR server through a fault-injecting proxy (5xx, lost answers,
//! timeouts, cut connections, slow answers, one full outage window);
//! the worker SIGKILLed at random moments and restarted; the broker
//! restarted (`rabbitmqctl stop_app/start_app`). Then the invariants:
//! every event terminal, one KIS resource per archived content, every
//! deletion command issued after the KIS held that content, dead letters
//! and quarantines with reasons, the proof log consistent. One summary line
//! `chaos: events=… kills=… broker_restarts=… kis_faults=… lost=0
//! duplicates=0 premature_deletions=0 …`; any violation fails the test.
//!
//! Size from the environment (defaults are the short CI variant):
//! `CHAOS_EVENTS` (200), `CHAOS_KILLS` (3), `CHAOS_BROKER_RESTARTS` (1),
//! `CHAOS_OUTAGE_SECS` (4), `CHAOS_RABBIT_PORT` (5673), `CHAOS_SEED`.
//! The long run: `deploy/dev/chaos.sh --long` (docs/chaos.md).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chartbridge::config::Config;
use chartbridge::consume::{Broker, REASON_HEADER};
use chartbridge::delete::{DeletionCommand, DeletionReason};
use chartbridge::event::MessageKey;
use chartbridge::push::Kis;
use chartbridge::store::{DeletionState, MessageState};
use common::chaos_proxy::{ChaosProxy, Rates};
use common::{Harness, fhir_url, repo};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::{AMQPValue, FieldTable};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a published payload must end as.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// Archived as this resource type.
    Archived(&'static str),
    NotRelevant,
    Quarantined(&'static str),
}

struct Plan {
    payloads: Vec<Vec<u8>>,
    /// Per message key, its expected end.
    messages: BTreeMap<MessageKey, Expect>,
    /// Malformed payload ids (`x-chaos-id` inside) and their reason codes.
    malformed: BTreeMap<String, &'static str>,
    duplicates: usize,
    split: usize,
}

fn plan(h: &Harness, n: usize, rng: &mut StdRng) -> Plan {
    let text: Value = serde_json::from_slice(&h.fixture("events/text-canonical.json")).unwrap();
    let image: Value = serde_json::from_slice(&h.fixture("events/image-canonical.json")).unwrap();
    let mut p = Plan {
        payloads: Vec::new(),
        messages: BTreeMap::new(),
        malformed: BTreeMap::new(),
        duplicates: 0,
        split: 0,
    };
    let mut i = 0usize;
    while p.payloads.len() < n {
        i += 1;
        let roll: f64 = rng.random();
        if roll < 0.04 {
            // Malformed: invalid JSON, schema violation, or over the size limit.
            let id = format!("bad-{i}");
            let (payload, code) = match i % 3 {
                0 => (format!("{{\"x-chaos-id\": \"{id}\", broken").into_bytes(), "invalid_json"),
                1 => (
                    serde_json::to_vec(&json!({"schema": "chartbridge.event/v1", "x-chaos-id": id, "source": "matrix"}))
                        .unwrap(),
                    "schema_violation",
                ),
                _ => (
                    format!("{{\"x-chaos-id\": \"{id}\", \"pad\": \"{}\"}}", "x".repeat(70_000))
                        .into_bytes(),
                    "too_large",
                ),
            };
            p.malformed.insert(id, code);
            p.payloads.push(payload);
            continue;
        }
        if roll < 0.09 && !p.payloads.is_empty() {
            // A duplicate of an earlier payload (a gateway's redelivery).
            let k = rng.random_range(0..p.payloads.len());
            if p.payloads[k].len() < 60_000 && !p.payloads[k].starts_with(b"{\"x-chaos-id\"") {
                let again = p.payloads[k].clone();
                let v: Value = serde_json::from_slice(&again).unwrap_or(Value::Null);
                if v.get("x-chaos-id").is_none() {
                    p.payloads.push(again);
                    p.duplicates += 1;
                    continue;
                }
            }
        }
        let media = rng.random_bool(0.4);
        let mut v = if media { image.clone() } else { text.clone() };
        for k in ["message_id", "event_id"] {
            v[k] = format!("{}-c{i}", v[k].as_str().unwrap()).into();
        }
        let expect = if roll < 0.12 {
            v["case"]["patient"]["identifier"]["value"] = "P-CHAOS-UNKNOWN".into();
            Expect::Quarantined("unknown_patient")
        } else if roll < 0.16 {
            v["mark"] = "not-relevant".into();
            v.as_object_mut().unwrap().remove("case");
            Expect::NotRelevant
        } else if media {
            Expect::Archived("DocumentReference")
        } else {
            Expect::Archived("Communication")
        };
        let parts = if rng.random_bool(0.15) {
            rng.random_range(2..=3)
        } else {
            1
        };
        let group = format!("grp-c{i}-{}", h.run);
        for index in 1..=parts {
            let mut m = v.clone();
            if parts > 1 {
                for k in ["message_id", "event_id"] {
                    m[k] = format!("{}-p{index}", m[k].as_str().unwrap()).into();
                }
                m["part"] = json!({"group_id": group, "index": index, "count": parts});
                p.split += 1;
            }
            let key = MessageKey {
                source: m["source"].as_str().unwrap().into(),
                message_id: m["message_id"].as_str().unwrap().into(),
            };
            p.messages.insert(key, expect.clone());
            p.payloads.push(serde_json::to_vec(&m).unwrap());
        }
    }
    p
}

/// A running `chartbridge run`, SIGKILLed when dropped.
struct Bridge {
    child: Option<Child>,
    log: PathBuf,
}

/// A private copy of the worker binary: the target directory may be shared
/// with other checkouts whose builds replace it during a long run.
fn worker_binary(h: &Harness) -> PathBuf {
    let bin = h.dir.path().join("chartbridge-under-test");
    if !bin.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_chartbridge"), &bin).unwrap();
        let ok = Command::new(&bin)
            .arg("--config")
            .arg(h.config_file())
            .arg("check-config")
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "the worker binary does not accept this tree's config (rebuilt by another checkout?)"
        );
    }
    bin
}

impl Bridge {
    fn start(h: &Harness, n: usize) -> Self {
        let log = h.dir.path().join(format!("run{n}.stderr.log"));
        let mut cmd = Command::new(worker_binary(h));
        cmd.arg("--config")
            .arg(h.config_file())
            .arg("run")
            .current_dir(h.dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        for (var, _) in std::env::vars() {
            if var.starts_with(chartbridge::config::ENV_PREFIX) {
                cmd.env_remove(var);
            }
        }
        Self {
            child: Some(cmd.spawn().expect("start chartbridge run")),
            log,
        }
    }

    fn sigkill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn check_alive(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "worker exited ({status}); stderr:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    async fn sigterm(mut self) -> bool {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        for _ in 0..600 {
            if let Some(s) = child.try_wait().unwrap() {
                return s.success();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        false
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The private broker node, stopped when dropped (also on failure).
struct Node {
    port: u16,
}

impl Node {
    fn script(&self, action: &str) -> std::process::Output {
        Command::new(repo().join("deploy/dev/chaos-rabbit.sh"))
            .arg(action)
            .env("CHAOS_RABBIT_PORT", self.port.to_string())
            .output()
            .expect("run chaos-rabbit.sh")
    }

    fn start(port: u16) -> (Self, String) {
        let node = Self { port };
        let out = node.script("start");
        assert!(
            out.status.success(),
            "chaos-rabbit.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        (node, url)
    }

    fn restart(&self) {
        let out = self.script("restart");
        assert!(
            out.status.success(),
            "chaos-rabbit.sh restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}

/// Deletion commands as they arrive; each checked against the KIS and the
/// store at arrival. Reconnects across broker restarts.
#[derive(Default)]
struct Observed {
    commands: Vec<DeletionCommand>,
    premature: Vec<String>,
}

async fn observe_deletions(
    url: String,
    queue: String,
    kis: Kis,
    store: chartbridge::store::Store,
    out: Arc<Mutex<Observed>>,
) {
    // A short heartbeat: the broker notices a dead observer connection in
    // seconds and hands its unacked commands to the next one (the default,
    // 60 s, outlasts the drain).
    let url = if url.contains('?') {
        format!("{url}&heartbeat=5")
    } else {
        format!("{url}?heartbeat=5")
    };
    loop {
        let Ok(conn) =
            lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await
        else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let Ok(ch) = conn.create_channel().await else {
            continue;
        };
        let Ok(mut consumer) = ch
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        // A connection the broker's restart left half-open never ends
        // the stream: after 5 s without a delivery the observer connects
        // again (unacked commands come back; duplicates are counted once).
        while let Ok(Some(Ok(d))) =
            tokio::time::timeout(Duration::from_secs(5), consumer.next()).await
        {
            // Nothing here may end the observer: an unreadable command is a
            // violation, a busy store or KIS is asked again.
            let cmd: DeletionCommand = match serde_json::from_slice(&d.data) {
                Ok(cmd) => cmd,
                Err(e) => {
                    out.lock()
                        .unwrap()
                        .premature
                        .push(format!("unreadable deletion command: {e}"));
                    let _ = d.ack(BasicAckOptions::default()).await;
                    continue;
                }
            };
            let key = MessageKey {
                source: cmd.source.clone(),
                message_id: cmd.message_id.clone(),
            };
            let mut wrong = None;
            match (&cmd.reason, &cmd.archive) {
                (DeletionReason::Archived, Some(archive)) => {
                    if !kis_holds(&kis, &archive.resource).await {
                        wrong = Some("the KIS does not hold the resource");
                    }
                    match stored(&store, &key).await {
                        Some(m)
                            if m.state == MessageState::Archived
                                && m.resource.as_ref() == Some(&archive.resource)
                                && m.content_sha256.as_ref() == Some(&archive.content_sha256) => {}
                        _ => wrong = Some("not archived with this resource and hash"),
                    }
                }
                // Not-relevant content waits for its retention (hours here).
                _ => wrong = Some("a deletion that is not for archived content"),
            }
            {
                let mut o = out.lock().unwrap();
                if let Some(why) = wrong {
                    o.premature.push(format!("{key}: {why}"));
                }
                o.commands.push(cmd);
            }
            let _ = d.ack(BasicAckOptions::default()).await;
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            conn.close(200, "observer reconnects".into()),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Whether the KIS holds `resource`; a failed read is tried again (up to
/// five times) before it counts as missing.
async fn kis_holds(kis: &Kis, resource: &str) -> bool {
    for _ in 0..5 {
        if kis.read(resource).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// The stored message; a store error (busy under the worker's writes) is
/// asked again until it answers.
async fn stored(
    store: &chartbridge::store::Store,
    key: &MessageKey,
) -> Option<chartbridge::store::StoredMessage> {
    loop {
        match store.message(key).await {
            Ok(m) => return m,
            Err(e) => {
                eprintln!("chaos observer: store read failed, again: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// "N ready, M consumers" of `queue` (a passive declare), for a drain that
/// timed out.
async fn queue_depth(url: &str, queue: &str) -> String {
    let probe = async {
        let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
        let ch = conn.create_channel().await?;
        let q = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok::<_, lapin::Error>(format!(
            "{} ready, {} consumers",
            q.message_count(),
            q.consumer_count()
        ))
    };
    match tokio::time::timeout(Duration::from_secs(5), probe).await {
        Ok(Ok(depth)) => depth,
        Ok(Err(e)) => format!("not readable: {e}"),
        Err(_) => "not readable in 5 s".into(),
    }
}

/// The last `lines` lines of a worker's log.
fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn reason_of(m: &lapin::message::BasicGetMessage) -> Option<String> {
    let headers = m.delivery.properties.headers().clone()?;
    match headers.inner().get(REASON_HEADER)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos() {
    let started = Instant::now();
    let n: usize = env_or("CHAOS_EVENTS", 200);
    let kills: usize = env_or("CHAOS_KILLS", 3);
    let restarts: usize = env_or("CHAOS_BROKER_RESTARTS", 1);
    let outage = Duration::from_secs(env_or("CHAOS_OUTAGE_SECS", 4));
    let port: u16 = env_or("CHAOS_RABBIT_PORT", 5673);
    let seed: u64 = env_or("CHAOS_SEED", rand::rng().random());
    let limit = Duration::from_secs(env_or("CHAOS_LIMIT_SECS", 120 + n as u64 / 4));
    eprintln!("chaos: seed={seed} (CHAOS_SEED={seed} repeats the plan)");
    let mut rng = StdRng::seed_from_u64(seed);

    let (node, amqp) = Node::start(port);
    let proxy = ChaosProxy::start(&fhir_url(), Duration::from_secs(6)).await;
    let mut h = Harness::on_broker(Some(&proxy.url), None, &amqp).await;
    h.seed_patient("P-1001").await;
    let text = std::fs::read_to_string(&h.config_path)
        .unwrap()
        .replace(
            "backoff_max = \"200ms\"",
            "backoff_max = \"500ms\"\ntimeout = \"5s\"\nbreaker_threshold = 6\n\
         breaker_cooldown = \"200ms\"\nbreaker_cooldown_max = \"2s\"",
        )
        .replace("prefetch = 16", "prefetch = 32\nmax_event_bytes = 65536")
        .replace("concurrency = 8", "concurrency = 16")
        // A worker killed while releasing a split group leaves it claimed
        // for the lease; the sweep picks it up again after that.
        .replace(
            "relay_interval = \"50ms\"",
            "relay_interval = \"50ms\"\nsplit_sweep = \"*/2 * * * * *\"",
        );
    std::fs::write(&h.config_path, &text).unwrap();
    h.config = Config::from_parts(&h.config_path, &text, std::iter::empty()).unwrap();

    worker_binary(&h);
    let plan = plan(&h, n, &mut rng);
    for p in &plan.payloads {
        h.publish(p).await;
    }
    let relevant = plan
        .messages
        .values()
        .filter(|e| matches!(e, Expect::Archived(_)))
        .count();
    eprintln!(
        "chaos: published {} payloads ({} messages, {relevant} to archive, {} split parts, {} duplicates, {} malformed)",
        plan.payloads.len(),
        plan.messages.len(),
        plan.split,
        plan.duplicates,
        plan.malformed.len()
    );

    let observed = Arc::new(Mutex::new(Observed::default()));
    let observer = tokio::spawn(observe_deletions(
        amqp.clone(),
        h.deletions_queue.clone(),
        h.kis.clone(),
        h.store.clone(),
        observed.clone(),
    ));

    proxy.set_rates(Rates {
        status_5xx: 0.05,
        lost_answer: 0.03,
        timeout: 0.01,
        reset: 0.04,
        slow: 0.05,
    });
    let terminal = |store: chartbridge::store::Store| async move {
        store
            .state_counts()
            .await
            .unwrap()
            .iter()
            .map(|c| c.count)
            .sum::<i64>()
    };
    let total = plan.messages.len() as i64;
    // Faults at fractions of progress, kills at random moments between.
    let mut restart_at: Vec<i64> = (1..=restarts)
        .map(|i| total * i as i64 / (restarts as i64 + 1))
        .collect();
    let outage_at = total / 2;
    let mut outage_done = false;
    let mut kills_done = 0usize;
    let mut restarts_done = 0usize;
    let mut runs = 1;
    let mut bridge = Bridge::start(&h, runs);
    let mut next_kill = Instant::now() + Duration::from_millis(rng.random_range(1500..6000));
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        bridge.check_alive();
        let done = terminal(h.store.clone()).await;
        if done >= total {
            break;
        }
        if started.elapsed() >= limit {
            panic!(
                "chaos: only {done}/{total} terminal after {limit:?}; states {:?}; \
                 the current worker's log (run {runs}):\n{}",
                h.store.state_counts().await.unwrap_or_default(),
                tail(&bridge.log, 60)
            );
        }
        if kills_done < kills && Instant::now() >= next_kill {
            bridge.sigkill();
            kills_done += 1;
            runs += 1;
            bridge = Bridge::start(&h, runs);
            next_kill = Instant::now() + Duration::from_millis(rng.random_range(1500..6000));
        }
        if restart_at.first().is_some_and(|&at| done >= at) {
            restart_at.remove(0);
            node.restart();
            restarts_done += 1;
        }
        if !outage_done && done >= outage_at {
            outage_done = true;
            proxy.set_outage(true);
            let until = Instant::now() + outage;
            while Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(100)).await;
                bridge.check_alive();
            }
            proxy.set_outage(false);
        }
    }
    // Kills and restarts not reached by progress happen now, on a quiet queue.
    while kills_done < kills {
        bridge.sigkill();
        kills_done += 1;
        runs += 1;
        bridge = Bridge::start(&h, runs);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    while restarts_done < restarts {
        node.restart();
        restarts_done += 1;
    }
    // No more faults: let the deletions drain (a relay killed after its
    // claim leaves rows to the lease).
    proxy.set_rates(Rates::default());
    let drain_limit = Instant::now()
        + Duration::from_millis(chartbridge::delete::relay::LEASE_MS as u64)
        + Duration::from_secs(60);
    let archived_keys: Vec<MessageKey> = plan
        .messages
        .iter()
        .filter(|(_, e)| matches!(e, Expect::Archived(_)))
        .map(|(k, _)| k.clone())
        .collect();
    loop {
        bridge.check_alive();
        assert!(
            !observer.is_finished(),
            "chaos: the deletion observer ended (see its panic above)"
        );
        let mut pending = 0;
        for k in &archived_keys {
            if h.store.deletion_state(k).await.unwrap() != Some(DeletionState::Requested) {
                pending += 1;
            }
        }
        let seen: BTreeSet<String> = observed
            .lock()
            .unwrap()
            .commands
            .iter()
            .map(|c| c.deletion_id.clone())
            .collect();
        if pending == 0 && seen.len() >= archived_keys.len() {
            break;
        }
        if Instant::now() >= drain_limit {
            panic!(
                "chaos: {pending} deletions not requested, {} of {} observed; deletion queue: {}",
                seen.len(),
                archived_keys.len(),
                queue_depth(&amqp, &h.deletions_queue).await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let clean_exit = bridge.sigterm().await;
    observer.abort();
    let kis_faults = proxy.stats.faults();

    // Invariants.
    let mut violations: Vec<String> = Vec::new();
    let mut lost = 0usize;
    let mut duplicates = 0usize;
    let mut wrong_state = 0usize;
    for (key, expect) in &plan.messages {
        let Some(stored) = h.state(key).await else {
            lost += 1;
            violations.push(format!("{key}: no terminal state"));
            continue;
        };
        let ok = match expect {
            Expect::Archived(rt) => {
                let ids = h.kis_ids(rt, key).await;
                if ids.len() > 1 {
                    duplicates += ids.len() - 1;
                    violations.push(format!("{key}: {} {rt} in the KIS", ids.len()));
                }
                stored.state == MessageState::Archived
                    && ids.len() == 1
                    && stored.resource.as_deref() == Some(ids[0].as_str())
            }
            Expect::NotRelevant => stored.state == MessageState::NotRelevant,
            Expect::Quarantined(reason) => {
                stored.state == MessageState::Quarantined && stored.reason == *reason
            }
        };
        if !ok {
            wrong_state += 1;
            violations.push(format!("{key}: expected {expect:?}, stored {stored:?}"));
        }
    }
    for c in h.store.state_counts().await.unwrap() {
        if c.state == MessageState::Quarantined.as_str() && c.reason.is_empty() {
            violations.push("a quarantine without reason".into());
        }
    }
    // Dead letters: exactly the malformed payloads, each with its reason.
    // (The harness's own connection died with the broker restarts.)
    h.broker = Broker::connect(&h.config.broker).await.unwrap();
    let dead = h.drain_queue(&h.config.broker.dead_letter_queue).await;
    let mut dead_ids: HashMap<String, String> = HashMap::new();
    for m in &dead {
        // The worker seals what it dead-letters; the broker's own dead
        // letters (delivery limit) are in the clear.
        let data = chartbridge::consume::open_dead_letter(
            &h.sealer,
            &m.delivery.properties,
            &m.delivery.data,
        )
        .unwrap_or_else(|_| m.delivery.data.clone());
        let id = serde_json::from_slice::<Value>(&data)
            .ok()
            .and_then(|v| v["x-chaos-id"].as_str().map(str::to_owned))
            .or_else(|| {
                let s = String::from_utf8_lossy(&data);
                s.split('"').nth(3).map(str::to_owned)
            })
            .unwrap_or_default();
        let Some(reason) = reason_of(m) else {
            violations.push(format!("dead letter {id} without reason"));
            continue;
        };
        dead_ids.insert(id, reason);
    }
    for (id, code) in &plan.malformed {
        match dead_ids.get(id) {
            Some(r) if r == code => {}
            Some(r) => violations.push(format!("{id}: dead-lettered as {r}, expected {code}")),
            None => {
                lost += 1;
                violations.push(format!("{id}: malformed payload not dead-lettered"));
            }
        }
    }
    for id in dead_ids.keys() {
        if !plan.malformed.contains_key(id) {
            violations.push(format!("a valid payload was dead-lettered ({id})"));
        }
    }
    // Deletions.
    let observed = std::mem::take(&mut *observed.lock().unwrap());
    let premature = observed.premature.len();
    violations.extend(observed.premature.iter().cloned());
    let distinct: BTreeSet<&str> = observed
        .commands
        .iter()
        .map(|c| c.deletion_id.as_str())
        .collect();
    if distinct.len() != archived_keys.len() {
        violations.push(format!(
            "{} distinct deletion commands for {} archived messages",
            distinct.len(),
            archived_keys.len()
        ));
    }
    // The proof log: one leaf per archive, and archived content verifies
    // against the KIS through its inclusion proof.
    let log_size = h.store.log_size().await.unwrap();
    if log_size != archived_keys.len() as u64 {
        violations.push(format!(
            "proof log has {log_size} leaves for {} archives",
            archived_keys.len()
        ));
    }
    let sample = (archived_keys.len() as u32).min(env_or("CHAOS_AUDIT_SAMPLE", 40));
    let audit =
        chartbridge::prove::service::audit(&h.kis, (&h.store, &h.sealer.proof_keys()), sample)
            .await
            .unwrap();
    if !audit.ok() || audit.checked != sample as usize {
        violations.push(format!(
            "audit of {sample} archived resources failed: {} checked, {} errors",
            audit.checked,
            audit.errors.len()
        ));
    }
    if !clean_exit {
        violations.push("the last worker did not exit cleanly on SIGTERM".into());
    }
    for v in violations.iter().take(30) {
        eprintln!("chaos violation: {v}");
    }
    println!(
        "chaos: events={} kills={kills_done} broker_restarts={restarts_done} kis_faults={kis_faults} \
         lost={lost} duplicates={duplicates} premature_deletions={premature} wrong_state={wrong_state} \
         dead_lettered={} deletion_commands={} elapsed={}s",
        plan.payloads.len(),
        dead.len(),
        observed.commands.len(),
        started.elapsed().as_secs()
    );
    assert!(violations.is_empty(), "{} violations", violations.len());
    drop(h);
    drop(node);
}
