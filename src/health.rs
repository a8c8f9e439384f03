//! Liveness and readiness of a running worker.
//!
//! Ready means the worker takes new deliveries: the broker session is up,
//! the KIS circuit is closed and the store accepts writes. When one of them
//! fails the worker stops taking deliveries (the queue buffers them) and
//! says why. Operators read it from `GET /readyz` (`crate::http`): 200 when
//! ready and 503 otherwise, with a JSON body naming the failing parts (no
//! content, no identifiers).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, watch};

use crate::push::Breaker;
use crate::shutdown::Shutdown;

#[derive(Debug)]
struct Inner {
    broker_up: AtomicBool,
    store_ok: AtomicBool,
    kis_open: watch::Receiver<bool>,
    changed: Notify,
}

/// Shared readiness state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Health(Arc<Inner>);

/// Why the worker is not ready (empty when ready).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub broker_up: bool,
    pub kis_reachable: bool,
    pub store_writable: bool,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.broker_up && self.kis_reachable && self.store_writable
    }

    /// Each part by its name in `/readyz` and the metrics.
    pub fn parts(&self) -> [(&'static str, bool); 3] {
        [
            ("broker", self.broker_up),
            ("kis", self.kis_reachable),
            ("store", self.store_writable),
        ]
    }

    /// The first failing part, for logs.
    pub fn cause(&self) -> &'static str {
        if !self.store_writable {
            "store"
        } else if !self.kis_reachable {
            "kis"
        } else if !self.broker_up {
            "broker"
        } else {
            ""
        }
    }
}

impl Health {
    /// Readiness that follows `breaker` for the KIS.
    pub fn new(breaker: &Breaker) -> Self {
        Self(Arc::new(Inner {
            broker_up: AtomicBool::new(false),
            store_ok: AtomicBool::new(true),
            kis_open: breaker.watch(),
            changed: Notify::new(),
        }))
    }

    pub fn readiness(&self) -> Readiness {
        Readiness {
            broker_up: self.0.broker_up.load(Ordering::SeqCst),
            kis_reachable: !*self.0.kis_open.borrow(),
            store_writable: self.0.store_ok.load(Ordering::SeqCst),
        }
    }

    /// Whether new deliveries may be taken: the KIS circuit is closed and
    /// the store accepts writes.
    pub fn accepting(&self) -> bool {
        let r = self.readiness();
        r.kis_reachable && r.store_writable
    }

    pub fn set_broker_up(&self, up: bool) {
        self.0.broker_up.store(up, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }

    /// A write failed for lack of space or an IO error (`false`), or a
    /// write succeeded again (`true`).
    pub fn set_store_ok(&self, ok: bool) {
        let was = self.0.store_ok.swap(ok, Ordering::SeqCst);
        if was != ok {
            if !ok {
                crate::telemetry::emit(crate::telemetry::StorageFailure);
            }
            self.0.changed.notify_waiters();
        }
    }

    /// Waits until [`Self::accepting`] may have changed.
    pub async fn changed(&self) {
        let mut kis = self.0.kis_open.clone();
        tokio::select! {
            _ = self.0.changed.notified() => {}
            _ = kis.changed() => {}
            // A missed notification costs at most this long.
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
}

/// While the KIS circuit is open, sends the probe request itself (a
/// capability read), so the circuit closes when the KIS is back even if no
/// delivery is in flight to try (the worker takes none while it is open).
pub async fn probe_kis_while_open(kis: crate::push::Kis, mut shutdown: Shutdown) {
    let mut open = kis.breaker().watch();
    loop {
        while !*open.borrow_and_update() {
            tokio::select! {
                _ = open.changed() => {}
                _ = shutdown.recv() => return,
            }
        }
        tokio::select! {
            // Waits for the cooldown in the breaker, then goes out as the probe.
            _ = kis.read("metadata") => {}
            _ = shutdown.recv() => return,
        }
    }
}
