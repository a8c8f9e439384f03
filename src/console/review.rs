//! `/console/review`: held and quarantined items with reason and age, and
//! the unresolved conversations, one row each (any console role); an
//! item's sealed content and sender (reviewer role only, every showing in
//! the audit trail first). Decisions (reviewer role, CSRF token, audited
//! with the OIDC subject before they run), each through the library
//! function `chartbridge quarantine|conversation` calls: release
//! ([`quarantine::release`]), assign a patient and encounter found by KIS
//! identifier search ([`crate::review::search_patients`],
//! [`quarantine::resolve`]), link a whole conversation
//! ([`crate::review::link`]), dismiss a conversation as not relevant
//! ([`crate::review::dismiss`]).

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;

use super::session::{Role, Session, same_token};
use super::{ConsoleState, Nav, audit, audit_why, page_error, render};
use crate::audit::Action;
use crate::pipeline::Outcome;
use crate::quarantine::{self, Target};
use crate::review::{self as conversations, PatientMatch, Released};
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

struct ConversationRow {
    id: String,
    source: String,
    messages: usize,
    reasons: String,
    oldest: String,
}

#[derive(Template)]
#[template(path = "console/review.html")]
struct ReviewPage {
    nav: Nav,
    rows: Vec<Row>,
    conversations: Vec<ConversationRow>,
    reviewer: bool,
    notice: String,
}

/// What the last decision did, as the redirect after it names it.
#[derive(Deserialize, Default)]
pub struct Done {
    done: Option<String>,
    archived: Option<usize>,
    not_relevant: Option<usize>,
    held: Option<usize>,
    failed: Option<usize>,
}

impl Done {
    /// The notice line; empty for an unknown or no decision (the query is
    /// the visitor's, so only known words are echoed).
    fn notice(&self) -> String {
        let Some(done) = self
            .done
            .as_deref()
            .filter(|d| ["released", "assigned", "linked", "dismissed"].contains(d))
        else {
            return String::new();
        };
        format!(
            "{done}: archived {}, not relevant {}, still held {}, failed {}",
            self.archived.unwrap_or(0),
            self.not_relevant.unwrap_or(0),
            self.held.unwrap_or(0),
            self.failed.unwrap_or(0),
        )
    }

    /// The review list's address after a decision that `released` these.
    fn redirect(done: &str, released: &Released) -> Response {
        let archived = released.count(|o| matches!(o, Outcome::Archived { .. }));
        let not_relevant = released.count(|o| matches!(o, Outcome::NotRelevant { .. }));
        let held = released.count(|o| matches!(o, Outcome::Quarantined { .. } | Outcome::Held));
        let failed = released.failed();
        Redirect::to(&format!(
            "/console/review?done={done}&archived={archived}&not_relevant={not_relevant}\
             &held={held}&failed={failed}"
        ))
        .into_response()
    }
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
    /// The conversation the item is held in, for reviewers' decisions.
    conversation: Option<String>,
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

/// [`require`] for a form that changes something: also the session's
/// CSRF token, `csrf` as posted (403 when missing or another).
pub(crate) fn require_form(
    state: &ConsoleState,
    headers: &HeaderMap,
    role: Role,
    csrf: &str,
) -> Result<Session, Box<Response>> {
    let s = require(state, headers, Some(role))?;
    if !same_token(&s.csrf, csrf) {
        return Err(Box::new(page_error(
            StatusCode::FORBIDDEN,
            "Missing or wrong CSRF token.",
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

pub async fn list(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    axum::extract::Query(done): axum::extract::Query<Done>,
) -> Response {
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
    let held = match conversations::list(store, sealer).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "console: cannot list conversations");
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
    let conversations = held
        .into_iter()
        .map(|(id, c)| {
            let oldest = c.messages.iter().map(|m| m.created_at).min().unwrap_or(now);
            let mut reasons: Vec<&str> = c.messages.iter().map(|m| m.reason.as_str()).collect();
            reasons.sort_unstable();
            reasons.dedup();
            ConversationRow {
                id,
                reasons: reasons.join(", "),
                source: c.source.clone(),
                messages: c.messages.len(),
                oldest: age(now, oldest),
            }
        })
        .collect();
    render(&ReviewPage {
        nav: Nav::of(Some(&s)),
        rows,
        conversations,
        reviewer: s.has(Role::Reviewer),
        notice: done.notice(),
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
    let conversation = crate::review::conversation_of(store, sealer, &key)
        .await
        .ok()
        .map(|(_, cid)| cid);
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
        conversation,
    })
}

#[derive(Deserialize)]
pub struct Csrf {
    #[serde(default)]
    csrf: String,
}

pub async fn release(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<Csrf>,
) -> Response {
    let s = match require_form(&state, &headers, Role::Reviewer, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
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
            Redirect::to("/console/review?done=released&archived=1").into_response()
        }
        Ok(Outcome::Quarantined { reason }) => page_error(
            StatusCode::CONFLICT,
            &format!("Released, and held again: {reason}."),
        ),
        Ok(_) => Redirect::to("/console/review?done=released").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "console: release failed");
            page_error(
                StatusCode::CONFLICT,
                "The release failed; the item stays held.",
            )
        }
    }
}

/// What an assignment decides for: one held item (optionally its whole
/// conversation) or a conversation from the unresolved list.
#[derive(Deserialize, Default)]
pub struct Subject {
    /// An item id from the review list.
    #[serde(default)]
    item: String,
    /// A conversation id from the unresolved conversations list.
    #[serde(default)]
    conversation: String,
    /// The identifier to search the KIS for, `system|value` or `value`.
    #[serde(default)]
    identifier: String,
}

struct EncounterOption {
    reference: String,
    label: String,
}

struct PatientRow {
    reference: String,
    /// The id part, for element ids.
    id: String,
    identifiers: String,
    encounters: Vec<EncounterOption>,
}

#[derive(Template)]
#[template(path = "console/assign.html")]
struct AssignPage {
    nav: Nav,
    item: String,
    conversation: String,
    /// The item's conversation, when it has one (offers linking it whole).
    item_conversation: Option<String>,
    identifier: String,
    searched: bool,
    patients: Vec<PatientRow>,
}

fn patient_row(p: PatientMatch) -> PatientRow {
    PatientRow {
        id: p.reference.trim_start_matches("Patient/").to_owned(),
        identifiers: p.identifiers.join(", "),
        encounters: p
            .encounters
            .into_iter()
            .map(|e| EncounterOption {
                label: format!(
                    "{} · {} · {} · {}",
                    e.reference,
                    e.identifiers.join(", "),
                    e.status,
                    if e.start.is_empty() { "—" } else { &e.start }
                ),
                reference: e.reference,
            })
            .collect(),
        reference: p.reference,
    }
}

/// `GET /console/review/assign?item=…|conversation=…[&identifier=…]`
/// (reviewer): the KIS search for the patient to assign to.
pub async fn assign_page(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<Subject>,
) -> Response {
    let s = match require(&state, &headers, Some(Role::Reviewer)) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (Some(store), Some(sealer), Some(pipeline)) =
        (&state.store, &state.sealer, &state.pipeline)
    else {
        return unavailable();
    };
    let item_conversation = if q.item.is_empty() {
        if conversations::find(store, sealer, &q.conversation)
            .await
            .is_err()
        {
            return page_error(
                StatusCode::NOT_FOUND,
                "No open item or conversation with this id.",
            );
        }
        None
    } else {
        let Ok(key) = quarantine::find(store, sealer, &q.item).await else {
            return page_error(StatusCode::NOT_FOUND, "No open item with this id.");
        };
        crate::review::conversation_of(store, sealer, &key)
            .await
            .ok()
            .map(|(_, cid)| cid)
    };
    let searched = !q.identifier.trim().is_empty();
    // A search shows patients' references and identifiers: recorded first,
    // for the item or conversation it was made for, the identifier sealed.
    if searched {
        let target = if q.conversation.is_empty() {
            format!("item {}", q.item)
        } else {
            format!("conversation {}", q.conversation)
        };
        if let Err(r) = audit_why(
            &state,
            &s.actor,
            Action::PatientSearch,
            target,
            Some(q.identifier.trim()),
        )
        .await
        {
            return r;
        }
    }
    let patients = match conversations::search_patients(pipeline.kis(), &q.identifier).await {
        Ok(p) => p.into_iter().map(patient_row).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "console: KIS patient search failed");
            return page_error(
                StatusCode::BAD_GATEWAY,
                "The KIS did not answer the search; try again.",
            );
        }
    };
    render(&AssignPage {
        nav: Nav::of(Some(&s)),
        item: q.item,
        conversation: q.conversation,
        item_conversation,
        identifier: q.identifier,
        searched,
        patients,
    })
}

#[derive(Deserialize)]
pub struct AssignForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    item: String,
    #[serde(default)]
    conversation: String,
    patient: String,
    #[serde(default)]
    encounter: String,
    /// `on`: link the item's whole conversation.
    #[serde(default)]
    whole: Option<String>,
    #[serde(default)]
    reason: String,
}

fn some(text: &str) -> Option<&str> {
    Some(text.trim()).filter(|t| !t.is_empty())
}

fn refused(e: &quarantine::ReviewError) -> Response {
    tracing::warn!(error = %e, "console: review decision failed");
    page_error(
        StatusCode::CONFLICT,
        "The decision could not be carried out; the messages stay held.",
    )
}

/// `POST /console/review/assign` (reviewer, CSRF): assigns an item to the
/// patient (and encounter) and releases it (`quarantine resolve`), or
/// links the item's or the named conversation to them and releases every
/// message it holds (`quarantine resolve --conversation`, `conversation
/// link`). Audited as `quarantine.resolve` / `conversation.link` first.
pub async fn assign(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Form(f): Form<AssignForm>,
) -> Response {
    let s = match require_form(&state, &headers, Role::Reviewer, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (Some(store), Some(sealer), Some(pipeline)) =
        (&state.store, &state.sealer, &state.pipeline)
    else {
        return unavailable();
    };
    let target = match Target::literal(
        f.patient.trim().to_owned(),
        some(&f.encounter).map(str::to_owned),
    ) {
        Ok(t) => t,
        Err(e) => return page_error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let described = target.describe();
    let reason = some(&f.reason);
    let now = Utc::now();
    let actor = s.actor.as_str();
    if !f.item.is_empty() {
        let Ok(key) = quarantine::find(store, sealer, &f.item).await else {
            return page_error(StatusCode::NOT_FOUND, "No open item with this id.");
        };
        if f.whole.is_some() {
            let Ok((token, cid)) = crate::review::conversation_of(store, sealer, &key).await else {
                return page_error(
                    StatusCode::CONFLICT,
                    "The item belongs to no conversation that can be linked.",
                );
            };
            let what = format!("conversation {cid} item {} {described}", f.item);
            if let Err(r) =
                audit_why(&state, &s.actor, Action::ConversationLink, what, reason).await
            {
                return r;
            }
            return match conversations::link(pipeline, &token, target, actor, now).await {
                Ok(released) => Done::redirect("linked", &released),
                Err(e) => refused(&e),
            };
        }
        let what = format!("item {} {described}", f.item);
        if let Err(r) = audit_why(&state, &s.actor, Action::QuarantineResolve, what, reason).await {
            return r;
        }
        return match quarantine::resolve(pipeline, &key, target, actor, now).await {
            Ok(outcome) => Done::redirect(
                "assigned",
                &Released {
                    outcomes: vec![(key, Ok(outcome))],
                },
            ),
            Err(e) => refused(&e),
        };
    }
    let Ok(token) = conversations::find(store, sealer, &f.conversation).await else {
        return page_error(StatusCode::NOT_FOUND, "No open conversation with this id.");
    };
    let what = format!("conversation {} {described}", f.conversation);
    if let Err(r) = audit_why(&state, &s.actor, Action::ConversationLink, what, reason).await {
        return r;
    }
    match conversations::link(pipeline, &token, target, actor, now).await {
        Ok(released) => Done::redirect("linked", &released),
        Err(e) => refused(&e),
    }
}

#[derive(Deserialize)]
pub struct DismissForm {
    #[serde(default)]
    csrf: String,
    conversation: String,
    #[serde(default)]
    reason: String,
}

/// `POST /console/review/dismiss` (reviewer, CSRF): dismisses a
/// conversation as not relevant (`conversation dismiss`): its held
/// messages are not archived, their messenger copies deleted after the
/// retention. Audited as `conversation.dismiss` first.
pub async fn dismiss(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Form(f): Form<DismissForm>,
) -> Response {
    let s = match require_form(&state, &headers, Role::Reviewer, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (Some(store), Some(sealer), Some(pipeline)) =
        (&state.store, &state.sealer, &state.pipeline)
    else {
        return unavailable();
    };
    let Ok(token) = conversations::find(store, sealer, &f.conversation).await else {
        return page_error(StatusCode::NOT_FOUND, "No open conversation with this id.");
    };
    let what = format!("conversation {}", f.conversation);
    let reason = some(&f.reason);
    if let Err(r) = audit_why(&state, &s.actor, Action::ConversationDismiss, what, reason).await {
        return r;
    }
    match conversations::dismiss(pipeline, &token, s.actor.as_str(), Utc::now()).await {
        Ok(released) => Done::redirect("dismissed", &released),
        Err(e) => refused(&e),
    }
}
