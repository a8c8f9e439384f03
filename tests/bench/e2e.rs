//! End-to-end benchmark (not a test): N events through the real RabbitMQ
//! and the worker, each figure printed beside its baseline as a ratio.
//!
//!     BENCH_EVENTS=10000 cargo bench --bench e2e
//!
//! In one run, release profile (`cargo bench`):
//! 1. `broker`: the baseline, a minimal lapin consumer with manual acks and
//!    the worker's prefetch, draining N pre-published events;
//! 2. `null-kis/sqlite` and `null-kis/postgres`: the worker (in-process,
//!    the harness configuration: concurrency 8, prefetch 16) against a null
//!    KIS (`null_kis.rs`, a fast in-memory FHIR endpoint on a thread of its
//!    own): archives/s and deletions requested/s (publish → no deletion command left
//!    unconfirmed by the broker), each as a ratio of the broker's
//!    rate, latency publish → committed terminal state (all events are
//!    published before the worker starts, so it is mostly queueing), KIS
//!    requests per event;
//! 3. with `BENCH_KIS=dev`, the same against the dev FHIR server
//!    (`CHARTBRIDGE_TEST_FHIR_URL`) instead of the null KIS.
//!
//! `BENCH_STORES=sqlite` (or `postgres`) limits the stores;
//! `CHARTBRIDGE_TEST_POSTGRES` names the PostgreSQL server (a fresh
//! database per run). Peak RSS is the whole process's (worker, harness and
//! null KIS). Needs RabbitMQ, PostgreSQL and, for the harness's seeding,
//! the dev FHIR server.

#[path = "../common/mod.rs"]
mod common;
mod null_kis;

use std::time::{Duration, Instant};

use chartbridge::config::Config;
use chartbridge::store::{Store, millis};
use futures_util::StreamExt;
use serde_json::Value;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

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
    let h = common::Harness::new(None, None).await;
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
}

async fn count(store: &Store, sql: &'static str) -> usize {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(store.pool())
        .await
        .unwrap() as usize
}

/// The worker on `store` (`sqlite` or `postgres`) against `kis`.
async fn chartbridge_run(n: usize, store: &str, kis: Option<&null_kis::NullKis>) -> Run {
    let kis_url = kis.map(|k| k.url.clone());
    let mut h = common::Harness::new(kis_url.as_deref(), None).await;
    h.seed_patient("P-1001").await;
    let mut db = h.store.clone();
    if store == "postgres" {
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
    let events = payloads(&h, n);
    let before = kis.map(null_kis::NullKis::counts);
    // All published first, as for the baseline: the rate is the worker's
    // drain rate, not the harness's publish rate.
    let mut published_at = Vec::with_capacity(n);
    for (_, p) in &events {
        published_at.push(millis(chrono::Utc::now()));
        h.publish(p).await;
    }
    let worker = h.start_worker();
    let start = Instant::now();
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
        assert!(
            start.elapsed() < Duration::from_secs(3600),
            "bench timed out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.stop().await;
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
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let stores = std::env::var("BENCH_STORES").unwrap_or_else(|_| "sqlite,postgres".into());
    let dev = std::env::var("BENCH_KIS").is_ok_and(|v| v == "dev");
    let null = (!dev).then(null_kis::NullKis::start);
    let kis_name = if dev { "dev-kis" } else { "null-kis" };
    let broker = broker_baseline(n).await;
    println!("broker: events={n} msgs_per_s={broker:.0} (baseline, ratio 1.00)");
    for store in stores.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let r = chartbridge_run(n, store, null.as_ref()).await;
        let kis = r
            .kis_per_event
            .map(|(t, s, g)| format!(" kis_per_event tx={t:.2} search={s:.2} read={g:.2}"))
            .unwrap_or_default();
        println!(
            "{kis_name}/{store}: events={n} archives_per_s={:.0} ({:.3}x broker) \
             deletions_requested_per_s={:.0} ({:.3}x broker, {:.2}x archives) \
             latency_ms p50={} p99={} max={}{kis} peak_rss_mib={:.1}",
            r.archives_per_s,
            r.archives_per_s / broker,
            r.deletions_per_s,
            r.deletions_per_s / broker,
            r.deletions_per_s / r.archives_per_s,
            r.p50,
            r.p99,
            r.max,
            peak_rss_kib() as f64 / 1024.0,
        );
    }
}
