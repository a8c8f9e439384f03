//! Reading fields and components with the message's encoding characters.

use super::*;

/// What reading a field needs: the encoding characters and the default
/// country of national phone numbers.
pub(super) struct Ctx<'a> {
    pub(super) enc: Encoding,
    pub(super) default_country: &'a str,
}

impl Ctx<'_> {
    /// A component's value, unescaped; `""` reads as empty. A value that
    /// ends in the truncation character was cut by the sender (v2.7) and
    /// is refused, as is an unterminated escape sequence.
    pub(super) fn component(
        &self,
        r: &Repeat<'_>,
        n: usize,
        place: &str,
    ) -> Result<String, AdtError> {
        let raw = r.component(n).map(|c| c.raw_value()).unwrap_or_default();
        self.value(raw, place)
    }

    pub(super) fn value(&self, raw: &str, place: &str) -> Result<String, AdtError> {
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
    pub(super) fn cx_list(
        &self,
        field: Option<&Field<'_>>,
        place: &str,
    ) -> Result<Vec<Cx>, AdtError> {
        self.cx_list_of(field, place, |_| true)
    }

    /// [`Ctx::cx_list`] of a field that lists the patient's identifiers
    /// (PID-3, MRG-1): repetitions whose identifier type (CX-5, HL7 table
    /// 0203) names something other than the patient — an account or visit
    /// number, a guarantor's, an organisation's or a provider's number, a
    /// card — are left out. PID-3 may carry such numbers beside the
    /// patient's under one assigning authority (v2.5 chapter 2.A.14.5:
    /// CX-5 qualifies CX-4), and an account number equal to another
    /// patient's number would otherwise name that patient.
    pub(super) fn patient_cx_list(
        &self,
        field: Option<&Field<'_>>,
        place: &str,
    ) -> Result<Vec<Cx>, AdtError> {
        self.cx_list_of(field, place, |r: &Repeat<'_>| {
            let kind = r
                .component(5)
                .map(|c| c.raw_value().trim().to_ascii_uppercase())
                .unwrap_or_default();
            !NOT_THE_PATIENT.contains(&kind.as_str())
        })
    }

    fn cx_list_of(
        &self,
        field: Option<&Field<'_>>,
        place: &str,
        keep: impl Fn(&Repeat<'_>) -> bool,
    ) -> Result<Vec<Cx>, AdtError> {
        let Some(field) = field else {
            return Ok(Vec::new());
        };
        if field.raw_value() == NULL {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (i, r) in field.repeats().enumerate() {
            if r.is_empty() || r.raw_value() == NULL || !keep(r) {
                continue;
            }
            let at = format!("{place} repetition {}", i + 1);
            let value = self.component(r, 1, &at)?;
            // CX-4 assigning authority (HD, v2.5 chapter 2.A.33): its
            // namespace ID, else its universal ID (an OID, as IHE PAM
            // allows `^^^&1.2.276…&ISO`), so that identifiers of two
            // authorities named only by OID never share a key.
            let hd = |n| {
                r.component(4)
                    .and_then(|c| c.subcomponent(n))
                    .map(|s| s.raw_value())
                    .unwrap_or_default()
            };
            let mut authority = self.value(hd(1), &at)?;
            if authority.trim().is_empty() {
                authority = self.value(hd(2), &at)?;
            }
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
    pub(super) fn person(
        &self,
        pid: &hl7_parser::message::Segment<'_>,
        n: usize,
    ) -> Result<(PatientGroup, Vec<Notice>), AdtError> {
        let seg = occurrence("PID", n);
        let identifiers = self.patient_cx_list(pid.field(3), &format!("{seg}-3"))?;
        if identifiers.is_empty() {
            return Err(AdtError::error(
                ErrorCode::RequiredFieldMissing,
                &format!("{seg}-3"),
                "no patient identifier",
            ));
        }
        let mut notices = Vec::new();
        let mut phones = Vec::new();
        let mut phone_field = Presence::Absent;
        // PID-13 (home) and, from v2.7 on, PID-40 (patient
        // telecommunication information, which replaces PID-13/14): one
        // list of the patient's numbers (v2.7 chapter 3.4.2.13/40). PID-14
        // (business) is left out: often a shared line, which must not name
        // this patient.
        for field in [13, 40] {
            let (numbers, presence) =
                self.telecoms(pid.field(field), &format!("{seg}-{field}"), &mut notices)?;
            for p in numbers {
                if !phones.contains(&p) {
                    phones.push(p);
                }
            }
            phone_field = phone_field.and(presence);
        }
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

    /// The telephone numbers of one XTN field (`place`: `PID-13`, …) and
    /// whether it was sent, sent as `""`, or left out; unreadable
    /// repetitions are warned about in `notices`.
    fn telecoms(
        &self,
        field: Option<&Field<'_>>,
        place: &str,
        notices: &mut Vec<Notice>,
    ) -> Result<(Vec<String>, Presence), AdtError> {
        let f = match field {
            None => return Ok((Vec::new(), Presence::Absent)),
            Some(f) if f.raw_value().is_empty() => return Ok((Vec::new(), Presence::Absent)),
            Some(f) if f.raw_value() == NULL => return Ok((Vec::new(), Presence::Null)),
            Some(f) => f,
        };
        let mut phones = Vec::new();
        let mut numbers = 0;
        let mut unreadable = false;
        for (i, r) in f.repeats().enumerate() {
            let at = format!("{place} repetition {}", i + 1);
            match self.phone(r, &at)? {
                Telecom::Phone(p) => {
                    numbers += 1;
                    if !phones.contains(&p) {
                        phones.push(p);
                    }
                }
                Telecom::Other => numbers += 1,
                Telecom::Empty => {}
                Telecom::Unreadable => {
                    unreadable = true;
                    notices.push(Notice {
                        code: ErrorCode::DataType,
                        severity: "W",
                        location: at,
                        detail: "telephone number not readable; stored phone numbers kept".into(),
                    });
                }
            }
        }
        let presence = if unreadable {
            Presence::Partial
        } else if numbers == 0 {
            // Only repetitions without any number: nothing was sent to
            // replace the stored numbers with.
            Presence::Absent
        } else {
            Presence::Present
        };
        Ok((phones, presence))
    }

    /// An XTN repetition (HL7 v2.5 chapter 2.A.89): its number is XTN-12
    /// (unformatted), else XTN-5/6/7 (country, area, local), else XTN-1,
    /// read as international digits. `Other` when it is not a telephone of
    /// the patient: telecom use (table 0201) NET (e-mail), BPN (beeper),
    /// ASN (answering service), EMR (emergency contact), and the lines
    /// others share (WPN work, ORN other residence, VHN vacation home: a
    /// switchboard or a family's landline must not name this patient, as
    /// PID-14 is not read for that reason); equipment (table
    /// 0202) Internet, X.400, FX (fax), MD (modem), BP (beeper), TDD/TTY.
    /// `Empty` when no number component has a value. `Unreadable` for a
    /// telephone whose number is not a phone number (text, a control
    /// character from an escape, too few or too many digits).
    ///
    /// A number outside its validity (v2.7 XTN-13 effective start in the
    /// future, XTN-14 expiration in the past) is `Other`: a number given
    /// up may be someone else's now. A component that cannot be unescaped
    /// because of a stray `\` typed at the desk (more components follow
    /// it in the repetition: `0221\123456^PRN^PH`) is `Unreadable`, not an
    /// error of the whole message (v2.5 2.7); an escape that runs to the
    /// repetition's end is a value cut in transmission and stays an error.
    pub(super) fn phone(&self, r: &Repeat<'_>, place: &str) -> Result<Telecom, AdtError> {
        match self.telephone(r, place) {
            Err(_) if self.stray_escape(r.raw_value()) => Ok(Telecom::Unreadable),
            other => other,
        }
    }

    /// Whether the last escape character of `raw` is followed by a
    /// component separator: the value goes on after it, so it was no cut.
    fn stray_escape(&self, raw: &str) -> bool {
        raw.rfind(self.enc.escape)
            .is_some_and(|at| raw[at..].contains(self.enc.component))
    }

    fn telephone(&self, r: &Repeat<'_>, place: &str) -> Result<Telecom, AdtError> {
        if r.raw_value() == NULL || r.is_empty() {
            return Ok(Telecom::Empty);
        }
        // XTN-13/14 (DTM): compared by date, a truncated date read as the
        // first (start) or last (expiration) day it can mean.
        let date = |n: usize, fill: char| {
            let raw = r.component(n).map(|c| c.raw_value()).unwrap_or_default();
            let mut digits: String = raw
                .chars()
                .take_while(char::is_ascii_digit)
                .take(8)
                .collect();
            if digits.len() < 4 {
                return None;
            }
            while digits.len() < 8 {
                digits.push(fill);
            }
            Some(digits)
        };
        let today = chrono::Utc::now().format("%Y%m%d").to_string();
        if date(13, '0').is_some_and(|start| start > today)
            || date(14, '9').is_some_and(|end| end < today)
        {
            return Ok(Telecom::Other);
        }
        let comp = |n| self.component(r, n, place);
        let usage = comp(2)?.to_ascii_uppercase();
        let equipment = comp(3)?.to_ascii_uppercase();
        if matches!(
            usage.as_str(),
            "NET" | "BPN" | "ASN" | "EMR" | "WPN" | "ORN" | "VHN"
        ) || matches!(
            equipment.as_str(),
            "INTERNET" | "X.400" | "FX" | "MD" | "BP" | "TDD" | "TTY"
        ) {
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

/// Identifier types (CX-5, HL7 table 0203) that do not name the patient:
/// account numbers (AN, ANC, AND, ANT), the visit number (VN), a
/// guarantor's (GI, GN), an organisation's, facility's, employer's, cost
/// centre's or resource's (XX, FI, EN, CC, RI), a provider's (DN, DEA,
/// NPI, UPIN, PRN, LN, MD, DO, DDS, DPM, RN, RPH, APRN, NP, SL), a bank
/// account or card (BA, BC, AM, DS, MS, VS).
/// Also numbers of an insurance or a payer that are another person's or
/// an organisation's: the subscriber's (SN: a dependant's is the
/// parent's), a payor's (NIIP), a national employer's (NE), a
/// practitioner's Medicaid or Medicare number (MCD, MCR, PPIN), a general
/// ledger's (GL). NH and NII stay: national profiles carry a person's
/// own health or insurance number under them (the NHS number; the
/// German KVNR, OID 1.2.276.0.76.4.8), and a message whose only
/// identifier they are would be refused.
const NOT_THE_PATIENT: &[&str] = &[
    "AN", "ANC", "AND", "ANT", "VN", "GI", "GN", "XX", "FI", "EN", "CC", "RI", "DN", "DEA", "NPI",
    "UPIN", "PRN", "LN", "MD", "DO", "DDS", "DPM", "RN", "RPH", "APRN", "NP", "SL", "BA", "BC",
    "AM", "DS", "MS", "VS", "SN", "NIIP", "NE", "MCD", "MCR", "PPIN", "GL",
];

/// What one PID-13 repetition is.
pub(super) enum Telecom {
    /// A telephone of the patient, as international digits.
    Phone(String),
    /// E-mail, fax, beeper, an emergency contact: not stored.
    Other,
    /// No number at all (an empty repetition, or only type codes).
    Empty,
    /// A telephone whose number cannot be read.
    Unreadable,
}
