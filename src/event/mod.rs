//! The input boundary. A broker payload becomes typed [`Message`]s here or is
//! rejected with a [`DecodeError`]; past this module nothing re-checks.
//!
//! Formats: the canonical event (`schemas/event.schema.json`), WhatsApp
//! Business Cloud API webhooks verbatim, and Matrix `m.room.message` events.

mod canonical;
pub mod matrix;
pub mod signature;
mod strict;
mod whatsapp;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use canonical::{CanonicalEvent, SCHEMA_ID};

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
    /// The hold reason of an earlier, unreadable copy of these messages
    /// (a Matrix event quarantined [`hold::UNDECRYPTABLE`] whose room keys
    /// arrived later): that quarantine is released with this copy.
    pub supersedes_hold: Option<&'static str>,
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
    /// A quarantine reason code (`hold::*`).
    pub reason: &'static str,
    /// Names the place and the defect in the entry, never its values.
    pub detail: String,
    /// The entry as received; kept sealed.
    pub raw: serde_json::Value,
}

impl HeldEntry {
    /// An entry of `source` held under `reason`; keyed by `id` when it is a
    /// usable message id, else by a digest of the entry.
    pub fn new(
        source: &str,
        id: Option<&str>,
        reason: &'static str,
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

/// Quarantine reasons of entries held at decoding.
pub mod hold {
    /// A message type this version does not know how to archive (a new
    /// WhatsApp `type`, `unsupported`/`unknown`, an unknown Matrix msgtype).
    pub const UNSUPPORTED_MESSAGE_TYPE: &str = "unsupported_message_type";
    /// End-to-end encrypted content that this worker cannot decrypt.
    pub const ENCRYPTED_CONTENT: &str = "encrypted_content";
    /// One entry of a batch is malformed (the detail names the field); its
    /// neighbours are decoded as usual.
    pub const INVALID_ENTRY: &str = "invalid_entry";
    /// The messenger reported an error on the entry instead of (or beside)
    /// its content (a WhatsApp `errors` array); the detail names the code.
    pub const MESSAGE_ERROR: &str = "message_error";
    /// The downloaded medium's length differs from the size the messenger
    /// declared (Matrix `info.size`): truncated or substituted bytes.
    pub const MEDIA_SIZE_MISMATCH: &str = "media_size_mismatch";
    /// The downloaded bytes are recognisably of another kind than the
    /// declared media type (Matrix `info.mimetype`).
    pub const MEDIA_TYPE_MISMATCH: &str = "media_type_mismatch";
    /// An end-to-end-encrypted Matrix event whose room keys did not arrive
    /// within `matrix.e2ee.undecryptable_after`; released when a decrypted
    /// copy arrives later ([`Decoded::supersedes_hold`]).
    pub const UNDECRYPTABLE: &str = "undecryptable";
    /// A decrypted Matrix event from a sender device that the configured
    /// trust policy (`matrix.e2ee.trust`) does not accept.
    pub const UNTRUSTED_DEVICE: &str = "untrusted_device";
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
    let value: serde_json::Value = strict::from_str(text).map_err(|e| {
        if e.to_string().contains(strict::DUPLICATE) {
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

/// A messenger's own message, identified by source and message id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageKey {
    pub source: String,
    pub message_id: String,
}

impl std::fmt::Display for MessageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.source, self.message_id)
    }
}

/// One message, text or medium, as the rest of the pipeline sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub key: MessageKey,
    pub event_id: String,
    /// Conversation id in the messenger (a phone number for WhatsApp, a room
    /// id for Matrix): a direct identifier, never logged.
    pub conversation: String,
    pub sender: Party,
    pub recipients: Vec<Party>,
    pub sent_at: DateTime<Utc>,
    pub received_at: Option<DateTime<Utc>>,
    pub in_reply_to: Option<String>,
    /// The messenger id of the message this one corrects (a Matrix
    /// `m.replace` edit); the original stays archived as it was.
    pub replaces: Option<String>,
    pub body: Body,
    pub part: Option<Part>,
    pub case: Option<CaseLink>,
    pub mark: Option<Mark>,
    /// What the sender sent, where the format says more than the body
    /// (a sticker, a voice note, an interactive reply); `None` derives it
    /// from the body ([`Message::kind`]).
    pub kind: Option<MessageKind>,
    /// The sender forwarded what someone else wrote (WhatsApp
    /// `context.forwarded` / `context.frequently_forwarded`): the record
    /// must not read it as the sender's own statement.
    pub forwarded: Option<Forwarded>,
}

/// A forwarded message, as the messenger marks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Forwarded {
    /// Forwarded (WhatsApp `context.forwarded`).
    Once,
    /// Forwarded more than five times (WhatsApp
    /// `context.frequently_forwarded`): a chain message.
    Frequently,
}

impl Forwarded {
    /// A readable note for the record.
    pub fn note(self) -> &'static str {
        match self {
            Self::Once => "Forwarded message: written by someone other than the sender",
            Self::Frequently => {
                "Frequently forwarded message (a chain message): written by someone other than the sender"
            }
        }
    }
}

/// The kind of a message as rules see it (`kind = [...]` in
/// `mappings/rules.toml`). Stable lowercase names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Text,
    Image,
    /// A sticker (WhatsApp `sticker`): an image, but decoration, not a photo.
    Sticker,
    Audio,
    /// A recorded voice note (WhatsApp `audio` with `voice: true`).
    Voice,
    Video,
    Document,
    /// A reply through an interactive element: a reply button, a list row,
    /// a flow (WhatsApp `interactive`), or a template quick reply (`button`).
    Interactive,
    /// A shared location, rendered as text.
    Location,
    /// Shared contact cards, rendered as text.
    Contacts,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::Sticker => "sticker",
            Self::Audio => "audio",
            Self::Voice => "voice",
            Self::Video => "video",
            Self::Document => "document",
            Self::Interactive => "interactive",
            Self::Location => "location",
            Self::Contacts => "contacts",
        }
    }
}

impl Message {
    /// The message's kind: the one the format stated, else text for text
    /// and image/audio/video/document by the media type's top level.
    pub fn kind(&self) -> MessageKind {
        if let Some(k) = self.kind {
            return k;
        }
        match &self.body {
            Body::Text(_) => MessageKind::Text,
            Body::Media(m) => match m.mime_type.split_once('/').map(|(t, _)| t) {
                Some(t) if t.eq_ignore_ascii_case("image") => MessageKind::Image,
                Some(t) if t.eq_ignore_ascii_case("audio") => MessageKind::Audio,
                Some(t) if t.eq_ignore_ascii_case("video") => MessageKind::Video,
                _ => MessageKind::Document,
            },
        }
    }

    /// The bytes to archive when the message carries them: the text's UTF-8
    /// or inline media. `None` for media held by reference.
    pub fn inline_content(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Text(t) => Some(t.as_bytes()),
            Body::Media(m) => match &m.location {
                MediaLocation::Inline(bytes) => Some(bytes),
                MediaLocation::Reference(_) | MediaLocation::Encrypted(_) => None,
            },
        }
    }

    /// The media type of the content: `text/plain` for text.
    pub fn content_type(&self) -> &str {
        match &self.body {
            Body::Text(_) => "text/plain",
            Body::Media(m) => &m.mime_type,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    pub id: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Clinician,
    Patient,
    Relative,
    Colleague,
    Unknown,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clinician => "clinician",
            Self::Patient => "patient",
            Self::Relative => "relative",
            Self::Colleague => "colleague",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Text(String),
    Media(Media),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Media {
    pub mime_type: String,
    pub file_name: Option<String>,
    pub caption: Option<String>,
    pub declared_size: Option<u64>,
    /// The SHA-256 the messenger stated for the bytes, if any.
    pub declared_sha256: Option<[u8; 32]>,
    pub location: MediaLocation,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MediaLocation {
    Inline(Vec<u8>),
    /// An id the media API resolves (WhatsApp media id, Matrix `mxc://` URI).
    Reference(String),
    /// A Matrix encrypted attachment (`EncryptedFile`): the ciphertext at
    /// an `mxc://` URI with its key.
    Encrypted(Box<EncryptedAttachment>),
}

/// A Matrix `EncryptedFile` (client-server API v1.10, "Sending encrypted
/// attachments", version `v2`): AES-256-CTR over the whole file with a
/// 128-bit counter block starting at `iv`, and the SHA-256 of the
/// ciphertext.
#[derive(Clone, PartialEq)]
pub struct EncryptedAttachment {
    /// Where the ciphertext is, `mxc://server/media_id`.
    pub url: String,
    /// `key.k`, the AES-256 key.
    pub key: [u8; 32],
    /// `iv`, the initial counter block.
    pub iv: [u8; 16],
    /// `hashes.sha256`, of the ciphertext.
    pub ciphertext_sha256: [u8; 32],
}

impl std::fmt::Debug for EncryptedAttachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedAttachment")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl EncryptedAttachment {
    /// The plaintext of `ciphertext`, after checking its SHA-256 against
    /// `hashes.sha256`; `None` on a mismatch (substituted or damaged).
    pub fn decrypt(&self, ciphertext: &[u8]) -> Option<Vec<u8>> {
        use aes::cipher::{KeyIvInit, StreamCipher};
        use sha2::Digest;
        if <[u8; 32]>::from(sha2::Sha256::digest(ciphertext)) != self.ciphertext_sha256 {
            return None;
        }
        let mut out = ciphertext.to_vec();
        let mut cipher = ctr::Ctr128BE::<aes::Aes256>::new(&self.key.into(), &self.iv.into());
        cipher.apply_keystream(&mut out);
        Some(out)
    }
}

/// "Part x of y" of a communication split into several messages (DSK II.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub group_id: String,
    pub index: u32,
    pub count: u32,
}

/// The patient (and case) a conversation belongs to, as the gateway knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseLink {
    pub patient: FhirRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<FhirRef>,
}

/// A literal reference (`Patient/123`) or a business identifier to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FhirRef {
    Literal { reference: String },
    Identifier { identifier: Identifier },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifier {
    pub system: String,
    pub value: String,
}

/// A clinician's explicit relevance mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mark {
    Relevant,
    NotRelevant,
}

/// Parses a messenger-supplied SHA-256 given as hex or base64.
pub fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    let bytes = if text.len() == 64 {
        hex::decode(text).ok()?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
            .ok()?
    };
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_in_hex_and_base64() {
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let b64 = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=";
        assert_eq!(parse_sha256(hex), parse_sha256(b64));
        assert!(parse_sha256(hex).is_some());
        assert_eq!(parse_sha256("abc"), None);
    }

    #[test]
    fn refusals_name_no_content() {
        let secret = "Patient Erika Mustermann";
        let payload = format!("{{\"note\": \"{secret}\"");
        let err = decode(payload.as_bytes(), 1 << 20).unwrap_err();
        assert_eq!(err.code, DecodeErrorCode::InvalidJson);
        assert!(!err.to_string().contains("Mustermann"));
        let err = decode(format!("{{\"x\":\"{secret}\"}}").as_bytes(), 1 << 20).unwrap_err();
        assert_eq!(err.code, DecodeErrorCode::UnknownFormat);
        let err = decode(&[b'{', 0xff, b'}'], 1 << 20).unwrap_err();
        assert_eq!(err.code, DecodeErrorCode::InvalidUtf8);
        let err = decode(b"{}", 1).unwrap_err();
        assert_eq!(err.code, DecodeErrorCode::TooLarge);
    }

    /// Found by fuzzing (`fuzz/regressions/map/`): a Matrix timestamp in the
    /// year 57000 decoded, then the mapping panicked on it.
    #[test]
    fn times_outside_four_digit_years_are_refused() {
        let regression = include_bytes!(
            "../../fuzz/regressions/map/crash-7d2a5817109ef1ec8b0ea8902d97b22d8cbfa2e0"
        );
        let err = decode(regression, 1 << 20).unwrap_err();
        assert_eq!(err.code, DecodeErrorCode::InvalidField);
        let room = |ts: i64| {
            serde_json::json!({"type": "m.room.message", "room_id": "!r", "event_id": "$e",
                "sender": "@a:h", "origin_server_ts": ts,
                "content": {"msgtype": "m.text", "body": "x"}})
            .to_string()
        };
        for ts in [-62_135_596_800_001, 253_402_300_800_000] {
            let err = decode(room(ts).as_bytes(), 1 << 20).unwrap_err();
            assert_eq!(err.code, DecodeErrorCode::InvalidField, "{ts}");
        }
        for ts in [-62_135_596_800_000, 253_402_300_799_999, 0] {
            assert!(decode(room(ts).as_bytes(), 1 << 20).is_ok(), "{ts}");
        }
    }
}
