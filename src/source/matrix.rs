//! The Matrix source: a bot account's long-poll `/sync` loop over the rooms
//! it has joined. Each `m.room.message` (with its `room_id` added) is
//! published to the events queue with publisher confirms; `next_batch` is
//! saved in the store only after every publish of its batch was confirmed,
//! so a crash republishes (at-least-once; the pipeline deduplicates on the
//! event id). A `limited` timeline is back-filled with `/messages` from its
//! `prev_batch` back to the previous `next_batch` (on the first sync, and
//! for a room the bot joined since the last sync: to the start of the room,
//! as far as its history visibility lets the bot read). Rooms the bot left
//! since the last sync are read up to the leave. Published is every
//! non-state timeline event: `m.room.message`, `m.sticker`, polls, reactions, `m.room.encrypted` (the
//! worker holds each one, sealed, as `encrypted_content`: nothing encrypted
//! is ever skipped unseen), event types not known yet (the worker holds one
//! that carries a body), and `m.room.redaction` by anyone but the bot (a
//! sender retracting a message, which the worker marks in the KIS when it
//! was archived). State events, the bot's own redactions (the deletion
//! adapter's, after archiving) and events already redacted when first seen
//! (no content left) are counted and skipped.

use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::consume::{Broker, BrokerError};
use crate::delete::matrix::endpoint;
use crate::event::matrix::SOURCE;
use crate::retry::{Backoff, GaveUp, RetryLogic, retry};
use crate::shutdown::Shutdown;
use crate::source::MatrixConfig;
use crate::store::{Store, StoreError, millis};
use crate::telemetry;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("matrix.homeserver_url and matrix.access_token are required")]
    NotConfigured,
    #[error("homeserver unavailable at {0}")]
    Transient(&'static str),
    #[error("homeserver refused {place} with HTTP {status}")]
    Refused { place: &'static str, status: u16 },
    #[error("homeserver answer to {0} is not understood")]
    Invalid(&'static str),
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl SourceError {
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Self::Transient(_) => true,
            Self::Broker(_) => true,
            Self::Store(e) => e.is_transient(),
            _ => false,
        }
    }
}

#[derive(Deserialize)]
struct SyncResponse {
    next_batch: String,
    #[serde(default)]
    rooms: Rooms,
}

#[derive(Deserialize, Default)]
struct Rooms {
    #[serde(default)]
    join: std::collections::BTreeMap<String, JoinedRoom>,
    /// Rooms the bot left or was removed from since the last sync
    /// (`include_leave`): their timeline up to the leave is read like a
    /// joined room's, so nothing written before the kick is lost.
    #[serde(default)]
    leave: std::collections::BTreeMap<String, JoinedRoom>,
}

#[derive(Deserialize)]
struct JoinedRoom {
    #[serde(default)]
    timeline: Timeline,
}

#[derive(Deserialize, Default)]
struct Timeline {
    #[serde(default)]
    events: Vec<Value>,
    #[serde(default)]
    limited: bool,
    prev_batch: Option<String>,
}

#[derive(Deserialize)]
struct MessagesResponse {
    #[serde(default)]
    chunk: Vec<Value>,
    end: Option<String>,
}

/// Whether a timeline event is published to the events queue: every
/// non-state event (messages, stickers, polls, reactions, encrypted events,
/// event types not yet known) except events already redacted (their
/// content is gone) and the bot's own redactions (its deletion adapter's).
/// The worker decides each one's state; state events (`state_key`) are
/// room configuration, not content.
pub(super) fn publishes(event: &Value, bot: &str) -> bool {
    let state = event.get("state_key").is_some();
    let redacted = event["unsigned"].get("redacted_because").is_some();
    let ours = event["sender"].as_str() == Some(bot);
    let kind = event["type"].as_str().unwrap_or_default();
    !(state || redacted || kind == "m.room.redaction" && ours)
}

/// Whether `event` is `bot` joining its room (an `m.room.member` join whose
/// previous membership was not a join): a room joined after the last sync,
/// whose older history no sync has read.
pub(super) fn joins(event: &Value, bot: &str) -> bool {
    event["type"] == "m.room.member"
        && event["state_key"].as_str() == Some(bot)
        && event["content"]["membership"] == "join"
        && event["unsigned"]["prev_content"]["membership"] != "join"
}

/// What one sync step did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Step {
    pub published: usize,
    pub backfilled: usize,
    pub skipped: usize,
    /// E2EE source: events recorded as awaiting their room keys.
    pub held: usize,
    /// E2EE source: recorded events that decrypted now and were published.
    pub decrypted_later: usize,
    /// E2EE source: recorded events published as `undecryptable` now.
    pub undecryptable: usize,
}

/// The token of the next older `/messages` page after the page read
/// `from`, whose `end` was `end`; `None` when the history is read to its
/// start (or to `to`). CS API v1.10+ §`GET /rooms/{roomId}/messages`:
/// "the absence of `end` indicates that there are no more events"; an empty
/// `chunk` with an `end` does not (the server filtered that window for the
/// caller: ignored users, history visibility), so paging goes on. An `end`
/// equal to `from` would page in place forever and is taken as the end.
pub(crate) fn next_page(end: Option<String>, from: &str) -> Option<String> {
    end.filter(|end| end != from)
}

/// A bot account's sync loop.
pub struct MatrixSource {
    http: reqwest::Client,
    base: Url,
    bearer: String,
    timeout: Duration,
    /// Timeline events per room and sync before the server says `limited`.
    pub timeline_limit: u32,
    /// Events per `/messages` page when back-filling (CS API
    /// `GET /rooms/{roomId}/messages`, `limit`).
    pub page_limit: u32,
    user_id: String,
    store: Store,
    broker: Broker,
}

fn transport(place: &'static str) -> impl Fn(reqwest::Error) -> SourceError {
    move |_| SourceError::Transient(place)
}

fn check(place: &'static str, status: StatusCode) -> Result<(), SourceError> {
    if status.is_success() {
        Ok(())
    } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(SourceError::Transient(place))
    } else {
        Err(SourceError::Refused {
            place,
            status: status.as_u16(),
        })
    }
}

impl MatrixSource {
    /// Connects: asks the homeserver who the token belongs to.
    pub async fn connect(
        config: &MatrixConfig,
        store: Store,
        broker: Broker,
    ) -> Result<Self, SourceError> {
        let (Some(base), Some(token)) = (&config.homeserver_url, &config.access_token) else {
            return Err(SourceError::NotConfigured);
        };
        let base = Url::parse(base).map_err(|_| SourceError::NotConfigured)?;
        let http = reqwest::Client::builder()
            .timeout(config.sync_timeout + Duration::from_secs(30))
            .build()
            .map_err(|_| SourceError::NotConfigured)?;
        let bearer = format!("Bearer {}", token.expose());
        let r = http
            .get(endpoint(
                &base,
                &["_matrix", "client", "v3", "account", "whoami"],
            ))
            .header(reqwest::header::AUTHORIZATION, &bearer)
            .send()
            .await
            .map_err(transport("whoami"))?;
        check("whoami", r.status())?;
        let who: Value = r.json().await.map_err(|_| SourceError::Invalid("whoami"))?;
        let user_id = who["user_id"]
            .as_str()
            .ok_or(SourceError::Invalid("whoami"))?
            .to_owned();
        Ok(Self {
            http,
            base,
            bearer,
            timeout: config.sync_timeout,
            timeline_limit: 50,
            page_limit: 100,
            user_id,
            store,
            broker,
        })
    }

    /// The bot's user id.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    fn filter(&self) -> String {
        json!({
            "presence": {"not_types": ["*"]},
            "account_data": {"not_types": ["*"]},
            "room": {
                "timeline": {"limit": self.timeline_limit},
                "include_leave": true,
                "state": {"types": []},
                "ephemeral": {"not_types": ["*"]},
                "account_data": {"not_types": ["*"]},
            }
        })
        .to_string()
    }

    async fn sync(
        &self,
        since: Option<&str>,
        timeout: Duration,
    ) -> Result<SyncResponse, SourceError> {
        let mut url = endpoint(&self.base, &["_matrix", "client", "v3", "sync"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("filter", &self.filter());
            q.append_pair("timeout", &timeout.as_millis().to_string());
            if let Some(s) = since {
                q.append_pair("since", s);
            }
        }
        self.get_json("sync", url).await
    }

    /// An authorised GET whose answer is JSON of type `T`; errors name `place`.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        place: &'static str,
        url: Url,
    ) -> Result<T, SourceError> {
        let r = self
            .http
            .get(url)
            .header(reqwest::header::AUTHORIZATION, &self.bearer)
            .send()
            .await
            .map_err(transport(place))?;
        check(place, r.status())?;
        r.json().await.map_err(|_| SourceError::Invalid(place))
    }

    /// Events between `from` (a timeline's `prev_batch`) back to `to`
    /// (the previous `next_batch`; `None`: the room's start), oldest first.
    /// Pages until one comes without an `end` ([`next_page`]): an empty
    /// page is not the end of the history.
    async fn backfill(
        &self,
        room: &str,
        from: &str,
        to: Option<&str>,
    ) -> Result<Vec<Value>, SourceError> {
        let mut out = Vec::new();
        let mut from = from.to_owned();
        let filter = json!({"lazy_load_members": true}).to_string();
        loop {
            let mut url = endpoint(
                &self.base,
                &["_matrix", "client", "v3", "rooms", room, "messages"],
            );
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("dir", "b");
                q.append_pair("from", &from);
                q.append_pair("limit", &self.page_limit.to_string());
                q.append_pair("filter", &filter);
                if let Some(to) = to {
                    q.append_pair("to", to);
                }
            }
            let page: MessagesResponse = self.get_json("messages", url).await?;
            out.extend(page.chunk);
            match next_page(page.end, &from) {
                Some(end) => from = end,
                None => break,
            }
        }
        out.reverse();
        Ok(out)
    }

    /// One sync: publishes the new messages, then saves `next_batch`.
    /// `timeout` is the long-poll wait.
    pub async fn step(&self, timeout: Duration) -> Result<Step, SourceError> {
        let since = self.store.source_cursor(SOURCE, &self.user_id).await?;
        let sync = self.sync(since.as_deref(), timeout).await?;
        let mut step = Step::default();
        for (room_id, room) in sync.rooms.join.iter().chain(&sync.rooms.leave) {
            let mut events = Vec::new();
            let joined_now = room.timeline.events.iter().any(|e| joins(e, &self.user_id));
            if (room.timeline.limited || joined_now)
                && let Some(prev) = &room.timeline.prev_batch
            {
                let mut older = self.backfill(room_id, prev, since.as_deref()).await?;
                if joined_now || older.iter().any(|e| joins(e, &self.user_id)) {
                    // Joined since the last sync: the room's history before
                    // the cursor was never read; back to its start.
                    older = self.backfill(room_id, prev, None).await?;
                }
                step.backfilled += older.len();
                events.extend(older);
            }
            events.extend(room.timeline.events.iter().cloned());
            for mut event in events {
                if !publishes(&event, &self.user_id) {
                    step.skipped += 1;
                    continue;
                }
                // Only the E2EE source sets this member (docs/matrix.md).
                if let Some(o) = event.as_object_mut() {
                    o.remove(crate::event::matrix::E2EE_MARKER);
                }
                event["room_id"] = Value::String(room_id.clone());
                let payload = serde_json::to_vec(&event).expect("an event serialises");
                self.broker.publish_event(&payload).await?;
                step.published += 1;
            }
        }
        self.store
            .set_source_cursor(
                SOURCE,
                &self.user_id,
                &sync.next_batch,
                millis(chrono::Utc::now()),
            )
            .await?;
        telemetry::emit(telemetry::SourcePublished {
            source: SOURCE,
            count: step.published,
        });
        if step.skipped > 0 {
            telemetry::skipped(SOURCE, "non_message_event", step.skipped);
        }
        Ok(step)
    }

    /// Syncs until `shutdown` flips. Transient failures are retried with
    /// backoff; a refusal (a revoked token) ends the loop with an error.
    pub async fn run(&self, shutdown: Shutdown) -> Result<(), SourceError> {
        tracing::info!("matrix source started");
        sync_until_shutdown(shutdown, || self.step(self.timeout)).await
    }
}

/// Runs `sync` (one sync step) again and again until `shutdown` flips; a
/// step in progress is dropped at shutdown (its cursor is saved only after
/// the broker confirmed). Transient failures are retried with backoff; a
/// refusal ends the loop with the error.
pub(crate) async fn sync_until_shutdown<T, F, Fut>(
    shutdown: Shutdown,
    mut sync: F,
) -> Result<(), SourceError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SourceError>>,
{
    let backoff = || Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
    loop {
        let (mut stop, mut waits) = (shutdown.clone(), shutdown.clone());
        let synced = tokio::select! {
            _ = stop.recv() => return Ok(()),
            r = retry(&SyncRetry, backoff(), &mut waits, &mut sync) => r,
        };
        match synced {
            Ok(_) => {}
            Err(GaveUp::Shutdown(_)) => return Ok(()),
            Err(GaveUp::Permanent(e)) => return Err(e),
        }
    }
}

/// A sync is retried while the homeserver, broker or store may come back.
struct SyncRetry;

impl RetryLogic for SyncRetry {
    type Error = SourceError;
    fn is_retriable_error(&self, e: &SourceError) -> bool {
        e.is_transient()
    }
    fn on_retry(&self, e: &SourceError, _: u32, _: Duration) {
        telemetry::transient("matrix_sync");
        tracing::warn!(error = %e, "matrix sync failed; retrying");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backfill_pages_past_an_empty_page_until_there_is_no_end() {
        // An empty page (the server filtered its window) is not the start.
        assert_eq!(next_page(Some("t1".into()), "t0").as_deref(), Some("t1"));
        assert_eq!(next_page(None, "t0"), None);
        assert_eq!(next_page(Some("t0".into()), "t0"), None);
    }

    #[test]
    fn the_bots_own_join_marks_a_room_joined_since_the_last_sync() {
        let bot = "@bot:h";
        let member = |who: &str, now: &str, before: Option<&str>| {
            let mut e = json!({"type": "m.room.member", "state_key": who, "sender": who,
                               "content": {"membership": now}});
            if let Some(b) = before {
                e["unsigned"] = json!({"prev_content": {"membership": b}});
            }
            e
        };
        assert!(joins(&member(bot, "join", None), bot));
        assert!(joins(&member(bot, "join", Some("invite")), bot));
        // A profile change is a join after a join: not a new room.
        assert!(!joins(&member(bot, "join", Some("join")), bot));
        assert!(!joins(&member("@alice:h", "join", None), bot));
        assert!(!joins(&member(bot, "leave", Some("join")), bot));
        assert!(!publishes(&member(bot, "join", None), bot));
    }
}
