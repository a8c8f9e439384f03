//! Deleting WhatsApp Business media: `DELETE {base}/{media-id}` at the Graph
//! API with the bearer token (`media.api_base_url`, `media.access_token`).
//! Graph answers `{"success": true}`; errors carry
//! `{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`.
//!
//! The Cloud API cannot delete a message on the users' phones; what Meta
//! keeps for the business is the uploaded medium (30 days otherwise). A text
//! message therefore has nothing to delete at the Graph API and is reported
//! `deleted` with the detail `no_media`.

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use super::DeletionCommand;
use super::adapter::{ExecError, Executed, Executor, retry_after};
use super::matrix::endpoint;
use crate::media::MediaConfig;

/// Graph API error codes that mean "try again later": unknown/service
/// errors and the throttling family.
const TRANSIENT_CODES: &[i64] = &[1, 2, 4, 17, 32, 613, 80007, 130429, 131000, 131016];

#[derive(Deserialize)]
struct GraphError {
    error: GraphErrorBody,
}

#[derive(Deserialize)]
struct GraphErrorBody {
    code: Option<i64>,
    error_subcode: Option<i64>,
}

/// The WhatsApp deletion executor.
#[derive(Debug, Clone)]
pub struct WhatsAppDeleter {
    http: reqwest::Client,
    base: Url,
    bearer: String,
    /// Asked before a medium is deleted ([`WhatsAppDeleter::with_media_uses`]).
    media_uses: Option<crate::store::Store>,
}

impl WhatsAppDeleter {
    /// `None` when `media.api_base_url` or `media.access_token` is missing.
    pub fn new(config: &MediaConfig) -> Result<Option<Self>, reqwest::Error> {
        let (Some(base), Some(token)) = (&config.api_base_url, &config.access_token) else {
            return Ok(None);
        };
        let Ok(base) = Url::parse(base) else {
            return Ok(None);
        };
        Ok(Some(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            base,
            bearer: format!("Bearer {}", token.expose()),
            media_uses: None,
        }))
    }

    /// Before a command's medium is deleted, asks `store` again whether
    /// another message still uses it without a due deletion of its own
    /// ([`crate::store::Store::media_still_in_use`]), as
    /// [`super::matrix::MatrixDeleter::with_media_uses`] does: the relay
    /// asked when it published the command, but a copy recorded since
    /// (while the command waited in the queue or was retried; a medium the
    /// business sent to several contacts) must keep the medium too. The
    /// command then succeeds without a Graph request; the last message's
    /// own command deletes the medium.
    pub fn with_media_uses(mut self, store: crate::store::Store) -> Self {
        self.media_uses = Some(store);
        self
    }

    /// Whether `c`'s medium must be kept now (see [`Self::with_media_uses`]).
    async fn medium_still_in_use(&self, c: &DeletionCommand) -> Result<bool, ExecError> {
        super::adapter::medium_still_in_use(self.media_uses.as_ref(), c).await
    }
}

/// Classifies a Graph API error answer.
fn graph_error(status: reqwest::StatusCode, body: &[u8], hint: Option<Duration>) -> ExecError {
    let Ok(GraphError { error }) = serde_json::from_slice::<GraphError>(body) else {
        return ExecError::status("graph", status, hint);
    };
    let code = error.code.unwrap_or(0);
    let reason = match error.error_subcode {
        Some(sub) => format!("graph_error_{code}_{sub}"),
        None => format!("graph_error_{code}"),
    };
    let transient = TRANSIENT_CODES.contains(&code)
        || status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
    ExecError {
        transient,
        reason,
        retry_after: hint,
    }
}

impl Executor for WhatsAppDeleter {
    fn source(&self) -> &'static str {
        "whatsapp"
    }

    async fn execute(&self, c: &DeletionCommand) -> Result<Executed, ExecError> {
        let Some(media_id) = &c.media_reference else {
            return Ok(Executed::Deleted);
        };
        if self.medium_still_in_use(c).await? {
            crate::telemetry::media_kept("whatsapp");
            return Ok(Executed::Deleted);
        }
        let r = self
            .http
            .delete(endpoint(&self.base, &[media_id]))
            .header(reqwest::header::AUTHORIZATION, &self.bearer)
            .send()
            .await
            .map_err(|e| ExecError::transport("graph", &e))?;
        let status = r.status();
        let hint = retry_after(r.headers());
        let body = r
            .bytes()
            .await
            .map_err(|e| ExecError::transport("graph", &e))?;
        if status.is_success() {
            let ok = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["success"].as_bool());
            return match ok {
                Some(true) => Ok(Executed::Deleted),
                _ => Err(ExecError::permanent("graph_not_deleted")),
            };
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Executed::NotFound);
        }
        let e = graph_error(status, &body, hint);
        // 100/33: "Unsupported delete request: object does not exist" — gone.
        if e.reason == "graph_error_100_33" {
            return Ok(Executed::NotFound);
        }
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn graph_errors_are_classified_by_code() {
        let body =
            br#"{"error":{"message":"x","type":"OAuthException","code":190,"fbtrace_id":"A"}}"#;
        let e = graph_error(StatusCode::UNAUTHORIZED, body, None);
        assert_eq!((e.transient, e.reason.as_str()), (false, "graph_error_190"));
        let body =
            br#"{"error":{"message":"x","type":"OAuthException","code":80007,"fbtrace_id":"A"}}"#;
        assert!(graph_error(StatusCode::BAD_REQUEST, body, None).transient);
        let e = graph_error(StatusCode::BAD_GATEWAY, b"<html>", None);
        assert_eq!((e.transient, e.reason.as_str()), (true, "graph_http_502"));
    }
}
