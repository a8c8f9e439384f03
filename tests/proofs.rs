//! Hash proofs end to end: archive through the real pipeline (RabbitMQ, the
//! real FHIR server, SQLite), sign checkpoints, export bundles, verify them
//! against the bytes read back from the KIS, and run the CLI.
//! Test names start with the DSK requirement they show.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chartbridge::prove::bundle::{LeafSummary, Step, TrustSource, verify_bundle};
use chartbridge::prove::checkpoint::{Checkpoint, KeyInfo};
use chartbridge::prove::merkle::{Hash, verify_consistency};
use chartbridge::prove::service::{self, CheckOutcome, ProofTarget, ServiceError};
use chartbridge::store::{MessageState, millis};
use common::{Harness, wait_until};
use serde_json::Value;

fn now_ms() -> i64 {
    millis(chrono::Utc::now())
}

/// The text fixture under another message id, so one run archives it twice.
fn another_text(h: &Harness, id: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&h.fixture("events/text-canonical.json")).unwrap();
    v["message_id"] = format!("{id}-{}", h.run).into();
    v["event_id"] = format!("evt-{id}-{}", h.run).into();
    serde_json::to_vec(&v).unwrap()
}

fn hash(b64: &str) -> Hash {
    STANDARD.decode(b64).unwrap().try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ii2_bundle_verifies_against_kis_content() {
    let mut h = Harness::new(None, None).await;
    h.seed_patient("P-1001").await;
    // A schedule that does not fire during the test: this test signs itself.
    let key_path = h.add_proofs_config("0 0 0 1 1 *");
    let signer = service::generate_signer_file("test-log", &key_path).unwrap();
    let registered = KeyInfo::new(&signer.verifier(), now_ms());
    assert!(
        h.store
            .add_signing_key(&registered, now_ms())
            .await
            .unwrap()
    );
    let origin = h.config.proofs.origin.clone();

    let worker = h.start_worker();
    h.publish(&h.fixture("events/text-canonical.json")).await;
    h.publish(&h.fixture("events/image-canonical.json")).await;
    let text = h.key("matrix", "$msg-0001");
    let image = h.key("matrix", "$msg-0002");
    let comm_ref = h
        .wait_state(&text, MessageState::Archived)
        .await
        .resource
        .unwrap();
    let doc_ref = h
        .wait_state(&image, MessageState::Archived)
        .await
        .resource
        .unwrap();

    // No checkpoint covers the leaves yet, and no signer is given: a clear error.
    let err = service::export_bundle(
        &h.store,
        &ProofTarget::Message(image.clone()),
        (None, &h.sealer.proof_keys()),
        &origin,
        now_ms(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ServiceError::NotCovered(_)), "{err}");

    let first = service::sign_checkpoint(&h.store, &signer, &origin, now_ms())
        .await
        .unwrap()
        .expect("the log grew");
    assert_eq!(first.size, 2);
    assert!(
        service::sign_checkpoint(&h.store, &signer, &origin, now_ms())
            .await
            .unwrap()
            .is_none(),
        "signed although the log did not grow"
    );

    let bundle = service::export_bundle(
        &h.store,
        &ProofTarget::resource(&doc_ref).unwrap(),
        (None, &h.sealer.proof_keys()),
        &origin,
        now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(bundle.leaf.resource(), doc_ref);
    // A v2 leaf: the message as its keyed token, no messenger id in the bundle.
    let LeafSummary::V2(summary) = &bundle.leaf else {
        panic!("not a v2 leaf: {:?}", bundle.leaf)
    };
    assert_eq!(
        summary.message_token,
        hex::encode(h.sealer.proof_keys().message_token(&image))
    );
    assert!(!bundle.to_json().contains(&image.message_id));
    assert_eq!(bundle.checkpoint, first.note);

    // Verify against the bytes the KIS holds, trusting only the registered key.
    let bytes = h.kis_content(&doc_ref).await;
    let keys = h.store.signing_keys().await.unwrap();
    let report = verify_bundle(&bundle, Some(&bytes), Some(&keys)).unwrap();
    assert_eq!(report.trust, TrustSource::Operator);
    assert!(report.content_checked);
    assert_eq!(report.tree_size, 2);
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x01;
    let err = verify_bundle(&bundle, Some(&flipped), Some(&keys)).unwrap_err();
    assert_eq!(err.step(), Step::ContentHash, "{err}");

    // The KIS's own declared hashes, the ledger and the log agree.
    for resource in [&doc_ref, &comm_ref] {
        let r = service::verify_against_kis(&h.kis, resource, (&h.store, &h.sealer.proof_keys()))
            .await
            .unwrap();
        assert!(
            r.checks.iter().all(|c| c.outcome == CheckOutcome::Pass),
            "{}",
            r.human()
        );
    }
    let comm_bundle = service::export_bundle(
        &h.store,
        &ProofTarget::Message(text.clone()),
        (None, &h.sealer.proof_keys()),
        &origin,
        now_ms(),
    )
    .await
    .unwrap();
    verify_bundle(
        &comm_bundle,
        Some(&h.kis_content(&comm_ref).await),
        Some(&keys),
    )
    .unwrap();

    // One more archive, a second checkpoint, and a consistency proof between them.
    h.publish(&another_text(&h, "$msg-0009")).await;
    h.wait_state(&h.key("matrix", "$msg-0009"), MessageState::Archived)
        .await;
    worker.stop().await;
    let second = service::sign_checkpoint(&h.store, &signer, &origin, now_ms())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.size, 3);
    let proof = service::consistency(&h.store, first.size, second.size)
        .await
        .unwrap();
    assert_eq!(proof.first_checkpoint.as_deref(), Some(first.note.as_str()));
    assert_eq!(
        proof.second_checkpoint.as_deref(),
        Some(second.note.as_str())
    );
    let old = Checkpoint::from_note_unverified(&first.note).unwrap();
    let new = Checkpoint::from_note_unverified(&second.note).unwrap();
    let hashes: Vec<Hash> = proof.proof.iter().map(|p| hash(p)).collect();
    verify_consistency(old.size, new.size, &old.root, &new.root, &hashes).unwrap();
    assert!(service::consistency(&h.store, 3, 2).await.is_err());

    // The older bundle still verifies; exports keep using the smallest checkpoint.
    verify_bundle(&bundle, Some(&bytes), Some(&keys)).unwrap();
    let again = service::export_bundle(
        &h.store,
        &ProofTarget::Message(image),
        (None, &h.sealer.proof_keys()),
        &origin,
        now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(again.tree_size, 2);
}

fn cli(h: &Harness, args: &[&str]) -> Output {
    h.cli(args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i12_cli_exports_and_verifies_a_bundle() {
    let mut h = Harness::new(None, None).await;
    h.seed_patient("P-1001").await;
    // The worker signs every second (DSK I.5: key from the file the config names).
    h.add_proofs_config("* * * * * *");
    let out = cli(&h, &["keygen-signing", "--name", "cli-test"]);
    assert!(out.status.success(), "{out:?}");
    let vkey = stdout(&out).trim().to_owned();
    assert!(vkey.starts_with("cli-test+"), "{vkey}");
    let dir = h.dir.path().to_owned();
    std::fs::write(dir.join("log.vkey"), format!("{vkey}\n")).unwrap();
    let out = cli(&h, &["keygen-signing", "--name", "cli-test"]);
    assert_eq!(out.status.code(), Some(1), "overwrote a key file");

    let worker = h.start_worker();
    h.publish(&h.fixture("events/image-canonical.json")).await;
    let image = h.key("matrix", "$msg-0002");
    let doc_ref = h
        .wait_state(&image, MessageState::Archived)
        .await
        .resource
        .unwrap();
    wait_until(
        Duration::from_secs(30),
        "the worker to sign a checkpoint",
        || async {
            h.store
                .latest_checkpoint()
                .await
                .unwrap()
                .is_some_and(|c| c.size >= 1)
        },
    )
    .await;

    let bundle_path = dir.join("bundle.json");
    let out = cli(
        &h,
        &[
            "proof",
            "export",
            "--message-id",
            &image.to_string(),
            "--out",
            bundle_path.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    // Both the key rotation and the export are in the audit trail, as the
    // account that ran them, without the message id.
    let rotations = common::audit_rows(&h, "signing-key.rotate").await;
    assert_eq!(
        rotations.len(),
        1,
        "the refused second keygen is not recorded"
    );
    let exports = common::audit_rows(&h, "proof.export").await;
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0].actor, common::os_actor());
    assert!(
        exports[0].target.starts_with("leaf 0 tree-size "),
        "{exports:?}"
    );
    assert!(!exports[0].target.contains(&image.message_id));
    let content = h.kis_content(&doc_ref).await;
    std::fs::write(dir.join("content.bin"), &content).unwrap();
    let mut flipped = content.clone();
    flipped[0] ^= 0x80;
    std::fs::write(dir.join("flipped.bin"), &flipped).unwrap();

    let verify = |content: &str, json: bool| {
        let path = |p: &Path| p.to_str().unwrap().to_owned();
        let mut args = vec![
            "verify".to_owned(),
            "--bundle".into(),
            path(&bundle_path),
            "--content".into(),
            path(&dir.join(content)),
            "--key".into(),
            path(&dir.join("log.vkey")),
        ];
        if json {
            args.push("--json".into());
        }
        cli(&h, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let ok = verify("content.bin", false);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(stdout(&ok).contains("VERIFIED"), "{}", stdout(&ok));
    let bad = verify("flipped.bin", false);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(
        stdout(&bad).contains("FAIL ContentHash"),
        "{}",
        stdout(&bad)
    );
    let machine: Value = serde_json::from_slice(&verify("flipped.bin", true).stdout).unwrap();
    assert_eq!(machine["verified"], false);
    assert_eq!(machine["failed_step"], "ContentHash");
    let machine: Value = serde_json::from_slice(&verify("content.bin", true).stdout).unwrap();
    assert_eq!(machine["verified"], true);
    assert_eq!(machine["report"]["trust"], "Operator");

    // The independent Python verifier agrees, where it can run.
    let python = std::process::Command::new("python3")
        .args(["-c", "import cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    if python {
        let out = std::process::Command::new("python3")
            .arg(common::repo().join("deploy/tools/verify_bundle.py"))
            .arg(&bundle_path)
            .arg("--content")
            .arg(dir.join("content.bin"))
            .arg("--key")
            .arg(dir.join("log.vkey"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    } else {
        eprintln!("python3 with `cryptography` not found: cross-check skipped");
    }

    let kis = cli(&h, &["verify", "--kis", &doc_ref]);
    assert_eq!(kis.status.code(), Some(0), "{kis:?}");
    let audit = cli(&h, &["audit", "--sample", "5"]);
    assert_eq!(audit.status.code(), Some(0), "{audit:?}");
    assert!(stdout(&audit).contains("audited 1, 0 failed"));
    worker.stop().await;

    // Someone alters the Binary in the KIS: verify --kis and audit say so.
    let doc = h.kis.read(&doc_ref).await.unwrap();
    let binary_ref = doc["content"][0]["attachment"]["url"].as_str().unwrap();
    let mut binary = h.kis.read(binary_ref).await.unwrap();
    binary["data"] = STANDARD.encode(&flipped).into();
    let put = reqwest::Client::new()
        .put(format!("{}/{binary_ref}", common::fhir_url()))
        .header("content-type", "application/fhir+json")
        .body(serde_json::to_vec(&binary).unwrap())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{put:?}");
    assert_eq!(h.kis_content(&doc_ref).await, flipped);
    let kis = cli(&h, &["verify", "--kis", &doc_ref]);
    assert_eq!(kis.status.code(), Some(1), "{kis:?}");
    assert!(
        stdout(&kis).contains("FAIL sha256-extension"),
        "{}",
        stdout(&kis)
    );
    assert!(stdout(&kis).contains("FAIL log-leaf"), "{}", stdout(&kis));
    let audit = cli(&h, &["audit", "--sample", "5"]);
    assert_eq!(audit.status.code(), Some(1), "{audit:?}");
    assert!(stdout(&audit).contains("MISMATCH"), "{}", stdout(&audit));
    // Both audits are recorded (the console's log page lists them): the
    // counts, and the altered resource with its failed checks, nothing more.
    let audits = h.store.recent_audit_samples(10).await.unwrap();
    assert_eq!(audits.len(), 2, "{audits:?}");
    let (altered, clean) = (&audits[0], &audits[1]);
    assert_eq!(
        (
            clean.run_by.as_str(),
            clean.checked,
            clean.verified,
            clean.mismatched
        ),
        ("cli", 1, 1, 0)
    );
    assert!(clean.findings.is_empty(), "{clean:?}");
    assert_eq!(
        (
            altered.checked,
            altered.verified,
            altered.mismatched,
            altered.unchecked
        ),
        (1, 0, 1, 0)
    );
    assert!(altered.started_at >= clean.finished_at, "{audits:?}");
    assert_eq!(altered.findings.len(), 1);
    assert_eq!(altered.findings[0].resource, doc_ref);
    for check in ["sha256-extension", "attachment-sha1", "ledger", "log-leaf"] {
        assert!(
            altered.findings[0].failed.iter().any(|f| f == check),
            "{check} not among {:?}",
            altered.findings[0].failed
        );
    }

    let out = cli(&h, &["log", "checkpoint"]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains(&h.config.proofs.origin));
    let out = cli(&h, &["log", "consistency", "--from", "0", "--to", "1"]);
    assert!(out.status.success(), "{out:?}");
    let keys: Value = serde_json::from_slice(&cli(&h, &["keys", "list", "--json"]).stdout).unwrap();
    assert_eq!(keys[0]["verifier_key"], vkey.as_str());
    // Revoked back to 2000: the operator's key list now rejects the bundle.
    let key_id = vkey.split('+').nth(1).unwrap();
    let out = cli(
        &h,
        &[
            "keys",
            "revoke",
            "--key-id",
            key_id,
            "--at",
            "2000-01-01T00:00:00Z",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let list = dir.join("keys.json");
    std::fs::write(&list, cli(&h, &["keys", "list", "--json"]).stdout).unwrap();
    let out = cli(
        &h,
        &[
            "verify",
            "--bundle",
            bundle_path.to_str().unwrap(),
            "--key",
            list.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("FAIL KeyRevoked"), "{}", stdout(&out));
    let missing = cli(&h, &["verify", "--bundle", "/nonexistent/bundle.json"]);
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    let garbage = dir.join("garbage.json");
    std::fs::write(&garbage, b"{not json").unwrap();
    let out = cli(&h, &["verify", "--bundle", garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("FAIL Format"));
}
