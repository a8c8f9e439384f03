//! `[broker]`: the RabbitMQ connection and the names of the topology.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::secret::Secret;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// AMQP URL; `amqps://` outside a single host (DSK II.1): `amqp://` to
    /// a host other than loopback is refused unless `allow_plaintext`. Add
    /// `?auth_mechanism=external` to log in with the client certificate.
    pub url: Secret,
    /// TLS of `amqps://` connections.
    #[serde(default)]
    pub tls: BrokerTls,
    /// Accept `amqp://` (no TLS) to a host other than loopback.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// AMQP `user_id` set on the events and receipts this process
    /// publishes itself; must be the broker user it connects as (RabbitMQ
    /// refuses a publish with another). Needed where
    /// `[intake.sources.<name>] publishers` lists this process.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Sources that get their own ingress exchanges, `{events_queue}.{source}`
    /// and `{receipts_queue}.{source}` (fanout, bound to those queues), so
    /// that broker permissions can let a gateway write its own source only
    /// (deploy/rabbitmq/users.json).
    #[serde(default)]
    pub ingress_sources: Vec<String>,
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

/// `[broker.tls]`: trust and identity for `amqps://`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerTls {
    /// CA bundle (PEM) the broker's certificate must chain to, trusted in
    /// addition to the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) presented to the broker (EXTERNAL login).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// Its private key (PKCS#8 PEM).
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

impl BrokerConfig {
    /// Refuses `amqp://` to another host unless allowed, and a client
    /// certificate without its key.
    pub fn check(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(self.url.expose())
            .map_err(|_| "broker.url is not a URL".to_owned())?;
        match url.scheme() {
            "amqps" => {}
            "amqp" => crate::transport::check_plaintext(
                "broker.url",
                url.host_str().unwrap_or(""),
                self.allow_plaintext,
            )?,
            _ => return Err("broker.url must start with amqp:// or amqps://".into()),
        }
        if self.tls.client_cert_file.is_some() != self.tls.client_key_file.is_some() {
            return Err("broker.tls needs both client_cert_file and client_key_file".into());
        }
        Ok(())
    }
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
