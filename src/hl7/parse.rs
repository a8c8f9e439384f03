//! One ADT message read segment by segment into an [`Adt`] or refused
//! with an [`AdtError`].

use super::*;

pub(super) fn segment_place(segment: &str, index: usize) -> String {
    // By bytes: a cut segment may start with two ASCII letters and a
    // multi-byte character, where `&segment[..3]` would panic.
    if let Some(id) = segment.get(..3)
        && er7_segment_id(id)
    {
        id.to_owned()
    } else {
        format!("segment {}", index + 1)
    }
}

pub(super) fn er7_segment_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 3
        && b[0].is_ascii_uppercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

pub(super) fn parse_message(message: &str, rules: &ReadRules<'_>) -> Result<Adt, AdtError> {
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
    // A segment sent with no field at all (`PV1<CR>`, `PD1<CR>`: v2.5
    // chapter 2.6.1, fields not present need no delimiters) is read as the
    // segment with its fields empty; hl7-parser needs the field separator
    // after the segment ID.
    let body = pad_bare_segments(&body, enc.field);
    let declared = body
        .split('\r')
        .next()
        .and_then(|msh| msh.split(enc.field).nth(17))
        .unwrap_or("");
    if er7::Charset::from_msh18(declared, enc.repetition).is_none() {
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
            "supported events: A01-A08, A11, A13, A28, A31, A38, A40 (A34, A36)",
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
    // MSH-11 processing ID (table 0103: P production, T training, D
    // debugging; component 2 the processing mode): only the IDs this
    // receiver is configured for change its identity map (v2.5 chapter
    // 2.9.2: the receiver checks MSH-11 and rejects what it does not
    // accept, error 202).
    let processing_id = msh
        .field(11)
        .and_then(|f| f.component(1))
        .map(|c| c.raw_value())
        .unwrap_or("");
    if processing_id.is_empty() {
        return Err(AdtError::reject(
            ErrorCode::RequiredFieldMissing,
            "MSH-11",
            "processing ID is empty",
        ));
    }
    if !rules
        .processing_ids
        .iter()
        .any(|p| p.eq_ignore_ascii_case(processing_id))
    {
        return Err(AdtError::reject(
            ErrorCode::UnsupportedProcessingId,
            "MSH-11",
            "processing ID not accepted by this receiver (adt.processing_ids)",
        ));
    }
    let ctx = Ctx {
        enc,
        default_country: rules.default_country,
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
    // PV1-45 (discharge date/time, v2.5 chapter 3.4.3.45): the visit is
    // over, whatever event describes it now.
    let discharged = pv1
        .map(|pv1| raw(pv1.field(45)))
        .is_some_and(|v| !v.is_empty() && v != NULL);
    if event.needs_visit() && visit.is_none() {
        return Err(AdtError::error(
            ErrorCode::RequiredFieldMissing,
            "PV1-19",
            "this event changes a visit and needs its visit number",
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
            let prior = ctx.patient_cx_list(mrg.field(1), &format!("{mrg_at}-1"))?;
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
    // MRG-5 of a change of patient class: the visit it closed.
    let prior_visit = if matches!(event, AdtEvent::A06 | AdtEvent::A07) {
        match m.segment("MRG") {
            Some(mrg) => ctx.cx_list(mrg.field(5), "MRG-5")?.into_iter().next(),
            None => None,
        }
    } else {
        None
    };
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
        prior_visit,
        discharged,
        prior: first.prior,
        more_merges,
        notices,
        content_sha256: content_sha256(&body, enc.field),
    })
}

/// `body` with the field separator appended to every segment that is
/// its three-character ID alone.
fn pad_bare_segments(body: &str, field: char) -> String {
    let mut out = String::with_capacity(body.len() + 8);
    for (i, seg) in body.split('\r').enumerate() {
        if i > 0 {
            out.push('\r');
        }
        out.push_str(seg);
        if i > 0 && er7_segment_id(seg) {
            out.push(field);
        }
    }
    out
}
