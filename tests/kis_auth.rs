//! OAuth2 towards the KIS (DSK IV.2, II.1) against a real authorization server
//! (oidc-provider, `deploy/dev/oauth-server.sh`): client credentials with a
//! client secret and SMART Backend Services JWT assertions (ES384, RS384),
//! token caching, refresh before expiry and one re-fetch after a 401.
//!
//! The dev FHIR server checks no tokens, so a gate in front of it plays the
//! KIS's resource server: it asks the authorization server to introspect
//! every bearer token and answers 401 unless the token is active.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use chartbridge::config::{AuthConfig, OAuthClient};
use chartbridge::config::{KisConfig, Secret};
use chartbridge::push::{Kis, PushError};
use chartbridge::store::MessageState;
use common::{Harness, fhir_url, repo};

const RS_ID: &str = "kis-resource-server";
const RS_SECRET: &str = "test-rs-secret-not-for-production";
const CLIENT_SECRET: &str = "test-secret-not-for-production";

fn oauth_url() -> String {
    std::env::var("CHARTBRIDGE_TEST_OAUTH_URL").unwrap_or_else(|_| "http://127.0.0.1:8190".into())
}

#[derive(Clone, Default)]
struct Gate {
    url: String,
    tokens: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<usize>>,
}

#[derive(Clone)]
struct GateState {
    upstream: String,
    http: reqwest::Client,
    gate: Gate,
}

impl Gate {
    async fn start() -> Self {
        let http = reqwest::Client::new();
        assert!(
            http.get(format!("{}/.well-known/openid-configuration", oauth_url()))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()),
            "no authorization server at {}: start it with deploy/dev/oauth-server.sh start",
            oauth_url()
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gate = Gate {
            url: format!("http://{}", listener.local_addr().unwrap()),
            ..Gate::default()
        };
        let state = GateState {
            upstream: fhir_url(),
            http,
            gate: gate.clone(),
        };
        let app = Router::new().fallback(any(gated)).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        gate
    }

    fn distinct_tokens(&self) -> usize {
        let mut t = self.tokens.lock().unwrap().clone();
        t.sort();
        t.dedup();
        t.len()
    }

    fn last_token(&self) -> String {
        self.tokens.lock().unwrap().last().unwrap().clone()
    }

    fn refused(&self) -> usize {
        *self.refused.lock().unwrap()
    }
}

async fn introspect(http: &reqwest::Client, token: &str) -> bool {
    let answer: serde_json::Value = http
        .post(format!("{}/token/introspection", oauth_url()))
        .basic_auth(RS_ID, Some(RS_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["active"] == true
}

async fn gated(
    State(s): State<GateState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let active = match &token {
        Some(t) => {
            s.gate.tokens.lock().unwrap().push(t.clone());
            introspect(&s.http, t).await
        }
        None => false,
    };
    if !active {
        *s.gate.refused.lock().unwrap() += 1;
        return (StatusCode::UNAUTHORIZED, [("www-authenticate", "Bearer")]).into_response();
    }
    let url = format!(
        "{}{}",
        s.upstream,
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut req = s.http.request(method, url).body(body);
    for name in ["content-type", "accept", "if-none-exist"] {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v);
        }
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let ct = r.headers().get("content-type").cloned();
    let mut resp = Response::new(Body::from(r.bytes().await.unwrap()));
    *resp.status_mut() = status;
    if let Some(ct) = ct {
        resp.headers_mut().insert("content-type", ct);
    }
    resp
}

fn kis_config(base: &str, auth: AuthConfig) -> KisConfig {
    let text = format!(
        "[broker]\nurl = \"amqp://127.0.0.1\"\n[store]\nkey_file = \"k\"\n[kis]\nbase_url = \"{base}\"\n"
    );
    let mut c = chartbridge::config::Config::from_parts(
        std::path::Path::new("t.toml"),
        &text,
        std::iter::empty(),
    )
    .unwrap()
    .kis;
    c.auth = auth;
    c
}

fn client_credentials(client_id: &str) -> AuthConfig {
    AuthConfig::ClientCredentials {
        client: OAuthClient {
            scope: Some("system/Communication.c system/DocumentReference.cr".into()),
            ..OAuthClient::new(format!("{}/token", oauth_url()), client_id)
        },
        client_secret: Secret::new(CLIENT_SECRET),
    }
}

fn smart(client_id: &str, key_file: &str) -> AuthConfig {
    AuthConfig::SmartBackend {
        client: OAuthClient {
            scope: Some(
                "system/Communication.c system/DocumentReference.cr system/Binary.cru".into(),
            ),
            ..OAuthClient::new(format!("{}/token", oauth_url()), client_id)
        },
        private_key_file: repo().join("fixtures/oauth").join(key_file),
        algorithm: None,
        key_id: Some(key_file.into()),
    }
}

#[tokio::test]
async fn iv2_client_credentials_token_is_cached_and_refetched_once_after_401() {
    let gate = Gate::start().await;
    // Without credentials the gate refuses: the client's fault, not the
    // content's — transient (retried, the breaker opens), never a
    // quarantine of the message.
    let anonymous = Kis::new(&kis_config(&gate.url, AuthConfig::default())).unwrap();
    assert!(matches!(
        anonymous.read("metadata").await,
        Err(PushError::Transient { .. })
    ));
    assert_eq!(gate.refused(), 1);

    let kis = Kis::new(&kis_config(
        &gate.url,
        client_credentials("chartbridge-secret"),
    ))
    .unwrap();
    for _ in 0..3 {
        assert_eq!(
            kis.read("metadata").await.unwrap()["resourceType"],
            "CapabilityStatement"
        );
    }
    assert_eq!(gate.distinct_tokens(), 1, "one token for three requests");
    assert_eq!(gate.refused(), 1);

    // The authorization server revokes the token: the KIS answers 401 once,
    // the client fetches a new token and repeats the request.
    let revoked = reqwest::Client::new()
        .post(format!("{}/token/revocation", oauth_url()))
        .basic_auth("chartbridge-secret", Some(CLIENT_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", gate.last_token()))
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success());
    assert!(kis.read("metadata").await.is_ok());
    assert_eq!(gate.refused(), 2, "one 401 for the revoked token");
    assert_eq!(gate.distinct_tokens(), 2, "a fresh token after the 401");
    assert!(kis.read("metadata").await.is_ok());
    assert_eq!(gate.distinct_tokens(), 2);
}

#[tokio::test]
async fn iv2_short_lived_token_is_refreshed_before_it_expires() {
    // chartbridge-short gets 4 s tokens: refreshed after half their life.
    let gate = Gate::start().await;
    let kis = Kis::new(&kis_config(
        &gate.url,
        client_credentials("chartbridge-short"),
    ))
    .unwrap();
    kis.read("metadata").await.unwrap();
    kis.read("metadata").await.unwrap();
    assert_eq!(gate.distinct_tokens(), 1);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    kis.read("metadata").await.unwrap();
    assert_eq!(gate.distinct_tokens(), 2);
    assert_eq!(gate.refused(), 0, "refreshed before the KIS refused it");
}

#[tokio::test]
async fn iv2_smart_backend_assertions_are_verified_by_the_server() {
    let gate = Gate::start().await;
    for (client, key) in [
        ("chartbridge-smart-es384", "client-es384.pem"),
        ("chartbridge-smart-rs384", "client-rs384.pem"),
    ] {
        let kis = Kis::new(&kis_config(&gate.url, smart(client, key))).unwrap();
        assert!(kis.read("metadata").await.is_ok(), "{client}");
    }
    assert_eq!(gate.distinct_tokens(), 2);
    // Signed with a key the server does not hold for this client: refused at
    // the token endpoint; transient (configuration fault, not content).
    let mut wrong = smart("chartbridge-smart-es384", "client-rs384.pem");
    if let AuthConfig::SmartBackend { key_id, .. } = &mut wrong {
        *key_id = Some("client-es384.pem".into());
    }
    let kis = Kis::new(&kis_config(&gate.url, wrong)).unwrap();
    match kis.read("metadata").await {
        Err(PushError::Transient { detail, .. }) => {
            assert_eq!(detail, "token endpoint answered HTTP 401")
        }
        other => panic!("expected a refused client, got {other:?}"),
    }
    assert_eq!(
        gate.refused(),
        0,
        "no request reached the KIS without a token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iv2_worker_archives_through_smart_backend_auth() {
    let gate = Gate::start().await;
    let mut h = Harness::new(Some(&gate.url), None).await;
    h.config.kis.auth = smart("chartbridge-smart-es384", "client-es384.pem");
    h.seed_patient("P-1001").await;
    let worker = h.start_worker();
    h.publish(&h.fixture("events/image-canonical.json")).await;
    let key = h.key("matrix", "$msg-0002");
    h.wait_state(&key, MessageState::Archived).await;
    h.expect_deletions(1).await;
    worker.stop().await;
    assert_eq!(gate.refused(), 0);
    assert_eq!(
        gate.distinct_tokens(),
        1,
        "transaction and read-back share a token"
    );
    assert!(
        gate.tokens.lock().unwrap().len() >= 3,
        "transaction + two reads"
    );
}
