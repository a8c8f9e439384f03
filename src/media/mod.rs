//! Fetching media by reference from a WhatsApp-style media API:
//! `GET {base}/{media-id}` answers `{url, mime_type, sha256, file_size}`,
//! then `GET {url}` with the same bearer token streams the bytes. Matrix
//! `mxc://server/id` references are downloaded through the authenticated
//! media API, `GET {homeserver}/_matrix/client/v1/media/download/{server}/{id}`
//! with the bot's token (Matrix declares no hash: the archive hash is computed
//! from the downloaded bytes). Downloads stop at the configured size limit.
//!
//! Before archive the content is minimised ([`minimise`]): metadata removed
//! ([`strip`], [`pdf`]), or redacted on review ([`redact`]).

pub mod minimise;
mod pdf;
pub mod redact;
pub mod spool;
pub mod strip;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::config::secret::Secret;
use crate::event::EncryptedAttachment;
use crate::prove::ContentHashes;
use crate::reason::Reason;
use spool::{Content, Hasher, SpoolDir, SpoolWriter};
use std::path::PathBuf;
use std::time::Duration;

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
    /// An encrypted attachment's ciphertext differs from its declared
    /// `hashes.sha256` (substituted or damaged).
    #[error("ciphertext does not match its declared hash")]
    CiphertextMismatch,
}

impl MediaError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }

    /// Stable reason code for quarantine.
    pub fn reason(&self) -> Reason {
        match self {
            Self::NotConfigured => Reason::MediaApiNotConfigured,
            Self::TooLarge { .. } => Reason::MediaTooLarge,
            Self::Refused { .. } => Reason::MediaUnavailable,
            Self::Transient(_) => Reason::MediaTransient,
            Self::Invalid => Reason::MediaApiInvalid,
            Self::CiphertextMismatch => Reason::MediaHashMismatch,
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
    matrix: Option<(reqwest::Url, String)>,
    unstripped: MediaTypes,
    /// Downloads longer than this are spooled (`kis.binary_upload_threshold`).
    spool_above: u64,
    spool_dir: SpoolDir,
    in_memory_max: u64,
}

/// A downloaded medium (decrypted, for an encrypted attachment) and the
/// hashes of its bytes, computed while it streamed.
#[derive(Debug)]
pub struct Fetched {
    pub content: Content<'static>,
    pub hashes: ContentHashes,
}

fn spool_error(e: std::io::Error) -> MediaError {
    tracing::warn!(kind = ?e.kind(), "media spool write failed");
    MediaError::Transient("spool write failed".into())
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
            matrix: None,
            unstripped: MediaTypes::new(config.unstripped_types.clone()),
            spool_above: u64::MAX,
            spool_dir: SpoolDir::new(config.spool_dir.as_deref()),
            in_memory_max: config.in_memory_max_bytes,
        })
    }

    /// Spools downloads longer than `threshold` bytes to `media.spool_dir`
    /// instead of holding them in memory (default: never).
    pub fn spooling_above(mut self, threshold: u64) -> Self {
        self.spool_above = threshold;
        self
    }

    /// Where spools are made (`media.spool_dir`).
    pub fn spool_dir(&self) -> &SpoolDir {
        &self.spool_dir
    }

    /// `media.in_memory_max_bytes`: the largest medium loaded whole into
    /// memory for the steps that need it (metadata removal of JPEG, PNG,
    /// WebP and PDF, redaction, holding for review, MDM output).
    pub fn in_memory_max(&self) -> u64 {
        self.in_memory_max
    }

    /// Also fetches `mxc://` references from the homeserver in `config`.
    pub fn with_matrix(mut self, config: &crate::source::MatrixConfig) -> Self {
        if let (Some(base), Some(token)) = (&config.homeserver_url, &config.access_token)
            && let Ok(base) = reqwest::Url::parse(base)
        {
            self.matrix = Some((base, format!("Bearer {}", token.expose())));
        }
        self
    }

    async fn fetch_mxc(
        &self,
        uri: &str,
        decrypt: Option<&EncryptedAttachment>,
    ) -> Result<Fetched, MediaError> {
        let (base, bearer) = self.matrix.as_ref().ok_or(MediaError::NotConfigured)?;
        let (server, id) =
            crate::delete::matrix::parse_mxc(uri).ok_or(MediaError::Refused { status: 400 })?;
        let url = crate::delete::matrix::endpoint(
            base,
            &["_matrix", "client", "v1", "media", "download", server, id],
        );
        let response = self
            .http
            .get(url)
            .header(reqwest::header::AUTHORIZATION, bearer)
            .send()
            .await
            .map_err(transient)?;
        check(response.status())?;
        self.read_capped(response, None, decrypt).await
    }

    /// Streams the body, at most `max_bytes`: decrypted chunk by chunk when
    /// `decrypt` is given (AES-256-CTR; the ciphertext's SHA-256 checked at
    /// the end), hashed, in memory up to the spool threshold and spooled
    /// beyond it. Memory: the threshold plus a write buffer.
    async fn read_capped(
        &self,
        response: reqwest::Response,
        declared: Option<u64>,
        decrypt: Option<&EncryptedAttachment>,
    ) -> Result<Fetched, MediaError> {
        use aes::cipher::{KeyIvInit, StreamCipher};
        let too_large = || MediaError::TooLarge {
            limit: self.max_bytes,
        };
        if response
            .content_length()
            .is_some_and(|l| l > self.max_bytes)
        {
            return Err(too_large());
        }
        let expected = declared.or(response.content_length()).unwrap_or(0);
        let mut memory =
            Vec::with_capacity(expected.min(self.max_bytes).min(self.spool_above) as usize);
        let mut spool: Option<SpoolWriter> = None;
        let mut hasher = Hasher::default();
        let mut cipher = decrypt.map(|f| {
            (
                ctr::Ctr128BE::<aes::Aes256>::new(&f.key.into(), &f.iv.into()),
                sha2::Sha256::default(),
            )
        });
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(transient)?;
            if hasher.len() + chunk.len() as u64 > self.max_bytes {
                return Err(too_large());
            }
            let mut chunk = Vec::from(chunk);
            if let Some((cipher, ciphertext)) = &mut cipher {
                sha2::Digest::update(ciphertext, &chunk);
                cipher.apply_keystream(&mut chunk);
            }
            hasher.update(&chunk);
            if spool.is_none() && (memory.len() + chunk.len()) as u64 > self.spool_above {
                let mut w = SpoolWriter::create(&self.spool_dir)
                    .await
                    .map_err(spool_error)?;
                w.write(&memory).await.map_err(spool_error)?;
                memory = Vec::new();
                spool = Some(w);
            }
            match &mut spool {
                Some(w) => w.write(&chunk).await.map_err(spool_error)?,
                None => memory.extend_from_slice(&chunk),
            }
        }
        if let (Some((_, ciphertext)), Some(file)) = (cipher, decrypt)
            && <[u8; 32]>::from(sha2::Digest::finalize(ciphertext)) != file.ciphertext_sha256
        {
            return Err(MediaError::CiphertextMismatch);
        }
        let content = match spool {
            Some(w) => Content::Spooled(w.finish().await.map_err(spool_error)?),
            None => Content::Memory(memory.into()),
        };
        Ok(Fetched {
            content,
            hashes: hasher.finish(),
        })
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Whether content of `mime_type` (sniffed, else declared), whose
    /// metadata chartbridge cannot remove, is archived unchanged
    /// (`media.unstripped_types`; `type/*` patterns, parameters ignored).
    pub fn passes_unstripped(&self, mime_type: &str) -> bool {
        self.unstripped.contains(mime_type)
    }

    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.get(url);
        match &self.bearer {
            Some(b) => r.header(reqwest::header::AUTHORIZATION, b),
            None => r,
        }
    }

    /// Resolves a media id (or an `mxc://` URI) and downloads the bytes,
    /// at most `max_bytes`, spooled above the spool threshold.
    pub async fn fetch(&self, media_id: &str) -> Result<Fetched, MediaError> {
        self.fetch_timed(media_id, None).await
    }

    /// Downloads an encrypted attachment's ciphertext and decrypts it while
    /// it streams; [`MediaError::CiphertextMismatch`] when the ciphertext
    /// is not the one its sender hashed. The hashes are the plaintext's.
    pub async fn fetch_encrypted(&self, file: &EncryptedAttachment) -> Result<Fetched, MediaError> {
        self.fetch_timed(&file.url, Some(file)).await
    }

    async fn fetch_timed(
        &self,
        media_id: &str,
        decrypt: Option<&EncryptedAttachment>,
    ) -> Result<Fetched, MediaError> {
        let started = std::time::Instant::now();
        let result = self.fetch_untimed(media_id, decrypt).await;
        let outcome = result
            .as_ref()
            .map_or_else(|e| e.reason().as_str(), |_| "ok");
        crate::telemetry::measure::media_download(outcome, started.elapsed());
        result
    }

    async fn fetch_untimed(
        &self,
        media_id: &str,
        decrypt: Option<&EncryptedAttachment>,
    ) -> Result<Fetched, MediaError> {
        if media_id.starts_with("mxc://") {
            return self.fetch_mxc(media_id, decrypt).await;
        }
        let base = self.base.as_ref().ok_or(MediaError::NotConfigured)?;
        let response = self
            .get(&crate::push::url::build(base, &[media_id], &[]))
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
        self.read_capped(response, declared, decrypt).await
    }
}

/// Compares downloaded bytes with what the messenger declared for them
/// (Matrix `info.size` and `info.mimetype`, the canonical event's `size`
/// and `mime_type`). Answers the quarantine reason and a detail naming the
/// field, or `None` when they agree:
///
/// - `media_size_mismatch`: a declared size differs from the byte count.
/// - `media_type_mismatch`: the bytes are recognisably (magic numbers, the
///   `infer` crate) of another family than declared: image, audio/video,
///   text, application. Unrecognised bytes, `application/octet-stream` and
///   differences within a family (`image/png` sent as `image/jpeg`, an
///   `audio/mp4` that sniffs as `video/mp4`) are not a mismatch.
///
/// `len` is the byte count and `head` the first bytes
/// ([`spool::HEAD_BYTES`] suffice for sniffing).
pub fn declared_mismatch(
    media: &crate::event::Media,
    len: u64,
    head: &[u8],
) -> Option<(Reason, String)> {
    declared_mismatch_at(media, len, head, "info")
}

/// [`declared_mismatch`] of a medium declared in `object` (the details
/// name `{object}.size` and `{object}.mimetype`; a WhatsApp medium's
/// object is its type, `document`, and its field `mime_type`).
pub fn declared_mismatch_at(
    media: &crate::event::Media,
    len: u64,
    head: &[u8],
    object: &str,
) -> Option<(Reason, String)> {
    let mime_field = if object == "info" {
        "mimetype"
    } else {
        "mime_type"
    };
    if let Some(size) = media.declared_size
        && size != len
    {
        return Some((
            Reason::MediaSizeMismatch,
            format!("{object}.size: declared {size} bytes, downloaded {len}"),
        ));
    }
    let declared = media
        .mime_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let sniffed = infer::get(head)?.mime_type();
    if declared == "application/octet-stream" || family(&declared) == family(sniffed) {
        return None;
    }
    Some((
        Reason::MediaTypeMismatch,
        format!("{object}.{mime_field}: declared {declared}, the bytes are {sniffed}"),
    ))
}

/// The family a media type belongs to for [`declared_mismatch`]: audio and
/// video share containers (MP4, Ogg, WebM, Matroska).
fn family(mime: &str) -> &str {
    match mime {
        "application/ogg" | "application/mp4" => "av",
        // XML documents of every vocabulary (`image/svg+xml`,
        // `application/gpx+xml`, RFC 7303 `+xml`) sniff as `text/xml`.
        m if m.ends_with("+xml") || m == "application/xml" || m == "text/xml" => "xml",
        m => match m.split('/').next().unwrap_or_default() {
            "audio" | "video" => "av",
            top => top,
        },
    }
}

/// A list of media type patterns (`type/subtype` or `type/*`, lower case)
/// as `media.allowed_types` and `media.unstripped_types` give them.
#[derive(Debug, Clone, Default)]
pub struct MediaTypes(Vec<String>);

impl MediaTypes {
    pub fn new(patterns: Vec<String>) -> Self {
        Self(
            patterns
                .into_iter()
                .map(|t| t.trim().to_ascii_lowercase())
                .collect(),
        )
    }

    /// `type/subtype` matches itself and `type/*` (RFC 6838 names, case
    /// insensitive); parameters are ignored; a value without `/` matches
    /// nothing.
    pub fn contains(&self, mime_type: &str) -> bool {
        let essence = mime_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let Some((top, _)) = essence.split_once('/') else {
            return false;
        };
        self.0.iter().any(|allowed| {
            allowed == &essence || allowed.strip_suffix("/*").is_some_and(|t| t == top)
        })
    }
}

/// `[media]`: where media referenced by id are fetched from.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Base of a WhatsApp-style media API: `GET {base}/{media-id}` answers the URL.
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// Bearer token for the media API and the download.
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// Largest accepted medium; larger ones are quarantined.
    #[serde(default = "max_media_bytes")]
    pub max_bytes: u64,
    /// Timeout of one media download.
    #[serde(default = "media_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Media types archived (`type/subtype` or `type/*`); others are
    /// quarantined as `unsupported_media_type`.
    #[serde(default = "allowed_media_types")]
    pub allowed_types: Vec<String>,
    /// Media types archived unchanged although chartbridge cannot remove
    /// their metadata (recorded `not-stripped` in the Provenance and the
    /// proof leaf). Any other type that is not JPEG, PNG, WebP or PDF is
    /// quarantined `metadata_unstrippable` (docs/media-minimisation.md).
    #[serde(default = "unstripped_media_types")]
    pub unstripped_types: Vec<String>,
    /// Directory of the unnamed, owner-only temporary files that media
    /// above `kis.binary_upload_threshold` are spooled to while they are
    /// downloaded and uploaded (`src/media/spool.rs`); default the system's
    /// temporary directory. Put it on the state volume.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// The largest medium held whole in memory for the steps that need
    /// it: metadata removal of JPEG, PNG, WebP and PDF, redaction, holding
    /// for review (the sealed original), MDM^T02 output. A larger medium
    /// that needs one of them is quarantined `media_too_large`; peak memory
    /// of such a step is about three times the medium.
    #[serde(default = "max_media_bytes")]
    pub in_memory_max_bytes: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            api_base_url: None,
            access_token: None,
            max_bytes: max_media_bytes(),
            timeout: media_timeout(),
            allowed_types: allowed_media_types(),
            unstripped_types: unstripped_media_types(),
            spool_dir: None,
            in_memory_max_bytes: max_media_bytes(),
        }
    }
}

fn max_media_bytes() -> u64 {
    64 * 1024 * 1024
}
fn media_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}
fn unstripped_media_types() -> Vec<String> {
    ["video/*", "audio/*", "text/plain"]
        .map(String::from)
        .to_vec()
}
fn allowed_media_types() -> Vec<String> {
    [
        "image/*",
        "video/*",
        "audio/*",
        "application/pdf",
        "text/plain",
    ]
    .map(String::from)
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Media, MediaLocation};
    use crate::reason::Reason;

    fn media(mime: &str, size: Option<u64>) -> Media {
        Media {
            mime_type: mime.into(),
            file_name: None,
            caption: None,
            declared_size: size,
            declared_sha256: None,
            location: MediaLocation::Reference("mxc://h/x".into()),
        }
    }

    fn mismatch(m: &Media, bytes: &[u8]) -> Option<(Reason, String)> {
        declared_mismatch(m, bytes.len() as u64, bytes)
    }

    #[test]
    fn declared_size_and_type_are_compared_with_the_bytes() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\0\0\0\0";
        let pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n";
        assert_eq!(
            mismatch(&media("image/png", Some(png.len() as u64)), png),
            None
        );
        // Within a family, and unrecognised bytes, are no mismatch.
        assert_eq!(mismatch(&media("image/jpeg", None), png), None);
        assert_eq!(mismatch(&media("text/plain", None), b"plain words"), None);
        assert_eq!(
            mismatch(&media("application/octet-stream", None), pdf),
            None
        );
        let (reason, detail) = mismatch(&media("image/png", Some(10)), png).unwrap();
        assert_eq!(reason, Reason::MediaSizeMismatch);
        assert!(detail.starts_with("info.size:"), "{detail}");
        let (reason, detail) = mismatch(&media("image/jpeg", None), pdf).unwrap();
        assert_eq!(reason, Reason::MediaTypeMismatch);
        assert_eq!(
            detail,
            "info.mimetype: declared image/jpeg, the bytes are application/pdf"
        );
        assert_eq!(family("audio/mp4"), family("video/mp4"));
        // An SVG (or any `+xml` document) sniffs as `text/xml`: no mismatch.
        let svg = b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"/>";
        assert_eq!(mismatch(&media("image/svg+xml", None), svg), None);
        // A WhatsApp medium is named by its object and `mime_type`.
        let (_, detail) = declared_mismatch_at(
            &media("image/jpeg", None),
            pdf.len() as u64,
            pdf,
            "document",
        )
        .unwrap();
        assert_eq!(
            detail,
            "document.mime_type: declared image/jpeg, the bytes are application/pdf"
        );
    }
}
