//! The dead-letter queue for operators (`chartbridge dlq list|show|replay|purge`).
//!
//! Nothing leaves the queue unless an action on it is done: dead letters
//! are taken with `basic.get` and held unacknowledged on a channel of
//! their own ([`Held`]); a replayed one is acked only after the broker
//! confirmed its republish, a purged one when the purge is decided, and
//! every other one goes back to the queue (`basic.nack` with requeue) when
//! the command ends — also when it fails or is killed (the broker requeues
//! what a closed channel held).
//!
//! A dead letter is described without content ([`DeadLetter`]): an opaque
//! id, the reason code and detail, the queue it came from, when it was
//! dead-lettered, the delivery's correlation id, and whether it is itself
//! the failure of an earlier replay. Its payload is read only through
//! [`payload_of`].

mod replay;

use std::time::Duration;

use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

pub use replay::{REPLAY_HEADER, Replayed, replay};

/// The queues a dead letter may be replayed into: the events queue first
/// (for dead letters that name none), receipts, ADT, deletion queues.
pub fn replay_queues(config: &crate::config::Config) -> Vec<String> {
    let b = &config.broker;
    let mut queues = vec![b.events_queue.clone(), b.receipts_queue.clone()];
    if config.adt.enabled {
        queues.push(config.adt.queue.clone());
    }
    for source in b
        .deletion_sources
        .iter()
        .map(String::as_str)
        .chain(["matrix", "whatsapp"])
    {
        queues.push(format!("{}.{source}", b.deletion_exchange));
    }
    queues
}

use crate::consume::{
    Broker, BrokerError, DEAD_LETTER_ID_HEADER, DEAD_LETTERED_AT_HEADER, DETAIL_HEADER,
    QUEUE_HEADER, REASON_HEADER,
};
use crate::seal::Sealer;

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("a sealed dead letter does not open: {0}")]
    Seal(crate::seal::SealError),
    #[error("no dead letter with id {0} (among those read)")]
    NotFound(String),
    #[error("dead letter {id}: {why}")]
    Refused { id: String, why: String },
}

/// The payload of a dead letter, as it was refused. The one place that
/// reads a dead letter's body: one the worker sealed is opened with the
/// keyring; one the broker dead-lettered itself (delivery limit, expiry)
/// is in clear.
pub fn payload_of(delivery: &Delivery, sealer: &Sealer) -> Result<Vec<u8>, DlqError> {
    match crate::consume::open_dead_letter(sealer, &delivery.properties, &delivery.data) {
        Ok(payload) => Ok(payload),
        Err(crate::consume::DeadLetterError::NotSealed) => Ok(delivery.data.clone()),
        Err(crate::consume::DeadLetterError::Seal(e)) => Err(DlqError::Seal(e)),
    }
}

/// One dead letter, without content or identifiers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// Opaque id (16 hex digits), stable across listings.
    pub id: String,
    /// The reason code: chartbridge's (`schema_violation`, …) or the
    /// broker's (`delivery_limit`, `rejected`, `expired`, `maxlen`).
    pub reason: String,
    /// The reason's detail (places, never values).
    pub detail: Option<String>,
    /// The queue it was taken from.
    pub queue: Option<String>,
    /// When it was dead-lettered (Unix ms), if known.
    pub dead_lettered_at: Option<i64>,
    /// The correlation id of the delivery that dead-lettered it.
    pub correlation_id: Option<String>,
    /// The id of the dead letter whose replay this is, if it failed again.
    pub replay_of: Option<String>,
    /// Payload size in bytes.
    pub bytes: usize,
}

fn text(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn number(headers: &FieldTable, name: &str) -> Option<i64> {
    match headers.inner().get(name)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::Timestamp(t) => i64::try_from(*t).ok(),
        _ => None,
    }
}

/// The first `x-death` entry the broker adds when it dead-letters itself.
fn first_death(headers: &FieldTable) -> Option<&FieldTable> {
    match headers.inner().get("x-death")? {
        AMQPValue::FieldArray(a) => a.as_slice().iter().find_map(|v| v.as_field_table()),
        _ => None,
    }
}

impl DeadLetter {
    /// Describes `delivery`; `sealer` makes the id of a dead letter the
    /// broker made (no id header) a keyed token, not a content hash.
    pub fn of(delivery: &Delivery, sealer: &Sealer) -> Self {
        let empty = FieldTable::default();
        let h = delivery.properties.headers().as_ref().unwrap_or(&empty);
        let death = first_death(h);
        let reason = text(h, REASON_HEADER)
            .or_else(|| text(h, "x-first-death-reason"))
            .or_else(|| death.and_then(|d| text(d, "reason")))
            .unwrap_or_else(|| "unknown".into());
        let queue = text(h, QUEUE_HEADER)
            .or_else(|| text(h, "x-first-death-queue"))
            .or_else(|| death.and_then(|d| text(d, "queue")));
        let dead_lettered_at = number(h, DEAD_LETTERED_AT_HEADER)
            .or_else(|| death.and_then(|d| number(d, "time")).map(|s| s * 1000))
            .or_else(|| {
                (*delivery.properties.timestamp())
                    .and_then(|t| i64::try_from(t).ok())
                    .map(|s| s * 1000)
            });
        let id = match text(h, DEAD_LETTER_ID_HEADER) {
            Some(own) => sealer.token(&["dead-letter", &own])[..16].to_owned(),
            None => {
                use sha2::Digest;
                let digest = hex::encode(sha2::Sha256::digest(&delivery.data));
                let at = dead_lettered_at.unwrap_or(0).to_string();
                let queue = queue.clone().unwrap_or_default();
                sealer.token(&["dead-letter-broker", &digest, &at, &queue, &reason])[..16]
                    .to_owned()
            }
        };
        Self {
            id,
            detail: text(h, DETAIL_HEADER),
            queue,
            dead_lettered_at,
            correlation_id: text(h, crate::correlation::HEADER),
            replay_of: text(h, REPLAY_HEADER),
            bytes: delivery.data.len(),
            reason,
        }
    }
}

/// Which dead letters an action applies to. Empty parts match everything;
/// a dead letter of unknown age matches no age bound.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Reason codes (any of).
    pub reasons: Vec<String>,
    /// Ids (any of).
    pub ids: Vec<String>,
    /// Dead-lettered at least this long ago.
    pub older_than: Option<Duration>,
    /// Dead-lettered at most this long ago.
    pub newer_than: Option<Duration>,
    /// Taken from this queue.
    pub queue: Option<String>,
}

impl Filter {
    pub fn matches(&self, d: &DeadLetter, now_ms: i64) -> bool {
        let age = d.dead_lettered_at.map(|t| (now_ms - t).max(0));
        let ms = |b: Duration| i64::try_from(b.as_millis()).unwrap_or(i64::MAX);
        (self.reasons.is_empty() || self.reasons.contains(&d.reason))
            && (self.ids.is_empty() || self.ids.contains(&d.id))
            && self
                .queue
                .as_ref()
                .is_none_or(|q| d.queue.as_ref() == Some(q))
            && self
                .older_than
                .is_none_or(|b| age.is_some_and(|a| a >= ms(b)))
            && self
                .newer_than
                .is_none_or(|b| age.is_some_and(|a| a <= ms(b)))
    }

    /// The filter in words, for the audit trail (codes and bounds only).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.reasons.is_empty() {
            parts.push(format!("reason={}", self.reasons.join(",")));
        }
        if !self.ids.is_empty() {
            parts.push(format!("id={}", self.ids.join(",")));
        }
        if let Some(b) = self.older_than {
            parts.push(format!("older-than={}", humantime::format_duration(b)));
        }
        if let Some(b) = self.newer_than {
            parts.push(format!("newer-than={}", humantime::format_duration(b)));
        }
        if let Some(q) = &self.queue {
            parts.push(format!("queue={q}"));
        }
        if parts.is_empty() {
            "all".into()
        } else {
            parts.join(" ")
        }
    }
}

/// Dead letters taken from the queue and held unacknowledged until each
/// is acked ([`Held::ack`]) or all others go back ([`Held::release`]).
pub struct Held {
    channel: Channel,
    letters: Vec<(DeadLetter, Delivery)>,
    /// Which of `letters` were acked.
    acked: std::sync::Mutex<Vec<bool>>,
    /// Messages the queue held when the reading began.
    pub in_queue: u32,
}

impl Held {
    /// Takes up to `limit` dead letters from `broker.dead_letter_queue`,
    /// calling `progress` with the count after each. Only the payloads of
    /// the dead letters `keep` selects stay in memory (the others' bodies
    /// are dropped at once; they stay in the queue).
    pub async fn take(
        broker: &Broker,
        sealer: &Sealer,
        (limit, keep): (usize, impl Fn(&DeadLetter) -> bool),
        progress: impl Fn(u64, u64),
    ) -> Result<Self, DlqError> {
        let queue = broker.config().dead_letter_queue.clone();
        let channel = broker.consumer_channel(1).await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let in_queue = channel
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await?
            .message_count();
        let mut letters = Vec::new();
        while letters.len() < limit {
            let got = channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
                .await?;
            let Some(mut got) = got else { break };
            let letter = DeadLetter::of(&got.delivery, sealer);
            if !keep(&letter) {
                got.delivery.data = Vec::new();
            }
            letters.push((letter, got.delivery));
            progress(letters.len() as u64, u64::from(in_queue));
        }
        Ok(Self {
            channel,
            acked: std::sync::Mutex::new(vec![false; letters.len()]),
            letters,
            in_queue,
        })
    }

    /// The dead letters held, in queue order.
    pub fn letters(&self) -> impl Iterator<Item = &DeadLetter> {
        self.letters.iter().map(|(d, _)| d)
    }

    /// How many were read.
    pub fn len(&self) -> usize {
        self.letters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.letters.is_empty()
    }

    /// The indexes of the held dead letters `filter` matches.
    pub fn matching(&self, filter: &Filter, now_ms: i64) -> Vec<usize> {
        (0..self.letters.len())
            .filter(|&i| filter.matches(&self.letters[i].0, now_ms))
            .collect()
    }

    /// The dead letter at `index` and its delivery.
    pub fn get(&self, index: usize) -> (&DeadLetter, &Delivery) {
        let (d, delivery) = &self.letters[index];
        (d, delivery)
    }

    /// The index of the dead letter with `id`.
    pub fn find(&self, id: &str) -> Result<usize, DlqError> {
        self.letters
            .iter()
            .position(|(d, _)| d.id == id)
            .ok_or_else(|| DlqError::NotFound(id.to_owned()))
    }

    /// Removes the dead letter at `index` from the queue.
    pub async fn ack(&self, index: usize) -> Result<(), DlqError> {
        self.letters[index]
            .1
            .ack(BasicAckOptions::default())
            .await?;
        self.acked.lock().unwrap_or_else(|p| p.into_inner())[index] = true;
        Ok(())
    }

    /// Hands every dead letter not acked back to the queue and closes the
    /// channel.
    pub async fn release(self) -> Result<(), DlqError> {
        let acked = self.acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // `multiple` rejects every unacked delivery up to the last unacked one.
        let last = (0..self.letters.len()).rev().find(|&i| !acked[i]);
        if let Some(last) = last {
            self.channel
                .basic_nack(
                    self.letters[last].1.delivery_tag,
                    BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    },
                )
                .await?;
        }
        self.channel.close(200, "dlq done".into()).await?;
        Ok(())
    }
}
