//! The typed message every format decodes to: key, sender, body (text or
//! media), parts, case link, relations.

use super::*;

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

    /// The messenger's id of the medium this message references (an
    /// `mxc://` URI, a WhatsApp media id), which deleting the messenger
    /// copy deletes too. `None` for text, inline media, and a Matrix
    /// sticker: its image belongs to a sticker pack that every use of the
    /// sticker shares (CS API 11.21), so it is never deleted with one use.
    pub fn media_reference(&self) -> Option<&str> {
        let Body::Media(media) = &self.body else {
            return None;
        };
        if self.key.source == super::matrix::SOURCE && self.kind == Some(MessageKind::Sticker) {
            return None;
        }
        match &media.location {
            MediaLocation::Reference(r) => Some(r),
            MediaLocation::Encrypted(e) => Some(&e.url),
            MediaLocation::Inline(_) => None,
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
