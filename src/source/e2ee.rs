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
use tokio::sync::watch;

use crate::config::{MatrixConfig, MatrixE2eeConfig, TrustPolicy};
use crate::consume::Broker;
use crate::event::matrix::{E2EE_MARKER, SOURCE};
use crate::push::Backoff;
use crate::seal::Sealer;
use crate::source::matrix::{SourceError, Step};
use crate::store::{AWAITING_KEYS, Store, UNDECRYPTABLE, millis};
use crate::telemetry;

/// HKDF `info` of the SDK stores' passphrase.
const STORE_KEY_INFO: &str = "matrix-crypto-store/v1";

/// Event types requested from the homeserver.
const TYPES: &[&str] = &["m.room.message", "m.room.encrypted", "m.room.redaction"];

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
    /// Opens the SDK's stores in `store_dir` (created if absent) with the
    /// derived passphrase, restores the bot's session (the access token's
    /// device, from `whoami`), and sets up key backup and recovery.
    pub async fn connect(
        config: &MatrixConfig,
        store: Store,
        broker: Broker,
        sealer: Sealer,
    ) -> Result<Self, SourceError> {
        let (Some(base), Some(token), Some(e2ee)) =
            (&config.homeserver_url, &config.access_token, &config.e2ee)
        else {
            return Err(SourceError::NotConfigured);
        };
        std::fs::create_dir_all(&e2ee.store_dir).map_err(|_| SourceError::NotConfigured)?;
        let passphrase = store_passphrase(&sealer);
        let client = Client::builder()
            .homeserver_url(base)
            .sqlite_store(&e2ee.store_dir, Some(&passphrase))
            .with_encryption_settings(EncryptionSettings {
                auto_enable_cross_signing: true,
                backup_download_strategy: BackupDownloadStrategy::AfterDecryptionFailure,
                auto_enable_backups: false,
            })
            .build()
            .await
            .map_err(|_| SourceError::Transient("crypto store"))?;
        // Who the token belongs to, and which device it is.
        let who = whoami(base, token.expose()).await?;
        let (user_id, device_id) = who;
        client
            .matrix_auth()
            .restore_session(
                MatrixSession {
                    meta: SessionMeta {
                        user_id: user_id.clone(),
                        device_id,
                    },
                    tokens: SessionTokens {
                        access_token: token.expose().to_owned(),
                        refresh_token: None,
                    },
                },
                RoomLoadSettings::default(),
            )
            .await
            .map_err(sdk("session"))?;
        client
            .encryption()
            .wait_for_e2ee_initialization_tasks()
            .await;
        let source = Self {
            client,
            config: e2ee.clone(),
            timeout: config.sync_timeout,
            timeline_limit: 50,
            user_id: user_id.to_string(),
            store,
            broker,
            sealer,
        };
        source.recovery().await?;
        Ok(source)
    }

    /// Server-side key backup and secret storage with the recovery key in
    /// `recovery_key_file`: recovered from it when the account has a
    /// backup; created (and the new key written) when it has none.
    async fn recovery(&self) -> Result<(), SourceError> {
        let Some(path) = &self.config.recovery_key_file else {
            return Ok(());
        };
        let encryption = self.client.encryption();
        let exists = encryption
            .backups()
            .fetch_exists_on_server()
            .await
            .map_err(|_| SourceError::Transient("key backup"))?;
        match (exists, std::fs::read_to_string(path)) {
            (true, Ok(key)) => {
                encryption
                    .recovery()
                    .recover(key.trim())
                    .await
                    .map_err(|_| SourceError::Refused {
                        place: "key backup recovery",
                        status: 0,
                    })?;
                tracing::info!("key backup recovered with the recovery key");
            }
            (false, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = encryption
                    .recovery()
                    .enable()
                    .await
                    .map_err(|_| SourceError::Transient("key backup creation"))?;
                write_new_key(path, &key).map_err(|_| SourceError::NotConfigured)?;
                tracing::info!("key backup created; recovery key written");
            }
            (true, Err(_)) => {
                tracing::warn!(
                    "the account has a key backup but recovery_key_file cannot be read: \
                     older history stays undecryptable"
                );
            }
            (false, Ok(_)) => {
                tracing::warn!("recovery_key_file exists but the account has no key backup");
            }
            (false, Err(_)) => return Err(SourceError::NotConfigured),
        }
        Ok(())
    }

    /// Manual verification of a sender (Matrix "Cross-signing"): signs
    /// `user`'s master key with the bot's user-signing key, after checking
    /// that it is `master_key` (unpadded base64 Ed25519, the fingerprint
    /// the operator compared with the sender out of band). The sender's
    /// cross-signed devices are then `verified` for the trust policy.
    /// Errors: `Invalid("user id")`, `Refused { place: "master key" }` when
    /// the identity is unknown or its key differs, `Transient` otherwise.
    pub async fn verify_user(&self, user: &str, master_key: &str) -> Result<(), SourceError> {
        let user = UserId::parse(user).map_err(|_| SourceError::Invalid("user id"))?;
        let encryption = self.client.encryption();
        let identity = encryption
            .request_user_identity(&user)
            .await
            .map_err(sdk("keys query"))?
            .ok_or(SourceError::Refused {
                place: "master key",
                status: 404,
            })?;
        let actual = identity
            .master_key()
            .get_first_key()
            .map(|k| k.to_base64())
            .unwrap_or_default();
        if actual != master_key.trim() {
            return Err(SourceError::Refused {
                place: "master key",
                status: 409,
            });
        }
        identity
            .verify()
            .await
            .map_err(|_| SourceError::Transient("signature upload"))?;
        tracing::info!(audit = "verify", "sender identity verified by the operator");
        Ok(())
    }

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
                "timeline": {"types": TYPES, "limit": self.timeline_limit},
                "state": {"lazy_load_members": true},
                "ephemeral": {"not_types": ["*"]},
            }
        }))
        .expect("a valid filter definition");
        Filter::FilterDefinition(definition)
    }

    /// Events between `from` (a timeline's `prev_batch`) back to `to` (the
    /// previous `next_batch`; `None`: the room's start), oldest first,
    /// decrypted where the keys are there.
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
            let done = page.chunk.is_empty() || page.end.is_none();
            out.extend(page.chunk);
            match page.end {
                Some(end) if !done && end != from => from = end,
                _ => break,
            }
        }
        out.reverse();
        Ok(out)
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

    /// The trust policy's verdict on a decrypted event's sender device:
    /// `None` accepted, `Some(policy)` held.
    async fn trust(
        &self,
        sender: &UserId,
        state: &VerificationState,
    ) -> Result<Option<&'static str>, SourceError> {
        Ok(match (self.config.trust, state) {
            (TrustPolicy::Any, _) => None,
            (_, VerificationState::Verified) => None,
            (TrustPolicy::Verified, _) => Some("verified"),
            (
                TrustPolicy::Tofu,
                VerificationState::Unverified(VerificationLevel::UnverifiedIdentity),
            ) => {
                let identity = self
                    .client
                    .encryption()
                    .get_user_identity(sender)
                    .await
                    .map_err(|_| SourceError::Transient("crypto store"))?;
                let Some(master) = identity.and_then(|i| i.master_key().get_first_key()) else {
                    return Ok(Some("tofu"));
                };
                let sender_token = self.sealer.token(&["matrix-tofu-sender", sender.as_str()]);
                let identity_token = self
                    .sealer
                    .token(&["matrix-tofu-identity", &master.to_base64()]);
                let (pinned, now) = self
                    .store
                    .pin_identity(&sender_token, &identity_token, millis(chrono::Utc::now()))
                    .await?;
                if now {
                    tracing::info!(
                        audit = "tofu",
                        sender = &sender_token[..16],
                        "sender identity trusted on first use"
                    );
                }
                (pinned != identity_token).then_some("tofu")
            }
            (TrustPolicy::Tofu, _) => Some("tofu"),
        })
    }

    /// The decrypted event as published: its JSON with `room_id` and the
    /// marker.
    async fn decrypted(
        &self,
        event: &TimelineEvent,
        room_id: &OwnedRoomId,
        supersedes: bool,
    ) -> Result<Option<Value>, SourceError> {
        let TimelineEventKind::Decrypted(d) = &event.kind else {
            return Ok(None);
        };
        let Ok(mut json) = serde_json::from_str::<Value>(d.event.json().get()) else {
            return Ok(None);
        };
        let info = &d.encryption_info;
        let mut state = info.verification_state.clone();
        let mut hold = self.trust(&info.sender, &state).await?;
        if hold.is_some() {
            state = self
                .refreshed(&info.sender, info.sender_device.as_deref(), &state)
                .await;
            hold = self.trust(&info.sender, &state).await?;
        }
        let algorithm = match &info.algorithm_info {
            matrix_sdk::deserialized_responses::AlgorithmInfo::MegolmV1AesSha2 { .. } => {
                "m.megolm.v1.aes-sha2"
            }
            #[allow(unreachable_patterns)]
            _ => "other",
        };
        let mut marker = json!({
            "algorithm": algorithm,
            "verification": verification_name(&state),
        });
        if let Some(policy) = hold {
            marker["hold"] = Value::String(policy.to_owned());
        }
        if supersedes {
            marker["supersedes"] = Value::String(UNDECRYPTABLE.to_owned());
        }
        json["room_id"] = Value::String(room_id.to_string());
        json[E2EE_MARKER] = marker;
        Ok(Some(json))
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
        for (room_id, update) in &sync.rooms.joined {
            let mut events = Vec::new();
            if update.timeline.limited
                && let Some(prev) = &update.timeline.prev_batch
                && let Some(room) = self.client.get_room(room_id)
            {
                let older = self.backfill(&room, prev, since.as_deref()).await?;
                step.backfilled += older.len();
                events.extend(older);
            }
            events.extend(update.timeline.events.iter().cloned());
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
                        let kind = json["type"].as_str().unwrap_or_default();
                        let redacted = json["unsigned"].get("redacted_because").is_some();
                        let ours = json["sender"].as_str() == Some(self.user_id.as_str());
                        let publish = match kind {
                            "m.room.message" | "m.room.encrypted" => !redacted,
                            "m.room.redaction" => !ours,
                            _ => false,
                        };
                        if !publish {
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
        telemetry::source_published(SOURCE, step.published);
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

    /// Tries every recorded undecrypted event again: published decrypted
    /// (and forgotten) when its keys are there now; published as
    /// `undecryptable` once its wait ran out; otherwise left recorded.
    async fn retry_undecrypted(&self, step: &mut Step) -> Result<(), SourceError> {
        let wait = i64::try_from(self.config.undecryptable_after.as_millis()).unwrap_or(i64::MAX);
        for row in self.store.undecrypted().await? {
            let now = millis(chrono::Utc::now());
            let place = crate::store::sealed::undecrypted_event(&row.event_id);
            let bytes = match self.sealer.open(&place, &row.sealed_event) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::error!(error = %e, "a held encrypted event cannot be opened");
                    continue;
                }
            };
            let Ok(mut json) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            let room = json["room_id"]
                .as_str()
                .and_then(|r| OwnedRoomId::try_from(r).ok())
                .and_then(|r| self.client.get_room(&r).map(|room| (r, room)));
            if let Some((room_id, room)) = room {
                // The key backup may hold the session by now (another
                // device of the bot received it); a miss is not an error.
                if let Some(session) = json["content"]["session_id"].as_str() {
                    let _ = self
                        .client
                        .encryption()
                        .backups()
                        .download_room_key(&room_id, session)
                        .await;
                }
                let raw =
                    Raw::<OriginalSyncRoomEncryptedEvent>::from_json_string(bytes_str(&bytes))
                        .map_err(|_| SourceError::Invalid("sealed event"))?;
                let event = room
                    .decrypt_event(&raw, None)
                    .await
                    .map_err(sdk("decrypt"))?;
                if let Some(decrypted) = self
                    .decrypted(&event, &room_id, row.state == UNDECRYPTABLE)
                    .await?
                {
                    self.publish(&decrypted).await?;
                    self.store.forget_undecrypted(&row.event_id).await?;
                    step.published += 1;
                    step.decrypted_later += 1;
                    continue;
                }
            }
            if row.state == AWAITING_KEYS && now - row.first_seen_at >= wait {
                json[E2EE_MARKER] = json!({"undecryptable": true});
                self.publish(&json).await?;
                self.store
                    .touch_undecrypted(&row.event_id, UNDECRYPTABLE, now)
                    .await?;
                step.undecryptable += 1;
            } else {
                self.store
                    .touch_undecrypted(&row.event_id, &row.state, now)
                    .await?;
            }
        }
        Ok(())
    }

    /// Syncs until `shutdown` flips. Transient failures are retried with
    /// backoff; a refusal (a revoked token) ends the loop with an error.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<(), SourceError> {
        tracing::info!("matrix source (end-to-end encryption) started");
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        loop {
            let result = tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                r = self.step(self.timeout) => r,
            };
            match result {
                Ok(_) => {
                    backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60))
                }
                Err(e) if e.is_transient() => {
                    telemetry::transient("matrix_sync");
                    tracing::warn!(error = %e, "matrix sync failed; retrying");
                    tokio::select! {
                        _ = shutdown.changed() => return Ok(()),
                        _ = tokio::time::sleep(backoff.next_delay(None)) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// `GET /_matrix/client/v3/account/whoami`: the token's user and device.
async fn whoami(base: &str, token: &str) -> Result<(OwnedUserId, OwnedDeviceId), SourceError> {
    let base = reqwest::Url::parse(base).map_err(|_| SourceError::NotConfigured)?;
    let r = reqwest::Client::new()
        .get(crate::delete::matrix::endpoint(
            &base,
            &["_matrix", "client", "v3", "account", "whoami"],
        ))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|_| SourceError::Transient("whoami"))?;
    let status = r.status();
    if status.is_server_error() || status.as_u16() == 429 {
        return Err(SourceError::Transient("whoami"));
    }
    if !status.is_success() {
        return Err(SourceError::Refused {
            place: "whoami",
            status: status.as_u16(),
        });
    }
    let who: Value = r.json().await.map_err(|_| SourceError::Invalid("whoami"))?;
    let user = who["user_id"]
        .as_str()
        .and_then(|u| OwnedUserId::try_from(u).ok())
        .ok_or(SourceError::Invalid("whoami"))?;
    // A token without a device (an appservice's) cannot hold room keys.
    let device = who["device_id"]
        .as_str()
        .map(OwnedDeviceId::from)
        .ok_or(SourceError::Invalid("whoami"))?;
    Ok((user, device))
}

fn bytes_str(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes a new recovery key readable by the owner only; refuses to
/// overwrite an existing file.
fn write_new_key(path: &Path, key: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(key.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}
