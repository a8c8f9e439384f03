//! Binaries too large for a transaction bundle (FHIR R4 `Binary`,
//! http.html#update): uploaded before the transaction that references them
//! with `PUT Binary/{id}` (an update that creates with the client's id;
//! idempotent, so a retry after a crash rewrites the same resource), and
//! read back, in bounded memory both ways.
//!
//! The upload body is the FHIR JSON Binary resource, streamed: its
//! `data` element is base64-encoded chunk by chunk from the spool and the
//! bytes are hashed as they are sent (servers such as the dev server and
//! Helios refuse a raw body). The read-back asks for the raw bytes (`Accept`
//! the Binary's content type, FHIR R4 Binary "Serving Binary Resources
//! using the RESTful API") and, if the server answers FHIR JSON instead,
//! decodes `data` from the JSON stream ([`DataScanner`]); either way only
//! the hashes are kept.

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION};
use serde_json::json;

use super::{FHIR_JSON_R4, Kis, PushError, Retry, transport, type_and_id};
use crate::media::spool::{Hasher, Spool};
use crate::prove::ContentHashes;

/// The longest error body read from the KIS (an OperationOutcome).
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// What [`Kis::put_binary`] and [`Kis::read_binary`] measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streamed {
    /// Bytes (decoded, not base64).
    pub len: u64,
    pub hashes: ContentHashes,
}

enum Phase {
    Prefix(Bytes),
    Data(u64),
    Suffix,
    Done,
}

impl Kis {
    /// `PUT Binary/{id}` with `Prefer: return=minimal`: the Binary resource
    /// of `content_type` (and `security_context`, a literal reference)
    /// whose `data` is the spool's bytes, streamed. Answers the `Type/id`
    /// the KIS confirmed and the length and hashes of the bytes sent.
    /// Errors as for every KIS request ([`PushError`]); a spool that cannot
    /// be read and a 401 are transient.
    pub async fn put_binary(
        &self,
        id: &str,
        content_type: &str,
        security_context: &str,
        spool: &Spool,
    ) -> Result<(String, Streamed), PushError> {
        let _stage = crate::telemetry::measure::Stage::start("upload");
        let mut prefix = serde_json::to_vec(&json!({
            "resourceType": "Binary",
            "id": id,
            "contentType": content_type,
            "securityContext": {"reference": security_context},
        }))
        .expect("a JSON value serialises");
        prefix.pop();
        prefix.extend_from_slice(br#","data":""#);
        let suffix: &'static [u8] = b"\"}";
        let length = prefix.len() as u64 + spool.len().div_ceil(3) * 4 + suffix.len() as u64;
        let hasher = Arc::new(Mutex::new(Hasher::default()));
        let body = futures_util::stream::unfold(
            (Phase::Prefix(prefix.into()), spool.clone(), hasher.clone()),
            move |(phase, spool, hasher)| async move {
                let (item, next) = match phase {
                    Phase::Prefix(p) => (Ok(p), Phase::Data(0)),
                    Phase::Data(offset) => match spool.chunk(offset).await {
                        Ok(c) if c.is_empty() => (Ok(Bytes::from_static(suffix)), Phase::Suffix),
                        Ok(c) => {
                            hasher.lock().expect("hasher lock").update(&c);
                            let next = Phase::Data(offset + c.len() as u64);
                            (Ok(Bytes::from(STANDARD.encode(&c))), next)
                        }
                        Err(e) => (Err(e), Phase::Done),
                    },
                    Phase::Suffix | Phase::Done => return None,
                };
                let next = match next {
                    Phase::Suffix => Phase::Done,
                    n => n,
                };
                Some((item, (next, spool, hasher)))
            },
        );
        let request = self
            .request(reqwest::Method::PUT, &["Binary", id], &[])
            .header(CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON_R4))
            .header(CONTENT_LENGTH, length)
            .header("Prefer", "return=minimal")
            .body(reqwest::Body::wrap_stream(body));
        let response = self.send_streamed("upload", request).await?;
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| type_and_id(l, &self.base))
            .unwrap_or_else(|| format!("Binary/{id}"));
        drain(response).await?;
        let hasher = std::mem::take(&mut *hasher.lock().expect("hasher lock"));
        Ok((
            location,
            Streamed {
                len: hasher.len(),
                hashes: hasher.finish(),
            },
        ))
    }

    /// `GET {Binary/id}` asking for the raw bytes of `content_type`; the
    /// length and hashes of the bytes the KIS holds, read as a stream
    /// (raw, or the `data` of a FHIR JSON answer).
    pub async fn read_binary(
        &self,
        reference: &str,
        content_type: &str,
    ) -> Result<Streamed, PushError> {
        let segments = super::url::reference_segments(reference);
        let accept = HeaderValue::from_str(content_type)
            .ok()
            .filter(|_| !content_type.contains("json"))
            .unwrap_or_else(|| HeaderValue::from_static(FHIR_JSON_R4));
        let request = self
            .request(reqwest::Method::GET, &segments, &[])
            .header(ACCEPT, accept);
        let response = self.send_streamed("read", request).await?;
        let json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        let mut hasher = Hasher::default();
        let mut scanner = json.then(DataScanner::default);
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(transport)?;
            match &mut scanner {
                Some(s) => s
                    .feed(&chunk, |b| hasher.update(b))
                    .map_err(|e| PushError::Incomplete(format!("Binary JSON: {e}")))?,
                None => hasher.update(&chunk),
            }
        }
        if let Some(s) = scanner {
            s.finish()
                .map_err(|e| PushError::Incomplete(format!("Binary JSON: {e}")))?;
        }
        Ok(Streamed {
            len: hasher.len(),
            hashes: hasher.finish(),
        })
    }

    /// Sends through the circuit breaker like every request, but hands a
    /// 2xx response back unread (its body may be large). A 401 is
    /// transient (the token is invalidated; the next attempt fetches a
    /// fresh one: a streamed body cannot be sent twice).
    async fn send_streamed(
        &self,
        operation: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, PushError> {
        self.through_breaker(operation, self.send_streamed_once(request))
            .await
    }

    async fn send_streamed_once(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, PushError> {
        let header = self.auth.header().await?;
        let request = match &header {
            Some(h) => request.header(reqwest::header::AUTHORIZATION, h.clone()),
            None => request,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        // The client's credentials, not the content: transient whatever
        // the auth kind (a refreshing one fetches a new token first).
        if status == StatusCode::UNAUTHORIZED {
            if let Some(rejected) = header.filter(|_| self.auth.refreshes()) {
                self.auth.invalidate(&rejected).await;
            }
            return Err(PushError::Transient {
                detail: "HTTP 401".into(),
                retry_after: None,
            });
        }
        match Retry::of_status(status) {
            Retry::Success => Ok(response),
            Retry::Transient => Err(PushError::Transient {
                detail: format!("HTTP {}", status.as_u16()),
                retry_after: response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(std::time::Duration::from_secs),
            }),
            Retry::Permanent => {
                let body = bounded(response).await;
                Err(PushError::Rejected {
                    status: status.as_u16(),
                    outcome: serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .filter(|v| v["resourceType"] == "OperationOutcome"),
                })
            }
        }
    }
}

/// Reads and discards a response body.
async fn drain(response: reqwest::Response) -> Result<(), PushError> {
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        chunk.map_err(transport)?;
    }
    Ok(())
}

/// At most [`MAX_ERROR_BODY`] bytes of a response body.
async fn bounded(response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        if body.len() + chunk.len() > MAX_ERROR_BODY {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    body
}

/// Why a FHIR JSON Binary's `data` cannot be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScanError {
    #[error("no data element")]
    NoData,
    #[error("invalid base64 in data")]
    Base64,
    #[error("unexpected escape in data")]
    Escape,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between tokens.
    #[default]
    Between,
    /// Inside a string other than `data`'s value; `escaped` after `\`.
    Str { escaped: bool },
    /// After the key `data` and its `:`, before the value.
    BeforeData,
    /// Inside `data`'s value; `escaped` after `\`.
    Data { escaped: bool },
    /// `data` decoded.
    Done,
}

/// Decodes the top-level `data` string of a FHIR JSON Binary as it
/// streams, in memory bounded by a few kilobytes: feed the body's chunks
/// with [`DataScanner::feed`], then call [`DataScanner::finish`]; the
/// decoded bytes go to `sink` in order. Other elements are skipped
/// without being parsed (a well-formed answer is assumed; a missing or
/// broken `data` is an error).
#[derive(Debug, Default)]
pub struct DataScanner {
    state: State,
    depth: u32,
    /// The string just closed (key candidates, at most 8 bytes kept).
    last: Vec<u8>,
    current: Vec<u8>,
    /// The last string was a key at depth 1 awaiting its `:`.
    key: bool,
    /// base64 characters not yet decoded.
    pending: Vec<u8>,
}

impl DataScanner {
    const DECODE_AT: usize = 4096;

    pub fn feed(&mut self, chunk: &[u8], mut sink: impl FnMut(&[u8])) -> Result<(), ScanError> {
        for &c in chunk {
            match self.state {
                State::Done => {}
                State::Str { escaped: true } => self.state = State::Str { escaped: false },
                State::Str { escaped: false } => match c {
                    b'\\' => self.state = State::Str { escaped: true },
                    b'"' => {
                        self.last = std::mem::take(&mut self.current);
                        self.key = self.depth == 1;
                        self.state = State::Between;
                    }
                    // Longer than any key of interest: kept at 9 bytes.
                    _ if self.current.len() <= 8 => self.current.push(c),
                    _ => {}
                },
                State::Between => match c {
                    b'"' => {
                        self.current.clear();
                        self.state = State::Str { escaped: false };
                    }
                    b':' if self.key && self.last == b"data" => self.state = State::BeforeData,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                    _ => {}
                },
                State::BeforeData => match c {
                    b'"' => self.state = State::Data { escaped: false },
                    b' ' | b'\t' | b'\r' | b'\n' => {}
                    _ => return Err(ScanError::NoData),
                },
                State::Data { escaped: true } => {
                    if c != b'/' {
                        return Err(ScanError::Escape);
                    }
                    self.pending.push(c);
                    self.state = State::Data { escaped: false };
                }
                State::Data { escaped: false } => match c {
                    b'\\' => self.state = State::Data { escaped: true },
                    b'"' => {
                        self.decode(true, &mut sink)?;
                        self.state = State::Done;
                    }
                    _ => {
                        self.pending.push(c);
                        if self.pending.len() >= Self::DECODE_AT {
                            self.decode(false, &mut sink)?;
                        }
                    }
                },
            }
            if self.state == State::Between
                && !matches!(c, b'"' | b':' | b' ' | b'\n' | b'\r' | b'\t')
            {
                self.key = false;
            }
        }
        Ok(())
    }

    fn decode(&mut self, last: bool, sink: &mut impl FnMut(&[u8])) -> Result<(), ScanError> {
        let n = if last {
            self.pending.len()
        } else {
            self.pending.len() / 4 * 4
        };
        let decoded = STANDARD
            .decode(&self.pending[..n])
            .map_err(|_| ScanError::Base64)?;
        sink(&decoded);
        self.pending.drain(..n);
        Ok(())
    }

    /// Ends the scan: an error unless `data` was found and closed.
    pub fn finish(self) -> Result<(), ScanError> {
        if self.state == State::Done {
            Ok(())
        } else {
            Err(ScanError::NoData)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(json: &[u8], chunk: usize) -> Result<Vec<u8>, ScanError> {
        let mut s = DataScanner::default();
        let mut out = Vec::new();
        for part in json.chunks(chunk) {
            s.feed(part, |b| out.extend_from_slice(b))?;
        }
        s.finish()?;
        Ok(out)
    }

    #[test]
    fn data_is_decoded_from_a_json_binary_in_any_chunking() {
        let bytes: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let b64 = STANDARD.encode(&bytes);
        let json = format!(
            r#"{{"resourceType":"Binary","id":"x","meta":{{"versionId":"2","tag":[{{"code":"data"}}]}},"contentType":"image/png","securityContext":{{"reference":"Patient/data"}}, "data" : "{}"}}"#,
            b64.replace('/', "\\/")
        );
        for chunk in [1, 3, 7, 1000, 100_000] {
            assert_eq!(
                scan(json.as_bytes(), chunk).unwrap(),
                bytes,
                "chunk {chunk}"
            );
        }
        // A "data" value or nested key is not the element.
        assert_eq!(
            scan(br#"{"resourceType":"Binary","contentType":"data"}"#, 5),
            Err(ScanError::NoData)
        );
        assert_eq!(
            scan(br#"{"meta":{"data":"AAAA"},"resourceType":"Binary"}"#, 5),
            Err(ScanError::NoData)
        );
        assert_eq!(scan(br#"{"data":"A!AA"}"#, 5), Err(ScanError::Base64));
        assert_eq!(scan(br#"{"data":"AA==","id":"1"}"#, 2).unwrap(), [0]);
    }
}
