//! Media above `kis.binary_upload_threshold` against the real FHIR server:
//! downloaded from the media API stand-in into a spool, uploaded as a
//! Binary of their own (`PUT Binary/{id}`, streamed) before the
//! transaction, read back by hash, proven; re-uploaded to the same id after
//! a failed transaction; and quarantined when the Binary reads back
//! altered.

mod common;

use chartbridge::prove::bundle::verify_bundle;
use chartbridge::prove::checkpoint::KeyInfo;
use chartbridge::prove::service::{self, CheckOutcome, ProofTarget};
use chartbridge::store::{MessageState, millis};
use common::standins::{self, Fault, FaultProxy, MediaApi, Medium};
use common::{Harness, fhir_url};
use serde_json::{Value, json};
use sha2::Digest;

const MEDIA_ID: &str = "large-clip-1";
const SIZE: usize = 20 * 1024 * 1024;

fn now_ms() -> i64 {
    millis(chrono::Utc::now())
}

/// A canonical event referencing `MEDIA_ID` (video/mp4, declared size and
/// SHA-256) in the fixtures' case.
fn event(h: &Harness, bytes: &[u8]) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&h.fixture("events/image-canonical.json")).unwrap();
    v["media"] = json!({
        "mime_type": "video/mp4",
        "file_name": "clip.mp4",
        "size": bytes.len(),
        "sha256": hex::encode(sha2::Sha256::digest(bytes)),
        "reference": MEDIA_ID,
    });
    v.as_object_mut().unwrap().remove("part");
    serde_json::to_vec(&v).unwrap()
}

/// A harness through `proxy` with the medium served, media up to 64 MiB,
/// spooled in `spool`.
async fn harness(proxy: &FaultProxy, bytes: &[u8], spool: &std::path::Path) -> Harness {
    let media = MediaApi::start().await;
    media.put(
        MEDIA_ID,
        Medium {
            bytes: bytes.to_vec(),
            mime_type: "video/mp4".into(),
        },
    );
    let mut h = Harness::new(Some(&proxy.url), Some(&media.url)).await;
    allow_large(&mut h, spool);
    h.seed_patient("P-1001").await;
    h
}

/// Media up to 64 MiB (the harness allows 1 MiB), spooled in `spool`;
/// the default threshold of 1 MiB.
fn allow_large(h: &mut Harness, spool: &std::path::Path) {
    h.config.media.max_bytes = 64 * 1024 * 1024;
    h.config.media.spool_dir = Some(spool.to_path_buf());
    h.config.kis.timeout = std::time::Duration::from_secs(120);
    assert_eq!(h.config.kis.binary_upload_threshold, 1024 * 1024);
}

async fn quarantined_detail(h: &Harness, key: &chartbridge::event::MessageKey) -> String {
    let (_, _, detail) = h.store.quarantine_detail(key).await.unwrap().unwrap();
    let named = h.store.message_ref(key).unwrap();
    let place = chartbridge::store::sealed::quarantine_detail(&named);
    String::from_utf8(h.sealer.open(&place, &detail.unwrap()).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_medium_is_uploaded_as_its_own_binary_reuploaded_after_a_failure_and_proven() {
    let bytes = standins::clip(SIZE);
    let spool = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start(&fhir_url()).await;
    // The first transaction fails after the Binary was uploaded: the retry
    // uploads to the same id again (PUT is idempotent) and archives once.
    proxy.inject([Fault::Status(503)]);
    let mut h = harness(&proxy, &bytes, spool.path()).await;
    let key_path = h.add_proofs_config("0 0 0 1 1 *");
    let signer = service::generate_signer_file("test-log", &key_path).unwrap();
    h.store
        .add_signing_key(&KeyInfo::new(&signer.verifier(), now_ms()), now_ms())
        .await
        .unwrap();
    allow_large(&mut h, spool.path());
    let worker = h.start_worker();
    h.publish(&event(&h, &bytes)).await;
    let key = h.key("matrix", "$msg-0002");
    let archived = h.wait_state(&key, MessageState::Archived).await;
    worker.stop().await;
    assert_eq!(*proxy.injected.lock().unwrap(), 1, "the fault was used");
    let doc_ref = archived.resource.unwrap();
    assert_eq!(
        h.kis_ids("DocumentReference", &key).await,
        std::slice::from_ref(&doc_ref)
    );

    // The DocumentReference points at the Binary uploaded under the stable id.
    let binary_ref = format!("Binary/{}", chartbridge::map::stable_id(&key, "Binary"));
    let doc = h.kis.read(&doc_ref).await.unwrap();
    let attachment = &doc["content"][0]["attachment"];
    assert_eq!(attachment["url"], binary_ref.as_str());
    assert_eq!(attachment["size"], SIZE);
    assert_eq!(
        chartbridge::map::sha256_extension(&attachment["extension"]),
        Some(hex::encode(sha2::Sha256::digest(&bytes)).as_str())
    );
    // The KIS holds exactly the bytes (read as FHIR JSON here, and as a
    // stream by the client), in one Binary written twice.
    assert!(
        h.kis_content(&doc_ref).await == bytes,
        "Binary.data differs"
    );
    let streamed = h.kis.read_binary(&binary_ref, "video/mp4").await.unwrap();
    assert_eq!(streamed.len, SIZE as u64);
    assert_eq!(
        streamed.hashes,
        chartbridge::prove::ContentHashes::of(&bytes)
    );
    let held = h.kis.read(&binary_ref).await.unwrap();
    assert_eq!(held["contentType"], "video/mp4");
    assert_eq!(
        held["securityContext"]["reference"],
        doc["subject"]["reference"]
    );
    let version: u32 = held["meta"]["versionId"].as_str().unwrap().parse().unwrap();
    assert!(version >= 2, "uploaded twice to one id (version {version})");

    // The proof leaf's content hash is the archived bytes' SHA-256.
    let origin = h.config.proofs.origin.clone();
    service::sign_checkpoint(&h.store, &signer, &origin, now_ms())
        .await
        .unwrap()
        .expect("the log grew");
    let bundle = service::export_bundle(
        &h.store,
        &ProofTarget::resource(&doc_ref).unwrap(),
        (None, &h.sealer.proof_keys()),
        &origin,
        now_ms(),
    )
    .await
    .unwrap();
    let keys = h.store.signing_keys().await.unwrap();
    let report = verify_bundle(&bundle, Some(&bytes), Some(&keys)).unwrap();
    assert!(report.content_checked);
    let mut flipped = bytes.clone();
    flipped[SIZE / 2] ^= 1;
    assert!(verify_bundle(&bundle, Some(&flipped), Some(&keys)).is_err());
    let r = service::verify_against_kis(&h.kis, &doc_ref, (&h.store, &h.sealer.proof_keys()))
        .await
        .unwrap();
    assert!(
        r.checks.iter().all(|c| c.outcome == CheckOutcome::Pass),
        "{}",
        r.human()
    );
    // The deletion is released, and the spool left nothing behind.
    assert!(h.store.deletion_state(&key).await.unwrap().is_some());
    assert_eq!(std::fs::read_dir(spool.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_binary_that_reads_back_altered_is_quarantined_without_deletion() {
    let bytes = standins::clip(2 * 1024 * 1024 + 1);
    let spool = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start(&fhir_url()).await;
    proxy.tamper_reads(1);
    let h = harness(&proxy, &bytes, spool.path()).await;
    let worker = h.start_worker();
    h.publish(&event(&h, &bytes)).await;
    let key = h.key("matrix", "$msg-0002");
    let got = h.wait_state(&key, MessageState::Quarantined).await;
    worker.stop().await;
    assert_eq!(proxy.tamper_pending(), 0, "the Binary read was altered");
    assert_eq!(got.reason, "kis_read_back_mismatch");
    assert_eq!(
        quarantined_detail(&h, &key).await,
        "mismatch: Binary.data sha256"
    );
    assert_eq!(h.store.deletion_state(&key).await.unwrap(), None);
    assert!(h.deletion_commands().await.is_empty());
    assert_eq!(h.store.log_size().await.unwrap(), 0);
}
