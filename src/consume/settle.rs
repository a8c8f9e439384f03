//! Settling deliveries: `basic.ack` and `basic.nack` (AMQP 0-9-1,
//! class `basic`), one frame per delivery or batched per channel.
//!
//! Batched ([`Spec::batch_acks`](super::consumer::Spec)): the consumer
//! registers every delivery it takes, in delivery-tag order; a handler marks
//! its delivery acked or requeued once its effect is durable. One task per
//! channel owns every settling frame of that channel. For the marks that
//! arrived together it sends, in this order:
//!
//! 1. a `basic.nack` (`requeue = true`) per requeued delivery;
//! 2. one `basic.ack` for the longest prefix of the registered tags in
//!    which every delivery is settled — with `multiple = true` when the
//!    prefix holds more than one acked delivery (AMQP 0-9-1 `basic.ack`:
//!    "up to and including" the tag). Its tag is an acked one;
//! 3. a single `basic.ack` (`multiple = false`) for each acked delivery
//!    after the first one still pending.
//!
//! So a `multiple` ack never covers a delivery still being handled or one
//! left unacked for redelivery (a drain that timed out), and a requeue is
//! on the wire before any ack that passes its tag (lapin sends a channel's
//! frames in order). The ledger holds only deliveries taken and not yet
//! settled, so it is bounded by the prefetch. A delivery is marked only
//! after its own state is durable, as with a single ack; what was marked
//! but not yet sent when the process dies is redelivered: the pipeline
//! finds its terminal state and acks it again (no duplicate), and a payload
//! that was dead-lettered is dead-lettered again (a second dead letter of
//! the same payload, as after a crash between the dead-letter publish's
//! confirm and a single ack).
//!
//! Cost: one frame per batch instead of one per delivery, and no round
//! trip through lapin's acker per delivery (docs/benchmarks.md).

use std::collections::BTreeMap;

use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::BrokerError;

/// How a handler settles its delivery: directly through the delivery's
/// acker, or through its channel's settling task.
#[derive(Clone, Debug)]
pub struct Settler(Route);

#[derive(Clone, Debug)]
enum Route {
    Direct,
    Batched(mpsc::UnboundedSender<Mark>),
}

/// What the settling task hears about a delivery tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Taken(u64),
    Acked(u64),
    Requeued(u64),
}

/// One settling frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Ack { tag: u64, multiple: bool },
    Requeue { tag: u64 },
}

impl Settler {
    /// Each delivery settled by its own frame, when the handler settles it.
    pub fn direct() -> Self {
        Self(Route::Direct)
    }

    /// A settler whose frames go out on `channel` from one task, batched as
    /// the module says; the task ends when every clone is dropped, after
    /// sending what was marked.
    pub fn batched(channel: Channel) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self(Route::Batched(tx)), tokio::spawn(run(channel, rx)))
    }

    /// Registers a delivery the consumer took (batched only; before its
    /// handler runs).
    pub(super) fn taken(&self, delivery: &Delivery) {
        self.mark(Mark::Taken(delivery.delivery_tag));
    }

    /// Acknowledges `delivery`. Batched: queued for the channel's next
    /// batch; an error only if the settling task has ended.
    pub async fn ack(&self, delivery: &Delivery) -> Result<(), BrokerError> {
        match &self.0 {
            Route::Direct => delivery
                .ack(BasicAckOptions::default())
                .await
                .map(drop)
                .map_err(Into::into),
            Route::Batched(_) => self.send(Mark::Acked(delivery.delivery_tag)),
        }
    }

    /// Hands `delivery` back to the queue for another attempt
    /// (`basic.nack`, `requeue = true`).
    pub async fn requeue(&self, delivery: &Delivery) -> Result<(), BrokerError> {
        match &self.0 {
            Route::Direct => super::requeue(delivery).await,
            Route::Batched(_) => self.send(Mark::Requeued(delivery.delivery_tag)),
        }
    }

    fn mark(&self, mark: Mark) {
        let _ = self.send(mark);
    }

    fn send(&self, mark: Mark) -> Result<(), BrokerError> {
        match &self.0 {
            Route::Direct => Ok(()),
            Route::Batched(tx) => tx.send(mark).map_err(|_| BrokerError::SettlingEnded),
        }
    }
}

/// Marks per settling batch at most (the rest go in the next).
const BATCH: usize = 1024;

async fn run(channel: Channel, mut marks: mpsc::UnboundedReceiver<Mark>) {
    let mut ledger = Ledger::default();
    let mut batch = Vec::with_capacity(BATCH);
    while marks.recv_many(&mut batch, BATCH).await > 0 {
        let mut frames = Vec::new();
        for mark in batch.drain(..) {
            frames.extend(ledger.mark(mark));
        }
        frames.extend(ledger.acks());
        for frame in frames {
            let sent = match frame {
                Frame::Ack { tag, multiple } => {
                    channel.basic_ack(tag, BasicAckOptions { multiple }).await
                }
                Frame::Requeue { tag } => {
                    channel
                        .basic_nack(
                            tag,
                            BasicNackOptions {
                                requeue: true,
                                multiple: false,
                            },
                        )
                        .await
                }
            };
            if let Err(e) = sent {
                tracing::error!(error = %e, "acknowledgement failed; the broker will redeliver");
            }
        }
    }
}

/// The deliveries of one channel taken and not yet settled on the wire, by
/// delivery tag: a tag absent from it below the highest one is settled
/// (its ack or nack is sent), so an ack with `multiple` past it is harmless.
#[derive(Debug, Default)]
struct Ledger {
    taken: BTreeMap<u64, State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    /// Marked acked, its frame not yet sent.
    Acked,
}

impl Ledger {
    /// Records `mark`; a requeue's frame is due at once.
    fn mark(&mut self, mark: Mark) -> Option<Frame> {
        match mark {
            Mark::Taken(tag) => {
                self.taken.insert(tag, State::Pending);
                None
            }
            Mark::Acked(tag) => {
                self.taken.insert(tag, State::Acked);
                None
            }
            Mark::Requeued(tag) => {
                self.taken.remove(&tag);
                Some(Frame::Requeue { tag })
            }
        }
    }

    /// The ack frames due now, as the module says; forgets what they settle.
    fn acks(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut prefix = Vec::new();
        while let Some(entry) = self.taken.first_entry() {
            if *entry.get() == State::Pending {
                break;
            }
            prefix.push(entry.remove_entry().0);
        }
        if let Some(&tag) = prefix.last() {
            frames.push(Frame::Ack {
                tag,
                multiple: prefix.len() > 1,
            });
        }
        // Past the first pending delivery: each on its own.
        self.taken.retain(|&tag, state| {
            if *state == State::Acked {
                frames.push(Frame::Ack {
                    tag,
                    multiple: false,
                });
            }
            *state == State::Pending
        });
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(tag: u64, multiple: bool) -> Frame {
        Frame::Ack { tag, multiple }
    }

    fn ledger(taken: std::ops::RangeInclusive<u64>) -> Ledger {
        let mut l = Ledger::default();
        for t in taken {
            assert_eq!(l.mark(Mark::Taken(t)), None);
        }
        l
    }

    #[test]
    fn a_settled_prefix_is_one_multiple_ack_at_its_last_acked_tag() {
        let mut l = ledger(1..=5);
        for t in [2, 1, 3] {
            l.mark(Mark::Acked(t));
        }
        assert_eq!(l.acks(), vec![ack(3, true)]);
        assert_eq!(l.acks(), vec![]);
        l.mark(Mark::Acked(4));
        assert_eq!(l.acks(), vec![ack(4, false)]);
    }

    #[test]
    fn acks_after_a_pending_delivery_go_one_by_one_and_never_cover_it() {
        let mut l = ledger(1..=5);
        l.mark(Mark::Acked(1));
        l.mark(Mark::Acked(3));
        l.mark(Mark::Acked(5));
        // 2 and 4 pending: 1 alone, 3 and 5 each on their own.
        assert_eq!(l.acks(), vec![ack(1, false), ack(3, false), ack(5, false)]);
        // Only the pending ones stay in the ledger.
        assert_eq!(l.taken.keys().copied().collect::<Vec<_>>(), [2, 4]);
        // 2 finishes: its ack passes 3 (already acked), not 4.
        l.mark(Mark::Acked(2));
        assert_eq!(l.acks(), vec![ack(2, false)]);
        l.mark(Mark::Acked(4));
        assert_eq!(l.acks(), vec![ack(4, false)]);
        assert!(l.taken.is_empty());
    }

    #[test]
    fn a_requeue_goes_first_and_no_multiple_ack_ends_on_it() {
        let mut l = ledger(1..=4);
        assert_eq!(l.mark(Mark::Acked(1)), None);
        assert_eq!(l.mark(Mark::Requeued(2)), Some(Frame::Requeue { tag: 2 }));
        l.mark(Mark::Acked(3));
        // The prefix 1..=3 is settled; its ack names 3, an acked tag.
        assert_eq!(l.acks(), vec![ack(3, true)]);
        assert_eq!(l.mark(Mark::Requeued(4)), Some(Frame::Requeue { tag: 4 }));
        // Only requeues left: no ack at all.
        assert_eq!(l.acks(), vec![]);
        assert!(l.taken.is_empty());
    }

    #[test]
    fn a_delivery_never_settled_stays_uncovered() {
        // 1 is left for redelivery (drain timeout): nothing ever acks it.
        let mut l = ledger(1..=3);
        l.mark(Mark::Acked(2));
        l.mark(Mark::Acked(3));
        assert_eq!(l.acks(), vec![ack(2, false), ack(3, false)]);
        assert_eq!(l.acks(), vec![]);
        assert_eq!(l.taken.get(&1), Some(&State::Pending));
        // However long it stays pending, the ledger holds only it and the
        // deliveries in flight.
        for t in 4..1000 {
            l.mark(Mark::Taken(t));
            l.mark(Mark::Acked(t));
            assert_eq!(l.acks(), vec![ack(t, false)]);
        }
        assert_eq!(l.taken.len(), 1);
    }
}
