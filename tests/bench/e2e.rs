//! End-to-end benchmark (not a test): N events through the real RabbitMQ
//! and the worker, each figure printed beside its baseline as a ratio.
//!
//!     deploy/dev/bench.sh            # everything below, release profile
//!     BENCH_EVENTS=10000 cargo bench --bench e2e
//!
//! In one run, release profile (`cargo bench`):
//! 1. `broker`: the baseline, a minimal lapin consumer with manual acks and
//!    the worker's prefetch, draining N pre-published events;
//! 2. `null-kis/sqlite` and `null-kis/postgres`: the worker (in-process,
//!    the product's defaults: concurrency 32, prefetch 64, group commit 32,
//!    8 store connections; `BENCH_CONCURRENCY`, `BENCH_PREFETCH`,
//!    `BENCH_GROUP`, `BENCH_CONNECTIONS` change them) against a null
//!    KIS (`null_kis.rs`, a fast in-memory FHIR endpoint on a thread of its
//!    own): archives/s and deletions requested/s (publish → no deletion
//!    command left unconfirmed by the broker), each as a ratio of the
//!    broker's rate, latency publish → committed terminal state (all events
//!    are published before the worker starts, so it is mostly queueing),
//!    KIS requests per event, CPU cores burnt per process group (the bench
//!    process with the in-process worker and the null KIS, worker
//!    processes, RabbitMQ, PostgreSQL);
//! 3. `BENCH_WORKERS=1,2,4`: that many `chartbridge run` processes as
//!    competing consumers on one PostgreSQL database and queue, each rate
//!    as a ratio of one process's;
//! 4. `BENCH_LATENCY=1`: events published at half the maximum measured in
//!    2 (paced), latency publish → committed against the 50 ms target;
//! 5. `BENCH_KIS=dev` (or `null,dev`): the dev FHIR server
//!    (`CHARTBRIDGE_TEST_FHIR_URL`) instead of the null KIS, beside that
//!    server's own ingest of the same transaction bundles posted directly
//!    (`dev-kis/direct`, as many at a time as the worker's concurrency); `BENCH_BATCH=16` adds a run with
//!    `kis.batch_max = 16` (several messages per transaction) against the
//!    same baseline.
//!
//! `BENCH_STORES=sqlite` (or `postgres`) limits the stores;
//! `CHARTBRIDGE_TEST_POSTGRES` names the PostgreSQL server (a fresh
//! database per run). Peak RSS is the bench process's (worker, harness and
//! null KIS). Needs RabbitMQ, PostgreSQL and the dev FHIR server.

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[path = "../common/mod.rs"]
mod common;
mod null_kis;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chartbridge::config::Config;
use chartbridge::store::{Store, millis};
use futures_util::StreamExt;
use serde_json::Value;

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn postgres_url() -> String {
    sqlx::any::install_default_drivers();
    let admin = std::env::var("CHARTBRIDGE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("chartbridge_bench_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::AnyPool::connect(&admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
}

/// N payloads, 80 % text and 20 % inline image, unique message ids.
fn payloads(h: &common::Harness, n: usize) -> Vec<(chartbridge::event::MessageKey, Vec<u8>)> {
    let text: Value = serde_json::from_slice(&h.fixture("events/text-canonical.json")).unwrap();
    let image: Value = serde_json::from_slice(&h.fixture("events/image-canonical.json")).unwrap();
    (0..n)
        .map(|i| {
            let mut e = if i % 5 == 4 {
                image.clone()
            } else {
                text.clone()
            };
            let id = format!("{}-b{i}", e["message_id"].as_str().unwrap());
            e["message_id"] = Value::String(id.clone());
            let key = chartbridge::event::MessageKey {
                source: "matrix".into(),
                message_id: id,
            };
            (key, serde_json::to_vec(&e).unwrap())
        })
        .collect()
}

/// The baseline: N events published, then drained by a bare lapin consumer
/// (manual acks, prefetch as the worker's). Returns messages per second.
async fn broker_baseline(n: usize) -> f64 {
    let mut h = common::Harness::new(None, None).await;
    tune(&mut h);
    let events = payloads(&h, n);
    for (_, p) in &events {
        h.publish(p).await;
    }
    let prefetch = h.config.broker.prefetch;
    let ch = h.broker.consumer_channel(prefetch).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            h.config.broker.events_queue.as_str().into(),
            "bench-baseline".into(),
            lapin::options::BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let start = Instant::now();
    for _ in 0..n {
        let d = consumer.next().await.unwrap().unwrap();
        d.ack(lapin::options::BasicAckOptions::default())
            .await
            .unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

struct Run {
    archives_per_s: f64,
    deletions_per_s: f64,
    p50: i64,
    p99: i64,
    max: i64,
    kis_per_event: Option<(f64, f64, f64)>,
    /// CPU seconds burnt during the run, per process group.
    cpu: Vec<(&'static str, f64)>,
    wall_s: f64,
}

async fn count(store: &Store, sql: &'static str) -> usize {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(store.pool())
        .await
        .unwrap() as usize
}

/// How the worker runs in one measurement.
#[derive(Clone, Copy)]
struct Setup<'a> {
    /// `sqlite` or `postgres`.
    store: &'a str,
    kis: Option<&'a null_kis::NullKis>,
    /// 0: one worker inside the bench process; k > 0: k `chartbridge run`
    /// processes on the same database and queue (competing consumers).
    processes: usize,
    /// Publish at this many events per second while the worker runs
    /// (latency), instead of everything before it starts (throughput).
    pace: Option<f64>,
    /// `kis.batch_max`: messages per KIS transaction (1: one each). Above
    /// 1 the in-process worker's concurrency is raised to twice the batch
    /// and its prefetch to four times, so full batches can form.
    batch: usize,
}

/// User + system CPU time of `pid`, in seconds (`/proc/PID/stat` fields
/// 14 and 15, clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Pids whose command name (`/proc/PID/comm`) is `comm`.
fn pids_named(comm: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|c| c.trim() == comm)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// CPU seconds so far of the bench process, the worker processes,
/// RabbitMQ (`beam.smp`) and PostgreSQL (every `postgres` process).
fn cpu_snapshot(workers: &[u32]) -> Vec<(&'static str, HashMap<u32, f64>)> {
    let of = |pids: Vec<u32>| pids.into_iter().map(|p| (p, cpu_seconds(p))).collect();
    vec![
        ("bench", of(vec![std::process::id()])),
        ("workers", of(workers.to_vec())),
        ("rabbitmq", of(pids_named("beam.smp"))),
        ("postgres", of(pids_named("postgres"))),
    ]
}

fn cpu_used(
    before: &[(&'static str, HashMap<u32, f64>)],
    after: &[(&'static str, HashMap<u32, f64>)],
) -> Vec<(&'static str, f64)> {
    before
        .iter()
        .zip(after)
        .map(|((name, b), (_, a))| {
            let used = a
                .iter()
                .map(|(pid, t)| t - b.get(pid).copied().unwrap_or(0.0))
                .sum::<f64>();
            (*name, used)
        })
        .collect()
}

/// Worker processes on the harness's configuration file.
fn spawn_workers(h: &common::Harness, k: usize) -> Vec<std::process::Child> {
    (0..k)
        .map(|i| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_chartbridge"));
            cmd.arg("--config")
                .arg(h.config_file())
                .arg("run")
                .current_dir(h.dir.path())
                .env("RUST_LOG", "warn")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(
                    std::fs::File::create(h.dir.path().join(format!("worker{i}.log"))).unwrap(),
                );
            for (var, _) in std::env::vars() {
                if var.starts_with(chartbridge::config::ENV_PREFIX) {
                    cmd.env_remove(var);
                }
            }
            cmd.spawn().expect("start chartbridge run")
        })
        .collect()
}

/// Publishes `events` (at `pace` per second, or as fast as the broker
/// takes them); the publish time of each, in ms since the epoch.
async fn publish(
    h: &common::Harness,
    events: &[(chartbridge::event::MessageKey, Vec<u8>)],
    pace: Option<f64>,
) -> Vec<i64> {
    let start = Instant::now();
    let mut at = Vec::with_capacity(events.len());
    for (i, (_, p)) in events.iter().enumerate() {
        if let Some(rate) = pace {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        at.push(millis(chrono::Utc::now()));
        h.publish(p).await;
    }
    at
}

/// The worker(s) as `setup` says, over `n` events.
async fn chartbridge_run(n: usize, setup: Setup<'_>) -> Run {
    let kis = setup.kis;
    let kis_url = kis.map(|k| k.url.clone());
    let mut h = common::Harness::new(kis_url.as_deref(), None).await;
    h.seed_patient("P-1001").await;
    let mut db = h.store.clone();
    if setup.store == "postgres" {
        let url = postgres_url().await;
        let text = std::fs::read_to_string(h.config_file()).unwrap();
        let sqlite = text
            .lines()
            .find(|l| l.starts_with("url = \"sqlite:"))
            .unwrap()
            .to_owned();
        let text = text.replace(&sqlite, &format!("url = \"{url}\""));
        std::fs::write(h.config_file(), &text).unwrap();
        h.config = Config::from_parts(h.config_file(), &text, std::iter::empty()).unwrap();
        db = Store::open(&url, 4, &h.sealer).await.unwrap();
    }
    tune(&mut h);
    if setup.batch > 1 {
        h.config.kis.batch_max = setup.batch;
        h.config.pipeline.concurrency = h.config.pipeline.concurrency.max(2 * setup.batch);
        h.config.broker.prefetch = h.config.broker.prefetch.max(4 * setup.batch as u16);
    }
    let events = payloads(&h, n);
    let before = kis.map(null_kis::NullKis::counts);
    // Throughput: all published first, as for the baseline, so the rate is
    // the worker's drain rate, not the harness's publish rate. Latency: the
    // worker runs first and events arrive at the paced rate.
    let mut published_at = Vec::new();
    if setup.pace.is_none() {
        published_at = publish(&h, &events, None).await;
    }
    let mut children = Vec::new();
    let mut worker = None;
    if setup.processes == 0 {
        worker = Some(h.start_worker());
    } else {
        children = spawn_workers(&h, setup.processes);
    }
    let pids: Vec<u32> = children.iter().map(std::process::Child::id).collect();
    let cpu_before = cpu_snapshot(&pids);
    let start = Instant::now();
    if setup.pace.is_some() {
        published_at = publish(&h, &events, setup.pace).await;
    }
    let mut archived_s = None;
    let deleted_s;
    loop {
        if archived_s.is_none() && count(&db, "SELECT COUNT(*) FROM messages").await >= n {
            archived_s = Some(start.elapsed().as_secs_f64());
        }
        // Archives queue their deletion pending; the relay requests it.
        if archived_s.is_some()
            && count(
                &db,
                "SELECT COUNT(*) FROM deletions WHERE state = 'pending'",
            )
            .await
                == 0
        {
            deleted_s = start.elapsed().as_secs_f64();
            break;
        }
        for c in &mut children {
            if let Ok(Some(status)) = c.try_wait() {
                panic!(
                    "a worker process exited ({status}); logs in {:?}",
                    h.dir.path()
                );
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(3600),
            "bench timed out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = cpu_used(&cpu_before, &cpu_snapshot(&pids));
    let wall_s = start.elapsed().as_secs_f64();
    if let Some(w) = worker {
        w.stop().await;
    }
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let after = kis.map(null_kis::NullKis::counts);
    let mut latencies = Vec::with_capacity(n);
    for ((k, _), t0) in events.iter().zip(&published_at) {
        let named = db.message_ref(k).unwrap();
        let row =
            sqlx::query("SELECT created_at FROM messages WHERE source = $1 AND message_token = $2")
                .bind(&named.source)
                .bind(&named.token)
                .fetch_one(db.pool())
                .await
                .unwrap();
        let done: i64 = sqlx::Row::try_get(&row, 0).unwrap();
        latencies.push(done - t0);
    }
    latencies.sort_unstable();
    let per = |a: u64, b: u64| (a - b) as f64 / n as f64;
    Run {
        archives_per_s: n as f64 / archived_s.unwrap(),
        deletions_per_s: n as f64 / deleted_s,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        max: *latencies.last().unwrap(),
        kis_per_event: before
            .zip(after)
            .map(|(b, a)| (per(a.0, b.0), per(a.1, b.1), per(a.2, b.2))),
        cpu,
        wall_s,
    }
}

/// The dev KIS's own ingest of the same events: the transaction bundles
/// `chartbridge map` makes of them (one per message), posted straight to
/// the server, as many at a time as the worker's `pipeline.concurrency`. Transactions per
/// second.
async fn kis_direct_baseline(n: usize) -> f64 {
    let mut h = common::Harness::new(None, None).await;
    tune(&mut h);
    let concurrency = h.config.pipeline.concurrency;
    let (patient, _) = h.seed_patient("P-1001").await;
    let rules = chartbridge::classify::Rules::load(&h.config.mappings.rules_file).unwrap();
    let settings = chartbridge::map::MapSettings::from(&h.config.kis);
    let now = chrono::Utc::now();
    let bundles: Vec<Vec<u8>> = payloads(&h, n)
        .iter()
        .flat_map(|(_, p)| {
            chartbridge::app::offline_map(p, &rules, &settings, Some(&patient), now).unwrap()
        })
        .map(|b| serde_json::to_vec(&b).unwrap())
        .collect();
    let client = reqwest::Client::new();
    let url = format!("{}/", h.config.kis.base_url.as_str().trim_end_matches('/'));
    let start = Instant::now();
    let sent = futures_util::stream::iter(bundles)
        .map(|body| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let r = client
                    .post(&url)
                    .header("content-type", "application/fhir+json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "direct ingest: {}", r.status());
                r.bytes().await.unwrap();
            }
        })
        .buffer_unordered(concurrency)
        .count()
        .await;
    sent as f64 / start.elapsed().as_secs_f64()
}

fn cpu_line(r: &Run) -> String {
    r.cpu
        .iter()
        .filter(|(_, s)| *s > 0.0)
        .map(|(name, s)| format!("{name}={:.2}", s / r.wall_s))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_run(label: &str, n: usize, r: &Run, broker: f64) {
    let kis = r
        .kis_per_event
        .map(|(t, s, g)| format!(" kis_per_event tx={t:.2} search={s:.2} read={g:.2}"))
        .unwrap_or_default();
    println!(
        "{label}: events={n} archives_per_s={:.0} ({:.3}x broker) \
         deletions_requested_per_s={:.0} ({:.3}x broker, {:.2}x archives) \
         latency_ms p50={} p99={} max={}{kis} cpu_cores {} peak_rss_mib={:.1}",
        r.archives_per_s,
        r.archives_per_s / broker,
        r.deletions_per_s,
        r.deletions_per_s / broker,
        r.deletions_per_s / r.archives_per_s,
        r.p50,
        r.p99,
        r.max,
        cpu_line(r),
        common::peak_rss_kib(std::process::id()) as f64 / 1024.0,
    );
}

/// Gives the harness's configuration file (read by the in-process worker
/// and by worker processes alike) the product's defaults for the settings
/// that bound throughput, where the test harness keeps smaller ones, or
/// the values named in the environment: `BENCH_CONCURRENCY`
/// (`pipeline.concurrency`, default 32), `BENCH_PREFETCH`
/// (`broker.prefetch`, 64), `BENCH_CONNECTIONS` (`store.max_connections`,
/// 8) and `BENCH_GROUP` (`pipeline.group_commit_max`, 32). The baseline
/// consumer takes the same prefetch.
fn tune(h: &mut common::Harness) {
    let mut text = std::fs::read_to_string(h.config_file()).unwrap();
    for (var, section, key, default) in [
        ("BENCH_CONCURRENCY", "[pipeline]", "concurrency", 32),
        ("BENCH_PREFETCH", "[broker]", "prefetch", 64),
        ("BENCH_CONNECTIONS", "[store]", "max_connections", 8),
        ("BENCH_GROUP", "[pipeline]", "group_commit_max", 32),
    ] {
        let value: u32 = std::env::var(var).map_or(default, |v| {
            v.parse().unwrap_or_else(|_| panic!("{var}: a number"))
        });
        let prefix = format!("{key} = ");
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with(&prefix))
            .map(str::to_owned)
            .collect();
        let at = lines.iter().position(|l| l == section).unwrap() + 1;
        lines.insert(at, format!("{prefix}{value}"));
        text = lines.join("\n") + "\n";
    }
    std::fs::write(h.config_file(), &text).unwrap();
    h.config = Config::from_parts(h.config_file(), &text, std::iter::empty()).unwrap();
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let stores = env_list("BENCH_STORES", "sqlite,postgres");
    let kises = env_list("BENCH_KIS", "null");
    let workers: Vec<usize> = env_list("BENCH_WORKERS", "")
        .iter()
        .map(|w| w.parse().expect("BENCH_WORKERS: a list of numbers"))
        .collect();
    let batches: Vec<usize> = env_list("BENCH_BATCH", "")
        .iter()
        .map(|b| b.parse().expect("BENCH_BATCH: a list of numbers"))
        .filter(|&b| b > 1)
        .collect();
    let latency = std::env::var("BENCH_LATENCY").is_ok_and(|v| v == "1");
    let null = kises
        .iter()
        .any(|k| k == "null")
        .then(null_kis::NullKis::start);
    let broker = broker_baseline(n).await;
    println!("broker: events={n} msgs_per_s={broker:.0} (baseline, ratio 1.00)");
    let mut max_rate: Option<f64> = None;
    for kis in &kises {
        let null_kis = (kis == "null").then(|| null.as_ref().unwrap());
        if kis == "dev" {
            let direct = kis_direct_baseline(n).await;
            println!(
                "dev-kis/direct: events={n} tx_per_s={direct:.1} (baseline for dev-kis, ratio 1.00)"
            );
            // One message per KIS transaction on every store, then several
            // (kis.batch_max) on the first.
            let first = stores.first().map_or("sqlite", String::as_str);
            let runs = stores
                .iter()
                .map(|store| (store.as_str(), 1))
                .chain(batches.iter().map(|&b| (first, b)));
            for (store, batch) in runs {
                let r = chartbridge_run(
                    n,
                    Setup {
                        store,
                        kis: None,
                        processes: 0,
                        pace: None,
                        batch,
                    },
                )
                .await;
                let (label, target) = if batch == 1 {
                    (format!("dev-kis/{store}"), "")
                } else {
                    (format!("dev-kis/{store}/batch_max={batch}"), ", target 3x")
                };
                print_run(&label, n, &r, broker);
                println!(
                    "{label}: archives_per_s={:.1} ({:.2}x the dev KIS's direct ingest{target})",
                    r.archives_per_s,
                    r.archives_per_s / direct
                );
            }
            continue;
        }
        for store in &stores {
            let r = chartbridge_run(
                n,
                Setup {
                    store,
                    kis: null_kis,
                    processes: 0,
                    pace: None,
                    batch: 1,
                },
            )
            .await;
            print_run(&format!("{kis}-kis/{store}"), n, &r, broker);
            if store == "sqlite" || max_rate.is_none() {
                max_rate = Some(r.archives_per_s);
            }
        }
        // Several messages per KIS transaction (kis.batch_max) on the
        // first store.
        let first = stores.first().map_or("sqlite", String::as_str);
        for &batch in &batches {
            let r = chartbridge_run(
                n,
                Setup {
                    store: first,
                    kis: null_kis,
                    processes: 0,
                    pace: None,
                    batch,
                },
            )
            .await;
            print_run(
                &format!("{kis}-kis/{first}/batch_max={batch}"),
                n,
                &r,
                broker,
            );
        }
        // Competing consumers on one PostgreSQL database and queue.
        let mut one = None;
        for &k in &workers {
            let r = chartbridge_run(
                n,
                Setup {
                    store: "postgres",
                    kis: null_kis,
                    processes: k,
                    pace: None,
                    batch: 1,
                },
            )
            .await;
            let base = *one.get_or_insert(r.archives_per_s);
            print_run(&format!("{kis}-kis/postgres/workers={k}"), n, &r, broker);
            println!(
                "{kis}-kis/postgres/workers={k}: archives_per_s={:.0} ({:.2}x one worker process)",
                r.archives_per_s,
                r.archives_per_s / base
            );
        }
        // Latency at half the measured maximum.
        if latency && let Some(max) = max_rate {
            let store = stores.first().map_or("sqlite", String::as_str);
            let rate = max / 2.0;
            let m = n.min((rate * 20.0) as usize).max(200);
            let r = chartbridge_run(
                m,
                Setup {
                    store,
                    kis: null_kis,
                    processes: 0,
                    pace: Some(rate),
                    batch: 1,
                },
            )
            .await;
            println!(
                "{kis}-kis/{store}/latency: events={m} paced_per_s={rate:.0} (0.50x max) \
                 publish_to_committed_ms p50={} p99={} max={} (p99 {:.2}x the 50 ms target)",
                r.p50,
                r.p99,
                r.max,
                r.p99 as f64 / 50.0
            );
        }
    }
}
