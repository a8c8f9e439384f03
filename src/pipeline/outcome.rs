//! What a step ends in: a delivery's [`Verdict`], a message's [`Outcome`],
//! and the [`Mode`] a message is processed in.

use crate::event::DecodeError;
use crate::reason::Reason;
use crate::store::MessageState;
use crate::telemetry;

/// What the consumer does with a delivery.
#[derive(Debug)]
pub enum Verdict {
    /// Every message reached a terminal state: ack.
    Done,
    /// The payload is unusable: dead-letter with the reason, then ack.
    DeadLetter(DecodeError),
    /// Shutdown came first: leave unacked for redelivery.
    Abandoned,
    /// Could not make it durable now: hand back to the broker.
    Requeue,
}

/// The terminal state one message reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Archived {
        resource: String,
    },
    NotRelevant {
        rule: String,
    },
    Quarantined {
        reason: String,
    },
    /// A redelivery of a message that already has its terminal state.
    AlreadyTerminal(MessageState),
    /// A part of a split message, held (durably, sealed) until its group is
    /// released (`crate::split`), or a text message held in its transcript
    /// window until the window is archived (`crate::transcript`).
    Held,
}

impl Outcome {
    /// A message quarantined with `reason`.
    pub fn quarantined(reason: Reason) -> Self {
        Self::Quarantined {
            reason: reason.as_str().to_owned(),
        }
    }
}

impl<'a> From<&'a Outcome> for telemetry::Terminal<'a> {
    fn from(outcome: &'a Outcome) -> Self {
        let (state, reason) = match outcome {
            Outcome::Archived { .. } => ("archived", ""),
            Outcome::NotRelevant { rule } => ("not_relevant", rule.as_str()),
            Outcome::Quarantined { reason } => ("quarantined", reason.as_str()),
            Outcome::AlreadyTerminal(s) => ("redelivered", s.as_str()),
            Outcome::Held => ("held", ""),
        };
        Self { state, reason }
    }
}

/// A fresh delivery, or a quarantined message released by an operator
/// (with the references it was resolved to, if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Fresh,
    Release {
        resolved: Option<(String, Option<String>)>,
    },
}
