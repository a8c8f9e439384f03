//! Several workers on one PostgreSQL database (issue 13, point 5): three
//! workers (`app::run_until`, each with its own pool, relay, consumers and
//! schedules) against the real PostgreSQL, RabbitMQ and FHIR server. The
//! singleton jobs (retention sweep, metadata purge, split sweep,
//! checkpoint signing) run once per cron instant, on the one worker that
//! holds the advisory lock, and move to another when it stops; the outbox
//! relays of all three claim with `FOR UPDATE SKIP LOCKED` and no deletion
//! command is published twice.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chartbridge::event::MessageKey;
use chartbridge::store::{JobRun, Store};
use common::{Harness, wait_until};
use serde_json::Value;
use sqlx::Row;

const JOBS: [&str; 4] = [
    "retention_sweep",
    "metadata_purge",
    "split_sweep",
    "checkpoint",
];

async fn postgres_url() -> String {
    sqlx::any::install_default_drivers();
    let admin = std::env::var("CHARTBRIDGE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("chartbridge_w_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::AnyPool::connect(&admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
}

/// Runs of every singleton job since `since`, by job.
async fn runs(store: &Store, since: i64) -> BTreeMap<&'static str, Vec<JobRun>> {
    let mut out = BTreeMap::new();
    for job in JOBS {
        out.insert(job, store.job_runs(job, since).await.unwrap());
    }
    out
}

/// The jobs of each leader role: the sweeps (`jobs`) and checkpoint
/// signing (`checkpoints`) have locks of their own.
const ROLES: [&[&str]; 2] = [
    &["retention_sweep", "metadata_purge", "split_sweep"],
    &["checkpoint"],
];

/// Each job's instants are consecutive seconds (none skipped, none twice)
/// and each role's jobs were all run by one worker; returns it per role.
fn one_leader_per_role(runs: &BTreeMap<&'static str, Vec<JobRun>>) -> Vec<String> {
    let mut leaders = Vec::new();
    for role in ROLES {
        let mut workers = BTreeSet::new();
        for job in role {
            let rows = &runs[job];
            assert!(rows.len() >= 2, "{job}: {rows:?}");
            for pair in rows.windows(2) {
                assert_eq!(pair[1].tick - pair[0].tick, 1000, "{job}: {rows:?}");
            }
            workers.extend(rows.iter().map(|r| r.worker.clone()));
        }
        assert_eq!(workers.len(), 1, "one leader ran {role:?}: {workers:?}");
        leaders.extend(workers);
    }
    leaders
}

/// Sessions holding a chartbridge advisory lock in this database.
async fn lock_holders(store: &Store) -> i64 {
    sqlx::query(
        "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND classid = 1667785074",
    )
    .fetch_one(store.pool())
    .await
    .unwrap()
    .try_get(0)
    .unwrap()
}

fn now_ms() -> i64 {
    chartbridge::store::millis(chrono::Utc::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_run_each_job_once_per_tick_and_send_each_deletion_once() {
    let mut h = Harness::new(None, None).await;
    h.seed_patient("P-1001").await;
    let url = postgres_url().await;
    let pg = Store::open(&url, 4, &h.sealer).await.unwrap();
    let text = std::fs::read_to_string(h.config_file()).unwrap();
    let sqlite = text
        .lines()
        .find(|l| l.starts_with("url = \"sqlite:"))
        .unwrap()
        .to_owned();
    let text = text.replace(&sqlite, &format!("url = \"{url}\"")).replace(
        "[schedule]\n",
        "[schedule]\nretention_sweep = \"* * * * * *\"\nmetadata_purge = \"* * * * * *\"\n\
         split_sweep = \"* * * * * *\"\nleader_interval = \"200ms\"\n",
    );
    std::fs::write(h.config_file(), text).unwrap();
    h.add_proofs_config("* * * * * *");
    let keygen = std::process::Command::new(env!("CARGO_BIN_EXE_chartbridge"))
        .arg("--config")
        .arg(h.config_file())
        .args(["keygen-signing", "--name", "workers-test"])
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");

    // The first worker leads alone; two more join.
    let since = now_ms();
    let first = h.start_worker();
    wait_until(Duration::from_secs(30), "the first worker's runs", || {
        let pg = pg.clone();
        async move { runs(&pg, since).await.values().all(|r| r.len() >= 2) }
    })
    .await;
    let leaders = one_leader_per_role(&runs(&pg, since).await);
    assert_eq!(
        leaders[0], leaders[1],
        "alone, the first worker leads both roles"
    );
    let others = [h.start_worker(), h.start_worker()];
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        lock_holders(&pg).await,
        2,
        "one session per role: jobs, checkpoints"
    );

    // Forty events spread over the three consumers; every archive queues
    // one deletion, which the three relays publish exactly once between them.
    let n = 40;
    let mut keys = Vec::new();
    for i in 0..n {
        let mut v: Value =
            serde_json::from_slice(&h.fixture("events/text-canonical.json")).unwrap();
        v["message_id"] = format!("$w-{i}-{}", h.run).into();
        v["event_id"] = format!("evt-w-{i}-{}", h.run).into();
        v["case"].as_object_mut().unwrap().remove("encounter");
        h.publish(&serde_json::to_vec(&v).unwrap()).await;
        keys.push(MessageKey {
            source: "matrix".into(),
            message_id: format!("$w-{i}-{}", h.run),
        });
    }
    let commands = h.expect_deletions(n).await;
    let ids: BTreeSet<&str> = commands.iter().map(|c| c.deletion_id.as_str()).collect();
    assert_eq!(ids.len(), n, "no deletion command published twice");
    for k in &keys {
        let m = pg.message(k).await.unwrap().expect("recorded");
        assert_eq!(m.state, chartbridge::store::MessageState::Archived);
    }
    let attempts: i64 = sqlx::query("SELECT MAX(attempts) FROM deletions")
        .fetch_one(pg.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(attempts, 1, "every outbox row claimed once");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        h.deletion_commands().await.is_empty(),
        "nothing published again"
    );

    // Three workers, one leader: every instant ran once, on the leader.
    let window = runs(&pg, since).await;
    assert_eq!(
        one_leader_per_role(&window),
        leaders,
        "the first worker still leads"
    );
    let counted = chartbridge::telemetry::snapshot();
    for (job, rows) in &window {
        let all = pg.job_runs(job, 0).await.unwrap().len() as u64;
        assert_eq!(
            counted
                .get(&format!("job_runs_total{{job={job}}}"))
                .copied(),
            Some(all),
            "{job}: each run claimed its instant first ({} in the window)",
            rows.len()
        );
    }
    let checkpoints: Vec<(i64, i64)> =
        sqlx::query("SELECT tree_size, COUNT(*) FROM checkpoints GROUP BY tree_size")
            .fetch_all(pg.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.try_get(0).unwrap(), r.try_get(1).unwrap()))
            .collect();
    assert!(
        checkpoints.iter().any(|(size, _)| *size == n as i64),
        "{checkpoints:?}"
    );
    assert!(
        checkpoints.iter().all(|(_, count)| *count == 1),
        "{checkpoints:?}"
    );

    // The leader stops: another worker takes over within a few rounds.
    first.stop().await;
    let after = now_ms() + 1000;
    wait_until(Duration::from_secs(30), "a new leader's runs", || {
        let pg = pg.clone();
        async move { runs(&pg, after).await.values().all(|r| r.len() >= 3) }
    })
    .await;
    let next = one_leader_per_role(&runs(&pg, after).await);
    assert!(
        next.iter().all(|w| *w != leaders[0]),
        "the lead moved: {next:?}"
    );
    assert_eq!(lock_holders(&pg).await, 2);
    for w in others {
        w.stop().await;
    }
    assert_eq!(lock_holders(&pg).await, 0, "released at shutdown");
    pg.close().await;
}
