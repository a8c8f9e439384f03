//! A fault-injecting HTTP proxy in front of the real FHIR server, for fault
//! and chaos tests. Each request draws one fault from the configured rates
//! (or none, and is forwarded unchanged); an outage answers every request
//! with a failure until it is lifted.
//!
//! Faults: 5xx without forwarding; 5xx *after* forwarding (the KIS did the
//! work, the answer is lost); a hold longer than the client's timeout;
//! a connection cut in the middle of the response (before or after
//! forwarding); a slow answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use rand::Rng;

/// Probabilities per request (each in `0..=1`, summing to at most 1).
#[derive(Debug, Clone, Default)]
pub struct Rates {
    pub status_5xx: f64,
    pub lost_answer: f64,
    pub timeout: f64,
    pub reset: f64,
    pub slow: f64,
}

#[derive(Debug, Clone)]
struct Settings {
    rates: Rates,
    outage: bool,
    /// How long a "timeout" holds the request (longer than the client's).
    hold: Duration,
    /// How long a slow answer is delayed.
    slow: Duration,
}

/// Counts of what the proxy did.
#[derive(Debug, Default)]
pub struct Stats {
    pub forwarded: AtomicU64,
    pub faults: AtomicU64,
    pub outage_refusals: AtomicU64,
}

impl Stats {
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::SeqCst)
    }
    /// Injected faults, outage refusals included.
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::SeqCst) + self.outage_refusals.load(Ordering::SeqCst)
    }
    pub fn outage_refusals(&self) -> u64 {
        self.outage_refusals.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
pub struct ChaosProxy {
    pub url: String,
    settings: Arc<Mutex<Settings>>,
    pub stats: Arc<Stats>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    settings: Arc<Mutex<Settings>>,
    stats: Arc<Stats>,
}

enum Fault {
    Status,
    LostAnswer,
    Timeout,
    Reset { after_forward: bool },
    Slow,
}

impl ChaosProxy {
    /// A proxy to `upstream`; `hold` should exceed the client's timeout.
    pub async fn start(upstream: &str, hold: Duration) -> Self {
        let settings = Arc::new(Mutex::new(Settings {
            rates: Rates::default(),
            outage: false,
            hold,
            slow: Duration::from_millis(300),
        }));
        let stats = Arc::new(Stats::default());
        let state = ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            settings: settings.clone(),
            stats: stats.clone(),
        };
        let app = Router::new().fallback(any(proxy)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url,
            settings,
            stats,
        }
    }

    pub fn set_rates(&self, rates: Rates) {
        self.settings.lock().unwrap().rates = rates;
    }

    /// Starts (`true`) or ends a full outage.
    pub fn set_outage(&self, outage: bool) {
        self.settings.lock().unwrap().outage = outage;
    }
}

fn draw(r: &Rates) -> Option<Fault> {
    let x: f64 = rand::rng().random();
    let mut edge = 0.0;
    for (p, f) in [
        (r.status_5xx, Fault::Status),
        (r.lost_answer, Fault::LostAnswer),
        (r.timeout, Fault::Timeout),
        (
            r.reset / 2.0,
            Fault::Reset {
                after_forward: false,
            },
        ),
        (
            r.reset / 2.0,
            Fault::Reset {
                after_forward: true,
            },
        ),
        (r.slow, Fault::Slow),
    ] {
        edge += p;
        if x < edge {
            return Some(f);
        }
    }
    None
}

/// A response whose body fails after the headers: the client sees the
/// connection cut mid-answer.
fn cut() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected reset",
        ))
    });
    Response::new(Body::from_stream(stream))
}

fn unavailable() -> Response {
    [503u16, 500, 502][rand::rng().random_range(0..3)]
        .try_into()
        .map(|s: StatusCode| s.into_response())
        .unwrap()
}

async fn proxy(
    State(s): State<ProxyState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (fault, outage, hold, slow) = {
        let settings = s.settings.lock().unwrap();
        (
            draw(&settings.rates),
            settings.outage,
            settings.hold,
            settings.slow,
        )
    };
    if outage {
        s.stats.outage_refusals.fetch_add(1, Ordering::SeqCst);
        return if rand::rng().random_bool(0.5) {
            unavailable()
        } else {
            cut()
        };
    }
    if fault.is_some() {
        s.stats.faults.fetch_add(1, Ordering::SeqCst);
    }
    match fault {
        Some(Fault::Status) => return unavailable(),
        Some(Fault::Timeout) => {
            tokio::time::sleep(hold).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        Some(Fault::Reset {
            after_forward: false,
        }) => return cut(),
        Some(Fault::Slow) => tokio::time::sleep(slow).await,
        _ => {}
    }
    let forwarded = forward(&s, method, uri, headers, body).await;
    match fault {
        Some(Fault::LostAnswer) => unavailable(),
        Some(Fault::Reset {
            after_forward: true,
        }) => cut(),
        _ => forwarded,
    }
}

async fn forward(
    s: &ProxyState,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.stats.forwarded.fetch_add(1, Ordering::SeqCst);
    let url = format!(
        "{}{}",
        s.upstream,
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut req = s.http.request(method, url).body(body);
    for name in ["content-type", "accept", "authorization", "if-none-exist"] {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v);
        }
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status();
            let ct = r.headers().get("content-type").cloned();
            let bytes = r.bytes().await.unwrap_or_default();
            let mut resp = Response::new(Body::from(bytes));
            *resp.status_mut() = status;
            if let Some(ct) = ct {
                resp.headers_mut().insert("content-type", ct);
            }
            resp
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}
