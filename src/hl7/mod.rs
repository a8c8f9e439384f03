//! HL7 v2 ADT input: parsing (with the hl7-parser crate) into the few facts
//! the identity map keeps, and the ACK answered for every message.
//!
//! Supported: ADT^A01 (admit), A02 (transfer), A04 (register), A05
//! (pre-admit), A06/A07 (change of patient class), A08 (update), A03
//! (discharge), A11 (cancel admit), A13 (cancel discharge), A38 (cancel
//! pre-admit), A28/A31 (add/update person information), A40 (merge
//! patient, every patient group). Errors name the
//! place (`PID-3`, `PID(2)-3` for the second PID, `segment 4`) and an HL7
//! table 0357 code, never a value.
//! The wire form (bytes before MSH, segment terminators, batches, MSH-2,
//! MSH-18) is read by [`er7`] before the `hl7-parser` crate sees a message.

mod ack;
pub mod config;
pub mod er7;
mod escape;
pub mod feed;
mod fields;
pub mod mllp;
mod parse;
mod phone;

pub use ack::{AckCode, Notice, answer_code, build_ack, build_ack_with, build_batch_ack};

use hl7_parser::Message as Hl7Message;
#[cfg(test)]
use hl7_parser::message::Separators;
use hl7_parser::message::{Field, Repeat};
use sha2::{Digest, Sha256};

use er7::Encoding;
use escape::*;
use fields::*;
use parse::*;
pub use phone::normalise_phone;

/// The ADT trigger events the identity map understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdtEvent {
    A01,
    A02,
    A03,
    A04,
    A05,
    A06,
    A07,
    A08,
    A11,
    A13,
    A28,
    A31,
    A38,
    A40,
}

impl AdtEvent {
    fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "A01" => Self::A01,
            "A02" => Self::A02,
            "A03" => Self::A03,
            "A04" => Self::A04,
            "A05" => Self::A05,
            "A06" => Self::A06,
            "A07" => Self::A07,
            "A08" => Self::A08,
            "A11" => Self::A11,
            "A13" => Self::A13,
            "A28" => Self::A28,
            "A38" => Self::A38,
            "A31" => Self::A31,
            // A34 and A36 (v2.5 chapter 3.3.34, 3.3.36: merge patient
            // information, patient ID only / and account number; kept for
            // backward compatibility) merge MRG-1's patient into PID-3's
            // as A40 does; A36's accounts are not kept in the map.
            "A40" | "A34" | "A36" => Self::A40,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::A01 => "A01",
            Self::A02 => "A02",
            Self::A03 => "A03",
            Self::A04 => "A04",
            Self::A05 => "A05",
            Self::A06 => "A06",
            Self::A07 => "A07",
            Self::A08 => "A08",
            Self::A11 => "A11",
            Self::A13 => "A13",
            Self::A28 => "A28",
            Self::A38 => "A38",
            Self::A31 => "A31",
            Self::A40 => "A40",
        }
    }

    /// The FHIR Encounter.status a visit has after this event, if it sets
    /// one (HL7 v2.5 chapter 3.3): admit and cancel discharge (A13: the
    /// visit goes on) put it in progress; cancel admit (A11) and cancel
    /// pre-admit (A38) cancel it. Events that only describe a visit (A08,
    /// transfer A02, change of patient class A06/A07, pre-admit A05) keep
    /// the state of a known visit: a late transfer never reopens a
    /// finished one ([`AdtEvent::new_visit_state`] for a visit not known).
    pub fn encounter_state(self) -> Option<&'static str> {
        match self {
            Self::A01 | Self::A13 => Some("in-progress"),
            Self::A04 => Some("arrived"),
            Self::A03 => Some("finished"),
            Self::A11 | Self::A38 => Some("cancelled"),
            Self::A02
            | Self::A05
            | Self::A06
            | Self::A07
            | Self::A08
            | Self::A28
            | Self::A31
            | Self::A40 => None,
        }
    }

    /// The state of a visit this event names for the first time: its
    /// [`AdtEvent::encounter_state`], `planned` after a pre-admit (A05),
    /// otherwise `in-progress`.
    pub fn new_visit_state(self) -> &'static str {
        match (self.encounter_state(), self) {
            (Some(state), _) => state,
            (None, Self::A05) => "planned",
            (None, _) => "in-progress",
        }
    }

    /// Whether this event changes an existing visit, so that it means
    /// nothing without the visit number (PV1-19): discharge, the cancels,
    /// transfer and change of patient class.
    pub fn needs_visit(self) -> bool {
        matches!(
            self,
            Self::A02 | Self::A03 | Self::A06 | Self::A07 | Self::A11 | Self::A13 | Self::A38
        )
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
    /// PID-13 and PID-40 (v2.7+), every telephone repetition normalised
    /// to international digits (E.164 without `+`); e-mail, fax and beeper
    /// entries left out. PID-14 (business phone) is not read: it is often
    /// a shared line (an employer's, a care home's).
    pub phones: Vec<String>,
    /// Whether those fields were sent, sent as the null value `""`, or
    /// left out ([`Presence::and`]); this decides whether `phones`
    /// replaces, clears or keeps the stored numbers (HL7 v2 chapter 2,
    /// "Null values in fields").
    pub phone_field: Presence,
    /// PV1-19, the visit (case) number.
    pub visit: Option<Cx>,
    /// MRG-5 (prior visit number) of an A06/A07 (ADT_A06 carries an
    /// optional MRG): the account closed when the patient class changed
    /// and PV1-19 names the new one (v2.5 chapter 3.3.6/3.3.7).
    pub prior_visit: Option<Cx>,
    /// PV1-45 (discharge date/time) is valued: the visit is over. An event
    /// that only describes a visit (A08, A02, A06, A07, A05) then records
    /// it `finished` ([`Adt::visit_state`]): an update sent after the
    /// discharge never makes an old visit the patient's current one.
    pub discharged: bool,
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

impl PatientGroup {
    /// The identifiers that name the survivor of a merge: PID-3 without
    /// those MRG-1 names as the prior patient's. A master patient index may
    /// list the merged identifiers in the survivor's PID-3 already (after
    /// the merge they are the survivor's, v2.5 chapter 3.3.40); they still
    /// name the prior patient until the merge is applied. All of PID-3 when
    /// every one of them is in MRG-1.
    pub fn survivor_identifiers(&self) -> Vec<Cx> {
        let own: Vec<Cx> = self
            .identifiers
            .iter()
            .filter(|cx| !self.prior.contains(cx))
            .cloned()
            .collect();
        if own.is_empty() {
            self.identifiers.clone()
        } else {
            own
        }
    }
}

impl Adt {
    /// The state PV1-19's visit is recorded in after this message, and
    /// whether a visit already known keeps its state instead: the event's
    /// [`AdtEvent::encounter_state`]; for an event that only describes a
    /// visit, `finished` when PV1-45 is valued ([`Adt::discharged`]),
    /// otherwise a known visit keeps its state and a new one takes
    /// [`AdtEvent::new_visit_state`].
    ///
    /// An admission or registration (A01, A04) whose PV1-45 is already
    /// valued (a late registration, a resend built from the closed case)
    /// describes a visit that is over: `finished`, and it does not become
    /// the current visit ([`Adt::ranks_visit`]).
    pub fn visit_state(&self) -> (&'static str, bool) {
        match self.event.encounter_state() {
            Some(_) if self.discharged_admission() => ("finished", false),
            Some(state) => (state, false),
            None if self.discharged => ("finished", false),
            None => (self.event.new_visit_state(), true),
        }
    }

    /// Whether PV1-19's visit becomes the patient's most recent one (its
    /// rank set to the message's time): every event that sets a state, and
    /// a change of patient class (A06, A07), which may close the old
    /// account and open a new one under a new visit number; the other
    /// updates (A08, A02, A05) keep a known visit's rank and give a new
    /// one the lowest.
    pub fn ranks_visit(&self) -> bool {
        if self.discharged_admission() {
            return false;
        }
        !self.visit_state().1 || matches!(self.event, AdtEvent::A06 | AdtEvent::A07)
    }

    /// An A01 or A04 whose visit PV1-45 says is over.
    fn discharged_admission(&self) -> bool {
        self.discharged && matches!(self.event, AdtEvent::A01 | AdtEvent::A04)
    }

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

impl Presence {
    /// The presence of several fields read as one list (PID-13, PID-40):
    /// an incomplete field makes the list incomplete; any value replaces;
    /// `""` deletes only when no field has a value.
    pub fn and(self, other: Self) -> Self {
        use Presence::*;
        match (self, other) {
            (Partial, _) | (_, Partial) => Partial,
            (Present, _) | (_, Present) => Present,
            (Null, _) | (_, Null) => Null,
            (Absent, Absent) => Absent,
        }
    }
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
    UnsupportedProcessingId,
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
            Self::UnsupportedProcessingId => "202",
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
            Self::UnsupportedProcessingId => "Unsupported processing id",
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
    /// MSH-3 to MSH-6 (HD: namespace ID, universal ID, its type), MSH-11
    /// (PT: processing ID, mode) and MSH-12 (VID: version ID,
    /// internationalization code, version): each field's components,
    /// unescaped, so that the ACK echoes their structure.
    pub sending_application: Vec<String>,
    pub sending_facility: Vec<String>,
    pub receiving_application: Vec<String>,
    pub receiving_facility: Vec<String>,
    pub processing_id: Vec<String>,
    pub trigger: String,
    pub version: Vec<String>,
    /// MSH-15 and MSH-16 (accept and application acknowledgment type,
    /// HL7 table 0155: `AL`, `NE`, `ER`, `SU`); both empty is the
    /// original acknowledgment mode.
    pub accept_ack: String,
    pub application_ack: String,
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
    // A field's components, unescaped; none for an empty field.
    let components = |n: usize| -> Vec<String> {
        let raw = parts.get(n - 1).copied().unwrap_or("");
        if raw.is_empty() {
            return Vec::new();
        }
        raw.split(component).map(value).collect()
    };
    let trigger = parts
        .get(8)
        .and_then(|f| f.split(component).nth(1))
        .map(value)
        .unwrap_or_default();
    Header {
        sending_application: components(3),
        sending_facility: components(4),
        receiving_application: components(5),
        receiving_facility: components(6),
        control_id: field(10),
        processing_id: components(11),
        trigger,
        version: components(12),
        accept_ack: field(15).trim().to_ascii_uppercase(),
        application_ack: field(16).trim().to_ascii_uppercase(),
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
    let production = [PRODUCTION.to_owned()];
    parse_adt_with(
        text,
        &ReadRules {
            default_country: default_country_code,
            processing_ids: &production,
        },
    )
}

/// MSH-11 processing ID of production messages (HL7 table 0103).
pub const PRODUCTION: &str = "P";

/// What a receiver accepts besides the standard: the default country of
/// national phone numbers (`49`) and the MSH-11 processing IDs whose
/// messages it applies (`["P"]` in production; a test system's feed
/// sends `T`).
#[derive(Debug, Clone, Copy)]
pub struct ReadRules<'a> {
    pub default_country: &'a str,
    pub processing_ids: &'a [String],
}

/// [`parse_adt`] with the receiver's [`ReadRules`].
pub fn parse_adt_with(text: &str, rules: &ReadRules<'_>) -> Result<Adt, AdtError> {
    let payload = er7::split(text.as_bytes());
    match payload.messages.as_slice() {
        [] => Err(AdtError::reject(
            ErrorCode::SegmentSequence,
            "MSH",
            "the message does not start with an MSH segment",
        )),
        [one] => parse_message(&String::from_utf8_lossy(&one.bytes), rules),
        _ => Err(AdtError::reject(
            ErrorCode::SegmentSequence,
            "MSH",
            "more than one message: a batch is answered message by message",
        )),
    }
}

#[cfg(test)]
mod tests;
