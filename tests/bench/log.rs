//! Proof-log scale benchmark (not a test): appends LOG_LEAVES leaves through
//! the store's archive transaction (SQLite file, or PostgreSQL with
//! LOG_BENCH_POSTGRES=1) and prints the append rate per 10 % of the run and
//! the time of a root and an inclusion proof at the end.
//!
//!     LOG_LEAVES=1000000 cargo bench --bench log

use std::time::Instant;

use chartbridge::event::MessageKey;
use chartbridge::store::{ArchiveRecord, DeletionState, NewDeletion, Store};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::var("LOG_LEAVES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let url = if std::env::var("LOG_BENCH_POSTGRES").is_ok() {
        std::env::var("CHARTBRIDGE_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    } else {
        format!("sqlite://{}?mode=rwc", dir.path().join("log.db").display())
    };
    let store = Store::open(&url, 4, &chartbridge::seal::Sealer::from_key([0; 32]))
        .await
        .unwrap();
    let start_size = store.log_size().await.unwrap();
    let step = (n / 10).max(1);
    let mut t = Instant::now();
    for i in 0..n {
        let key = MessageKey {
            source: "bench".into(),
            message_id: format!("{}-{i}", uuid::Uuid::new_v4().simple()),
        };
        let rec = ArchiveRecord {
            deletion: NewDeletion {
                deletion_id: key.message_id.clone(),
                key: key.clone(),
                reason: "archived",
                sealed_command: chartbridge::seal::Sealer::from_key([0; 32]).seal(&[0; 64]),
                not_before_ms: 0,
                state: DeletionState::Pending,
            },
            key,
            rule: "bench".into(),
            content_sha256: "00".repeat(32),
            resource: format!("Communication/{i}"),
            resources: vec![],
            leaf_data: format!("leaf {i}").into_bytes(),
        };
        store.record_archive(&rec, 0).await.unwrap();
        if (i + 1) % step == 0 {
            println!(
                "log: leaves={} appends_per_s={:.0}",
                start_size + i + 1,
                step as f64 / t.elapsed().as_secs_f64()
            );
            t = Instant::now();
        }
    }
    let size = store.log_size().await.unwrap();
    let t = Instant::now();
    store.log_root(size).await.unwrap();
    let root_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let path = store.log_inclusion(size / 3, size).await.unwrap();
    let proof_ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "log: size={size} root_ms={root_ms:.2} inclusion_ms={proof_ms:.2} path_len={}",
        path.len()
    );
}
