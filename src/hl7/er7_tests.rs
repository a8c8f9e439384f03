use super::*;

#[test]
fn segment_terminators_and_stray_line_feeds() {
    let (segs, terminated) =
        segments(b"\xef\xbb\xbf\n \x0bMSH|^~\\&|A\r\nPID|1||X\nstill PID\rPV1|1\nZXY|2\n\n");
    // Only LF: every LF ends a segment (the next line is then checked
    // by the parser as a segment).
    let (lf_only, _) = segments(b"MSH|^~\\&|A\nPID|1\nnot a segment\n");
    assert_eq!(lf_only.len(), 3);
    assert!(terminated);
    assert_eq!(
        segs,
        vec![
            b"MSH|^~\\&|A".to_vec(),
            b"PID|1||X\nstill PID".to_vec(),
            b"PV1|1".to_vec(),
            b"ZXY|2".to_vec()
        ]
    );
    let (_, terminated) = segments(b"MSH|^~\\&|A\rPID|1||X");
    assert!(!terminated);
}

#[test]
fn batches_split_with_and_without_envelope() {
    let p = split(
        b"FHS|^~\\&|K\rBHS|^~\\&|K||||||||B-9\rMSH|^~\\&|1\rPID|1\rMSH|^~\\&|2\rBTS|2\rFTS|1\r",
    );
    assert!(p.enveloped && p.is_batch());
    assert_eq!(p.batch_control_id, "B-9");
    assert_eq!(p.declared_count, Some(2));
    assert_eq!(p.messages.len(), 2);
    assert_eq!(p.messages[0].bytes, b"MSH|^~\\&|1\rPID|1\r");
    let p = split(b"MSH|^~\\&|1\nPID|1\nMSH|^~\\&|2\nPID|2");
    assert!(!p.enveloped && p.is_batch());
    assert_eq!(p.messages[1].bytes, b"MSH|^~\\&|2\rPID|2");
}

#[test]
fn charsets_of_msh18() {
    assert_eq!(Charset::from_msh18("8859/1", '~'), Some(Charset::Latin1));
    assert_eq!(
        Charset::from_msh18("UNICODE UTF-8", '~'),
        Some(Charset::Utf8)
    );
    assert_eq!(Charset::from_msh18("UNICODE UTF-16", '~'), None);
    // Further repetitions name alternate sets (ISO 2022 switches); the
    // first one is the message's, split at MSH-2's repetition separator.
    assert_eq!(
        Charset::from_msh18("8859/1~ISO IR87", '~'),
        Some(Charset::Latin1)
    );
    assert_eq!(
        Charset::from_msh18("8859/1*ISO IR87", '*'),
        Some(Charset::Latin1)
    );
    assert_eq!(Charset::from_msh18("8859/1*ISO IR87", '~'), None);
    assert_eq!(Charset::Latin1.decode(b"M\xfcller").unwrap(), "Müller");
    assert_eq!(Charset::Utf8.decode(b"M\xfcller"), None);
    assert_eq!(Charset::Undeclared.decode(b"M\xfcller").unwrap(), "Müller");
    assert_eq!(
        Charset::Undeclared.decode("Müller".as_bytes()).unwrap(),
        "Müller"
    );
    assert_eq!(Charset::Ascii.decode(b"M\xfcller"), None);
    assert_eq!(Charset::Latin9.decode(b"\xa4").unwrap(), "€");
}

#[test]
fn msh18_is_split_at_the_repetition_separator_msh2_declares() {
    let (value, repetition) =
        msh18(b"MSH|^*\\&|A|B|C|D|20260101||ADT^A08|1|P|2.5|||||DEU|8859/1*ISO IR87\rPID|1");
    assert_eq!((value.as_str(), repetition), ("8859/1*ISO IR87", '*'));
    assert_eq!(
        Charset::from_msh18(&value, repetition),
        Some(Charset::Latin1)
    );
    assert_eq!(msh18(b"PID|1").1, '~');
}

#[test]
fn msh2_with_four_or_five_characters() {
    let e = encoding("MSH|^~\\&#|K").unwrap();
    assert_eq!(e.truncation, Some('#'));
    assert_eq!(encoding("MSH|^~\\&|K").unwrap().truncation, None);
    for bad in [
        "MSH|^~\\|K",
        "MSH|^~\\&#@|K",
        "MSH|^^\\&|K",
        "MSH||K",
        "MSHA^~\\&",
    ] {
        assert!(encoding(bad).is_err(), "{bad}");
    }
}
