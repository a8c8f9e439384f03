use super::*;
use proptest::prelude::*;

const ORIGIN: &str = "chartbridge.example/log";
const T0: i64 = 1_795_907_576_123;

fn signer(seed: u8) -> Signer {
    Signer::from_seed(ORIGIN, &[seed; 32]).expect("signer")
}

fn sample() -> Checkpoint {
    Checkpoint::new(ORIGIN, 42, [0x5a; 32], T0)
}

#[test]
fn body_is_c2sp_with_timestamp_line() {
    let body = sample().to_body();
    assert_eq!(
        body,
        format!(
            "{ORIGIN}\n42\n{}\ntimestamp {T0}\n",
            STANDARD.encode([0x5a; 32])
        )
    );
    assert_eq!(Checkpoint::parse(&body), Ok(sample()));
}

#[test]
fn parses_c2sp_spec_example() {
    let body =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    let cp = Checkpoint::parse(body).expect("parse");
    assert_eq!(cp.origin, "example.com/behind-the-sofa");
    assert_eq!(cp.size, 20_852_163);
    assert_eq!(cp.timestamp_ms, None);
    assert_eq!(cp.to_body(), body);
    let with_ext = format!("{body}timestamp 5\nother extension\n");
    let cp = Checkpoint::parse(&with_ext).expect("parse");
    assert_eq!(cp.timestamp_ms, Some(5));
    assert_eq!(cp.extensions, vec!["other extension".to_string()]);
}

#[test]
fn rejects_non_canonical_bodies() {
    let root = STANDARD.encode([0x5a; 32]);
    let bad = [
        format!("{ORIGIN}\n42\n{root}"),
        format!("{ORIGIN}\n42\n"),
        format!("\n42\n{root}\n"),
        format!("{ORIGIN}\n042\n{root}\n"),
        format!("{ORIGIN}\n+42\n{root}\n"),
        format!("{ORIGIN}\n-1\n{root}\n"),
        format!("{ORIGIN}\n18446744073709551616\n{root}\n"),
        format!("{ORIGIN}\n42\n{}\n", STANDARD.encode([0x5a; 31])),
        format!("{ORIGIN}\n42\n{}\n", root.trim_end_matches('=')),
        format!("{ORIGIN}\n42\n{}\n", root.replace("Wlo=", "Wlp=")),
        format!("{ORIGIN}\n42\n{root}\n\n"),
        format!("{ORIGIN}\n42\n{root}\ntimestamp 01\n"),
        format!("{ORIGIN}\n42\n{root}\ntimestamp -5\n"),
        format!("{ORIGIN}\n42\n{root}\ntimestamp 9223372036854775808\n"),
        format!("{ORIGIN}\n42\n{root}\ntimestamp 1\ntimestamp 2\n"),
        format!("{ORIGIN}\n42\n{root}\next\ntimestamp 2\n"),
        format!("{ORIGIN}\t\n42\n{root}\n"),
        format!("{ORIGIN}\r\n42\n{root}\n"),
    ];
    for body in &bad {
        assert!(
            matches!(Checkpoint::parse(body), Err(CheckpointError::Malformed(_))),
            "{body:?}"
        );
    }
}

#[test]
fn sign_and_verify() {
    let s = signer(1);
    let note = sample().sign(&[&s]).expect("sign");
    let keys = [KeyInfo::new(&s.verifier(), T0 - 1000)];
    let v = verify_checkpoint(&note, &keys).expect("verify");
    assert_eq!(v.checkpoint, sample());
    assert_eq!(v.signed_at_ms, T0);
    assert_eq!(v.signed_by, keys.to_vec());
    let (cp, opened) = open_checkpoint(&note, &[s.verifier()]).expect("open");
    assert_eq!(cp, sample());
    assert_eq!(opened.verified.len(), 1);
}

#[test]
fn key_time_policy() {
    let s = signer(1);
    let note = sample().sign(&[&s]).expect("sign");
    let base = KeyInfo::new(&s.verifier(), T0 - 1000);
    let with = |f: &dyn Fn(&mut KeyInfo)| {
        let mut k = base.clone();
        f(&mut k);
        verify_checkpoint(&note, &[k])
    };
    assert!(with(&|k| k.revoked_at_ms = Some(T0 + 1)).is_ok());
    assert!(matches!(
        with(&|k| k.revoked_at_ms = Some(T0)),
        Err(CheckpointError::KeyRevoked { .. })
    ));
    assert!(matches!(
        with(&|k| k.revoked_at_ms = Some(T0 - 5000)),
        Err(CheckpointError::KeyRevoked { .. })
    ));
    assert!(with(&|k| k.valid_until_ms = Some(T0 + 1)).is_ok());
    assert!(matches!(
        with(&|k| k.valid_until_ms = Some(T0)),
        Err(CheckpointError::KeyNotValid { .. })
    ));
    assert!(matches!(
        with(&|k| k.valid_from_ms = T0 + 1),
        Err(CheckpointError::KeyNotValid { .. })
    ));
    assert!(with(&|k| k.valid_from_ms = T0).is_ok());
}

#[test]
fn rotated_key_still_verifies_old_checkpoints() {
    let (old, new) = (signer(1), signer(2));
    let mut old_info = KeyInfo::new(&old.verifier(), T0 - 10_000);
    old_info.valid_until_ms = Some(T0 + 500);
    let new_info = KeyInfo::new(&new.verifier(), T0 + 500);
    let keys = [old_info, new_info];
    let old_note = sample().sign(&[&old]).expect("sign");
    assert!(verify_checkpoint(&old_note, &keys).is_ok());
    let late = Checkpoint::new(ORIGIN, 43, [1; 32], T0 + 600);
    assert!(verify_checkpoint(&late.sign(&[&new]).expect("sign"), &keys).is_ok());
    assert!(matches!(
        verify_checkpoint(&late.sign(&[&old]).expect("sign"), &keys),
        Err(CheckpointError::KeyNotValid { .. })
    ));
}

#[test]
fn one_good_signature_suffices() {
    let (a, b) = (signer(1), signer(2));
    let mut revoked = KeyInfo::new(&a.verifier(), 0);
    revoked.revoked_at_ms = Some(T0 - 1);
    let good = KeyInfo::new(&b.verifier(), 0);
    let note = sample().sign(&[&a, &b]).expect("sign");
    let v = verify_checkpoint(&note, &[revoked.clone(), good.clone()]).expect("verify");
    assert_eq!(v.signed_by, vec![good]);
    let mut expired = KeyInfo::new(&b.verifier(), 0);
    expired.valid_until_ms = Some(1);
    assert!(matches!(
        verify_checkpoint(&note, &[expired, revoked]),
        Err(CheckpointError::KeyRevoked { .. })
    ));
}

#[test]
fn signature_and_key_errors() {
    let s = signer(1);
    let note = sample().sign(&[&s]).expect("sign");
    let other = KeyInfo::new(&signer(2).verifier(), 0);
    assert_eq!(
        verify_checkpoint(&note, std::slice::from_ref(&other)),
        Err(CheckpointError::Signature(NoteError::UnknownKey))
    );
    let mut wrong_id = KeyInfo::new(&s.verifier(), 0);
    wrong_id.key_id = "00000000".into();
    assert!(matches!(
        verify_checkpoint(&note, &[wrong_id]),
        Err(CheckpointError::InvalidKey { .. })
    ));
    let mut no_ts = sample();
    no_ts.timestamp_ms = None;
    let no_ts_note = no_ts.sign(&[&s]).expect("sign");
    assert_eq!(
        verify_checkpoint(&no_ts_note, &[KeyInfo::new(&s.verifier(), 0)]),
        Err(CheckpointError::MissingTimestamp)
    );
    let tampered = note.replacen("\n42\n", "\n43\n", 1);
    assert!(matches!(
        verify_checkpoint(&tampered, &[KeyInfo::new(&s.verifier(), 0)]),
        Err(CheckpointError::Signature(NoteError::BadSignature { .. }))
    ));
}

#[test]
fn key_info_json() {
    let info = KeyInfo::new(&signer(1).verifier(), T0);
    let json = serde_json::to_string(&info).expect("json");
    assert!(json.contains("\"valid_until_ms\":null"));
    assert_eq!(serde_json::from_str::<KeyInfo>(&json).expect("parse"), info);
    let minimal = format!(
        r#"{{"name":"{}","key_id":"{}","verifier_key":"{}","valid_from_ms":{T0}}}"#,
        info.name, info.key_id, info.verifier_key
    );
    assert_eq!(
        serde_json::from_str::<KeyInfo>(&minimal).expect("parse"),
        info
    );
    assert!(serde_json::from_str::<KeyInfo>(&minimal.replace("}", r#","x":1}"#)).is_err());
}

proptest! {
    #[test]
    fn body_round_trips(
        origin in "[a-z./]{1,30}",
        size in any::<u64>(),
        root in any::<[u8; 32]>(),
        ts in proptest::option::of(0i64..=i64::MAX),
    ) {
        let cp = Checkpoint { origin, size, root, timestamp_ms: ts, extensions: vec![] };
        prop_assert_eq!(Checkpoint::parse(&cp.to_body()), Ok(cp));
    }

    #[test]
    fn parse_never_panics(s in "(?s).{0,200}") {
        if let Ok(cp) = Checkpoint::parse(&s) {
            prop_assert_eq!(cp.to_body(), s.clone());
        }
        let _ = verify_checkpoint(&s, &[]);
    }
}
