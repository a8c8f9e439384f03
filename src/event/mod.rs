//! The input boundary. A broker payload becomes typed [`Message`]s here or is
//! rejected with a [`DecodeError`]; past this module nothing re-checks.
//!
//! Formats: the canonical event (`schemas/event.schema.json`), WhatsApp
//! Business Cloud API webhooks verbatim, and Matrix `m.room.message` events.

mod canonical;
pub mod matrix;
mod message;
pub mod signature;
mod strict;
mod whatsapp;
pub use whatsapp::is_group_conversation;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::reason::Reason;

pub use canonical::{CanonicalEvent, SCHEMA_ID};
pub use message::*;

/// Why a payload was refused. `code` is machine-readable and stable; `detail`
/// names places in the payload, never its values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct DecodeError {
    pub code: DecodeErrorCode,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodeErrorCode {
    TooLarge,
    InvalidUtf8,
    InvalidJson,
    UnknownFormat,
    SchemaViolation,
    InvalidField,
    DuplicateKey,
    /// A forwarded webhook signature does not match the body.
    BadSignature,
    /// A webhook that must be signed (an app secret is configured) came
    /// without its signature header.
    MissingSignature,
    /// The publisher is not allowed for the payload's source: its AMQP
    /// `user_id` is not in `[intake.sources.<name>] publishers`, or it came
    /// through another source's ingress exchange.
    UnauthorizedPublisher,
    /// The AMQP `content-encoding` property names an encoding of the body
    /// (`gzip`, …): events are published unencoded.
    UnsupportedEncoding,
}

impl DecodeErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::InvalidJson => "invalid_json",
            Self::UnknownFormat => "unknown_format",
            Self::SchemaViolation => "schema_violation",
            Self::InvalidField => "invalid_field",
            Self::DuplicateKey => "duplicate_key",
            Self::BadSignature => "bad_signature",
            Self::MissingSignature => "missing_signature",
            Self::UnsupportedEncoding => "unsupported_encoding",
            Self::UnauthorizedPublisher => "unauthorized_publisher",
        }
    }
}

impl std::fmt::Display for DecodeErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DecodeError {
    pub(crate) fn new(code: DecodeErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

/// The input formats recognised on the events queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Canonical,
    WhatsApp,
    Matrix,
}

impl Format {
    /// The source name of messages in this format (`canonical` for the
    /// canonical event, whose messages name their own source).
    pub fn source(self) -> &'static str {
        match self {
            Self::Canonical => "canonical",
            Self::WhatsApp => whatsapp::SOURCE,
            Self::Matrix => matrix::SOURCE,
        }
    }
}

/// What one broker payload holds. A WhatsApp webhook may carry several
/// messages, or none (status updates only).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decoded {
    pub format: Format,
    pub messages: Vec<Message>,
    /// Entries that may carry patient content but cannot be archived as
    /// decoded (an unknown message type, an encrypted attachment, one
    /// malformed entry of a batch): each is quarantined with its reason and
    /// kept sealed for review, never dropped.
    pub held: Vec<HeldEntry>,
    /// Entries that carry no patient content (delivery statuses, template
    /// and account updates, reactions), counted by kind so that nothing
    /// disappears unseen (`status` shows the counts).
    pub skipped: Vec<SkipKind>,
    /// Retractions of earlier messages by their sender (a Matrix
    /// `m.room.redaction`): an archived target is marked in the KIS.
    pub redactions: Vec<Redaction>,
    /// Conversations whose user the messenger says changed identity (a
    /// WhatsApp `system` message `user_changed_number`,
    /// `customer_identity_changed`, `user_changed_user_id`): whoever writes
    /// there next may be someone else, so the conversation is retired (its
    /// link goes, no phone number resolves it) and its next messages are
    /// held until a person links it again.
    pub identity_changes: Vec<IdentityChange>,
    /// The hold reason of an earlier, unreadable copy of these messages
    /// (a Matrix event quarantined [`Reason::Undecryptable`] whose room keys
    /// arrived later): that quarantine is released with this copy.
    pub supersedes_hold: Option<Reason>,
}

/// A conversation whose user changed identity ([`Decoded::identity_changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityChange {
    pub source: String,
    /// The conversation as in [`Message::conversation`]: a direct
    /// identifier, never logged.
    pub conversation: String,
    /// When the messenger says it happened; `None` when the notice gives
    /// no readable time (then it counts as of its processing).
    pub at: Option<DateTime<Utc>>,
}

/// A sender's retraction of one of its messages at the messenger.
#[derive(Debug, Clone, PartialEq)]
pub struct Redaction {
    /// The retraction event itself.
    pub key: MessageKey,
    /// The message it retracts.
    pub target: MessageKey,
    /// Who retracted it: a direct identifier, never logged.
    pub sender: String,
    pub at: DateTime<Utc>,
}

impl Decoded {
    /// An empty result of `format`.
    pub fn of(format: Format) -> Self {
        Self {
            format,
            ..Self::default()
        }
    }

    /// One payload that carries nothing to archive, of one kind.
    pub fn skip(format: Format, kind: SkipKind) -> Self {
        Self {
            skipped: vec![kind],
            ..Self::of(format)
        }
    }
}

/// An entry that cannot be archived as decoded. Its `key` is the
/// messenger's id where the entry has a usable one, otherwise a stable
/// digest of the entry (`entry-<hex>`), so a redelivery finds the same row.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldEntry {
    pub key: MessageKey,
    /// Why the entry is held.
    pub reason: Reason,
    /// Names the place and the defect in the entry, never its values.
    pub detail: String,
    /// The entry as received; kept sealed.
    pub raw: serde_json::Value,
}

/// Every `mxc://` URI in `value` (a Matrix event as received or
/// canonical, at any depth: `url`, `file.url`, `m.new_content`, thumbnails,
/// extensible-event blocks), each once. `unsigned` is
/// not read: the homeserver bundles other events there (the latest edit,
/// a thread's latest reply), whose media are theirs.
pub fn mxc_uris(value: &serde_json::Value) -> Vec<&str> {
    fn walk<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match v {
            serde_json::Value::String(s)
                if s.starts_with("mxc://") && !out.contains(&s.as_str()) =>
            {
                out.push(s);
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            serde_json::Value::Object(map) => map
                .iter()
                .filter(|(k, _)| k.as_str() != "unsigned")
                .for_each(|(_, i)| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut out);
    out
}

impl HeldEntry {
    /// The media a held Matrix entry names (its `mxc://` URIs), read from
    /// the entry as received: held before it became a message, it still
    /// shares them with other events ([`crate::store::Store::record_media_use`]).
    /// Empty for other sources, whose media ids are their message's own.
    pub fn media_references(&self) -> Vec<&str> {
        if self.key.source == matrix::SOURCE {
            mxc_uris(&self.raw)
        } else {
            Vec::new()
        }
    }

    /// An entry of `source` held under `reason`; keyed by `id` when it is a
    /// usable message id, else by a digest of the entry.
    pub fn new(
        source: &str,
        id: Option<&str>,
        reason: Reason,
        detail: impl Into<String>,
        raw: serde_json::Value,
    ) -> Self {
        let message_id = match id.filter(|i| is_message_id(i)) {
            Some(i) => i.to_owned(),
            None => {
                use sha2::Digest;
                let canonical = serde_json::to_vec(&raw).unwrap_or_default();
                let digest = sha2::Sha256::digest(&canonical);
                format!("entry-{}", hex::encode(&digest[..16]))
            }
        };
        Self {
            key: MessageKey {
                source: source.to_owned(),
                message_id,
            },
            reason,
            detail: detail.into(),
            raw,
        }
    }
}

/// A messenger message id we key rows by: 1–255 printable ASCII characters.
pub fn is_message_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 255 && id.chars().all(|c| c.is_ascii_graphic())
}

/// Why an entry carries nothing to archive. Counted per kind, by source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipKind {
    /// A delivery/read status of a message the business sent.
    Status,
    /// An emoji reaction to a message.
    Reaction,
    /// A webhook change of a field other than `messages` (template status,
    /// account or quality updates).
    NonMessageChange,
    /// A Matrix event that is not a room message (state, redaction, ...).
    NonMessageEvent,
    /// A system notice without patient content.
    System,
}

impl SkipKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Reaction => "reaction",
            Self::NonMessageChange => "non_message_change",
            Self::NonMessageEvent => "non_message_event",
            Self::System => "system",
        }
    }
}

/// Decodes a broker payload of at most `max_bytes`.
pub fn decode(payload: &[u8], max_bytes: usize) -> Result<Decoded, DecodeError> {
    if payload.len() > max_bytes {
        return Err(DecodeError::new(
            DecodeErrorCode::TooLarge,
            format!("payload of {} bytes exceeds {max_bytes}", payload.len()),
        ));
    }
    let text = std::str::from_utf8(payload).map_err(|e| {
        DecodeError::new(
            DecodeErrorCode::InvalidUtf8,
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    if text.starts_with('\u{feff}') {
        // RFC 8259 section 8.1: implementations MUST NOT add one.
        return Err(DecodeError::new(
            DecodeErrorCode::InvalidJson,
            "a UTF-8 byte order mark precedes the JSON text",
        ));
    }
    let value: serde_json::Value = strict::from_str(text).map_err(|e| {
        let message = e.to_string();
        if message.starts_with("number out of range") {
            // Valid JSON grammar (RFC 8259 section 6) beyond what is read.
            return DecodeError::new(
                DecodeErrorCode::InvalidField,
                format!(
                    "line {} column {}: number out of range",
                    e.line(),
                    e.column()
                ),
            );
        }
        if message.contains(strict::DUPLICATE) {
            return DecodeError::new(
                DecodeErrorCode::DuplicateKey,
                format!(
                    "line {} column {}: an object names a member twice",
                    e.line(),
                    e.column()
                ),
            );
        }
        DecodeError::new(
            DecodeErrorCode::InvalidJson,
            format!(
                "line {} column {}: {}",
                e.line(),
                e.column(),
                json_error_class(&e)
            ),
        )
    })?;
    let decoded = match sniff(&value) {
        Some(Format::Canonical) => Decoded {
            messages: vec![canonical::decode(value)?],
            ..Decoded::of(Format::Canonical)
        },
        Some(Format::WhatsApp) => whatsapp::decode(value)?,
        Some(Format::Matrix) => matrix::decode(value)?,
        None => {
            return Err(DecodeError::new(
                DecodeErrorCode::UnknownFormat,
                "neither a canonical event, a WhatsApp webhook nor a Matrix room event",
            ));
        }
    };
    check_years(&decoded)?;
    Ok(decoded)
}

/// Times the record can hold: FHIR dates have four-digit years from 0001.
fn check_years(decoded: &Decoded) -> Result<(), DecodeError> {
    use chrono::Datelike;
    let fits = |t: &DateTime<Utc>| (1..=9999).contains(&t.year());
    for (i, m) in decoded.messages.iter().enumerate() {
        if !fits(&m.sent_at) {
            return Err(DecodeError::new(
                DecodeErrorCode::InvalidField,
                format!("message {i}: send time outside the years 0001-9999"),
            ));
        }
        if m.received_at.as_ref().is_some_and(|t| !fits(t)) {
            return Err(DecodeError::new(
                DecodeErrorCode::InvalidField,
                format!("message {i}: receive time outside the years 0001-9999"),
            ));
        }
    }
    Ok(())
}

/// The essence of a declared media type, as the canonical event carries
/// it: `type/subtype` (RFC 6838 section 4.2, restricted names) lower-cased,
/// without parameters (`audio/ogg; codecs=opus` → `audio/ogg`, RFC 2045
/// section 5.1). `None` when the declaration is not of that shape (`image`,
/// `image/*`, `/png`, a space inside a name) or longer than 127 bytes.
pub(crate) fn media_type_essence(declared: &str) -> Option<String> {
    let essence = declared.split(';').next()?.trim().to_ascii_lowercase();
    let restricted_name = |name: &str| {
        name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    let (kind, subtype) = essence.split_once('/')?;
    (essence.len() <= 127 && restricted_name(kind) && restricted_name(subtype)).then_some(essence)
}

/// Decodes an event this worker sealed itself when a held item is opened
/// again (a quarantine release or review, a held split part, a held
/// transcript text): a sealed canonical form
/// ([`CanonicalEvent::from_message`]) is parsed without the JSON Schema.
/// The schema bounds what a *publisher* may send (`schemas/event.schema.json`),
/// while a sealed form carries what a source decoder accepted (a Matrix
/// caption longer than the schema's, a reply's event id of another
/// shape), so checking it again could leave a held message that can never
/// be released. The seal authenticates the bytes; the values the schema
/// cannot express (times, base64, hashes) are still checked. Anything that
/// is not a canonical form (a held entry's raw JSON) is decoded as
/// [`decode`] does, without a size limit.
///
/// Errors: [`DecodeError`] as [`decode`] gives them.
pub fn reopen(sealed: &[u8]) -> Result<Decoded, DecodeError> {
    if let Ok(event) = serde_json::from_slice::<CanonicalEvent>(sealed)
        && event.schema == SCHEMA_ID
    {
        let decoded = Decoded {
            messages: vec![event.into_message()?],
            ..Decoded::of(Format::Canonical)
        };
        check_years(&decoded)?;
        return Ok(decoded);
    }
    decode(sealed, usize::MAX)
}

fn json_error_class(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "io",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "data error",
        serde_json::error::Category::Eof => "unexpected end of input",
    }
}

/// Whether `payload` is a WhatsApp Business webhook (`"object":
/// "whatsapp_business_account"`); anything unparsable is not.
pub fn is_whatsapp_webhook(payload: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Object<'a> {
        #[serde(borrow)]
        object: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Object>(payload)
        .ok()
        .and_then(|o| o.object)
        .is_some_and(|o| o == "whatsapp_business_account")
}

fn sniff(value: &serde_json::Value) -> Option<Format> {
    let obj = value.as_object()?;
    sniff_members(
        obj.contains_key("schema"),
        obj.get("object").and_then(|v| v.as_str()),
        obj.contains_key("room_id") && obj.contains_key("event_id"),
    )
}

fn sniff_members(schema: bool, object: Option<&str>, room_event: bool) -> Option<Format> {
    if schema {
        return Some(Format::Canonical);
    }
    if object == Some("whatsapp_business_account") {
        return Some(Format::WhatsApp);
    }
    room_event.then_some(Format::Matrix)
}

/// The source a payload claims before it is decoded: the `source` of a
/// canonical event, `whatsapp` for a webhook, `matrix` for a room event.
/// Reads only the top-level members [`decode`] sniffs the format from, by
/// the same rule; `None` where it cannot tell (the decoder then refuses
/// the payload, so nothing unclaimed is archived).
pub fn claimed_source(payload: &[u8]) -> Option<(Format, String)> {
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| true)
    }
    #[derive(Deserialize)]
    struct Head {
        #[serde(default, deserialize_with = "present")]
        schema: bool,
        #[serde(default, deserialize_with = "present")]
        room_id: bool,
        #[serde(default, deserialize_with = "present")]
        event_id: bool,
        #[serde(default)]
        object: Option<serde_json::Value>,
        #[serde(default)]
        source: Option<serde_json::Value>,
    }
    let head: Head = serde_json::from_slice(payload).ok()?;
    let object = head.object.as_ref().and_then(|v| v.as_str());
    let format = sniff_members(head.schema, object, head.room_id && head.event_id)?;
    let source = match format {
        Format::Canonical => head.source?.as_str()?.to_owned(),
        other => other.source().to_owned(),
    };
    Some((format, source))
}

#[cfg(test)]
mod tests;
