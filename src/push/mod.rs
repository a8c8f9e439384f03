//! The KIS's FHIR R4 REST API: transactions, searches, reads.
//!
//! Retryability is decided in one place, [`Retry::of_status`]: 408, 429 and
//! 5xx and transport errors are transient; every other 4xx is permanent and
//! quarantines the content with the server's OperationOutcome.

pub mod auth;
pub mod auth_config;
mod backoff;
pub mod batch;
pub mod binary;
mod breaker;
pub mod config;
pub mod mllp;
pub mod readback;
mod search_cache;
pub mod tls;
pub mod url;

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde_json::Value;

pub use backoff::Backoff;
pub use batch::Batcher;
pub use breaker::{Breaker, BreakerSettings};

pub use config::{KisConfig, OutputMode};
pub use search_cache::SearchCache;

/// The media type sent and accepted: FHIR JSON, version 4.0 (R4).
pub const FHIR_JSON_R4: &str = "application/fhir+json; fhirVersion=4.0";

/// The KIS client cannot be set up from its configuration. Names the
/// configuration key, never file contents.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("TLS configuration: {0}")]
    Tls(&'static str),
    #[error("authorization configuration: {0}")]
    Auth(&'static str),
    #[error(transparent)]
    Transport(#[from] crate::transport::TlsError),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PushError {
    /// Worth retrying: 408, 429, 5xx, timeouts, connection failures.
    #[error("KIS unavailable ({detail})")]
    Transient {
        detail: String,
        retry_after: Option<Duration>,
    },
    /// The KIS refused the request; retrying will not help.
    #[error("KIS rejected the request with HTTP {status}")]
    Rejected {
        status: u16,
        /// The server's OperationOutcome, if it sent one. May echo content:
        /// kept sealed, never logged.
        outcome: Option<Value>,
    },
    /// A 2xx answer that does not confirm every resource.
    #[error("KIS answer incomplete: {0}")]
    Incomplete(String),
}

impl PushError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }
}

/// Whether an HTTP status is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Success,
    Transient,
    Permanent,
}

impl Retry {
    pub fn of_status(status: StatusCode) -> Self {
        if status.is_success() {
            Self::Success
        } else if status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error()
        {
            Self::Transient
        } else {
            Self::Permanent
        }
    }
}

/// What the KIS confirmed for a transaction: `Type/id` per entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Confirmed {
    pub locations: Vec<String>,
    /// Per entry, the stored resource as the `transaction-response` returned
    /// it (`Prefer: return=representation`, FHIR R4 http.html#ops), when the
    /// KIS did and it is the located `Type/id`; the read-back takes it
    /// instead of reading the resource again. Empty or `None` otherwise.
    pub resources: Vec<Option<Value>>,
}

impl Confirmed {
    /// Entries located at `locations`, without returned resources.
    pub fn at(locations: Vec<String>) -> Self {
        Self {
            locations,
            resources: Vec::new(),
        }
    }

    /// The resource the KIS returned for `location`, if any.
    pub fn returned(&self, location: &str) -> Option<&Value> {
        let i = self.locations.iter().position(|l| l == location)?;
        self.resources.get(i)?.as_ref()
    }
}

/// A client of one KIS.
#[derive(Debug, Clone)]
pub struct Kis {
    http: reqwest::Client,
    base: String,
    auth: auth::Authenticator,
    breaker: std::sync::Arc<Breaker>,
    searches: SearchCache,
}

impl Kis {
    /// A client with `[kis.tls]` and `[kis.auth]` applied; the token
    /// endpoint is reached with the same TLS settings.
    pub fn new(config: &KisConfig) -> Result<Self, SetupError> {
        let builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64);
        let http = config.tls.apply(builder)?.build()?;
        // A broken [kis.mllp.tls] stops the start, not each send.
        config.mllp.connector()?;
        let auth =
            auth::Authenticator::new(&config.auth, config.bearer_token.as_ref(), http.clone())?;
        Ok(Self {
            http,
            base: config.base_url.trim_end_matches('/').to_owned(),
            auth,
            breaker: std::sync::Arc::new(Breaker::new(BreakerSettings {
                threshold: config.breaker_threshold.max(1),
                cooldown: config.breaker_cooldown,
                cooldown_max: config.breaker_cooldown_max.max(config.breaker_cooldown),
                probe_timeout: config.timeout + Duration::from_secs(1),
            })),
            searches: SearchCache::new(config.search_cache_ttl, config.search_cache_size),
        })
    }

    /// This client sharing `cache` (the pipeline's and the ADT feed's
    /// clients share one, so the feed's invalidations reach resolution).
    pub fn with_search_cache(mut self, cache: SearchCache) -> Self {
        self.searches = cache;
        self
    }

    /// The identifier search cache of [`Kis::search_identifier`].
    pub fn search_cache(&self) -> &SearchCache {
        &self.searches
    }

    /// The circuit breaker every request of this client passes.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A request to `{base}/{segments…}?{params}`, built by [`url::build`].
    fn request(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        params: &[(&str, url::SearchValue<'_>)],
    ) -> reqwest::RequestBuilder {
        let url = url::build(&self.base, segments, params);
        self.http
            .request(method, url)
            .header(ACCEPT, HeaderValue::from_static(FHIR_JSON_R4))
    }

    /// Sends with the current Authorization header; on 401 with OAuth2, once
    /// more with a fresh token. A 401 that persists, or any 401 to a static
    /// token or none, is an authorization fault of this client, not of the
    /// content: transient, not quarantine.
    async fn authorized(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, PushError> {
        let again = request.try_clone();
        let header = self.auth.header().await?;
        let with = |r: reqwest::RequestBuilder, h: &Option<HeaderValue>| match h {
            Some(h) => r.header(AUTHORIZATION, h.clone()),
            None => r,
        };
        let response = with(request, &header).send().await.map_err(transport)?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        if !self.auth.refreshes() {
            // A static token (or none) the KIS refuses: this client's
            // fault, the same for every message; never the content's.
            tracing::warn!("KIS refused this client's credentials (HTTP 401)");
            return Err(PushError::Transient {
                detail: "HTTP 401: credentials refused".into(),
                retry_after: None,
            });
        }
        let (Some(again), Some(rejected)) = (again, header) else {
            return Ok(response);
        };
        self.auth.invalidate(&rejected).await;
        let fresh = self.auth.header().await?;
        let response = with(again, &fresh).send().await.map_err(transport)?;
        if response.status() == StatusCode::UNAUTHORIZED {
            tracing::warn!("KIS refused a freshly fetched token");
            return Err(PushError::Transient {
                detail: "HTTP 401 after token refresh".into(),
                retry_after: None,
            });
        }
        Ok(response)
    }

    /// Sends through the circuit breaker and tells it how the KIS answered;
    /// the request's latency is recorded under `operation`.
    async fn send(
        &self,
        operation: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, PushError> {
        self.through_breaker(operation, self.send_once(request))
            .await
    }

    /// Runs `request` once the circuit breaker admits it, tells the breaker
    /// how it ended (transient failures count against the KIS) and records
    /// its latency under `operation` and the outcome.
    async fn through_breaker<T>(
        &self,
        operation: &'static str,
        request: impl std::future::Future<Output = Result<T, PushError>>,
    ) -> Result<T, PushError> {
        self.breaker.admit().await;
        let started = std::time::Instant::now();
        let result = request.await;
        let outcome = match &result {
            Err(e) if e.is_transient() => {
                self.breaker.failure();
                "transient"
            }
            Err(_) => {
                self.breaker.success();
                "rejected"
            }
            Ok(_) => {
                self.breaker.success();
                "success"
            }
        };
        crate::telemetry::measure::kis_request(operation, outcome, started.elapsed());
        result
    }

    async fn send_once(&self, request: reqwest::RequestBuilder) -> Result<Value, PushError> {
        let response = self.authorized(request).await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await.map_err(transport)?;
        let json = serde_json::from_slice::<Value>(&body).ok();
        match Retry::of_status(status) {
            Retry::Success => json
                .ok_or_else(|| PushError::Incomplete(format!("HTTP {status} without a JSON body"))),
            Retry::Transient => Err(PushError::Transient {
                detail: format!("HTTP {}", status.as_u16()),
                retry_after,
            }),
            Retry::Permanent => Err(PushError::Rejected {
                status: status.as_u16(),
                outcome: json.filter(|v| v["resourceType"] == "OperationOutcome"),
            }),
        }
    }

    /// Sends one transaction Bundle (one attempt) and checks that every entry
    /// was confirmed with a 2xx status.
    pub async fn transaction(&self, bundle: &Value) -> Result<Confirmed, PushError> {
        let _stage = crate::telemetry::measure::Stage::start("push");
        let body = serde_json::to_vec(bundle).expect("a JSON value serialises");
        let answer = self
            .send(
                "transaction",
                self.request(reqwest::Method::POST, &[], &[])
                    .header(CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON_R4))
                    .header("prefer", HeaderValue::from_static("return=representation"))
                    .body(body),
            )
            .await?;
        confirmed(bundle, &answer, &self.base)
    }

    /// `GET {type}?identifier={system}|{value}`: the one match as `Type/id`,
    /// `None` for no match; several matches are an error. A match is taken
    /// from, and kept in, the [`SearchCache`] (`kis.search_cache_ttl`).
    pub async fn search_identifier(
        &self,
        resource_type: &str,
        system: &str,
        value: &str,
    ) -> Result<Option<String>, PushError> {
        if let Some(hit) = self.searches.get(resource_type, system, value) {
            return Ok(Some(hit));
        }
        let found = self
            .identifier_matches(resource_type, system, value)
            .await?;
        let ids: Vec<&str> = found.iter().filter_map(|r| r["id"].as_str()).collect();
        match ids.as_slice() {
            [] => Ok(None),
            [id] => {
                let found = format!("{resource_type}/{id}");
                self.searches.put(resource_type, system, value, &found);
                Ok(Some(found))
            }
            _ => Err(PushError::Incomplete(format!(
                "{resource_type} identifier matches several resources"
            ))),
        }
    }

    /// `GET Encounter?identifier={system}|{value}`, answered only when the
    /// one match belongs to `patient` (`Patient/id`): its
    /// `Encounter.subject` names `patient` (relative, or an absolute URL
    /// ending in it). `None` for no match or another patient's Encounter
    /// (a visit number the KIS moved, or one two authorities share), so a
    /// message is never filed under a visit of someone else. Several
    /// matches are an error. Cached per patient ([`SearchCache`]).
    pub async fn search_encounter_of(
        &self,
        patient: &str,
        system: &str,
        value: &str,
    ) -> Result<Option<String>, PushError> {
        let cached_as = format!("Encounter of {patient}");
        if let Some(hit) = self.searches.get(&cached_as, system, value) {
            return Ok(Some(hit));
        }
        let found = self.identifier_matches("Encounter", system, value).await?;
        match found.as_slice() {
            [] => Ok(None),
            [encounter] => {
                if !subject_is(encounter, patient) {
                    tracing::warn!(
                        "the visit number's Encounter names another patient, or none comparable: not used"
                    );
                    return Ok(None);
                }
                let id = encounter["id"].as_str().unwrap_or_default();
                let reference = format!("Encounter/{id}");
                self.searches.put(&cached_as, system, value, &reference);
                Ok(Some(reference))
            }
            _ => Err(PushError::Incomplete(
                "Encounter identifier matches several resources".into(),
            )),
        }
    }

    /// The Encounter a literal reference (`Encounter/id`, relative or
    /// absolute) names, when it belongs to `patient`: read, and answered
    /// only when it is an Encounter whose `subject` names `patient`, as
    /// [`Kis::search_encounter_of`] answers a visit number. `None` for
    /// another type, another patient's Encounter or one the KIS does not
    /// hold (404/410): a message is never filed under someone else's
    /// visit because an event named it. Cached per patient.
    pub async fn encounter_of_literal(
        &self,
        patient: &str,
        reference: &str,
    ) -> Result<Option<String>, PushError> {
        let Some(named) =
            type_and_id(reference, &self.base).filter(|r| r.starts_with("Encounter/"))
        else {
            return Ok(None);
        };
        let cached_as = format!("Encounter of {patient}");
        if let Some(hit) = self.searches.get(&cached_as, "literal", &named) {
            return Ok(Some(hit));
        }
        match self.read(&named).await {
            Ok(encounter)
                if encounter["resourceType"] == "Encounter" && subject_is(&encounter, patient) =>
            {
                self.searches.put(&cached_as, "literal", &named, &named);
                Ok(Some(named))
            }
            Ok(_) => {
                tracing::warn!(
                    "the event's Encounter names another patient, or none comparable: not used"
                );
                Ok(None)
            }
            Err(e) if e.is_transient() => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// `GET {type}?identifier={system}|{value}&_count=2`: the resources
    /// found that have an id (two at most, enough to tell one from several).
    /// Only matches count: an entry of another `search.mode` (an
    /// OperationOutcome of warnings, an included resource; R4
    /// search.html#errors), of another resource type, or that does not
    /// carry `system|value` itself (a lenient server that ignored the
    /// parameter and answered what it holds) is left out.
    async fn identifier_matches(
        &self,
        resource_type: &str,
        system: &str,
        value: &str,
    ) -> Result<Vec<Value>, PushError> {
        let mut bundle = self
            .search(
                resource_type,
                &[
                    (
                        "identifier",
                        url::SearchValue::Token {
                            system,
                            code: value,
                        },
                    ),
                    ("_count", url::SearchValue::Value("2")),
                ],
            )
            .await?;
        let carries = |r: &Value| {
            r["identifier"].as_array().is_some_and(|ids| {
                ids.iter().any(|i| {
                    i["system"].as_str() == Some(system) && i["value"].as_str() == Some(value)
                })
            })
        };
        // A further page (a `next` link, FHIR R4 search 3.1.1.5.4) may
        // hold another exact match: with fewer than two kept from this
        // page, uniqueness is not known.
        let more = bundle["link"]
            .as_array()
            .is_some_and(|links| links.iter().any(|l| l["relation"] == "next"));
        let kept: Vec<Value> = match bundle["entry"].take() {
            Value::Array(entries) => entries
                .into_iter()
                .filter(|e| e["search"]["mode"].as_str().is_none_or(|m| m == "match"))
                .map(|mut e| e["resource"].take())
                .filter(|r| {
                    r["id"].is_string()
                        && r["resourceType"].as_str() == Some(resource_type)
                        && carries(r)
                })
                .collect(),
            _ => Vec::new(),
        };
        if more && kept.len() < 2 {
            return Err(PushError::Incomplete(format!(
                "{resource_type} identifier search has a further page; its matches are not all known"
            )));
        }
        Ok(kept)
    }

    /// `GET {type}?{params}` (escaped and encoded by [`url::query`]): the
    /// searchset Bundle.
    pub async fn search(
        &self,
        resource_type: &str,
        params: &[(&str, url::SearchValue<'_>)],
    ) -> Result<Value, PushError> {
        self.send(
            "search",
            self.request(reqwest::Method::GET, &[resource_type], params),
        )
        .await
    }

    /// `GET {Type/id}` (a relative literal reference; each segment encoded),
    /// or `GET metadata`.
    pub async fn read(&self, reference: &str) -> Result<Value, PushError> {
        let segments = url::reference_segments(reference);
        self.send("read", self.request(reqwest::Method::GET, &segments, &[]))
            .await
    }

    /// `POST {type}` with `If-None-Exist: {params}` ([`url::query`]):
    /// creates once, then answers the existing resource. Used by tools and
    /// tests to seed data.
    pub async fn create_if_none_exist(
        &self,
        resource: &Value,
        params: &[(&str, url::SearchValue<'_>)],
    ) -> Result<String, PushError> {
        let query = url::query(params);
        let rt = resource["resourceType"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let answer = self
            .send(
                "create",
                self.request(reqwest::Method::POST, &[&rt], &[])
                    .header(CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON_R4))
                    .header("If-None-Exist", query)
                    .body(serde_json::to_vec(resource).expect("JSON serialises")),
            )
            .await?;
        answer["id"]
            .as_str()
            .map(|id| format!("{rt}/{id}"))
            .ok_or_else(|| PushError::Incomplete("created resource without id".into()))
    }
}

fn transport(e: reqwest::Error) -> PushError {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "broken response"
    } else {
        "transport error"
    };
    PushError::Transient {
        detail: kind.into(),
        retry_after: None,
    }
}

/// Checks a transaction-response against the request: one entry per request
/// entry, each with a 2xx status and a location.
fn confirmed(request: &Value, answer: &Value, base: &str) -> Result<Confirmed, PushError> {
    let asked = request["entry"].as_array().map_or(0, Vec::len);
    let entries = answer["entry"]
        .as_array()
        .ok_or_else(|| PushError::Incomplete("transaction-response without entries".into()))?;
    if answer["type"] != "transaction-response" || entries.len() != asked {
        return Err(PushError::Incomplete(format!(
            "{} of {asked} entries answered",
            entries.len()
        )));
    }
    let mut locations = Vec::with_capacity(entries.len());
    let mut resources = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let status = e["response"]["status"].as_str().unwrap_or_default();
        if !status.starts_with('2') {
            return Err(PushError::Incomplete(format!(
                "entry {i} has status '{status}'"
            )));
        }
        let location = e["response"]["location"]
            .as_str()
            .and_then(|l| type_and_id(l, base))
            .or_else(|| {
                let r = &e["resource"];
                Some(format!(
                    "{}/{}",
                    r["resourceType"].as_str()?,
                    r["id"].as_str()?
                ))
            })
            // An update answers `200 OK` and need not name a location
            // (FHIR R4 http.html#update: `Location` only with 201): a
            // `PUT Type/id` names its resource itself.
            .or_else(|| {
                let asked = &request["entry"][i]["request"];
                if asked["method"] != "PUT" {
                    return None;
                }
                asked["url"]
                    .as_str()
                    .filter(|u| !u.contains('?'))
                    .and_then(|u| type_and_id(u, base))
            })
            .ok_or_else(|| PushError::Incomplete(format!("entry {i} has no location")))?;
        let r = &e["resource"];
        let same = r["resourceType"]
            .as_str()
            .zip(r["id"].as_str())
            .is_some_and(|(t, id)| location == format!("{t}/{id}"));
        resources.push(same.then(|| r.clone()));
        locations.push(location);
    }
    Ok(Confirmed {
        locations,
        resources,
    })
}

/// Whether `resource`'s `subject` names `target` (`Type/id`); references
/// relative, absolute or versioned are compared as `Type/id`. A missing or
/// unreadable subject names nothing.
pub fn subject_is(resource: &Value, target: &str) -> bool {
    resource["subject"]["reference"]
        .as_str()
        .and_then(|r| type_and_id(r, ""))
        .is_some_and(|s| Some(s) == type_and_id(target, ""))
}

/// `http://kis/fhir/Communication/7/_history/2` → `Communication/7`.
pub fn type_and_id(location: &str, base: &str) -> Option<String> {
    let rest = location.strip_prefix(base).unwrap_or(location);
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let end = parts
        .iter()
        .position(|p| *p == "_history")
        .unwrap_or(parts.len());
    match parts[..end] {
        [.., t, id] if t.chars().next().is_some_and(|c| c.is_ascii_uppercase()) => {
            Some(format!("{t}/{id}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
