//! `/console/review`: held and quarantined items with reason and age (any
//! console role); an item's sealed content and sender (reviewer role only,
//! every showing in the audit trail first); release (reviewer role, CSRF
//! token, audited) through the pipeline, which archives it in the KIS.

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;

use super::session::{Role, Session, same_token};
use super::{ConsoleState, Nav, audit, page_error, render};
use crate::audit::Action;
use crate::pipeline::Outcome;
use crate::quarantine;
use crate::store::millis;

/// An age as `3d 4h`, `5h 2m`, `12m` or `40s`.
pub fn age(now_ms: i64, then_ms: i64) -> String {
    let s = (now_ms - then_ms).max(0) / 1000;
    let (d, h, m) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    match () {
        _ if d > 0 => format!("{d}d {h}h"),
        _ if h > 0 => format!("{h}h {m}m"),
        _ if m > 0 => format!("{m}m"),
        _ => format!("{s}s"),
    }
}

struct Row {
    id: String,
    reason: String,
    age: String,
    resolved: bool,
}

#[derive(Template)]
#[template(path = "console/review.html")]
struct ReviewPage {
    nav: Nav,
    rows: Vec<Row>,
    reviewer: bool,
}

#[derive(Template)]
#[template(path = "console/item.html")]
struct ItemPage {
    nav: Nav,
    id: String,
    reason: String,
    age: String,
    sender: String,
    event: String,
    detail: Option<String>,
}

/// The session, or the answer for a visitor who may not see this page.
pub(crate) fn require(
    state: &ConsoleState,
    headers: &HeaderMap,
    role: Option<Role>,
) -> Result<Session, Box<Response>> {
    let Some(s) = state.sessions.get(headers) else {
        return Err(Box::new(page_error(
            StatusCode::UNAUTHORIZED,
            "Log in first.",
        )));
    };
    let allowed = match role {
        Some(r) => s.has(r),
        None => !s.roles.is_empty(),
    };
    if !allowed {
        return Err(Box::new(page_error(
            StatusCode::FORBIDDEN,
            "Your roles do not include this page.",
        )));
    }
    Ok(s)
}

fn unavailable() -> Response {
    page_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "The store is not available to the console.",
    )
}

pub async fn list(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    let s = match require(&state, &headers, None) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (Some(store), Some(sealer)) = (&state.store, &state.sealer) else {
        return unavailable();
    };
    let items = match quarantine::list(store, sealer).await {
        Ok(items) => items,
        Err(e) => {
            tracing::error!(error = %e, "console: cannot list quarantine");
            return unavailable();
        }
    };
    let now = millis(Utc::now());
    let rows = items
        .into_iter()
        .map(|(id, i)| Row {
            id,
            reason: i.reason,
            age: age(now, i.created_at),
            resolved: i.resolved,
        })
        .collect();
    render(&ReviewPage {
        nav: Nav::of(Some(&s)),
        rows,
        reviewer: s.has(Role::Reviewer),
    })
}

/// `bytes` as pretty JSON, or as text when UTF-8, or a size.
fn readable(bytes: &[u8]) -> String {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => match std::str::from_utf8(bytes) {
            Ok(s) => s.to_owned(),
            Err(_) => format!("(binary, {} bytes)", bytes.len()),
        },
    }
}

pub async fn show(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let s = match require(&state, &headers, Some(Role::Reviewer)) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (Some(store), Some(sealer)) = (&state.store, &state.sealer) else {
        return unavailable();
    };
    let Ok(key) = quarantine::find(store, sealer, &id).await else {
        return page_error(StatusCode::NOT_FOUND, "No open item with this id.");
    };
    if let Err(r) = audit(
        &state,
        &s.actor,
        Action::QuarantineShow,
        format!("item {id}"),
    )
    .await
    {
        return r;
    }
    let (event, detail) = match quarantine::sealed_content(store, sealer, &key).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "console: cannot open a held item");
            return unavailable();
        }
    };
    let row = store.quarantine_row(&key).await.ok().flatten();
    let parsed: Value = serde_json::from_slice(&event).unwrap_or(Value::Null);
    let sender = match &parsed["sender"] {
        Value::Null => "(not in the event)".to_owned(),
        v => serde_json::to_string_pretty(v).unwrap_or_default(),
    };
    render(&ItemPage {
        nav: Nav::of(Some(&s)),
        id,
        reason: row.as_ref().map(|r| r.reason.clone()).unwrap_or_default(),
        age: row
            .as_ref()
            .map(|r| age(millis(Utc::now()), r.created_at))
            .unwrap_or_default(),
        sender,
        event: readable(&event),
        detail: detail.as_deref().map(readable),
    })
}

#[derive(Deserialize)]
pub struct Csrf {
    csrf: String,
}

pub async fn release(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<Csrf>,
) -> Response {
    let s = match require(&state, &headers, Some(Role::Reviewer)) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if !same_token(&s.csrf, &f.csrf) {
        return page_error(StatusCode::FORBIDDEN, "Missing or wrong CSRF token.");
    }
    let (Some(store), Some(sealer), Some(pipeline)) =
        (&state.store, &state.sealer, &state.pipeline)
    else {
        return unavailable();
    };
    let Ok(key) = quarantine::find(store, sealer, &id).await else {
        return page_error(StatusCode::NOT_FOUND, "No open item with this id.");
    };
    if let Err(r) = audit(
        &state,
        &s.actor,
        Action::QuarantineRelease,
        format!("item {id}"),
    )
    .await
    {
        return r;
    }
    match quarantine::release(pipeline, &key, Utc::now()).await {
        Ok(Outcome::Archived { .. }) => {
            Redirect::to("/console/review?released=archived").into_response()
        }
        Ok(Outcome::Quarantined { reason }) => page_error(
            StatusCode::CONFLICT,
            &format!("Released, and held again: {reason}."),
        ),
        Ok(_) => Redirect::to("/console/review?released=done").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "console: release failed");
            page_error(
                StatusCode::CONFLICT,
                "The release failed; the item stays held.",
            )
        }
    }
}
