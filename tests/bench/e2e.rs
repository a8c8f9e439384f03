//! End-to-end benchmark (not a test): N events through the real RabbitMQ, the
//! worker and the real FHIR server. Prints events/s, latency percentiles
//! (publish → terminal state committed) and the process's peak RSS.
//!
//!     BENCH_EVENTS=500 cargo bench --bench e2e
//!
//! Needs the services `deploy/dev/test.sh` needs and a FHIR server
//! (`deploy/dev/fhir-server.sh start`, or CHARTBRIDGE_TEST_FHIR_URL).

#[path = "../common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use chartbridge::store::millis;
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let h = common::Harness::new(None, None).await;
    h.seed_patient("P-1001").await;
    let text: Value = serde_json::from_slice(&h.fixture("events/text-canonical.json")).unwrap();
    let image: Value = serde_json::from_slice(&h.fixture("events/image-canonical.json")).unwrap();
    let mut keys = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    for i in 0..n {
        let mut e = if i % 5 == 4 {
            image.clone()
        } else {
            text.clone()
        };
        let id = format!("{}-b{i}", e["message_id"].as_str().unwrap());
        e["message_id"] = Value::String(id.clone());
        keys.push(chartbridge::event::MessageKey {
            source: "matrix".into(),
            message_id: id,
        });
        payloads.push(serde_json::to_vec(&e).unwrap());
    }
    let worker = h.start_worker();
    let start = Instant::now();
    let mut published_at = Vec::with_capacity(n);
    for p in &payloads {
        published_at.push(millis(chrono::Utc::now()));
        h.publish(p).await;
    }
    let publish_s = start.elapsed().as_secs_f64();
    common::wait_until(Duration::from_secs(3600), "all events terminal", || async {
        h.store
            .state_counts()
            .await
            .unwrap()
            .iter()
            .map(|c| c.count)
            .sum::<i64>() as usize
            >= n
    })
    .await;
    let total_s = start.elapsed().as_secs_f64();
    worker.stop().await;
    let mut latencies = Vec::with_capacity(n);
    for (k, t0) in keys.iter().zip(&published_at) {
        let named = h.store.message_ref(k).unwrap();
        let row =
            sqlx::query("SELECT created_at FROM messages WHERE source = $1 AND message_token = $2")
                .bind(&named.source)
                .bind(&named.token)
                .fetch_one(h.store.pool())
                .await
                .unwrap();
        let done: i64 = sqlx::Row::try_get(&row, 0).unwrap();
        latencies.push(done - t0);
    }
    latencies.sort_unstable();
    println!(
        "e2e: events={n} (80% text, 20% image) publish_s={publish_s:.2} total_s={total_s:.2} \
         events_per_s={:.1} latency_ms p50={} p99={} max={} peak_rss_mib={:.1}",
        n as f64 / total_s,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
        peak_rss_kib() as f64 / 1024.0,
    );
}
