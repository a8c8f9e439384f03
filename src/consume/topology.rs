//! The topology every worker declares (idempotently), the quorum queue
//! arguments, and the TLS settings of the connection.

use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

use super::config::{self, QueueArguments};
use super::{Broker, BrokerError, long};

impl Broker {
    pub(super) async fn declare_topology(&self) -> Result<(), BrokerError> {
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
}

/// CA bundle and client identity of `[broker.tls]` for lapin (rustls);
/// used by `amqps://` URLs only.
pub(super) fn tls_config(
    tls: &config::BrokerTls,
) -> Result<lapin::tcp::OwnedTLSConfig, BrokerError> {
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

pub(super) fn quorum() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), long("quorum"));
    t
}
