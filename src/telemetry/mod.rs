//! Logs and counters. Each notable thing is one function that both logs
//! (with `tracing` key/values) and counts. No message content and no direct
//! identifiers are passed here: only sources, states, stages and reason codes.
//! Nothing is sent anywhere (DSK I.9): counters are read by `status` and logs
//! go to standard error.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

use tracing_subscriber::EnvFilter;

use crate::pipeline::Outcome;

static COUNTERS: LazyLock<Mutex<BTreeMap<String, u64>>> = LazyLock::new(Default::default);

fn count(name: String, by: u64) {
    let mut c = COUNTERS.lock().unwrap_or_else(|p| p.into_inner());
    *c.entry(name).or_default() += by;
}

/// A copy of all counters.
pub fn snapshot() -> BTreeMap<String, u64> {
    COUNTERS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Installs the log subscriber: `RUST_LOG` filters, `json` for machines.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

pub fn outcome(source: &str, outcome: &Outcome) {
    let (state, why) = match outcome {
        Outcome::Archived { .. } => ("archived", String::new()),
        Outcome::NotRelevant { rule } => ("not_relevant", rule.clone()),
        Outcome::Quarantined { reason } => ("quarantined", reason.clone()),
        Outcome::AlreadyTerminal(s) => ("redelivered", s.as_str().to_owned()),
        Outcome::Held => ("held", String::new()),
    };
    if matches!(outcome, Outcome::Held) {
        tracing::info!(source, state, "split part held until its group is released");
    } else {
        tracing::info!(source, state, reason = %why, "message terminal");
    }
    count(format!("messages_total{{state={state},reason={why}}}"), 1);
}

pub fn dead_lettered(code: &str) {
    count(format!("dead_lettered_total{{reason={code}}}"), 1);
}

/// Entries without patient content, by kind (`crate::event::SkipKind`).
pub fn skipped(source: &str, kind: &str, n: usize) {
    tracing::info!(source, kind, entries = n, "entries without patient content");
    count(
        format!("skipped_entries_total{{source={source},kind={kind}}}"),
        n as u64,
    );
}

/// A sender's retraction of an archived message, by how it ended
/// (`marked`, `rejected`).
pub fn retraction(source: &str, state: &str) {
    tracing::info!(source, state, "retraction at the source recorded");
    count(
        format!("source_retractions_total{{source={source},state={state}}}"),
        1,
    );
}

pub fn transient(stage: &str) {
    count(format!("transient_failures_total{{stage={stage}}}"), 1);
}

pub fn deletion_receipt(status: &str) {
    count(format!("deletion_receipts_total{{status={status}}}"), 1);
}

/// Gauges: set, not added.
static GAUGES: LazyLock<Mutex<BTreeMap<String, i64>>> = LazyLock::new(Default::default);

/// A copy of all gauges.
pub fn gauges() -> BTreeMap<String, i64> {
    GAUGES.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Deletions requested longer ago than `deletion.stuck_after` without a final receipt.
pub fn deletions_stuck(n: i64) {
    let mut g = GAUGES.lock().unwrap_or_else(|p| p.into_inner());
    let before = g.insert("deletions_stuck".into(), n);
    if n > 0 && before != Some(n) {
        tracing::warn!(
            count = n,
            "deletions without a final receipt past the threshold"
        );
    }
}

/// One execution of a deletion by an adapter: `outcome` is a receipt status.
pub fn deletion_executed(source: &str, outcome: &str, reason: &str) {
    tracing::info!(source, outcome, reason, "deletion executed");
    count(
        format!("deletion_executions_total{{source={source},outcome={outcome},reason={reason}}}"),
        1,
    );
}

/// An event published by a source that reads the messenger itself.
pub fn source_published(source: &str, n: usize) {
    if n > 0 {
        tracing::debug!(source, count = n, "events published");
        count(format!("source_events_total{{source={source}}}"), n as u64);
    }
}

pub fn deletions_requested(n: usize) {
    if n > 0 {
        tracing::info!(count = n, "deletion commands published");
        count("deletions_requested_total".into(), n as u64);
    }
}

/// One ADT message answered: event, ACK code and (for AE/AR) the 0357 code.
pub fn adt(event: &str, ack: &str, code: &str) {
    tracing::info!(event, ack, code, "ADT message answered");
    count(
        format!("adt_messages_total{{event={event},ack={ack},code={code}}}"),
        1,
    );
}

/// A message archived linked to its patient only, its encounter unknown.
pub fn encounter_unresolved() {
    tracing::warn!("encounter not found in the KIS; archived linked to the patient only");
    count("encounter_unresolved_total".into(), 1);
}

/// A split group was released: `complete`, or archived with the marker.
pub fn split_released(source: &str, complete: bool, parts: usize) {
    let state = if complete { "complete" } else { "incomplete" };
    tracing::info!(source, state, parts, "split group released");
    count(format!("split_groups_released_total{{state={state}}}"), 1);
}

/// A retention sweep released scheduled deletions.
pub fn retention_released(n: u64) {
    if n > 0 {
        tracing::info!(count = n, "retention ended; deletions queued");
        count("retention_released_total".into(), n);
    }
}

/// A metadata purge ran.
pub fn metadata_purged(archived: u64, not_relevant: u64, groups: u64) {
    if archived + not_relevant + groups > 0 {
        tracing::info!(archived, not_relevant, groups, "metadata purged");
        count(
            "metadata_purged_total".into(),
            archived + not_relevant + groups,
        );
    }
}

pub fn circuit_opened() {
    count("kis_circuit_opened_total".into(), 1);
}

/// The worker stopped taking deliveries (`why`: kis, store, broker) or resumed.
pub fn readiness(ready: bool, why: &str) {
    if ready {
        tracing::info!("ready: taking deliveries again");
    } else {
        tracing::warn!(cause = why, "not ready: taking no new deliveries");
        count(format!("not_ready_total{{cause={why}}}"), 1);
    }
}

pub fn broker_reconnect(cause: &str) {
    tracing::warn!(cause, "broker session ended; reconnecting");
    count(format!("broker_reconnects_total{{cause={cause}}}"), 1);
}

pub fn storage_failure() {
    count("storage_failures_total".into(), 1);
}
