//! The correlation id of a delivery: opaque and random (16 hex digits, no
//! identifier in it), made when the consumer takes the delivery. It is a
//! field of the delivery's tracing span (so every log line of it carries
//! it), is kept on the quarantine item the delivery leaves, and travels as
//! the [`HEADER`] of the dead letter it becomes — so an operator can
//! follow one delivery from `quarantine list` or `dlq list` to its log
//! lines.
//!
//! The id lives in a tokio task-local for the duration of the delivery's
//! task ([`scope`]); [`current`] reads it where the quarantine row or the
//! dead letter is written.

use std::future::Future;

use rand::RngCore;

/// AMQP header of a dead letter naming the delivery that dead-lettered it.
pub const HEADER: &str = "x-chartbridge-correlation-id";

tokio::task_local! {
    static CURRENT: CorrelationId;
}

/// A delivery's correlation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(String);

impl CorrelationId {
    /// A fresh random id, 16 lowercase hex digits.
    pub fn new() -> Self {
        let mut bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for CorrelationId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs `work` with `id` as the current correlation id.
pub async fn scope<F: Future>(id: CorrelationId, work: F) -> F::Output {
    CURRENT.scope(id, work).await
}

/// The correlation id of the delivery this task handles, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(|id| id.0.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_id_is_current_inside_its_scope_only() {
        assert_eq!(current(), None);
        let id = CorrelationId::new();
        assert_eq!(id.as_str().len(), 16);
        assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        let seen = scope(id.clone(), async { current() }).await;
        assert_eq!(seen.as_deref(), Some(id.as_str()));
        assert_ne!(CorrelationId::new(), id, "random");
        assert_eq!(current(), None);
    }
}
