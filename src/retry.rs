//! Retry until success or shutdown, after vector's `RetryLogic`
//! (`src/sinks/util/retries.rs`): the caller decides in one place, a
//! [`RetryLogic`], which errors are worth another attempt and what a
//! failure logs or counts; [`retry`] owns the loop, the capped exponential
//! [`Backoff`] with jitter, and the wait that shutdown ends at once.

use std::marker::PhantomData;
use std::time::Duration;

pub use crate::push::Backoff;
use crate::shutdown::Shutdown;

/// Retryability of one operation's errors.
pub trait RetryLogic {
    type Error;
    /// Whether `error` is worth another attempt; others end [`retry`].
    fn is_retriable_error(&self, error: &Self::Error) -> bool;
    /// A delay the other side asked for (`Retry-After`); `None` uses the backoff.
    fn retry_after(&self, _error: &Self::Error) -> Option<Duration> {
        None
    }
    /// Logs or counts a retriable failure before the wait; `attempts` so far.
    fn on_retry(&self, _error: &Self::Error, _attempts: u32, _delay: Duration) {}
}

/// Retries every error (a publish, a store write: nothing in them is the
/// content's fault); `log` says what a failure logs or counts.
pub struct Always<E, F> {
    log: F,
    error: PhantomData<fn(&E)>,
}

/// [`Always`] with `log(error, attempts so far)`.
pub fn always<E, F: Fn(&E, u32)>(log: F) -> Always<E, F> {
    Always {
        log,
        error: PhantomData,
    }
}

impl<E, F: Fn(&E, u32)> RetryLogic for Always<E, F> {
    type Error = E;
    fn is_retriable_error(&self, _: &E) -> bool {
        true
    }
    fn on_retry(&self, error: &E, attempts: u32, _: Duration) {
        (self.log)(error, attempts)
    }
}

/// Why [`retry`] returned without a value.
#[derive(Debug)]
pub enum GaveUp<E> {
    /// The logic called the error permanent.
    Permanent(E),
    /// Shutdown came while waiting to retry after this error.
    Shutdown(E),
}

/// Runs `attempt` until it succeeds, fails permanently, or shutdown comes
/// during a wait. The first attempt starts at once; an attempt already
/// running is never interrupted (race the whole call with
/// [`Shutdown::recv`] for that).
pub async fn retry<L, T, F, Fut>(
    logic: &L,
    mut backoff: Backoff,
    shutdown: &mut Shutdown,
    mut attempt: F,
) -> Result<T, GaveUp<L::Error>>
where
    L: RetryLogic,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, L::Error>>,
{
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if !logic.is_retriable_error(&e) => return Err(GaveUp::Permanent(e)),
            Err(e) => {
                let delay = backoff.next_delay(logic.retry_after(&e));
                logic.on_retry(&e, backoff.attempts(), delay);
                if shutdown.sleep(delay).await {
                    return Err(GaveUp::Shutdown(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    struct EvenIsTransient;
    impl RetryLogic for EvenIsTransient {
        type Error = u32;
        fn is_retriable_error(&self, e: &u32) -> bool {
            e.is_multiple_of(2)
        }
        fn retry_after(&self, e: &u32) -> Option<Duration> {
            (*e == 4).then_some(Duration::from_secs(7))
        }
    }

    fn backoff() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_until_success_honouring_retry_after() {
        let (_trigger, mut shutdown) = Shutdown::new();
        let calls = Cell::new(0u32);
        let start = tokio::time::Instant::now();
        let got = retry(&EvenIsTransient, backoff(), &mut shutdown, || async {
            calls.set(calls.get() + 1);
            match calls.get() {
                1 => Err(2),
                2 => Err(4),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(got.unwrap(), 3);
        assert!(
            start.elapsed() >= Duration::from_secs(7),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_ends_at_once_and_shutdown_ends_the_wait() {
        let (trigger, mut shutdown) = Shutdown::new();
        let got = retry(&EvenIsTransient, backoff(), &mut shutdown, || async {
            Err::<(), _>(3)
        })
        .await;
        assert!(matches!(got, Err(GaveUp::Permanent(3))));
        let calls = Cell::new(0u32);
        let waiting = retry(&EvenIsTransient, backoff(), &mut shutdown, || async {
            calls.set(calls.get() + 1);
            if calls.get() == 2 {
                trigger.fire();
            }
            Err::<(), _>(2)
        });
        assert!(matches!(waiting.await, Err(GaveUp::Shutdown(2))));
        assert_eq!(calls.get(), 2, "no attempt after shutdown");
    }
}
