//! Checks on a decoded message before the pipeline works on it, each with a
//! stable quarantine reason, and the keyed content digest that tells a
//! redelivery (same content) from a conflicting duplicate (same message id,
//! other content). Pure: `now` is passed in.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::event::{Body, MediaLocation, Message};
use crate::media::MediaTypes;
use crate::reason::Reason;
use crate::seal::Sealer;

/// The admission checks with their configured limits.
#[derive(Debug, Clone)]
pub struct Admission {
    max_clock_skew: chrono::Duration,
    allowed_types: MediaTypes,
}

impl Admission {
    pub fn new(config: &Config) -> Self {
        Self::with(
            config.pipeline.max_clock_skew,
            config.media.allowed_types.clone(),
        )
    }

    pub fn with(max_clock_skew: std::time::Duration, allowed_types: Vec<String>) -> Self {
        Self {
            max_clock_skew: chrono::Duration::from_std(max_clock_skew)
                .unwrap_or(chrono::Duration::MAX),
            allowed_types: MediaTypes::new(allowed_types),
        }
    }

    /// Checked before anything else: the quarantine reason for `m` at
    /// `now`, or `None` when it may proceed.
    pub fn check(&self, m: &Message, now: DateTime<Utc>) -> Option<Reason> {
        let latest = now.checked_add_signed(self.max_clock_skew);
        if latest.is_some_and(|latest| m.sent_at > latest) {
            return Some(Reason::TimestampInFuture);
        }
        None
    }

    /// Checked once a message is to be archived (content that is not
    /// relevant is deleted on schedule whatever its type).
    pub fn check_archivable(&self, m: &Message) -> Option<Reason> {
        match &m.body {
            Body::Media(media) if !self.media_type_allowed(&media.mime_type) => {
                Some(Reason::UnsupportedMediaType)
            }
            _ => None,
        }
    }

    /// Whether `mime_type` is in `media.allowed_types` ([`MediaTypes`]).
    pub fn media_type_allowed(&self, mime_type: &str) -> bool {
        self.allowed_types.contains(mime_type)
    }
}

/// A keyed digest of what a message says: key, conversation, sender, send
/// time and body (text, or medium with type, name, caption, declared hash
/// and bytes or reference). Gateway bookkeeping (event id, receive time,
/// case hint, mark) is left out, so a gateway's re-send is not a conflict.
/// Keyed with the operator's key: the stored digest reveals nothing.
pub fn content_digest(sealer: &Sealer, m: &Message) -> String {
    let sent_at = m.sent_at.timestamp_micros().to_string();
    let body = match &m.body {
        Body::Text(t) => format!("text:{}", hex::encode(Sha256::digest(t.as_bytes()))),
        Body::Media(media) => {
            let location = match &media.location {
                MediaLocation::Inline(bytes) => {
                    format!("inline:{}", hex::encode(Sha256::digest(bytes)))
                }
                MediaLocation::Reference(r) => {
                    format!("reference:{}", hex::encode(Sha256::digest(r.as_bytes())))
                }
                MediaLocation::Encrypted(e) => format!(
                    "encrypted:{}:{}",
                    hex::encode(Sha256::digest(e.url.as_bytes())),
                    hex::encode(e.ciphertext_sha256)
                ),
            };
            let opt = |s: &Option<String>| {
                s.as_deref()
                    .map_or_else(String::new, |s| hex::encode(Sha256::digest(s.as_bytes())))
            };
            format!(
                "media:{}:{}:{}:{}:{location}",
                media.mime_type,
                opt(&media.file_name),
                opt(&media.caption),
                media.declared_sha256.map(hex::encode).unwrap_or_default(),
            )
        }
    };
    sealer.token(&[
        "content-digest/v1",
        &m.key.source,
        &m.key.message_id,
        &m.conversation,
        &m.sender.id,
        &sent_at,
        &body,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Media, MessageKey, Party, Role};

    fn message(body: Body) -> Message {
        Message {
            key: MessageKey {
                source: "whatsapp".into(),
                message_id: "wamid.1".into(),
            },
            event_id: "e".into(),
            conversation: "PN:4917".into(),
            sender: Party {
                id: "4917".into(),
                role: Role::Patient,
                display: None,
            },
            recipients: vec![],
            sent_at: "2026-11-28T10:00:00Z".parse().unwrap(),
            received_at: None,
            in_reply_to: None,
            replaces: None,
            body,
            part: None,
            case: None,
            mark: None,
            kind: None,
            forwarded: None,
        }
    }

    fn media(mime: &str) -> Body {
        Body::Media(Media {
            mime_type: mime.into(),
            file_name: None,
            caption: None,
            declared_size: None,
            declared_sha256: None,
            location: MediaLocation::Reference("M1".into()),
        })
    }

    fn admission() -> Admission {
        Admission::with(
            std::time::Duration::from_secs(300),
            [
                "image/*",
                "video/*",
                "audio/*",
                "application/pdf",
                "text/plain",
            ]
            .map(String::from)
            .to_vec(),
        )
    }

    #[test]
    fn send_times_beyond_the_skew_are_in_the_future() {
        let m = message(Body::Text("x".into()));
        let a = admission();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(a.check(&m, at("2026-11-28T09:55:00Z")), None);
        assert_eq!(
            a.check(&m, at("2026-11-28T09:54:59Z")),
            Some(Reason::TimestampInFuture)
        );
        assert_eq!(a.check(&m, at("2030-01-01T00:00:00Z")), None);
    }

    #[test]
    fn media_types_follow_the_allow_list() {
        let a = admission();
        assert_eq!(a.check_archivable(&message(Body::Text("x".into()))), None);
        for ok in [
            "image/png",
            "IMAGE/JPEG",
            "application/pdf",
            "audio/ogg; codecs=opus",
        ] {
            assert_eq!(a.check_archivable(&message(media(ok))), None, "{ok}");
        }
        for refused in [
            "application/x-msdownload",
            "application/pdfx",
            "text/html",
            "image",
            "",
        ] {
            assert_eq!(
                a.check_archivable(&message(media(refused))),
                Some(Reason::UnsupportedMediaType),
                "{refused}"
            );
        }
    }

    #[test]
    fn digest_changes_with_content_not_with_bookkeeping() {
        let s = Sealer::from_key([3; 32]);
        let m = message(Body::Text("Befund".into()));
        let d = content_digest(&s, &m);
        let mut same = m.clone();
        same.event_id = "other-event".into();
        same.received_at = Some(m.sent_at);
        assert_eq!(content_digest(&s, &same), d);
        let mut other = m.clone();
        other.body = Body::Text("Befund!".into());
        assert_ne!(content_digest(&s, &other), d);
        let mut other = m.clone();
        other.sender.id = "4918".into();
        assert_ne!(content_digest(&s, &other), d);
        assert_ne!(content_digest(&Sealer::from_key([4; 32]), &m), d);
        assert!(!d.contains("Befund"));
    }
}
