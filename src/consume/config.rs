//! `[broker]`: the RabbitMQ connection and the names of the topology.

use serde::{Deserialize, Serialize};

use crate::config::secret::Secret;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// AMQP URL; use `amqps://` outside a single host (DSK II.1).
    pub url: Secret,
    /// Quorum queue the messenger gateways publish events to.
    #[serde(default = "d::events_queue")]
    pub events_queue: String,
    /// Exchange that receives dead-lettered events.
    #[serde(default = "d::dead_letter_exchange")]
    pub dead_letter_exchange: String,
    /// Queue bound to the dead-letter exchange, kept for human review.
    #[serde(default = "d::dead_letter_queue")]
    pub dead_letter_queue: String,
    /// Topic exchange deletion commands are published to, routing key = source.
    #[serde(default = "d::deletion_exchange")]
    pub deletion_exchange: String,
    /// Sources whose deletion commands wait in a durable queue
    /// `{deletion_exchange}.{source}` until that messenger's gateway takes them.
    #[serde(default = "d::deletion_sources")]
    pub deletion_sources: Vec<String>,
    /// Queue the gateways publish deletion receipts to.
    #[serde(default = "d::receipts_queue")]
    pub receipts_queue: String,
    /// Unacknowledged deliveries in flight per worker; at least 1.
    #[serde(default = "d::prefetch", deserialize_with = "prefetch")]
    pub prefetch: u16,
    /// Redeliveries after which the broker dead-letters an event itself.
    #[serde(default = "d::delivery_limit")]
    pub delivery_limit: u32,
    /// Largest accepted event in bytes; larger ones are dead-lettered.
    #[serde(default = "d::max_event_bytes")]
    pub max_event_bytes: usize,
    /// Who sets dead-lettering, the delivery limit and overflow of the
    /// events and ADT queues: `declare` (default; queue arguments from this
    /// section) or `policy` (RabbitMQ policies, e.g. from
    /// `deploy/rabbitmq/definitions.json`; the worker declares the queue
    /// type only, so changing a policy never makes its declare fail).
    #[serde(default)]
    pub queue_arguments: QueueArguments,
}

/// See [`BrokerConfig::queue_arguments`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueArguments {
    #[default]
    Declare,
    Policy,
}

fn prefetch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    match u16::deserialize(d)? {
        0 => Err(serde::de::Error::custom(
            "broker.prefetch must be at least 1",
        )),
        n => Ok(n),
    }
}

/// Defaults of `[broker]`.
mod d {
    pub fn events_queue() -> String {
        "chartbridge.events".into()
    }
    pub fn dead_letter_exchange() -> String {
        "chartbridge.dlx".into()
    }
    pub fn dead_letter_queue() -> String {
        "chartbridge.events.dead".into()
    }
    pub fn deletion_exchange() -> String {
        "chartbridge.deletions".into()
    }
    pub fn deletion_sources() -> Vec<String> {
        vec!["whatsapp".into(), "matrix".into()]
    }
    pub fn receipts_queue() -> String {
        "chartbridge.deletion-receipts".into()
    }
    pub fn prefetch() -> u16 {
        64
    }
    pub fn delivery_limit() -> u32 {
        20
    }
    pub fn max_event_bytes() -> usize {
        32 * 1024 * 1024
    }
}
