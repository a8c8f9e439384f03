//! The operator's tools against the real services: the dead-letter queue
//! on the real RabbitMQ (list, show, replay exactly once, purge), the
//! quarantine (show, filters, bulk release) with the correlation id in the
//! real binary's logs, `trace`, `deletions retry`, `import` with resume,
//! each through the real `chartbridge` binary and the real FHIR server.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use chartbridge::event::MessageKey;
use chartbridge::store::{DeletionState, MessageState};
use common::{Harness, audit_rows, wait_until};
use lapin::options::{BasicGetOptions, BasicNackOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};

fn cli(h: &Harness, args: &[&str]) -> Output {
    cli_with(h.config_file(), args)
}

fn cli_with(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chartbridge"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Messages ready in `queue`.
async fn depth(h: &Harness, queue: &str) -> u32 {
    let ch = h.broker.consumer_channel(1).await.unwrap();
    let n = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count();
    let _ = ch.close(200, "counted".into()).await;
    n
}

/// The canonical text fixture as a new message `n` for patient `patient`.
fn event(h: &Harness, n: usize, patient: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&h.fixture("events/text-canonical.json")).unwrap();
    v["message_id"] = format!("$ops-{n}-{}", h.run).into();
    v["event_id"] = format!("evt-ops-{n}-{}", h.run).into();
    v["case"]["patient"]["identifier"]["value"] = patient.into();
    v.as_object_mut().unwrap()["case"]
        .as_object_mut()
        .unwrap()
        .remove("encounter");
    serde_json::to_vec(&v).unwrap()
}

fn key(h: &Harness, n: usize) -> MessageKey {
    MessageKey {
        source: "matrix".into(),
        message_id: format!("$ops-{n}-{}", h.run),
    }
}

/// The dead-letter rows `dlq list --json` prints once there are `n`.
async fn dead_letters(h: &Harness, n: usize) -> Vec<Value> {
    let mut rows = Vec::new();
    wait_until(Duration::from_secs(30), "dead letters", || {
        rows = json_of(&cli(h, &["dlq", "list", "--json"]))
            .as_array()
            .unwrap()
            .clone();
        let enough = rows.len() >= n;
        async move { enough }
    })
    .await;
    assert_eq!(rows.len(), n, "{rows:?}");
    rows
}

fn ids_with(rows: &[Value], reason: &str) -> Vec<String> {
    rows.iter()
        .filter(|r| r["reason"] == reason)
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_lists_shows_replays_once_and_purges_without_losing_messages() {
    let h = Harness::new(None, None).await;
    h.seed_patient("P-1001").await;
    let events = h.config.broker.events_queue.clone();
    let dead = h.config.broker.dead_letter_queue.clone();

    // A valid event the broker dead-letters itself (rejected, no requeue),
    // as after its delivery limit: it carries `x-death`, not our headers.
    let good = event(&h, 1, "P-1001");
    h.publish(&good).await;
    let ch = h.broker.consumer_channel(1).await.unwrap();
    let got = ch
        .basic_get(events.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .unwrap();
    got.delivery
        .nack(BasicNackOptions {
            requeue: false,
            ..Default::default()
        })
        .await
        .unwrap();
    // Two payloads the worker refuses and dead-letters with its reason.
    let worker = h.start_worker();
    h.publish(&h.fixture("bad/schema-violation.json")).await;
    h.publish(b"{not json").await;
    let rows = dead_letters(&h, 3).await;
    let text = serde_json::to_string(&rows).unwrap();
    assert!(
        !text.contains("Wundkontrolle") && !text.contains("dr.mueller"),
        "{text}"
    );
    let rejected = ids_with(&rows, "rejected");
    assert_eq!(rejected.len(), 1, "{rows:?}");
    assert_eq!(ids_with(&rows, "schema_violation").len(), 1);
    assert_eq!(ids_with(&rows, "invalid_json").len(), 1);
    for r in &rows {
        assert_eq!(r["queue"], events.as_str(), "{r}");
        assert!(r["age_seconds"].as_i64().unwrap() < 600);
        if r["reason"] != "rejected" {
            let c = r["correlation_id"].as_str().expect("a correlation id");
            assert!(c.len() == 16 && c.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
    // Listing took nothing away; an unknown id fails and takes nothing either.
    assert_eq!(depth(&h, &dead).await, 3);
    assert!(
        !cli(&h, &["dlq", "show", "0000000000000000"])
            .status
            .success()
    );
    assert_eq!(depth(&h, &dead).await, 3);
    // Filters.
    let only = |args: &[&str]| {
        let mut all = vec!["dlq", "list", "--json"];
        all.extend_from_slice(args);
        json_of(&cli(&h, &all)).as_array().unwrap().len()
    };
    assert_eq!(only(&["--reason", "schema_violation"]), 1);
    assert_eq!(
        only(&["--reason", "schema_violation", "--reason", "invalid_json"]),
        2
    );
    assert_eq!(only(&["--older-than", "1h"]), 0);
    assert_eq!(only(&["--newer-than", "1h"]), 3);
    assert_eq!(only(&["--queue", "elsewhere"]), 0);

    // Show: the payload, recorded in the audit trail.
    let shown = json_of(&cli(&h, &["dlq", "show", &rejected[0], "--json"]));
    assert!(
        shown["payload"]["text"]
            .as_str()
            .unwrap()
            .contains("Wundkontrolle")
    );
    let shows = audit_rows(&h, "dlq.show").await;
    assert_eq!(shows.len(), 1);
    assert_eq!(shows[0].target, format!("dead-letter {}", rejected[0]));

    // A second copy of the same dead letter (as after a crash between the
    // confirmed replay and its ack): replayed once, the copy refused.
    let mut taken = Vec::new();
    while let Some(m) = ch
        .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
    {
        taken.push(m.delivery);
    }
    let original = taken
        .iter()
        .find(|d| {
            d.properties
                .headers()
                .as_ref()
                .is_some_and(|hd| hd.inner().contains_key("x-death"))
        })
        .expect("the broker's dead letter");
    let (data, props) = (original.data.clone(), original.properties.clone());
    ch.basic_nack(
        taken.last().unwrap().delivery_tag,
        BasicNackOptions {
            multiple: true,
            requeue: true,
        },
    )
    .await
    .unwrap();
    ch.basic_publish(
        h.config.broker.dead_letter_exchange.as_str().into(),
        "".into(),
        BasicPublishOptions::default(),
        &data,
        props,
    )
    .await
    .unwrap()
    .await
    .unwrap();
    assert_eq!(
        ids_with(&dead_letters(&h, 4).await, "rejected"),
        [rejected[0].clone(), rejected[0].clone()]
    );

    let dry = json_of(&cli(
        &h,
        &[
            "dlq",
            "replay",
            "--reason",
            "rejected",
            "--dry-run",
            "--json",
        ],
    ));
    assert_eq!(dry["would_replay"].as_array().unwrap().len(), 2);
    assert_eq!(depth(&h, &dead).await, 4, "a dry run changes nothing");
    assert!(
        stderr(&cli(&h, &["dlq", "replay"])).contains("--all"),
        "no replay of everything by accident"
    );
    let out = cli(
        &h,
        &[
            "dlq", "replay", "--reason", "rejected", "--why", "KIS back", "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "the copy is refused: {out:?}");
    let replayed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(replayed["replayed"].as_array().unwrap().len(), 1);
    let refused = replayed["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0]["why"]
            .as_str()
            .unwrap()
            .contains("replayed before")
    );
    h.wait_state(&key(&h, 1), MessageState::Archived).await;
    let left = dead_letters(&h, 3).await;
    let copy_row = left.iter().find(|r| r["reason"] == "rejected").unwrap();
    assert!(copy_row["replayed_at"].is_i64(), "{copy_row}");
    assert_eq!(audit_rows(&h, "replay").await.len(), 1);
    // Replaying it again publishes nothing.
    let again = cli(&h, &["dlq", "replay", "--id", &rejected[0], "--json"]);
    assert_eq!(again.status.code(), Some(1));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.store.log_size().await.unwrap(), 1, "archived once");

    // Purge by filter, recorded.
    assert!(stderr(&cli(&h, &["dlq", "purge"])).contains("--all"));
    let purged = json_of(&cli(
        &h,
        &[
            "dlq",
            "purge",
            "--reason",
            "invalid_json",
            "--reason",
            "rejected",
            "--json",
        ],
    ));
    assert_eq!(purged["purged"].as_array().unwrap().len(), 2);
    assert_eq!(depth(&h, &dead).await, 1);
    assert_eq!(audit_rows(&h, "dlq.purge").await.len(), 1);
    assert_eq!(
        ids_with(&dead_letters(&h, 1).await, "schema_violation").len(),
        1
    );
    let _ = ch.close(200, "done".into()).await;
    worker.stop().await;
}

/// The real binary as the worker, JSON logs to a file.
struct Bridge {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Bridge {
    fn start(h: &Harness) -> Self {
        let log = h.dir.path().join("worker.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chartbridge"));
        cmd.arg("--config")
            .arg(h.config_file())
            .args(["--json-logs", "run"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (var, _) in std::env::vars() {
            if var.starts_with(chartbridge::config::ENV_PREFIX) {
                cmd.env_remove(var);
            }
        }
        let child = cmd.spawn().unwrap();
        Self { child, log }
    }

    async fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let started = std::time::Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(started.elapsed() < Duration::from_secs(30), "no exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_show_filters_bulk_release_trace_and_deletion_retry() {
    let h = Harness::new(None, None).await;
    let patient = format!("P-late-{}", h.run);
    let bridge = Bridge::start(&h);
    for n in [1, 2] {
        h.publish(&event(&h, n, &patient)).await;
    }
    for n in [1, 2] {
        let got = h.wait_state(&key(&h, n), MessageState::Quarantined).await;
        assert_eq!(got.reason, "unknown_patient");
    }
    let list = |args: &[&str]| {
        let mut all = vec!["quarantine", "list", "--json"];
        all.extend_from_slice(args);
        json_of(&cli(&h, &all)).as_array().unwrap().clone()
    };
    let items = list(&[]);
    assert_eq!(items.len(), 2);
    let text = serde_json::to_string(&items).unwrap();
    assert!(!text.contains("Wundkontrolle") && !text.contains(&patient) && !text.contains("$ops"));
    assert_eq!(list(&["--reason", "unknown_patient"]).len(), 2);
    assert_eq!(list(&["--reason", "unknown_encounter"]).len(), 0);
    assert_eq!(list(&["--older-than", "1h"]).len(), 0);
    assert_eq!(list(&["--source", "matrix", "--newer-than", "1h"]).len(), 2);
    let bad = cli(
        &h,
        &["quarantine", "list", "--reason", "patient not there yet"],
    );
    assert!(!bad.status.success() && stderr(&bad).contains("--why"));
    let id = items[0]["id"].as_str().unwrap().to_owned();
    let correlation = items[0]["correlation_id"].as_str().unwrap().to_owned();

    // Show: sealed content and sender, for a listed reviewer only, recorded.
    let other = h.dir.path().join("others.toml");
    let mut text = std::fs::read_to_string(h.config_file()).unwrap();
    text.push_str("\n[review]\nreviewers = [\"someone-else\"]\n");
    std::fs::write(&other, text).unwrap();
    let refused = cli_with(&other, &["quarantine", "show", &id]);
    assert!(stderr(&refused).contains("review.reviewers"), "{refused:?}");
    assert!(audit_rows(&h, "quarantine.show").await.is_empty());
    let shown = json_of(&cli(
        &h,
        &["quarantine", "show", &id, "--json", "--why", "ward asked"],
    ));
    assert_eq!(shown["sender"]["id"], "@dr.mueller:hospital.invalid");
    assert!(
        shown["event"]["text"]
            .as_str()
            .unwrap()
            .contains("Wundkontrolle")
    );
    assert_eq!(shown["correlation_id"], correlation.as_str());
    let shows = audit_rows(&h, "quarantine.show").await;
    assert_eq!(shows.len(), 1);
    assert_eq!(shows[0].target, format!("item {id}"));

    // The patient arrives: release every item held for it, in one command.
    h.seed_patient(&patient).await;
    let conflict = cli(
        &h,
        &["quarantine", "release", &id, "--reason", "unknown_patient"],
    );
    assert!(!conflict.status.success());
    let dry = cli(
        &h,
        &[
            "quarantine",
            "release",
            "--reason",
            "unknown_patient",
            "--dry-run",
        ],
    );
    assert!(
        dry.status.success() && stderr(&dry).contains("would release 2"),
        "{dry:?}"
    );
    let released = json_of(&cli(
        &h,
        &[
            "quarantine",
            "release",
            "--reason",
            "unknown_patient",
            "--why",
            "registered",
            "--json",
        ],
    ));
    assert_eq!(released.as_array().unwrap().len(), 2);
    assert!(
        released
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["outcome"] == "archived")
    );
    assert_eq!(audit_rows(&h, "quarantine.release").await.len(), 2);
    for n in [1, 2] {
        h.wait_state(&key(&h, n), MessageState::Archived).await;
    }

    // The delivery's correlation id is on its log lines.
    wait_until(Duration::from_secs(30), "deletions requested", || async {
        let mut all = true;
        for n in [1, 2] {
            all &= h.store.deletion_state(&key(&h, n)).await.unwrap()
                == Some(DeletionState::Requested);
        }
        all
    })
    .await;
    let logs = bridge.stop().await;
    let tagged: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(&format!("\"correlation_id\":\"{correlation}\"")))
        .collect();
    assert!(
        tagged.iter().any(|l| l.contains("unknown_patient")),
        "the quarantine's log line carries the correlation id: {logs}"
    );

    // Trace by item id, correlation id, KIS resource and deletion id: one view.
    let traced = json_of(&cli(&h, &["trace", &id, "--json"]));
    let t = &traced[0];
    assert_eq!(t["ledger"]["state"], "archived");
    assert_eq!(t["quarantine"]["correlation_id"], correlation.as_str());
    assert_eq!(t["quarantine"]["resolved_by"], Value::Null);
    assert!(t["quarantine"]["released_at"].is_i64());
    assert!(t["leaf"]["index"].is_u64());
    let resource = t["ledger"]["resources"][0].as_str().unwrap().to_owned();
    let deletion = t["deletion"]["deletion_id"].as_str().unwrap().to_owned();
    for other in [correlation.as_str(), resource.as_str(), deletion.as_str()] {
        assert_eq!(
            json_of(&cli(&h, &["trace", other, "--json"]))[0],
            *t,
            "{other}"
        );
    }
    let shown = String::from_utf8(cli(&h, &["trace", &id]).stdout).unwrap();
    for secret in [
        "Wundkontrolle",
        "dr.mueller",
        patient.as_str(),
        "$ops",
        "ward7",
    ] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert!(
        shown.contains(&resource) && shown.contains("proof leaf"),
        "{shown}"
    );
    assert!(!cli(&h, &["trace", "ffffffffffffffff"]).status.success());

    // Deletions: one failed by its gateway, one stuck; both requested again.
    h.expect_deletions(2).await;
    let failed_id = deletion.clone();
    let receipt = json!({"schema": "chartbridge.deletion-receipt/v1", "deletion_id": failed_id,
                         "status": "failed", "detail": "gateway_timeout"});
    h.broker
        .publish_receipt(&serde_json::to_vec(&receipt).unwrap())
        .await
        .unwrap();
    let worker = h.start_worker();
    wait_until(Duration::from_secs(30), "the failed receipt", || async {
        h.store
            .retryable_deletions(0)
            .await
            .unwrap()
            .iter()
            .any(|d| d.deletion_id == failed_id && d.state == DeletionState::Failed)
    })
    .await;
    let listed = json_of(&cli(&h, &["deletions", "list", "--failed", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["detail"], "gateway_timeout");
    let stuck = json_of(&cli(
        &h,
        &[
            "deletions",
            "list",
            "--stuck",
            "--stuck-after",
            "1ms",
            "--json",
        ],
    ));
    assert_eq!(stuck.as_array().unwrap().len(), 1, "{stuck}");
    let dry = json_of(&cli(
        &h,
        &[
            "deletions",
            "retry",
            "--stuck-after",
            "1ms",
            "--dry-run",
            "--json",
        ],
    ));
    assert_eq!(dry.as_array().unwrap().len(), 2);
    let retried = json_of(&cli(
        &h,
        &[
            "deletions",
            "retry",
            "--stuck-after",
            "1ms",
            "--why",
            "gateway restarted",
            "--json",
        ],
    ));
    assert_eq!(retried.as_array().unwrap().len(), 2);
    assert_eq!(audit_rows(&h, "deletion.retry").await.len(), 2);
    // The relay publishes both commands again, under the same ids.
    let again = h.expect_deletions(2).await;
    let mut ids: Vec<String> = again.iter().map(|c| c.deletion_id.clone()).collect();
    ids.sort();
    assert!(ids.contains(&failed_id));
    let view = json_of(&cli(&h, &["trace", &failed_id, "--json"]));
    assert_eq!(view[0]["deletion"]["retries"], 1);
    assert_eq!(view[0]["receipts"][0]["detail"], "gateway_timeout");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_checks_publishes_once_and_resumes() {
    let h = Harness::new(None, None).await;
    h.seed_patient("P-1001").await;
    let events = h.config.broker.events_queue.clone();
    let dir = h.dir.path().join("export");
    std::fs::create_dir_all(dir.join("2026-11")).unwrap();
    std::fs::write(dir.join("a.json"), event(&h, 1, "P-1001")).unwrap();
    std::fs::write(dir.join("2026-11/b.json"), event(&h, 2, "P-1001")).unwrap();
    std::fs::write(dir.join("broken.json"), b"{\"schema\": 3").unwrap();
    std::fs::write(dir.join("notes.txt"), b"not an export").unwrap();
    let d = dir.to_str().unwrap();

    let dry = cli(&h, &["import", d, "--dry-run", "--json"]);
    assert_eq!(dry.status.code(), Some(1), "an invalid file: {dry:?}");
    let plan: Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(plan["would_publish"].as_array().unwrap().len(), 2);
    assert_eq!(plan["invalid"][0]["reason"], "invalid_json");
    assert_eq!(depth(&h, &events).await, 0, "a dry run publishes nothing");
    assert!(audit_rows(&h, "import").await.is_empty());

    let first = cli(
        &h,
        &[
            "import",
            d,
            "--json",
            "--why",
            "migration from the old bridge",
        ],
    );
    assert_eq!(first.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(report["published"].as_array().unwrap().len(), 2);
    assert_eq!(depth(&h, &events).await, 2);
    assert_eq!(audit_rows(&h, "import").await.len(), 1);

    // Resumed: what was published is not published again.
    std::fs::remove_file(dir.join("broken.json")).unwrap();
    std::fs::write(dir.join("c.json"), event(&h, 3, "P-1001")).unwrap();
    let resumed = json_of(&cli(&h, &["import", d, "--json"]));
    assert_eq!(resumed["published"].as_array().unwrap().len(), 1);
    assert_eq!(resumed["published_before"].as_array().unwrap().len(), 2);
    assert_eq!(depth(&h, &events).await, 3);
    let nothing = json_of(&cli(&h, &["import", d, "--json"]));
    assert!(nothing["published"].as_array().unwrap().is_empty());
    // `publish` is `import` of the files given, published before or not.
    assert!(
        cli(&h, &["publish", dir.join("a.json").to_str().unwrap()])
            .status
            .success()
    );
    assert_eq!(depth(&h, &events).await, 4);

    let worker = h.start_worker();
    for n in [1, 2, 3] {
        h.wait_state(&key(&h, n), MessageState::Archived).await;
    }
    h.expect_deletions(3).await;
    worker.stop().await;
    assert_eq!(
        h.store.log_size().await.unwrap(),
        3,
        "the copy archived nothing twice"
    );
}

/// Rows of `action` in the audit trail of the SQLite database at `db`.
async fn audit_in(db: &std::path::Path, action: &str) -> usize {
    let store = chartbridge::store::Store::connect(&format!("sqlite://{}", db.display()), 1)
        .await
        .unwrap();
    let n = store
        .audit_trail()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.action == action)
        .count();
    store.close().await;
    n
}

fn published(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".checkpoint"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_restore_refuses_a_rolled_back_log_until_accepted() {
    let mut h = Harness::new(None, None).await;
    h.seed_patient("P-1001").await;
    h.add_proofs_config("0 0 0 1 1 *");
    let published_dir = h.dir.path().join("published");
    h.add_config(&format!("checkpoint_dir = \"{}\"", published_dir.display()));
    assert!(
        cli(&h, &["keygen-signing", "--name", "backup-test"])
            .status
            .success()
    );
    let worker = h.start_worker();
    h.publish(&event(&h, 1, "P-1001")).await;
    h.wait_state(&key(&h, 1), MessageState::Archived).await;
    assert!(cli(&h, &["log", "checkpoint"]).status.success());
    assert_eq!(published(&published_dir).len(), 1);

    // A sealed snapshot: no SQLite header, no plaintext.
    let backup = h.dir.path().join("state.backup");
    let out = cli(
        &h,
        &[
            "backup",
            "--out",
            backup.to_str().unwrap(),
            "--why",
            "before upgrade",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let bytes = std::fs::read(&backup).unwrap();
    assert!(bytes.starts_with(b"chartbridge-backup/1\n"));
    assert!(!bytes.windows(15).any(|w| w == b"SQLite format 3"));
    assert!(
        !cli(&h, &["backup", "--out", backup.to_str().unwrap()])
            .status
            .success()
    );

    // The log grows past the backup and is published again.
    h.publish(&event(&h, 2, "P-1001")).await;
    h.wait_state(&key(&h, 2), MessageState::Archived).await;
    assert!(cli(&h, &["log", "checkpoint"]).status.success());
    assert_eq!(published(&published_dir).len(), 2);
    worker.stop().await;
    h.store.close().await;

    // Restore the backup in place of the database.
    let restored = h.dir.path().join("restored.db");
    let out = cli(
        &h,
        &[
            "restore",
            backup.to_str().unwrap(),
            "--to",
            restored.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        audit_in(&restored, "backup.create").await,
        1,
        "the backup holds its own record"
    );
    assert_eq!(audit_in(&restored, "backup.restore").await, 1);
    let db = h.dir.path().join("state.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::rename(&restored, &db).unwrap();

    // The worker refuses to append to a log older than what was published.
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        chartbridge::app::run_until(h.config.clone(), rx.into()),
    )
    .await
    .expect("refuses at once")
    .unwrap_err();
    assert!(
        refused.to_string().contains("accept-rollback"),
        "{refused:#}"
    );
    let status = json_of(&cli(&h, &["status", "--json"]));
    assert_eq!(
        status["proof_log"]["size"], 1,
        "read-only commands still work"
    );
    let plan = json_of(&cli(&h, &["log", "accept-rollback", "--dry-run", "--json"]));
    assert_eq!(plan.as_array().unwrap().len(), 1, "{plan}");
    assert_eq!(plan[0]["published_size"], 2);
    assert_eq!(plan[0]["contradiction"]["behind"]["local_size"], 1);
    let out = cli(
        &h,
        &[
            "log",
            "accept-rollback",
            "--why",
            "restored after a disk failure",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(audit_in(&db, "log.accept-rollback").await, 1);

    // Accepted: the worker runs, the message after the backup is archived
    // again (the KIS already holds it), and the new log is published.
    let worker = h.start_worker();
    h.publish(&event(&h, 2, "P-1001")).await;
    h.store = chartbridge::store::Store::open(&format!("sqlite://{}", db.display()), 2, &h.sealer)
        .await
        .unwrap();
    h.wait_state(&key(&h, 2), MessageState::Archived).await;
    assert!(cli(&h, &["log", "checkpoint"]).status.success());
    assert_eq!(published(&published_dir).len(), 3);
    worker.stop().await;
    let (_stop, rx) = tokio::sync::watch::channel(true);
    chartbridge::app::run_until(h.config.clone(), rx.into())
        .await
        .expect("no contradiction left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_migrate_migrates() {
    let h = Harness::new(None, None).await;
    let db = h.dir.path().join("fresh.db");
    let text = std::fs::read_to_string(h.config_file())
        .unwrap()
        .replace("state.db", "fresh.db");
    let config = h.dir.path().join("fresh.toml");
    std::fs::write(&config, &text).unwrap();
    let tables = |db: std::path::PathBuf| async move {
        let store = chartbridge::store::Store::open_schema(
            &format!("sqlite://{}", db.display()),
            1,
            chartbridge::store::schema::Schema::Unchecked,
        )
        .await
        .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'")
            .fetch_one(store.pool())
            .await
            .unwrap();
        store.close().await;
        n
    };

    // Reading commands fail clearly and create no schema.
    for args in [
        &["status"][..],
        &["quarantine", "list"],
        &["trace", "x"],
        &["audit-trail"],
    ] {
        let out = cli_with(&config, args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr(&out).contains("chartbridge migrate"),
            "{args:?}: {out:?}"
        );
    }
    assert_eq!(tables(db.clone()).await, 0);
    let plan = json_of(&cli_with(&config, &["migrate", "--dry-run", "--json"]));
    assert!(plan["pending"].as_array().unwrap().len() >= 15);
    assert_eq!(tables(db.clone()).await, 0, "a dry run migrates nothing");
    assert!(cli_with(&config, &["migrate"]).status.success());
    assert!(cli_with(&config, &["status"]).status.success());
    assert_eq!(audit_in(&db, "store.migrate").await, 1);
    assert!(stderr(&cli_with(&config, &["migrate"])).contains("current"));

    // A schema one migration behind (as after installing a new version).
    let raw = chartbridge::store::Store::open_schema(
        &format!("sqlite://{}", db.display()),
        1,
        chartbridge::store::schema::Schema::Unchecked,
    )
    .await
    .unwrap();
    for sql in [
        "DELETE FROM _sqlx_migrations WHERE version = 20",
        "DROP TABLE job_runs",
        "DROP TABLE dlq_replays",
        "DROP TABLE imports",
        "DROP TABLE log_rollbacks",
        "ALTER TABLE quarantine DROP COLUMN correlation_id",
        "ALTER TABLE deletions DROP COLUMN retries",
    ] {
        sqlx::query(sql).execute(raw.pool()).await.unwrap();
    }
    raw.close().await;
    let behind = cli_with(&config, &["status", "--json"]);
    assert!(stderr(&behind).contains("behind"), "{behind:?}");
    // A worker that must not migrate refuses to start.
    let mut no_migrate =
        chartbridge::config::Config::from_parts(&config, &text, std::iter::empty()).unwrap();
    no_migrate.store.migrate_on_start = false;
    let (_stop, rx) = tokio::sync::watch::channel(true);
    let err = chartbridge::app::run_until(no_migrate, rx.into())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("chartbridge migrate"),
        "{err:#}"
    );
    let plan = json_of(&cli_with(&config, &["migrate", "--dry-run", "--json"]));
    assert_eq!(plan["pending"][0]["version"], 20);
    assert!(cli_with(&config, &["migrate"]).status.success());
    assert!(cli_with(&config, &["status"]).status.success());
    assert_eq!(audit_in(&db, "store.migrate").await, 2);
}
