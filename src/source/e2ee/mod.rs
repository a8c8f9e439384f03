//! The Matrix source as an end-to-end-encryption device (cargo feature
//! `e2ee`, configuration `[matrix.e2ee]`; docs/matrix.md, "End-to-end
//! encryption"). The same outline as the plain source ([`super::matrix`]):
//! one `/sync` per step from the cursor in the chartbridge store, back-fill
//! of `limited` timelines with `/messages`, publish with confirms, and the
//! cursor saved only after every event of the batch has its recorded state.
//! The difference is the client: `matrix-sdk` with its SQLite crypto store
//! is the bot's device (Olm account, Megolm sessions, cross-signing,
//! server-side key backup), so room events arrive decrypted.
//!
//! Per timeline event:
//! - decrypted (`m.room.message` inside `m.room.encrypted`): published in
//!   the `m.room.message` shape with `room_id`, plus the member
//!   [`E2EE_MARKER`] `{"algorithm", "verification", "hold"?}`; `hold` names
//!   the trust policy when it does not accept the sender's device (the
//!   worker holds it `untrusted_device`);
//! - not decryptable (no room key yet): recorded sealed in the store
//!   (`matrix_undecrypted`, state `awaiting_keys`) before the cursor moves;
//!   every step retries it (the SDK requests the key from the sender's and
//!   the bot's other devices and downloads it from the key backup); after
//!   `undecryptable_after` the still-encrypted event is published with
//!   `{"undecryptable": true}` (the worker quarantines it `undecryptable`,
//!   so `status` shows it) and it is still retried; when it decrypts later
//!   the decrypted event is published with `{"supersedes": "undecryptable"}`
//!   and the worker releases the quarantine entry with it;
//! - plain events: as the plain source does (an [`E2EE_MARKER`] the
//!   homeserver passed on is removed).

use std::path::Path;
use std::time::Duration;

use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::config::{SyncSettings, SyncToken};
use matrix_sdk::deserialized_responses::{
    TimelineEvent, TimelineEventKind, VerificationLevel, VerificationState,
};
use matrix_sdk::encryption::{BackupDownloadStrategy, EncryptionSettings};
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::api::client::filter::FilterDefinition;
use matrix_sdk::ruma::api::client::sync::sync_events::v3::Filter;
use matrix_sdk::ruma::events::room::encrypted::OriginalSyncRoomEncryptedEvent;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId, UserId};
use matrix_sdk::store::RoomLoadSettings;
use matrix_sdk::{Client, SessionMeta, SessionTokens};
use serde_json::{Value, json};

use crate::config::{MatrixConfig, MatrixE2eeConfig, TrustPolicy};
use crate::consume::Broker;
use crate::event::matrix::{E2EE_MARKER, SOURCE};
use crate::seal::Sealer;
use crate::shutdown::Shutdown;
use crate::source::matrix::{SourceError, Step, sync_until_shutdown};
use crate::store::{AWAITING_KEYS, Store, UNDECRYPTABLE, millis};
use crate::telemetry;

mod decrypt;
mod setup;

use setup::*;

/// HKDF `info` of the SDK stores' passphrase.
const STORE_KEY_INFO: &str = "matrix-crypto-store/v1";

/// The E2EE sync loop.
pub struct E2eeSource {
    client: Client,
    config: MatrixE2eeConfig,
    timeout: Duration,
    /// Timeline events per room and sync before the server says `limited`.
    pub timeline_limit: u32,
    user_id: String,
    store: Store,
    broker: Broker,
    sealer: Sealer,
}

fn sdk(place: &'static str) -> impl Fn(matrix_sdk::Error) -> SourceError {
    move |e| match e {
        matrix_sdk::Error::Http(h)
            if h.as_client_api_error().is_some_and(|c| {
                c.status_code.is_client_error() && c.status_code.as_u16() != 429
            }) =>
        {
            SourceError::Refused {
                place,
                status: h
                    .as_client_api_error()
                    .map_or(0, |c| c.status_code.as_u16()),
            }
        }
        _ => SourceError::Transient(place),
    }
}

/// The crypto store's passphrase: HKDF-SHA256 from the operator's key.
fn store_passphrase(sealer: &Sealer) -> String {
    hex::encode(sealer.derive(STORE_KEY_INFO))
}

/// The SDK's name of a verification state, as recorded with the event.
fn verification_name(state: &VerificationState) -> &'static str {
    match state {
        VerificationState::Verified => "verified",
        VerificationState::Unverified(level) => match level {
            VerificationLevel::UnverifiedIdentity => "unverified_identity",
            VerificationLevel::VerificationViolation => "verification_violation",
            VerificationLevel::UnsignedDevice => "unsigned_device",
            VerificationLevel::None(_) => "unknown_device",
            VerificationLevel::MismatchedSender => "mismatched_sender",
        },
    }
}

impl E2eeSource {
    /// The bot's user id.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The SDK client (the bot's device).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn filter(&self) -> Filter {
        let definition: FilterDefinition = serde_json::from_value(json!({
            "presence": {"not_types": ["*"]},
            "room": {
                "include_leave": true,
                // Every timeline event, as the plain source: stickers,
                // polls and types not known yet sent unencrypted carry
                // content too (`crate::source::matrix::publishes`).
                "timeline": {"limit": self.timeline_limit},
                "state": {"lazy_load_members": true},
                "ephemeral": {"not_types": ["*"]},
            }
        }))
        .expect("a valid filter definition");
        Filter::FilterDefinition(definition)
    }

    /// Events between `from` (a timeline's `prev_batch`) back to `to` (the
    /// previous `next_batch`; `None`: the room's start), oldest first,
    /// decrypted where the keys are there. An empty page is not the start
    /// ([`crate::source::matrix::next_page`]).
    async fn backfill(
        &self,
        room: &matrix_sdk::Room,
        from: &str,
        to: Option<&str>,
    ) -> Result<Vec<TimelineEvent>, SourceError> {
        let mut out = Vec::new();
        let mut from = from.to_owned();
        loop {
            let mut options = MessagesOptions::backward().from(from.as_str());
            options.to = to.map(str::to_owned);
            options.limit = 100u32.into();
            let page = room.messages(options).await.map_err(sdk("messages"))?;
            out.extend(page.chunk);
            match crate::source::matrix::next_page(page.end, &from) {
                Some(end) => from = end,
                None => break,
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Whether `event` is the bot joining its room (never encrypted: a
    /// state event).
    fn joins(&self, event: &TimelineEvent) -> bool {
        let TimelineEventKind::PlainText { event: raw } = &event.kind else {
            return false;
        };
        serde_json::from_str::<Value>(raw.json().get())
            .is_ok_and(|json| super::matrix::joins(&json, &self.user_id))
    }

    /// The sender device's state after a fresh `/keys/query` for the
    /// sender: the state recorded at decryption may predate the download
    /// of the sender's cross-signing identity (a device list that changed
    /// before the bot shared a room with the sender is never announced).
    async fn refreshed(
        &self,
        sender: &UserId,
        device: Option<&matrix_sdk::ruma::DeviceId>,
        state: &VerificationState,
    ) -> VerificationState {
        let Some(device) = device else {
            return state.clone();
        };
        let encryption = self.client.encryption();
        if encryption.request_user_identity(sender).await.is_err() {
            return state.clone();
        }
        match encryption.get_device(sender, device).await {
            Ok(Some(d)) if d.is_verified() => VerificationState::Verified,
            Ok(Some(d)) if d.is_cross_signed_by_owner() => {
                VerificationState::Unverified(VerificationLevel::UnverifiedIdentity)
            }
            _ => state.clone(),
        }
    }

    /// One sync: publishes or records every event of the batch, saves
    /// `next_batch`, then retries the recorded undecrypted events.
    pub async fn step(&self, timeout: Duration) -> Result<Step, SourceError> {
        let since = self.store.source_cursor(SOURCE, &self.user_id).await?;
        let settings = SyncSettings::default()
            .filter(self.filter())
            .timeout(timeout)
            .token(match &since {
                Some(s) => SyncToken::Specific(s.clone()),
                None => SyncToken::NoToken,
            });
        let sync = self.client.sync_once(settings).await.map_err(sdk("sync"))?;
        let mut step = Step::default();
        let now = millis(chrono::Utc::now());
        // Left rooms too (`include_leave`): their timeline up to the leave.
        let timelines = sync
            .rooms
            .joined
            .iter()
            .map(|(id, update)| (id, &update.timeline))
            .chain(
                sync.rooms
                    .left
                    .iter()
                    .map(|(id, update)| (id, &update.timeline)),
            );
        for (room_id, timeline) in timelines {
            let mut events = Vec::new();
            let joined_now = timeline.events.iter().any(|e| self.joins(e));
            if (timeline.limited || joined_now)
                && let Some(prev) = &timeline.prev_batch
                && let Some(room) = self.client.get_room(room_id)
            {
                let mut older = self.backfill(&room, prev, since.as_deref()).await?;
                if joined_now || older.iter().any(|e| self.joins(e)) {
                    // Joined since the last sync: back to the room's start
                    // (as the plain source, `super::matrix::joins`).
                    older = self.backfill(&room, prev, None).await?;
                }
                step.backfilled += older.len();
                events.extend(older);
            }
            events.extend(timeline.events.iter().cloned());
            for event in events {
                match &event.kind {
                    TimelineEventKind::Decrypted(_) => {
                        if let Some(json) = self.decrypted(&event, room_id, false).await? {
                            self.publish(&json).await?;
                            step.published += 1;
                        } else {
                            step.skipped += 1;
                        }
                    }
                    TimelineEventKind::UnableToDecrypt { event: raw, .. } => {
                        let Ok(mut json) = serde_json::from_str::<Value>(raw.json().get()) else {
                            step.skipped += 1;
                            continue;
                        };
                        let Some(event_id) = json["event_id"].as_str().map(str::to_owned) else {
                            step.skipped += 1;
                            continue;
                        };
                        if json["unsigned"].get("redacted_because").is_some() {
                            step.skipped += 1;
                            continue;
                        }
                        json["room_id"] = Value::String(room_id.to_string());
                        let sealed = self
                            .sealer
                            .seal(&serde_json::to_vec(&json).expect("an event serialises"));
                        self.store
                            .record_undecrypted(&event_id, &sealed, now)
                            .await?;
                        step.held += 1;
                    }
                    TimelineEventKind::PlainText { event: raw } => {
                        let Ok(mut json) = serde_json::from_str::<Value>(raw.json().get()) else {
                            step.skipped += 1;
                            continue;
                        };
                        if !super::matrix::publishes(&json, &self.user_id) {
                            step.skipped += 1;
                            continue;
                        }
                        if let Some(o) = json.as_object_mut() {
                            o.remove(E2EE_MARKER);
                        }
                        json["room_id"] = Value::String(room_id.to_string());
                        self.publish(&json).await?;
                        step.published += 1;
                    }
                }
            }
        }
        self.store
            .set_source_cursor(SOURCE, &self.user_id, &sync.next_batch, now)
            .await?;
        self.retry_undecrypted(&mut step).await?;
        telemetry::emit(telemetry::SourcePublished {
            source: SOURCE,
            count: step.published,
        });
        if step.skipped > 0 {
            telemetry::skipped(SOURCE, "non_message_event", step.skipped);
        }
        Ok(step)
    }

    async fn publish(&self, json: &Value) -> Result<(), SourceError> {
        let payload = serde_json::to_vec(json).expect("an event serialises");
        self.broker.publish_event(&payload).await?;
        Ok(())
    }

    /// Syncs until `shutdown` flips. Transient failures are retried with
    /// backoff; a refusal (a revoked token) ends the loop with an error.
    pub async fn run(&self, shutdown: Shutdown) -> Result<(), SourceError> {
        tracing::info!("matrix source (end-to-end encryption) started");
        sync_until_shutdown(shutdown, || self.step(self.timeout)).await
    }
}
