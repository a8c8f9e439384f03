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

impl telemetry::Terminal for Outcome {
    fn state(&self) -> &'static str {
        match self {
            Outcome::Archived { .. } => "archived",
            Outcome::NotRelevant { .. } => "not_relevant",
            Outcome::Quarantined { .. } => "quarantined",
            Outcome::AlreadyTerminal(_) => "redelivered",
            Outcome::Held => "held",
        }
    }

    fn why(&self) -> &str {
        match self {
            Outcome::Archived { .. } | Outcome::Held => "",
            Outcome::NotRelevant { rule } => rule,
            Outcome::Quarantined { reason } => reason,
            Outcome::AlreadyTerminal(s) => s.as_str(),
        }
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
