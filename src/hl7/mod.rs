//! HL7 v2 ADT input: parsing (with the hl7-parser crate) into the few facts
//! the identity map keeps, and the ACK answered for every message.
//!
//! Supported: ADT^A01 (admit), A04 (register), A08 (update), A03
//! (discharge), A11 (cancel admit), A40 (merge patient). Errors name the
//! place (`PID-3`, `segment 4`) and an HL7 table 0357 code, never a value.

mod ack;
pub mod feed;
pub mod mllp;

pub use ack::{AckCode, build_ack};

use hl7_parser::Message as Hl7Message;
use hl7_parser::message::{Field, Repeat, Separators};

/// The ADT trigger events the identity map understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdtEvent {
    A01,
    A03,
    A04,
    A08,
    A11,
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
            Self::A08 | Self::A40 => None,
        }
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
    /// PID-13, normalised to international digits.
    pub phones: Vec<String>,
    /// PV1-19, the visit (case) number.
    pub visit: Option<Cx>,
    /// MRG-1 of an A40: the prior patient's identifiers.
    pub prior: Vec<Cx>,
}

/// HL7 table 0357 error codes used in ERR-3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    SegmentSequence,
    RequiredFieldMissing,
    DataType,
    UnsupportedMessageType,
    UnsupportedEventCode,
    UnknownKeyIdentifier,
    DuplicateKeyIdentifier,
    ApplicationError,
}

impl ErrorCode {
    pub fn code(self) -> &'static str {
        match self {
            Self::SegmentSequence => "100",
            Self::RequiredFieldMissing => "101",
            Self::DataType => "102",
            Self::UnsupportedMessageType => "200",
            Self::UnsupportedEventCode => "201",
            Self::UnknownKeyIdentifier => "204",
            Self::DuplicateKeyIdentifier => "205",
            Self::ApplicationError => "207",
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Self::SegmentSequence => "Segment sequence error",
            Self::RequiredFieldMissing => "Required field missing",
            Self::DataType => "Data type error",
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

/// Segments end with CR; files and some senders use LF or CRLF. Trailing
/// separators and MLLP framing bytes are not part of the message.
fn normalise(text: &str) -> String {
    text.trim_matches(|c: char| c == '\u{0b}' || c == '\u{1c}' || c.is_whitespace())
        .replace("\r\n", "\r")
        .replace('\n', "\r")
}

fn raw<'a>(field: Option<&'a Field<'a>>) -> &'a str {
    field.map(|f| f.raw_value()).unwrap_or("")
}

fn decoded(seps: &Separators, value: &str) -> String {
    seps.decode(value).to_string()
}

/// Reads what it can of MSH, for the ACK.
pub fn header(text: &str) -> Header {
    let text = normalise(text);
    let Ok(m) = Hl7Message::parse(&text) else {
        return Header::default();
    };
    let Some(msh) = m.segment("MSH") else {
        return Header::default();
    };
    let seps = m.separators;
    let field = |n| decoded(&seps, raw(msh.field(n)));
    let trigger = msh
        .field(9)
        .and_then(|f| f.component(2))
        .map(|c| decoded(&seps, c.raw_value()))
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

/// Parses an ADT message. Nothing is applied here; a refusal says which
/// ACK to answer.
pub fn parse_adt(text: &str, default_country_code: &str) -> Result<Adt, AdtError> {
    let text = normalise(text);
    if !text.starts_with("MSH") {
        return Err(AdtError::reject(
            ErrorCode::SegmentSequence,
            "MSH",
            "the message does not start with an MSH segment",
        ));
    }
    let m = Hl7Message::parse(&text).map_err(|e| {
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
    if parsed < text.len() {
        let segment = text[..parsed].matches('\r').count() + 2;
        return Err(AdtError::reject(
            ErrorCode::SegmentSequence,
            &format!("segment {segment}"),
            "malformed segment (a segment is a three-letter name followed by fields)",
        ));
    }
    let seps = m.separators;
    let msh = m.segment("MSH").expect("a parsed message starts with MSH");
    let message_type = msh.field(9);
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
            "supported events: A01, A03, A04, A08, A11, A40",
        )
    })?;
    let control_id = decoded(&seps, raw(msh.field(10)));
    if control_id.is_empty() {
        return Err(AdtError::reject(
            ErrorCode::RequiredFieldMissing,
            "MSH-10",
            "message control id is empty",
        ));
    }
    let pid = m.segment("PID").ok_or_else(|| {
        AdtError::error(
            ErrorCode::SegmentSequence,
            "PID",
            "the PID segment is missing",
        )
    })?;
    let identifiers = cx_list(&seps, pid.field(3), "PID-3")?;
    if identifiers.is_empty() {
        return Err(AdtError::error(
            ErrorCode::RequiredFieldMissing,
            "PID-3",
            "no patient identifier",
        ));
    }
    let phones = pid
        .field(13)
        .map(|f| {
            f.repeats()
                .filter_map(|r| phone(&seps, r, default_country_code))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let visit = match m.segment("PV1") {
        Some(pv1) => cx_list(&seps, pv1.field(19), "PV1-19")?.into_iter().next(),
        None => None,
    };
    if matches!(event, AdtEvent::A03 | AdtEvent::A11) && visit.is_none() {
        return Err(AdtError::error(
            ErrorCode::RequiredFieldMissing,
            "PV1-19",
            "a discharge or cancel needs the visit number",
        ));
    }
    let prior = if event == AdtEvent::A40 {
        let mrg = m.segment("MRG").ok_or_else(|| {
            AdtError::error(
                ErrorCode::SegmentSequence,
                "MRG",
                "a merge needs the MRG segment",
            )
        })?;
        let prior = cx_list(&seps, mrg.field(1), "MRG-1")?;
        if prior.is_empty() {
            return Err(AdtError::error(
                ErrorCode::RequiredFieldMissing,
                "MRG-1",
                "no prior patient identifier",
            ));
        }
        prior
    } else {
        Vec::new()
    };
    Ok(Adt {
        control_id,
        sending_application: decoded(&seps, raw(msh.field(3))),
        sending_facility: decoded(&seps, raw(msh.field(4))),
        event,
        identifiers,
        phones,
        visit,
        prior,
    })
}

/// Every repetition of a CX field: value (component 1) and assigning
/// authority (component 4, its namespace id). A repetition with an
/// authority but no value is a data type error.
fn cx_list(seps: &Separators, field: Option<&Field<'_>>, place: &str) -> Result<Vec<Cx>, AdtError> {
    let Some(field) = field else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, r) in field.repeats().enumerate() {
        if r.is_empty() {
            continue;
        }
        let value = r
            .component(1)
            .map(|c| decoded(seps, c.raw_value()))
            .unwrap_or_default();
        let authority = r
            .component(4)
            .and_then(|c| c.subcomponent(1))
            .map(|s| decoded(seps, s.raw_value()))
            .unwrap_or_default();
        if value.trim().is_empty() {
            return Err(AdtError::error(
                ErrorCode::DataType,
                &format!("{place} repetition {}", i + 1),
                "identifier without a value",
            ));
        }
        out.push(Cx {
            value: value.trim().to_owned(),
            authority: authority.trim().to_owned(),
        });
    }
    Ok(out)
}

/// An XTN repetition as international digits: XTN-12 (unformatted), else
/// XTN-5/6/7 (country, area, local), else XTN-1. `None` when it holds no
/// telephone number (an e-mail address, say).
fn phone(seps: &Separators, r: &Repeat<'_>, default_country: &str) -> Option<String> {
    let comp = |n| {
        r.component(n)
            .map(|c| decoded(seps, c.raw_value()))
            .unwrap_or_default()
    };
    let equipment = comp(3);
    if matches!(equipment.as_str(), "Internet" | "X.400" | "FX" | "BP") {
        return None;
    }
    let candidate = if !comp(12).is_empty() {
        comp(12)
    } else if !comp(7).is_empty() {
        let country = comp(5);
        let area = comp(6);
        if country.is_empty() {
            format!("0{}{}", area.trim_start_matches('0'), comp(7))
        } else {
            format!("+{country}{}{}", area.trim_start_matches('0'), comp(7))
        }
    } else {
        comp(1)
    };
    normalise_phone(&candidate, default_country)
}

/// A phone number as international digits without `+` (E.164 digits):
/// `+49 151 …`, `0049151…` and, with default country 49, `0151…` all
/// become `49151…`. `None` for anything that is not 7 to 15 digits.
pub fn normalise_phone(text: &str, default_country: &str) -> Option<String> {
    let t = text.trim();
    let plus = t.starts_with('+');
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    if t.chars()
        .any(|c| !(c.is_ascii_digit() || " +-()/.".contains(c)))
    {
        return None;
    }
    let international = if plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_owned()
    } else if let Some(rest) = digits.strip_prefix('0') {
        format!("{default_country}{rest}")
    } else {
        digits
    };
    (7..=15)
        .contains(&international.len())
        .then_some(international)
}

#[cfg(test)]
mod tests;
