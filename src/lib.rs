//! chartbridge moves treatment-relevant messenger content into the hospital
//! information system (KIS) as FHIR R4 resources, proves its integrity with a
//! hash log, and deletes the messenger copy once the KIS confirmed the archive.
//!
//! The modules follow the data flow:
//!
//! - [`auth`]: who may publish what: gateway signatures, publisher
//!   allow-lists, per source.
//! - [`event`]: the input boundary; canonical events and WhatsApp webhooks
//!   become typed [`event::Message`]s or are rejected with a reason.
//! - [`consume`]: the RabbitMQ side; topology, the consumer, dead-lettering.
//! - [`classify`]: relevance and document type, from rules in `mappings/`.
//! - [`resolve`]: the Patient and Encounter a conversation belongs to.
//! - [`media`]: fetching media by reference and checking declared hashes.
//! - [`map`]: pure mapping into a FHIR R4 transaction Bundle.
//! - [`prove`]: content hashes and the leaf records of the proof log.
//! - [`push`]: the FHIR REST client towards the KIS.
//! - [`delete`]: the transactional outbox and the deletion relay.
//! - [`dlq`]: the dead-letter queue for operators: list, show, replay, purge.
//! - [`source`]: sources that read a messenger themselves (Matrix sync).
//! - [`store`]: state in SQL (SQLite or PostgreSQL).
//! - [`schedule`]: cron-driven jobs such as the retention sweep.
//! - [`audit`]: the hash-chained audit trail of human actions.
//! - [`review`]: conversations whose patient is not known: link or dismiss.
//! - [`pipeline`]: one step that takes a delivery to its terminal state:
//!   decode → decide → deliver (the `Archiver`) → record (the `Recorder`).
//! - [`split`]: parts of split messages held and archived as a group.
//! - [`transcript`]: text held per conversation window, archived as one document.
//! - [`health`]: readiness (broker, KIS circuit, store) and its endpoint.
//! - [`trace`]: one message's path (ledger, quarantine, KIS, leaf,
//!   deletion, receipts) for operators, without identifiers.
//!
//! `config` (the root; each section lives with its owner), `correlation`
//! (the opaque id of a delivery in logs, quarantine and dead letters),
//! `reason` (every
//! quarantine reason code), `transport` (TLS and the plaintext policy of
//! every connection), `seal`
//! (encryption at rest), `shutdown` (the signal every task holds), `retry`
//! (the one retry-until-shutdown loop) and `app` (wiring for the binary,
//! broker sessions) sit beside them.

pub mod app;
pub mod audit;
pub mod auth;
pub mod batching;
pub mod classify;
pub mod config;
pub mod console;
pub mod consume;
pub mod correlation;
pub mod delete;
pub mod dlq;
pub mod event;
pub mod health;
pub mod hl7;
pub mod http;
pub mod intake;
pub mod map;
pub mod media;
pub mod pipeline;
pub mod prove;
pub mod push;
pub mod quarantine;
pub mod reason;
pub mod resolve;
pub mod retry;
pub mod review;
pub mod schedule;
pub mod seal;
pub mod shutdown;
pub mod source;
pub mod split;
pub mod store;
pub mod telemetry;
pub mod trace;
pub mod transcript;
pub mod transport;
