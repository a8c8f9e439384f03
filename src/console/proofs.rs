//! Proof data for the in-page verifier (compliance role), as JSON the
//! page checks itself: `GET /console/verify/bundle?resource=Type/id`, the
//! proof bundle of the message archived as that KIS resource exactly as
//! `chartbridge proof export --resource` builds it (recorded as
//! `proof.export` with the OIDC subject before it is handed out); `GET
//! /console/log/consistency?from=N&to=M`, the consistency proof between
//! two tree sizes as `chartbridge log consistency` prints it.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::ConsoleState;
use super::review::require;
use super::session::Role;
use crate::app;
use crate::prove::service::{self, ProofTarget, ServiceError};

/// A plain-text error answer (the page shows it; no content in it).
fn refuse(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.to_owned(),
    )
        .into_response()
}

fn json(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

fn service_error(e: &anyhow::Error) -> Response {
    match e.downcast_ref::<ServiceError>() {
        Some(ServiceError::Request(why)) => refuse(StatusCode::BAD_REQUEST, why),
        Some(ServiceError::NotArchived(_)) => {
            refuse(StatusCode::NOT_FOUND, "Nothing archived has this resource.")
        }
        Some(ServiceError::NotCovered(_)) => refuse(
            StatusCode::CONFLICT,
            "No signed checkpoint covers this entry yet, and no signing key is configured.",
        ),
        _ => {
            tracing::error!(error = %e, "console: proof data failed");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "The proof could not be built; see the worker's log.",
            )
        }
    }
}

#[derive(Deserialize)]
pub struct ByResource {
    resource: String,
}

/// `GET /console/verify/bundle?resource=Type/id` (compliance).
pub async fn bundle(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<ByResource>,
) -> Response {
    let s = match require(&state, &headers, Some(Role::Compliance)) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (Some(store), Some(sealer)) = (&state.store, &state.sealer) else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "The console has no store.");
    };
    let target = match ProofTarget::resource(q.resource.trim()) {
        Ok(t) => t,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let (signer, origin) = match &state.config {
        Some(config) => match app::load_signer(config) {
            Ok(signer) => (signer, config.proofs.origin.clone()),
            Err(e) => {
                tracing::error!(error = %e, "console: the signing key is unusable");
                (None, config.proofs.origin.clone())
            }
        },
        None => (None, String::new()),
    };
    match app::audit::export_bundle(
        (store, sealer),
        &s.actor,
        &target,
        (signer.as_ref(), &origin),
        None,
    )
    .await
    {
        Ok(bundle) => json(bundle.to_json()),
        Err(e) => service_error(&e),
    }
}

#[derive(Deserialize)]
pub struct Sizes {
    from: u64,
    to: u64,
}

/// `GET /console/log/consistency?from=N&to=M` (compliance).
pub async fn consistency(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<Sizes>,
) -> Response {
    if let Err(r) = require(&state, &headers, Some(Role::Compliance)) {
        return *r;
    }
    let Some(store) = &state.store else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "The console has no store.");
    };
    let (from, to) = (q.from.min(q.to), q.from.max(q.to));
    match service::consistency(store, from, to).await {
        Ok(proof) => json(serde_json::to_string_pretty(&proof).unwrap_or_default()),
        Err(e) => service_error(&e.into()),
    }
}
