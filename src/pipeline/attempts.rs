//! Retrying one message (or one entry) in place: what a transient failure
//! is ([`Transient`]), when the attempts of a message are exhausted, and
//! the loop around an attempt ([`crate::retry::retry`]).

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::Pipeline;
use crate::retry::{Backoff, GaveUp, RetryLogic, retry};
use crate::shutdown::Shutdown;
use crate::telemetry;

/// Why a delivery stops before every message is terminal.
pub(super) enum Step {
    Shutdown,
    /// `kis.max_attempts` transient failures while the KIS as a whole
    /// answered: hand the delivery back (the queue's delivery limit bounds it).
    HandBack,
}

/// A failure worth retrying, with the stage it happened in.
#[derive(Debug)]
pub struct Transient {
    pub stage: &'static str,
    pub hint: Option<Duration>,
    /// The store could not write (disk full, IO error): stop consuming.
    pub storage: bool,
}

impl Transient {
    pub(crate) fn at(stage: &'static str) -> Self {
        Self {
            stage,
            hint: None,
            storage: false,
        }
    }

    pub(crate) fn store(e: crate::store::StoreError) -> Self {
        let storage = e.is_storage_failure();
        if storage {
            tracing::error!(error = %e, "store cannot write; not taking deliveries");
        } else if !e.is_transient() {
            tracing::error!(error = %e, "store failure");
        } else {
            tracing::debug!(error = %e, "store busy");
        }
        Self {
            storage,
            ..Self::at("store")
        }
    }
}

impl From<crate::store::StoreError> for Transient {
    fn from(e: crate::store::StoreError) -> Self {
        Self::store(e)
    }
}

/// Retryability of a message's transient failures. A store that cannot
/// write marks the worker not ready. A message (or a retraction) whose
/// attempts fail `kis.max_attempts` times while the KIS circuit is closed,
/// at a stage other than the store, is handed back; entries held at
/// decoding and skipped counts only ever wait for the store.
pub(super) struct MessageRetry<'p> {
    pipeline: &'p Pipeline,
    hand_back: bool,
    counted: AtomicU32,
}

impl<'p> MessageRetry<'p> {
    /// A message or retraction: shutdown checked before the first attempt,
    /// handed back after `kis.max_attempts`.
    pub(super) fn handing_back(pipeline: &'p Pipeline) -> Self {
        Self {
            pipeline,
            hand_back: true,
            counted: AtomicU32::new(0),
        }
    }

    /// A store write that is retried until it succeeds or shutdown.
    pub(super) fn until_stored(pipeline: &'p Pipeline) -> Self {
        Self {
            pipeline,
            hand_back: false,
            counted: AtomicU32::new(0),
        }
    }
}

impl RetryLogic for MessageRetry<'_> {
    type Error = Transient;

    fn is_retriable_error(&self, t: &Transient) -> bool {
        let health = &self.pipeline.health;
        if !self.hand_back {
            health.set_store_ok(!t.storage);
            return true;
        }
        if t.storage {
            health.set_store_ok(false);
        } else if !self.pipeline.kis().breaker().is_open() {
            let counted = self.counted.fetch_add(1, Ordering::Relaxed) + 1;
            if counted >= self.pipeline.max_attempts && t.stage != "store" {
                tracing::warn!(stage = t.stage, "attempts exhausted; delivery handed back");
                return false;
            }
        }
        true
    }

    fn retry_after(&self, t: &Transient) -> Option<Duration> {
        t.hint
    }

    fn on_retry(&self, t: &Transient, attempts: u32, delay: Duration) {
        telemetry::transient(t.stage);
        if self.hand_back {
            tracing::warn!(
                stage = t.stage,
                attempt = attempts,
                delay_ms = delay.as_millis() as u64,
                "transient failure; retrying"
            );
        }
    }
}

impl Pipeline {
    /// Runs `attempt` under `logic` until it succeeds, its attempts are
    /// exhausted, or shutdown comes; an attempt already running is never
    /// interrupted (the consumer's drain timeout bounds it).
    pub(super) async fn retried<T, F, Fut>(
        &self,
        logic: &MessageRetry<'_>,
        shutdown: watch::Receiver<bool>,
        attempt: F,
    ) -> Result<T, Step>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Transient>>,
    {
        if logic.hand_back && *shutdown.borrow() {
            return Err(Step::Shutdown);
        }
        let mut shutdown = Shutdown::from(shutdown);
        let backoff = Backoff::new(self.backoff.0, self.backoff.1);
        match retry(logic, backoff, &mut shutdown, attempt).await {
            Ok(value) => {
                self.health.set_store_ok(true);
                Ok(value)
            }
            Err(GaveUp::Permanent(_)) => Err(Step::HandBack),
            Err(GaveUp::Shutdown(_)) => Err(Step::Shutdown),
        }
    }
}
