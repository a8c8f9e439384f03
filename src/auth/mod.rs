//! Who may write what: the checks a payload passes before it is decoded.
//!
//! Per source (`[intake.sources.<name>]`, default `required`):
//! - a gateway signature ([`keys`]: HMAC-SHA256 with key ids) over the
//!   exact payload, by a key bound to the source; a WhatsApp webhook may
//!   instead carry Meta's `X-Hub-Signature-256` (`whatsapp.app_secret`);
//! - the AMQP `user_id` in the source's `publishers` allow-list (RabbitMQ
//!   checks it against the connection's user);
//! - a payload that came through a source's ingress exchange
//!   (`{queue}.{source}`, see `broker.ingress_sources`) claims that source.
//!
//! Events and deletion receipts are checked alike; a refusal is a
//! [`DecodeError`] the caller dead-letters (`missing_signature`,
//! `bad_signature`, `unauthorized_publisher`). docs/security.md.

pub mod config;
pub mod keys;

use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};

use crate::config::{Config, Secret};
use crate::event::{self, DecodeError, DecodeErrorCode, Format};
pub use config::{AuthPolicy, IntakeConfig, IntakeKey, SourceIntake};
pub use keys::{KeyError, Keyring, SIGNATURE_HEADER, SignatureError, signature_header};

/// What the checks read of one delivery.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub payload: &'a [u8],
    pub headers: Option<&'a FieldTable>,
    /// The AMQP `user_id` property.
    pub user_id: Option<&'a str>,
    /// The exchange the delivery was published to (`""` for the default).
    pub exchange: &'a str,
}

impl<'a> Envelope<'a> {
    pub fn of(delivery: &'a Delivery) -> Self {
        Self {
            payload: &delivery.data,
            headers: delivery.properties.headers().as_ref(),
            user_id: delivery.properties.user_id().as_ref().map(|u| u.as_str()),
            exchange: delivery.exchange.as_str(),
        }
    }

    fn header(&self, name: &str) -> Option<&'a str> {
        match self.headers?.inner().get(name)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            _ => None,
        }
    }
}

/// The intake policy with its keys loaded.
#[derive(Debug)]
pub struct Intake {
    config: IntakeConfig,
    keys: Keyring,
    app_secret: Option<Secret>,
    events_queue: String,
    receipts_queue: String,
    ingress_sources: Vec<String>,
    max_event_bytes: usize,
}

fn refuse(code: DecodeErrorCode, detail: impl Into<String>) -> DecodeError {
    DecodeError {
        code,
        detail: detail.into(),
    }
}

impl Intake {
    /// Loads `[intake]` and its key files.
    pub fn load(config: &Config) -> Result<Self, KeyError> {
        Ok(Self {
            keys: Keyring::load(&config.intake)?,
            config: config.intake.clone(),
            app_secret: config.whatsapp.app_secret.clone(),
            events_queue: config.broker.events_queue.clone(),
            receipts_queue: config.broker.receipts_queue.clone(),
            ingress_sources: config.broker.ingress_sources.clone(),
            max_event_bytes: config.broker.max_event_bytes,
        })
    }

    /// Checks an events-queue delivery before it is decoded.
    pub fn check_event(&self, envelope: &Envelope<'_>) -> Result<(), DecodeError> {
        let meta = self.check_meta_signature(envelope)?;
        if envelope.payload.len() > self.max_event_bytes {
            return Ok(()); // refused by the decoder as too_large
        }
        let Some((format, source)) = event::claimed_source(envelope.payload) else {
            return Ok(()); // refused by the decoder: no source, no content
        };
        let gateway_signed_by_meta = meta && format == Format::WhatsApp;
        self.check_source(
            &self.events_queue,
            &source,
            envelope,
            gateway_signed_by_meta,
        )
    }

    /// Checks a deletion receipt for a deletion of `source`.
    pub fn check_receipt(&self, source: &str, envelope: &Envelope<'_>) -> Result<(), DecodeError> {
        self.check_source(&self.receipts_queue, source, envelope, false)
            .map_err(|e| refuse(e.code, format!("deletion receipt: {}", e.detail)))
    }

    /// The `x-chartbridge-signature` value for what this process publishes
    /// itself (`intake.sign_with`); `None` when it signs nothing.
    pub fn own_signature(&self, payload: &[u8]) -> Option<String> {
        let kid = self.config.sign_with.as_deref()?;
        self.keys.sign(kid, payload)
    }

    /// `X-Hub-Signature-256` when an app secret is set: a present header
    /// must match; a WhatsApp webhook without it is refused. `Ok(true)`
    /// when a valid one was there.
    fn check_meta_signature(&self, envelope: &Envelope<'_>) -> Result<bool, DecodeError> {
        let Some(secret) = &self.app_secret else {
            return Ok(false);
        };
        match envelope.header(event::signature::SIGNATURE_HEADER) {
            Some(h) => {
                event::signature::verify(secret.expose().as_bytes(), envelope.payload, h)?;
                Ok(true)
            }
            None if event::is_whatsapp_webhook(envelope.payload) => Err(refuse(
                DecodeErrorCode::MissingSignature,
                "WhatsApp webhook without X-Hub-Signature-256 while whatsapp.app_secret is set",
            )),
            None => Ok(false),
        }
    }

    fn check_source(
        &self,
        queue: &str,
        source: &str,
        envelope: &Envelope<'_>,
        signed_by_meta: bool,
    ) -> Result<(), DecodeError> {
        if let Some(via) = envelope
            .exchange
            .strip_prefix(queue)
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|via| self.ingress_sources.iter().any(|s| s == via))
            && via != source
        {
            return Err(refuse(
                DecodeErrorCode::UnauthorizedPublisher,
                "published through another source's ingress exchange",
            ));
        }
        let (policy, publishers) = self.config.policy(source);
        if policy == AuthPolicy::None {
            return Ok(());
        }
        if !publishers.is_empty()
            && !envelope
                .user_id
                .is_some_and(|u| publishers.iter().any(|p| p == u))
        {
            return Err(refuse(
                DecodeErrorCode::UnauthorizedPublisher,
                "AMQP user_id missing or not in intake.sources publishers of the source",
            ));
        }
        if signed_by_meta {
            return Ok(());
        }
        let Some(header) = envelope.header(SIGNATURE_HEADER) else {
            return Err(refuse(
                DecodeErrorCode::MissingSignature,
                "no x-chartbridge-signature while the source's intake policy is required",
            ));
        };
        self.keys
            .verify(header, envelope.payload, source)
            .map_err(|e| {
                refuse(
                    DecodeErrorCode::BadSignature,
                    format!("x-chartbridge-signature: {e}"),
                )
            })
    }
}

#[cfg(test)]
mod tests;
