use super::*;

#[test]
fn sha256_in_hex_and_base64() {
    let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let b64 = "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=";
    assert_eq!(parse_sha256(hex), parse_sha256(b64));
    assert!(parse_sha256(hex).is_some());
    assert_eq!(parse_sha256("abc"), None);
}

#[test]
fn refusals_name_no_content() {
    let secret = "Patient Erika Mustermann";
    let payload = format!("{{\"note\": \"{secret}\"");
    let err = decode(payload.as_bytes(), 1 << 20).unwrap_err();
    assert_eq!(err.code, DecodeErrorCode::InvalidJson);
    assert!(!err.to_string().contains("Mustermann"));
    let err = decode(format!("{{\"x\":\"{secret}\"}}").as_bytes(), 1 << 20).unwrap_err();
    assert_eq!(err.code, DecodeErrorCode::UnknownFormat);
    let err = decode(&[b'{', 0xff, b'}'], 1 << 20).unwrap_err();
    assert_eq!(err.code, DecodeErrorCode::InvalidUtf8);
    let err = decode(b"{}", 1).unwrap_err();
    assert_eq!(err.code, DecodeErrorCode::TooLarge);
}

/// Refusals name the real defect: a byte order mark before the JSON
/// text, a number beyond what is read (valid JSON grammar).
#[test]
fn refusals_name_the_byte_order_mark_and_numbers_out_of_range() {
    let err = decode("\u{feff}{\"schema\": 1}".as_bytes(), 1 << 20).unwrap_err();
    assert_eq!(err.code, DecodeErrorCode::InvalidJson);
    assert_eq!(err.detail, "a UTF-8 byte order mark precedes the JSON text");
    let err = decode(br#"{"schema": "x", "size": 1e400}"#, 1 << 20).unwrap_err();
    assert_eq!(err.code, DecodeErrorCode::InvalidField);
    assert_eq!(err.detail, "line 1 column 29: number out of range");
}

/// Found by fuzzing (`fuzz/regressions/map/`): a Matrix timestamp in the
/// year 57000 decoded, then the mapping panicked on it.
#[test]
fn times_outside_four_digit_years_are_held() {
    let regression =
        include_bytes!("../../fuzz/regressions/map/crash-7d2a5817109ef1ec8b0ea8902d97b22d8cbfa2e0");
    // A message event: held sealed with the defect (it may carry patient
    // content), never mapped.
    let d = decode(regression, 1 << 20).unwrap();
    assert!(d.messages.is_empty());
    assert!(d.held[0].detail.starts_with("origin_server_ts"));
    let room = |ts: i64| {
        serde_json::json!({"type": "m.room.message", "room_id": "!r", "event_id": "$e",
                "sender": "@a:h", "origin_server_ts": ts,
                "content": {"msgtype": "m.text", "body": "x"}})
        .to_string()
    };
    // A message event: held with the defect, not refused.
    for ts in [-62_135_596_800_001, 253_402_300_800_000] {
        let d = decode(room(ts).as_bytes(), 1 << 20).unwrap();
        assert!(d.messages.is_empty(), "{ts}");
        assert!(d.held[0].detail.starts_with("origin_server_ts"), "{ts}");
    }
    for ts in [-62_135_596_800_000, 253_402_300_799_999, 0] {
        assert!(decode(room(ts).as_bytes(), 1 << 20).is_ok(), "{ts}");
    }
}
