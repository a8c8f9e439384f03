//! Split messages end to end (DSK II.2): real RabbitMQ, the real FHIR server
//! (validation on), SQLite. Parts are held until their group is complete or
//! its wait ends; then each part is archived, linked by the group.

mod common;

use std::time::Duration;

use chartbridge::event::MessageKey;
use chartbridge::map::PART_EXTENSION;
use chartbridge::store::MessageState;
use common::{Harness, wait_until};
use serde_json::{Value, json};

/// Part `index` of `count` of this run's group `group`, as a canonical
/// event of the linked ward conversation.
fn part(h: &Harness, group: &str, index: u32, count: u32) -> (Vec<u8>, MessageKey) {
    let mut v: Value = serde_json::from_slice(
        &std::fs::read(common::repo().join("fixtures/events/text-canonical.json")).unwrap(),
    )
    .unwrap();
    let id = format!("$split-{group}-{index}");
    v["message_id"] = json!(id);
    v["event_id"] = json!(format!("evt-{group}-{index}"));
    v["text"] = json!(format!("Befund Teil {index} von {count}"));
    v["part"] = json!({"group_id": format!("{group}-{}", h.run), "index": index, "count": count});
    h.uniquify(&mut v);
    (serde_json::to_vec(&v).unwrap(), h.key("matrix", &id))
}

/// The `message-part` extension of the one Communication of `key`.
async fn archived_part(h: &Harness, key: &MessageKey) -> (Value, Vec<Value>) {
    let ids = h.kis_ids("Communication", key).await;
    assert_eq!(ids.len(), 1, "{key}: one Communication");
    let c = h.kis.read(&ids[0]).await.unwrap();
    let ext = c["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == PART_EXTENSION)
        .expect("part extension")["extension"]
        .as_array()
        .unwrap()
        .clone();
    (c, ext)
}

fn redelivered() -> u64 {
    chartbridge::telemetry::snapshot()
        .iter()
        .filter(|(k, _)| k.contains("state=redelivered"))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ii2_split_group_out_of_order_is_archived_together_once() {
    let h = Harness::new(None, None).await;
    let (patient, _) = h.seed_patient("P-1001").await;
    let worker = h.start_worker();
    let parts: Vec<_> = (1..=3).map(|i| part(&h, "g3", i, 3)).collect();
    h.publish(&parts[2].0).await;
    h.publish(&parts[0].0).await;
    h.publish(&parts[0].0).await;
    wait_until(Duration::from_secs(30), "parts 3 and 1 held", || async {
        h.store.is_held(&parts[0].1).await.unwrap() && h.store.is_held(&parts[2].1).await.unwrap()
    })
    .await;
    for (_, key) in [&parts[0], &parts[2]] {
        assert_eq!(h.state(key).await, None, "{key} waits for its group");
        assert!(h.kis_ids("Communication", key).await.is_empty());
    }
    // Held parts are durable: a restarted worker completes the group.
    worker.stop().await;
    let worker = h.start_worker();

    h.publish(&parts[1].0).await;
    for (_, key) in &parts {
        h.wait_state(key, MessageState::Archived).await;
    }
    let deletions = h.expect_deletions(3).await;
    assert_eq!(deletions.len(), 3);
    let group = json!({"url": "group", "valueString": format!("g3-{}", h.run)});
    for (i, (_, key)) in parts.iter().enumerate() {
        let (c, ext) = archived_part(&h, key).await;
        assert_eq!(c["subject"]["reference"], patient);
        assert!(ext.contains(&group), "{ext:?}");
        assert!(ext.contains(&json!({"url": "index", "valueUnsignedInt": i + 1})));
        assert!(ext.contains(&json!({"url": "count", "valueUnsignedInt": 3})));
        assert_eq!(ext.len(), 3, "no incomplete marker: {ext:?}");
        assert!(c.get("note").is_none());
        assert!(!h.store.is_held(key).await.unwrap());
    }

    // A part delivered again after the release changes nothing.
    let before = redelivered();
    h.publish(&parts[1].0).await;
    wait_until(
        Duration::from_secs(30),
        "the redelivery handled",
        || async { redelivered() > before },
    )
    .await;
    worker.stop().await;
    for (_, key) in &parts {
        assert_eq!(h.kis_ids("Communication", key).await.len(), 1, "{key}");
    }
    assert_eq!(h.store.log_size().await.unwrap(), 3);
    assert!(h.deletion_commands().await.is_empty(), "no second deletion");
    let split = h.store.split_counts().await.unwrap();
    assert_eq!(
        (split.complete, split.incomplete, split.held_parts),
        (1, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ii2_incomplete_group_is_archived_marked_after_the_wait() {
    let mut h = Harness::new(None, None).await;
    h.config.schedule.split_wait = Duration::from_secs(2);
    h.config.schedule.split_sweep = "* * * * * *".parse().unwrap();
    h.seed_patient("P-1001").await;
    let worker = h.start_worker();
    let p1 = part(&h, "g-inc", 1, 3);
    let p2 = part(&h, "g-inc", 2, 3);
    let p3 = part(&h, "g-inc", 3, 3);
    let published = tokio::time::Instant::now();
    h.publish(&p1.0).await;
    h.publish(&p3.0).await;
    wait_until(Duration::from_secs(30), "parts held", || async {
        h.store.is_held(&p1.1).await.unwrap() && h.store.is_held(&p3.1).await.unwrap()
    })
    .await;
    for key in [&p1.1, &p3.1] {
        h.wait_state(key, MessageState::Archived).await;
    }
    assert!(
        published.elapsed() >= Duration::from_secs(2),
        "released before split_wait"
    );
    h.expect_deletions(2).await;
    for key in [&p1.1, &p3.1] {
        let (c, ext) = archived_part(&h, key).await;
        assert!(
            ext.contains(&json!({"url": "complete", "valueBoolean": false})),
            "{ext:?}"
        );
        assert!(
            ext.contains(&json!({"url": "missing", "valueUnsignedInt": 2})),
            "{ext:?}"
        );
        assert_eq!(c["note"][0]["text"], "incomplete: part 2 of 3 missing");
    }

    // Flagged in `status`.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chartbridge"))
        .arg("--config")
        .arg(h.config_file())
        .arg("status")
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{status}");
    assert!(
        status.contains(
            "groups released INCOMPLETE (parts missing; archived parts marked in the KIS) 1"
        ),
        "{status}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chartbridge"))
        .arg("--config")
        .arg(h.config_file())
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["split"]["groups_incomplete"], 1, "{report}");
    assert_eq!(report["proof_log"]["size"], 2, "{report}");

    // The missing part arriving late is archived on its own, with its part extension.
    h.publish(&p2.0).await;
    h.wait_state(&p2.1, MessageState::Archived).await;
    let (c, ext) = archived_part(&h, &p2.1).await;
    assert!(ext.contains(&json!({"url": "index", "valueUnsignedInt": 2})));
    assert!(c.get("note").is_none());
    worker.stop().await;
    assert_eq!(h.store.log_size().await.unwrap(), 3);
}

/// A group released with a part missing whose present parts no rule makes
/// relevant: the missing part may be relevant (and would make every part
/// relevant), so the present part is held `split_incomplete`, sealed, and
/// not deleted on its own rule's say. The late part is archived alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ii2_an_incomplete_group_without_a_relevant_part_is_held_not_deleted() {
    let mut h = Harness::new(None, None).await;
    h.config.schedule.split_wait = Duration::from_secs(2);
    h.config.schedule.split_sweep = "* * * * * *".parse().unwrap();
    h.seed_patient("P-1001").await;
    let worker = h.start_worker();
    let not_relevant = |(payload, key): (Vec<u8>, MessageKey)| {
        let mut v: Value = serde_json::from_slice(&payload).unwrap();
        v["mark"] = json!("not-relevant");
        (serde_json::to_vec(&v).unwrap(), key)
    };
    let p1 = not_relevant(part(&h, "g-held", 1, 3));
    let p2 = not_relevant(part(&h, "g-held", 2, 3));
    let p3 = part(&h, "g-held", 3, 3);
    h.publish(&p1.0).await;
    let held = h.wait_state(&p1.1, MessageState::Quarantined).await;
    assert_eq!(held.reason, "split_incomplete");
    assert_eq!(h.store.deletion_state(&p1.1).await.unwrap(), None);
    // A missing part no rule makes relevant arrives after the release: it
    // is held too, never deleted on its own rule (the group's other parts
    // may be relevant).
    h.publish(&p2.0).await;
    let held = h.wait_state(&p2.1, MessageState::Quarantined).await;
    assert_eq!(held.reason, "split_incomplete");
    assert_eq!(h.store.deletion_state(&p2.1).await.unwrap(), None);
    // Another message claiming index 1, which the group had when it was
    // released: a duplicate part, held.
    let mut again: Value = serde_json::from_slice(&p1.0).unwrap();
    again["message_id"] = json!("$split-g-held-1-again");
    again["event_id"] = json!("evt-g-held-1-again");
    h.uniquify(&mut again);
    let again_key = h.key("matrix", "$split-g-held-1-again");
    h.publish(&serde_json::to_vec(&again).unwrap()).await;
    let held = h.wait_state(&again_key, MessageState::Quarantined).await;
    assert_eq!(held.reason, "split_duplicate_part");
    // The missing part, relevant, arrives late: archived alone; the held
    // parts wait for a person.
    h.publish(&p3.0).await;
    h.wait_state(&p3.1, MessageState::Archived).await;
    for p in [&p1, &p2] {
        assert_eq!(
            h.state(&p.1).await.unwrap().state,
            MessageState::Quarantined
        );
        assert_eq!(h.store.deletion_state(&p.1).await.unwrap(), None);
    }
    // Another message claiming index 1 of a group released complete is
    // a duplicate part: held, not decided alone.
    let done = part(&h, "g-done", 1, 2);
    let other = part(&h, "g-done", 2, 2);
    let mut dup: Value = serde_json::from_slice(&done.0).unwrap();
    h.publish(&done.0).await;
    h.publish(&other.0).await;
    h.wait_state(&done.1, MessageState::Archived).await;
    h.wait_state(&other.1, MessageState::Archived).await;
    dup["message_id"] = json!("$split-g-done-1-again");
    dup["event_id"] = json!("evt-g-done-1-again");
    dup["mark"] = json!("not-relevant");
    h.uniquify(&mut dup);
    let dup_key = h.key("matrix", "$split-g-done-1-again");
    h.publish(&serde_json::to_vec(&dup).unwrap()).await;
    let held = h.wait_state(&dup_key, MessageState::Quarantined).await;
    assert_eq!(held.reason, "split_duplicate_part");
    assert_eq!(h.store.deletion_state(&dup_key).await.unwrap(), None);
    worker.stop().await;
}
