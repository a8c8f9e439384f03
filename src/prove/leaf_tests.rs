use super::*;
use proptest::prelude::*;

const SAMPLE_MS: i64 = 1_795_907_576_123;

fn sample() -> LeafRecord {
    LeafRecord::new(
        [0xab; 32],
        "whatsapp:wamid.HBgM",
        "DocumentReference/123",
        SAMPLE_MS,
    )
    .expect("valid record")
}

#[test]
fn encodes_exact_canonical_text() {
    let want = format!(
        "chartbridge-leaf/v1\ncontent-sha256 {}\nmessage whatsapp:wamid.HBgM\n\
         resource DocumentReference/123\narchived 2026-11-28T23:12:56.123Z\n",
        "ab".repeat(32)
    );
    assert_eq!(String::from_utf8(sample().encode()).expect("utf8"), want);
    assert_eq!(sample().leaf_hash(), leaf_hash(want.as_bytes()));
}

#[test]
fn decode_round_trips() {
    let record = sample();
    assert_eq!(LeafRecord::decode(&record.encode()), Ok(record));
}

#[test]
fn known_times() {
    let cases = [
        (0, "1970-01-01T00:00:00.000Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (1_709_164_799_999, "2024-02-28T23:59:59.999Z"),
        (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
    ];
    for (ms, text) in cases {
        assert_eq!(format_rfc3339_millis(ms).as_deref(), Some(text));
        assert_eq!(parse_rfc3339_millis(text), Some(ms));
    }
    assert_eq!(format_rfc3339_millis(-1), None);
    assert_eq!(format_rfc3339_millis(253_402_300_800_000), None);
}

#[test]
fn rejects_bad_times() {
    for bad in [
        "2026-02-29T00:00:00.000Z",
        "2100-02-29T00:00:00.000Z",
        "2026-13-01T00:00:00.000Z",
        "2026-00-01T00:00:00.000Z",
        "2026-01-00T00:00:00.000Z",
        "2026-04-31T00:00:00.000Z",
        "2026-01-01T24:00:00.000Z",
        "2026-01-01T00:60:00.000Z",
        "2026-01-01T00:00:60.000Z",
        "2026-01-01T00:00:00.000+00:00",
        "2026-01-01T00:00:00Z",
        "2026-01-01 00:00:00.000Z",
        "2026-01-01T00:00:00.000z",
        "1969-12-31T23:59:59.999Z",
        "+026-01-01T00:00:00.000Z",
        "2026-01-01T00:00:00.0-1Z",
    ] {
        assert_eq!(parse_rfc3339_millis(bad), None, "{bad}");
    }
}

#[test]
fn new_validates_fields() {
    let ok = |m: &str, r: &str| LeafRecord::new([0; 32], m, r, 0).is_ok();
    assert!(ok(
        "matrix:$ev:server.example",
        "DocumentReference/1/_history/2"
    ));
    assert!(ok("amqp:id with space", "Media/x"));
    assert!(!ok("", "Media/x"));
    assert!(!ok("nocolon", "Media/x"));
    assert!(!ok(":id", "Media/x"));
    assert!(!ok("src:", "Media/x"));
    assert!(!ok("src:a\nb", "Media/x"));
    assert!(!ok("src:a\u{7f}", "Media/x"));
    assert!(!ok("src:a\u{85}", "Media/x"));
    assert!(!ok(" src:a", "Media/x"));
    assert!(!ok("src:a ", "Media/x"));
    assert!(!ok("src:a", "Media"));
    assert!(!ok("src:a", "/x"));
    assert!(!ok("src:a", "Media/"));
    assert!(!ok("src:a", "Media/x y"));
    assert!(!ok(&format!("src:{}", "a".repeat(1100)), "Media/x"));
    assert_eq!(
        LeafRecord::new([0; 32], "a:b", "T/i", -1),
        Err(LeafError::TimeOutOfRange(-1))
    );
}

#[test]
fn decode_rejects_non_canonical_forms() {
    let good = String::from_utf8(sample().encode()).expect("utf8");
    let variants = [
        good.trim_end().to_string(),
        format!("{good}\n"),
        good.replace('\n', "\r\n"),
        good.replace("chartbridge-leaf/v1", "chartbridge-leaf/v2"),
        good.replace(&"ab".repeat(32), &"AB".repeat(32)),
        good.replace(&"ab".repeat(32), &"ab".repeat(31)),
        good.replace("content-sha256 ", "content-sha256  "),
        good.replace("message ", "message  "),
        good.replace("message ", "Message "),
        good.replace(".123Z", "Z"),
        good.replace("2026-11-28T23:12:56.123Z", "2026-11-29T00:12:56.123+01:00"),
        good.replace("resource DocumentReference/123\n", ""),
        good.replace(
            "message whatsapp:wamid.HBgM\nresource DocumentReference/123\n",
            "resource DocumentReference/123\nmessage whatsapp:wamid.HBgM\n",
        ),
        format!("{good}extra 1\n"),
        format!("\u{feff}{good}"),
        String::new(),
    ];
    for bad in &variants {
        assert!(LeafRecord::decode(bad.as_bytes()).is_err(), "{bad:?}");
    }
    let mut bytes = good.into_bytes();
    bytes[30] = 0xff;
    assert!(LeafRecord::decode(&bytes).is_err());
}

proptest! {
    #[test]
    fn time_round_trips(ms in 0i64..=253_402_300_799_999) {
        let text = format_rfc3339_millis(ms).expect("in range");
        prop_assert_eq!(parse_rfc3339_millis(&text), Some(ms));
    }

    #[test]
    fn record_round_trips(
        digest in any::<[u8; 32]>(),
        source in "[a-z]{1,10}",
        id in "[!-~]{1,40}",
        rtype in "[A-Za-z]{1,20}",
        rid in "[A-Za-z0-9.-]{1,64}",
        ms in 0i64..=253_402_300_799_999,
    ) {
        let r = LeafRecord::new(digest, format!("{source}:{id}"), format!("{rtype}/{rid}"), ms)
            .expect("valid");
        prop_assert_eq!(LeafRecord::decode(&r.encode()), Ok(r));
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(r) = LeafRecord::decode(&bytes) {
            prop_assert_eq!(r.encode(), bytes);
        }
    }

    #[test]
    fn decode_rejects_any_byte_flip(pos in any::<usize>(), mask in 1u8..=255) {
        let mut bytes = sample().encode();
        let i = pos % bytes.len();
        bytes[i] ^= mask;
        if let Ok(r) = LeafRecord::decode(&bytes) {
            prop_assert_eq!(r.encode(), bytes);
            prop_assert_ne!(r, sample());
        }
    }
}
