//! Retention, metadata purge and split-message holding, on SQLite and
//! PostgreSQL. Times are explicit instants; the jobs take them as "now".

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;

use super::tests::{both_backends, fresh};
use super::*;
use crate::classify::Rules;
use crate::config::Config;
use crate::event::{Message, MessageKey};
use crate::pipeline::{Outcome, Pipeline};
use crate::schedule::jobs;
use crate::seal::Sealer;

const HOUR: i64 = 3_600_000;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap()
}

fn after(ms: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::milliseconds(ms)
}

fn pipeline(store: Store) -> Pipeline {
    let text = "[broker]\nurl = \"amqp://127.0.0.1\"\n[store]\nkey_file = \"k\"\n\
                [kis]\nbase_url = \"http://127.0.0.1:9\"\n\
                [resolve]\nunresolved = \"not_relevant\"\n";
    let config = Config::from_parts(Path::new("t.toml"), text, std::iter::empty()).unwrap();
    let rules = Rules::parse(include_str!("../../mappings/rules.toml")).unwrap();
    Pipeline::new(&config, store, Sealer::from_key([3; 32]), rules).unwrap()
}

/// A canonical event; unlinked, so the shipped rules say not relevant
/// (under the weaker `resolve.unresolved = "not_relevant"` set above).
fn event(id: &str, extra: serde_json::Value) -> Message {
    let mut e = json!({
        "schema": "chartbridge.event/v1", "source": "whatsapp",
        "event_id": format!("e-{id}"), "message_id": id,
        "conversation": {"id": "4915112345678"},
        "sender": {"id": "4915112345678", "role": "patient"},
        "sent_at": "2026-11-28T09:00:00Z", "text": "Rückruf bitte"
    });
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    crate::event::decode(e.to_string().as_bytes(), 1 << 20)
        .unwrap()
        .messages
        .remove(0)
}

fn key(id: &str) -> MessageKey {
    MessageKey {
        source: "whatsapp".into(),
        message_id: id.into(),
    }
}

fn part(id: &str, group: &str, index: u32, count: u32) -> Message {
    event(
        id,
        json!({"part": {"group_id": group, "index": index, "count": count}}),
    )
}

async fn i7_each_rule_retention_releases_its_deletion_when_due(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let p = pipeline(store.clone());
    let marked = event("marked", json!({"mark": "not-relevant"}));
    let plain = event("plain", json!({}));
    for m in [&marked, &plain] {
        assert!(matches!(
            p.process(m, t0()).await.unwrap(),
            Outcome::NotRelevant { .. }
        ));
    }
    let state = |id: &'static str| {
        let store = store.clone();
        async move { store.deletion_state(&key(id)).await.unwrap() }
    };
    assert_eq!(state("marked").await, Some(DeletionState::Scheduled));
    // marked-not-relevant keeps 1 h, the default 24 h.
    assert_eq!(
        jobs::retention_sweep(&store, after(HOUR - 1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(jobs::retention_sweep(&store, after(HOUR)).await.unwrap(), 1);
    assert_eq!(state("marked").await, Some(DeletionState::Pending));
    assert_eq!(state("plain").await, Some(DeletionState::Scheduled));
    assert_eq!(
        jobs::retention_sweep(&store, after(24 * HOUR - 1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        jobs::retention_sweep(&store, after(24 * HOUR))
            .await
            .unwrap(),
        1
    );
    assert_eq!(state("plain").await, Some(DeletionState::Pending));
    assert_eq!(
        jobs::retention_sweep(&store, after(48 * HOUR))
            .await
            .unwrap(),
        0
    );
}

fn archive(id: &str) -> ArchiveRecord {
    let k = key(id);
    ArchiveRecord {
        deletion: NewDeletion {
            deletion_id: format!("del-{id}"),
            key: k.clone(),
            reason: "archived",
            sealed_command: crate::store::tests::sealed(b"cmd"),
            not_before_ms: 0,
            state: DeletionState::Pending,
        },
        key: k,
        rule: "linked-text".into(),
        content_sha256: "ab".repeat(32),
        resource: format!("Communication/{id}"),
        resources: vec![format!("Communication/{id}"), format!("Provenance/{id}")],
        leaf_data: format!("leaf {id}").into_bytes(),
    }
}

async fn ii3_metadata_purge_keeps_only_what_proofs_need(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let now = crate::store::millis(t0());
    store.record_archive(&archive("a1"), now).await.unwrap();
    store.record_archive(&archive("a2"), now).await.unwrap();
    let nr = NewDeletion {
        deletion_id: "del-nr".into(),
        key: key("nr"),
        reason: "not-relevant",
        sealed_command: crate::store::tests::sealed(b"cmd"),
        not_before_ms: now,
        state: DeletionState::Pending,
    };
    store
        .record_not_relevant(&key("nr"), "default", &nr, now)
        .await
        .unwrap();
    store
        .record_quarantine(
            &key("q"),
            "unknown_patient",
            &crate::store::tests::sealed(b"sealed"),
            None,
            now,
        )
        .await
        .unwrap();
    for id in ["a1", "a2", "nr", "q"] {
        store.claim_content(&key(id), id, now).await.unwrap();
    }
    for id in ["del-a1", "del-a2", "del-nr"] {
        store.mark_deletion_requested(id, now).await.unwrap();
    }
    let settled = now + HOUR;
    store
        .record_deletion_receipt("del-a1", DeletionState::Confirmed, "deleted", None, settled)
        .await
        .unwrap();
    store
        .record_deletion_receipt("del-nr", DeletionState::Confirmed, "deleted", None, settled)
        .await
        .unwrap();
    // Retractions waiting for a1 (archived: its mark is still to write)
    // and for nr (its copy is gone and nothing will archive it).
    for (redaction, target) in [("r-a1", "a1"), ("r-nr", "nr")] {
        store
            .record_pending_redaction(
                &key(redaction),
                &key(target),
                &crate::store::tests::sealed(b"retraction"),
                now,
            )
            .await
            .unwrap();
    }
    let root = store.log_root(2).await.unwrap();
    let leaf = store.log_leaf(&key("a1")).await.unwrap().unwrap();

    let week = Duration::from_secs(7 * 86_400);
    let week_ms = 7 * 24 * HOUR;
    let early = jobs::metadata_purge(&store, week, after(HOUR + week_ms - 1))
        .await
        .unwrap();
    assert_eq!(early.total(), 0, "not before metadata_retention passed");
    let done = jobs::metadata_purge(&store, week, after(HOUR + week_ms))
        .await
        .unwrap();
    assert_eq!((done.archived, done.not_relevant), (1, 1));

    // Archived and deleted: the proof data stays, the deletion details go.
    let a1 = store.message(&key("a1")).await.unwrap().unwrap();
    assert_eq!(a1.state, MessageState::Archived);
    assert_eq!(a1.content_sha256.as_deref(), Some(&*"ab".repeat(32)));
    assert_eq!(a1.resource.as_deref(), Some("Communication/a1"));
    assert_eq!(store.deletion_state(&key("a1")).await.unwrap(), None);
    assert_eq!(
        store.message_by_resource("Communication/a1").await.unwrap(),
        Some(store.message_ref(&key("a1")).unwrap())
    );
    assert_eq!(store.log_leaf(&key("a1")).await.unwrap(), Some(leaf));
    assert_eq!(store.log_root(2).await.unwrap(), root);
    assert_eq!(store.log_inclusion(0, 2).await.unwrap().len(), 1);
    // The retraction waiting for the archived a1 stays for its mark.
    assert_eq!(store.pending_redactions(&key("a1")).await.unwrap().len(), 1);
    assert_eq!(
        store.archived_with_pending_redactions(10).await.unwrap(),
        vec![store.message_ref(&key("a1")).unwrap()]
    );
    assert!(
        store
            .pending_redactions(&key("nr"))
            .await
            .unwrap()
            .is_empty()
    );
    // Not relevant and deleted: nothing is left.
    assert_eq!(store.message(&key("nr")).await.unwrap(), None);
    assert_eq!(store.deletion_state(&key("nr")).await.unwrap(), None);
    // Not yet confirmed, or quarantined: untouched.
    assert_eq!(
        store.deletion_state(&key("a2")).await.unwrap(),
        Some(DeletionState::Requested)
    );
    assert!(store.quarantine_detail(&key("q")).await.unwrap().is_some());
    assert_eq!(store.purged_count().await.unwrap(), 1);
    let again = jobs::metadata_purge(&store, week, after(100 * week_ms))
        .await
        .unwrap();
    assert_eq!(again.total(), 0, "a second purge changes nothing");
    let left: i64 = sqlx::Row::try_get(
        &sqlx::query("SELECT COUNT(*) FROM deletions")
            .fetch_one(store.pool())
            .await
            .unwrap(),
        0,
    )
    .unwrap();
    assert_eq!(left, 1, "only a2's deletion row is left");
    let mut digests: Vec<String> =
        sqlx::query("SELECT message_token FROM content_digests ORDER BY message_token")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| sqlx::Row::try_get(r, 0).unwrap())
            .collect();
    let mut kept = [key("a2"), key("q")].map(|k| store.message_ref(&k).unwrap().token);
    kept.sort();
    digests.sort();
    assert_eq!(digests, kept, "content digests go with the purged messages");
}

async fn hold(
    store: &Store,
    id: &str,
    index: u32,
    count: u32,
    now_ms: i64,
) -> Result<Hold, StoreError> {
    let k = key(id);
    let p = NewPart {
        key: &k,
        group_token: "g",
        index,
        count,
        sealed_event: &crate::store::tests::SEALED,
    };
    store.hold_part(&p, now_ms).await
}

async fn ii2_parts_wait_until_their_group_is_complete(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    assert_eq!(
        hold(&store, "p3", 3, 3, 10).await.unwrap(),
        Hold::Held { complete: false }
    );
    assert_eq!(
        hold(&store, "p3", 3, 3, 11).await.unwrap(),
        Hold::Held { complete: false },
        "a redelivered part is held once"
    );
    assert_eq!(
        hold(&store, "p1", 1, 3, 12).await.unwrap(),
        Hold::Held { complete: false }
    );
    assert_eq!(
        hold(&store, "p1b", 1, 3, 13).await.unwrap(),
        Hold::Held { complete: false },
        "a second message for index 1 does not complete the group"
    );
    assert_eq!(store.due_groups(0, 20, 10).await.unwrap(), vec![]);
    assert_eq!(
        store.due_groups(10, 20, 10).await.unwrap().len(),
        1,
        "wait ended"
    );
    assert_eq!(
        hold(&store, "p2", 2, 3, 14).await.unwrap(),
        Hold::Held { complete: true }
    );
    assert_eq!(
        store.due_groups(0, 20, 10).await.unwrap().len(),
        1,
        "complete"
    );

    let group = store.held_group("whatsapp", "g").await.unwrap().unwrap();
    let order: Vec<_> = group.parts.iter().map(|p| p.key.clone()).collect();
    let expected: Vec<_> = ["p1", "p1b", "p2", "p3"]
        .iter()
        .map(|id| store.message_ref(&key(id)).unwrap())
        .collect();
    assert_eq!(order, expected);
    assert!(group.missing().is_empty());
    assert!(store.claim_group("whatsapp", "g", 20, 100).await.unwrap());
    assert!(!store.claim_group("whatsapp", "g", 50, 100).await.unwrap());
    assert_eq!(
        store.due_groups(0, 50, 10).await.unwrap(),
        vec![],
        "claimed"
    );
    store.unclaim_group("whatsapp", "g").await.unwrap();
    assert!(store.claim_group("whatsapp", "g", 60, 100).await.unwrap());
    let counts = store.split_counts().await.unwrap();
    assert_eq!((counts.waiting, counts.held_parts), (1, 4));

    // A part held during the release stays for the orphan pass.
    assert_eq!(
        hold(&store, "p4", 4, 5, 70).await.unwrap(),
        Hold::Held { complete: false }
    );
    let processed: Vec<_> = group.parts.iter().map(|p| p.key.clone()).collect();
    store
        .finish_group("whatsapp", "g", &[], &processed, 80)
        .await
        .unwrap();
    let orphans = store.orphan_parts(10).await.unwrap();
    assert_eq!(orphans.len(), 1);
    assert_eq!(orphans[0].key, store.message_ref(&key("p4")).unwrap());
    assert_eq!(
        hold(&store, "p5", 5, 5, 90).await.unwrap(),
        Hold::GroupReleased
    );
    store.drop_held_part(&key("p4")).await.unwrap();
    assert!(!store.is_held(&key("p4")).await.unwrap());
    let counts = store.split_counts().await.unwrap();
    assert_eq!(
        (counts.waiting, counts.complete, counts.held_parts),
        (0, 1, 0)
    );

    // Purged with the other metadata once metadata_retention passed.
    assert_eq!(store.purge_metadata(79, 100).await.unwrap().groups, 0);
    assert_eq!(store.purge_metadata(80, 100).await.unwrap().groups, 1);
    assert_eq!(store.split_counts().await.unwrap(), SplitCounts::default());
}

async fn ii2_groups_release_through_the_pipeline(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let p = pipeline(store.clone());
    // Complete group, out of order: held until the last part, then released.
    assert_eq!(
        p.process(&part("c2", "gc", 2, 2), t0()).await.unwrap(),
        Outcome::Held
    );
    assert_eq!(store.message(&key("c2")).await.unwrap(), None);
    assert!(store.is_held(&key("c2")).await.unwrap());
    assert_eq!(
        p.process(&part("c1", "gc", 1, 2), t0()).await.unwrap(),
        Outcome::Held
    );
    for id in ["c1", "c2"] {
        let m = store.message(&key(id)).await.unwrap().unwrap();
        assert_eq!(m.state, MessageState::NotRelevant, "{id}");
        assert!(!store.is_held(&key(id)).await.unwrap());
    }
    assert!(matches!(
        p.process(&part("c1", "gc", 1, 2), t0()).await.unwrap(),
        Outcome::AlreadyTerminal(MessageState::NotRelevant)
    ));

    // Incomplete group: waits, then the sweep releases it flagged.
    assert_eq!(
        p.process(&part("i1", "gi", 1, 3), t0()).await.unwrap(),
        Outcome::Held
    );
    assert_eq!(
        p.process(&part("i3", "gi", 3, 3), t0()).await.unwrap(),
        Outcome::Held
    );
    let wait = Duration::from_secs(600);
    let early = jobs::split_sweep(&p, wait, after(599_999)).await;
    assert_eq!(early.released, 0);
    assert!(store.is_held(&key("i1")).await.unwrap());
    let swept = jobs::split_sweep(&p, wait, after(600_000)).await;
    assert_eq!(swept.released, 1);
    for id in ["i1", "i3"] {
        assert!(store.message(&key(id)).await.unwrap().is_some(), "{id}");
    }
    let counts = store.split_counts().await.unwrap();
    assert_eq!(
        (counts.complete, counts.incomplete, counts.held_parts),
        (1, 1, 0)
    );
    let missing: Option<String> = sqlx::Row::try_get(
        &sqlx::query("SELECT missing FROM split_groups WHERE state = 'incomplete'")
            .fetch_one(store.pool())
            .await
            .unwrap(),
        0,
    )
    .unwrap();
    assert_eq!(missing.as_deref(), Some("2"));

    // Two messages claiming the same index: the first to arrive is the
    // part, the second is quarantined for review, never archived twice.
    p.process(&part("d1", "gd", 1, 2), t0()).await.unwrap();
    p.process(&part("d1-again", "gd", 1, 2), after(1))
        .await
        .unwrap();
    assert_eq!(
        p.process(&part("d2", "gd", 2, 2), t0()).await.unwrap(),
        Outcome::Held
    );
    assert_eq!(
        store.message(&key("d1")).await.unwrap().unwrap().state,
        MessageState::NotRelevant
    );
    let dup = store.message(&key("d1-again")).await.unwrap().unwrap();
    assert_eq!(
        (dup.state, dup.reason.as_str()),
        (MessageState::Quarantined, "split_duplicate_part")
    );

    // The late part is decided at once, with its group's recorded gap: no
    // rule makes it relevant, so it is held like the group's parts, never
    // deleted on its own rule.
    assert_eq!(
        p.process(&part("i2", "gi", 2, 3), after(700_000))
            .await
            .unwrap(),
        Outcome::Quarantined {
            reason: "split_incomplete".into()
        }
    );
    assert!(!store.is_held(&key("i2")).await.unwrap());
    assert_eq!(store.deletion_state(&key("i2")).await.unwrap(), None);
}

both_backends!(
    i7_each_rule_retention_releases_its_deletion_when_due,
    ii3_metadata_purge_keeps_only_what_proofs_need,
    ii2_parts_wait_until_their_group_is_complete,
    ii2_groups_release_through_the_pipeline,
);
