//! The one pipeline step between "content fetched, checked and hashed" and
//! "mapped": what is archived is derived from what was received by a named
//! [`Transformation`], and both hashes travel on to the Provenance and the
//! proof leaf (docs/media-minimisation.md).

use std::borrow::Cow;

use bytes::Bytes;

use super::redact;
use super::spool::Content;
use super::strip::{Format, strip};
use crate::event::{Body, Message};
use crate::prove::ContentHashes;
use crate::reason::Reason;
use crate::store::RedactionRequest;

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
    pub content: Content<'m>,
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
        content: Content::Memory(Cow::Owned(content)),
        derivation: Derivation {
            received,
            transformation,
        },
    }
}

/// What a `review_before_archive` rule asks of this message.
#[derive(Debug, Clone, Copy)]
pub enum Review<'r> {
    /// No rule asks for review: minimise by default.
    NotAsked,
    /// Review is asked and no reviewer's request applies yet (a fresh
    /// arrival, or a release without `quarantine redact`): hold it.
    Pending,
    /// A reviewer's request, applied on release.
    Requested(&'r RedactionRequest),
}

impl<'r> Review<'r> {
    /// Review asked: `Pending` without a request, else `Requested`.
    pub fn of(request: &'r Option<RedactionRequest>) -> Self {
        request.as_ref().map_or(Self::Pending, Self::Requested)
    }
}

/// The outcome of minimisation.
#[derive(Debug)]
pub enum Minimised<'m> {
    /// Archive these bytes.
    Archive(Prepared<'m>),
    /// Quarantine for this reason ([`Reason::MetadataUnstrippable`],
    /// [`Reason::RedactionFailed`]).
    Refuse(Reason),
    /// Hold the received bytes sealed for review
    /// ([`Reason::ReviewRedaction`]); the KIS gets nothing yet.
    HoldForReview(Cow<'m, [u8]>),
}

/// Whether minimising `m` under `review` needs its bytes in memory
/// (`head`: its first bytes, [`super::spool::HEAD_BYTES`]): media under
/// review (held sealed, or redacted) and media whose metadata is removed
/// (JPEG, PNG, WebP, PDF). Media passed unchanged or refused do not.
pub fn needs_memory(m: &Message, head: &[u8], review: Review<'_>) -> bool {
    matches!(m.body, Body::Media(_))
        && (!matches!(review, Review::NotAsked) || Format::sniff(head).is_some())
}

/// Whether content sniffed from `head` (else of the declared `mime_type`)
/// passes unchanged under `media.unstripped_types`. Text declared as text
/// is judged by its declared type: a plain text that begins like markup
/// (`<p>`, `<!--`) or a script (`#!`) sniffs as `text/html` or
/// `text/x-shellscript`, but text carries no metadata container to strip.
fn passes(head: &[u8], mime_type: &str, passes_unstripped: impl Fn(&str) -> bool) -> bool {
    let judged = match infer::get(head).map(|t| t.mime_type()) {
        Some(sniffed) if sniffed.starts_with("text/") && mime_type.starts_with("text/") => {
            mime_type
        }
        Some(sniffed) => sniffed,
        None => mime_type,
    };
    passes_unstripped(judged)
}

/// Derives the bytes to archive from the received `content` (hashed
/// `received`), without IO: text as is; media stripped of metadata
/// losslessly, or passed unchanged when `passes_unstripped` accepts the
/// sniffed (else declared) media type (`media.unstripped_types`), or
/// refused `metadata_unstrippable`; media under `review` held, or rendered
/// with the reviewer's rectangles black (`redacted`).
///
/// Spooled content is only ever passed unchanged or refused: the caller
/// loads content that [`needs_memory`] into memory first, within
/// `media.in_memory_max_bytes`; spooled content that needs memory here is
/// refused `media_too_large`.
pub fn minimise<'m>(
    m: &Message,
    content: Content<'m>,
    received: ContentHashes,
    review: Review<'_>,
    passes_unstripped: impl Fn(&str) -> bool,
) -> Minimised<'m> {
    let unchanged = |content, transformation| {
        Minimised::Archive(Prepared {
            content,
            hashes: received,
            derivation: Derivation {
                received,
                transformation,
            },
        })
    };
    let Body::Media(media) = &m.body else {
        return unchanged(content, Transformation::None);
    };
    let content = match content {
        Content::Memory(c) => c,
        spooled @ Content::Spooled(_) => {
            return if needs_memory(m, spooled.head(), review) {
                Minimised::Refuse(Reason::MediaTooLarge)
            } else if passes(spooled.head(), &media.mime_type, passes_unstripped) {
                unchanged(spooled, Transformation::NotStripped)
            } else {
                Minimised::Refuse(Reason::MetadataUnstrippable)
            };
        }
    };
    match review {
        Review::NotAsked => {}
        Review::Pending => return Minimised::HoldForReview(content),
        Review::Requested(request) if request.received_sha256 != received.sha256_hex() => {
            return Minimised::Refuse(Reason::RedactionFailed);
        }
        Review::Requested(request) if !request.rects.is_empty() => {
            return match redact::redact(&content, &request.rects) {
                Ok(bytes) => {
                    Minimised::Archive(derived(bytes.into(), received, Transformation::Redacted))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "redaction failed");
                    Minimised::Refuse(Reason::RedactionFailed)
                }
            };
        }
        // No rectangles: the reviewer found nothing to black out.
        Review::Requested(_) => {}
    }
    let Some(format) = Format::sniff(&content) else {
        if passes(&content, &media.mime_type, passes_unstripped) {
            return unchanged(Content::Memory(content), Transformation::NotStripped);
        }
        return Minimised::Refuse(Reason::MetadataUnstrippable);
    };
    match strip(format, bytes_of(content)) {
        Ok(s) => Minimised::Archive(derived(s.bytes, received, Transformation::MetadataRemoved)),
        Err(e) => {
            tracing::warn!(error = %e, "metadata cannot be removed");
            Minimised::Refuse(Reason::MetadataUnstrippable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::passes;

    #[test]
    fn text_declared_as_text_is_judged_by_its_declared_type() {
        let plain = |t: &str| t == "text/plain";
        for head in [
            &b"<p>Befund vom 3.12."[..],
            b"<!-- Notiz -->",
            b"#!/bin/sh\necho",
        ] {
            assert!(passes(head, "text/plain", plain), "{head:?}");
        }
        // Other content goes by its bytes.
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert!(!passes(png, "text/plain", plain));
        assert!(passes(b"<p>x", "text/html", |t| t == "text/html"));
    }
}
