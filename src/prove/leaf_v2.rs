//! `chartbridge-leaf/v2`: the leaf record that binds a keyed token of the
//! message instead of its id, keyed hashes of the archived and of the
//! received bytes, and the transformation between them (metadata removal,
//! redaction). [`Leaf`] decodes either version.

use super::leaf::{
    LeafError, LeafRecord, check_field, check_resource_and_time, format_rfc3339_millis,
    parse_rfc3339_millis,
};
use super::merkle::{Hash, leaf_hash};
use super::pseudonym::{ProofKeys, salted};
use crate::event::MessageKey;

/// First line of a v2 leaf record.
pub const LEAF_FORMAT_V2: &str = "chartbridge-leaf/v2";

/// The v2 record whose canonical encoding is a Merkle leaf.
///
/// [`LeafRecordV2::encode`] yields exactly this UTF-8 text, each line
/// ending in `\n`:
///
/// ```text
/// chartbridge-leaf/v2
/// message-token <64 hex: HMAC-SHA256(K_token, "source:message_id")>
/// content-hmac <64 hex: HMAC-SHA256(salt, SHA-256(archived bytes))>
/// received-hmac <64 hex: HMAC-SHA256(salt, SHA-256(received bytes))>
/// transformation <none | metadata-removed | not-stripped | redacted>
/// resource <Type/id>
/// archived <YYYY-MM-DDTHH:MM:SS.mmmZ, UTC>
/// ```
///
/// `salt = HMAC-SHA256(K_salt, message-token)` is not in the record; a
/// proof bundle carries it (see [`super::pseudonym`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRecordV2 {
    pub message_token: [u8; 32],
    pub content_hmac: [u8; 32],
    pub received_hmac: [u8; 32],
    transformation: String,
    resource: String,
    archived_at_ms: i64,
}

impl LeafRecordV2 {
    /// Validates the fields and builds a record. `transformation` is one
    /// lowercase word of `a-z` and `-`.
    pub fn new(
        message_token: [u8; 32],
        (content_hmac, received_hmac): ([u8; 32], [u8; 32]),
        transformation: &str,
        resource: impl Into<String>,
        archived_at_ms: i64,
    ) -> Result<Self, LeafError> {
        let resource = resource.into();
        check_field("resource", &resource)?;
        let word = !transformation.is_empty()
            && transformation.len() <= 64
            && transformation
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-');
        if !word {
            return Err(LeafError::InvalidField("transformation"));
        }
        check_resource_and_time(&resource, archived_at_ms)?;
        Ok(Self {
            message_token,
            content_hmac,
            received_hmac,
            transformation: transformation.to_owned(),
            resource,
            archived_at_ms,
        })
    }

    /// The record of an archive of message `key`: its token, the salted
    /// hashes of the archived and received bytes (their SHA-256s), the
    /// transformation between them, the resource and the archive time.
    pub fn for_message(
        keys: &ProofKeys,
        key: &MessageKey,
        (archived, received): (&[u8; 32], &[u8; 32]),
        transformation: &str,
        (resource, archived_at_ms): (&str, i64),
    ) -> Result<Self, LeafError> {
        let token = keys.message_token(key);
        let salt = keys.salt(&token);
        Self::new(
            token,
            (salted(&salt, archived), salted(&salt, received)),
            transformation,
            resource,
            archived_at_ms,
        )
    }

    pub fn transformation(&self) -> &str {
        &self.transformation
    }

    pub fn resource(&self) -> &str {
        &self.resource
    }

    pub fn archived_rfc3339(&self) -> String {
        format_rfc3339_millis(self.archived_at_ms).unwrap_or_default()
    }

    /// The canonical encoding (see the type documentation).
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{LEAF_FORMAT_V2}\nmessage-token {}\ncontent-hmac {}\nreceived-hmac {}\ntransformation {}\nresource {}\narchived {}\n",
            hex::encode(self.message_token),
            hex::encode(self.content_hmac),
            hex::encode(self.received_hmac),
            self.transformation,
            self.resource,
            self.archived_rfc3339()
        )
        .into_bytes()
    }

    /// Decodes a record, accepting only its exact canonical encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, LeafError> {
        let text = std::str::from_utf8(bytes).map_err(|_| LeafError::Malformed("not UTF-8"))?;
        let body = text
            .strip_suffix('\n')
            .ok_or(LeafError::Malformed("missing final newline"))?;
        let lines: Vec<&str> = body.split('\n').collect();
        let [
            format,
            token,
            content,
            received,
            transformation,
            resource,
            archived,
        ] = lines[..]
        else {
            return Err(LeafError::Malformed("expected exactly seven lines"));
        };
        if format != LEAF_FORMAT_V2 {
            return Err(LeafError::Malformed("unknown format line"));
        }
        let take = |value: &str, prefix: &str, what: &'static str| -> Result<String, LeafError> {
            value
                .strip_prefix(prefix)
                .map(str::to_owned)
                .ok_or(LeafError::Malformed(what))
        };
        let hash = |value: &str, prefix: &str, what: &'static str| -> Result<[u8; 32], LeafError> {
            let mut out = [0u8; 32];
            hex::decode_to_slice(take(value, prefix, what)?, &mut out)
                .map_err(|_| LeafError::Malformed(what))?;
            Ok(out)
        };
        let token = hash(
            token,
            "message-token ",
            "expected a message-token of 64 hex digits",
        )?;
        let content = hash(
            content,
            "content-hmac ",
            "expected a content-hmac of 64 hex digits",
        )?;
        let received = hash(
            received,
            "received-hmac ",
            "expected a received-hmac of 64 hex digits",
        )?;
        let transformation = take(
            transformation,
            "transformation ",
            "expected a transformation line",
        )?;
        let resource = take(resource, "resource ", "expected a resource line")?;
        let archived = take(archived, "archived ", "expected an archived line")?;
        let millis = parse_rfc3339_millis(&archived).ok_or(LeafError::Malformed(
            "archived is not YYYY-MM-DDTHH:MM:SS.mmmZ",
        ))?;
        let record = Self::new(
            token,
            (content, received),
            &transformation,
            resource,
            millis,
        )?;
        if record.encode() != bytes {
            return Err(LeafError::Malformed("not in canonical form"));
        }
        Ok(record)
    }
}

/// A leaf record of either version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    V1(LeafRecord),
    V2(LeafRecordV2),
}

impl Leaf {
    /// Decodes by the format line.
    pub fn decode(bytes: &[u8]) -> Result<Self, LeafError> {
        if bytes.starts_with(format!("{LEAF_FORMAT_V2}\n").as_bytes()) {
            LeafRecordV2::decode(bytes).map(Self::V2)
        } else {
            LeafRecord::decode(bytes).map(Self::V1)
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::V1(r) => r.encode(),
            Self::V2(r) => r.encode(),
        }
    }

    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.encode())
    }

    /// The hospital record resource, `Type/id`.
    pub fn resource(&self) -> &str {
        match self {
            Self::V1(r) => r.resource(),
            Self::V2(r) => r.resource(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LeafRecordV2 {
        LeafRecordV2::new(
            [1; 32],
            ([2; 32], [3; 32]),
            "metadata-removed",
            "DocumentReference/abc",
            1_795_907_576_123,
        )
        .unwrap()
    }

    #[test]
    fn v2_round_trips_and_is_canonical() {
        let r = sample();
        let text = String::from_utf8(r.encode()).unwrap();
        assert_eq!(
            text,
            format!(
                "chartbridge-leaf/v2\nmessage-token {}\ncontent-hmac {}\nreceived-hmac {}\n\
                 transformation metadata-removed\nresource DocumentReference/abc\n\
                 archived 2026-11-28T23:12:56.123Z\n",
                "01".repeat(32),
                "02".repeat(32),
                "03".repeat(32)
            )
        );
        assert_eq!(Leaf::decode(text.as_bytes()).unwrap(), Leaf::V2(r));
        let upper = text.replace(&"02".repeat(32), &"0A".repeat(32));
        assert!(LeafRecordV2::decode(upper.as_bytes()).is_err());
        let swapped = text.replace("transformation metadata-removed", "transformation Redacted");
        assert!(LeafRecordV2::decode(swapped.as_bytes()).is_err());
        assert!(LeafRecordV2::decode(&text.as_bytes()[..text.len() - 1]).is_err());
        let v1 = LeafRecord::new([9; 32], "matrix:$e", "Communication/1", 0).unwrap();
        assert_eq!(Leaf::decode(&v1.encode()).unwrap(), Leaf::V1(v1));
    }
}
