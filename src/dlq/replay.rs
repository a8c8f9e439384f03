//! Replaying a dead letter into the queue it came from, exactly once per
//! dead letter: the replay is recorded (`dlq_replays`, state
//! `publishing`) before the publish, marked `published` once the broker
//! confirmed it, and only then is the dead letter acked. A dead letter
//! whose replay was published is refused (and stays until `dlq purge`);
//! one whose replay was interrupted before the confirm is published again
//! — at most one extra copy, which the idempotent store absorbs.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};

use super::{DlqError, Held, payload_of};
use crate::consume::Broker;
use crate::store::{ReplayBegin, Store};

/// Header of a replayed payload naming the dead letter it replays; kept if
/// the replay is dead-lettered again (`dlq list` shows it).
pub const REPLAY_HEADER: &str = "x-chartbridge-replay-of";

/// How a replay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// Published to `queue` (confirmed) and removed from the dead letters.
    Published { queue: String },
    /// Replayed before (at, Unix ms); not published again.
    AlreadyReplayed { at: i64 },
}

/// Headers the dead-lettering added (chartbridge's and the broker's),
/// dropped on replay; the publisher's own (signatures) are kept, so the
/// intake checks run on the replay as on the original.
fn is_dead_letter_header(name: &str) -> bool {
    name.starts_with("x-death")
        || name.starts_with("x-first-death")
        || name.starts_with("x-last-death")
        || name == "x-delivery-count"
        || [
            crate::consume::REASON_HEADER,
            crate::consume::DETAIL_HEADER,
            crate::consume::QUEUE_HEADER,
            crate::consume::DEAD_LETTERED_AT_HEADER,
            crate::consume::DEAD_LETTER_ID_HEADER,
            crate::correlation::HEADER,
            REPLAY_HEADER,
        ]
        .contains(&name)
}

/// Replays the held dead letter at `index` into its queue, if that is one
/// of `queues` (a dead letter that names none goes to the first), as
/// `actor`. Acks it after the confirmed publish.
pub async fn replay(
    broker: &Broker,
    store: &Store,
    held: &Held,
    index: usize,
    (queues, actor, sealer): (&[String], &str, &crate::seal::Sealer),
    now_ms: i64,
) -> Result<Replayed, DlqError> {
    let (letter, delivery) = held.get(index);
    if delivery.data.len() != letter.bytes {
        return Err(DlqError::Refused {
            id: letter.id.clone(),
            why: "its payload was not kept when it was read".into(),
        });
    }
    let queue = match &letter.queue {
        Some(q) if queues.contains(q) => q.clone(),
        Some(_) => {
            return Err(DlqError::Refused {
                id: letter.id.clone(),
                why: "it came from a queue this configuration does not consume".into(),
            });
        }
        None => queues.first().cloned().unwrap_or_default(),
    };
    match store
        .begin_replay(&letter.id, &queue, actor, now_ms)
        .await?
    {
        ReplayBegin::Published { at } => return Ok(Replayed::AlreadyReplayed { at }),
        ReplayBegin::Fresh | ReplayBegin::Unfinished => {}
    }
    let payload = payload_of(delivery, sealer)?;
    let mut headers = FieldTable::default();
    if let Some(original) = delivery.properties.headers() {
        for (k, v) in original.inner() {
            if !is_dead_letter_header(k.as_str()) {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    headers.insert(
        REPLAY_HEADER.into(),
        AMQPValue::LongString(LongString::from(letter.id.as_bytes().to_vec())),
    );
    let now_s = u64::try_from(now_ms / 1000).unwrap_or(0);
    let mut props = BasicProperties::default()
        .with_headers(headers)
        .with_timestamp(now_s);
    if let Some(ct) = delivery.properties.content_type() {
        props = props.with_content_type(ct.clone());
    }
    if let Some(id) = delivery.properties.message_id() {
        props = props.with_message_id(id.clone());
    }
    if let Some(user) = &broker.config().user_id {
        props = props.with_user_id(user.as_str().into());
    }
    broker
        .publish_confirmed("", &queue, &payload, props)
        .await?;
    store.finish_replay(&letter.id, now_ms).await?;
    held.ack(index).await?;
    Ok(Replayed::Published { queue })
}
