use super::super::checkpoint::Checkpoint;
use super::super::merkle::MemoryLog;
use super::super::note::{Signer, Verifier};
use super::*;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

const ORIGIN: &str = "test.chartbridge.invalid/log";
const T0: i64 = 1_795_907_576_123;
const DAY: i64 = 86_400_000;
const CONTENT: &[u8] = b"TEST-ONLY sample content for the chartbridge proof bundle fixture.\n";

fn test_signer(label: &str) -> Signer {
    let seed: [u8; 32] = Sha256::digest(label.as_bytes()).into();
    Signer::from_seed(ORIGIN, &seed).expect("signer")
}

fn current_signer() -> Signer {
    test_signer("chartbridge TEST-ONLY checkpoint key (current); never use in production")
}

fn keys() -> Vec<KeyInfo> {
    let old =
        test_signer("chartbridge TEST-ONLY checkpoint key (rotated); never use in production");
    let mut old_info = KeyInfo::new(&old.verifier(), T0 - 365 * DAY);
    old_info.valid_until_ms = Some(T0 - 30 * DAY);
    vec![
        old_info,
        KeyInfo::new(&current_signer().verifier(), T0 - 30 * DAY),
    ]
}

fn record(i: u64) -> LeafRecord {
    let content: [u8; 32] = if i == 2 {
        Sha256::digest(CONTENT).into()
    } else {
        Sha256::digest(format!("other content {i}")).into()
    };
    LeafRecord::new(
        content,
        format!("whatsapp:wamid.TEST{i:04}"),
        format!("DocumentReference/test-{i}"),
        T0 - (7 - i as i64) * 60_000,
    )
    .expect("record")
}

fn sample() -> ProofBundle {
    let mut log = MemoryLog::new();
    for i in 0..7 {
        log.append(&record(i).encode());
    }
    let root = log.root(7).expect("root");
    let note = Checkpoint::new(ORIGIN, 7, root, T0)
        .sign(&[&current_signer()])
        .expect("sign");
    let path = log.inclusion_proof(2, 7).expect("path");
    ProofBundle::new(&record(2), 2, 7, &path, &note, keys())
}

fn step_of(bundle: &ProofBundle, content: Option<&[u8]>) -> Option<Step> {
    verify_bundle(bundle, content, None).err().map(|e| e.step())
}

fn split_note(note: &str) -> (String, String) {
    let at = note.rfind("\n\n").expect("note") + 1;
    (note[..at].to_string(), note[at..].to_string())
}

#[test]
fn valid_bundle_verifies() {
    let bundle = sample();
    let report = verify_bundle(&bundle, Some(CONTENT), None).expect("verify");
    let steps: Vec<Step> = report.passed.iter().map(|p| p.step).collect();
    assert_eq!(
        steps,
        vec![
            Step::Format,
            Step::LeafData,
            Step::ContentHash,
            Step::Checkpoint,
            Step::Inclusion,
            Step::Signature,
            Step::KeyRevoked,
            Step::KeyNotValid
        ]
    );
    assert_eq!(report.trust, TrustSource::Bundle);
    assert!(report.content_checked);
    assert_eq!(report.warnings.len(), 1);
    assert_eq!(report.signed_at_ms, T0);
    assert_eq!(report.signed_by.len(), 1);
}

#[test]
fn operator_keys_are_the_only_trust() {
    let bundle = sample();
    let current = vec![keys()[1].clone()];
    let report = verify_bundle(&bundle, Some(CONTENT), Some(&current)).expect("verify");
    assert_eq!(report.trust, TrustSource::Operator);
    assert!(report.warnings.is_empty());
    let stranger = vec![KeyInfo::new(&test_signer("someone else").verifier(), 0)];
    assert_eq!(
        verify_bundle(&bundle, Some(CONTENT), Some(&stranger)).map_err(|e| e.step()),
        Err(Step::Signature)
    );
    assert_eq!(
        verify_bundle(&bundle, Some(CONTENT), Some(&[])).map_err(|e| e.step()),
        Err(Step::Signature)
    );
}

#[test]
fn without_content_warns() {
    let report = verify_bundle(&sample(), None, None).expect("verify");
    assert!(!report.content_checked);
    assert_eq!(report.warnings.len(), 2);
    assert!(!report.passed.iter().any(|p| p.step == Step::ContentHash));
}

#[test]
fn json_round_trip_and_format_errors() {
    let bundle = sample();
    assert_eq!(
        ProofBundle::from_json(&bundle.to_json()),
        Ok(bundle.clone())
    );
    assert!(!bundle.to_json().contains("TEST-ONLY sample content"));
    for bad in ["", "{}", "[]", "null", "{\"format\": 1}"] {
        assert!(matches!(
            ProofBundle::from_json(bad),
            Err(VerifyError::Format(_))
        ));
    }
    let extra = bundle.to_json().replacen('{', "{\"extra\": 1,", 1);
    assert!(matches!(
        ProofBundle::from_json(&extra),
        Err(VerifyError::Format(_))
    ));
    let mut wrong = bundle.clone();
    wrong.format = "chartbridge-proof-bundle/v3".into();
    assert_eq!(step_of(&wrong, Some(CONTENT)), Some(Step::Format));
    // A v1 leaf under the v2 format (which needs a v2 leaf and a salt).
    let mut wrong = bundle;
    wrong.format = "chartbridge-proof-bundle/v2".into();
    assert_eq!(step_of(&wrong, Some(CONTENT)), Some(Step::LeafData));
}

#[test]
fn any_content_byte_flip_fails_content_hash() {
    let bundle = sample();
    for i in 0..CONTENT.len() {
        let mut content = CONTENT.to_vec();
        content[i] ^= 0x04;
        assert_eq!(step_of(&bundle, Some(&content)), Some(Step::ContentHash));
    }
    assert_eq!(step_of(&bundle, Some(b"")), Some(Step::ContentHash));
}

#[test]
fn any_leaf_data_byte_flip_fails_leaf_data() {
    let bundle = sample();
    let raw = STANDARD.decode(&bundle.leaf_data).expect("b64");
    for i in 0..raw.len() {
        for mask in [0x01, 0x20, 0x80] {
            let mut bad = raw.clone();
            bad[i] ^= mask;
            let mut b = bundle.clone();
            b.leaf_data = STANDARD.encode(&bad);
            assert_eq!(step_of(&b, Some(CONTENT)), Some(Step::LeafData), "{i}");
        }
    }
    let mut b = bundle.clone();
    b.leaf_data.push('!');
    assert_eq!(step_of(&b, Some(CONTENT)), Some(Step::LeafData));
    let mut b = bundle;
    let LeafSummary::V1(summary) = &mut b.leaf else {
        panic!("a v1 sample")
    };
    summary.message = "whatsapp:wamid.OTHER".into();
    assert_eq!(step_of(&b, Some(CONTENT)), Some(Step::LeafData));
}

#[test]
fn any_path_byte_flip_fails_inclusion() {
    let bundle = sample();
    for k in 0..bundle.inclusion_path.len() {
        let raw = STANDARD.decode(&bundle.inclusion_path[k]).expect("b64");
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x40;
            let mut b = bundle.clone();
            b.inclusion_path[k] = STANDARD.encode(&bad);
            assert_eq!(step_of(&b, Some(CONTENT)), Some(Step::Inclusion));
        }
    }
    let mut b = bundle.clone();
    b.inclusion_path.pop();
    assert_eq!(step_of(&b, Some(CONTENT)), Some(Step::Inclusion));
    let mut b = bundle.clone();
    b.inclusion_path[0] = "AAAA".into();
    assert_eq!(step_of(&b, Some(CONTENT)), Some(Step::Inclusion));
    let mut b = bundle.clone();
    b.leaf_index = 3;
    assert_eq!(step_of(&b, Some(CONTENT)), Some(Step::Inclusion));
    let mut b = bundle;
    b.tree_size = 8;
    assert_eq!(step_of(&b, Some(CONTENT)), Some(Step::Inclusion));
}

#[test]
fn any_checkpoint_root_byte_flip_fails_inclusion() {
    let bundle = sample();
    let (text, sigs) = split_note(&bundle.checkpoint);
    let cp = Checkpoint::parse(&text).expect("body");
    for i in 0..32 {
        let mut bad = cp.clone();
        bad.root[i] ^= 0x02;
        let mut b = bundle.clone();
        b.checkpoint = format!("{}{sigs}", bad.to_body());
        assert_eq!(step_of(&b, Some(CONTENT)), Some(Step::Inclusion));
    }
}

#[test]
fn checkpoint_tampering_fails_at_the_right_step() {
    let bundle = sample();
    let (text, sigs) = split_note(&bundle.checkpoint);
    let mut b = bundle.clone();
    b.checkpoint = format!("{}{sigs}", text.replace("\n7\n", "\n07\n"));
    assert_eq!(step_of(&b, Some(CONTENT)), Some(Step::Checkpoint));
    let mut b = bundle.clone();
    b.checkpoint = text.clone();
    assert_eq!(step_of(&b, Some(CONTENT)), Some(Step::Checkpoint));
    let mut no_ts = Checkpoint::parse(&text).expect("body");
    no_ts.timestamp_ms = None;
    let mut b = bundle.clone();
    b.checkpoint = no_ts.sign(&[&current_signer()]).expect("sign");
    assert_eq!(step_of(&b, Some(CONTENT)), Some(Step::Checkpoint));
    let mut later = Checkpoint::parse(&text).expect("body");
    later.timestamp_ms = Some(T0 + 1);
    let mut b = bundle;
    b.checkpoint = format!("{}{sigs}", later.to_body());
    assert_eq!(step_of(&b, Some(CONTENT)), Some(Step::Signature));
}

#[test]
fn any_signature_byte_flip_fails_signature() {
    let bundle = sample();
    let (text, sigs) = split_note(&bundle.checkpoint);
    let line = sigs.trim_start_matches('\n').trim_end();
    let (prefix, b64) = line.rsplit_once(' ').expect("sig line");
    let raw = STANDARD.decode(b64).expect("b64");
    for i in 0..raw.len() {
        let mut bad = raw.clone();
        bad[i] ^= 0x10;
        let mut b = bundle.clone();
        b.checkpoint = format!("{text}\n{prefix} {}\n", STANDARD.encode(&bad));
        assert_eq!(step_of(&b, Some(CONTENT)), Some(Step::Signature), "{i}");
    }
}

#[test]
fn key_policy_steps() {
    let bundle = sample();
    let mut revoked = keys();
    revoked[1].revoked_at_ms = Some(T0 - 1);
    assert_eq!(
        verify_bundle(&bundle, Some(CONTENT), Some(&revoked)).map_err(|e| e.step()),
        Err(Step::KeyRevoked)
    );
    let mut b = bundle.clone();
    b.keys = revoked;
    assert_eq!(step_of(&b, Some(CONTENT)), Some(Step::KeyRevoked));
    let mut later_revoked = keys();
    later_revoked[1].revoked_at_ms = Some(T0 + 1);
    assert!(verify_bundle(&bundle, Some(CONTENT), Some(&later_revoked)).is_ok());
    let mut expired = keys();
    expired[1].valid_until_ms = Some(T0);
    assert_eq!(
        verify_bundle(&bundle, Some(CONTENT), Some(&expired)).map_err(|e| e.step()),
        Err(Step::KeyNotValid)
    );
    let mut future = keys();
    future[1].valid_from_ms = T0 + 1;
    assert_eq!(
        verify_bundle(&bundle, Some(CONTENT), Some(&future)).map_err(|e| e.step()),
        Err(Step::KeyNotValid)
    );
    let mut mislabelled = keys();
    mislabelled[1].key_id = "deadbeef".into();
    assert_eq!(
        verify_bundle(&bundle, Some(CONTENT), Some(&mislabelled)).map_err(|e| e.step()),
        Err(Step::Signature)
    );
}

#[test]
fn fixtures_match_sample() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/proofs");
    let json = format!("{}\n", sample().to_json());
    let vkey = format!("{}\n", current_signer().verifier());
    if std::env::var_os("CHARTBRIDGE_WRITE_FIXTURES").is_some() {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(format!("{dir}/sample-bundle.json"), &json).expect("write");
        std::fs::write(format!("{dir}/sample-content.bin"), CONTENT).expect("write");
        std::fs::write(format!("{dir}/sample.vkey"), &vkey).expect("write");
    }
    let read = |name: &str| std::fs::read(format!("{dir}/{name}")).expect("fixture");
    assert_eq!(
        String::from_utf8(read("sample-bundle.json")).ok(),
        Some(json)
    );
    assert_eq!(read("sample-content.bin"), CONTENT);
    assert_eq!(
        String::from_utf8(read("sample.vkey")).ok(),
        Some(vkey.clone())
    );
    let bundle = ProofBundle::from_json(&String::from_utf8_lossy(&read("sample-bundle.json")))
        .expect("parse");
    let trusted = KeyInfo::new(&Verifier::parse(vkey.trim_end()).expect("vkey"), 0);
    assert!(verify_bundle(&bundle, Some(CONTENT), Some(&[trusted])).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn mutated_json_never_panics(pos in any::<usize>(), c in any::<char>()) {
        let mut chars: Vec<char> = sample().to_json().chars().collect();
        let i = pos % chars.len();
        chars[i] = c;
        let json: String = chars.into_iter().collect();
        if let Ok(b) = ProofBundle::from_json(&json) {
            let _ = verify_bundle(&b, Some(CONTENT), None);
        }
    }

    #[test]
    fn arbitrary_json_never_panics(s in "(?s).{0,400}") {
        if let Ok(b) = ProofBundle::from_json(&s) {
            let _ = verify_bundle(&b, None, None);
        }
    }

    #[test]
    fn arbitrary_fields_never_panic(
        leaf_index in any::<u64>(),
        tree_size in any::<u64>(),
        path in proptest::collection::vec("[A-Za-z0-9+/=]{0,50}", 0..80),
        checkpoint in "(?s).{0,200}",
    ) {
        let mut b = sample();
        b.leaf_index = leaf_index;
        b.tree_size = tree_size;
        b.inclusion_path = path;
        let _ = verify_bundle(&b, Some(CONTENT), None);
        b.checkpoint = checkpoint;
        let _ = verify_bundle(&b, Some(CONTENT), None);
    }
}

#[path = "bundle_v2_tests.rs"]
mod v2;
