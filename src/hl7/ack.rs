//! The HL7 v2 ACK answered for every ADT message: MSA-1 AA, AE or AR,
//! MSA-2 the message's control id, MSA-3 and ERR the reason (places and
//! table 0357 codes, never values).

use hl7_parser::builder::prelude::*;

use super::{AdtError, Header};

/// MSA-1, the acknowledgment code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// AA: applied (or already applied: a redelivery).
    Accept,
    /// AE: understood but not applicable (missing PID-3, unknown merge source).
    Error,
    /// AR: refused (unsupported type or event, unparsable segments).
    Reject,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "AA",
            Self::Error => "AE",
            Self::Reject => "AR",
        }
    }
}

/// `PID-3` → ERL `PID^1^3`; `MSH-9.2` → `MSH^1^9^1^2`. Other places
/// (`segment 4`) have no ERL form.
fn erl(location: &str) -> Option<FieldBuilder> {
    let (segment, rest) = location.split_once('-')?;
    let rest = rest.split_whitespace().next()?;
    let (field, component) = match rest.split_once('.') {
        Some((f, c)) => (f, Some(c)),
        None => (rest, None),
    };
    if segment.len() != 3 || field.parse::<u32>().is_err() {
        return None;
    }
    let mut b = FieldBuilder::default()
        .with_component(1, segment)
        .with_component(2, "1")
        .with_component(3, field);
    if let Some(c) = component.filter(|c| c.parse::<u32>().is_ok()) {
        b = b.with_component(4, "1").with_component(5, c);
    }
    Some(b)
}

/// Builds the ACK (segments separated by CR) for a message with `header`.
/// `control_id` is the ACK's own MSH-10; `now` its MSH-7 (`YYYYMMDDHHMMSS`).
pub fn build_ack(
    header: &Header,
    outcome: Result<(), &AdtError>,
    control_id: &str,
    now: &str,
) -> String {
    let code = match outcome {
        Ok(()) => AckCode::Accept,
        Err(e) => e.ack,
    };
    let version = if header.version.is_empty() {
        "2.5"
    } else {
        header.version.as_str()
    };
    let trigger = if header.trigger.is_empty() {
        "A01"
    } else {
        header.trigger.as_str()
    };
    let sending_application = if header.receiving_application.is_empty() {
        "CHARTBRIDGE"
    } else {
        header.receiving_application.as_str()
    };
    let msh = SegmentBuilder::new("MSH")
        .with_field_value(3, sending_application)
        .with_field_value(4, &header.receiving_facility)
        .with_field_value(5, &header.sending_application)
        .with_field_value(6, &header.sending_facility)
        .with_field_value(7, now)
        .with_field(
            9,
            FieldBuilder::default()
                .with_component(1, "ACK")
                .with_component(2, trigger)
                .with_component(3, "ACK"),
        )
        .with_field_value(10, control_id)
        .with_field_value(11, "P")
        .with_field_value(12, version);
    let text = match outcome {
        Ok(()) => "applied".to_owned(),
        Err(e) => format!("{}: {}", e.location, e.detail),
    };
    let msa = SegmentBuilder::new("MSA")
        .with_field_value(1, code.as_str())
        .with_field_value(2, &header.control_id)
        .with_field_value(3, text);
    let mut message = MessageBuilder::new(Separators::default())
        .with_segment(msh)
        .with_segment(msa);
    if let Err(e) = outcome {
        let mut err = SegmentBuilder::new("ERR")
            .with_field(
                3,
                FieldBuilder::default()
                    .with_component(1, e.code.code())
                    .with_component(2, e.code.text())
                    .with_component(3, "HL70357"),
            )
            .with_field_value(4, "E")
            .with_field_value(8, format!("{}: {}", e.location, e.detail));
        if let Some(location) = erl(&e.location) {
            err = err.with_field(2, location);
        }
        message = message.with_segment(err);
    }
    message.to_string()
}
