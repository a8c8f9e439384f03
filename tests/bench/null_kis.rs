//! A null KIS for benchmarks: a fast FHIR endpoint in memory that does what
//! the worker needs and nothing else. Transactions are answered `201
//! Created` per entry (`urn:uuid:` references rewritten to the assigned
//! ids, resources kept for reads and returned in the answer as with
//! `Prefer: return=representation`), identifier searches find one
//! resource per identifier (an Encounter's `subject` is the Patient the
//! last Patient search found: the benches file every event under one
//! patient, and the worker uses only an Encounter of that patient), reads
//! answer what was stored; `PUT
//! Binary/{id}` (a large medium's upload) is decoded as it streams and
//! read back raw. It validates nothing: the bound it measures is
//! chartbridge's, not a server's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Default)]
struct Kis {
    next: AtomicU64,
    resources: Mutex<HashMap<String, Bytes>>,
    /// Uploaded Binaries' decoded bytes, by id.
    binaries: Mutex<HashMap<String, Bytes>>,
    /// `Patient/{id}` of the last Patient an identifier search found.
    last_patient: Mutex<Option<String>>,
    /// Requests served, by kind: writes (transactions, Binary uploads),
    /// searches, reads.
    counts: [AtomicU64; 3],
}

/// A running null KIS.
pub struct NullKis {
    pub url: String,
    state: Arc<Kis>,
}

impl NullKis {
    /// Serves on a loopback port of its own, on a runtime of its own (one
    /// thread), so its CPU is not the worker's.
    pub fn start() -> Self {
        let state = Arc::new(Kis::default());
        let app = Router::new()
            .route("/", post(transaction))
            .route("/metadata", get(metadata))
            .route("/{kind}", get(search))
            .route("/Binary/{id}", get(read_binary).put(put_binary))
            .route("/{kind}/{id}", get(read))
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(state.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::Builder::new()
            .name("null-kis".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    axum::serve(listener, app).await.unwrap();
                });
            })
            .unwrap();
        Self { url, state }
    }

    /// `(transactions, searches, reads)` served so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        let c = &self.state.counts;
        (
            c[0].load(Ordering::Relaxed),
            c[1].load(Ordering::Relaxed),
            c[2].load(Ordering::Relaxed),
        )
    }
}

fn fhir(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/fhir+json")],
        body.into(),
    )
        .into_response()
}

async fn metadata() -> Response {
    fhir(
        StatusCode::OK,
        json!({"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}).to_string(),
    )
}

async fn transaction(State(kis): State<Arc<Kis>>, body: Bytes) -> Response {
    kis.counts[0].fetch_add(1, Ordering::Relaxed);
    let Ok(mut bundle) = serde_json::from_slice::<Value>(&body) else {
        return fhir(StatusCode::BAD_REQUEST, "{}");
    };
    let mut entries = match bundle.get_mut("entry") {
        Some(Value::Array(entries)) => std::mem::take(entries),
        _ => Vec::new(),
    };
    let mut renames = HashMap::new();
    let mut assigned = Vec::with_capacity(entries.len());
    for e in &entries {
        let kind = e["resource"]["resourceType"].as_str().unwrap_or("Basic");
        // An update (`PUT Type/id`) keeps its id; a create gets the next.
        let id = match (
            e["request"]["method"].as_str(),
            e["request"]["url"].as_str(),
        ) {
            (Some("PUT"), Some(url)) => url.rsplit('/').next().unwrap_or_default().to_owned(),
            _ => kis.next.fetch_add(1, Ordering::Relaxed).to_string(),
        };
        let location = format!("{kind}/{id}");
        if let Some(full) = e["fullUrl"].as_str() {
            renames.insert(full.to_owned(), location.clone());
        }
        assigned.push((location, id));
    }
    // The answer is written as text around each resource serialised once
    // (the same text is stored for reads).
    let mut answer =
        String::from(r#"{"resourceType":"Bundle","type":"transaction-response","entry":["#);
    let mut stored = Vec::with_capacity(entries.len());
    for (n, (e, (location, id))) in entries.iter_mut().zip(assigned).enumerate() {
        let mut resource = e["resource"].take();
        rename_references(&mut resource, &renames);
        resource["id"] = Value::String(id);
        let text = resource.to_string();
        if n > 0 {
            answer.push(',');
        }
        answer.push_str(r#"{"resource":"#);
        answer.push_str(&text);
        // `Prefer: return=representation`: the stored resource comes back.
        answer.push_str(&format!(
            r#","response":{{"status":"201 Created","location":"{location}/_history/1"}}}}"#
        ));
        stored.push((location, Bytes::from(text)));
    }
    answer.push_str("]}");
    kis.resources.lock().unwrap().extend(stored);
    fhir(StatusCode::OK, answer)
}

/// Replaces, in place, every string of `value` that is a `fullUrl` of the
/// transaction by the location assigned to that entry.
fn rename_references(value: &mut Value, renames: &HashMap<String, String>) {
    match value {
        Value::String(s) => {
            if let Some(to) = renames.get(s.as_str()) {
                *s = to.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rename_references(v, renames)),
        Value::Object(fields) => fields
            .values_mut()
            .for_each(|v| rename_references(v, renames)),
        _ => {}
    }
}

async fn search(
    State(kis): State<Arc<Kis>>,
    Path(kind): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    kis.counts[1].fetch_add(1, Ordering::Relaxed);
    let entry = match q.get("identifier") {
        Some(identifier) => {
            let id = format!(
                "{:x}",
                identifier
                    .bytes()
                    .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into()))
            );
            // The resource carries the identifier it was found by (the
            // client checks that a match is one).
            let (system, value) = identifier.split_once('|').unwrap_or(("", identifier));
            let mut resource = json!({"resourceType": kind, "id": id,
                "identifier": [{"system": system, "value": value}]});
            let mut last = kis.last_patient.lock().unwrap();
            match kind.as_str() {
                "Patient" => *last = Some(format!("Patient/{id}")),
                "Encounter" => {
                    if let Some(patient) = last.as_ref() {
                        resource["subject"] = json!({"reference": patient});
                    }
                }
                _ => {}
            }
            vec![json!({ "resource": resource })]
        }
        None => Vec::new(),
    };
    fhir(
        StatusCode::OK,
        json!({"resourceType": "Bundle", "type": "searchset", "entry": entry}).to_string(),
    )
}

async fn read(State(kis): State<Arc<Kis>>, Path((kind, id)): Path<(String, String)>) -> Response {
    kis.counts[2].fetch_add(1, Ordering::Relaxed);
    let found = kis
        .resources
        .lock()
        .unwrap()
        .get(&format!("{kind}/{id}"))
        .cloned();
    match found {
        Some(body) => fhir(StatusCode::OK, body),
        None => fhir(StatusCode::NOT_FOUND, "{}"),
    }
}

/// `PUT Binary/{id}`: the FHIR JSON body's `data` decoded as it streams.
async fn put_binary(
    State(kis): State<Arc<Kis>>,
    Path(id): Path<String>,
    body: axum::body::Body,
) -> Response {
    use futures_util::StreamExt;
    kis.counts[0].fetch_add(1, Ordering::Relaxed);
    let mut scanner = chartbridge::push::binary::DataScanner::default();
    let mut data = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return fhir(StatusCode::BAD_REQUEST, "{}");
        };
        if scanner.feed(&chunk, |b| data.extend_from_slice(b)).is_err() {
            return fhir(StatusCode::BAD_REQUEST, "{}");
        }
    }
    if scanner.finish().is_err() {
        return fhir(StatusCode::BAD_REQUEST, "{}");
    }
    kis.binaries.lock().unwrap().insert(id.clone(), data.into());
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("Binary/{id}/_history/1"))],
    )
        .into_response()
}

/// `GET Binary/{id}`: an uploaded Binary's raw bytes, else what a
/// transaction stored.
async fn read_binary(State(kis): State<Arc<Kis>>, Path(id): Path<String>) -> Response {
    let raw = kis.binaries.lock().unwrap().get(&id).cloned();
    match raw {
        Some(bytes) => {
            kis.counts[2].fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/octet-stream")],
                bytes,
            )
                .into_response()
        }
        None => read(State(kis), Path(("Binary".into(), id))).await,
    }
}
