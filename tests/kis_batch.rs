//! Batched KIS transactions (`kis.batch_max`, docs/kis-output.md): the
//! Bundles of several messages in one FHIR transaction against the real
//! FHIR server; a message the KIS refuses is isolated by splitting the
//! batch and quarantined alone while the others archive, each exactly once.

mod common;

use chartbridge::config::Config;
use chartbridge::store::MessageState;
use common::standins::FaultProxy;
use common::{Harness, fhir_url};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_transactions_archive_each_message_once_and_isolate_a_refused_one() {
    let proxy = FaultProxy::start(&fhir_url()).await;
    // The KIS refuses any transaction holding this text (a validator
    // refusing one message's content).
    proxy.reject_containing("REFUSED-BY-KIS");
    let mut h = Harness::new(Some(&proxy.url), None).await;
    let text = std::fs::read_to_string(h.config_file()).unwrap().replace(
        "[kis]\n",
        "[kis]\nbatch_max = 8\nbatch_linger = \"300ms\"\n",
    );
    std::fs::write(h.config_file(), &text).unwrap();
    h.config = Config::from_parts(h.config_file(), &text, std::iter::empty()).unwrap();
    h.seed_patient("P-1001").await;

    let template: Value = serde_json::from_slice(&h.fixture("events/text-canonical.json")).unwrap();
    let mut keys = Vec::new();
    for i in 0..12 {
        let mut e = template.clone();
        let id = format!("{}-batch{i}", e["message_id"].as_str().unwrap());
        e["message_id"] = Value::String(id.clone());
        e["event_id"] = Value::String(format!("{}-batch{i}", e["event_id"].as_str().unwrap()));
        if i == 5 {
            e["text"] = Value::String("Befund REFUSED-BY-KIS".into());
        }
        keys.push(chartbridge::event::MessageKey {
            source: "matrix".into(),
            message_id: id,
        });
        h.publish(&serde_json::to_vec(&e).unwrap()).await;
    }
    let worker = h.start_worker();
    for (i, key) in keys.iter().enumerate() {
        let want = if i == 5 {
            MessageState::Quarantined
        } else {
            MessageState::Archived
        };
        let got = h.wait_state(key, want).await;
        if i == 5 {
            assert_eq!(got.reason, "kis_rejected");
        }
    }
    h.expect_deletions(11).await;
    worker.stop().await;

    // One message alone is one transaction of `alone` entries; batches
    // carried more.
    let sizes = proxy.transactions.lock().unwrap().clone();
    let alone = *sizes.iter().min().unwrap();
    assert!(
        sizes.iter().any(|&n| n >= 2 * alone),
        "no transaction carried several messages: {sizes:?}"
    );
    assert!(
        sizes.len() < keys.len() + 4,
        "batching sent nearly one transaction per message: {sizes:?}"
    );
    for (i, key) in keys.iter().enumerate() {
        let found = h.kis_ids("Communication", key).await;
        if i == 5 {
            assert!(found.is_empty(), "the refused message reached the KIS");
            assert_eq!(h.store.deletion_state(key).await.unwrap(), None);
        } else {
            assert_eq!(found.len(), 1, "message {i}: {found:?}");
            let m = h.store.message(key).await.unwrap().unwrap();
            assert_eq!(m.resource.as_deref(), Some(found[0].as_str()));
            assert_ne!(h.store.deletion_state(key).await.unwrap(), None);
        }
    }
}
