//! The web console under `/console` (docs/console.md): server-rendered
//! pages (askama templates in `templates/console/`) on the worker's axum
//! server, with one stylesheet and one script embedded in the binary. Every
//! answer carries a strict `Content-Security-Policy`: nothing is loaded
//! from outside the host, inline code only by its SHA-256.
//!
//! The verifier page (`/console/verify`) is self-contained: its script and
//! style are inlined, so the page saved to disk verifies a bundle offline.

mod chart;
pub mod config;
mod login;
pub mod oidc;
mod ops;
mod proofs;
mod review;
pub mod session;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use sha2::{Digest, Sha256};

pub use config::ConsoleConfig;
pub use oidc::{Oidc, OidcConfig, OidcError};
pub use session::{Role, Session, Sessions};

use crate::audit::{Action, Actor, Entry};
use crate::config::Config;
use crate::health::Health;
use crate::pipeline::Pipeline;
use crate::seal::Sealer;
use crate::store::Store;

/// The stylesheet, served at `/console/assets/console.css`.
pub const CSS: &str = include_str!("assets/console.css");
/// The in-page verifier, served at `/console/assets/verify.js`.
pub const VERIFY_JS: &str = include_str!("assets/verify.js");

fn csp_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The `Content-Security-Policy` of every console answer: same origin
/// only, the embedded script and style also inline by hash, no frames, no
/// plug-ins, forms post only to the host.
pub static CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src 'self' {js}; style-src 'self' {css}; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        js = csp_hash(VERIFY_JS),
        css = csp_hash(CSS),
    )
});

/// What the pages read: sessions, the OpenID Provider, the store and
/// sealer (audit trail, held items).
#[derive(Clone)]
pub struct ConsoleState {
    pub sessions: Sessions,
    /// `[console.oidc]`, discovered at the first login that needs it.
    oidc_config: Option<Arc<OidcConfig>>,
    oidc: Arc<tokio::sync::OnceCell<Arc<Oidc>>>,
    pub store: Option<Store>,
    pub sealer: Option<Sealer>,
    /// Releases held items (the worker's pipeline).
    pub pipeline: Option<Arc<Pipeline>>,
    /// The worker's configuration (broker for dead letters, deletion timing).
    pub config: Option<Arc<Config>>,
    /// Readiness, as `/readyz` reports it.
    pub health: Option<Health>,
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState")
            .field("oidc", &self.oidc_config.is_some())
            .field("store", &self.store.is_some())
            .field("pipeline", &self.pipeline.is_some())
            .finish_non_exhaustive()
    }
}

impl ConsoleState {
    /// The console over the worker's parts. The OpenID Provider
    /// (`config.oidc`) is discovered here if it answers, else at the first
    /// login: an unreachable provider disables login, never the worker.
    pub async fn new(
        config: &ConsoleConfig,
        store: Option<Store>,
        sealer: Option<Sealer>,
        pipeline: Option<Arc<Pipeline>>,
        worker: Option<(Arc<Config>, Health)>,
    ) -> Self {
        let state = Self {
            sessions: Sessions::new(config.session_idle, config.session_max),
            oidc_config: config.oidc.clone().map(Arc::new),
            oidc: Arc::default(),
            store,
            sealer,
            pipeline,
            config: worker.as_ref().map(|w| w.0.clone()),
            health: worker.map(|w| w.1),
        };
        if state.oidc_config.is_some() && state.oidc().await.is_none() {
            tracing::warn!(
                "console: the OpenID Provider is not reachable yet; login retries discovery"
            );
        }
        state
    }

    /// The discovered OpenID Provider; `None` when none is configured or
    /// discovery fails now (logged; tried again on the next call).
    pub async fn oidc(&self) -> Option<Arc<Oidc>> {
        let config = self.oidc_config.as_ref()?;
        let found = self
            .oidc
            .get_or_try_init(|| async { Oidc::discover(config).await.map(Arc::new) })
            .await;
        match found {
            Ok(oidc) => Some(oidc.clone()),
            Err(e) => {
                tracing::warn!(error = %e, "console: OpenID Provider discovery failed");
                None
            }
        }
    }

    /// The verifier page only: no provider, no store.
    pub fn verifier_only() -> Self {
        Self {
            sessions: Sessions::new(Duration::from_secs(60), Duration::from_secs(60)),
            oidc_config: None,
            oidc: Arc::default(),
            store: None,
            sealer: None,
            pipeline: None,
            config: None,
            health: None,
        }
    }
}

/// Appends an audit row as `actor`; an answer to return when it fails
/// (no action goes unrecorded).
pub(crate) async fn audit(
    state: &ConsoleState,
    actor: &Actor,
    action: Action,
    target: String,
) -> Result<(), Response> {
    audit_why(state, actor, action, target, None).await
}

/// [`audit`] with the reviewer's free-text reason (kept sealed in the row).
pub(crate) async fn audit_why(
    state: &ConsoleState,
    actor: &Actor,
    action: Action,
    target: String,
    reason: Option<&str>,
) -> Result<(), Response> {
    let (Some(store), Some(sealer)) = (&state.store, &state.sealer) else {
        return Err(page_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The console has no store: actions cannot be recorded.",
        ));
    };
    let entry = Entry {
        actor,
        action,
        target,
        reason,
    };
    match store.append_audit(sealer, &entry).await {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::error!(error = %e, action = action.as_str(), "console action not recorded in the audit trail");
            Err(page_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The audit trail could not be written; nothing was done.",
            ))
        }
    }
}

/// The header's user line and the logout form's CSRF token.
#[derive(Debug, Clone, Default)]
pub(crate) struct Nav {
    pub who: String,
    pub csrf: String,
}

impl Nav {
    pub fn of(session: Option<&Session>) -> Self {
        match session {
            Some(s) => Self {
                who: format!(
                    "{} ({})",
                    s.subject,
                    s.roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                csrf: s.csrf.clone(),
            },
            None => Self::default(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/index.html")]
struct IndexPage {
    nav: Nav,
    logged_in: bool,
    login_configured: bool,
}

#[derive(Template)]
#[template(path = "console/message.html")]
struct MessagePage<'a> {
    nav: Nav,
    message: &'a str,
}

/// A page with one message and `status`.
pub(crate) fn page_error(status: StatusCode, message: &str) -> Response {
    let mut r = render(&MessagePage {
        nav: Nav::default(),
        message,
    });
    *r.status_mut() = status;
    r
}

#[derive(Template)]
#[template(path = "console/verify.html")]
struct VerifyPage<'a> {
    csp: &'a str,
    css: &'a str,
    js: &'a str,
    keys: String,
}

/// Renders `page`, or 500 with the error logged (templates hold no
/// content, so neither does the error).
pub(crate) fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console page did not render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The console's routes, all under `/console`; merge into
/// [`crate::http::router`].
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route(
            "/console",
            get(|| async { axum::response::Redirect::to("/console/") }),
        )
        .route("/console/", get(index))
        .route("/console/verify", get(verify))
        .route("/console/verify/bundle", get(proofs::bundle))
        .route("/console/log/consistency", get(proofs::consistency))
        .route("/console/login", get(login::login))
        .route("/console/callback", get(login::callback))
        .route("/console/logout", axum::routing::post(login::logout))
        .route("/console/review", get(review::list))
        .route("/console/operations", get(ops::operations))
        .route(
            "/console/operations/replay",
            axum::routing::post(ops::replay),
        )
        .route(
            "/console/operations/retry-deletion",
            axum::routing::post(ops::retry_deletion),
        )
        .route("/console/log", get(ops::log))
        .route(
            "/console/review/assign",
            get(review::assign_page).post(review::assign),
        )
        .route(
            "/console/review/dismiss",
            axum::routing::post(review::dismiss),
        )
        .route("/console/review/{id}", get(review::show))
        .route(
            "/console/review/{id}/release",
            axum::routing::post(review::release),
        )
        .route(
            "/console/assets/console.css",
            get(|| asset(CSS, "text/css; charset=utf-8")),
        )
        .route(
            "/console/assets/verify.js",
            get(|| asset(VERIFY_JS, "text/javascript; charset=utf-8")),
        )
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(state)
}

async fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&CSP) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn index(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    let session = state.sessions.get(&headers);
    render(&IndexPage {
        nav: Nav::of(session.as_ref()),
        logged_in: session.is_some(),
        login_configured: state.oidc_config.is_some(),
    })
}

async fn verify() -> Response {
    render(&VerifyPage {
        csp: &CSP,
        css: CSS,
        js: VERIFY_JS,
        keys: String::new(),
    })
}
