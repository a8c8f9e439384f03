//! The wire form of HL7 v2 (ER7) as senders really write it, before the
//! `hl7-parser` crate sees a message: bytes before MSH, segment
//! terminators, batches, MSH-1/MSH-2 and the MSH-18 character set.
//!
//! Rules (HL7 v2.5 and v2.8 chapter 2, "Message construction rules",
//! "Batch protocol"):
//!
//! - Leading bytes that carry nothing are dropped: a UTF-8 byte-order mark,
//!   ASCII whitespace and control bytes (MLLP start/end bytes, NUL, a stray
//!   LF). Anything else before the first header segment makes the payload
//!   one message that does not start with MSH.
//! - A segment ends with CR or CRLF. A payload without any CR uses LF as
//!   its terminator (files, some senders): every LF ends a segment. In a
//!   payload that uses CR, a bare LF ends a segment only when it is
//!   followed by a segment id (`[A-Z][A-Z0-9]{2}` and the field separator,
//!   or the end of the line), by another line end, or by the end of the
//!   payload; a bare LF followed by anything else is data inside the field
//!   (senders that end segments with CR let a line break of a text slip
//!   into a field). Empty segments are dropped.
//! - The last segment must be terminated (chapter 2: every segment,
//!   including the last, ends with the segment terminator). A payload whose
//!   last segment has no terminator was cut and is refused.
//! - Batches: FHS/BHS/BTS/FTS segments are the envelope; each MSH starts a
//!   message. Several messages without an envelope are a batch too.
//! - MSH-2 holds 4 encoding characters, or 5 from v2.7 on: the fifth is the
//!   truncation character (`#`), which is removed before parsing (the
//!   parser knows only 4) and decodes from `\P\`.
//! - MSH-18 names the character set (HL7 table 0211). ASCII, 8859/1 and
//!   UNICODE UTF-8 (also `UNICODE`, `UTF-8`) are read; 8859/15 too. An
//!   empty MSH-18 means ASCII by the standard; real senders put UTF-8 or
//!   Latin-1 bytes there, so valid UTF-8 is read as UTF-8 and anything else
//!   as 8859/1. UTF-16 and UTF-32 are refused (AR 103).

use super::{AdtError, ErrorCode};

/// Character sets of HL7 table 0211 that chartbridge reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// MSH-18 empty: UTF-8 when the bytes are valid UTF-8, else 8859/1.
    Undeclared,
    Ascii,
    Latin1,
    Latin9,
    Utf8,
}

impl Charset {
    /// The charset of an MSH-18 value, read from its first repetition
    /// (`repetition` is MSH-2's second character, HL7 v2 chapter 2.5.4);
    /// `None` for one that is unknown or not ASCII-compatible.
    pub fn from_msh18(value: &str, repetition: char) -> Option<Self> {
        let first = value.split(repetition).next().unwrap_or("").trim();
        Some(match first.to_ascii_uppercase().as_str() {
            "" => Self::Undeclared,
            "ASCII" => Self::Ascii,
            "8859/1" | "ISO-8859-1" | "ISO IR100" => Self::Latin1,
            "8859/15" | "ISO-8859-15" => Self::Latin9,
            "UNICODE UTF-8" | "UNICODE" | "UTF-8" | "ISO IR192" => Self::Utf8,
            _ => return None,
        })
    }

    /// Text of `bytes` in this charset; `None` if they are not valid in it.
    pub fn decode(self, bytes: &[u8]) -> Option<String> {
        match self {
            Self::Undeclared => Some(match std::str::from_utf8(bytes) {
                Ok(s) => s.to_owned(),
                Err(_) => latin1(bytes),
            }),
            Self::Ascii => bytes.is_ascii().then(|| latin1(bytes)),
            Self::Latin1 => Some(latin1(bytes)),
            Self::Latin9 => Some(bytes.iter().map(|&b| latin9(b)).collect()),
            Self::Utf8 => std::str::from_utf8(bytes).ok().map(str::to_owned),
        }
    }
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

/// ISO 8859-15 differs from 8859-1 in eight positions.
fn latin9(b: u8) -> char {
    match b {
        0xa4 => '€',
        0xa6 => 'Š',
        0xa8 => 'š',
        0xb4 => 'Ž',
        0xb8 => 'ž',
        0xbc => 'Œ',
        0xbd => 'œ',
        0xbe => 'Ÿ',
        other => other as char,
    }
}

const UTF8_BOM: &[u8] = &[0xef, 0xbb, 0xbf];

fn is_segment_id(b: &[u8]) -> bool {
    b.len() >= 3
        && b[0].is_ascii_uppercase()
        && b[1..3]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

fn is_header(seg: &[u8]) -> bool {
    seg.starts_with(b"MSH") || seg.starts_with(b"FHS") || seg.starts_with(b"BHS")
}

/// One message of a payload, its segments joined by CR; every segment but
/// an unterminated last one ends with CR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub bytes: Vec<u8>,
}

/// A payload split into messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    pub messages: Vec<RawMessage>,
    /// The payload carried an FHS or BHS envelope.
    pub enveloped: bool,
    /// BHS-11 (else FHS-11): the sender's batch control id.
    pub batch_control_id: String,
    /// BTS-1: the message count the sender declared, when given.
    pub declared_count: Option<usize>,
}

impl Payload {
    /// Answered as a batch: an envelope, or more than one message.
    pub fn is_batch(&self) -> bool {
        self.enveloped || self.messages.len() > 1
    }
}

/// Splits bytes into segments by the rules above; `true` when the last
/// segment was terminated.
pub fn segments(bytes: &[u8]) -> (Vec<Vec<u8>>, bool) {
    let mut b = bytes;
    if let Some(rest) = b.strip_prefix(UTF8_BOM) {
        b = rest;
    }
    // Leading whitespace and control bytes (MLLP framing, NUL, stray LF).
    let start = b
        .iter()
        .position(|&c| !(c.is_ascii_whitespace() || c.is_ascii_control()))
        .unwrap_or(b.len());
    b = &b[start..];
    // Trailing blanks and MLLP end bytes; a CR or LF among them terminates
    // the last segment.
    let end = b
        .iter()
        .rposition(|&c| !(c.is_ascii_whitespace() || c.is_ascii_control()))
        .map_or(0, |p| p + 1);
    let terminated = b[end..].iter().any(|&c| c == b'\r' || c == b'\n');
    b = &b[..end];
    // CR (or CRLF) is the terminator when the payload has any CR; then a
    // bare LF ends a segment only before a segment id.
    let cr_terminated = b.contains(&b'\r');
    let field_sep = b.get(3).copied().filter(|_| is_header(b)).unwrap_or(b'|');
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let ends = match c {
            b'\r' => {
                if b.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                true
            }
            b'\n' if !cr_terminated => true,
            b'\n' => {
                let next = &b[i + 1..];
                next.is_empty()
                    || next[0] == b'\n'
                    || next[0] == b'\r'
                    || (is_segment_id(next)
                        && matches!(next.get(3), None | Some(b'\r') | Some(b'\n'))
                        || is_segment_id(next) && next.get(3) == Some(&field_sep))
            }
            _ => false,
        };
        if ends {
            if !current.iter().all(u8::is_ascii_whitespace) {
                out.push(std::mem::take(&mut current));
            } else {
                current.clear();
            }
        } else {
            current.push(c);
        }
        i += 1;
    }
    if !current.iter().all(u8::is_ascii_whitespace) {
        out.push(current);
    }
    let terminated = terminated || out.is_empty();
    (out, terminated)
}

fn field_of(seg: &[u8], n: usize) -> String {
    let Some(&sep) = seg.get(3) else {
        return String::new();
    };
    // Header segments: field 1 is the separator itself, so field n is
    // element n - 1 of the split.
    seg.split(|&c| c == sep)
        .nth(n.saturating_sub(1))
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .unwrap_or_default()
}

/// Splits a payload into its messages (see the module rules).
pub fn split(bytes: &[u8]) -> Payload {
    let (segs, terminated) = segments(bytes);
    let mut payload = Payload::default();
    let mut current: Vec<Vec<u8>> = Vec::new();
    let flush = |current: &mut Vec<Vec<u8>>, payload: &mut Payload| {
        if current.is_empty() {
            return;
        }
        let mut bytes = current.join(&b'\r');
        bytes.push(b'\r');
        payload.messages.push(RawMessage { bytes });
        current.clear();
    };
    for seg in segs {
        let id = seg.get(..3).unwrap_or(&seg[..]);
        match id {
            b"FHS" | b"BHS" => {
                flush(&mut current, &mut payload);
                payload.enveloped = true;
                let control = field_of(&seg, 11);
                if !control.is_empty() && (id == b"BHS" || payload.batch_control_id.is_empty()) {
                    payload.batch_control_id = control;
                }
            }
            b"BTS" | b"FTS" if payload.enveloped => {
                flush(&mut current, &mut payload);
                if id == b"BTS" {
                    let sep = seg.get(3).copied().unwrap_or(b'|');
                    payload.declared_count = seg
                        .split(|&c| c == sep)
                        .nth(1)
                        .and_then(|f| std::str::from_utf8(f).ok())
                        .and_then(|f| f.trim().parse().ok());
                }
            }
            b"MSH" => {
                flush(&mut current, &mut payload);
                current.push(seg);
            }
            _ => current.push(seg),
        }
    }
    let cut = !terminated && !current.is_empty();
    flush(&mut current, &mut payload);
    if cut && let Some(last) = payload.messages.last_mut() {
        // The last segment had no terminator: keep that visible.
        last.bytes.pop();
    }
    payload
}

/// The MSH-18 value of a message's MSH segment, read from the bytes, and
/// the repetition separator MSH-2 declares (`~` when MSH-2 is too short to
/// name one).
pub fn msh18(bytes: &[u8]) -> (String, char) {
    let seg = bytes.split(|&c| c == b'\r').next().unwrap_or_default();
    if !seg.starts_with(b"MSH") {
        return (String::new(), '~');
    }
    let repetition = seg
        .get(5)
        .filter(|c| c.is_ascii() && **c != seg[3])
        .map_or('~', |&c| c as char);
    (field_of(seg, 18), repetition)
}

/// Decodes one message by its MSH-18. On refusal, the text read as 8859/1
/// (enough to echo MSH-10) comes with the error.
pub fn decode(bytes: &[u8]) -> Result<String, (String, AdtError)> {
    let (declared, repetition) = msh18(bytes);
    let lossy = || latin1(bytes);
    let Some(charset) = Charset::from_msh18(&declared, repetition) else {
        return Err((
            lossy(),
            AdtError::reject(
                ErrorCode::TableValueNotFound,
                "MSH-18",
                "character set not supported (supported: ASCII, 8859/1, 8859/15, UNICODE UTF-8)",
            ),
        ));
    };
    charset.decode(bytes).ok_or_else(|| {
        (
            lossy(),
            AdtError::reject(
                ErrorCode::DataType,
                "MSH-18",
                "the bytes are not valid in the declared character set",
            ),
        )
    })
}

/// The encoding characters of MSH-2 (table: component, repetition,
/// escape, subcomponent, and from v2.7 truncation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: char,
    pub subcomponent: char,
    pub truncation: Option<char>,
}

/// Reads MSH-1 and MSH-2 of a message text that starts with `MSH`.
pub fn encoding(text: &str) -> Result<Encoding, AdtError> {
    let mut chars = text.chars().skip(3);
    let field = chars
        .next()
        .filter(|c| valid_separator(*c))
        .ok_or_else(|| {
            AdtError::reject(
                ErrorCode::DataType,
                "MSH-1",
                "no usable field separator after MSH",
            )
        })?;
    let msh2: Vec<char> = chars.take_while(|&c| c != field && c != '\r').collect();
    let bad = || {
        AdtError::reject(
            ErrorCode::DataType,
            "MSH-2",
            "encoding characters must be 4 (or 5 with the truncation character) distinct non-alphanumeric characters",
        )
    };
    if !(4..=5).contains(&msh2.len()) {
        return Err(bad());
    }
    for (i, c) in msh2.iter().enumerate() {
        if !valid_separator(*c) || *c == field || msh2[..i].contains(c) {
            return Err(bad());
        }
    }
    Ok(Encoding {
        field,
        component: msh2[0],
        repetition: msh2[1],
        escape: msh2[2],
        subcomponent: msh2[3],
        truncation: msh2.get(4).copied(),
    })
}

fn valid_separator(c: char) -> bool {
    c.is_ascii() && !c.is_ascii_alphanumeric() && !c.is_ascii_whitespace() && !c.is_ascii_control()
}

#[cfg(test)]
#[path = "er7_tests.rs"]
mod tests;
