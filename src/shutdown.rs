//! The worker's shutdown signal, after mini-redis's `Shutdown`: one value
//! every long-running task holds, which flips once and never back. A task
//! asks [`Shutdown::is_shutdown`] before starting work, waits on
//! [`Shutdown::recv`] in a `select!`, or sleeps with [`Shutdown::sleep`].
//!
//! It is a `tokio::sync::watch` receiver underneath: a dropped [`Trigger`]
//! counts as shutdown, and [`Shutdown::receiver`] hands the plain receiver to
//! code that takes one (`Pipeline::handle`).

use std::time::Duration;

use tokio::sync::watch;

/// Listens for shutdown. Cheap to clone; every clone sees the same signal.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// Flips its [`Shutdown`]s. Dropping it flips them too.
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<bool>,
}

impl Trigger {
    /// Signals shutdown to every listener.
    pub fn fire(&self) {
        let _ = self.tx.send(true);
    }
}

impl Shutdown {
    /// A new signal, not yet flipped, and the trigger that flips it.
    pub fn new() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Trigger { tx }, Shutdown { rx })
    }

    /// Whether shutdown was signalled (or the trigger dropped).
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
    }

    /// Waits until shutdown is signalled; returns at once if it was.
    /// Cancellation safe, so it can sit in a `select!` loop.
    pub async fn recv(&mut self) {
        let _ = self.rx.wait_for(|stop| *stop).await;
    }

    /// Sleeps `delay` unless shutdown comes first; `true` when it did.
    pub async fn sleep(&mut self, delay: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => self.is_shutdown(),
            _ = self.recv() => true,
        }
    }

    /// A signal that flips with this one or with the returned trigger,
    /// whichever comes first: a part of the worker (one broker session) that
    /// may stop on its own.
    pub fn child(&self) -> (Trigger, Shutdown) {
        let (trigger, child) = Shutdown::new();
        let mut parent = self.clone();
        let forward = trigger.tx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = parent.recv() => { let _ = forward.send(true); }
                _ = forward.closed() => {}
            }
        });
        (trigger, child)
    }

    /// The underlying receiver, `true` once shutdown was signalled.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }
}

impl From<watch::Receiver<bool>> for Shutdown {
    fn from(rx: watch::Receiver<bool>) -> Self {
        Self { rx }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sleep_ends_at_shutdown_and_a_child_follows_its_parent() {
        let (trigger, mut shutdown) = Shutdown::new();
        assert!(!shutdown.is_shutdown());
        assert!(!shutdown.sleep(Duration::from_secs(1)).await);
        let (own, mut child) = shutdown.child();
        let waiting = tokio::spawn(async move { child.sleep(Duration::from_secs(3600)).await });
        tokio::task::yield_now().await;
        trigger.fire();
        assert!(waiting.await.unwrap(), "the child flipped with its parent");
        assert!(shutdown.is_shutdown());
        shutdown.recv().await;
        drop(own);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_trigger_is_shutdown_and_a_child_stops_alone() {
        let (trigger, shutdown) = Shutdown::new();
        let (own, mut child) = shutdown.child();
        own.fire();
        child.recv().await;
        assert!(!shutdown.is_shutdown(), "the parent runs on");
        drop(trigger);
        assert!(shutdown.is_shutdown());
        assert!(shutdown.clone().sleep(Duration::from_secs(3600)).await);
    }
}
