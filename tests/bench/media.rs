//! Large-media benchmark (not a test): the peak memory of the `chartbridge`
//! binary archiving one large medium, measured as its own process's
//! `VmHWM` (/proc/PID/status), release profile:
//!
//!     cargo bench --bench media
//!
//! For each size in `BENCH_MEDIA_MB` (default `20,200`): a fresh harness
//! (RabbitMQ, SQLite), the media API stand-in serving the medium
//! (`video/mp4`, bytes no sniffer recognises: archived unchanged, no
//! in-memory minimisation), the null KIS (`null_kis.rs`, which decodes the
//! streamed Binary upload and serves it back raw), and `chartbridge run` as a
//! child process; the medium is published by reference, the bench waits for
//! the archive (upload, transaction, read-back by hash) and reads the
//! child's peak RSS before stopping it. Prints the figure beside the
//! target (≤ 64 MiB) and beside the same worker's peak on a text message.
//! `BENCH_MEDIA_INLINE_MB` (default `20`; empty to skip) runs sizes with
//! `kis.binary_upload_threshold` above the medium, the Binary base64
//! inside the transaction as before, for comparison.
//!
//! Needs RabbitMQ and, for the harness's check, the dev FHIR server.

#[path = "../common/mod.rs"]
mod common;
mod null_kis;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chartbridge::store::MessageState;
use common::standins::{self, MediaApi, Medium};
use serde_json::{Value, json};
use sha2::Digest;

const MIB: usize = 1024 * 1024;

struct Measured {
    seconds: f64,
    peak_mib: f64,
}

/// One `chartbridge run` child archiving one message; `bytes` is the
/// medium (`None`: the text fixture).
async fn run_one(kis: &null_kis::NullKis, bytes: Option<&[u8]>, threshold: u64) -> Measured {
    let media = MediaApi::start().await;
    let h = common::Harness::new(Some(&kis.url), Some(&media.url)).await;
    let spool = h.dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let text = std::fs::read_to_string(h.config_file())
        .unwrap()
        .replace(
            "max_bytes = 1048576\n",
            &format!(
                "max_bytes = {}\nin_memory_max_bytes = {}\nspool_dir = \"{}\"\n",
                512 * MIB,
                512 * MIB,
                spool.display()
            ),
        )
        .replace(
            "backoff_max = \"200ms\"\n",
            &format!(
                "backoff_max = \"200ms\"\ntimeout = \"600s\"\nbinary_upload_threshold = {threshold}\n"
            ),
        );
    std::fs::write(h.config_file(), text).unwrap();
    let (payload, key) = match bytes {
        Some(bytes) => {
            media.put(
                "bench-clip",
                Medium {
                    bytes: bytes.to_vec(),
                    mime_type: "video/mp4".into(),
                },
            );
            let mut v: Value =
                serde_json::from_slice(&h.fixture("events/image-canonical.json")).unwrap();
            v["media"] = json!({
                "mime_type": "video/mp4",
                "size": bytes.len(),
                "sha256": hex::encode(sha2::Sha256::digest(bytes)),
                "reference": "bench-clip",
            });
            v.as_object_mut().unwrap().remove("part");
            (
                serde_json::to_vec(&v).unwrap(),
                h.key("matrix", "$msg-0002"),
            )
        }
        None => (
            h.fixture("events/text-canonical.json"),
            h.key("matrix", "$msg-0001"),
        ),
    };
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_chartbridge"))
        .arg("--config")
        .arg(h.config_file())
        .arg("run")
        .current_dir(h.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(h.dir.path().join("stderr.log")).unwrap())
        .spawn()
        .expect("start chartbridge run");
    let pid = child.id();
    let start = Instant::now();
    h.publish(&payload).await;
    loop {
        match h.state(&key).await {
            Some(m) if m.state == MessageState::Archived => break,
            Some(m) => panic!("not archived: {} {}", m.state.as_str(), m.reason),
            None => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(1800),
            "bench timed out"
        );
        if child.try_wait().unwrap().is_some() {
            let log = std::fs::read_to_string(h.dir.path().join("stderr.log")).unwrap();
            panic!("chartbridge exited:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let peak_mib = common::peak_rss_kib(pid) as f64 / 1024.0;
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "the spool is empty"
    );
    Measured { seconds, peak_mib }
}

fn sizes(var: &str, default: &str) -> Vec<usize> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let kis = null_kis::NullKis::start();
    let base = run_one(&kis, None, MIB as u64).await;
    println!(
        "media/text: peak_rss_mib={:.1} (the worker on one text message, baseline)",
        base.peak_mib
    );
    for mb in sizes("BENCH_MEDIA_MB", "20,200") {
        let bytes = standins::clip(mb * MIB);
        let r = run_one(&kis, Some(&bytes), MIB as u64).await;
        println!(
            "media/{mb}MiB streamed: seconds={:.1} peak_rss_mib={:.1} ({:.2}x target 64 MiB, \
             {:.2}x text baseline, {:.3}x medium)",
            r.seconds,
            r.peak_mib,
            r.peak_mib / 64.0,
            r.peak_mib / base.peak_mib,
            r.peak_mib / mb as f64,
        );
    }
    for mb in sizes("BENCH_MEDIA_INLINE_MB", "20") {
        let bytes = standins::clip(mb * MIB);
        let r = run_one(&kis, Some(&bytes), i64::MAX as u64).await;
        println!(
            "media/{mb}MiB inline (Binary in the transaction): seconds={:.1} \
             peak_rss_mib={:.1} ({:.2}x medium)",
            r.seconds,
            r.peak_mib,
            r.peak_mib / mb as f64,
        );
    }
    let (writes, searches, reads) = kis.counts();
    println!("null KIS requests: writes={writes} searches={searches} reads={reads}");
}
