//! `chartbridge status --json`: the counts `status` prints, as one JSON
//! object for scripts and monitoring (states, reason codes and counts only).

use std::time::Duration;

use chartbridge::store::{Store, millis};
use serde_json::{Value, json};

use crate::out::outln;

/// The status report of `store`; deletions requested longer than
/// `stuck_after` ago without a final receipt count as stuck.
pub async fn report(store: &Store, stuck_after: Duration) -> anyhow::Result<Value> {
    let now = millis(chrono::Utc::now());
    let before = now - stuck_after.as_millis() as i64;
    let (deletions, stuck) = store.deletion_counts(before).await?;
    let split = store.split_counts().await?;
    let checkpoint = store.latest_checkpoint().await?;
    Ok(json!({
        "messages": store.state_counts().await?.iter().map(|c| json!({
            "state": c.state, "reason": c.reason, "count": c.count,
        })).collect::<Vec<_>>(),
        "skipped_entries": store.skipped_counts().await?.iter().map(|(source, kind, n)| json!({
            "source": source, "kind": kind, "count": n,
        })).collect::<Vec<_>>(),
        "deletions": {
            "by_state": deletions.into_iter().map(|(k, v)| (k, json!(v)))
                .collect::<serde_json::Map<_, _>>(),
            "failed": store.failed_deletions().await?.iter().map(|(source, reason, n)| json!({
                "source": source, "reason": reason, "count": n,
            })).collect::<Vec<_>>(),
            "stuck": stuck,
            "stuck_after_seconds": stuck_after.as_secs(),
        },
        "split": {
            "groups_waiting": split.waiting,
            "parts_held": split.held_parts,
            "groups_complete": split.complete,
            "groups_incomplete": split.incomplete,
        },
        "review": {
            "quarantined": store.quarantine_list().await?.len(),
            "conversations_held": store.held_conversations().await?.len(),
            "conflicting_duplicates": store.conflict_list().await?.len(),
        },
        "transcript_messages_held": store.held_transcript_messages().await?,
        "matrix_undecrypted": store.undecrypted_counts().await?.into_iter()
            .map(|(state, n)| (state, json!(n))).collect::<serde_json::Map<_, _>>(),
        "metadata_purged": store.purged_count().await?,
        "jobs": store.last_job_runs().await?,
        "proof_log": {
            "size": store.log_size().await?,
            "checkpoint_size": checkpoint.as_ref().map(|c| c.size),
            "checkpoint_age_seconds": checkpoint.map(|c| (now - c.timestamp_ms).max(0) / 1000),
        },
    }))
}

/// `chartbridge status`: the same counts as text.
pub async fn print(store: &Store, stuck_after: Duration) -> anyhow::Result<()> {
    outln!("messages:");
    for c in store.state_counts().await? {
        outln!("  {:<13} {:<28} {}", c.state, c.reason, c.count);
    }
    outln!("skipped entries (no patient content, by kind):");
    for (source, kind, n) in store.skipped_counts().await? {
        outln!("  {source:<13} {kind:<28} {n}");
    }
    chartbridge::app::print_deletion_status(&mut std::io::stdout(), store, stuck_after).await?;
    let split = store.split_counts().await?;
    outln!("split messages (DSK II.2):");
    outln!(
        "  groups waiting {} (parts held {})",
        split.waiting,
        split.held_parts
    );
    outln!("  groups released complete {}", split.complete);
    outln!(
        "  groups released INCOMPLETE (parts missing; archived parts marked in the KIS) {}",
        split.incomplete
    );
    outln!("held for review (`quarantine list`, `conversation list`):");
    outln!(
        "  quarantined messages {}",
        store.quarantine_list().await?.len()
    );
    outln!(
        "  conversations waiting for a link or dismissal {}",
        store.held_conversations().await?.len()
    );
    outln!(
        "  conflicting duplicates kept sealed ({}) {}",
        chartbridge::reason::Reason::DuplicateIdConflict.as_str(),
        store.conflict_list().await?.len()
    );
    outln!(
        "transcripts (DSK I.6): messages held in open windows {}",
        store.held_transcript_messages().await?
    );
    outln!("matrix encrypted events held by the source (waiting for room keys):");
    for (state, n) in store.undecrypted_counts().await? {
        outln!("  {state:<13} {n}");
    }
    outln!(
        "metadata purged (archived messages reduced to proof data): {}",
        store.purged_count().await?
    );
    outln!("proof log size: {}", store.log_size().await?);
    outln!("singleton jobs (last run, by which worker):");
    let runs = store.last_job_runs().await?;
    if runs.is_empty() {
        outln!("  none yet (each runs at its first cron instant, schedule.*)");
    }
    for r in runs {
        outln!(
            "  {:<17} {}  {}{}",
            r.job,
            crate::ops::time(Some(r.tick)),
            r.worker,
            if r.finished_at.is_none() {
                " (running or interrupted)"
            } else {
                ""
            }
        );
    }
    Ok(())
}
