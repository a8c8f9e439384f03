//! The ADT feed over RabbitMQ: one consumer, one delivery at a time (ADT
//! order matters), each message parsed, applied in one store transaction,
//! answered with an HL7 ACK (to the reply-to queue, else the configured ack
//! queue, with publisher confirms) and only then acked to the broker.
//! Transient failures (database busy, KIS search for a merge) are retried
//! in place; on shutdown the delivery stays unacked for redelivery, and a
//! redelivered message is answered AA again without applying twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use super::config::AdtConfig;
use super::{
    AdtError, AdtEvent, ErrorCode, Notice, ReadRules, answer_code, build_ack_with, build_batch_ack,
    er7, header, parse_adt_with,
};
use crate::consume::consumer::{Spec, consume};
use crate::consume::{Broker, BrokerError};
use crate::push::{Kis, PushError};
use crate::retry::{Backoff, always, retry};
use crate::seal::Sealer;
use crate::shutdown::Shutdown;
use crate::store::{Applied, ApplyError, MergeApplied, MergeRefs, Store, millis};
use crate::telemetry;

/// What one ADT message needs.
pub struct AdtFeed {
    pub store: Store,
    pub sealer: Sealer,
    pub kis: Kis,
    pub config: AdtConfig,
}

/// A failure worth retrying (the message is not answered yet).
#[derive(Debug)]
pub struct Retry(pub &'static str);

/// The answer to one message: the ACK text and its MSA-1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The ACK to send back; empty when the message asked for none
    /// (enhanced acknowledgment mode, MSH-15/MSH-16 `NE`, [`answer_code`]).
    pub ack: String,
    pub code: &'static str,
}

impl AdtFeed {
    /// Parses and applies one payload; the ACK to send back. A payload
    /// holding several messages (a batch, with or without FHS/BHS/BTS/FTS)
    /// has each message applied in order, each in its own transaction, and
    /// is answered with one response batch (BHS, one ACK per message, BTS);
    /// its `code` is the worst MSA-1 (AR over AE over AA). A retry re-runs
    /// the whole payload: messages applied before answer AA again and
    /// apply nothing.
    /// [`Self::handle`], retried with backoff while the store or the KIS is
    /// unavailable; `None` when shutdown came first (the message stays
    /// unanswered, and its sender sends it again).
    pub async fn handle_until_done(
        &self,
        payload: &[u8],
        backoff: (Duration, Duration),
        shutdown: &mut Shutdown,
    ) -> Option<Answer> {
        let transient = always(|Retry(stage): &Retry, _| telemetry::transient(stage));
        let backoff = Backoff::new(backoff.0, backoff.1);
        retry(&transient, backoff, shutdown, || self.handle(payload))
            .await
            .ok()
    }

    pub async fn handle(&self, payload: &[u8]) -> Result<Answer, Retry> {
        let split = er7::split(payload);
        let now = Utc::now();
        // DTM with its offset: without one it means the sender's local
        // time (v2.5 chapter 2.A.22).
        let stamp = now.format("%Y%m%d%H%M%S+0000").to_string();
        if !split.is_batch() {
            let bytes = split
                .messages
                .first()
                .map(|m| m.bytes.as_slice())
                .unwrap_or(payload);
            return self.handle_one(bytes, &stamp).await;
        }
        if let Some(declared) = split.declared_count
            && declared != split.messages.len()
        {
            tracing::warn!(
                declared,
                found = split.messages.len(),
                "ADT batch: BTS-1 count differs from the messages found"
            );
        }
        let mut acks = Vec::with_capacity(split.messages.len());
        let mut worst = "AA";
        for m in &split.messages {
            let a = self.handle_one(&m.bytes, &stamp).await?;
            worst = match (worst, a.code) {
                ("AR", _) | (_, "AR") => "AR",
                ("AE", _) | (_, "AE") => "AE",
                _ => "AA",
            };
            if !a.ack.is_empty() {
                acks.push(a.ack);
            }
        }
        let ack_id = format!("ACK{}", uuid::Uuid::new_v4().simple());
        Ok(Answer {
            ack: build_batch_ack(&acks, &split.batch_control_id, &ack_id, &stamp),
            code: worst,
        })
    }

    /// Parses and applies one message.
    async fn handle_one(&self, bytes: &[u8], stamp: &str) -> Result<Answer, Retry> {
        let now = Utc::now();
        let ack_id = format!("ACK{}", uuid::Uuid::new_v4().simple());
        let (text, decode_error) = match er7::decode(bytes) {
            Ok(t) => (t, None),
            Err((lossy, e)) => (lossy, Some(e)),
        };
        let head = header(&text);
        let answer = |outcome: Result<(), &AdtError>, notices: &[Notice], event: &str| {
            let code = match outcome {
                Ok(()) => "AA",
                Err(e) => e.ack.as_str(),
            };
            telemetry::emit(telemetry::AdtAnswered {
                event,
                ack: code,
                code: outcome
                    .err()
                    .map(|e| e.code.code())
                    .or(notices
                        .iter()
                        .find(|n| n.severity != "I")
                        .map(|n| n.code.code()))
                    .unwrap_or(""),
            });
            let wanted = answer_code(
                &head,
                outcome.err().map_or(super::AckCode::Accept, |e| e.ack),
            );
            Answer {
                // Empty when the sender asked for no answer (enhanced mode).
                ack: match wanted {
                    Some(_) => build_ack_with(&head, outcome, notices, &ack_id, stamp),
                    None => String::new(),
                },
                code,
            }
        };
        if let Some(e) = decode_error {
            tracing::warn!(location = %e.location, code = e.code.code(), "ADT message refused");
            return Ok(answer(Err(&e), &[], "unknown"));
        }
        let rules = ReadRules {
            default_country: &self.config.default_country_code,
            processing_ids: &self.config.processing_ids,
        };
        let adt = match parse_adt_with(&text, &rules) {
            Ok(adt) => adt,
            Err(e) => {
                tracing::warn!(location = %e.location, code = e.code.code(), "ADT message refused");
                return Ok(answer(Err(&e), &[], "unknown"));
            }
        };
        // Searches cached before this message may name what it changes: the
        // merge below and the next messages search again.
        self.forget_searches(&adt);
        let mut merges = Vec::new();
        if adt.event == AdtEvent::A40 {
            for group in adt.groups() {
                merges.push(self.merge_refs(&group).await?);
            }
        }
        if !adt.notices.is_empty() {
            tracing::warn!(
                count = adt.notices.len(),
                "ADT PID-13: telephone number not readable; stored phones kept"
            );
        }
        let mut notices = adt.notices.clone();
        let applied = self
            .store
            .apply_adt_merges(&adt, &self.sealer, &merges, millis(now))
            .await;
        // A message resolved while this one was applied may have cached
        // what it replaced.
        self.forget_searches(&adt);
        match applied {
            Ok(Applied::Patient(_) | Applied::AlreadyApplied) => {
                Ok(answer(Ok(()), &notices, adt.event.as_str()))
            }
            Ok(Applied::SurvivorOnly(_)) => {
                tracing::info!("ADT A40: prior patient unknown; survivor applied");
                notices.insert(
                    0,
                    Notice {
                        code: ErrorCode::UnknownKeyIdentifier,
                        severity: "W",
                        location: "MRG-1".into(),
                        detail: "prior patient unknown; survivor applied".into(),
                    },
                );
                Ok(answer(Ok(()), &notices, adt.event.as_str()))
            }
            Ok(Applied::Merges(done)) => {
                tracing::info!(groups = done.len(), "ADT A40: every patient group applied");
                let per_group = merge_notices(&done);
                notices.splice(0..0, per_group);
                Ok(answer(Ok(()), &notices, adt.event.as_str()))
            }
            Err(ApplyError::Refused(e)) => {
                tracing::warn!(location = %e.location, code = e.code.code(), "ADT message not applicable");
                Ok(answer(Err(&e), &[], adt.event.as_str()))
            }
            Err(ApplyError::Store(e)) if e.is_transient() => Err(Retry("store")),
            Err(ApplyError::Store(e)) => {
                tracing::error!(error = %e, "cannot apply an ADT message");
                let e = AdtError::error(
                    ErrorCode::ApplicationError,
                    "MSH-10",
                    "the identity map could not be updated",
                );
                Ok(answer(Err(&e), &[], adt.event.as_str()))
            }
        }
    }

    /// The KIS references of a merge group's two patients, when both are
    /// known.
    /// Invalidates the KIS search cache for every identifier value `adt`
    /// names: PID-3, MRG-1 and PV1-19, of every patient group.
    fn forget_searches(&self, adt: &super::Adt) {
        let groups = adt.groups();
        let values = groups
            .iter()
            .flat_map(|g| g.identifiers.iter().chain(&g.prior))
            .chain(&adt.visit)
            .map(|cx| cx.value.as_str());
        self.kis.search_cache().invalidate(values);
    }

    async fn merge_refs(&self, group: &super::PatientGroup) -> Result<Option<MergeRefs>, Retry> {
        let prior = self.search(&group.prior).await?;
        let survivor = self.search(&group.survivor_identifiers()).await?;
        Ok(match (prior, survivor) {
            (Some(prior), Some(survivor)) if prior != survivor => {
                Some(MergeRefs { prior, survivor })
            }
            _ => None,
        })
    }

    async fn search(&self, ids: &[super::Cx]) -> Result<Option<String>, Retry> {
        for cx in ids {
            let Some(system) = self.config.patient_system_of(&cx.authority) else {
                continue;
            };
            match self
                .kis
                .search_identifier("Patient", system, &cx.value)
                .await
            {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => {}
                Err(e) if e.is_transient() => return Err(Retry("kis")),
                // Several matches: no safe re-pointing of links.
                Err(PushError::Incomplete(_)) => return Ok(None),
                Err(_) => return Ok(None),
            }
        }
        Ok(None)
    }
}

/// One ERR per patient group of an A40 with several groups: severity W
/// (0357 204) at `MRG(n)-1` when the prior patient was unknown, else
/// severity I (0357 0) at `PID(n)` saying the prior patient was merged.
fn merge_notices(done: &[MergeApplied]) -> Vec<Notice> {
    done.iter()
        .enumerate()
        .map(|(i, g)| {
            let n = i + 1;
            if g.prior_unknown {
                Notice {
                    code: ErrorCode::UnknownKeyIdentifier,
                    severity: "W",
                    location: format!("{}-1", super::occurrence("MRG", n)),
                    detail: format!("group {n}: prior patient unknown; survivor applied"),
                }
            } else {
                Notice {
                    code: ErrorCode::Accepted,
                    severity: "I",
                    location: super::occurrence("PID", n),
                    detail: format!("group {n}: prior patient merged into the survivor"),
                }
            }
        })
        .collect()
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// Declares the ADT queue (quorum, single active consumer, delivery limit,
/// dead-lettering like the events queue) and the ack queue.
pub async fn declare(broker: &Broker, config: &AdtConfig) -> Result<(), BrokerError> {
    let ch = broker.consumer_channel(1).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let mut args = broker.limited();
    // Several workers may consume; only one gets deliveries at a time, so
    // ADT messages are applied in the order the KIS sent them.
    args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    ch.queue_declare(config.queue.as_str().into(), durable, args)
        .await?;
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type".into(), long("quorum"));
    ch.queue_declare(config.ack_queue.as_str().into(), durable, quorum)
        .await?;
    let _ = ch.close(200, "declared".into()).await;
    Ok(())
}

/// Consumes the ADT queue, one delivery at a time in the order the KIS
/// sent them, until `shutdown` flips; a delivery in flight then has `drain`
/// to finish.
pub async fn consume_adt(
    broker: &Broker,
    feed: Arc<AdtFeed>,
    backoff: (Duration, Duration),
    drain: Duration,
    shutdown: Shutdown,
) -> Result<(), BrokerError> {
    declare(broker, &feed.config).await?;
    let spec = Spec {
        queue: &feed.config.queue,
        tag: "chartbridge-adt",
        prefetch: 1,
        concurrency: 1,
        drain,
        gate: None,
        batch_acks: false,
    };
    let handler = |delivery, _| {
        let (broker, feed, shutdown) = (broker.clone(), feed.clone(), shutdown.clone());
        async move {
            if let Err(e) = answer(&broker, &feed, backoff, delivery, shutdown).await {
                tracing::warn!(error = %e, "ADT message left to redelivery");
            }
        }
    };
    consume(broker, spec, shutdown.clone(), handler)
        .await
        .into_result()
}

/// Applies one ADT delivery, publishes its ACK with confirms, then acks.
/// At shutdown the delivery stays unacked.
async fn answer(
    broker: &Broker,
    feed: &AdtFeed,
    backoff: (Duration, Duration),
    delivery: Delivery,
    mut shutdown: Shutdown,
) -> Result<(), BrokerError> {
    if shutdown.is_shutdown() {
        return Ok(());
    }
    let Some(answer) = feed
        .handle_until_done(&delivery.data, backoff, &mut shutdown)
        .await
    else {
        return Ok(());
    };
    // ACKs go to configured queues only: a producer cannot direct them
    // (and the identifiers they echo) anywhere else.
    let to = match delivery.properties.reply_to().as_ref().map(|q| q.as_str()) {
        Some(q) if feed.config.may_reply_to(q) => q.to_owned(),
        Some(_) => {
            tracing::warn!("ADT reply_to not in adt.reply_to_allowed; ACK sent to adt.ack_queue");
            feed.config.ack_queue.clone()
        }
        None => feed.config.ack_queue.clone(),
    };
    let mut props = BasicProperties::default().with_content_type("x-application/hl7-v2+er7".into());
    if let Some(id) = delivery
        .properties
        .correlation_id()
        .clone()
        .or_else(|| delivery.properties.message_id().clone())
    {
        props = props.with_correlation_id(id);
    }
    if answer.ack.is_empty() {
        // The sender asked for no acknowledgment (MSH-15/16 `NE`, or `ER`
        // and it was applied): the change is committed, nothing to send.
        delivery.ack(BasicAckOptions::default()).await?;
        return Ok(());
    }
    props = props.with_type(ShortString::from(answer.code));
    // The change is committed; a redelivery answers AA again.
    let publish_failed = always(|e: &BrokerError, _| {
        tracing::warn!(error = %e, "ACK publish failed; retrying");
    });
    let published = retry(
        &publish_failed,
        Backoff::new(backoff.1, backoff.1),
        &mut shutdown,
        || broker.publish_confirmed("", &to, answer.ack.as_bytes(), props.clone()),
    )
    .await;
    if published.is_ok() {
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}
