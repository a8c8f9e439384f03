//! Dead letters: payloads refused at the boundary, published to the
//! dead-letter exchange with the reason in clear headers
//! ([`REASON_HEADER`], [`DETAIL_HEADER`]: codes and places, never values).
//!
//! The worker seals the payload ([`Broker::sealing`]): the body is a
//! sealed blob of the at-rest keyring, bound to the place
//! `dead_letters.payload` of the dead letter's id, which the
//! [`SEALED_HEADER`] carries. Of the original properties only the
//! signature headers stay (what the intake policy checks on a replay);
//! the AMQP `message_id` and other headers a gateway set may name the
//! message and are dropped. `chartbridge dead-letter show` opens it.
//! The queue's broker policy expires what nobody reviewed
//! (docs/operations.md, "ChartbridgeDeadLetterQueueNotEmpty").

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};

use super::{
    Broker, BrokerError, DEAD_LETTER_ID_HEADER, DEAD_LETTERED_AT_HEADER, DETAIL_HEADER,
    QUEUE_HEADER, REASON_HEADER, long,
};
use crate::event::DecodeError;
use crate::seal::{Place, SealError, Sealer};

/// Header naming a sealed dead letter's id (a UUID); absent on a payload
/// in clear (one the broker dead-lettered itself after the delivery limit).
pub const SEALED_HEADER: &str = "x-chartbridge-sealed";

/// Original headers kept on a sealed dead letter: the signatures.
const KEPT_HEADERS: [&str; 2] = [
    crate::auth::SIGNATURE_HEADER,
    crate::event::signature::SIGNATURE_HEADER,
];

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("the dead letter is not sealed (no {SEALED_HEADER} header)")]
    NotSealed,
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// Where a dead letter's sealed payload is bound: its id.
fn place(id: &str) -> Place<'_> {
    Place::opaque("dead_letters", "payload", id)
}

fn header<'a>(headers: Option<&'a FieldTable>, name: &str) -> Option<&'a str> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        _ => None,
    }
}

/// The payload of a dead letter the worker sealed: its properties and body
/// as the broker delivered them.
pub fn open_dead_letter(
    sealer: &Sealer,
    properties: &BasicProperties,
    body: &[u8],
) -> Result<Vec<u8>, DeadLetterError> {
    let id =
        header(properties.headers().as_ref(), SEALED_HEADER).ok_or(DeadLetterError::NotSealed)?;
    Ok(sealer.open(&place(id), body)?)
}

impl Broker {
    /// Publishes a refused payload of the events queue to the dead-letter
    /// exchange with its reason; see [`Broker::dead_letter_from`].
    pub async fn dead_letter(
        &self,
        payload: &[u8],
        reason: &DecodeError,
        original: &BasicProperties,
    ) -> Result<(), BrokerError> {
        let queue = self.config.events_queue.clone();
        self.dead_letter_from(&queue, payload, reason, original)
            .await
    }

    /// Publishes a refused payload taken from `queue` to the dead-letter
    /// exchange: sealed when this broker seals ([`Broker::sealing`]), as it
    /// came otherwise. Headers: [`REASON_HEADER`], [`DETAIL_HEADER`],
    /// [`QUEUE_HEADER`] (`queue`, where `dlq replay` puts it back),
    /// [`DEAD_LETTERED_AT_HEADER`] (Unix ms), [`DEAD_LETTER_ID_HEADER`]
    /// (random, opaque; also [`SEALED_HEADER`] on a sealed one, whose body
    /// is bound to it) and the delivery's [`crate::correlation::HEADER`];
    /// of the original headers, all on a payload in clear, the signatures
    /// only on a sealed one.
    pub async fn dead_letter_from(
        &self,
        queue: &str,
        payload: &[u8],
        reason: &DecodeError,
        original: &BasicProperties,
    ) -> Result<(), BrokerError> {
        let mut headers = original.headers().clone().unwrap_or_default();
        if self.sealer.is_some() {
            headers = FieldTable::default();
            for name in KEPT_HEADERS {
                if let Some(v) = original
                    .headers()
                    .as_ref()
                    .and_then(|h| h.inner().get(name))
                {
                    headers.insert(name.into(), v.clone());
                }
            }
        }
        headers.insert(REASON_HEADER.into(), long(reason.code.as_str()));
        headers.insert(DETAIL_HEADER.into(), long(&reason.detail));
        headers.insert(QUEUE_HEADER.into(), long(queue));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let now_ms = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
        headers.insert(
            DEAD_LETTERED_AT_HEADER.into(),
            AMQPValue::LongLongInt(now_ms),
        );
        let id = uuid::Uuid::new_v4().simple().to_string();
        headers.insert(DEAD_LETTER_ID_HEADER.into(), long(&id));
        if let Some(correlation) = crate::correlation::current() {
            headers.insert(crate::correlation::HEADER.into(), long(&correlation));
        }
        let Some(sealer) = &self.sealer else {
            let mut props = BasicProperties::default().with_headers(headers);
            if let Some(message_id) = original.message_id() {
                props = props.with_message_id(message_id.clone());
            }
            if let Some(ct) = original.content_type() {
                props = props.with_content_type(ct.clone());
            }
            return self
                .publish_confirmed(&self.config.dead_letter_exchange, "", payload, props)
                .await;
        };
        headers.insert(SEALED_HEADER.into(), long(&id));
        let sealed = sealer.seal_at(&place(&id), payload);
        let props = BasicProperties::default()
            .with_headers(headers)
            .with_content_type("application/octet-stream".into())
            .with_timestamp(now.as_secs());
        self.publish_confirmed(&self.config.dead_letter_exchange, "", &sealed, props)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_dead_letter_opens_with_its_id_only() {
        let sealer = Sealer::from_key([5; 32]);
        let body = sealer.seal_at(&place("id-1"), b"{\"text\":\"Befund\"}");
        let mut headers = FieldTable::default();
        headers.insert(SEALED_HEADER.into(), long("id-1"));
        let props = BasicProperties::default().with_headers(headers);
        assert_eq!(
            open_dead_letter(&sealer, &props, &body).unwrap(),
            b"{\"text\":\"Befund\"}"
        );
        let mut other = FieldTable::default();
        other.insert(SEALED_HEADER.into(), long("id-2"));
        assert!(matches!(
            open_dead_letter(
                &sealer,
                &BasicProperties::default().with_headers(other),
                &body
            ),
            Err(DeadLetterError::Seal(_))
        ));
        assert!(matches!(
            open_dead_letter(&sealer, &BasicProperties::default(), &body),
            Err(DeadLetterError::NotSealed)
        ));
    }
}
