use super::*;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/hl7")
            .join(name),
    )
    .unwrap()
}

#[test]
fn i6_a01_yields_identifiers_phones_and_visit() {
    let adt = parse_adt(&fixture("adt-a01.hl7"), "49").unwrap();
    assert_eq!(adt.event, AdtEvent::A01);
    assert_eq!(adt.control_id, "MSG-A01-0001");
    assert_eq!(
        adt.identifiers,
        vec![
            Cx {
                value: "P-1001".into(),
                authority: "KIS".into()
            },
            Cx {
                value: "0815".into(),
                authority: "LAB".into()
            }
        ]
    );
    // The e-mail repetition of PID-13 is not a phone number.
    assert_eq!(adt.phones, vec!["4915112345678".to_owned()]);
    assert_eq!(
        adt.visit,
        Some(Cx {
            value: "F-2001".into(),
            authority: "KIS".into()
        })
    );
    assert!(adt.prior.is_empty());
}

#[test]
fn i6_every_supported_event_parses() {
    let a04 = parse_adt(&fixture("adt-a04.hl7"), "49").unwrap();
    assert_eq!(a04.event, AdtEvent::A04);
    assert_eq!(a04.phones, vec!["49301234567".to_owned()]);
    let a08 = parse_adt(&fixture("adt-a08.hl7"), "49").unwrap();
    assert_eq!(a08.phones, vec!["491709876543".to_owned()]);
    assert_eq!(
        parse_adt(&fixture("adt-a03.hl7"), "49").unwrap().event,
        AdtEvent::A03
    );
    assert_eq!(
        parse_adt(&fixture("adt-a11.hl7"), "49").unwrap().event,
        AdtEvent::A11
    );
    let a40 = parse_adt(&fixture("adt-a40.hl7"), "49").unwrap();
    assert_eq!(a40.event, AdtEvent::A40);
    assert_eq!(a40.prior[0].value, "P-1002");
    // A34/A36 (ADT_A30, merges kept for backward compatibility) merge the
    // same way; A35 (accounts only) and A47 (identifier change) do not.
    for (trigger, structure) in [("A34", "ADT_A30"), ("A36", "ADT_A30")] {
        let old = fixture("adt-a40.hl7")
            .replace("ADT^A40^ADT_A39", &format!("ADT^{trigger}^{structure}"))
            .replace("EVN|A40", &format!("EVN|{trigger}"))
            .replace("|2.5", "|2.3");
        let merge = parse_adt(&old, "49").unwrap();
        assert_eq!(merge.event, AdtEvent::A40, "{trigger}");
        assert_eq!(merge.prior[0].value, "P-1002", "{trigger}");
    }
    for trigger in ["A35", "A47"] {
        let other = fixture("adt-a40.hl7")
            .replace("ADT^A40^ADT_A39", &format!("ADT^{trigger}"))
            .replace("EVN|A40", &format!("EVN|{trigger}"));
        let e = parse_adt(&other, "49").unwrap_err();
        assert_eq!(e.code.code(), "201", "{trigger}");
    }
}

#[test]
fn i6_bad_fixtures_give_the_expected_ack_and_name_no_value() {
    let expected: toml::Table = fixture("bad/expected-acks.toml").parse().unwrap();
    let mut seen = 0;
    for (name, want) in &expected {
        let text = fixture(&format!("bad/{name}.hl7"));
        let ack_want = want["ack"].as_str().unwrap();
        let code_want = want["code"].as_str().unwrap();
        if name == "merge-unknown-prior" {
            // Refused by the identity map (store tests), not by the parser.
            assert!(parse_adt(&text, "49").is_ok());
            continue;
        }
        let err = parse_adt(&text, "49").unwrap_err();
        assert_eq!(err.ack.as_str(), ack_want, "{name}: {err}");
        assert_eq!(err.code.code(), code_want, "{name}: {err}");
        let shown = err.to_string();
        for value in ["Mustermann", "P-1001", "12345678", "F-2001"] {
            assert!(!shown.contains(value), "{name}: {shown}");
        }
        let ack = build_ack(&header(&text), Err(&err), "ACK-1", "20261128091501");
        let parsed = hl7_parser::Message::parse(&ack).unwrap();
        let msa = parsed.segment("MSA").unwrap();
        assert_eq!(msa.field(1).unwrap().raw_value(), ack_want, "{name}");
        let err_seg = parsed.segment("ERR").unwrap();
        assert_eq!(
            err_seg.field(3).unwrap().component(1).unwrap().raw_value(),
            code_want
        );
        for value in ["Mustermann", "P-1001", "12345678"] {
            assert!(!ack.contains(value), "{name}: {ack}");
        }
        seen += 1;
    }
    assert_eq!(seen, 9);
}

#[test]
fn i6_ack_answers_the_control_id_and_swaps_applications() {
    let text = fixture("adt-a01.hl7");
    let ack = build_ack(&header(&text), Ok(()), "ACK-7", "20261128091501");
    let m = hl7_parser::Message::parse(&ack).unwrap();
    let msh = m.segment("MSH").unwrap();
    assert_eq!(msh.field(3).unwrap().raw_value(), "CHARTBRIDGE");
    assert_eq!(msh.field(5).unwrap().raw_value(), "KIS");
    assert_eq!(msh.field(9).unwrap().raw_value(), "ACK^A01^ACK");
    assert_eq!(msh.field(10).unwrap().raw_value(), "ACK-7");
    let msa = m.segment("MSA").unwrap();
    assert_eq!(msa.field(1).unwrap().raw_value(), "AA");
    assert_eq!(msa.field(2).unwrap().raw_value(), "MSG-A01-0001");
    assert!(m.segment("ERR").is_none());
    let err = AdtError::error(ErrorCode::RequiredFieldMissing, "PID-3", "no identifier");
    let ack = build_ack(&header(&text), Err(&err), "ACK-8", "20261128091501");
    assert!(
        ack.contains("\rERR||PID^1^3|101^Required field missing^HL70357|E"),
        "{ack}"
    );
}

#[test]
fn phone_numbers_normalise_to_international_digits() {
    for (text, want) in [
        ("+49 151 12345678", Some("4915112345678")),
        ("0049-151-12345678", Some("4915112345678")),
        ("0151 12345678", Some("4915112345678")),
        ("4915112345678", Some("4915112345678")),
        ("(030) 123 4567", Some("49301234567")),
        ("erika@example.invalid", None),
        ("123", None),
    ] {
        assert_eq!(normalise_phone(text, "49").as_deref(), want, "{text}");
    }
}

#[test]
fn mllp_framing_and_line_endings_are_tolerated() {
    let text = format!(
        "\u{0b}{}\u{1c}\r",
        fixture("adt-a01.hl7").replace('\n', "\r\n")
    );
    assert_eq!(parse_adt(&text, "49").unwrap().control_id, "MSG-A01-0001");
}

/// Found by fuzzing (`fuzz/regressions/hl7_adt/`): hl7-parser's own escape
/// decoder panicked on non-ASCII text before an escape sequence.
#[test]
fn non_ascii_before_an_escape_is_decoded_without_panic() {
    let seps = hl7_parser::message::Separators::default();
    assert_eq!(decoded(&seps, "Müller\\T\\Söhne"), "Müller&Söhne");
    assert_eq!(
        decoded(&seps, "a\\F\\b\\S\\c\\E\\d\\X0D\\e\\R\\f"),
        "a|b^c\\d\re~f"
    );
    assert_eq!(decoded(&seps, "x\\unterminated"), "x");
    let crash = include_bytes!(
        "../../fuzz/regressions/hl7_adt/crash-8392aeed41427cfa28f0e4668400f5377b089cd5"
    );
    // Not UTF-8: the fuzz target reads it as Latin-1.
    let text: String = crash.iter().map(|&b| b as char).collect();
    let _ = header(&text);
    let _ = parse_adt(&text, "49");
}

fn wire(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/hl7/wire")
            .join(format!("{name}.hl7")),
    )
    .unwrap()
}

/// What parsing alone answers for one message: MSA-1, MSA-2, ERR-3.1,
/// ERR-2 and ERR-4 of the ACK built from it (no store involved).
fn parse_answer(bytes: &[u8]) -> (String, String, String, String, String, Option<Adt>) {
    let (text, refused) = match er7::decode(bytes) {
        Ok(t) => (t, None),
        Err((lossy, e)) => (lossy, Some(e)),
    };
    let result = match refused {
        Some(e) => Err(e),
        None => parse_adt(&text, "49"),
    };
    let ack = build_ack(
        &header(&text),
        result.as_ref().map(|_| ()),
        "ACK-W",
        "20270314101501",
    );
    let m = hl7_parser::Message::parse(&ack).unwrap();
    let msa = m.segment("MSA").unwrap();
    let get = |seg: &str, n: usize| {
        m.segment(seg)
            .and_then(|s| s.field(n))
            .map(|f| f.raw_value().to_owned())
            .unwrap_or_default()
    };
    let code = m
        .segment("ERR")
        .and_then(|s| s.field(3))
        .and_then(|f| f.component(1))
        .map(|c| c.raw_value().to_owned())
        .unwrap_or_default();
    (
        msa.field(1).unwrap().raw_value().to_owned(),
        get("MSA", 2),
        code,
        get("ERR", 2),
        get("ERR", 4),
        result.ok(),
    )
}

#[test]
fn i6_wire_fixtures_parse_and_answer_as_the_manifest_says() {
    let manifest: toml::Table = fixture("wire/expected.toml").parse().unwrap();
    assert!(manifest.len() >= 18);
    for (name, want) in &manifest {
        let strs = |k: &str| -> Vec<String> {
            want[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        let payload = er7::split(&wire(name));
        let (acks, controls, codes) = (strs("acks"), strs("controls"), strs("codes"));
        assert_eq!(payload.messages.len(), acks.len(), "{name}");
        assert_eq!(payload.is_batch(), acks.len() > 1, "{name}");
        for (i, m) in payload.messages.iter().enumerate() {
            let (ack, control, code, err2, severity, adt) = parse_answer(&m.bytes);
            assert_eq!(ack, acks[i], "{name} #{i}: {code} {err2}");
            assert_eq!(control, controls[i], "{name} #{i}");
            // A warning on an applied message comes from the identity map.
            if want.get("severity").and_then(|v| v.as_str()) != Some("W") {
                assert_eq!(code, codes[i], "{name} #{i}");
            }
            if i == 0 && ack != "AA" {
                assert_eq!(err2, want["err2"].as_str().unwrap(), "{name}");
                assert_eq!(severity, want["severity"].as_str().unwrap(), "{name}");
            }
            if i == 0
                && let Some(phones) = want.get("phones")
            {
                let adt = adt.unwrap();
                let phones: Vec<String> = phones
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect();
                assert_eq!(adt.phones, phones, "{name}");
                assert_eq!(
                    adt.identifiers.len() as i64,
                    want["identifiers"].as_integer().unwrap(),
                    "{name}"
                );
                let presence = match want["phone_field"].as_str().unwrap() {
                    "null" => Presence::Null,
                    "absent" => Presence::Absent,
                    "partial" => Presence::Partial,
                    _ => Presence::Present,
                };
                assert_eq!(adt.phone_field, presence, "{name}");
            }
        }
    }
}

#[test]
fn i6_a_message_written_three_ways_has_one_content_digest() {
    // CR, LF and CRLF terminators, a BOM and MSH-7 renewed: same content.
    let a = parse_adt(&fixture("adt-a01.hl7"), "49").unwrap();
    let crlf = fixture("adt-a01.hl7").replace('\n', "\r\n");
    let b = parse_adt(&format!("\u{feff}{crlf}"), "49").unwrap();
    let c = parse_adt(
        &fixture("adt-a01.hl7")
            .replace('\n', "\r")
            .replace("20261128091500||ADT", "20261128091999||ADT"),
        "49",
    )
    .unwrap();
    assert_eq!(a.content_sha256, b.content_sha256);
    assert_eq!(a.content_sha256, c.content_sha256);
    let d = parse_adt(
        &fixture("adt-a01.hl7").replace("STA7^101^1", "STA7^102^1"),
        "49",
    )
    .unwrap();
    assert_ne!(a.content_sha256, d.content_sha256);
}

#[test]
fn i6_latin1_text_is_decoded_and_escapes_follow_the_charset() {
    let text = er7::decode(&wire("latin1-8859-1")).unwrap();
    assert!(text.contains("Gräfenstöß"), "8859/1 bytes read as text");
    let enc = er7::encoding("MSH|^~\\&#|").unwrap();
    assert_eq!(
        unescape(&enc, "a\\P\\b\\XC3BC\\c\\H\\d\\N\\").unwrap(),
        "a#bücd"
    );
    assert_eq!(unescape(&enc, "a\\XFC\\").unwrap(), "aü");
    assert!(unescape(&enc, "cut\\X0").is_err());
}

#[test]
fn i6_header_echoes_msh10_when_msh_is_broken() {
    for broken in [
        "MSH|^~|HIS|X|CB|X|20270101||ADT^A01|CTRL-9|P|2.5\r",
        "MSH|^~\\&#|HIS|X|CB|X|20270101||ADT^A01|CTRL-9|P|2.8\rPID|1||broken\\",
        "\u{feff}\nMSH|^~\\&|HIS|X|CB|X|20270101||ADT^A01|CTRL-9|P|2.5",
    ] {
        assert_eq!(header(broken).control_id, "CTRL-9", "{broken:?}");
    }
    // A malformed MSH-2 is named as such, not as an unsupported type.
    let e = parse_adt(
        "MSH|^~|HIS|X|CB|X|20270101||ADT^A01|CTRL-9|P|2.5\rEVN|A01\r",
        "49",
    )
    .unwrap_err();
    assert_eq!((e.code.code(), e.location.as_str()), ("102", "MSH-2"));
}

#[test]
fn i6_one_phone_normalisation_for_adt_and_whatsapp() {
    for region in ["49", "DE", "+49"] {
        for written in [
            "+49 (0)151 1234 5678",
            "0151 12345678",
            "0049151 12345678",
            "+4915112345678",
            "(0151) 1234-5678",
        ] {
            assert_eq!(
                normalise_phone(written, region).as_deref(),
                Some("4915112345678"),
                "{written} / {region}"
            );
        }
    }
    // Another default country reads national numbers there.
    assert_eq!(
        normalise_phone("0664 1234567", "43").as_deref(),
        Some("436641234567")
    );
    assert_eq!(
        normalise_phone("+43 664 1234567", "49").as_deref(),
        Some("436641234567")
    );
    assert_eq!(normalise_phone("tel. unbekannt", "49"), None);
}

fn wire_text(name: &str) -> String {
    er7::decode(&wire(name)).unwrap()
}

/// ERR-2 of the ACK a refusal is answered with.
fn err2_of(e: &AdtError) -> String {
    let ack = build_ack(&Header::default(), Err(e), "ACK-U", "20270315083000");
    let m = hl7_parser::Message::parse(&ack).unwrap();
    m.segment("ERR")
        .and_then(|s| s.field(2))
        .map(|f| f.raw_value().to_owned())
        .unwrap_or_default()
}

/// ADT_A39: `{PID [PD1] MRG [PV1]}` repeats; every group is read, each
/// with its own survivor and prior patient.
#[test]
fn a40_reads_every_patient_group() {
    let a40 = parse_adt(&wire_text("a40-two-groups"), "49").unwrap();
    let groups = a40.groups();
    assert_eq!(groups.len(), 2);
    let values = |ids: &[Cx]| ids.iter().map(|c| c.value.clone()).collect::<Vec<_>>();
    assert_eq!(values(&groups[0].identifiers), ["Q-7131"]);
    assert_eq!(values(&groups[0].prior), ["Q-7130"]);
    assert_eq!(groups[0].phones, ["4917655501131"]);
    assert_eq!(values(&groups[1].identifiers), ["Q-7133"]);
    assert_eq!(values(&groups[1].prior), ["Q-7132"]);
    assert_eq!(groups[1].phones, ["4917655501133"]);
    // Other events have one group.
    assert_eq!(
        parse_adt(&fixture("adt-a01.hl7"), "49")
            .unwrap()
            .groups()
            .len(),
        1
    );
}

/// A group without its MRG, an MRG before any PID, a second MRG in one
/// group, an empty MRG-1 or PID-3 in the second group: AE naming that
/// group's segment (`MRG^2`, `PID^2^3`).
#[test]
fn a40_group_faults_name_the_group() {
    let two = wire_text("a40-two-groups");
    let cases = [
        (two.replace("MRG|Q-7132^^^HIS^PI\r", ""), "100", "MRG^2"),
        (two.replace("MRG|Q-7132^^^HIS^PI", "MRG|"), "101", "MRG^2^1"),
        (
            two.replace("PID|2||Q-7133^^^HIS^PI|", "PID|2|||"),
            "101",
            "PID^2^3",
        ),
        (
            two.replace("MRG|Q-7132^^^HIS^PI\r", "MRG|Q-7132^^^HIS^PI\rMRG|Q-7134\r"),
            "100",
            "MRG^3",
        ),
        (
            two.replace(
                "EVN|A40|20270315083000\r",
                "EVN|A40|20270315083000\rMRG|Q-1\r",
            ),
            "100",
            "MRG^1",
        ),
        (
            two.replace("EVN|A40|20270315083000\r", "EVN|A40|1\rEVN|A40|2\r"),
            "100",
            "EVN^2",
        ),
    ];
    for (text, code, at) in cases {
        let e = parse_adt(&text, "49").unwrap_err();
        assert_eq!(e.ack, AckCode::Error, "{at}");
        assert_eq!(e.code.code(), code, "{at}: {e}");
        assert_eq!(err2_of(&e), at, "{e}");
    }
}

/// ADT_A01/A03/A05/A09 have one EVN, PID and PV1: a repetition is AE 100
/// naming the second occurrence, not silently ignored.
#[test]
fn segments_read_once_must_occur_once() {
    let e = parse_adt(&wire_text("a01-second-pid"), "49").unwrap_err();
    assert_eq!((e.ack, e.code.code()), (AckCode::Error, "100"));
    assert_eq!(err2_of(&e), "PID^2");
    let a31 = wire_text("a31-person-update");
    let e = parse_adt(&a31.replace("PV1|1|N\r", "PV1|1|N\rPV1|2|N\r"), "49").unwrap_err();
    assert_eq!(err2_of(&e), "PV1^2");
}

/// PID-13 telephone repetitions that are no phone numbers are named (W
/// 102 at the repetition) and make the field `Partial`: the readable
/// numbers are kept, nothing is replaced. E-mail is not a telephone;
/// a repetition with only type codes carries no number.
#[test]
fn unreadable_telephones_are_named_and_never_replace_the_stored_ones() {
    let a08 = parse_adt(&wire_text("a08-phone-unreadable"), "49").unwrap();
    assert_eq!(a08.phone_field, Presence::Partial);
    assert_eq!(a08.phones, ["4917655501141"]);
    let places: Vec<(&str, &str, &str)> = a08
        .notices
        .iter()
        .map(|n| (n.code.code(), n.severity, n.location.as_str()))
        .collect();
    assert_eq!(
        places,
        [
            ("102", "W", "PID-13 repetition 1"),
            ("102", "W", "PID-13 repetition 2")
        ]
    );
    for n in &a08.notices {
        assert!(!n.detail.contains("unbekannt") && !n.detail.contains("0176"));
    }
    let ack = build_ack_with(
        &header(&wire_text("a08-phone-unreadable")),
        Ok(()),
        &a08.notices,
        "ACK-U",
        "20270315083000",
    );
    assert!(
        ack.contains("ERR||PID^1^13^1|102^Data type error^HL70357|W|"),
        "{ack}"
    );
    assert!(ack.contains("ERR||PID^1^13^2|102^"), "{ack}");
    let base = "MSH|^~\\&|HIS|X|CB|X|20270315||ADT^A31^ADT_A05|T-1|P|2.5\rEVN|A31\rPID|1||Q-1^^^HIS^PI||||||||||{}\rPV1|1|N\r";
    let with = |pid13: &str| parse_adt(&base.replace("{}", pid13), "49").unwrap();
    // Only e-mail: a (phone-less) snapshot, the stored phones go.
    let mail = with("^NET^Internet^q@example.invalid");
    assert_eq!(
        (mail.phone_field, mail.phones.len()),
        (Presence::Present, 0)
    );
    // Only type codes, no number: nothing to replace with, kept.
    assert_eq!(with("^PRN^PH").phone_field, Presence::Absent);
    // A fax whose number is text is not a telephone: no warning.
    let fax = with("unbekannt^WPN^FX~0176 5550 1150^PRN^CP");
    assert!(fax.notices.is_empty());
    assert_eq!(fax.phone_field, Presence::Present);
    // No equipment type and a use code of table 0201: a telephone.
    let bare = with("keine Angabe^PRN");
    assert_eq!(bare.phone_field, Presence::Partial);
    assert_eq!(bare.notices[0].location, "PID-13 repetition 1");
}

/// A28/A31 (ADT_A05) are person-level: parsed, and they never touch
/// encounters.
#[test]
fn a28_and_a31_are_person_updates() {
    let a31 = parse_adt(&wire_text("a31-person-update"), "49").unwrap();
    assert_eq!(a31.event, AdtEvent::A31);
    assert_eq!(a31.phones, ["4917655501142"]);
    assert!(!a31.event.touches_encounters());
    let a28 = parse_adt(&wire_text("a28-person-add"), "49").unwrap();
    assert_eq!(a28.event, AdtEvent::A28);
    assert_eq!(a28.identifiers.len(), 2);
    assert!(!a28.event.touches_encounters());
    assert!(AdtEvent::A08.touches_encounters());
}

/// A message of `event` for patient P-7 with visit `pv1_19` and PID-13/14
/// and PID-40 as given (v2.7 field positions).
fn adt_with(event: &str, pid13: &str, pid14: &str, pid40: &str, pv1_19: &str) -> String {
    let pid_tail = "|".repeat(26);
    format!(
        "MSH|^~\\&|KIS|H|CB|H|20260101120000||ADT^{event}|C-{event}|P|2.7\r\
         EVN|{event}|20260101120000\r\
         PID|||P-7^^^KIS||Muster^Erika||||||||{pid13}|{pid14}{pid_tail}{pid40}\r\
         PV1||I|||||||||||||||||{pv1_19}\r"
    )
}

/// Transfer, pre-admit, change of patient class and the cancels (v2.5
/// chapter 3.3) are applied to the visit, not refused: A13 (cancel
/// discharge) puts a discharged visit back in progress, so messages are
/// filed under it again. Those that change a visit need PV1-19.
#[test]
fn visit_events_set_the_encounter_state() {
    for (event, sets, new) in [
        ("A02", None, "in-progress"),
        ("A05", None, "planned"),
        ("A06", None, "in-progress"),
        ("A07", None, "in-progress"),
        ("A13", Some("in-progress"), "in-progress"),
        ("A38", Some("cancelled"), "cancelled"),
    ] {
        let adt = parse_adt(&adt_with(event, "", "", "", "F-9^^^KIS"), "49").unwrap();
        assert_eq!(adt.event.as_str(), event);
        assert_eq!(adt.event.encounter_state(), sets, "{event}");
        assert_eq!(adt.event.new_visit_state(), new, "{event}");
        assert!(adt.event.touches_encounters());
        assert_eq!(adt.visit.unwrap().value, "F-9");
    }
    // An admission or registration whose PV1-45 is valued (a late
    // registration of a closed case) records the visit finished and does
    // not make it the current one; an A03 ranks it as before.
    for event in ["A01", "A04"] {
        let text = adt_with(event, "", "", "", "F-8^^^KIS").replace(
            "F-8^^^KIS\r",
            &format!("F-8^^^KIS{}20260101120000\r", "|".repeat(26)),
        );
        let adt = parse_adt(&text, "49").unwrap();
        assert!(adt.discharged, "{event}");
        assert_eq!(adt.visit_state(), ("finished", false), "{event}");
        assert!(!adt.ranks_visit(), "{event}");
        let open = parse_adt(&adt_with(event, "", "", "", "F-8^^^KIS"), "49").unwrap();
        assert!(open.ranks_visit(), "{event}");
        assert_ne!(open.visit_state().0, "finished");
    }
    let a03 = parse_adt(&adt_with("A03", "", "", "", "F-8^^^KIS"), "49").unwrap();
    assert!(a03.ranks_visit());
    for event in ["A02", "A06", "A07", "A13", "A38"] {
        let e = parse_adt(&adt_with(event, "", "", "", ""), "49").unwrap_err();
        assert_eq!(e.location, "PV1-19", "{event}");
    }
    assert!(parse_adt(&adt_with("A05", "", "", "", ""), "49").is_ok());
}

/// The patient's numbers are read from PID-13 (home) and PID-40 (v2.7
/// telecommunication information) as one list; PID-14 (business, often a
/// shared line) is not read.
#[test]
fn phones_come_from_pid_13_and_40() {
    let adt = parse_adt(
        &adt_with(
            "A08",
            "^PRN^PH^^49^30^1234567",
            "^WPN^PH^^49^40^7654321",
            "^PRN^CP^^^^^^^^^+4915112340000~^NET^Internet^x@example.org",
            "",
        ),
        "49",
    )
    .unwrap();
    assert_eq!(
        adt.phones,
        ["49301234567", "4915112340000"].map(str::to_owned)
    );
    assert_eq!(adt.phone_field, Presence::Present);
    let only_v27 = parse_adt(
        &adt_with("A08", "", "", "^PRN^CP^^^^^^^^^+4915112340000", ""),
        "49",
    )
    .unwrap();
    assert_eq!(only_v27.phones, ["4915112340000".to_owned()]);
    // v2.7 XTN-13/14: a number not yet effective or expired is not the
    // patient's now; one still valid is.
    let dated = parse_adt(
        &adt_with(
            "A08",
            "",
            "",
            "^PRN^CP^^49^151^1111111^^^^^^20200101^20230101~\
             ^PRN^CP^^49^151^2222222^^^^^^2999~\
             ^PRN^CP^^49^151^3333333^^^^^^2020^2999",
            "",
        ),
        "49",
    )
    .unwrap();
    assert_eq!(dated.phones, ["491513333333".to_owned()]);
    // A stray backslash typed at the desk: that number is unreadable (W),
    // the message is applied.
    let stray = parse_adt(
        &adt_with(
            "A08",
            "0221\\123456^PRN^PH~0176 5550 1150^PRN^CP",
            "",
            "",
            "",
        ),
        "49",
    )
    .unwrap();
    assert_eq!(stray.phone_field, Presence::Partial);
    assert_eq!(stray.phones, ["4917655501150".to_owned()]);
    assert_eq!(stray.notices[0].location, "PID-13 repetition 1");
    let cleared = parse_adt(&adt_with("A08", "\"\"", "", "", ""), "49").unwrap();
    assert_eq!(cleared.phone_field, Presence::Null);
    let business_only =
        parse_adt(&adt_with("A08", "", "^WPN^PH^^49^40^7654321", "", ""), "49").unwrap();
    assert_eq!(business_only.phone_field, Presence::Absent);
    assert!(business_only.phones.is_empty());
    // Shared lines in PID-13 or PID-40 (work, other residence, vacation
    // home) are not the patient's own either.
    let shared = parse_adt(
        &adt_with(
            "A08",
            "^ORN^PH^^49^30^1234567~^VHN^PH^^49^38^1234567",
            "",
            "^WPN^CP^^^^^^^^^+4915112340000~^PRS^CP^^^^^^^^^+4915112349999",
            "",
        ),
        "49",
    )
    .unwrap();
    assert_eq!(shared.phones, ["4915112349999".to_owned()]);
    let kept = parse_adt(
        &adt_with("A08", "\"\"", "", "^PRN^CP^^^^^^^^^+4915112340000", ""),
        "49",
    )
    .unwrap();
    assert_eq!(kept.phone_field, Presence::Present);
    assert_eq!(kept.phones, ["4915112340000".to_owned()]);
    assert_eq!(Presence::Absent.and(Presence::Absent), Presence::Absent);
    assert_eq!(Presence::Null.and(Presence::Partial), Presence::Partial);
}

/// An assigning authority named only by its universal ID (CX-4.2, an OID,
/// as IHE PAM allows) keys the identifier: equal values under two OIDs
/// stay two identifiers.
#[test]
fn authorities_named_by_oid_only_stay_apart() {
    let adt = parse_adt(
        "MSH|^~\\&|KIS|H|CB|H|20260101120000||ADT^A08|C-OID|P|2.5\r\
          EVN|A08|20260101120000\r\
          PID|||4711^^^&1.2.276.0.76.3.1.123&ISO^PI~4711^^^&1.2.276.0.76.4.8&ISO^NII~4711^^^KIS&1.2.3&ISO^PI||Muster^Erika\r\
          PV1||I\r",
        "49",
    )
    .unwrap();
    let authorities: Vec<&str> = adt
        .identifiers
        .iter()
        .map(|cx| cx.authority.as_str())
        .collect();
    assert_eq!(
        authorities,
        ["1.2.276.0.76.3.1.123", "1.2.276.0.76.4.8", "KIS"]
    );
}

/// A message with the given MSH-11 and PID-3 (v2.5), one CR per segment.
fn msg(processing: &str, pid3: &str, extra: &str) -> String {
    format!(
        "MSH|^~\\&|KIS|H|CB|H|20270101120000||ADT^A01^ADT_A01|C-1|{processing}|2.5\r\
         EVN|A01|20270101120000\r\
         PID|1||{pid3}||B^Bea|||||||+49 170 1111111^PRN^CP\r\
         {extra}PV1|1|I|||||||||||||||||F-9^^^KIS^VN\r"
    )
}

/// CX-5 (identifier type, table 0203) qualifies the assigning authority:
/// an account number (AN) or a visit number (VN) in PID-3 never names the
/// patient, even when it equals another patient's number under the same
/// authority; a PID-3 of such numbers only has no patient identifier.
#[test]
fn identifiers_that_name_an_account_or_visit_are_not_the_patients() {
    let adt = parse_adt(
        &msg("P", "5200^^^KIS^PI~4711^^^KIS^AN~77^^^KIS^VN~X1^^^KIS", ""),
        "49",
    )
    .unwrap();
    let values: Vec<_> = adt.identifiers.iter().map(|c| c.value.as_str()).collect();
    assert_eq!(values, ["5200", "X1"]);
    let e = parse_adt(&msg("P", "4711^^^KIS^AN", ""), "49").unwrap_err();
    assert_eq!(
        (e.code, e.location.as_str()),
        (ErrorCode::RequiredFieldMissing, "PID-3")
    );
    // Types in lower case are the same codes.
    let adt = parse_adt(&msg("P", "5200^^^KIS^pi~4711^^^KIS^an", ""), "49").unwrap();
    assert_eq!(adt.identifiers.len(), 1);
    // An insurance's numbers may be another person's or an
    // organisation's: a dependant's subscriber number is the parent's
    // (table 0203 SN), a payor's or employer's is shared.
    let adt = parse_adt(
        &msg("P", "K-2^^^KIS^PI~A123^^^AOK^SN~P1^^^X^NIIP~E1^^^X^NE", ""),
        "49",
    )
    .unwrap();
    let values: Vec<_> = adt.identifiers.iter().map(|c| c.value.as_str()).collect();
    assert_eq!(values, ["K-2"]);
}

/// MSH-11 (processing ID, table 0103): a training or debugging message is
/// refused with AR 202 and changes nothing; an empty one is AR 101; a
/// test deployment accepts `T`; the ACK echoes MSH-11.
#[test]
fn messages_of_another_processing_id_are_refused() {
    for id in ["T", "D", "T^A"] {
        let e = parse_adt(&msg(id, "P-1^^^KIS", ""), "49").unwrap_err();
        assert_eq!(
            (e.ack, e.code, e.location.as_str()),
            (
                AckCode::Reject,
                ErrorCode::UnsupportedProcessingId,
                "MSH-11"
            ),
            "{id}"
        );
        let text = msg(id, "P-1^^^KIS", "");
        let ack = build_ack(&header(&text), Err(&e), "ACK-1", "20270101120000+0000");
        let m = hl7_parser::Message::parse(&ack).unwrap();
        assert_eq!(m.segment("MSH").unwrap().field(11).unwrap().raw_value(), id);
        assert!(
            ack.contains("|202^Unsupported processing id^HL70357|"),
            "{ack}"
        );
    }
    let e = parse_adt(&msg("", "P-1^^^KIS", ""), "49").unwrap_err();
    assert_eq!(
        (e.code, e.location.as_str()),
        (ErrorCode::RequiredFieldMissing, "MSH-11")
    );
    assert!(parse_adt(&msg("P^T", "P-1^^^KIS", ""), "49").is_ok());
    let test_system = ["T".to_owned()];
    let rules = ReadRules {
        default_country: "49",
        processing_ids: &test_system,
    };
    assert!(parse_adt_with(&msg("T", "P-1^^^KIS", ""), &rules).is_ok());
    assert!(parse_adt_with(&msg("P", "P-1^^^KIS", ""), &rules).is_err());
}

/// A segment sent as its ID alone (`PD1<CR>`: fields not present need no
/// delimiters, v2.5 chapter 2.6.1) is read with its fields empty.
#[test]
fn a_segment_without_fields_is_read() {
    let text = "MSH|^~\\&|KIS|H|CB|H|20270101120000||ADT^A31^ADT_A05|C-31|P|2.5\r\
                EVN|A31|20270101120000\r\
                PID|1||P-1^^^KIS\r\
                PD1\r\
                PV1\r";
    let adt = parse_adt(text, "49").unwrap();
    assert_eq!(adt.event, AdtEvent::A31);
    assert_eq!(adt.identifiers[0].value, "P-1");
}

/// A cut last segment that starts with two ASCII letters and a multi-byte
/// character is refused AR 100, never a panic.
#[test]
fn a_cut_segment_with_a_multibyte_character_is_refused() {
    let e = parse_adt("MSH|^~\\&|A|B|||||ADT^A01|1|P|2.5\rGrüße", "49").unwrap_err();
    assert_eq!(
        (e.ack, e.code),
        (AckCode::Reject, ErrorCode::SegmentSequence)
    );
    assert_eq!(e.location, "segment 2");
}

/// A change of patient class (A06/A07) ranks its visit as of now, and its
/// MRG-5 names the visit it closed.
#[test]
fn a_change_of_patient_class_names_the_closed_visit() {
    let text = "MSH|^~\\&|KIS|H|CB|H|20270101120000||ADT^A06^ADT_A06|C-6|P|2.5\r\
                EVN|A06|20270101120000\r\
                PID|1||P-1^^^KIS^PI\r\
                MRG|P-1^^^KIS^PI||||E-100^^^KIS^VN\r\
                PV1|1|I|STA7||||||||||||||||S-200^^^KIS^VN\r";
    let adt = parse_adt(text, "49").unwrap();
    assert_eq!(adt.visit.as_ref().unwrap().value, "S-200");
    assert_eq!(adt.prior_visit.as_ref().unwrap().value, "E-100");
    assert!(adt.ranks_visit());
    assert!(adt.prior.is_empty(), "MRG-1 of an A06 is no merge");
    let a08 = parse_adt(&adt_with("A08", "", "", "", "F-9^^^KIS"), "49").unwrap();
    assert!(!a08.ranks_visit());
    assert!(a08.prior_visit.is_none());
}

/// The ACK echoes MSH-3 to MSH-6 (HD) and MSH-12 (VID) with their
/// components, not escaped into one value; a v2.3 ACK carries ERR-1 (ELD)
/// and MSA-6, the layout of its version.
#[test]
fn the_ack_keeps_the_structure_of_what_it_echoes_and_its_versions_layout() {
    let text = "MSH|^~\\&|KIS^1.2.276.0.58^ISO|KLINIKUM^1.2.276.0.58.1^ISO|CB|H|20270101120000||ADT^A01|C-1|P|2.5^DEU\r\
                EVN|A01|20270101120000\r\
                PID|1||P-1^^^KIS\r\
                PV1|1|I\r";
    let ack = build_ack(&header(text), Ok(()), "ACK-1", "20270101120000+0000");
    let m = hl7_parser::Message::parse(&ack).unwrap();
    let msh = m.segment("MSH").unwrap();
    assert_eq!(msh.field(5).unwrap().raw_value(), "KIS^1.2.276.0.58^ISO");
    assert_eq!(
        msh.field(6).unwrap().raw_value(),
        "KLINIKUM^1.2.276.0.58.1^ISO"
    );
    assert_eq!(msh.field(12).unwrap().raw_value(), "2.5^DEU");
    let v23 = text.replace("|P|2.5^DEU", "|P|2.3");
    let err = AdtError::error(ErrorCode::RequiredFieldMissing, "PID-3", "no identifier");
    let ack = build_ack(&header(&v23), Err(&err), "ACK-2", "20270101120000+0000");
    assert!(
        ack.contains("\rERR|PID^1^3^101&Required field missing&HL70357"),
        "{ack}"
    );
    let m = hl7_parser::Message::parse(&ack).unwrap();
    assert_eq!(
        m.segment("MSA").unwrap().field(6).unwrap().raw_value(),
        "101^Required field missing^HL70357"
    );
    // MSH-18 empty means ASCII: an ACK echoing other text declares UTF-8.
    assert_eq!(msh.field(18).map(|f| f.raw_value()).unwrap_or(""), "");
    let umlaut = text.replace("KLINIKUM^", "Klinikum Fürth^");
    let ack = build_ack(&header(&umlaut), Ok(()), "ACK-3", "20270101120000+0000");
    let m = hl7_parser::Message::parse(&ack).unwrap();
    let msh = m.segment("MSH").unwrap();
    assert_eq!(msh.field(18).unwrap().raw_value(), "UNICODE UTF-8");
    assert!(
        msh.field(6)
            .unwrap()
            .raw_value()
            .starts_with("Klinikum Fürth")
    );
}

/// Enhanced acknowledgment mode (v2.5 chapter 2.9.3): MSH-15 `AL` gets
/// the accept acknowledgment CA (CE, CR on errors); `ER` only on an
/// error; `NE` with MSH-16 `NE` no answer at all; MSH-15 `NE` with
/// MSH-16 `AL` the application acknowledgment on the same connection.
/// Both empty is the original mode.
#[test]
fn enhanced_mode_answers_as_msh15_and_msh16_ask() {
    let with = |accept: &str, application: &str| {
        header(&format!(
            "MSH|^~\\&|KIS|H|CB|H|20270101120000||ADT^A01^ADT_A01|C-1|P|2.5|||{accept}|{application}\r"
        ))
    };
    let (ok, error, reject) = (AckCode::Accept, AckCode::Error, AckCode::Reject);
    let h = with("AL", "NE");
    assert_eq!(
        [
            answer_code(&h, ok),
            answer_code(&h, error),
            answer_code(&h, reject)
        ],
        [Some("CA"), Some("CE"), Some("CR")]
    );
    let h = with("ER", "NE");
    assert_eq!(
        (answer_code(&h, ok), answer_code(&h, error)),
        (None, Some("CE"))
    );
    let h = with("NE", "NE");
    assert_eq!((answer_code(&h, ok), answer_code(&h, reject)), (None, None));
    let h = with("NE", "AL");
    assert_eq!(
        (answer_code(&h, ok), answer_code(&h, error)),
        (Some("AA"), Some("AE"))
    );
    let h = with("", "");
    assert_eq!(answer_code(&h, ok), Some("AA"));
    let ack = build_ack(&with("AL", "NE"), Ok(()), "ACK-1", "20270101120000+0000");
    let m = hl7_parser::Message::parse(&ack).unwrap();
    assert_eq!(
        m.segment("MSA").unwrap().field(1).unwrap().raw_value(),
        "CA"
    );
}
