use std::time::Duration;

use super::*;
use crate::push::{Breaker, BreakerSettings};

async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, r.text().await.unwrap(), ct)
}

async fn spawn(state: AppState) -> SocketAddr {
    let config = HttpConfig {
        enabled: true,
        listen: "127.0.0.1:0".parse().unwrap(),
    };
    let listener = bind(&config).await.unwrap().unwrap();
    let addr = listener.local_addr().unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    std::mem::forget(_tx);
    tokio::spawn(serve(listener, router(state), rx.into()));
    addr
}

#[tokio::test]
async fn readyz_names_the_failing_part() {
    let breaker = Breaker::new(BreakerSettings {
        threshold: 1,
        cooldown: Duration::from_secs(60),
        cooldown_max: Duration::from_secs(60),
        probe_timeout: Duration::from_secs(60),
    });
    let health = Health::new(&breaker);
    let addr = spawn(AppState {
        health: health.clone(),
        store: None,
    })
    .await;

    let (status, body, ct) = get(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"alive":true}"#));
    assert_eq!(ct, "application/json");
    let (status, body, _) = get(addr, "/readyz").await;
    assert_eq!(status, 503, "broker not connected yet");
    assert!(body.contains(r#""broker":"down""#), "{body}");
    health.set_broker_up(true);
    assert_eq!(get(addr, "/readyz").await.0, 200);
    breaker.failure();
    let (status, body, _) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains(r#""kis":"down""#), "{body}");
    assert!(!health.accepting());
    let (_, metrics, _) = get(addr, "/metrics").await;
    assert!(
        metrics.contains("chartbridge_kis_circuit_open 1"),
        "{metrics}"
    );
    assert!(metrics.contains("chartbridge_ready_part{part=\"kis\"} 0"));
    breaker.success();
    health.set_store_ok(false);
    let (status, body, _) = get(addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains(r#""store":"down""#) && body.contains(r#""kis":"up""#));
    health.set_store_ok(true);
    assert_eq!(get(addr, "/readyz").await.0, 200);
    assert_eq!(get(addr, "/other").await.0, 404);
}

#[tokio::test]
async fn metrics_export_counters_histograms_and_store_gauges() {
    let store = Store::connect("sqlite::memory:", 1).await.unwrap();
    let breaker = Breaker::new(BreakerSettings {
        threshold: 1,
        cooldown: Duration::from_secs(1),
        cooldown_max: Duration::from_secs(1),
        probe_timeout: Duration::from_secs(1),
    });
    let addr = spawn(AppState {
        health: Health::new(&breaker),
        store: Some(store),
    })
    .await;
    telemetry::emit(telemetry::DeadLettered {
        code: "http_test_reason",
    });
    drop(telemetry::measure::Stage::start("resolve"));

    let (status, text, ct) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    for needle in [
        "# TYPE chartbridge_dead_lettered_total counter",
        "chartbridge_dead_lettered_total{reason=\"http_test_reason\"} ",
        "# TYPE chartbridge_stage_duration_seconds histogram",
        "chartbridge_stage_duration_seconds_bucket{stage=\"resolve\",le=\"0.005\"}",
        "chartbridge_outbox_deletions{state=\"requested\"} 0",
        "chartbridge_proof_log_size 0",
        "chartbridge_split_parts_held 0",
        "chartbridge_transcript_windows_open 0",
        "chartbridge_store_gauges_up 1",
        "chartbridge_ready 0",
    ] {
        assert!(text.contains(needle), "{needle} missing in:\n{text}");
    }
}
