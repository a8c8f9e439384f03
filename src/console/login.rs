//! `/console/login`, `/console/callback`, `/console/logout`: the OpenID
//! Connect authorization code flow with PKCE and the session it opens.
//! Logins and logouts are in the audit trail with the OIDC subject.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::{self, LOGIN_COOKIE, LOGIN_TTL, SESSION_COOKIE, same_token, set_cookie};
use super::{ConsoleState, audit, page_error};
use crate::audit::{Action, Actor};

pub async fn login(State(state): State<ConsoleState>) -> Response {
    let Some(oidc) = state.oidc().await else {
        return page_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Login is not available: no OpenID Provider is configured ([console.oidc]) or it does not answer.",
        );
    };
    let started = oidc.start();
    let id = state
        .sessions
        .start_login(started.state, started.nonce, started.pkce_verifier);
    (
        [(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &id, LOGIN_TTL))],
        Redirect::to(&started.url),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

pub async fn callback(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let Some(oidc) = state.oidc().await else {
        return page_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Login is not available: the OpenID Provider does not answer.",
        );
    };
    let pending =
        session::cookie(&headers, LOGIN_COOKIE).and_then(|id| state.sessions.take_login(id));
    let (Some(pending), Some(code), Some(got_state)) = (pending, q.code, q.state) else {
        let why = q
            .error
            .map(|e| format!("The provider answered: {e}."))
            .unwrap_or_default();
        return page_error(
            StatusCode::BAD_REQUEST,
            &format!("This login was not started here or has expired. {why}"),
        );
    };
    if !same_token(&pending.state, &got_state) {
        return page_error(StatusCode::BAD_REQUEST, "The login's state does not match.");
    }
    let who = match oidc
        .finish(&code, &pending.nonce, &pending.pkce_verifier)
        .await
    {
        Ok(who) => who,
        Err(e) => {
            tracing::warn!(error = %e, "console login failed");
            return page_error(StatusCode::UNAUTHORIZED, "The login could not be verified.");
        }
    };
    let actor = Actor::oidc(&who.issuer, &who.subject);
    let roles: Vec<&str> = who.roles.iter().map(|r| r.as_str()).collect();
    if let Err(r) = audit(
        &state,
        &actor,
        Action::ConsoleLogin,
        format!("roles:{}", roles.join(",")),
    )
    .await
    {
        return r;
    }
    let id = state.sessions.create(actor, who.subject, who.roles);
    let mut response = Redirect::to("/console/").into_response();
    let h = response.headers_mut();
    for c in [
        set_cookie(SESSION_COOKIE, &id, state.sessions.max()),
        set_cookie(LOGIN_COOKIE, "", std::time::Duration::ZERO),
    ] {
        if let Ok(v) = c.parse() {
            h.append(header::SET_COOKIE, v);
        }
    }
    response
}

#[derive(Deserialize)]
pub struct Csrf {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Form(f): Form<Csrf>,
) -> Response {
    let Some(s) = state.sessions.get(&headers) else {
        // The session ended already (timeout, restart): clear the cookie.
        return (
            [(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, "", std::time::Duration::ZERO),
            )],
            Redirect::to("/console/"),
        )
            .into_response();
    };
    if !same_token(&s.csrf, &f.csrf) {
        return page_error(StatusCode::FORBIDDEN, "Missing or wrong CSRF token.");
    }
    if let Err(r) = audit(&state, &s.actor, Action::ConsoleLogout, "console".into()).await {
        return r;
    }
    state.sessions.end(&headers);
    (
        [(
            header::SET_COOKIE,
            set_cookie(SESSION_COOKIE, "", std::time::Duration::ZERO),
        )],
        Redirect::to("/console/"),
    )
        .into_response()
}
