//! The one pipeline step between "content fetched, checked and hashed" and
//! "mapped": what is archived is derived from what was received by a named
//! [`Transformation`], and both hashes travel on to the Provenance and the
//! proof leaf (docs/media-minimisation.md).

use std::borrow::Cow;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::redact;
use super::strip::{Format, strip};
use crate::event::{Body, Message};
use crate::pipeline::{Mode, Outcome, Pipeline, Transient};
use crate::prove::ContentHashes;

/// Quarantine reasons of this step.
pub mod reason {
    /// The content's metadata cannot be removed (it does not parse as the
    /// format it sniffs as, a PDF is encrypted, or its type is neither
    /// strippable nor in `media.unstripped_types`).
    pub const METADATA_UNSTRIPPABLE: &str = "metadata_unstrippable";
    /// A rule asks for review before archive: held sealed until a reviewer
    /// gives the rectangles to black out (`quarantine redact`).
    pub const REVIEW_REDACTION: &str = "review_redaction";
    /// The reviewer's rectangles could not be applied (outside the image,
    /// not an image, or the content changed since the review).
    pub const REDACTION_FAILED: &str = "redaction_failed";
}

/// How the archived bytes were derived from the received ones; the name
/// is bound in the proof leaf and the Provenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transformation {
    /// Archived as received (text).
    None,
    /// Metadata removed losslessly (JPEG, PNG, WebP, PDF).
    MetadataRemoved,
    /// Archived unchanged by policy (`media.unstripped_types`): metadata,
    /// if the format has any, was not removed.
    NotStripped,
    /// Rendered anew with a reviewer's rectangles blacked out.
    Redacted,
}

impl Transformation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::MetadataRemoved => "metadata-removed",
            Self::NotStripped => "not-stripped",
            Self::Redacted => "redacted",
        }
    }

    /// A sentence for the Provenance entity.
    pub fn describe(self) -> &'static str {
        match self {
            Self::None => "archived as received",
            Self::MetadataRemoved => "archived with its metadata removed",
            Self::NotStripped => "archived unchanged; its metadata was not removed",
            Self::Redacted => "archived as a rendering with regions blacked out on review",
        }
    }
}

/// The received content's hashes and what was done to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Derivation {
    pub received: ContentHashes,
    pub transformation: Transformation,
}

/// What the rest of the pipeline archives.
#[derive(Debug)]
pub struct Prepared<'m> {
    pub content: Cow<'m, [u8]>,
    /// Hashes of `content`, the archived bytes.
    pub hashes: ContentHashes,
    pub derivation: Derivation,
}

fn bytes_of(content: Cow<'_, [u8]>) -> Bytes {
    match content {
        Cow::Owned(v) => Bytes::from(v),
        Cow::Borrowed(b) => Bytes::copy_from_slice(b),
    }
}

fn derived<'m>(
    bytes: Bytes,
    received: ContentHashes,
    transformation: Transformation,
) -> Prepared<'m> {
    let content: Vec<u8> = bytes.into();
    Prepared {
        hashes: ContentHashes::of(&content),
        content: Cow::Owned(content),
        derivation: Derivation {
            received,
            transformation,
        },
    }
}

impl Pipeline {
    /// Derives the bytes to archive from the received `content` (hashed
    /// `received`): text as is; media stripped of metadata, or passed by
    /// `media.unstripped_types`, or quarantined `metadata_unstrippable`;
    /// content a `review_before_archive` rule decided is held sealed
    /// (`review_redaction`) until a reviewer's request, then rendered.
    /// `Err(outcome)` when the message was quarantined instead.
    pub(crate) async fn minimise<'m>(
        &self,
        m: &Message,
        (mode, rule): (&Mode, &str),
        content: Cow<'m, [u8]>,
        received: ContentHashes,
        now: DateTime<Utc>,
    ) -> Result<Result<Prepared<'m>, Outcome>, Transient> {
        let Body::Media(media) = &m.body else {
            return Ok(Ok(Prepared {
                content,
                hashes: received,
                derivation: Derivation {
                    received,
                    transformation: Transformation::None,
                },
            }));
        };
        let quarantine =
            |reason: &'static str| self.quarantine_as(m, mode, (reason, None), None, now);
        if self.rules.review_before_archive(rule) {
            let Some(request) = self
                .store
                .redaction_request(&m.key)
                .await
                .map_err(Transient::store)?
                .filter(|_| matches!(mode, Mode::Release { .. }))
            else {
                return self.hold_for_review(m, mode, &content, now).await.map(Err);
            };
            if request.received_sha256 != received.sha256_hex() {
                return quarantine(reason::REDACTION_FAILED).await.map(Err);
            }
            if !request.rects.is_empty() {
                return Ok(match redact::redact(&content, &request.rects) {
                    Ok(bytes) => Ok(derived(bytes.into(), received, Transformation::Redacted)),
                    Err(e) => {
                        tracing::warn!(error = %e, "redaction failed");
                        Err(quarantine(reason::REDACTION_FAILED).await?)
                    }
                });
            }
        }
        let stripped = match Format::sniff(&content) {
            Some(format) => strip(format, bytes_of(content))
                .map(|s| derived(s.bytes, received, Transformation::MetadataRemoved)),
            None => {
                let sniffed = infer::get(&content).map(|t| t.mime_type());
                if self
                    .media
                    .passes_unstripped(sniffed.unwrap_or(&media.mime_type))
                {
                    return Ok(Ok(Prepared {
                        content,
                        hashes: received,
                        derivation: Derivation {
                            received,
                            transformation: Transformation::NotStripped,
                        },
                    }));
                }
                return quarantine(reason::METADATA_UNSTRIPPABLE).await.map(Err);
            }
        };
        match stripped {
            Ok(prepared) => Ok(Ok(prepared)),
            Err(e) => {
                tracing::warn!(error = %e, "metadata cannot be removed");
                quarantine(reason::METADATA_UNSTRIPPABLE).await.map(Err)
            }
        }
    }

    /// Quarantines `review_redaction` with the received bytes sealed as the
    /// held original (for `quarantine view`); the KIS gets nothing yet.
    async fn hold_for_review(
        &self,
        m: &Message,
        mode: &Mode,
        content: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Outcome, Transient> {
        let outcome = self
            .quarantine_as(
                m,
                mode,
                (reason::REVIEW_REDACTION, None),
                Some(content),
                now,
            )
            .await?;
        if matches!(mode, Mode::Release { .. }) {
            self.store
                .hold_original(&m.key, &self.sealer.seal(content))
                .await
                .map_err(Transient::store)?;
        }
        Ok(outcome)
    }
}
