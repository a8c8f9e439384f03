//! Typed events: each one logs and counts, in one place
//! ([`InternalEvent::emit`]). Call sites build the event and [`emit`] it;
//! the functions at the end are shorthands for the events the pipeline
//! raises at many places.

use metrics::counter;

use super::code;

/// A notable thing that logs and counts.
pub trait InternalEvent {
    fn emit(self);
}

/// Logs and counts `event`.
pub fn emit(event: impl InternalEvent) {
    super::install();
    event.emit();
}

/// How one message ended (`chartbridge_messages_total{state,reason}`):
/// `archived`, `not_relevant` (reason: the rule), `quarantined` (reason
/// code), `redelivered` (reason: the state it already had), or `held` (a
/// split part or transcript text, not yet terminal).
#[derive(Debug, Clone, Copy)]
pub struct MessageTerminal<'a> {
    pub source: &'a str,
    pub state: &'static str,
    pub reason: &'a str,
}

impl InternalEvent for MessageTerminal<'_> {
    fn emit(self) {
        let (source, state, reason) = (self.source, self.state, self.reason);
        if state == "held" {
            tracing::info!(
                source,
                state,
                "message held until its group or window is released"
            );
        } else {
            tracing::info!(source, state, reason, "message terminal");
        }
        counter!("chartbridge_messages_total", "state" => state, "reason" => code(reason))
            .increment(1);
    }
}

/// A payload refused at the boundary and dead-lettered, by reason code.
#[derive(Debug, Clone, Copy)]
pub struct DeadLettered<'a> {
    pub code: &'a str,
}

impl InternalEvent for DeadLettered<'_> {
    fn emit(self) {
        tracing::debug!(reason = self.code, "payload dead-lettered");
        counter!("chartbridge_dead_lettered_total", "reason" => code(self.code)).increment(1);
    }
}

/// Entries without patient content, by kind (`crate::event::SkipKind`).
#[derive(Debug, Clone, Copy)]
pub struct EntriesSkipped<'a> {
    pub source: &'a str,
    pub kind: &'a str,
    pub count: usize,
}

impl InternalEvent for EntriesSkipped<'_> {
    fn emit(self) {
        let (source, kind) = (self.source, self.kind);
        tracing::info!(
            source,
            kind,
            entries = self.count,
            "entries without patient content"
        );
        counter!("chartbridge_skipped_entries_total", "source" => code(source), "kind" => code(kind))
            .increment(self.count as u64);
    }
}

/// A sender's retraction of an archived message, by how it ended
/// (`marked`, `rejected`).
#[derive(Debug, Clone, Copy)]
pub struct SourceRetraction<'a> {
    pub source: &'a str,
    pub state: &'a str,
}

impl InternalEvent for SourceRetraction<'_> {
    fn emit(self) {
        let (source, state) = (self.source, self.state);
        tracing::info!(source, state, "retraction at the source recorded");
        counter!("chartbridge_source_retractions_total", "source" => code(source), "state" => code(state))
            .increment(1);
    }
}

/// A transient failure retried in place, by stage.
#[derive(Debug, Clone, Copy)]
pub struct TransientFailure<'a> {
    pub stage: &'a str,
}

impl InternalEvent for TransientFailure<'_> {
    fn emit(self) {
        tracing::debug!(stage = self.stage, "transient failure; retrying");
        counter!("chartbridge_transient_failures_total", "stage" => code(self.stage)).increment(1);
    }
}

/// A deletion receipt recorded, by status.
#[derive(Debug, Clone, Copy)]
pub struct DeletionReceipt<'a> {
    pub status: &'a str,
}

impl InternalEvent for DeletionReceipt<'_> {
    fn emit(self) {
        tracing::debug!(status = self.status, "deletion receipt recorded");
        counter!("chartbridge_deletion_receipts_total", "status" => code(self.status)).increment(1);
    }
}

/// One execution of a deletion by an adapter: `outcome` is a receipt status.
#[derive(Debug, Clone, Copy)]
pub struct DeletionExecuted<'a> {
    pub source: &'a str,
    pub outcome: &'a str,
    pub reason: &'a str,
}

impl InternalEvent for DeletionExecuted<'_> {
    fn emit(self) {
        let (source, outcome, reason) = (self.source, self.outcome, self.reason);
        tracing::info!(source, outcome, reason, "deletion executed");
        counter!("chartbridge_deletion_executions_total",
            "source" => code(source), "outcome" => code(outcome), "reason" => code(reason))
        .increment(1);
    }
}

/// Events published by a source that reads the messenger itself.
#[derive(Debug, Clone, Copy)]
pub struct SourcePublished<'a> {
    pub source: &'a str,
    pub count: usize,
}

impl InternalEvent for SourcePublished<'_> {
    fn emit(self) {
        if self.count > 0 {
            tracing::debug!(source = self.source, count = self.count, "events published");
            counter!("chartbridge_source_events_total", "source" => code(self.source))
                .increment(self.count as u64);
        }
    }
}

/// Deletion commands the relay published.
#[derive(Debug, Clone, Copy)]
pub struct DeletionsRequested {
    pub count: usize,
}

impl InternalEvent for DeletionsRequested {
    fn emit(self) {
        if self.count > 0 {
            tracing::info!(count = self.count, "deletion commands published");
            counter!("chartbridge_deletions_requested_total").increment(self.count as u64);
        }
    }
}

/// One ADT message answered: event, ACK code and (for AE/AR) the 0357 code.
#[derive(Debug, Clone, Copy)]
pub struct AdtAnswered<'a> {
    pub event: &'a str,
    pub ack: &'a str,
    pub code: &'a str,
}

impl InternalEvent for AdtAnswered<'_> {
    fn emit(self) {
        let (event, ack, error) = (self.event, self.ack, self.code);
        tracing::info!(event, ack, code = error, "ADT message answered");
        counter!("chartbridge_adt_messages_total",
            "event" => code(event), "ack" => code(ack), "code" => code(error))
        .increment(1);
    }
}

/// A message archived linked to its patient only, its encounter unknown.
#[derive(Debug, Clone, Copy)]
pub struct EncounterUnresolved;

impl InternalEvent for EncounterUnresolved {
    fn emit(self) {
        tracing::warn!("encounter not found in the KIS; archived linked to the patient only");
        counter!("chartbridge_encounter_unresolved_total").increment(1);
    }
}

/// A split group released: complete, or archived with the marker.
#[derive(Debug, Clone, Copy)]
pub struct SplitReleased<'a> {
    pub source: &'a str,
    pub complete: bool,
    pub parts: usize,
}

impl InternalEvent for SplitReleased<'_> {
    fn emit(self) {
        let state = if self.complete {
            "complete"
        } else {
            "incomplete"
        };
        tracing::info!(
            source = self.source,
            state,
            parts = self.parts,
            "split group released"
        );
        counter!("chartbridge_split_groups_released_total", "state" => state).increment(1);
    }
}

/// A retention sweep released scheduled deletions.
#[derive(Debug, Clone, Copy)]
pub struct RetentionReleased {
    pub count: u64,
}

impl InternalEvent for RetentionReleased {
    fn emit(self) {
        if self.count > 0 {
            tracing::info!(count = self.count, "retention ended; deletions queued");
            counter!("chartbridge_retention_released_total").increment(self.count);
        }
    }
}

/// A metadata purge ran.
#[derive(Debug, Clone, Copy)]
pub struct MetadataPurged {
    pub archived: u64,
    pub not_relevant: u64,
    pub groups: u64,
}

impl InternalEvent for MetadataPurged {
    fn emit(self) {
        let Self {
            archived,
            not_relevant,
            groups,
        } = self;
        if archived + not_relevant + groups > 0 {
            tracing::info!(archived, not_relevant, groups, "metadata purged");
            counter!("chartbridge_metadata_purged_total")
                .increment(archived + not_relevant + groups);
        }
    }
}

/// The KIS circuit breaker opened (it closing is logged by the breaker).
#[derive(Debug, Clone, Copy)]
pub struct CircuitOpened {
    pub cooldown_ms: u64,
}

impl InternalEvent for CircuitOpened {
    fn emit(self) {
        tracing::warn!(cooldown_ms = self.cooldown_ms, "KIS failing; circuit open");
        counter!("chartbridge_kis_circuit_opened_total").increment(1);
    }
}

/// The worker stopped taking deliveries (`cause`: kis, store, broker) or
/// resumed.
#[derive(Debug, Clone, Copy)]
pub struct ReadinessChanged<'a> {
    pub ready: bool,
    pub cause: &'a str,
}

impl InternalEvent for ReadinessChanged<'_> {
    fn emit(self) {
        if self.ready {
            tracing::info!("ready: taking deliveries again");
        } else {
            tracing::warn!(cause = self.cause, "not ready: taking no new deliveries");
            counter!("chartbridge_not_ready_total", "cause" => code(self.cause)).increment(1);
        }
    }
}

/// A broker session ended and a new one is being connected.
#[derive(Debug, Clone, Copy)]
pub struct BrokerReconnect<'a> {
    pub cause: &'a str,
}

impl InternalEvent for BrokerReconnect<'_> {
    fn emit(self) {
        tracing::warn!(cause = self.cause, "broker session ended; reconnecting");
        counter!("chartbridge_broker_reconnects_total", "cause" => code(self.cause)).increment(1);
    }
}

/// A store write failed for lack of space or an IO error.
#[derive(Debug, Clone, Copy)]
pub struct StorageFailure;

impl InternalEvent for StorageFailure {
    fn emit(self) {
        tracing::warn!("store write failed (disk full or IO error)");
        counter!("chartbridge_storage_failures_total").increment(1);
    }
}

/// A message's state and reason code as [`MessageTerminal`] counts them;
/// `crate::pipeline::Outcome` converts into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminal<'a> {
    pub state: &'static str,
    pub reason: &'a str,
}

/// Shorthand: [`MessageTerminal`] of one message's outcome.
pub fn outcome<'a>(source: &'a str, outcome: impl Into<Terminal<'a>>) {
    let Terminal { state, reason } = outcome.into();
    emit(MessageTerminal {
        source,
        state,
        reason,
    });
}

/// Shorthand: [`EntriesSkipped`].
pub fn skipped(source: &str, kind: &str, count: usize) {
    emit(EntriesSkipped {
        source,
        kind,
        count,
    });
}

/// Shorthand: [`TransientFailure`].
pub fn transient(stage: &str) {
    emit(TransientFailure { stage });
}

/// A deletion command sent without its medium, which another message
/// that has no due deletion yet still uses (`media_uses`).
#[derive(Debug, Clone, Copy)]
pub struct DeletionMediaKept<'a> {
    pub source: &'a str,
}

impl InternalEvent for DeletionMediaKept<'_> {
    fn emit(self) {
        tracing::info!(
            source = self.source,
            "medium kept: another message that uses it has no due deletion yet"
        );
        counter!("chartbridge_deletion_media_kept_total", "source" => code(self.source))
            .increment(1);
    }
}

/// Shorthand: [`DeletionMediaKept`].
pub fn media_kept(source: &str) {
    emit(DeletionMediaKept { source });
}

/// Shorthand: [`SourceRetraction`].
pub fn retraction(source: &str, state: &str) {
    emit(SourceRetraction { source, state });
}

/// Shorthand: [`EncounterUnresolved`].
pub fn encounter_unresolved() {
    emit(EncounterUnresolved);
}
