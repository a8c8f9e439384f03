//! Crash safety of the real binary: SIGKILL in the middle of a batch, restart,
//! and nothing is lost or archived twice; SIGTERM drains in-flight work and
//! exits 0. Real RabbitMQ, the real FHIR server, SQLite shared with the test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chartbridge::delete::{DeletionCommand, DeletionReason};
use chartbridge::event::MessageKey;
use chartbridge::map::stable_id;
use chartbridge::store::{DeletionState, MessageState};
use common::{Harness, wait_until};
use serde_json::Value;

/// The fixtures behind the generated events, with the primary resource type.
const FIXTURES: [(&str, &str); 2] = [
    ("events/text-canonical.json", "Communication"),
    ("events/image-canonical.json", "DocumentReference"),
];

/// How long a whole batch may take to become terminal.
const ALL_TERMINAL: Duration = Duration::from_secs(120);

/// A running `chartbridge run`; killed with SIGKILL if the test fails first.
struct Bridge {
    child: Option<Child>,
    log: PathBuf,
}

impl Bridge {
    fn start(h: &Harness, name: &str) -> Self {
        let log = h.dir.path().join(format!("{name}.stderr.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chartbridge"));
        cmd.arg("--config")
            .arg(h.config_file())
            .arg("run")
            .current_dir(h.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        // Only the config file configures the child.
        for (var, _) in std::env::vars() {
            if var.starts_with(chartbridge::config::ENV_PREFIX) {
                cmd.env_remove(var);
            }
        }
        let child = cmd.spawn().expect("start chartbridge run");
        Self {
            child: Some(child),
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap.
    fn sigkill(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "a SIGKILLed worker exited cleanly");
    }

    /// SIGTERM, then wait up to `limit` for the exit; gives the exit
    /// status, how long it took and the worker's log.
    async fn sigterm(mut self, limit: Duration) -> (ExitStatus, Duration, String) {
        let sent = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return (status, sent.elapsed(), self.stderr());
            }
            assert!(
                sent.elapsed() < limit,
                "no exit {limit:?} after SIGTERM; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn assert_alive(&mut self) {
        let child = self.child.as_mut().unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            panic!("worker exited early ({status}); stderr:\n{}", self.stderr());
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "worker stderr ({}):\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// `n` distinct events from the fixtures; returns the payloads and, per
/// message, the resource type it must become.
fn events(h: &Harness, n: usize) -> (Vec<Vec<u8>>, BTreeMap<MessageKey, &'static str>) {
    let mut payloads = Vec::new();
    let mut keys = BTreeMap::new();
    for i in 0..n {
        let (fixture, resource_type) = FIXTURES[i % FIXTURES.len()];
        let mut v: Value = serde_json::from_slice(&h.fixture(fixture)).unwrap();
        for k in ["message_id", "event_id"] {
            v[k] = format!("{}-{i:03}", v[k].as_str().unwrap()).into();
        }
        let key = MessageKey {
            source: v["source"].as_str().unwrap().into(),
            message_id: v["message_id"].as_str().unwrap().into(),
        };
        assert!(keys.insert(key, resource_type).is_none());
        payloads.push(serde_json::to_vec(&v).unwrap());
    }
    (payloads, keys)
}

async fn archived(h: &Harness) -> i64 {
    h.store
        .state_counts()
        .await
        .unwrap()
        .iter()
        .filter(|c| c.state == MessageState::Archived.as_str())
        .map(|c| c.count)
        .sum()
}

async fn terminal(h: &Harness) -> i64 {
    h.store
        .state_counts()
        .await
        .unwrap()
        .iter()
        .map(|c| c.count)
        .sum()
}

/// Waits until at least `n` messages are archived, checking the worker lives.
async fn wait_archived(h: &Harness, bridge: &mut Bridge, n: i64, limit: Duration) {
    wait_until(limit, &format!("{n} archived messages"), || {
        bridge.assert_alive();
        async move { archived(h).await >= n }
    })
    .await;
}

/// Deletion commands until every message has one (at least once each), with
/// the KIS holding the resource as each arrives.
async fn deletions_covering(h: &Harness, n: usize) -> Vec<DeletionCommand> {
    let mut commands: Vec<DeletionCommand> = Vec::new();
    loop {
        let distinct: BTreeSet<&str> = commands.iter().map(|c| c.deletion_id.as_str()).collect();
        if distinct.len() >= n {
            return commands;
        }
        let missing = n - distinct.len();
        commands.extend(h.expect_deletions(missing).await);
    }
}

/// Every message archived once, one primary resource each, one leaf each,
/// and deletion commands that name exactly the archived messages.
async fn assert_exactly_once(
    h: &Harness,
    keys: &BTreeMap<MessageKey, &'static str>,
    commands: &[DeletionCommand],
) {
    let n = keys.len();
    let counts = h.store.state_counts().await.unwrap();
    assert_eq!(
        counts.iter().map(|c| c.count).sum::<i64>(),
        n as i64,
        "{counts:?}"
    );
    assert_eq!(archived(h).await, n as i64, "{counts:?}");
    for (key, resource_type) in keys {
        let stored = h.state(key).await.expect("recorded");
        assert_eq!(stored.state, MessageState::Archived, "{key}: {stored:?}");
        let ids = h.kis_ids(resource_type, key).await;
        assert_eq!(ids.len(), 1, "{key}: {resource_type} in the KIS: {ids:?}");
        assert_eq!(stored.resource.as_deref(), Some(ids[0].as_str()), "{key}");
    }
    assert_eq!(h.store.log_size().await.unwrap(), n as u64);

    assert!(commands.len() >= n, "{} commands", commands.len());
    let expected: BTreeMap<String, &MessageKey> = keys
        .keys()
        .map(|k| (stable_id(k, "deletion").to_string(), k))
        .collect();
    let mut seen = BTreeSet::new();
    for c in commands {
        let key = expected
            .get(&c.deletion_id)
            .unwrap_or_else(|| panic!("deletion for an unknown message: {c:?}"));
        assert_eq!(
            (c.source.as_str(), c.message_id.as_str()),
            (key.source.as_str(), key.message_id.as_str())
        );
        assert_eq!(c.reason, DeletionReason::Archived);
        let stored = h.state(key).await.unwrap();
        let archive = c.archive.as_ref().expect("archive proof");
        assert_eq!(Some(&archive.resource), stored.resource.as_ref(), "{key}");
        assert_eq!(
            Some(&archive.content_sha256),
            stored.content_sha256.as_ref()
        );
        seen.insert(c.deletion_id.clone());
    }
    assert_eq!(
        seen,
        expected.keys().cloned().collect::<BTreeSet<_>>(),
        "deletion ids (deduplicated) differ from the archived messages"
    );
}

/// Waits until the outbox has published every deletion (a relay killed
/// between claim and mark leaves its rows to the next after the lease).
async fn wait_all_requested(h: &Harness, keys: &BTreeMap<MessageKey, &'static str>) {
    let limit = Duration::from_millis(chartbridge::delete::relay::LEASE_MS as u64)
        + Duration::from_secs(60);
    wait_until(limit, "every deletion requested", || async {
        for key in keys.keys() {
            if h.store.deletion_state(key).await.unwrap() != Some(DeletionState::Requested) {
                return false;
            }
        }
        true
    })
    .await;
}

/// A SIGTERMed worker drained: exit 0 within the drain timeout, in-flight
/// work finished rather than left to the timeout.
fn assert_drained(status: ExitStatus, took: Duration, drain: Duration, log: &str) {
    assert!(
        status.success(),
        "exit after SIGTERM: {status}; log:\n{log}"
    );
    assert!(
        took <= drain + Duration::from_secs(2),
        "exit took {took:?}; log:\n{log}"
    );
    assert!(log.contains("shutdown requested; draining"), "{log}");
    assert!(!log.contains("drain timeout"), "{log}");
    assert!(log.contains("worker stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_sigkill_mid_batch_then_restart_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let h = Harness::new(None, None).await;
    h.seed_patient("P-1001").await;
    let (payloads, keys) = events(&h, 60);
    let total = keys.len() as i64;
    for p in &payloads {
        h.publish(p).await;
    }

    // First run: killed once at least 10 messages are archived.
    let mut bridge = Bridge::start(&h, "run1");
    wait_archived(&h, &mut bridge, 10, Duration::from_secs(60)).await;
    bridge.sigkill();
    let after_first = archived(&h).await;
    eprintln!("first SIGKILL with {after_first}/{total} archived");
    assert!(
        after_first < total,
        "the batch finished before the kill; the test shows nothing"
    );

    // Second run: killed again a little later, if work is left by then.
    let mut bridge = Bridge::start(&h, "run2");
    let target = (after_first + 10).min(total);
    wait_archived(&h, &mut bridge, target, ALL_TERMINAL).await;
    let before_second = archived(&h).await;
    if before_second < total {
        bridge.sigkill();
        eprintln!(
            "second SIGKILL with {}/{total} archived",
            archived(&h).await
        );
        bridge = Bridge::start(&h, "run3");
    } else {
        eprintln!("second run finished the batch before it could be killed");
    }

    // The last run finishes everything.
    wait_archived(&h, &mut bridge, total, ALL_TERMINAL).await;
    assert_eq!(terminal(&h).await, total);
    let mut commands = deletions_covering(&h, keys.len()).await;
    wait_all_requested(&h, &keys).await;

    // SIGTERM: the worker drains and exits 0 within the drain timeout.
    let drain = h.config.pipeline.drain_timeout;
    let (status, took, log) = bridge.sigterm(drain + Duration::from_secs(5)).await;
    assert_drained(status, took, drain, &log);

    // Republished commands (a relay killed between publish and mark) may
    // still be queued; gateways deduplicate them on deletion_id.
    commands.extend(h.deletion_commands().await);
    assert_exactly_once(&h, &keys, &commands).await;
    eprintln!(
        "{} messages, {} deletion commands ({} duplicates), {:?}",
        total,
        commands.len(),
        commands.len() - keys.len(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_sigterm_drains_in_flight_work() {
    let h = Harness::new(None, None).await;
    h.seed_patient("P-1001").await;
    let (payloads, keys) = events(&h, 40);
    let total = keys.len() as i64;
    for p in &payloads {
        h.publish(p).await;
    }

    let mut bridge = Bridge::start(&h, "run1");
    wait_archived(&h, &mut bridge, 1, Duration::from_secs(60)).await;
    let at_signal = archived(&h).await;
    assert!(at_signal < total, "the batch finished before the signal");
    let drain = h.config.pipeline.drain_timeout;
    let (status, took, log) = bridge.sigterm(drain + Duration::from_secs(5)).await;
    assert_drained(status, took, drain, &log);
    let at_exit = archived(&h).await;
    eprintln!("SIGTERM with {at_signal}/{total} archived; {at_exit} at exit after {took:?}");

    // Work not taken before the signal is still queued; a restart ends it.
    let mut bridge = Bridge::start(&h, "run2");
    wait_archived(&h, &mut bridge, total, ALL_TERMINAL).await;
    let mut commands = deletions_covering(&h, keys.len()).await;
    wait_all_requested(&h, &keys).await;
    let (status, took, log) = bridge.sigterm(drain + Duration::from_secs(5)).await;
    assert_drained(status, took, drain, &log);
    commands.extend(h.deletion_commands().await);
    assert_exactly_once(&h, &keys, &commands).await;
    // A clean drain leaves no claimed-but-unmarked deletion: no duplicates.
    assert_eq!(commands.len(), keys.len(), "duplicate deletion commands");
}
