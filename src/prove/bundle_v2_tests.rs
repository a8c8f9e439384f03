//! Bundles of `chartbridge-leaf/v2` records: the sample fixture, content
//! and received original, tampering.

use super::*;
use crate::event::MessageKey;
use crate::prove::leaf_v2::{Leaf, LeafRecordV2};
use crate::prove::pseudonym::ProofKeys;

const ARCHIVED: &[u8] =
    b"TEST-ONLY archived content (metadata removed) for the v2 proof bundle fixture.\n";
const RECEIVED: &[u8] =
    b"TEST-ONLY received content (with metadata) for the v2 proof bundle fixture.\n";

fn proof_keys() -> ProofKeys {
    let k = |label: &str| -> [u8; 32] { Sha256::digest(label.as_bytes()).into() };
    ProofKeys::new(
        k("chartbridge TEST-ONLY message-token key"),
        k("chartbridge TEST-ONLY content-salt key"),
    )
}

fn key(i: u64) -> MessageKey {
    MessageKey {
        source: "whatsapp".into(),
        message_id: format!("wamid.TEST{i:04}"),
    }
}

fn leaf(i: u64) -> Leaf {
    if i != 2 {
        return Leaf::V1(record(i));
    }
    let sha = |b: &[u8]| -> [u8; 32] { Sha256::digest(b).into() };
    Leaf::V2(
        LeafRecordV2::for_message(
            &proof_keys(),
            &key(i),
            (&sha(ARCHIVED), &sha(RECEIVED)),
            "metadata-removed",
            ("DocumentReference/test-2", T0 - 5 * 60_000),
        )
        .expect("record"),
    )
}

fn sample_v2() -> ProofBundle {
    let mut log = MemoryLog::new();
    for i in 0..7 {
        log.append(&leaf(i).encode());
    }
    let root = log.root(7).expect("root");
    let note = Checkpoint::new(ORIGIN, 7, root, T0)
        .sign(&[&current_signer()])
        .expect("sign");
    let path = log.inclusion_proof(2, 7).expect("path");
    let Leaf::V2(r) = leaf(2) else { unreachable!() };
    let salt = proof_keys().salt(&r.message_token);
    ProofBundle::of(&leaf(2), Some(salt), (2, 7), &path, &note, keys())
}

#[test]
fn v2_bundle_verifies_archived_and_received_content_and_names_no_message() {
    let b = sample_v2();
    assert_eq!(b.format, BUNDLE_FORMAT_V2);
    let json = b.to_json();
    assert!(!json.contains("wamid"), "{json}");
    let report = verify_bundle(&b, Some(ARCHIVED), None).expect("archived");
    assert!(report.passed[2].detail.contains("the archived content"));
    let report = verify_bundle(&b, Some(RECEIVED), None).expect("received");
    assert!(report.passed[2].detail.contains("before metadata-removed"));
    assert_eq!(
        verify_bundle(&b, Some(b"other"), None).map_err(|e| e.step()),
        Err(Step::ContentHash)
    );
    let mut salted = b.clone();
    salted.content_salt = Some("00".repeat(32));
    assert_eq!(
        verify_bundle(&salted, Some(ARCHIVED), None).map_err(|e| e.step()),
        Err(Step::ContentHash)
    );
    for broken in [
        ProofBundle {
            content_salt: None,
            ..b.clone()
        },
        ProofBundle {
            format: BUNDLE_FORMAT.into(),
            ..b.clone()
        },
    ] {
        assert_eq!(
            verify_bundle(&broken, Some(ARCHIVED), None).map_err(|e| e.step()),
            Err(Step::LeafData)
        );
    }
    // A v1 bundle from the same log still verifies.
    let v1 = sample();
    assert!(verify_bundle(&v1, Some(CONTENT), None).is_ok());
}

#[test]
fn fixtures_match_sample_v2() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/proofs");
    let json = format!("{}\n", sample_v2().to_json());
    if std::env::var_os("CHARTBRIDGE_WRITE_FIXTURES").is_some() {
        std::fs::write(format!("{dir}/sample-v2-bundle.json"), &json).expect("write");
        std::fs::write(format!("{dir}/sample-v2-content.bin"), ARCHIVED).expect("write");
        std::fs::write(format!("{dir}/sample-v2-received.bin"), RECEIVED).expect("write");
    }
    let read = |name: &str| std::fs::read(format!("{dir}/{name}")).expect("fixture");
    assert_eq!(
        String::from_utf8(read("sample-v2-bundle.json")).ok(),
        Some(json)
    );
    assert_eq!(read("sample-v2-content.bin"), ARCHIVED);
    assert_eq!(read("sample-v2-received.bin"), RECEIVED);
}
