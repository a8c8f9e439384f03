//! Deleting a Matrix message: redact the event
//! (`PUT /_matrix/client/v3/rooms/{room}/redact/{event}/{txn}`, the txn id is
//! the deletion id, so a repeated command is the same request), delete its
//! medium with Synapse's admin API
//! (`DELETE /_synapse/admin/v1/media/{server}/{media_id}`), and optionally
//! purge the room history up to the event
//! (`POST /_synapse/admin/v1/purge_history/{room}`) — only when every older
//! event is already redacted or carries no content, since a purge deletes
//! events chartbridge may never have archived.

use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde_json::json;

use super::DeletionCommand;
use super::adapter::{ExecError, Executed, Executor, retry_after};
use crate::event::matrix::SOURCE;
use crate::source::MatrixConfig;

/// Splits `mxc://server/media_id`.
pub fn parse_mxc(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("mxc://")?;
    let (server, id) = rest.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:[]".contains(&b))
    };
    (ok(server) && ok(id)).then_some((server, id))
}

/// `base` with `segments` appended, each percent-encoded.
pub fn endpoint(base: &Url, segments: &[&str]) -> Url {
    let mut root = base.clone();
    root.set_query(None);
    root.set_fragment(None);
    Url::parse(&crate::push::url::build(root.as_str(), segments, &[]))
        .expect("a base URL with encoded segments parses")
}

/// How many older events [`MatrixDeleter`] reads before a purge to prove
/// that none still carries content (empty pages count one); a longer
/// history is not purged.
pub const PURGE_SCAN_EVENTS: usize = 1000;

/// Whether a room event (client format) still carries content: a
/// non-state event other than a reaction or a redaction whose `content`
/// is not empty (a redacted event's content is stripped).
fn carries_content(event: &serde_json::Value) -> bool {
    if event.get("state_key").is_some() {
        return false;
    }
    if matches!(
        event["type"].as_str(),
        Some("m.reaction" | "m.room.redaction")
    ) {
        return false;
    }
    event["content"].as_object().is_some_and(|c| !c.is_empty())
}

/// The Matrix deletion executor.
#[derive(Debug, Clone)]
pub struct MatrixDeleter {
    http: reqwest::Client,
    base: Url,
    token: String,
    admin_token: String,
    purge_history: bool,
    /// Checked again right before a medium is deleted
    /// ([`MatrixDeleter::with_media_uses`]).
    media_uses: Option<crate::store::Store>,
}

impl MatrixDeleter {
    /// `None` when `matrix.homeserver_url` or `matrix.access_token` is missing.
    pub fn new(config: &MatrixConfig) -> Result<Option<Self>, reqwest::Error> {
        let (Some(base), Some(token)) = (&config.homeserver_url, &config.access_token) else {
            return Ok(None);
        };
        let Ok(base) = Url::parse(base) else {
            return Ok(None);
        };
        let admin = config.admin_access_token.as_ref().unwrap_or(token);
        Ok(Some(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            base,
            token: format!("Bearer {}", token.expose()),
            admin_token: format!("Bearer {}", admin.expose()),
            purge_history: config.purge_history,
            media_uses: None,
        }))
    }

    /// Before a command's medium (and its thumbnails) is deleted, asks
    /// `store` again whether another message still uses it without a due
    /// deletion of its own ([`crate::store::Store::media_still_in_use`]):
    /// the relay asked when it published the command, but a copy recorded
    /// since (while the command waited in the queue or was retried) must
    /// keep the medium too. The event is still redacted.
    pub fn with_media_uses(mut self, store: crate::store::Store) -> Self {
        self.media_uses = Some(store);
        self
    }

    /// Whether `c`'s medium must be kept now (see [`Self::with_media_uses`]).
    async fn medium_still_in_use(&self, c: &DeletionCommand) -> Result<bool, ExecError> {
        super::adapter::medium_still_in_use(self.media_uses.as_ref(), c).await
    }

    async fn redact(&self, c: &DeletionCommand) -> Result<Executed, ExecError> {
        let url = endpoint(
            &self.base,
            &[
                "_matrix",
                "client",
                "v3",
                "rooms",
                &c.conversation,
                "redact",
                &c.message_id,
                &c.deletion_id,
            ],
        );
        let r = self
            .http
            .put(url)
            .header(reqwest::header::AUTHORIZATION, &self.token)
            .json(&json!({"reason": c.reason.as_str()}))
            .send()
            .await
            .map_err(|e| ExecError::transport("redact", &e))?;
        match r.status() {
            s if s.is_success() => Ok(Executed::Deleted),
            StatusCode::NOT_FOUND => Ok(Executed::NotFound),
            s => Err(ExecError::status("redact", s, retry_after(r.headers()))),
        }
    }

    async fn delete_media(&self, mxc: &str) -> Result<Executed, ExecError> {
        let (server, id) = parse_mxc(mxc).ok_or_else(|| ExecError::permanent("media_not_mxc"))?;
        let url = endpoint(
            &self.base,
            &["_synapse", "admin", "v1", "media", server, id],
        );
        let r = self
            .http
            .delete(url)
            .header(reqwest::header::AUTHORIZATION, &self.admin_token)
            .send()
            .await
            .map_err(|e| ExecError::transport("media_delete", &e))?;
        match r.status() {
            s if s.is_success() => Ok(Executed::Deleted),
            StatusCode::NOT_FOUND => Ok(Executed::NotFound),
            s => Err(ExecError::status(
                "media_delete",
                s,
                retry_after(r.headers()),
            )),
        }
    }

    /// The thumbnails a client uploaded beside the event's medium
    /// (`info.thumbnail_url`, or `info.thumbnail_file.url` for an
    /// encrypted one; CS API 11.3.6.1, also inside `m.new_content`), read
    /// from the event before it is redacted: the deletion command names the
    /// medium only. Empty when the event is gone or already redacted, or
    /// when it is `m.room.encrypted` (the adapter holds no room keys: those
    /// thumbnails stay).
    async fn thumbnails(&self, c: &DeletionCommand) -> Result<Vec<String>, ExecError> {
        let segments = [
            "_matrix",
            "client",
            "v3",
            "rooms",
            &c.conversation,
            "event",
            &c.message_id,
        ];
        let Some(event) = self
            .get_json_if_found(&segments, &[], &self.token, "thumbnails")
            .await?
        else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        for content in [&event["content"], &event["content"]["m.new_content"]] {
            let info = &content["info"];
            for thumbnail in [&info["thumbnail_url"], &info["thumbnail_file"]["url"]] {
                if let Some(mxc) = thumbnail.as_str().filter(|u| u.starts_with("mxc://"))
                    && c.media_reference.as_deref() != Some(mxc)
                    && !found.iter().any(|f| f == mxc)
                {
                    found.push(mxc.to_owned());
                }
            }
        }
        Ok(found)
    }

    /// A `GET` with `authorization`, its JSON answer; a 404 is an error
    /// like any other failure.
    async fn get_json(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        authorization: &str,
        place: &'static str,
    ) -> Result<serde_json::Value, ExecError> {
        self.get_json_if_found(segments, query, authorization, place)
            .await?
            .ok_or_else(|| ExecError::status(place, StatusCode::NOT_FOUND, None))
    }

    /// A `GET` with `authorization`: its JSON answer, `None` on 404.
    async fn get_json_if_found(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        authorization: &str,
        place: &'static str,
    ) -> Result<Option<serde_json::Value>, ExecError> {
        let mut url = endpoint(&self.base, segments);
        url.query_pairs_mut().extend_pairs(query);
        let r = self
            .http
            .get(url)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .send()
            .await
            .map_err(|e| ExecError::transport(place, &e))?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(ExecError::status(
                place,
                r.status(),
                retry_after(r.headers()),
            ));
        }
        r.json()
            .await
            .map(Some)
            .map_err(|_| ExecError::transient(place))
    }

    /// Whether every event before `c.message_id` in its room is safe to
    /// purge: state, reactions, redactions, or redacted (its content gone).
    /// An event that still carries content (a message chartbridge may never
    /// have archived: skipped, held, still queued, never published) makes
    /// it unsafe. The room is read backwards from the event
    /// (`/context` for a pagination token, then Synapse's admin
    /// `/_synapse/admin/v1/rooms/{room}/messages?dir=b` with the admin
    /// token, which shows every event whatever the bot may see) until its
    /// `m.room.create` or the page without an `end` (the start of what the
    /// homeserver stores; with the admin's privilege nothing is hidden). An
    /// empty page is not the start (CS API 10.9: keep paginating while
    /// there is an `end`); more than [`PURGE_SCAN_EVENTS`] events is not
    /// proven and is not purged.
    async fn history_before_is_redacted(&self, c: &DeletionCommand) -> Result<bool, ExecError> {
        let room = c.conversation.as_str();
        let context = [
            "_matrix",
            "client",
            "v3",
            "rooms",
            room,
            "context",
            c.message_id.as_str(),
        ];
        let answer = self
            .get_json(&context, &[("limit", "0")], &self.token, "purge_scan")
            .await?;
        let Some(mut from) = answer["start"].as_str().map(str::to_owned) else {
            return Ok(false);
        };
        let messages = ["_synapse", "admin", "v1", "rooms", room, "messages"];
        let mut scanned = 0;
        while scanned < PURGE_SCAN_EVENTS {
            let page = self
                .get_json(
                    &messages,
                    &[("dir", "b"), ("from", &from), ("limit", "100")],
                    &self.admin_token,
                    "purge_scan",
                )
                .await?;
            let events = page["chunk"].as_array().map_or(&[][..], Vec::as_slice);
            if events.iter().any(carries_content) {
                return Ok(false);
            }
            if events.iter().any(|e| e["type"] == "m.room.create") {
                return Ok(true);
            }
            scanned += events.len().max(1);
            match page["end"].as_str() {
                // The admin API hides nothing from the admin: no `end` is
                // the start of what the homeserver stores (after an
                // earlier purge, the purge point).
                None => return Ok(true),
                Some(end) if end != from => from = end.to_owned(),
                Some(_) => return Ok(false),
            }
        }
        Ok(false)
    }

    async fn purge(&self, c: &DeletionCommand) -> Result<(), ExecError> {
        let url = endpoint(
            &self.base,
            &["_synapse", "admin", "v1", "purge_history", &c.conversation],
        );
        let r = self
            .http
            .post(url)
            .header(reqwest::header::AUTHORIZATION, &self.admin_token)
            .json(&json!({"purge_up_to_event_id": c.message_id, "delete_local_events": true}))
            .send()
            .await
            .map_err(|e| ExecError::transport("purge", &e))?;
        if !r.status().is_success() {
            return Err(ExecError::status(
                "purge",
                r.status(),
                retry_after(r.headers()),
            ));
        }
        let body: serde_json::Value = r
            .json()
            .await
            .map_err(|_| ExecError::transient("purge_answer"))?;
        let purge_id = body["purge_id"]
            .as_str()
            .ok_or_else(|| ExecError::permanent("purge_answer"))?
            .to_owned();
        for _ in 0..600 {
            let url = endpoint(
                &self.base,
                &["_synapse", "admin", "v1", "purge_history_status", &purge_id],
            );
            let r = self
                .http
                .get(url)
                .header(reqwest::header::AUTHORIZATION, &self.admin_token)
                .send()
                .await
                .map_err(|e| ExecError::transport("purge_status", &e))?;
            if !r.status().is_success() {
                return Err(ExecError::status("purge_status", r.status(), None));
            }
            let status: serde_json::Value = r
                .json()
                .await
                .map_err(|_| ExecError::transient("purge_status_answer"))?;
            match status["status"].as_str() {
                Some("complete") => return Ok(()),
                Some("failed") => return Err(ExecError::transient("purge_failed")),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Err(ExecError::transient("purge_timeout"))
    }
}

impl Executor for MatrixDeleter {
    fn source(&self) -> &'static str {
        SOURCE
    }

    async fn execute(&self, c: &DeletionCommand) -> Result<Executed, ExecError> {
        let keep_medium = self.medium_still_in_use(c).await?;
        if keep_medium {
            crate::telemetry::media_kept(SOURCE);
        }
        let medium = c.media_reference.as_ref().filter(|_| !keep_medium);
        // With the medium go its thumbnails, read before the redaction
        // strips the event (a command without a medium keeps them too).
        // A thumbnail that cannot be deleted for good (another server's
        // medium: Synapse deletes local media only) does not stop the
        // redaction; a transient failure is retried with the command.
        if medium.is_some() {
            for thumbnail in self.thumbnails(c).await? {
                match self.delete_media(&thumbnail).await {
                    Ok(_) => {}
                    Err(e) if e.transient => return Err(e),
                    Err(e) => {
                        tracing::warn!(reason = %e.reason, "thumbnail not deleted; the redaction goes ahead");
                    }
                }
            }
        }
        let redacted = self.redact(c).await?;
        // Asked again after the redaction: a copy recorded meanwhile keeps
        // the medium too.
        let media = match medium {
            Some(_) if self.medium_still_in_use(c).await? => {
                crate::telemetry::media_kept(SOURCE);
                None
            }
            Some(mxc) => Some(self.delete_media(mxc).await?),
            None => None,
        };
        if self.purge_history && redacted == Executed::Deleted {
            if self.history_before_is_redacted(c).await? {
                self.purge(c).await?;
            } else {
                // Purging would delete older events that still carry
                // content, which nothing may have archived: the redaction
                // stands, the history stays.
                tracing::warn!(
                    "matrix.purge_history: purge skipped, older events in the room still carry content"
                );
            }
        }
        Ok(match (redacted, media) {
            (Executed::NotFound, None | Some(Executed::NotFound)) => Executed::NotFound,
            _ => Executed::Deleted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mxc_uris_and_encoded_paths() {
        assert_eq!(
            parse_mxc("mxc://localhost/AbC-12_x"),
            Some(("localhost", "AbC-12_x"))
        );
        assert_eq!(parse_mxc("mxc://localhost/../x"), None);
        assert_eq!(parse_mxc("https://localhost/x"), None);
        assert_eq!(parse_mxc("mxc://localhost/"), None);
        for (event, content) in [
            (
                json!({"type": "m.room.message", "content": {"msgtype": "m.text", "body": "x"}}),
                true,
            ),
            (json!({"type": "m.room.message", "content": {}}), false),
            (
                json!({"type": "m.poll.start", "content": {"m.text": "x"}}),
                true,
            ),
            (
                json!({"type": "m.room.member", "state_key": "@a:h", "content": {"membership": "join"}}),
                false,
            ),
            (
                json!({"type": "m.reaction", "content": {"m.relates_to": {}}}),
                false,
            ),
            (
                json!({"type": "m.room.redaction", "content": {"redacts": "$e"}}),
                false,
            ),
        ] {
            assert_eq!(carries_content(&event), content, "{event}");
        }
        let base = Url::parse("http://127.0.0.1:8448/").unwrap();
        let url = endpoint(&base, &["rooms", "!r:localhost", "redact", "$e/v"]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8448/rooms/%21r%3Alocalhost/redact/%24e%2Fv"
        );
    }
}
