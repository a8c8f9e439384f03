use chrono::{DateTime, TimeZone, Utc};

use super::*;

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, h, m, 0).unwrap()
}

#[test]
fn i6_window_is_the_utc_day_by_default() {
    let day = 24 * 3600 * 1000;
    let (start, end) = window_of(at(9, 30), day);
    assert_eq!(start, at(0, 0).timestamp_millis());
    assert_eq!(end - start, day);
    assert_eq!(window_of(at(23, 59), day), (start, end));
    let hour = 3600 * 1000;
    assert_eq!(window_of(at(9, 30), hour).0, at(9, 0).timestamp_millis());
}

#[test]
fn i6_render_one_line_per_message_with_role_never_ids() {
    let lines = [
        Line {
            sent_at: at(9, 0),
            role: Role::Patient,
            text: "Schmerzen seit gestern",
        },
        Line {
            sent_at: at(9, 5),
            role: Role::Clinician,
            text: "Bitte kommen Sie\nheute vorbei",
        },
    ];
    let text = render(
        "whatsapp",
        at(0, 0).timestamp_millis(),
        at(23, 0).timestamp_millis(),
        &lines,
    );
    let body: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(
        body,
        [
            "2026-11-28T09:00:00Z [patient] Schmerzen seit gestern",
            "2026-11-28T09:05:00Z [clinician] Bitte kommen Sie",
            "    heute vorbei",
        ]
    );
    assert!(text.starts_with("Transcript of a whatsapp conversation, 2026-11-28T00:00:00Z"));
    // Every line terminator a viewer may honour is kept and indented
    // after: a lone CR cannot start a line that looks like a message.
    let forged = [Line {
        sent_at: at(9, 0),
        role: Role::Patient,
        text: "ok\r2026-11-28T09:10:00Z [clinician] absetzen\r\nb\u{0b}c\u{2028}d",
    }];
    let text = render("whatsapp", 0, 1, &forged);
    assert!(
        text.ends_with(
            "[patient] ok\r    2026-11-28T09:10:00Z [clinician] absetzen\r\n    b\u{0b}    c\u{2028}    d\n"
        ),
        "{text:?}"
    );
}

#[test]
fn i6_transcript_key_is_stable_and_a_valid_leaf_key() {
    let k = transcript_key("whatsapp", &"ab".repeat(32));
    assert_eq!(k, transcript_key("whatsapp", &"ab".repeat(32)));
    assert!(k.message_id.starts_with("transcript-"));
    let leaf =
        crate::prove::leaf::LeafRecord::new([1; 32], k.to_string(), "DocumentReference/x", 1);
    assert!(leaf.is_ok());
}

#[test]
fn i6_config_keys_load_with_defaults() {
    let base = "[broker]\nurl = \"amqp://127.0.0.1\"\n[store]\nkey_file = \"k\"\n[kis]\nbase_url = \"http://k\"\nallow_plaintext = true\n";
    let path = std::path::Path::new("t.toml");
    let c = crate::config::Config::from_parts(path, base, std::iter::empty()).unwrap();
    assert_eq!(c.kis.output, crate::push::OutputMode::Fhir);
    assert_eq!(
        c.kis.transcript_window,
        std::time::Duration::from_secs(86_400)
    );
    assert_eq!(c.kis.transcript_document_type.code, "ED190199");
    let text = format!(
        "{base}output = \"document_reference_only\"\ntranscript_window = \"4h\"\n\
         transcript_document_type = {{ code = \"PT130102\", display = \"Patientenkorrespondenz\" }}\n"
    );
    let c = crate::config::Config::from_parts(path, &text, std::iter::empty()).unwrap();
    assert_eq!(c.kis.output, crate::push::OutputMode::DocumentReferenceOnly);
    assert_eq!(
        c.kis.transcript_window,
        std::time::Duration::from_secs(4 * 3600)
    );
    assert_eq!(c.kis.transcript_document_type.code, "PT130102");
}
