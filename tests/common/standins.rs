//! A fault-injecting proxy in front of the real FHIR server, and a stand-in
//! for the WhatsApp media API (Graph API shapes: `GET /{id}` → `{url, …}`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use sha2::Digest;

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// What the proxy does with the next request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer this status without forwarding.
    Status(u16),
    /// Answer 422 with an OperationOutcome, without forwarding.
    Unprocessable,
}

#[derive(Clone)]
pub struct FaultProxy {
    pub url: String,
    faults: Arc<Mutex<VecDeque<Fault>>>,
    pub forwarded: Arc<Mutex<usize>>,
    pub injected: Arc<Mutex<usize>>,
    tamper: Arc<Mutex<usize>>,
    /// Forwarded `GET {type}?identifier=…` searches, by resource type.
    pub identifier_searches: Arc<Mutex<HashMap<String, usize>>>,
    /// Entries of every transaction (POST /) that reached the proxy, in order.
    pub transactions: Arc<Mutex<Vec<usize>>>,
    reject_marker: Arc<Mutex<Option<String>>>,
    unavailable_marker: Arc<Mutex<Option<(String, usize)>>>,
    tamper_answers: Arc<Mutex<usize>>,
    tamper_captions: Arc<Mutex<usize>>,
    /// Forwarded reads (`GET Type/id`) of a Binary or Communication.
    pub reads: Arc<Mutex<usize>>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    faults: Arc<Mutex<VecDeque<Fault>>>,
    forwarded: Arc<Mutex<usize>>,
    injected: Arc<Mutex<usize>>,
    tamper: Arc<Mutex<usize>>,
    identifier_searches: Arc<Mutex<HashMap<String, usize>>>,
    transactions: Arc<Mutex<Vec<usize>>>,
    reject_marker: Arc<Mutex<Option<String>>>,
    unavailable_marker: Arc<Mutex<Option<(String, usize)>>>,
    tamper_answers: Arc<Mutex<usize>>,
    tamper_captions: Arc<Mutex<usize>>,
    reads: Arc<Mutex<usize>>,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> Self {
        let faults = Arc::new(Mutex::new(VecDeque::new()));
        let forwarded = Arc::new(Mutex::new(0));
        let injected = Arc::new(Mutex::new(0));
        let tamper = Arc::new(Mutex::new(0));
        let identifier_searches = Arc::new(Mutex::new(HashMap::new()));
        let transactions = Arc::new(Mutex::new(Vec::new()));
        let reject_marker = Arc::new(Mutex::new(None));
        let unavailable_marker = Arc::new(Mutex::new(None));
        let tamper_answers = Arc::new(Mutex::new(0));
        let tamper_captions = Arc::new(Mutex::new(0));
        let reads = Arc::new(Mutex::new(0));
        let state = ProxyState {
            tamper_answers: tamper_answers.clone(),
            tamper_captions: tamper_captions.clone(),
            reads: reads.clone(),
            transactions: transactions.clone(),
            reject_marker: reject_marker.clone(),
            unavailable_marker: unavailable_marker.clone(),
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            faults: faults.clone(),
            forwarded: forwarded.clone(),
            injected: injected.clone(),
            tamper: tamper.clone(),
            identifier_searches: identifier_searches.clone(),
        };
        // Large Binary uploads pass (axum's default limit is 2 MB).
        let app = Router::new()
            .fallback(any(proxy))
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(state);
        Self {
            url: serve(app).await,
            faults,
            forwarded,
            injected,
            tamper,
            identifier_searches,
            transactions,
            reject_marker,
            unavailable_marker,
            tamper_answers,
            tamper_captions,
            reads,
        }
    }

    /// Cuts the DocumentReference `description` (a medium's caption) that
    /// the next `n` transaction-responses return, as a KIS with a shorter
    /// text column would.
    pub fn tamper_captions(&self, n: usize) {
        *self.tamper_captions.lock().unwrap() += n;
    }

    /// Alters the stored Binary or Communication content that the next `n`
    /// transaction-responses return (`Prefer: return=representation`), as
    /// a KIS that transcodes, truncates or loses content would.
    pub fn tamper_answers(&self, n: usize) {
        *self.tamper_answers.lock().unwrap() += n;
    }

    /// Answer alterations queued but not yet applied.
    pub fn tamper_answers_pending(&self) -> usize {
        *self.tamper_answers.lock().unwrap()
    }

    /// Answers 422 with an OperationOutcome to every transaction whose body
    /// contains `marker` (as a KIS validator refusing that content would).
    pub fn reject_containing(&self, marker: &str) {
        *self.reject_marker.lock().unwrap() = Some(marker.to_owned());
    }

    /// Answers 503 to the next `n` transactions whose body contains
    /// `marker` (a KIS down just for them); others pass.
    pub fn unavailable_containing(&self, marker: &str, n: usize) {
        *self.unavailable_marker.lock().unwrap() = Some((marker.to_owned(), n));
    }

    /// Identifier searches of `resource_type` forwarded so far.
    pub fn searches(&self, resource_type: &str) -> usize {
        self.identifier_searches
            .lock()
            .unwrap()
            .get(resource_type)
            .copied()
            .unwrap_or(0)
    }

    /// Alters the content of the next `n` reads of a Binary or Communication
    /// (as a KIS that transcodes, truncates or loses content would).
    pub fn tamper_reads(&self, n: usize) {
        *self.tamper.lock().unwrap() += n;
    }

    /// Alterations queued but not yet applied.
    pub fn tamper_pending(&self) -> usize {
        *self.tamper.lock().unwrap()
    }

    /// Queues faults for the next transactions (POST /).
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.faults.lock().unwrap().extend(faults);
    }
}

async fn proxy(
    State(s): State<ProxyState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_transaction = method == Method::POST && uri.path() == "/";
    if is_transaction {
        let entries = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|b| b["entry"].as_array().map(Vec::len))
            .unwrap_or(0);
        s.transactions.lock().unwrap().push(entries);
    }
    let marked = s
        .reject_marker
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|m| body.windows(m.len()).any(|w| w == m.as_bytes()));
    let unavailable = is_transaction
        && match &mut *s.unavailable_marker.lock().unwrap() {
            Some((m, n)) if *n > 0 && body.windows(m.len()).any(|w| w == m.as_bytes()) => {
                *n -= 1;
                true
            }
            _ => false,
        };
    let fault = if unavailable {
        Some(Fault::Status(503))
    } else if is_transaction && marked {
        Some(Fault::Unprocessable)
    } else if is_transaction {
        s.faults.lock().unwrap().pop_front()
    } else {
        None
    };
    if let Some(fault) = fault {
        *s.injected.lock().unwrap() += 1;
        return match fault {
            Fault::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
            Fault::Unprocessable => (
                StatusCode::UNPROCESSABLE_ENTITY,
                [("content-type", "application/fhir+json")],
                r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"injected: profile violation","expression":["Bundle.entry[0].resource"]}]}"#,
            )
                .into_response(),
        };
    }
    *s.forwarded.lock().unwrap() += 1;
    if method == Method::GET && uri.query().is_some_and(|q| q.contains("identifier=")) {
        let kind = uri.path().trim_start_matches('/').to_owned();
        *s.identifier_searches
            .lock()
            .unwrap()
            .entry(kind)
            .or_default() += 1;
    }
    let readable = method == Method::GET
        && (uri.path().starts_with("/Binary/") || uri.path().starts_with("/Communication/"));
    if readable {
        *s.reads.lock().unwrap() += 1;
    }
    let tamper = readable && {
        let mut n = s.tamper.lock().unwrap();
        let go = *n > 0;
        *n = n.saturating_sub(1);
        go
    };
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
            let mut bytes = r.bytes().await.unwrap_or_default();
            if tamper && let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                alter(&mut v);
                bytes = Bytes::from(serde_json::to_vec(&v).unwrap());
            } else if tamper && !bytes.is_empty() {
                // A raw Binary read (`Accept` its content type).
                let mut raw = bytes.to_vec();
                *raw.last_mut().unwrap() ^= 0x01;
                bytes = Bytes::from(raw);
            }
            if is_transaction
                && *s.tamper_captions.lock().unwrap() > 0
                && let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes)
            {
                let mut altered = false;
                for e in v["entry"].as_array_mut().into_iter().flatten() {
                    let r = &mut e["resource"];
                    if r["resourceType"] == "DocumentReference"
                        && let Some(d) = r["description"].as_str()
                    {
                        let cut: String = d.chars().take(d.chars().count() / 2).collect();
                        r["description"] = cut.into();
                        altered = true;
                    }
                }
                if altered {
                    *s.tamper_captions.lock().unwrap() -= 1;
                    bytes = Bytes::from(serde_json::to_vec(&v).unwrap());
                }
            }
            if is_transaction
                && *s.tamper_answers.lock().unwrap() > 0
                && let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes)
            {
                let mut altered = false;
                for e in v["entry"].as_array_mut().into_iter().flatten() {
                    altered |= alter(&mut e["resource"]);
                }
                if altered {
                    *s.tamper_answers.lock().unwrap() -= 1;
                    bytes = Bytes::from(serde_json::to_vec(&v).unwrap());
                }
            }
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

/// Alters a Binary's data (last byte) or a Communication's text; whether
/// there was any to alter.
fn alter(v: &mut serde_json::Value) -> bool {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut altered = false;
    if let Some(data) = v["data"].as_str() {
        let mut raw = b64.decode(data).unwrap();
        *raw.last_mut().unwrap() ^= 0x01;
        v["data"] = b64.encode(raw).into();
        altered = true;
    }
    if let Some(text) = v["payload"][0]["contentString"].as_str() {
        v["payload"][0]["contentString"] = format!("{text} (edited)").into();
        altered = true;
    }
    altered
}

/// One medium the stand-in serves.
#[derive(Clone)]
pub struct Medium {
    pub bytes: Vec<u8>,
    pub mime_type: String,
}

#[derive(Clone)]
pub struct MediaApi {
    pub url: String,
    media: Arc<Mutex<HashMap<String, Medium>>>,
    delete_faults: Arc<Mutex<VecDeque<GraphFault>>>,
    /// Media ids of every DELETE request, in order.
    pub deletes: Arc<Mutex<Vec<String>>>,
}

/// A Graph API error answer the stand-in gives to the next DELETE.
#[derive(Debug, Clone)]
pub enum GraphFault {
    /// HTTP 503 without a Graph body.
    Unavailable,
    /// Rate limit: 400 with code 80007.
    Throttled,
    /// Expired token: 401 with code 190.
    InvalidToken,
}

#[derive(Clone)]
struct MediaState {
    base: Arc<Mutex<String>>,
    media: Arc<Mutex<HashMap<String, Medium>>>,
    delete_faults: Arc<Mutex<VecDeque<GraphFault>>>,
    deletes: Arc<Mutex<Vec<String>>>,
}

fn graph_error(status: StatusCode, code: u32, subcode: Option<u32>, message: &str) -> Response {
    let mut error = serde_json::json!({"message": message, "type": "OAuthException",
        "code": code, "fbtrace_id": "AbCdEfGhIjK"});
    if let Some(sub) = subcode {
        error["error_subcode"] = sub.into();
        error["type"] = "GraphMethodException".into();
    }
    (status, axum::Json(serde_json::json!({ "error": error }))).into_response()
}

/// `DELETE /{media-id}`: `{"success": true}`, or Graph's error shapes.
async fn remove(
    State(s): State<MediaState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    s.deletes.lock().unwrap().push(id.clone());
    if let Some(fault) = s.delete_faults.lock().unwrap().pop_front() {
        return match fault {
            GraphFault::Unavailable => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            GraphFault::Throttled => graph_error(
                StatusCode::BAD_REQUEST,
                80007,
                None,
                "(#80007) Rate limit hit",
            ),
            GraphFault::InvalidToken => graph_error(
                StatusCode::UNAUTHORIZED,
                190,
                None,
                "Invalid OAuth access token - Cannot parse access token",
            ),
        };
    }
    if !authorised(&headers) {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            190,
            None,
            "Invalid OAuth access token",
        );
    }
    if s.media.lock().unwrap().remove(&id).is_none() {
        return graph_error(
            StatusCode::BAD_REQUEST,
            100,
            Some(33),
            "Unsupported delete request. Object does not exist",
        );
    }
    axum::Json(serde_json::json!({"success": true})).into_response()
}

fn authorised(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer test-token")
}

impl MediaApi {
    pub async fn start() -> Self {
        let media = Arc::new(Mutex::new(HashMap::new()));
        let base = Arc::new(Mutex::new(String::new()));
        let delete_faults = Arc::new(Mutex::new(VecDeque::new()));
        let deletes = Arc::new(Mutex::new(Vec::new()));
        let state = MediaState {
            base: base.clone(),
            media: media.clone(),
            delete_faults: delete_faults.clone(),
            deletes: deletes.clone(),
        };
        let app = Router::new()
            .route("/{id}", get(info).delete(remove))
            .route("/download/{id}", get(download))
            .with_state(state);
        let url = serve(app).await;
        *base.lock().unwrap() = url.clone();
        Self {
            url,
            media,
            delete_faults,
            deletes,
        }
    }

    /// Queues error answers for the next DELETE requests.
    pub fn fail_deletes(&self, faults: impl IntoIterator<Item = GraphFault>) {
        self.delete_faults.lock().unwrap().extend(faults);
    }

    pub fn holds(&self, id: &str) -> bool {
        self.media.lock().unwrap().contains_key(id)
    }

    pub fn put(&self, id: &str, medium: Medium) {
        self.media.lock().unwrap().insert(id.to_owned(), medium);
    }
}

async fn info(State(s): State<MediaState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if !authorised(&headers) {
        return (StatusCode::UNAUTHORIZED, r#"{"error":{"code":190}}"#).into_response();
    }
    let Some(m) = s.media.lock().unwrap().get(&id).cloned() else {
        return (StatusCode::NOT_FOUND, r#"{"error":{"code":100}}"#).into_response();
    };
    let base = s.base.lock().unwrap().clone();
    axum::Json(serde_json::json!({
        "messaging_product": "whatsapp",
        "url": format!("{base}/download/{id}"),
        "mime_type": m.mime_type,
        "sha256": hex::encode(sha2::Sha256::digest(&m.bytes)),
        "file_size": m.bytes.len(),
        "id": id,
    }))
    .into_response()
}

async fn download(
    State(s): State<MediaState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorised(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match s.media.lock().unwrap().get(&id).cloned() {
        Some(m) => ([("content-type", m.mime_type)], m.bytes).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `n` bytes no format sniffer recognises (a xorshift stream).
pub fn clip(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}
