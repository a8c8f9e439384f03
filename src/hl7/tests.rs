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
