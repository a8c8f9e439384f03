//! The RabbitMQ side: topology, confirmed publishing, dead-lettering.
//!
//! Topology (declared by every worker, idempotently):
//! - events: a quorum queue with a delivery limit, dead-lettering
//!   at-least-once to the dead-letter exchange;
//! - dead-letter exchange (fanout) → dead-letter queue (quorum), for review;
//! - deletion exchange (topic, routing key = source) for deletion commands,
//!   with a durable queue per configured source so commands wait for an
//!   offline gateway;
//! - receipts: a quorum queue the gateways report deletions to;
//! - per `broker.ingress_sources` entry, fanout exchanges
//!   `{events_queue}.{source}` and `{receipts_queue}.{source}` bound to
//!   those queues: the one place a gateway user may write (least privilege,
//!   deploy/rabbitmq/users.json).

pub mod config;
pub mod consumer;
mod dead_letter;
pub mod settle;
mod topology;
mod worker;

use lapin::options::{
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

pub use config::{BrokerConfig, QueueArguments};
pub use consumer::SessionEnd;
pub use dead_letter::{DeadLetterError, SEALED_HEADER, open_dead_letter};
pub use worker::{consume_events, requeue};

/// Header naming why a message was dead-lettered (a stable reason code).
pub const REASON_HEADER: &str = "x-chartbridge-reason";
/// Header with the reason's detail (places, never values).
pub const DETAIL_HEADER: &str = "x-chartbridge-detail";
/// Header naming the queue a dead letter was taken from.
pub const QUEUE_HEADER: &str = "x-chartbridge-queue";
/// Header with the time a payload was dead-lettered (Unix milliseconds).
pub const DEAD_LETTERED_AT_HEADER: &str = "x-chartbridge-dead-lettered-at";
/// Header with a dead letter's own random id (one per dead-lettering).
pub const DEAD_LETTER_ID_HEADER: &str = "x-chartbridge-dead-letter-id";

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker did not confirm the publish")]
    Nacked,
    #[error("no queue is bound for this message (returned as unroutable)")]
    Unroutable,
    #[error("broker TLS: {0}")]
    Tls(String),
    #[error("the channel's settling task has ended; the broker will redeliver")]
    SettlingEnded,
}

/// A connection with one channel for publishing (publisher confirms on).
#[derive(Clone)]
pub struct Broker {
    connection: std::sync::Arc<Connection>,
    publisher: Channel,
    config: BrokerConfig,
    /// Signs the events and receipts this process publishes itself.
    intake: Option<std::sync::Arc<crate::auth::Intake>>,
    /// Seals the payloads this process dead-letters.
    sealer: Option<crate::seal::Sealer>,
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

impl Broker {
    /// Connects, enables confirms, declares the topology.
    pub async fn connect(config: &BrokerConfig) -> Result<Self, BrokerError> {
        let properties =
            ConnectionProperties::default().with_connection_name(LongString::from("chartbridge"));
        let connection = Connection::connect_with_config(
            config.url.expose(),
            properties,
            topology::tls_config(&config.tls)?,
            lapin::runtime::default_runtime()?,
        )
        .await?;
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let broker = Self {
            connection: std::sync::Arc::new(connection),
            publisher,
            config: config.clone(),
            intake: None,
            sealer: None,
        };
        broker.declare_topology().await?;
        Ok(broker)
    }

    /// Signs what this broker publishes with `intake.sign_with`.
    pub fn signing(mut self, intake: std::sync::Arc<crate::auth::Intake>) -> Self {
        self.intake = Some(intake);
        self
    }

    /// Seals what this broker dead-letters with the at-rest keyring
    /// ([`open_dead_letter`] opens it).
    pub fn sealing(mut self, sealer: crate::seal::Sealer) -> Self {
        self.sealer = Some(sealer);
        self
    }

    /// Headers and `user_id` of an event or receipt this process publishes.
    fn own_properties(&self, payload: &[u8]) -> BasicProperties {
        // The publish time (seconds) feeds the publish→committed latency.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_timestamp(now);
        if let Some(sig) = self.intake.as_ref().and_then(|i| i.own_signature(payload)) {
            let mut headers = FieldTable::default();
            headers.insert(crate::auth::SIGNATURE_HEADER.into(), long(&sig));
            props = props.with_headers(headers);
        }
        if let Some(user) = &self.config.user_id {
            props = props.with_user_id(user.as_str().into());
        }
        props
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// A fresh channel with `prefetch` unacknowledged deliveries at most.
    pub async fn consumer_channel(&self, prefetch: u16) -> Result<Channel, BrokerError> {
        let ch = self.connection.create_channel().await?;
        ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        Ok(ch)
    }

    /// Publishes and waits for the broker's confirm; unroutable is an error.
    pub async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let confirm = self
            .publisher
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                payload,
                properties.with_delivery_mode(2),
            )
            .await?
            .await?;
        let acked = confirm.is_ack();
        if confirm.take_message().is_some() {
            return Err(BrokerError::Unroutable);
        }
        if !acked {
            return Err(BrokerError::Nacked);
        }
        Ok(())
    }

    /// Publishes a deletion command to the deletion exchange, routed by source.
    pub async fn publish_deletion(&self, source: &str, command: &[u8]) -> Result<(), BrokerError> {
        self.publish_confirmed(
            &self.config.deletion_exchange,
            source,
            command,
            BasicProperties::default().with_content_type("application/json".into()),
        )
        .await
    }

    /// Publishes several deletion commands `(source, command)` with
    /// overlapping publisher confirms: every command is sent before the
    /// first confirm is awaited. Returns one result per command, in order
    /// (`Unroutable`, `Nacked`, or the channel's error); a command whose
    /// publish failed is not followed by further publishes.
    pub async fn publish_deletions(
        &self,
        commands: &[(&str, &[u8])],
    ) -> Vec<Result<(), BrokerError>> {
        let mut pending = Vec::with_capacity(commands.len());
        for (source, command) in commands {
            let sent = self
                .publisher
                .basic_publish(
                    self.config.deletion_exchange.as_str().into(),
                    (*source).into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    command,
                    BasicProperties::default()
                        .with_content_type("application/json".into())
                        .with_delivery_mode(2),
                )
                .await;
            match sent {
                Ok(confirm) => pending.push(Ok(confirm)),
                Err(e) => {
                    pending.push(Err(BrokerError::from(e)));
                    break;
                }
            }
        }
        let mut results = Vec::with_capacity(commands.len());
        for p in pending {
            results.push(match p {
                Ok(confirm) => match confirm.await {
                    Ok(c) => {
                        let acked = c.is_ack();
                        if c.take_message().is_some() {
                            Err(BrokerError::Unroutable)
                        } else if !acked {
                            Err(BrokerError::Nacked)
                        } else {
                            Ok(())
                        }
                    }
                    Err(e) => Err(e.into()),
                },
                Err(e) => Err(e),
            });
        }
        while results.len() < commands.len() {
            results.push(Err(BrokerError::Nacked));
        }
        results
    }

    /// Publishes a deletion receipt to the receipts queue.
    pub async fn publish_receipt(&self, receipt: &[u8]) -> Result<(), BrokerError> {
        let props = self.own_properties(receipt);
        self.publish_confirmed("", &self.config.receipts_queue, receipt, props)
            .await
    }

    /// Publishes an event to the events queue (used by `chartbridge publish`
    /// and quarantine release).
    /// The AMQP `timestamp` (Unix seconds) is set to now, from which
    /// `chartbridge_event_commit_latency_seconds` is measured.
    pub async fn publish_event(&self, payload: &[u8]) -> Result<(), BrokerError> {
        let props = self.own_properties(payload);
        self.publish_confirmed("", &self.config.events_queue, payload, props)
            .await
    }

    /// Messages ready in the events queue and in the dead-letter queue
    /// (passive declares on a channel of their own).
    pub async fn queue_depths(&self) -> Result<(u32, u32), BrokerError> {
        let ch = self.connection.create_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let events = ch
            .queue_declare(
                self.config.events_queue.as_str().into(),
                passive,
                FieldTable::default(),
            )
            .await?
            .message_count();
        let dead = ch
            .queue_declare(
                self.config.dead_letter_queue.as_str().into(),
                passive,
                FieldTable::default(),
            )
            .await?
            .message_count();
        let _ = ch.close(200, "counted".into()).await;
        Ok((events, dead))
    }

    pub async fn close(&self) {
        let _ = self.publisher.close(200, "bye".into()).await;
        let _ = self.connection.close(200, "bye".into()).await;
    }
}
