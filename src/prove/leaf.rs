//! The canonical leaf record that binds archived content to its message,
//! its hospital record resource and its archive time.

use thiserror::Error;

use super::merkle::{Hash, leaf_hash};

/// First line of every leaf record, naming the format version.
pub const LEAF_FORMAT: &str = "chartbridge-leaf/v1";

const MAX_MILLIS: i64 = 253_402_300_799_999;
const MAX_FIELD_LEN: usize = 1024;

/// Errors from building or decoding a [`LeafRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LeafError {
    /// A field is empty, has surrounding whitespace, a control character or
    /// is longer than 1024 bytes.
    #[error("field {0} is empty, too long, padded with whitespace or has a control character")]
    InvalidField(&'static str),
    /// The message reference is not `source:message_id`.
    #[error("message must be \"source:message_id\"")]
    InvalidMessage,
    /// The resource is not `Type/id`.
    #[error("resource must be \"Type/id\"")]
    InvalidResource,
    /// The archive time is before 1970 or after 9999.
    #[error("archive time {0} ms is outside 1970-01-01..9999-12-31")]
    TimeOutOfRange(i64),
    /// The bytes are not a leaf record in its exact canonical form.
    #[error("leaf data is not a canonical {LEAF_FORMAT} record: {0}")]
    Malformed(&'static str),
}

/// The record whose canonical encoding is a Merkle leaf.
///
/// [`LeafRecord::encode`] yields exactly this UTF-8 text, each line ending in
/// `\n` and no other bytes:
///
/// ```text
/// chartbridge-leaf/v1
/// content-sha256 <64 lowercase hex digits>
/// message <source:message_id>
/// resource <Type/id>
/// archived <YYYY-MM-DDTHH:MM:SS.mmmZ, UTC>
/// ```
///
/// Field values contain no control characters, no leading or trailing
/// whitespace and are 1 to 1024 bytes long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRecord {
    content_sha256: [u8; 32],
    message: String,
    resource: String,
    archived_at_ms: i64,
}

pub(super) fn check_field(name: &'static str, value: &str) -> Result<(), LeafError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_FIELD_LEN
        && value.trim() == value
        && !value.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(LeafError::InvalidField(name))
    }
}

fn has_two_parts(value: &str, sep: char) -> bool {
    value
        .split_once(sep)
        .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
}

/// A KIS resource `Type/id` without white space, and an archive time in
/// `0..=MAX_MILLIS` (both leaf versions).
pub(super) fn check_resource_and_time(
    resource: &str,
    archived_at_ms: i64,
) -> Result<(), LeafError> {
    if !has_two_parts(resource, '/') || resource.chars().any(char::is_whitespace) {
        return Err(LeafError::InvalidResource);
    }
    if !(0..=MAX_MILLIS).contains(&archived_at_ms) {
        return Err(LeafError::TimeOutOfRange(archived_at_ms));
    }
    Ok(())
}

impl LeafRecord {
    /// Validates the fields and builds a record.
    pub fn new(
        content_sha256: [u8; 32],
        message: impl Into<String>,
        resource: impl Into<String>,
        archived_at_ms: i64,
    ) -> Result<Self, LeafError> {
        let (message, resource) = (message.into(), resource.into());
        check_field("message", &message)?;
        check_field("resource", &resource)?;
        if !has_two_parts(&message, ':') {
            return Err(LeafError::InvalidMessage);
        }
        check_resource_and_time(&resource, archived_at_ms)?;
        Ok(Self {
            content_sha256,
            message,
            resource,
            archived_at_ms,
        })
    }

    /// SHA-256 of the archived content.
    pub fn content_sha256(&self) -> &[u8; 32] {
        &self.content_sha256
    }

    /// The message reference, `source:message_id`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The hospital record resource, `Type/id`.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Archive time in Unix milliseconds (UTC).
    pub fn archived_at_ms(&self) -> i64 {
        self.archived_at_ms
    }

    /// Archive time as RFC 3339 UTC with milliseconds.
    pub fn archived_rfc3339(&self) -> String {
        format_rfc3339_millis(self.archived_at_ms).unwrap_or_default()
    }

    /// The canonical encoding (see the type documentation).
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{LEAF_FORMAT}\ncontent-sha256 {}\nmessage {}\nresource {}\narchived {}\n",
            hex::encode(self.content_sha256),
            self.message,
            self.resource,
            self.archived_rfc3339()
        )
        .into_bytes()
    }

    /// The Merkle leaf hash of the canonical encoding.
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.encode())
    }

    /// Decodes a record, accepting only its exact canonical encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, LeafError> {
        let text = std::str::from_utf8(bytes).map_err(|_| LeafError::Malformed("not UTF-8"))?;
        let body = text
            .strip_suffix('\n')
            .ok_or(LeafError::Malformed("missing final newline"))?;
        let lines: Vec<&str> = body.split('\n').collect();
        let [format, content, message, resource, archived] = lines[..] else {
            return Err(LeafError::Malformed("expected exactly five lines"));
        };
        if format != LEAF_FORMAT {
            return Err(LeafError::Malformed("unknown format line"));
        }
        let content = content
            .strip_prefix("content-sha256 ")
            .ok_or(LeafError::Malformed("expected content-sha256 line"))?;
        let message = message
            .strip_prefix("message ")
            .ok_or(LeafError::Malformed("expected message line"))?;
        let resource = resource
            .strip_prefix("resource ")
            .ok_or(LeafError::Malformed("expected resource line"))?;
        let archived = archived
            .strip_prefix("archived ")
            .ok_or(LeafError::Malformed("expected archived line"))?;
        let mut digest = [0u8; 32];
        hex::decode_to_slice(content, &mut digest)
            .map_err(|_| LeafError::Malformed("content-sha256 is not 64 hex digits"))?;
        let millis = parse_rfc3339_millis(archived).ok_or(LeafError::Malformed(
            "archived is not YYYY-MM-DDTHH:MM:SS.mmmZ",
        ))?;
        let record = Self::new(digest, message, resource, millis)?;
        if record.encode() != bytes {
            return Err(LeafError::Malformed("not in canonical form"));
        }
        Ok(record)
    }
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Formats Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`; `None` outside
/// years 1970..=9999.
pub fn format_rfc3339_millis(ms: i64) -> Option<String> {
    if !(0..=MAX_MILLIS).contains(&ms) {
        return None;
    }
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let (secs, millis) = (rem / 1000, rem % 1000);
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    ))
}

/// Parses exactly `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, years 1970..=9999) into
/// Unix milliseconds.
pub fn parse_rfc3339_millis(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 24 {
        return None;
    }
    let punct = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ];
    if punct.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second, millis) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    let month = u32::try_from(month).ok().filter(|m| (1..=12).contains(m))?;
    let day = u32::try_from(day).ok()?;
    if year < 1970 || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

#[cfg(test)]
#[path = "leaf_tests.rs"]
mod tests;
