use super::*;
use proptest::prelude::*;

// Keys, text and signatures: golang.org/x/mod sumdb/note/note_test.go
// (TestNewVerifier, TestNewSigner, TestSign, TestOpen).
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

fn peter() -> Verifier {
    Verifier::parse(PETER_VKEY).expect("peter vkey")
}

fn enoch() -> Verifier {
    Verifier::parse(ENOCH_VKEY).expect("enoch vkey")
}

fn key(name: &str, key_id: u32) -> KeyRef {
    KeyRef {
        name: name.to_string(),
        key_id,
    }
}

#[test]
fn parses_go_keys() {
    let v = peter();
    assert_eq!(v.name(), "PeterNeumann");
    assert_eq!(v.key_id(), 0xc74f20a3);
    assert_eq!(v.to_string(), PETER_VKEY);
    let s = Signer::parse(PETER_SKEY).expect("peter skey");
    assert_eq!(s.verifier(), v);
    assert_eq!(s.to_private_key_string(), PETER_SKEY);
    assert!(!format!("{s:?}").contains("AYEK"));
}

#[test]
fn sign_matches_go_output() {
    let s = Signer::parse(PETER_SKEY).expect("peter skey");
    let note = sign(TEXT, &[&s]).expect("sign");
    assert_eq!(note, format!("{TEXT}\n{PETER_SIG}"));
}

#[test]
fn open_go_note() {
    let note = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    let one = open(&note, &[peter()]).expect("open");
    assert_eq!(one.text, TEXT);
    assert_eq!(one.verified, vec![key("PeterNeumann", 0xc74f20a3)]);
    assert_eq!(one.unverified, vec![key("EnochRoot", 0xaf0cfe78)]);
    let both = open(&note, &[peter(), enoch()]).expect("open");
    assert_eq!(
        both.verified,
        vec![
            key("PeterNeumann", 0xc74f20a3),
            key("EnochRoot", 0xaf0cfe78)
        ]
    );
    assert!(both.unverified.is_empty());
    assert_eq!(open(&note, &[]), Err(NoteError::UnknownKey));
}

#[test]
fn open_rejects_ambiguous_and_bad_signatures() {
    let enoch_only = format!("{TEXT}\n{ENOCH_SIG}");
    assert!(matches!(
        open(&enoch_only, &[enoch(), peter(), enoch()]),
        Err(NoteError::AmbiguousKey { .. })
    ));
    let peter_only = format!("{TEXT}\n{PETER_SIG}");
    assert!(open(&peter_only, &[enoch(), peter(), enoch()]).is_ok());
    let bad = format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
    assert_eq!(
        open(&bad, &[peter()]),
        Err(NoteError::BadSignature {
            name: "PeterNeumann".into(),
            key_id: 0xc74f20a3
        })
    );
    let tampered = format!("{}\n{PETER_SIG}", TEXT.replace("answer", "Answer"));
    assert!(matches!(
        open(&tampered, &[peter()]),
        Err(NoteError::BadSignature { .. })
    ));
    let renamed = format!(
        "{TEXT}\n{}",
        PETER_SIG.replace("PeterNeumann", "CarmenSandiego")
    );
    assert_eq!(open(&renamed, &[peter()]), Err(NoteError::UnknownKey));
}

#[test]
fn open_tolerates_repeats_and_limits_count() {
    let dupes = format!("{TEXT}\n{PETER_SIG}{PETER_SIG}{ENOCH_SIG}{ENOCH_SIG}");
    let opened = open(&dupes, &[peter()]).expect("open");
    assert_eq!(opened.verified.len(), 1);
    assert_eq!(opened.unverified.len(), 1);
    let many = format!("{TEXT}\n{}", PETER_SIG.repeat(101));
    assert!(matches!(
        open(&many, &[peter()]),
        Err(NoteError::Malformed(_))
    ));
}

#[test]
fn open_rejects_malformed_notes() {
    let bad = [
        TEXT.to_string(),
        format!("{TEXT}\n"),
        format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
        format!("\u{1}{TEXT}\n{PETER_SIG}"),
        format!(
            "{TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
        ),
        format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"),
        format!("{TEXT}\n- PeterNeumann x08go/ZJk=\n"),
        format!("{TEXT}\n\u{2014} PeterNeumann AAAA\n"),
        format!("{TEXT}\n\u{2014} PeterNeumann\n"),
        format!("{}\r\n\n{PETER_SIG}", TEXT.trim_end()),
    ];
    for note in &bad {
        assert!(
            matches!(open(note, &[peter()]), Err(NoteError::Malformed(_))),
            "{note:?}"
        );
    }
}

#[test]
fn verifier_rejects_every_mangling() {
    let b = PETER_VKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if i == 0 && j == b.len() {
                continue;
            }
            if let Ok(s) = std::str::from_utf8(&b[i..j]) {
                assert!(Verifier::parse(s).is_err(), "{s}");
            }
        }
    }
    let mut m = b.to_vec();
    for i in 0..m.len() {
        m[i] = m[i].wrapping_add(1);
        if let Ok(s) = std::str::from_utf8(&m) {
            assert!(Verifier::parse(s).is_err(), "{s}");
        }
        m[i] = m[i].wrapping_sub(1);
    }
    for bad in [
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ] {
        assert!(Verifier::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn signer_rejects_mangling() {
    let b = PETER_SKEY.as_bytes();
    for (i, j) in [(0, b.len() - 1), (1, b.len()), (0, 60), (12, b.len())] {
        let s = std::str::from_utf8(&b[i..j]).expect("ascii");
        assert!(Signer::parse(s).is_err(), "{s}");
    }
    let mut m = b.to_vec();
    for i in 0..m.len() {
        m[i] = m[i].wrapping_add(1);
        if let Ok(s) = std::str::from_utf8(&m) {
            assert!(Signer::parse(s).is_err(), "{s}");
        }
        m[i] = m[i].wrapping_sub(1);
    }
}

#[test]
fn round_trip_with_generated_key() {
    let s = Signer::from_seed("log.example/chartbridge", &[7u8; 32]).expect("signer");
    let v = Verifier::parse(&s.verifier().to_string()).expect("vkey");
    assert_eq!(v.key_id(), key_id(v.name(), &v.public_key()));
    let other = Signer::from_seed("log.example/chartbridge", &[8u8; 32]).expect("signer");
    let note = sign("hello\n\nworld\n", &[&s, &other]).expect("sign");
    let opened = open(&note, std::slice::from_ref(&v)).expect("open");
    assert_eq!(opened.text, "hello\n\nworld\n");
    assert_eq!(opened.verified.len(), 1);
    assert_eq!(opened.unverified.len(), 1);
    assert_eq!(
        open(&note, &[v, other.verifier()]).map(|o| o.verified.len()),
        Ok(2)
    );
}

#[test]
fn sign_rejects_bad_input() {
    let s = Signer::from_seed("k", &[1u8; 32]).expect("signer");
    assert!(sign("no newline", &[&s]).is_err());
    assert!(sign("tab\there\n", &[&s]).is_err());
    assert!(sign("ok\n", &[]).is_err());
    assert!(Signer::from_seed("a b", &[1u8; 32]).is_err());
    assert!(Signer::from_seed("a+b", &[1u8; 32]).is_err());
    assert!(Signer::from_seed("", &[1u8; 32]).is_err());
}

proptest! {
    #[test]
    fn flipped_signature_byte_fails(pos in 0usize..68, mask in 1u8..=255) {
        let note = format!("{TEXT}\n{PETER_SIG}");
        let b64 = PETER_SIG.trim_end().rsplit_once(' ').expect("sig").1;
        let mut raw = STANDARD.decode(b64).expect("b64");
        raw[pos] ^= mask;
        let bad = note.replace(b64, &STANDARD.encode(&raw));
        let result = open(&bad, &[peter()]);
        if pos < 4 {
            prop_assert_eq!(result, Err(NoteError::UnknownKey));
        } else {
            let is_bad_signature = matches!(result, Err(NoteError::BadSignature { .. }));
            prop_assert!(is_bad_signature);
        }
    }

    #[test]
    fn open_never_panics(s in "(?s).{0,300}") {
        let _ = open(&s, &[peter()]);
        let _ = Verifier::parse(&s);
        let _ = Signer::parse(&s);
    }

    #[test]
    fn open_never_panics_on_near_notes(pos in any::<usize>(), c in any::<char>()) {
        let mut note: Vec<char> = format!("{TEXT}\n{PETER_SIG}").chars().collect();
        let i = pos % note.len();
        note[i] = c;
        let note: String = note.into_iter().collect();
        let _ = open(&note, &[peter()]);
    }
}
