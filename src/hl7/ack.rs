//! The HL7 v2 ACK answered for every ADT message: MSA-1 AA, AE or AR,
//! MSA-2 the message's control id, MSA-3 and ERR the reason (places and
//! table 0357 codes, never values).

use hl7_parser::builder::prelude::*;

use super::{AdtError, ErrorCode, Header};

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

    /// MSA-1 of an accept (commit) acknowledgment in the enhanced mode
    /// (table 0008): CA committed, CE not accepted (an error), CR rejected.
    fn commit_str(self) -> &'static str {
        match self {
            Self::Accept => "CA",
            Self::Error => "CE",
            Self::Reject => "CR",
        }
    }
}

/// MSA-1 of the answer to a message with `header` whose outcome is `code`,
/// or `None` when the sender asked for no answer (HL7 v2.5 chapter 2.9.2
/// and 2.9.3).
///
/// - Original mode (MSH-15 and MSH-16 empty): AA, AE or AR, always.
/// - Enhanced mode: the accept acknowledgment CA, CE or CR when MSH-15
///   asks for it (`AL` or empty: always; `ER`: on an error; `SU`: on
///   success; `NE`: never). chartbridge applies a message before it
///   answers, so a CA means applied. Otherwise the application
///   acknowledgment AA, AE or AR when MSH-16 asks for it, on the same
///   connection (chartbridge has no other way back to the sender).
///   Neither asked for: no answer.
pub fn answer_code(header: &Header, code: AckCode) -> Option<&'static str> {
    let (accept, application) = (header.accept_ack.as_str(), header.application_ack.as_str());
    if accept.is_empty() && application.is_empty() {
        return Some(code.as_str());
    }
    let ok = code == AckCode::Accept;
    let wanted = |condition: &str| match condition {
        "NE" => false,
        "ER" => !ok,
        "SU" => ok,
        _ => true,
    };
    if wanted(accept) {
        Some(code.commit_str())
    } else if !application.is_empty() && wanted(application) {
        Some(code.as_str())
    } else {
        None
    }
}

/// ERR-2 (ERL: segment id, sequence, field, repetition, component) of a
/// place: `PID` → `PID^1`; `PID(2)` → `PID^2` (the second PID);
/// `PID-3` → `PID^1^3`; `MRG(2)-1` → `MRG^2^1`; `PID-13 repetition 2` →
/// `PID^1^13^2`; `MSH-9.2` → `MSH^1^9^1^2`. Other places (`segment 4`)
/// have no ERL form.
fn erl(location: &str) -> Option<FieldBuilder> {
    erl_parts(location).map(|parts| components(&parts))
}

/// The components of [`erl`]: segment, sequence, field, repetition,
/// component, as far as the place names them.
fn erl_parts(location: &str) -> Option<Vec<String>> {
    let is_segment = |s: &str| {
        s.len() == 3
            && s.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && s.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    };
    // `PID(2)`: the segment and its sequence (occurrence) in the message.
    let occurrence = |s: &str| -> Option<(String, String)> {
        match s.split_once('(') {
            None => is_segment(s).then(|| (s.to_owned(), "1".to_owned())),
            Some((seg, n)) => {
                let n = n.strip_suffix(')')?;
                (is_segment(seg) && n.parse::<u32>().is_ok_and(|n| n > 0))
                    .then(|| (seg.to_owned(), n.to_owned()))
            }
        }
    };
    if let Some((segment, sequence)) = occurrence(location) {
        return Some(vec![segment, sequence]);
    }
    let (segment, rest) = location.split_once('-')?;
    let (segment, sequence) = occurrence(segment)?;
    let mut words = rest.split_whitespace();
    let place = words.next()?;
    let repetition = match (words.next(), words.next()) {
        (Some("repetition"), Some(n)) if n.parse::<u32>().is_ok() => Some(n),
        _ => None,
    };
    let (field, component) = match place.split_once('.') {
        Some((f, c)) => (f, Some(c)),
        None => (place, None),
    };
    if field.parse::<u32>().is_err() {
        return None;
    }
    let mut parts = vec![segment, sequence, field.to_owned()];
    if let Some(r) = repetition {
        parts.push(r.to_owned());
    }
    if let Some(c) = component.filter(|c| c.parse::<u32>().is_ok()) {
        parts.truncate(3);
        parts.push(repetition.unwrap_or("1").to_owned());
        parts.push(c.to_owned());
    }
    Some(parts)
}

/// A remark on an applied message: an ERR segment with severity W
/// (warning) or I (information) next to MSA-1 AA. Names places, never
/// values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub code: ErrorCode,
    /// ERR-4: `W` or `I` (HL7 table 0516).
    pub severity: &'static str,
    pub location: String,
    pub detail: String,
}

/// Whether `version` (MSH-12.1, `2.3.1`) is older than v2.5, where ERR
/// has only ERR-1 (ELD: segment, sequence, field, error code) and MSA-6
/// carries the error condition; from v2.5 on ERR-1 is withdrawn for
/// ERR-2 to ERR-8 (v2.5 chapter 2.15.5).
fn before_v25(version: &str) -> bool {
    let mut parts = version.trim().split('.');
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .unwrap_or(0);
    matches!(major, Some(m) if m < 2 || (m == 2 && minor < 5))
}

/// ERR of a version before v2.5: ERR-1 (ELD) `segment^sequence^field^code&text&HL70357`.
fn err_segment_v2x(code: ErrorCode, location: &str) -> SegmentBuilder {
    let place = erl_parts(location).unwrap_or_default();
    let part = |n: usize| place.get(n).cloned().unwrap_or_default();
    SegmentBuilder::new("ERR").with_field(
        1,
        FieldBuilder::default()
            .with_component(1, part(0))
            .with_component(2, part(1))
            .with_component(3, part(2))
            .with_component(
                4,
                ComponentBuilder::default()
                    .with_subcomponent(1, code.code())
                    .with_subcomponent(2, code.text())
                    .with_subcomponent(3, "HL70357"),
            ),
    )
}

/// A field of the components `parts` (an HD or VID echoed from MSH).
fn components(parts: &[String]) -> FieldBuilder {
    let mut f = FieldBuilder::default();
    for (i, p) in parts.iter().enumerate() {
        f = f.with_component(i + 1, p.as_str());
    }
    f
}

/// The error code as a CE/CWE of HL7 table 0357 (`101^Required field
/// missing^HL70357`): ERR-3, and MSA-6 before v2.5.
fn error_code(code: ErrorCode) -> FieldBuilder {
    FieldBuilder::default()
        .with_component(1, code.code())
        .with_component(2, code.text())
        .with_component(3, "HL70357")
}

fn err_segment(code: ErrorCode, severity: &str, location: &str, detail: &str) -> SegmentBuilder {
    let mut err = SegmentBuilder::new("ERR")
        .with_field(3, error_code(code))
        .with_field_value(4, severity)
        .with_field_value(8, format!("{location}: {detail}"));
    if let Some(l) = erl(location) {
        err = err.with_field(2, l);
    }
    err
}

/// Builds the ACK (segments separated by CR) for a message with `header`.
/// `control_id` is the ACK's own MSH-10; `now` its MSH-7 (`YYYYMMDDHHMMSS`).
pub fn build_ack(
    header: &Header,
    outcome: Result<(), &AdtError>,
    control_id: &str,
    now: &str,
) -> String {
    build_ack_with(header, outcome, &[], control_id, now)
}

/// A response batch (HL7 v2 chapter 2, "Acknowledging batches": one ACK
/// for each message of the original batch): `BHS` (BHS-11 the sender's
/// batch control id when known), the ACKs in order, `BTS` with the count.
pub fn build_batch_ack(
    acks: &[String],
    batch_control_id: &str,
    control_id: &str,
    now: &str,
) -> String {
    // BHS-1 is the field separator and BHS-2 the encoding characters, as
    // in MSH; BHS-11 this batch's control id, BHS-12 the one answered.
    let mut out = format!("BHS|^~\\&|CHARTBRIDGE||||{now}||||{control_id}|{batch_control_id}\r");
    for a in acks {
        out.push_str(a.trim_end_matches('\r'));
        out.push('\r');
    }
    out.push_str(&format!("BTS|{}\r", acks.len()));
    out
}

/// [`build_ack`] with remarks on an applied message (ERR segments with
/// severity W or I; MSA-3 names them too).
pub fn build_ack_with(
    header: &Header,
    outcome: Result<(), &AdtError>,
    notices: &[Notice],
    control_id: &str,
    now: &str,
) -> String {
    let code = match outcome {
        Ok(()) => AckCode::Accept,
        Err(e) => e.ack,
    };
    let version = if header.version.first().is_none_or(|v| v.is_empty()) {
        vec!["2.5".to_owned()]
    } else {
        header.version.clone()
    };
    let old_err = before_v25(&version[0]);
    let trigger = if header.trigger.is_empty() {
        "A01"
    } else {
        header.trigger.as_str()
    };
    let sending_application = if header.receiving_application.iter().all(String::is_empty) {
        vec!["CHARTBRIDGE".to_owned()]
    } else {
        header.receiving_application.clone()
    };
    // MSH-11 as the message had it (an ACK of a training message is a
    // training message); `P` when it had none.
    let processing_id = if header.processing_id.iter().all(String::is_empty) {
        vec!["P".to_owned()]
    } else {
        header.processing_id.clone()
    };
    let msh = SegmentBuilder::new("MSH")
        .with_field(3, components(&sending_application))
        .with_field(4, components(&header.receiving_facility))
        .with_field(5, components(&header.sending_application))
        .with_field(6, components(&header.sending_facility))
        .with_field_value(7, now)
        .with_field(
            9,
            FieldBuilder::default()
                .with_component(1, "ACK")
                .with_component(2, trigger)
                .with_component(3, "ACK"),
        )
        .with_field_value(10, control_id)
        .with_field(11, components(&processing_id))
        .with_field(12, components(&version));
    let text = match outcome {
        Ok(()) if notices.is_empty() => "applied".to_owned(),
        Ok(()) => {
            let mut t = "applied".to_owned();
            for n in notices {
                t.push_str("; ");
                t.push_str(&n.detail);
            }
            t
        }
        Err(e) => format!("{}: {}", e.location, e.detail),
    };
    // MSH-18 empty means ASCII (v2.5 2.15.9.18): an ACK that echoes text
    // beyond it (`Klinikum Fürth` in MSH-6) declares its UTF-8.
    let non_ascii = !text.is_ascii()
        || !header.control_id.is_ascii()
        || [
            &sending_application,
            &header.receiving_facility,
            &header.sending_application,
            &header.sending_facility,
        ]
        .iter()
        .any(|c| c.iter().any(|s| !s.is_ascii()))
        || notices.iter().any(|n| !n.detail.is_ascii());
    let msh = if non_ascii {
        msh.with_field_value(18, "UNICODE UTF-8")
    } else {
        msh
    };
    let mut msa = SegmentBuilder::new("MSA")
        .with_field_value(1, answer_code(header, code).unwrap_or(code.as_str()))
        .with_field_value(2, &header.control_id)
        .with_field_value(3, text);
    if old_err && let Err(e) = outcome {
        // MSA-6 (CE), the error condition of versions before v2.5.
        msa = msa.with_field(6, error_code(e.code));
    }
    let mut message = MessageBuilder::new(Separators::default())
        .with_segment(msh)
        .with_segment(msa);
    if let Err(e) = outcome {
        message = message.with_segment(if old_err {
            err_segment_v2x(e.code, &e.location)
        } else {
            err_segment(e.code, "E", &e.location, &e.detail)
        });
    } else {
        for n in notices {
            message = message.with_segment(if old_err {
                err_segment_v2x(n.code, &n.location)
            } else {
                err_segment(n.code, n.severity, &n.location, &n.detail)
            });
        }
    }
    message.to_string()
}
