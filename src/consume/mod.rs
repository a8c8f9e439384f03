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
mod worker;

use lapin::options::{
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

pub use config::{BrokerConfig, QueueArguments};
pub use consumer::SessionEnd;
pub use worker::{consume_events, requeue};

use crate::event::DecodeError;

/// Header naming why a message was dead-lettered (a stable reason code).
pub const REASON_HEADER: &str = "x-chartbridge-reason";
/// Header with the reason's detail (places, never values).
pub const DETAIL_HEADER: &str = "x-chartbridge-detail";

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
}

/// A connection with one channel for publishing (publisher confirms on).
#[derive(Clone)]
pub struct Broker {
    connection: std::sync::Arc<Connection>,
    publisher: Channel,
    config: BrokerConfig,
    /// Signs the events and receipts this process publishes itself.
    intake: Option<std::sync::Arc<crate::auth::Intake>>,
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
            tls_config(&config.tls)?,
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
        };
        broker.declare_topology().await?;
        Ok(broker)
    }

    /// Signs what this broker publishes with `intake.sign_with`.
    pub fn signing(mut self, intake: std::sync::Arc<crate::auth::Intake>) -> Self {
        self.intake = Some(intake);
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

    async fn declare_topology(&self) -> Result<(), BrokerError> {
        let c = &self.config;
        let ch = &self.publisher;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let queue = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            c.dead_letter_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.queue_declare(c.dead_letter_queue.as_str().into(), queue, quorum())
            .await?;
        ch.queue_bind(
            c.dead_letter_queue.as_str().into(),
            c.dead_letter_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        ch.queue_declare(c.events_queue.as_str().into(), queue, self.limited())
            .await?;
        ch.exchange_declare(
            c.deletion_exchange.as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
        for source in &c.deletion_sources {
            let name = format!("{}.{source}", c.deletion_exchange);
            ch.queue_declare(name.as_str().into(), queue, quorum())
                .await?;
            ch.queue_bind(
                name.as_str().into(),
                c.deletion_exchange.as_str().into(),
                source.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        ch.queue_declare(c.receipts_queue.as_str().into(), queue, quorum())
            .await?;
        for source in &c.ingress_sources {
            for target in [&c.events_queue, &c.receipts_queue] {
                let name = format!("{target}.{source}");
                ch.exchange_declare(
                    name.as_str().into(),
                    ExchangeKind::Fanout,
                    durable,
                    FieldTable::default(),
                )
                .await?;
                ch.queue_bind(
                    target.as_str().into(),
                    name.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Arguments of a quorum queue whose rejected and over-delivered
    /// messages go to the dead-letter exchange (at least once) and that
    /// refuses publishes when full: as queue arguments, or only the queue
    /// type when policies set the rest ([`QueueArguments::Policy`]).
    pub fn limited(&self) -> FieldTable {
        let c = &self.config;
        let mut args = quorum();
        if c.queue_arguments == QueueArguments::Policy {
            return args;
        }
        args.insert(
            "x-dead-letter-exchange".into(),
            long(&c.dead_letter_exchange),
        );
        args.insert("x-dead-letter-strategy".into(), long("at-least-once"));
        args.insert("x-overflow".into(), long("reject-publish"));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(c.delivery_limit)),
        );
        args
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

    /// Publishes a refused payload to the dead-letter exchange with its reason.
    pub async fn dead_letter(
        &self,
        payload: &[u8],
        reason: &DecodeError,
        original: &BasicProperties,
    ) -> Result<(), BrokerError> {
        let mut headers = original.headers().clone().unwrap_or_default();
        headers.insert(REASON_HEADER.into(), long(reason.code.as_str()));
        headers.insert(DETAIL_HEADER.into(), long(&reason.detail));
        headers.insert(
            "x-chartbridge-queue".into(),
            long(&self.config.events_queue),
        );
        let mut props = BasicProperties::default().with_headers(headers);
        if let Some(id) = original.message_id() {
            props = props.with_message_id(id.clone());
        }
        if let Some(ct) = original.content_type() {
            props = props.with_content_type(ct.clone());
        }
        self.publish_confirmed(&self.config.dead_letter_exchange, "", payload, props)
            .await
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

    /// Declares (idempotently) and binds the durable deletion queue of
    /// `source`, `{deletion_exchange}.{source}`; returns its name.
    pub async fn declare_deletion_queue(&self, source: &str) -> Result<String, BrokerError> {
        let c = &self.config;
        let name = format!("{}.{source}", c.deletion_exchange);
        let ch = self.connection.create_channel().await?;
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            quorum(),
        )
        .await?;
        ch.queue_bind(
            name.as_str().into(),
            c.deletion_exchange.as_str().into(),
            source.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let _ = ch.close(200, "declared".into()).await;
        Ok(name)
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

/// CA bundle and client identity of `[broker.tls]` for lapin (rustls);
/// used by `amqps://` URLs only.
fn tls_config(tls: &config::BrokerTls) -> Result<lapin::tcp::OwnedTLSConfig, BrokerError> {
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|_| BrokerError::Tls(format!("cannot read broker.tls.{what}")))
    };
    let cert_chain = match &tls.ca_file {
        Some(path) => Some(
            String::from_utf8(read("ca_file", path)?)
                .map_err(|_| BrokerError::Tls("broker.tls.ca_file is not PEM".into()))?,
        ),
        None => None,
    };
    let identity = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => Some(lapin::tcp::OwnedIdentity::PKCS8 {
            pem: read("client_cert_file", cert)?,
            key: read("client_key_file", key)?,
        }),
        _ => None,
    };
    Ok(lapin::tcp::OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

fn quorum() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), long("quorum"));
    t
}
