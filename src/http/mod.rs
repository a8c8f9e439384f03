//! The worker's HTTP surface (axum): `GET /healthz` (liveness),
//! `GET /readyz` (readiness, `crate::health`) and `GET /metrics`
//! (Prometheus text format, `crate::telemetry`). [`router`] is a plain
//! axum `Router` so later surfaces (an operator console) are merged into
//! the same server. Bound to loopback by default (`[http] listen`); answers
//! carry states and counts, never content or identifiers.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use serde_json::json;
use tokio::net::TcpListener;

use crate::health::Health;
use crate::shutdown::Shutdown;
use crate::store::{Store, millis};
use crate::telemetry;

/// `[http]`: the worker's HTTP endpoint.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve `/healthz`, `/readyz` and `/metrics` (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Address to listen on; default `127.0.0.1:9464` (loopback). In a
    /// container or pod set `0.0.0.0:9464` so probes and the scraper reach
    /// it, and restrict it with a network policy.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: default_listen(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

/// How long `/metrics` waits for the store gauges before it answers with
/// the previous values (`chartbridge_store_gauges_up` 0).
const STORE_GAUGES_TIMEOUT: Duration = Duration::from_secs(5);

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct AppState {
    pub health: Health,
    /// The store whose gauges `/metrics` refreshes; `None` exports the
    /// process's own metrics only.
    pub store: Option<Store>,
}

/// The routes of the worker's HTTP surface; merge further routers into it.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> Response {
    axum::Json(json!({"alive": true})).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let r = state.health.readiness();
    telemetry::measure::readiness(r.ready(), r.parts());
    let up = |b: bool| if b { "up" } else { "down" };
    let body = json!({
        "ready": r.ready(),
        "broker": up(r.broker_up),
        "kis": up(r.kis_reachable),
        "store": up(r.store_writable),
    });
    let status = if r.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let r = state.health.readiness();
    telemetry::measure::readiness(r.ready(), r.parts());
    if let Some(store) = &state.store {
        let refreshed = tokio::time::timeout(
            STORE_GAUGES_TIMEOUT,
            telemetry::measure::refresh_store(store, millis(Utc::now())),
        )
        .await;
        match refreshed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot refresh the store gauges"),
            Err(_) => tracing::warn!("store gauges not refreshed in time"),
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::render(),
    )
        .into_response()
}

/// Binds `config.listen`; `None` when the endpoint is disabled.
pub async fn bind(config: &HttpConfig) -> std::io::Result<Option<TcpListener>> {
    if config.enabled {
        TcpListener::bind(config.listen).await.map(Some)
    } else {
        Ok(None)
    }
}

/// Serves `app` on `listener` until `shutdown` flips.
pub async fn serve(listener: TcpListener, app: Router, mut shutdown: Shutdown) {
    let stopped = async move { shutdown.recv().await };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::warn!(error = %e, "HTTP endpoint failed");
    }
}

#[cfg(test)]
mod tests;
