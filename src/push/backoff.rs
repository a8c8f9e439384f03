//! Exponential backoff with full jitter, capped.

use std::time::Duration;

use rand::Rng;

/// Delays between attempts: attempt n waits a random time in
/// `[0, min(max, initial * 2^n)]`, or what the server asked for.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempt: 0,
        }
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt; `hint` is a server's Retry-After.
    pub fn next_delay(&mut self, hint: Option<Duration>) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt += 1;
        match hint {
            Some(h) => h.min(self.max),
            None => {
                let ms = ceiling.as_millis() as u64;
                Duration::from_millis(rand::rng().random_range(ms / 2..=ms.max(1)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<_> = (0..8).map(|_| b.next_delay(None)).collect();
        assert!(delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
        assert!(delays[7] >= Duration::from_millis(500));
        assert_eq!(b.attempts(), 8);
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(9))),
            Duration::from_secs(1)
        );
    }
}
