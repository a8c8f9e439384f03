//! Gauges and histograms: what the worker holds now and how long things
//! take. Store-derived gauges are refreshed when `/metrics` is scraped
//! ([`refresh_store`]); the others are set where the value changes.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use super::code;
use crate::store::{DeletionState, QUARANTINE_AGES, Store, StoreError, StoreGauges};

/// Every counter, with its help text.
pub const COUNTERS: [(&str, &str); 23] = [
    (
        "chartbridge_integrity_audit_resources_total",
        "Archived resources checked by an integrity audit (schedule.integrity_audit, `chartbridge audit`), by outcome (verified, mismatched, unchecked).",
    ),
    (
        "chartbridge_read_back_total",
        "Read-back checks of a stored resource by source (response: the transaction-response's representation, read: a GET).",
    ),
    (
        "chartbridge_kis_batches_total",
        "Batched KIS transactions (kis.batch_max) by outcome (committed, transient, split).",
    ),
    (
        "chartbridge_messages_total",
        "Messages by terminal state (archived, not_relevant, quarantined, redelivered, held) and reason code.",
    ),
    (
        "chartbridge_dead_lettered_total",
        "Payloads refused at the boundary and dead-lettered, by reason code.",
    ),
    (
        "chartbridge_skipped_entries_total",
        "Entries without patient content, by source and kind.",
    ),
    (
        "chartbridge_source_retractions_total",
        "Retractions by the sender of archived messages, by source and state.",
    ),
    (
        "chartbridge_transient_failures_total",
        "Transient failures retried in place, by stage.",
    ),
    (
        "chartbridge_deletion_receipts_total",
        "Deletion receipts recorded, by status.",
    ),
    (
        "chartbridge_deletion_executions_total",
        "Deletions executed by a built-in adapter, by source, outcome and reason.",
    ),
    (
        "chartbridge_source_events_total",
        "Events published by a source that reads the messenger itself.",
    ),
    (
        "chartbridge_deletions_requested_total",
        "Deletion commands published by the relay.",
    ),
    (
        "chartbridge_deletion_media_kept_total",
        "Deletion commands sent without their medium, which another message without a due deletion still uses, by source.",
    ),
    (
        "chartbridge_adt_messages_total",
        "HL7 v2 ADT messages answered, by event, ACK code and table 0357 code.",
    ),
    (
        "chartbridge_encounter_unresolved_total",
        "Messages archived linked to the patient only (encounter not found).",
    ),
    (
        "chartbridge_split_groups_released_total",
        "Split groups released, complete or incomplete.",
    ),
    (
        "chartbridge_retention_released_total",
        "Scheduled deletions released by the retention sweep.",
    ),
    (
        "chartbridge_metadata_purged_total",
        "Rows reduced or removed by the metadata purge.",
    ),
    (
        "chartbridge_kis_circuit_opened_total",
        "Times the KIS circuit breaker opened.",
    ),
    (
        "chartbridge_not_ready_total",
        "Times the worker stopped taking deliveries, by cause.",
    ),
    (
        "chartbridge_broker_reconnects_total",
        "Broker sessions ended and reconnected, by cause.",
    ),
    (
        "chartbridge_storage_failures_total",
        "Store writes that failed for lack of space or an IO error.",
    ),
    (
        "chartbridge_job_runs_total",
        "Singleton jobs run by this worker as leader, by job.",
    ),
];

/// Every gauge, with its help text.
pub const GAUGES: [(&str, &str); 15] = [
    (
        "chartbridge_ready",
        "1 when the worker takes deliveries (broker up, KIS circuit closed, store writable).",
    ),
    (
        "chartbridge_ready_part",
        "1 when the part (broker, kis, store) is up.",
    ),
    (
        "chartbridge_kis_circuit_open",
        "1 while the KIS circuit breaker is open or half-open.",
    ),
    (
        "chartbridge_deliveries_in_flight",
        "Deliveries being handled now, by consumer.",
    ),
    (
        "chartbridge_deletions_stuck",
        "Deletions requested longer ago than deletion.stuck_after without a final receipt.",
    ),
    (
        "chartbridge_outbox_deletions",
        "Deletions in the outbox by state (scheduled, pending, requested, retrying, confirmed, failed).",
    ),
    (
        "chartbridge_quarantine_items",
        "Open quarantine items by reason code and age bucket.",
    ),
    (
        "chartbridge_split_parts_held",
        "Parts of split messages held until their group is released.",
    ),
    (
        "chartbridge_transcript_windows_open",
        "Transcript windows not yet archived (open or closing).",
    ),
    (
        "chartbridge_proof_log_size",
        "Leaves in the RFC 9162 proof log.",
    ),
    (
        "chartbridge_proof_checkpoint_size",
        "Tree size of the latest signed checkpoint.",
    ),
    (
        "chartbridge_proof_checkpoint_age_seconds",
        "Age of the latest signed checkpoint.",
    ),
    (
        "chartbridge_queue_messages",
        "Messages ready in a broker queue, by role (events, dead_letter).",
    ),
    (
        "chartbridge_store_gauges_up",
        "1 when the last refresh of the store gauges succeeded.",
    ),
    (
        "chartbridge_leader",
        "1 while this worker leads the singleton jobs of the role (jobs, checkpoints).",
    ),
];

/// Every histogram (seconds), with its help text.
pub const HISTOGRAMS: [(&str, &str); 4] = [
    (
        "chartbridge_kis_request_duration_seconds",
        "KIS request latency by operation and outcome (success, transient, rejected).",
    ),
    (
        "chartbridge_event_commit_latency_seconds",
        "From the AMQP timestamp of an event's publish to its committed terminal state.",
    ),
    (
        "chartbridge_media_download_duration_seconds",
        "Media downloads by outcome (ok, or the failure's reason code).",
    ),
    (
        "chartbridge_stage_duration_seconds",
        "Time spent in a pipeline stage (resolve, push, readback, store, delivery).",
    ),
];

/// Names and help texts of every metric, for the exposition.
pub(super) fn describe() {
    for (name, help) in COUNTERS {
        describe_counter!(name, help);
    }
    for (name, help) in GAUGES {
        describe_gauge!(name, help);
    }
    for (name, help) in HISTOGRAMS {
        describe_histogram!(name, Unit::Seconds, help);
    }
}

/// Measures one stage from creation until drop
/// (`chartbridge_stage_duration_seconds{stage}`).
#[must_use = "the stage is measured until the value is dropped"]
pub struct Stage {
    stage: &'static str,
    started: Instant,
}

impl Stage {
    pub fn start(stage: &'static str) -> Self {
        super::install();
        Self {
            stage,
            started: Instant::now(),
        }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        histogram!("chartbridge_stage_duration_seconds", "stage" => self.stage)
            .record(self.started.elapsed());
    }
}

/// One KIS request: `operation` (transaction, search, read, create),
/// `outcome` (success, transient, rejected).
pub fn kis_request(operation: &'static str, outcome: &'static str, took: Duration) {
    histogram!("chartbridge_kis_request_duration_seconds", "operation" => operation, "outcome" => outcome)
        .record(took);
}

/// One batched KIS transaction: `committed`, `transient` (every member
/// retries), or `split` (refused; sent again in halves).
pub fn kis_batch(outcome: &'static str) {
    metrics::counter!("chartbridge_kis_batches_total", "outcome" => outcome).increment(1);
}

/// Resources an integrity audit found `outcome` (`verified`, `mismatched`,
/// `unchecked`).
pub fn integrity_audit(outcome: &'static str, n: u64) {
    metrics::counter!("chartbridge_integrity_audit_resources_total", "outcome" => outcome)
        .increment(n);
}

/// One stored resource checked by the read-back, taken from `source`
/// (`response` or `read`).
pub fn read_back_source(source: &'static str) {
    metrics::counter!("chartbridge_read_back_total", "source" => source).increment(1);
}

/// One media download: `outcome` is `ok` or the failure's reason code.
pub fn media_download(outcome: &str, took: Duration) {
    histogram!("chartbridge_media_download_duration_seconds", "outcome" => code(outcome))
        .record(took);
}

/// A delivery's effect committed `latency` after it was published.
pub fn commit_latency(latency: Duration) {
    histogram!("chartbridge_event_commit_latency_seconds").record(latency);
}

/// Deliveries handled now by `consumer` changed by `delta`.
pub fn in_flight(consumer: &'static str, delta: f64) {
    gauge!("chartbridge_deliveries_in_flight", "consumer" => consumer).increment(delta);
}

/// The KIS circuit breaker opened (`true`) or closed.
pub fn circuit(open: bool) {
    gauge!("chartbridge_kis_circuit_open").set(if open { 1.0 } else { 0.0 });
}

/// Readiness and its parts, as `/readyz` reports them.
pub fn readiness(ready: bool, parts: [(&'static str, bool); 3]) {
    gauge!("chartbridge_ready").set(f64::from(u8::from(ready)));
    for (part, up) in parts {
        gauge!("chartbridge_ready_part", "part" => part).set(f64::from(u8::from(up)));
    }
}

/// Deletions without a final receipt past `deletion.stuck_after`; logs
/// when the count changes to a non-zero value.
pub fn deletions_stuck(n: i64) {
    static LAST: AtomicI64 = AtomicI64::new(-1);
    super::install();
    let before = LAST.swap(n, Ordering::Relaxed);
    gauge!("chartbridge_deletions_stuck").set(n as f64);
    if n > 0 && before != n {
        tracing::warn!(
            count = n,
            "deletions without a final receipt past the threshold"
        );
    }
}

/// Messages ready in the queue of `role` (`events`, `dead_letter`).
pub fn queue_messages(role: &'static str, n: u32) {
    gauge!("chartbridge_queue_messages", "queue" => role).set(f64::from(n));
}

/// Sets the gauges read from the store (outbox, quarantine, split parts,
/// transcript windows, proof log and checkpoint) as of `now_ms`.
pub async fn refresh_store(store: &Store, now_ms: i64) -> Result<(), StoreError> {
    super::install();
    let result = store.gauges(now_ms).await;
    gauge!("chartbridge_store_gauges_up").set(f64::from(u8::from(result.is_ok())));
    set_store(&result?, now_ms);
    Ok(())
}

/// Quarantine reasons seen since start: a reason whose items are all gone
/// reports 0 instead of its last value.
static REASONS: LazyLock<Mutex<BTreeSet<String>>> = LazyLock::new(Default::default);

fn set_store(g: &StoreGauges, now_ms: i64) {
    use DeletionState::*;
    for state in [Scheduled, Pending, Requested, Retrying, Confirmed, Failed] {
        let n = g.outbox.get(state.as_str()).copied().unwrap_or(0);
        gauge!("chartbridge_outbox_deletions", "state" => state.as_str()).set(n as f64);
    }
    let mut reasons = REASONS.lock().unwrap_or_else(|p| p.into_inner());
    reasons.extend(g.quarantine.keys().map(|(r, _)| code(r)));
    for reason in reasons.iter() {
        for age in QUARANTINE_AGES {
            let n: i64 = g
                .quarantine
                .iter()
                .filter(|((r, a), _)| *a == age && code(r) == *reason)
                .map(|(_, n)| n)
                .sum();
            gauge!("chartbridge_quarantine_items", "reason" => reason.clone(), "age" => age)
                .set(n as f64);
        }
    }
    gauge!("chartbridge_split_parts_held").set(g.split_parts_held as f64);
    gauge!("chartbridge_transcript_windows_open").set(g.transcript_windows_open as f64);
    gauge!("chartbridge_proof_log_size").set(g.log_size as f64);
    if let Some((size, at_ms)) = g.checkpoint {
        gauge!("chartbridge_proof_checkpoint_size").set(size as f64);
        gauge!("chartbridge_proof_checkpoint_age_seconds")
            .set(((now_ms - at_ms).max(0) as f64) / 1000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The alert rules and the dashboard read only metrics that exist.
    #[test]
    fn rules_and_dashboard_name_exported_metrics() {
        let known: Vec<&str> = COUNTERS
            .iter()
            .chain(&GAUGES)
            .chain(&HISTOGRAMS)
            .map(|(n, _)| *n)
            .collect();
        for file in [
            "deploy/prometheus/chartbridge-rules.yml",
            "deploy/grafana/chartbridge.json",
        ] {
            let text = std::fs::read_to_string(file).unwrap();
            let mut used = 0;
            for (at, _) in text.match_indices("chartbridge_") {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                if base.ends_with("_rules") || base == "chartbridge_" {
                    continue;
                }
                assert!(known.contains(&base), "{file}: unknown metric {name}");
                used += 1;
            }
            assert!(used >= 10, "{file}: {used} metrics");
        }
    }
}
