//! The web console under `/console` (docs/console.md): server-rendered
//! pages (askama templates in `templates/console/`) on the worker's axum
//! server, with one stylesheet and one script embedded in the binary. Every
//! answer carries a strict `Content-Security-Policy`: nothing is loaded
//! from outside the host, inline code only by its SHA-256.
//!
//! The verifier page (`/console/verify`) is self-contained: its script and
//! style are inlined, so the page saved to disk verifies a bundle offline.

pub mod config;

use std::sync::LazyLock;

use askama::Template;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use sha2::{Digest, Sha256};

pub use config::ConsoleConfig;

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

/// What the pages read.
#[derive(Debug, Clone, Default)]
pub struct ConsoleState {}

#[derive(Template)]
#[template(path = "console/index.html")]
struct IndexPage {
    who: String,
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

async fn index() -> Response {
    render(&IndexPage { who: String::new() })
}

async fn verify() -> Response {
    render(&VerifyPage {
        csp: &CSP,
        css: CSS,
        js: VERIFY_JS,
        keys: String::new(),
    })
}
