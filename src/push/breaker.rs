//! A circuit breaker in front of the KIS.
//!
//! Closed: requests pass; `threshold` transient failures in a row open it.
//! Open: no request is sent until the cooldown ends; callers wait (no busy
//! loop) and the worker reports not ready. After the cooldown one request
//! passes as a probe (half-open): success closes the breaker, failure opens
//! it again with a doubled cooldown, capped. A probe that never reports
//! (its caller was cancelled) is replaced after `probe_timeout`.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { since: Instant },
}

#[derive(Debug)]
struct Inner {
    state: State,
    failures: u32,
    cooldown: Duration,
}

/// Settings of a [`Breaker`].
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Transient failures in a row that open the breaker.
    pub threshold: u32,
    /// First open period.
    pub cooldown: Duration,
    /// Longest open period.
    pub cooldown_max: Duration,
    /// How long a half-open probe may take before another is let through.
    pub probe_timeout: Duration,
}

#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
    open_tx: watch::Sender<bool>,
}

/// How often callers look again while a probe is out.
const PROBE_POLL: Duration = Duration::from_millis(100);

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Self {
        let (open_tx, _) = watch::channel(false);
        Self {
            settings,
            inner: Mutex::new(Inner {
                state: State::Closed,
                failures: 0,
                cooldown: settings.cooldown,
            }),
            open_tx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the breaker is open or half-open (the KIS is considered down).
    pub fn is_open(&self) -> bool {
        *self.open_tx.borrow()
    }

    /// Flips to `true` when the breaker opens and back when it closes.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.open_tx.subscribe()
    }

    /// Waits until a request may be sent.
    pub async fn admit(&self) {
        loop {
            let wait = {
                let mut inner = self.lock();
                let now = Instant::now();
                match inner.state {
                    State::Closed => return,
                    State::Open { until } if now >= until => {
                        inner.state = State::HalfOpen { since: now };
                        return;
                    }
                    State::Open { until } => until - now,
                    State::HalfOpen { since } if now - since >= self.settings.probe_timeout => {
                        inner.state = State::HalfOpen { since: now };
                        return;
                    }
                    State::HalfOpen { .. } => PROBE_POLL,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The KIS answered (any status that is not a transient failure).
    pub fn success(&self) {
        let mut inner = self.lock();
        inner.failures = 0;
        if inner.state != State::Closed {
            inner.state = State::Closed;
            inner.cooldown = self.settings.cooldown;
            drop(inner);
            tracing::info!("KIS reachable again; circuit closed");
            crate::telemetry::measure::circuit(false);
            self.open_tx.send_replace(false);
        }
    }

    /// The KIS failed transiently (transport error, timeout, 408, 429, 5xx).
    pub fn failure(&self) {
        let mut inner = self.lock();
        inner.failures = inner.failures.saturating_add(1);
        let now = Instant::now();
        let open_for = match inner.state {
            State::HalfOpen { .. } => {
                let next = (inner.cooldown * 2).min(self.settings.cooldown_max);
                inner.cooldown = next;
                Some(next)
            }
            State::Closed if inner.failures >= self.settings.threshold => Some(inner.cooldown),
            _ => None,
        };
        if let Some(d) = open_for {
            let was_closed = inner.state == State::Closed;
            inner.state = State::Open { until: now + d };
            drop(inner);
            if was_closed {
                crate::telemetry::emit(crate::telemetry::CircuitOpened {
                    cooldown_ms: d.as_millis() as u64,
                });
            }
            crate::telemetry::measure::circuit(true);
            self.open_tx.send_replace(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings {
            threshold: 3,
            cooldown: Duration::from_secs(1),
            cooldown_max: Duration::from_secs(4),
            probe_timeout: Duration::from_secs(10),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_and_waits_out_the_cooldown() {
        let b = breaker();
        b.failure();
        b.failure();
        assert!(!b.is_open());
        b.admit().await;
        b.failure();
        assert!(b.is_open());
        let t0 = Instant::now();
        b.admit().await; // the probe, after the cooldown
        assert!(Instant::now() - t0 >= Duration::from_secs(1));
        assert!(b.is_open(), "half-open still counts as not ready");
        b.success();
        assert!(!b.is_open());
        let t1 = Instant::now();
        b.admit().await;
        assert_eq!(Instant::now(), t1);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_doubles_the_cooldown_up_to_the_cap() {
        let b = breaker();
        for _ in 0..3 {
            b.failure();
        }
        let mut waits = Vec::new();
        for _ in 0..4 {
            let t = Instant::now();
            b.admit().await;
            waits.push((Instant::now() - t).as_secs());
            b.failure();
        }
        assert_eq!(waits, vec![1, 2, 4, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn only_one_probe_at_a_time() {
        let b = std::sync::Arc::new(breaker());
        for _ in 0..3 {
            b.failure();
        }
        b.admit().await; // probe out, never reports
        let other = b.clone();
        let waiter = tokio::spawn(async move {
            other.admit().await;
            Instant::now()
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !waiter.is_finished(),
            "a second request passed a half-open breaker"
        );
        b.success();
        let admitted = waiter.await.unwrap();
        assert!(admitted >= Instant::now() - PROBE_POLL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_probe_is_replaced_after_its_timeout() {
        let b = breaker();
        for _ in 0..3 {
            b.failure();
        }
        b.admit().await;
        let t = Instant::now();
        b.admit().await;
        assert!(Instant::now() - t >= Duration::from_secs(10));
    }
}
