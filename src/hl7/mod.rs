//! HL7 v2 ADT input: parsing (with the hl7-parser crate) into the few facts
//! the identity map keeps, and the ACK answered for every message.
//!
//! Supported: ADT^A01 (admit), A04 (register), A08 (update), A03
//! (discharge), A11 (cancel admit), A28/A31 (add/update person
//! information), A40 (merge patient, every patient group). Errors name the
//! place (`PID-3`, `PID(2)-3` for the second PID, `segment 4`) and an HL7
//! table 0357 code, never a value.
//! The wire form (bytes before MSH, segment terminators, batches, MSH-2,
//! MSH-18) is read by [`er7`] before the `hl7-parser` crate sees a message.

mod ack;
pub mod config;
pub mod er7;
pub mod feed;
pub mod mllp;

pub use ack::{AckCode, Notice, build_ack, build_ack_with, build_batch_ack};

use hl7_parser::Message as Hl7Message;
#[cfg(test)]
use hl7_parser::message::Separators;
use hl7_parser::message::{Field, Repeat};
use sha2::{Digest, Sha256};

use er7::Encoding;

/// The ADT trigger events the identity map understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdtEvent {
    A01,
    A03,
    A04,
    A08,
    A11,
    A28,
    A31,
    A40,
}

impl AdtEvent {
    fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "A01" => Self::A01,
            "A03" => Self::A03,
            "A04" => Self::A04,
            "A08" => Self::A08,
            "A11" => Self::A11,
            "A28" => Self::A28,
            "A31" => Self::A31,
            "A40" => Self::A40,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::A01 => "A01",
            Self::A03 => "A03",
            Self::A04 => "A04",
            Self::A08 => "A08",
            Self::A11 => "A11",
            Self::A28 => "A28",
            Self::A31 => "A31",
            Self::A40 => "A40",
        }
    }

    /// The FHIR Encounter.status a visit has after this event, if it sets one.
    pub fn encounter_state(self) -> Option<&'static str> {
        match self {
            Self::A01 => Some("in-progress"),
            Self::A04 => Some("arrived"),
            Self::A03 => Some("finished"),
            Self::A11 => Some("cancelled"),
            Self::A08 | Self::A28 | Self::A31 | Self::A40 => None,
        }
    }

    /// Whether PV1-19 of this event is applied to the encounters. A28/A31
    /// (ADT_A05) carry person information; their PV1 is required by the
    /// structure but usually empty, and they never create or change a
    /// visit (v2.5 chapter 3.3.28, 3.3.31).
    pub fn touches_encounters(self) -> bool {
        !matches!(self, Self::A28 | Self::A31 | Self::A40)
    }
}

/// An identifier with its assigning authority (CX: value, CX.4 namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cx {
    pub value: String,
    pub authority: String,
}

/// What the identity map takes from one ADT message. Names, birth dates and
/// addresses are not read: matching needs identifiers and phone numbers only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adt {
    /// MSH-10, with MSH-3/4 the key of idempotent redelivery.
    pub control_id: String,
    pub sending_application: String,
    pub sending_facility: String,
    pub event: AdtEvent,
    /// PID-3, every repetition.
    pub identifiers: Vec<Cx>,
    /// PID-13, every telephone repetition normalised to international
    /// digits (E.164 without `+`); e-mail, fax and beeper entries left out.
    pub phones: Vec<String>,
    /// Whether PID-13 was sent, sent as the null value `""`, or left out;
    /// this decides whether `phones` replaces, clears or keeps the stored
    /// numbers (HL7 v2 chapter 2, "Null values in fields").
    pub phone_field: Presence,
    /// PV1-19, the visit (case) number.
    pub visit: Option<Cx>,
    /// MRG-1 of an A40: the prior patient's identifiers.
    pub prior: Vec<Cx>,
    /// An A40's patient groups after the first (ADT_A39 repeats
    /// `{PID [PD1] MRG [PV1]}`): each its own survivor (PID-3, PID-13)
    /// and prior patient (MRG-1). Empty for other events and for an A40
    /// with one group (which is in the fields above).
    pub more_merges: Vec<PatientGroup>,
    /// Remarks for the ACK of an applied message (severity W): a PID-13
    /// telephone repetition whose number cannot be read.
    pub notices: Vec<Notice>,
    /// SHA-256 (hex) of the message's segments without MSH-7: a resend
    /// under the same MSH-10 must carry the same content.
    pub content_sha256: String,
}

/// One patient group of a message: PID-3, PID-13 and, for an A40, MRG-1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientGroup {
    pub identifiers: Vec<Cx>,
    pub phones: Vec<String>,
    pub phone_field: Presence,
    pub prior: Vec<Cx>,
}

impl Adt {
    /// The patient groups in message order: the first (the fields of
    /// `Adt`), then `more_merges`. Every event but A40 has exactly one.
    pub fn groups(&self) -> Vec<PatientGroup> {
        let mut out = vec![PatientGroup {
            identifiers: self.identifiers.clone(),
            phones: self.phones.clone(),
            phone_field: self.phone_field,
            prior: self.prior.clone(),
        }];
        out.extend(self.more_merges.iter().cloned());
        out
    }
}

/// The place of a segment occurrence: `PID` for the first, `PID(2)` for
/// the second (ERR-2 `PID^2`).
pub fn occurrence(segment: &str, n: usize) -> String {
    if n <= 1 {
        segment.to_owned()
    } else {
        format!("{segment}({n})")
    }
}

/// How a field was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Empty or absent: the receiver keeps what it has.
    Absent,
    /// `""`: the receiver deletes what it has.
    Null,
    /// A value: it replaces what the receiver has.
    Present,
    /// A value in which a telephone repetition could not be read (not a
    /// number, a control character): the list is incomplete, so it cannot
    /// replace the stored numbers. The readable numbers are added, none is
    /// deleted, and the ACK warns at the repetition.
    Partial,
}

/// HL7 table 0357 error codes used in ERR-3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0: message accepted (ERR-4 `I`, a note on what was done).
    Accepted,
    SegmentSequence,
    RequiredFieldMissing,
    DataType,
    TableValueNotFound,
    UnsupportedMessageType,
    UnsupportedEventCode,
    UnknownKeyIdentifier,
    DuplicateKeyIdentifier,
    ApplicationError,
}

impl ErrorCode {
    pub fn code(self) -> &'static str {
        match self {
            Self::Accepted => "0",
            Self::SegmentSequence => "100",
            Self::RequiredFieldMissing => "101",
            Self::DataType => "102",
            Self::TableValueNotFound => "103",
            Self::UnsupportedMessageType => "200",
            Self::UnsupportedEventCode => "201",
            Self::UnknownKeyIdentifier => "204",
            Self::DuplicateKeyIdentifier => "205",
            Self::ApplicationError => "207",
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Self::Accepted => "Message accepted",
            Self::SegmentSequence => "Segment sequence error",
            Self::RequiredFieldMissing => "Required field missing",
            Self::DataType => "Data type error",
            Self::TableValueNotFound => "Table value not found",
            Self::UnsupportedMessageType => "Unsupported message type",
            Self::UnsupportedEventCode => "Unsupported event code",
            Self::UnknownKeyIdentifier => "Unknown key identifier",
            Self::DuplicateKeyIdentifier => "Duplicate key identifier",
            Self::ApplicationError => "Application internal error",
        }
    }
}

/// Why a message was refused: the ACK code (AE or AR), the 0357 code, the
/// place (`PID-3`) and a detail that names places, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ack:?} {} at {location}: {detail}", code.code())]
pub struct AdtError {
    pub ack: AckCode,
    pub code: ErrorCode,
    pub location: String,
    pub detail: String,
}

impl AdtError {
    pub fn reject(code: ErrorCode, location: &str, detail: impl Into<String>) -> Self {
        Self {
            ack: AckCode::Reject,
            code,
            location: location.into(),
            detail: detail.into(),
        }
    }

    pub fn error(code: ErrorCode, location: &str, detail: impl Into<String>) -> Self {
        Self {
            ack: AckCode::Error,
            code,
            location: location.into(),
            detail: detail.into(),
        }
    }
}

/// The header fields needed to answer a message, read even when the rest
/// of it is unusable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub control_id: String,
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    pub trigger: String,
    pub version: String,
}

/// The null value of HL7 v2: the sender asks to delete the stored value.
const NULL: &str = "\"\"";

fn raw<'a>(field: Option<&'a Field<'a>>) -> &'a str {
    field.map(|f| f.raw_value()).unwrap_or("")
}

/// Decodes the escape sequences of a value (HL7 v2 chapter 2, "Use of
/// escape sequences in text fields"): `\F\ \S\ \T\ \R\ \E\`, `\P\` (the
/// v2.7 truncation character), `\Xhh…\` (bytes in the message's character
/// set: UTF-8 when they form UTF-8, else 8859/1), `.br` (a line break).
/// Highlighting (`\H\ \N\`), character set switches (`\C…\ \M…\`),
/// locally defined (`\Z…\`) and other formatting escapes carry no text
/// and are dropped. `Err` with the text so far when an escape sequence is
/// not terminated (a value cut inside an escape).
fn unescape(enc: &Encoding, value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find(enc.escape) {
        out.push_str(&rest[..start]);
        let after = &rest[start + enc.escape.len_utf8()..];
        let Some(end) = after.find(enc.escape) else {
            return Err(out);
        };
        let seq = &after[..end];
        match seq {
            "F" => out.push(enc.field),
            "R" => out.push(enc.repetition),
            "S" => out.push(enc.component),
            "T" => out.push(enc.subcomponent),
            "E" => out.push(enc.escape),
            "P" => out.push(enc.truncation.unwrap_or('#')),
            ".br" => out.push('\r'),
            "H" | "N" => {}
            s if s.starts_with('X') && s.len() > 1 && s.len() % 2 == 1 => {
                match hex::decode(&s[1..]) {
                    Ok(bytes) => match String::from_utf8(bytes) {
                        Ok(t) => out.push_str(&t),
                        Err(e) => out.extend(e.into_bytes().iter().map(|&b| b as char)),
                    },
                    Err(_) => out.push_str(s),
                }
            }
            s if s.starts_with(['C', 'M', 'Z', '.']) => {}
            other => out.push_str(other),
        }
        rest = &after[end + enc.escape.len_utf8()..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
fn encoding_of(seps: &Separators) -> Encoding {
    Encoding {
        field: seps.field,
        component: seps.component,
        repetition: seps.repetition,
        escape: seps.escape,
        subcomponent: seps.subcomponent,
        truncation: None,
    }
}

/// Decodes the escape sequences of a field (`\F\`, `\S\`, …), leniently: an
/// unterminated escape drops the rest. Our own: hl7-parser 0.3's decoder
/// slices by character count and panics on non-ASCII text before an escape
/// (found by fuzzing, `fuzz/regressions/hl7_adt/`).
#[cfg(test)]
fn decoded(seps: &Separators, value: &str) -> String {
    unescape(&encoding_of(seps), value).unwrap_or_else(|partial| partial)
}

/// The first message of a text, as [`er7::split`] reads it.
fn first_message(text: &str) -> Option<String> {
    er7::split(text.as_bytes())
        .messages
        .into_iter()
        .next()
        .map(|m| String::from_utf8_lossy(&m.bytes).into_owned())
}

/// Reads what it can of MSH, for the ACK: by splitting MSH itself at the
/// field separator, so MSH-10 is echoed even when MSH-2 is malformed or
/// the rest of the message does not parse.
pub fn header(text: &str) -> Header {
    let Some(message) = first_message(text) else {
        return Header::default();
    };
    header_of(&message)
}

fn header_of(message: &str) -> Header {
    let seg = message.split('\r').next().unwrap_or_default();
    if !seg.starts_with("MSH") {
        return Header::default();
    }
    let Some(fs) = seg[3..].chars().next() else {
        return Header::default();
    };
    let enc = er7::encoding(seg).ok();
    let parts: Vec<&str> = seg.split(fs).collect();
    let value = |raw: &str| match &enc {
        Some(e) => unescape(e, raw).unwrap_or_else(|p| p),
        None => raw.to_owned(),
    };
    let field = |n: usize| value(parts.get(n - 1).copied().unwrap_or(""));
    let component = enc.map(|e| e.component).unwrap_or('^');
    let trigger = parts
        .get(8)
        .and_then(|f| f.split(component).nth(1))
        .map(value)
        .unwrap_or_default();
    Header {
        sending_application: field(3),
        sending_facility: field(4),
        receiving_application: field(5),
        receiving_facility: field(6),
        control_id: field(10),
        trigger,
        version: field(12),
    }
}

/// SHA-256 (hex) of a message's segments with MSH-7 (the time the message
/// was built, which a resending engine may renew) left out.
fn content_sha256(message: &str, fs: char) -> String {
    let mut h = Sha256::new();
    for (i, seg) in message.split('\r').enumerate() {
        if i == 0 {
            for (n, f) in seg.split(fs).enumerate() {
                if n != 6 {
                    h.update(f.as_bytes());
                }
                h.update([0x1f]);
            }
        } else {
            h.update(seg.as_bytes());
        }
        h.update([0x1e]);
    }
    hex::encode(h.finalize())
}

/// Parses one ADT message (or a payload holding exactly one). Nothing is
/// applied here; a refusal says which ACK to answer. The order of checks:
/// MSH start, MSH-1/MSH-2, a cut last segment, MSH-18, segment syntax,
/// MSH-9, MSH-10, a second EVN/PID/PV1 where the structure has one (A40:
/// a second EVN), then the segments and fields the event needs (PID,
/// PID-3, PID-13, PV1-19 of A03/A11, each A40 group's MRG and MRG-1, EVN,
/// PV1). Unreadable PID-13 telephones are not refusals: they are in
/// `Adt::notices`.
pub fn parse_adt(text: &str, default_country_code: &str) -> Result<Adt, AdtError> {
    let payload = er7::split(text.as_bytes());
    match payload.messages.as_slice() {
        [] => Err(AdtError::reject(
            ErrorCode::SegmentSequence,
            "MSH",
            "the message does not start with an MSH segment",
        )),
        [one] => parse_message(&String::from_utf8_lossy(&one.bytes), default_country_code),
        _ => Err(AdtError::reject(
            ErrorCode::SegmentSequence,
            "MSH",
            "more than one message: a batch is answered message by message",
        )),
    }
}

fn segment_place(segment: &str, index: usize) -> String {
    if segment.len() >= 3 && er7_segment_id(&segment[..3]) {
        segment[..3].to_owned()
    } else {
        format!("segment {}", index + 1)
    }
}

fn er7_segment_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 3
        && b[0].is_ascii_uppercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

fn parse_message(message: &str, default_country_code: &str) -> Result<Adt, AdtError> {
    if !message.starts_with("MSH") {
        return Err(AdtError::reject(
            ErrorCode::SegmentSequence,
            "MSH",
            "the message does not start with an MSH segment",
        ));
    }
    let enc = er7::encoding(message)?;
    if !message.ends_with('\r') {
        let segs: Vec<&str> = message.split('\r').collect();
        let last = segs.len() - 1;
        return Err(AdtError::reject(
            ErrorCode::SegmentSequence,
            &segment_place(segs[last], last),
            "the last segment has no segment terminator: the message was cut",
        ));
    }
    let body = message.trim_end_matches('\r');
    // hl7-parser knows 4 encoding characters; the truncation character is
    // kept in `enc` and removed from MSH-2.
    let body = match enc.truncation {
        Some(t) => {
            let cut = 3 + enc.field.len_utf8() + 4;
            let rest = &body[cut..];
            format!("{}{}", &body[..cut], rest.strip_prefix(t).unwrap_or(rest))
        }
        None => body.to_owned(),
    };
    let declared = body
        .split('\r')
        .next()
        .and_then(|msh| msh.split(enc.field).nth(17))
        .unwrap_or("");
    if er7::Charset::from_msh18(declared).is_none() {
        return Err(AdtError::reject(
            ErrorCode::TableValueNotFound,
            "MSH-18",
            "character set not supported (supported: ASCII, 8859/1, 8859/15, UNICODE UTF-8)",
        ));
    }
    let m = Hl7Message::parse(&body).map_err(|e| {
        let at = match e {
            hl7_parser::parser::ParseError::FailedToParse { position, .. } => {
                format!("byte {position}")
            }
            hl7_parser::parser::ParseError::IncompleteInput(_) => "end of input".into(),
        };
        AdtError::reject(
            ErrorCode::SegmentSequence,
            "MSH",
            format!("unparsable at {at}"),
        )
    })?;
    // The parser stops at the first segment it cannot read; the rest must
    // not be dropped silently.
    let parsed = m.raw_value().len();
    if parsed < body.len() {
        let segment = body[..parsed].matches('\r').count() + 2;
        return Err(AdtError::reject(
            ErrorCode::SegmentSequence,
            &format!("segment {segment}"),
            "malformed segment (a segment is a three-letter name followed by fields)",
        ));
    }
    let msh = m.segment("MSH").expect("a parsed message starts with MSH");
    let value = |raw: &str, place: &str| -> Result<String, AdtError> {
        let v = unescape(&enc, raw).map_err(|_| {
            AdtError::error(
                ErrorCode::DataType,
                place,
                "escape sequence not terminated: the value was cut",
            )
        })?;
        Ok(v)
    };
    let message_type = msh.field(9);
    if raw(message_type).is_empty() {
        return Err(AdtError::reject(
            ErrorCode::RequiredFieldMissing,
            "MSH-9",
            "message type is empty",
        ));
    }
    let code = message_type
        .and_then(|f| f.component(1))
        .map(|c| c.raw_value())
        .unwrap_or("");
    let trigger = message_type
        .and_then(|f| f.component(2))
        .map(|c| c.raw_value())
        .unwrap_or("");
    if code != "ADT" {
        return Err(AdtError::reject(
            ErrorCode::UnsupportedMessageType,
            "MSH-9.1",
            "only ADT messages are accepted",
        ));
    }
    let event = AdtEvent::parse(trigger).ok_or_else(|| {
        AdtError::reject(
            ErrorCode::UnsupportedEventCode,
            "MSH-9.2",
            "supported events: A01, A03, A04, A08, A11, A28, A31, A40",
        )
    })?;
    let control_id = value(raw(msh.field(10)), "MSH-10")?;
    if control_id.is_empty() || control_id == NULL {
        return Err(AdtError::reject(
            ErrorCode::RequiredFieldMissing,
            "MSH-10",
            "message control id is empty",
        ));
    }
    let ctx = Ctx {
        enc,
        default_country: default_country_code,
    };
    // Segments read once must occur once: the v2.5 structures (ADT_A01,
    // ADT_A03, ADT_A05, ADT_A09) have one EVN, PID and PV1; ADT_A39 one
    // EVN and a repeating group `{PID [PD1] MRG [PV1]}`. A second PID
    // outside A40 is not read and not dropped silently either.
    let once: &[&str] = if event == AdtEvent::A40 {
        &["EVN"]
    } else {
        &["EVN", "PID", "PV1"]
    };
    for name in once {
        if m.segment_count(name) > 1 {
            return Err(AdtError::error(
                ErrorCode::SegmentSequence,
                &occurrence(name, 2),
                "this segment occurs once in the message structure; a repetition is not applied",
            ));
        }
    }
    let pids: Vec<_> = m.segments().filter(|s| s.name == "PID").collect();
    let Some(pid) = pids.first() else {
        return Err(AdtError::error(
            ErrorCode::SegmentSequence,
            "PID",
            "the PID segment is missing",
        ));
    };
    let first = ctx.person(pid, 1)?;
    let pv1 = m.segment("PV1");
    let visit = match pv1 {
        Some(pv1) => ctx.cx_list(pv1.field(19), "PV1-19")?.into_iter().next(),
        None => None,
    };
    if matches!(event, AdtEvent::A03 | AdtEvent::A11) && visit.is_none() {
        return Err(AdtError::error(
            ErrorCode::RequiredFieldMissing,
            "PV1-19",
            "a discharge or cancel needs the visit number",
        ));
    }
    let mut groups = vec![first];
    if event == AdtEvent::A40 {
        // Each MRG belongs to the PID before it; the k-th MRG is group k.
        let mut mrgs: Vec<Option<&hl7_parser::message::Segment<'_>>> = Vec::new();
        for seg in m.segments() {
            match seg.name {
                "PID" => mrgs.push(None),
                "MRG" => match mrgs.last_mut() {
                    Some(slot @ None) => *slot = Some(seg),
                    Some(Some(_)) => {
                        return Err(AdtError::error(
                            ErrorCode::SegmentSequence,
                            &occurrence("MRG", mrgs.iter().flatten().count() + 1),
                            "a second MRG in one patient group (each PID has one MRG)",
                        ));
                    }
                    None => {
                        return Err(AdtError::error(
                            ErrorCode::SegmentSequence,
                            "MRG",
                            "MRG before the PID of its patient group",
                        ));
                    }
                },
                _ => {}
            }
        }
        for (i, pid) in pids.iter().enumerate() {
            let n = i + 1;
            if n > 1 {
                groups.push(ctx.person(pid, n)?);
            }
            let mrg_at = occurrence("MRG", n);
            let mrg = mrgs[i].ok_or_else(|| {
                AdtError::error(
                    ErrorCode::SegmentSequence,
                    &mrg_at,
                    "a merge needs the MRG segment",
                )
            })?;
            let prior = ctx.cx_list(mrg.field(1), &format!("{mrg_at}-1"))?;
            if prior.is_empty() {
                return Err(AdtError::error(
                    ErrorCode::RequiredFieldMissing,
                    &format!("{mrg_at}-1"),
                    "no prior patient identifier",
                ));
            }
            groups[i].0.prior = prior;
        }
    }
    // Required segments of the message structures (v2.5 chapter 3:
    // ADT_A01, ADT_A03, ADT_A05, ADT_A09 need EVN and PV1; ADT_A39 needs
    // EVN): a message cut before them is incomplete and is not applied.
    if m.segment("EVN").is_none() {
        return Err(AdtError::error(
            ErrorCode::SegmentSequence,
            "EVN",
            "the EVN segment is missing",
        ));
    }
    if event != AdtEvent::A40 && pv1.is_none() {
        return Err(AdtError::error(
            ErrorCode::SegmentSequence,
            "PV1",
            "the PV1 segment is missing",
        ));
    }
    let mut notices = Vec::new();
    let mut groups = groups.into_iter().map(|(g, n)| {
        notices.extend(n);
        g
    });
    let first = groups.next().expect("one patient group");
    let more_merges: Vec<PatientGroup> = groups.collect();
    Ok(Adt {
        control_id,
        sending_application: value(raw(msh.field(3)), "MSH-3")?,
        sending_facility: value(raw(msh.field(4)), "MSH-4")?,
        event,
        identifiers: first.identifiers,
        phones: first.phones,
        phone_field: first.phone_field,
        visit,
        prior: first.prior,
        more_merges,
        notices,
        content_sha256: content_sha256(&body, enc.field),
    })
}

/// What reading a field needs: the encoding characters and the default
/// country of national phone numbers.
struct Ctx<'a> {
    enc: Encoding,
    default_country: &'a str,
}

impl Ctx<'_> {
    /// A component's value, unescaped; `""` reads as empty. A value that
    /// ends in the truncation character was cut by the sender (v2.7) and
    /// is refused, as is an unterminated escape sequence.
    fn component(&self, r: &Repeat<'_>, n: usize, place: &str) -> Result<String, AdtError> {
        let raw = r.component(n).map(|c| c.raw_value()).unwrap_or_default();
        self.value(raw, place)
    }

    fn value(&self, raw: &str, place: &str) -> Result<String, AdtError> {
        if raw == NULL {
            return Ok(String::new());
        }
        if let Some(t) = self.enc.truncation
            && raw.ends_with(t)
        {
            return Err(AdtError::error(
                ErrorCode::DataType,
                place,
                "the sender truncated this value (truncation character)",
            ));
        }
        unescape(&self.enc, raw).map_err(|_| {
            AdtError::error(
                ErrorCode::DataType,
                place,
                "escape sequence not terminated: the value was cut",
            )
        })
    }

    /// Every repetition of a CX field: value (component 1) and assigning
    /// authority (component 4, its namespace id). A repetition with an
    /// authority but no value is a data type error; `""` is no value.
    fn cx_list(&self, field: Option<&Field<'_>>, place: &str) -> Result<Vec<Cx>, AdtError> {
        let Some(field) = field else {
            return Ok(Vec::new());
        };
        if field.raw_value() == NULL {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (i, r) in field.repeats().enumerate() {
            if r.is_empty() || r.raw_value() == NULL {
                continue;
            }
            let at = format!("{place} repetition {}", i + 1);
            let value = self.component(r, 1, &at)?;
            let authority_raw = r
                .component(4)
                .and_then(|c| c.subcomponent(1))
                .map(|s| s.raw_value())
                .unwrap_or_default();
            let authority = self.value(authority_raw, &at)?;
            if value.trim().is_empty() {
                return Err(AdtError::error(
                    ErrorCode::DataType,
                    &at,
                    "identifier without a value",
                ));
            }
            let cx = Cx {
                value: value.trim().to_owned(),
                authority: authority.trim().to_owned(),
            };
            if !out.contains(&cx) {
                out.push(cx);
            }
        }
        Ok(out)
    }

    /// PID-3 and PID-13 of the `n`-th PID (places `PID(n)-3`, …), with
    /// the warnings of unreadable telephone repetitions.
    fn person(
        &self,
        pid: &hl7_parser::message::Segment<'_>,
        n: usize,
    ) -> Result<(PatientGroup, Vec<Notice>), AdtError> {
        let seg = occurrence("PID", n);
        let identifiers = self.cx_list(pid.field(3), &format!("{seg}-3"))?;
        if identifiers.is_empty() {
            return Err(AdtError::error(
                ErrorCode::RequiredFieldMissing,
                &format!("{seg}-3"),
                "no patient identifier",
            ));
        }
        let mut notices = Vec::new();
        let (phones, phone_field) = match pid.field(13) {
            None => (Vec::new(), Presence::Absent),
            Some(f) if f.raw_value().is_empty() => (Vec::new(), Presence::Absent),
            Some(f) if f.raw_value() == NULL => (Vec::new(), Presence::Null),
            Some(f) => {
                let mut phones = Vec::new();
                let mut numbers = 0;
                for (i, r) in f.repeats().enumerate() {
                    let at = format!("{seg}-13 repetition {}", i + 1);
                    match self.phone(r, &at)? {
                        Telecom::Phone(p) => {
                            numbers += 1;
                            if !phones.contains(&p) {
                                phones.push(p);
                            }
                        }
                        Telecom::Other => numbers += 1,
                        Telecom::Empty => {}
                        Telecom::Unreadable => notices.push(Notice {
                            code: ErrorCode::DataType,
                            severity: "W",
                            location: at,
                            detail: "telephone number not readable; stored phone numbers kept"
                                .into(),
                        }),
                    }
                }
                let presence = if !notices.is_empty() {
                    Presence::Partial
                } else if numbers == 0 {
                    // Only repetitions without any number: nothing was
                    // sent to replace the stored numbers with.
                    Presence::Absent
                } else {
                    Presence::Present
                };
                (phones, presence)
            }
        };
        Ok((
            PatientGroup {
                identifiers,
                phones,
                phone_field,
                prior: Vec::new(),
            },
            notices,
        ))
    }

    /// An XTN repetition (HL7 v2.5 chapter 2.A.89): its number is XTN-12
    /// (unformatted), else XTN-5/6/7 (country, area, local), else XTN-1,
    /// read as international digits. `Other` when it is not a telephone of
    /// the patient: telecom use (table 0201) NET (e-mail), BPN (beeper),
    /// ASN (answering service), EMR (emergency contact); equipment (table
    /// 0202) Internet, X.400, FX (fax), MD (modem), BP (beeper), TDD/TTY.
    /// `Empty` when no number component has a value. `Unreadable` for a
    /// telephone whose number is not a phone number (text, a control
    /// character from an escape, too few or too many digits).
    fn phone(&self, r: &Repeat<'_>, place: &str) -> Result<Telecom, AdtError> {
        if r.raw_value() == NULL || r.is_empty() {
            return Ok(Telecom::Empty);
        }
        let comp = |n| self.component(r, n, place);
        let usage = comp(2)?.to_ascii_uppercase();
        let equipment = comp(3)?.to_ascii_uppercase();
        if matches!(usage.as_str(), "NET" | "BPN" | "ASN" | "EMR")
            || matches!(
                equipment.as_str(),
                "INTERNET" | "X.400" | "FX" | "MD" | "BP" | "TDD" | "TTY"
            )
        {
            return Ok(Telecom::Other);
        }
        let candidate = if !comp(12)?.is_empty() {
            comp(12)?
        } else if !comp(7)?.is_empty() {
            let (country, area, local) = (comp(5)?, comp(6)?, comp(7)?);
            let area = area.trim().trim_start_matches('0');
            if !country.trim().is_empty() {
                format!("+{} {area} {local}", country.trim().trim_start_matches('+'))
            } else if area.is_empty() {
                local
            } else {
                format!("0{area} {local}")
            }
        } else {
            comp(1)?
        };
        if candidate.trim().is_empty() {
            return Ok(Telecom::Empty);
        }
        Ok(match normalise_phone(&candidate, self.default_country) {
            Some(p) => Telecom::Phone(p),
            None => Telecom::Unreadable,
        })
    }
}

/// What one PID-13 repetition is.
enum Telecom {
    /// A telephone of the patient, as international digits.
    Phone(String),
    /// E-mail, fax, beeper, an emergency contact: not stored.
    Other,
    /// No number at all (an empty repetition, or only type codes).
    Empty,
    /// A telephone whose number cannot be read.
    Unreadable,
}

/// The phonenumber region of `default_country`: a calling code (`49`) or
/// an ISO 3166 region (`DE`).
fn region(default_country: &str) -> Option<phonenumber::country::Id> {
    let d = default_country.trim().trim_start_matches('+');
    let id = if d.chars().all(|c| c.is_ascii_digit()) {
        let code: u16 = d.parse().ok()?;
        let db = &*phonenumber::metadata::DATABASE;
        let regions = db.by_code(&code)?;
        let main = regions
            .iter()
            .find(|m| m.is_main_country_for_code())
            .or(regions.first())?;
        main.id().to_owned()
    } else {
        d.to_ascii_uppercase()
    };
    id.parse().ok()
}

/// A phone number as international digits without `+` (E.164 digits), by
/// libphonenumber's rules (`phonenumber` crate) with `default_country` (a
/// calling code such as `49`, or a region such as `DE`) for national
/// numbers: `+49 151 …`, `+49 (0)151 …`, `0049 151…`, `0151 …` all become
/// `49151…`. Used for both sides of a match: PID-13 of ADT messages and
/// the phone numbers of messenger conversations (WhatsApp's `wa_id` is
/// international and is passed with a leading `+`). `None` for text that
/// is not a phone number (letters, too few or too many digits).
pub fn normalise_phone(text: &str, default_country: &str) -> Option<String> {
    let t = text.trim();
    if t.is_empty()
        || t.chars()
            .any(|c| !(c.is_ascii_digit() || " +-()/.".contains(c)))
    {
        return None;
    }
    let number = phonenumber::parse(region(default_country), t).ok()?;
    let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
    let digits = e164.trim_start_matches('+');
    (7..=15).contains(&digits.len()).then(|| digits.to_owned())
}

#[cfg(test)]
mod tests;
