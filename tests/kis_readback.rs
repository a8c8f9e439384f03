//! Read-back check against the real FHIR server: the stored resource and
//! Binary are read back and compared before the deletion is released. A
//! fault proxy alters what the KIS answers (DSK I.10): the stored resources
//! its transaction-response returns (the default source of the read-back),
//! or, with `kis.read_back_from_response = false`, what a read returns.

mod common;

use chartbridge::store::MessageState;
use common::standins::FaultProxy;
use common::{Harness, fhir_url};

async fn quarantined_detail(h: &Harness, key: &chartbridge::event::MessageKey) -> String {
    let (_, _, detail) = h.store.quarantine_detail(key).await.unwrap().unwrap();
    let named = h.store.message_ref(key).unwrap();
    let place = chartbridge::store::sealed::quarantine_detail(&named);
    String::from_utf8(h.sealer.open(&place, &detail.unwrap()).unwrap()).unwrap()
}

/// Publishes `fixture` through a proxy that alters the stored content once
/// (in the transaction-response, or on read with `from_response = false`)
/// and returns the quarantine detail, after checking that nothing was
/// released.
async fn altered(fixture: &str, id: &str, from_response: bool) -> String {
    let proxy = FaultProxy::start(&fhir_url()).await;
    if from_response {
        proxy.tamper_answers(1);
    } else {
        proxy.tamper_reads(1);
    }
    let mut h = Harness::new(Some(&proxy.url), None).await;
    assert!(h.config.kis.read_back, "read-back is on by default");
    assert!(
        h.config.kis.read_back_from_response,
        "from the answer by default"
    );
    h.config.kis.read_back_from_response = from_response;
    h.seed_patient("P-1001").await;
    let worker = h.start_worker();
    h.publish(&h.fixture(fixture)).await;
    let key = h.key("matrix", id);
    let got = h.wait_state(&key, MessageState::Quarantined).await;
    worker.stop().await;
    assert_eq!(got.reason, "kis_read_back_mismatch");
    // No deletion, no leaf: the messenger copy stays.
    assert_eq!(h.store.deletion_state(&key).await.unwrap(), None);
    assert!(h.deletion_commands().await.is_empty());
    assert_eq!(h.store.log_size().await.unwrap(), 0);
    assert_eq!(proxy.tamper_pending() + proxy.tamper_answers_pending(), 0);
    quarantined_detail(&h, &key).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_read_back_of_altered_binary_quarantines_without_deletion() {
    for from_response in [true, false] {
        assert_eq!(
            altered("events/image-canonical.json", "$msg-0002", from_response).await,
            "mismatch: Binary.data sha256",
            "from_response = {from_response}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_read_back_of_altered_text_quarantines_without_deletion() {
    for from_response in [true, false] {
        assert_eq!(
            altered("events/text-canonical.json", "$msg-0001", from_response).await,
            "mismatch: payload.contentString sha256",
            "from_response = {from_response}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_read_back_unaltered_archives_and_off_skips_the_reads() {
    // Unaltered: the same proxy path archives and releases the deletion.
    let proxy = FaultProxy::start(&fhir_url()).await;
    let h = Harness::new(Some(&proxy.url), None).await;
    h.seed_patient("P-1001").await;
    let worker = h.start_worker();
    h.publish(&h.fixture("events/image-canonical.json")).await;
    let key = h.key("matrix", "$msg-0002");
    h.wait_state(&key, MessageState::Archived).await;
    h.expect_deletions(1).await;
    worker.stop().await;
    // The FHIR server returned the stored resources in its
    // transaction-response: nothing was read again.
    assert_eq!(
        *proxy.reads.lock().unwrap(),
        0,
        "no read after the transaction"
    );
    assert_eq!(h.kis_ids("DocumentReference", &key).await.len(), 1);

    // read_back = false: a KIS without reads; the altered read is never
    // made, so the archive rests on the 2xx alone (the weaker guarantee).
    let proxy = FaultProxy::start(&fhir_url()).await;
    proxy.tamper_reads(1);
    let mut h = Harness::new(Some(&proxy.url), None).await;
    h.config.kis.read_back = false;
    h.seed_patient("P-1001").await;
    let worker = h.start_worker();
    h.publish(&h.fixture("events/image-canonical.json")).await;
    let key = h.key("matrix", "$msg-0002");
    h.wait_state(&key, MessageState::Archived).await;
    h.expect_deletions(1).await;
    worker.stop().await;
    assert_eq!(
        proxy.tamper_pending(),
        1,
        "no Binary or Communication was read back"
    );
}

/// What is deleted with the messenger copy beside the content is read back
/// too: a KIS that keeps a medium's caption (`DocumentReference.description`)
/// cut short holds the message, no deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i10_read_back_of_a_cut_caption_quarantines_without_deletion() {
    let proxy = FaultProxy::start(&fhir_url()).await;
    proxy.tamper_captions(1);
    let h = Harness::new(Some(&proxy.url), None).await;
    h.seed_patient("P-1001").await;
    let worker = h.start_worker();
    h.publish(&h.fixture("events/image-canonical.json")).await;
    let key = h.key("matrix", "$msg-0002");
    let got = h.wait_state(&key, MessageState::Quarantined).await;
    worker.stop().await;
    assert_eq!(got.reason, "kis_read_back_mismatch");
    assert_eq!(h.store.deletion_state(&key).await.unwrap(), None);
    assert!(h.deletion_commands().await.is_empty());
    assert_eq!(quarantined_detail(&h, &key).await, "mismatch: description");
}
