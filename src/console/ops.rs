//! `/console/operations` (operator role): readiness, messages by state
//! over time and in total as server-rendered SVG charts, the dead-letter
//! queue (read as `chartbridge dlq list` does: held unacknowledged and put
//! back) with replay, failed and stuck deletions with retry. `/console/log`
//! (compliance role): recent signed checkpoints, the consistency between
//! any two of them checked in the page (the in-page verifier's script),
//! and the signing keys with validity and revocation. Every action is CSRF-checked and audited with
//! the OIDC subject before it runs.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::review::{age, require, require_form};
use super::session::Role;
use super::{ConsoleState, Nav, audit, chart, page_error, render};
use crate::audit::Action;
use crate::consume::Broker;
use crate::dlq::{self, Held, Replayed};
use crate::store::{DeletionState, millis};

/// Most dead letters one page reads.
const DLQ_LIMIT: usize = 200;

fn time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

struct Letter {
    id: String,
    reason: String,
    queue: String,
    age: String,
    bytes: usize,
}

struct Deletion {
    id: String,
    source: String,
    state: String,
    attempts: i64,
    age: String,
}

#[derive(Template)]
#[template(path = "console/operations.html")]
struct OperationsPage {
    nav: Nav,
    ready: Option<bool>,
    /// Hours the timeline covers, and the choices.
    hours: i64,
    windows: &'static [i64],
    /// Server-rendered SVG (numbers and fixed state names only).
    timeline_svg: String,
    totals_svg: String,
    /// The same numbers as a table: bucket start, then a count per state.
    timeline_rows: Vec<(String, Vec<i64>)>,
    states: Vec<&'static str>,
    totals: Vec<i64>,
    letters: Option<Vec<Letter>>,
    deletions: Vec<Deletion>,
    notice: String,
}

struct Checkpoint {
    size: u64,
    root: String,
    signed: String,
    key: String,
}

struct Key {
    name: String,
    key_id: String,
    verifier_key: String,
    valid_from: String,
    valid_until: String,
    revoked: String,
}

#[derive(Template)]
#[template(path = "console/log.html")]
struct LogPage {
    nav: Nav,
    checkpoints: Vec<Checkpoint>,
    keys: Vec<Key>,
    /// The keys as `chartbridge keys list --json` prints them, prefilled
    /// as the consistency check's trusted keys.
    keys_json: String,
    audits: Vec<Audit>,
}

/// One recorded integrity audit, as the log page lists it.
struct Audit {
    started: String,
    run_by: String,
    checked: u64,
    verified: u64,
    mismatched: u64,
    unchecked: u64,
    /// `Type/id: failed check, …` per resource that did not verify.
    findings: Vec<String>,
}

fn unavailable() -> Response {
    page_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "The store is not available to the console.",
    )
}

/// Reads the dead letters (then puts them back); `None` without a broker.
async fn dead_letters(state: &ConsoleState) -> Option<Vec<Letter>> {
    let (config, sealer) = (state.config.as_ref()?, state.sealer.as_ref()?);
    let broker = Broker::connect(&config.broker).await.ok()?;
    let held = Held::take(
        &broker,
        sealer,
        (DLQ_LIMIT, |_: &dlq::DeadLetter| false),
        |_, _| {},
    )
    .await
    .ok();
    let now = millis(Utc::now());
    let letters = held.as_ref().map(|h| {
        h.letters()
            .map(|d| Letter {
                id: d.id.clone(),
                reason: d.reason.clone(),
                queue: d.queue.clone().unwrap_or_default(),
                age: d.dead_lettered_at.map(|t| age(now, t)).unwrap_or_default(),
                bytes: d.bytes,
            })
            .collect()
    });
    if let Some(h) = held {
        let _ = h.release().await;
    }
    broker.close().await;
    letters
}

fn stuck_before(state: &ConsoleState, now: i64) -> i64 {
    let after = state
        .config
        .as_ref()
        .map(|c| c.deletion.stuck_after)
        .unwrap_or_default();
    now - i64::try_from(after.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Deserialize)]
pub struct Notice {
    done: Option<String>,
    /// The timeline's window in hours (one of [`WINDOWS`]).
    hours: Option<i64>,
}

/// The timeline windows offered, in hours; each drawn as 24 bars.
const WINDOWS: &[i64] = &[1, 6, 24, 168];
const BARS: usize = 24;

pub async fn operations(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<Notice>,
) -> Response {
    let s = match require(&state, &headers, Some(Role::Operator)) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Some(store) = &state.store else {
        return unavailable();
    };
    let now = millis(Utc::now());
    let deletions = match store.retryable_deletions(stuck_before(&state, now)).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "console: cannot list deletions");
            return unavailable();
        }
    };
    let deletions = deletions
        .into_iter()
        .filter(|d| d.state == DeletionState::Failed || d.stuck(stuck_before(&state, now)))
        .map(|d| Deletion {
            id: d.deletion_id,
            source: d.source,
            state: d.state.as_str().to_owned(),
            attempts: d.attempts,
            age: age(now, d.created_at),
        })
        .collect();
    let hours = q.hours.filter(|h| WINDOWS.contains(h)).unwrap_or(24);
    let timeline = match store
        .state_timeline(now, hours * 3_600_000 / BARS as i64, BARS)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "console: cannot count messages");
            return unavailable();
        }
    };
    let states: Vec<&'static str> = chart::STATES.iter().map(|(s, _)| *s).collect();
    let timeline_rows = timeline
        .buckets
        .iter()
        .enumerate()
        .filter(|(_, b)| !b.is_empty())
        .map(|(i, b)| {
            (
                time(timeline.since_ms + timeline.bucket_ms * i as i64),
                states
                    .iter()
                    .map(|s| b.get(*s).copied().unwrap_or(0))
                    .collect(),
            )
        })
        .collect();
    let totals = states
        .iter()
        .map(|s| timeline.totals.get(*s).copied().unwrap_or(0))
        .collect();
    render(&OperationsPage {
        nav: Nav::of(Some(&s)),
        hours,
        windows: WINDOWS,
        timeline_svg: chart::timeline(&timeline),
        totals_svg: chart::totals(&timeline),
        timeline_rows,
        states,
        totals,
        ready: state.health.as_ref().map(|h| h.readiness().ready()),
        letters: dead_letters(&state).await,
        deletions,
        // The query is the visitor's: only the words the console's own
        // redirects use are echoed.
        notice: q
            .done
            .filter(|d| ["replayed", "retried"].contains(&d.as_str()))
            .unwrap_or_default(),
    })
}

#[derive(Deserialize)]
pub struct Action1 {
    #[serde(default)]
    csrf: String,
    id: String,
}

pub async fn replay(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Form(f): Form<Action1>,
) -> Response {
    let s = match require_form(&state, &headers, Role::Operator, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (Some(config), Some(store), Some(sealer)) = (&state.config, &state.store, &state.sealer)
    else {
        return unavailable();
    };
    let Ok(broker) = Broker::connect(&config.broker).await else {
        return page_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The broker is not reachable.",
        );
    };
    let id = f.id.clone();
    let held = match Held::take(
        &broker,
        sealer,
        (DLQ_LIMIT, |d: &dlq::DeadLetter| d.id == id),
        |_, _| {},
    )
    .await
    {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "console: cannot read dead letters");
            broker.close().await;
            return page_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The dead letters could not be read.",
            );
        }
    };
    let result = match held.find(&f.id) {
        Err(_) => Err(page_error(
            StatusCode::NOT_FOUND,
            "No dead letter with this id.",
        )),
        Ok(index) => match audit(
            &state,
            &s.actor,
            Action::Replay,
            format!("dead-letters 1 id={}", f.id),
        )
        .await
        {
            Err(r) => Err(r),
            Ok(()) => {
                let queues = dlq::replay_queues(config);
                let now = millis(Utc::now());
                match dlq::replay(
                    &broker,
                    store,
                    &held,
                    index,
                    (&queues, s.actor.as_str(), sealer),
                    now,
                )
                .await
                {
                    Ok(Replayed::Published { .. }) => Ok("replayed"),
                    Ok(Replayed::AlreadyReplayed { .. }) => Err(page_error(
                        StatusCode::CONFLICT,
                        "Replayed before; not again.",
                    )),
                    Err(e) => {
                        tracing::warn!(error = %e, "console: replay refused");
                        Err(page_error(StatusCode::CONFLICT, "The replay was refused."))
                    }
                }
            }
        },
    };
    let _ = held.release().await;
    broker.close().await;
    match result {
        Ok(done) => Redirect::to(&format!("/console/operations?done={done}")).into_response(),
        Err(r) => r,
    }
}

pub async fn retry_deletion(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Form(f): Form<Action1>,
) -> Response {
    let s = match require_form(&state, &headers, Role::Operator, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Some(store) = &state.store else {
        return unavailable();
    };
    if let Err(r) = audit(
        &state,
        &s.actor,
        Action::DeletionRetry,
        format!("deletion {}", f.id),
    )
    .await
    {
        return r;
    }
    let now = millis(Utc::now());
    match store.retry_deletion(&f.id, stuck_before(&state, now)).await {
        Ok(true) => Redirect::to("/console/operations?done=retried").into_response(),
        Ok(false) => page_error(
            StatusCode::CONFLICT,
            "The deletion settled meanwhile; not retried.",
        ),
        Err(e) => {
            tracing::error!(error = %e, "console: deletion retry failed");
            unavailable()
        }
    }
}

pub async fn log(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    let s = match require(&state, &headers, Some(Role::Compliance)) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Some(store) = &state.store else {
        return unavailable();
    };
    let (Ok(checkpoints), Ok(keys), Ok(audits)) = (
        store.recent_checkpoints(100).await,
        store.signing_keys().await,
        store.recent_audit_samples(30).await,
    ) else {
        return unavailable();
    };
    let keys_json = serde_json::to_string_pretty(&keys).unwrap_or_default();
    render(&LogPage {
        nav: Nav::of(Some(&s)),
        keys_json,
        audits: audits
            .into_iter()
            .map(|a| Audit {
                started: time(a.started_at),
                run_by: a.run_by,
                checked: a.checked,
                verified: a.verified,
                mismatched: a.mismatched,
                unchecked: a.unchecked,
                findings: a
                    .findings
                    .into_iter()
                    .map(|f| format!("{}: {}", f.resource, f.failed.join(", ")))
                    .collect(),
            })
            .collect(),
        checkpoints: checkpoints
            .into_iter()
            .map(|c| Checkpoint {
                size: c.size,
                root: hex::encode(c.root),
                signed: time(c.timestamp_ms),
                key: format!("{}+{}", c.key_name, c.key_id),
            })
            .collect(),
        keys: keys
            .into_iter()
            .map(|k| Key {
                name: k.name,
                key_id: k.key_id,
                verifier_key: k.verifier_key,
                valid_from: time(k.valid_from_ms),
                valid_until: k.valid_until_ms.map(time).unwrap_or_else(|| "open".into()),
                revoked: k.revoked_at_ms.map(time).unwrap_or_else(|| "no".into()),
            })
            .collect(),
    })
}
