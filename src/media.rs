//! Fetching media by reference from a WhatsApp-style media API:
//! `GET {base}/{media-id}` answers `{url, mime_type, sha256, file_size}`,
//! then `GET {url}` with the same bearer token streams the bytes. Downloads
//! stop at the configured size limit.

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde::Deserialize;

use crate::config::MediaConfig;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("no media API is configured")]
    NotConfigured,
    #[error("medium exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("media API answered HTTP {status}")]
    Refused { status: u16 },
    #[error("media API unavailable ({0})")]
    Transient(String),
    #[error("media API answer is not understood")]
    Invalid,
}

impl MediaError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }

    /// Stable reason code for quarantine.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotConfigured => "media_api_not_configured",
            Self::TooLarge { .. } => "media_too_large",
            Self::Refused { .. } => "media_unavailable",
            Self::Transient(_) => "media_transient",
            Self::Invalid => "media_api_invalid",
        }
    }
}

#[derive(Deserialize)]
struct MediaInfo {
    url: String,
    #[serde(default)]
    file_size: Option<serde_json::Value>,
}

/// A client of the media API.
#[derive(Debug, Clone)]
pub struct MediaClient {
    http: reqwest::Client,
    base: Option<String>,
    bearer: Option<String>,
    max_bytes: u64,
}

fn transient(e: reqwest::Error) -> MediaError {
    MediaError::Transient(if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "transport error".into()
    })
}

fn check(status: StatusCode) -> Result<(), MediaError> {
    if status.is_success() {
        Ok(())
    } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(MediaError::Transient(format!("HTTP {}", status.as_u16())))
    } else {
        Err(MediaError::Refused {
            status: status.as_u16(),
        })
    }
}

impl MediaClient {
    pub fn new(config: &MediaConfig) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(config.timeout).build()?,
            base: config
                .api_base_url
                .as_ref()
                .map(|b| b.trim_end_matches('/').to_owned()),
            bearer: config
                .access_token
                .as_ref()
                .map(|t| format!("Bearer {}", t.expose())),
            max_bytes: config.max_bytes,
        })
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.get(url);
        match &self.bearer {
            Some(b) => r.header(reqwest::header::AUTHORIZATION, b),
            None => r,
        }
    }

    /// Resolves a media id and downloads the bytes, at most `max_bytes`.
    pub async fn fetch(&self, media_id: &str) -> Result<Vec<u8>, MediaError> {
        let base = self.base.as_ref().ok_or(MediaError::NotConfigured)?;
        let response = self
            .get(&format!("{base}/{media_id}"))
            .send()
            .await
            .map_err(transient)?;
        check(response.status())?;
        let info: MediaInfo = response.json().await.map_err(|_| MediaError::Invalid)?;
        let declared = info.file_size.as_ref().and_then(|v| match v {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        });
        if declared.is_some_and(|size| size > self.max_bytes) {
            return Err(MediaError::TooLarge {
                limit: self.max_bytes,
            });
        }
        let response = self.get(&info.url).send().await.map_err(transient)?;
        check(response.status())?;
        if response
            .content_length()
            .is_some_and(|l| l > self.max_bytes)
        {
            return Err(MediaError::TooLarge {
                limit: self.max_bytes,
            });
        }
        let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(self.max_bytes) as usize);
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(transient)?;
            if bytes.len() as u64 + chunk.len() as u64 > self.max_bytes {
                return Err(MediaError::TooLarge {
                    limit: self.max_bytes,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}
