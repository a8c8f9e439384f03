//! Transcript windows (DSK I.6) on SQLite and PostgreSQL: holding,
//! claiming (frozen once claimed, lease, give-back) and the one-transaction
//! archive of transcript, members and deletions.

use super::tests::{both_backends, fresh};
use super::*;
use crate::event::MessageKey;

fn key(id: &str) -> MessageKey {
    MessageKey {
        source: "matrix".into(),
        message_id: id.into(),
    }
}

fn entry<'a>(k: &'a MessageKey, token: &'a str, sent_at_ms: i64) -> NewTranscriptEntry<'a> {
    NewTranscriptEntry {
        key: k,
        window_token: token,
        window_start_ms: 0,
        window_end_ms: 1000,
        sent_at_ms,
        sealed_entry: &crate::store::tests::SEALED,
    }
}

fn member(k: &MessageKey) -> TranscriptMember {
    TranscriptMember {
        key: k.clone(),
        rule: "marked-relevant".into(),
        content_sha256: "00".repeat(32),
        deletion: NewDeletion {
            deletion_id: format!("del-{}", k.message_id),
            key: k.clone(),
            reason: "archived",
            sealed_command: crate::store::tests::sealed(b"cmd"),
            not_before_ms: 0,
            state: DeletionState::Pending,
        },
    }
}

async fn i6_transcript_window_lifecycle(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let (a, b, c, q) = (key("a"), key("b"), key("c"), key("q"));
    assert!(
        store
            .hold_transcript_entry(&entry(&a, "w", 300), 10)
            .await
            .unwrap()
    );
    assert!(
        store
            .hold_transcript_entry(&entry(&b, "w", 200), 11)
            .await
            .unwrap()
    );
    // Idempotent on the message key.
    assert!(
        store
            .hold_transcript_entry(&entry(&a, "w", 300), 12)
            .await
            .unwrap()
    );
    // A message released from quarantine is held like any other.
    store
        .record_quarantine(
            &q,
            "unknown_patient",
            &crate::store::tests::sealed(b"ev"),
            None,
            5,
        )
        .await
        .unwrap();
    assert!(
        store
            .hold_transcript_entry(&entry(&q, "w", 400), 13)
            .await
            .unwrap()
    );
    assert_eq!(store.held_transcript_messages().await.unwrap(), 3);

    // Not due before the window ends.
    assert!(
        store
            .claim_due_windows(999, 100, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let claimed = store.claim_due_windows(1000, 100, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].window_token.as_str(), claimed[0].window_end_ms),
        ("w", 1000)
    );
    // A claimed window is frozen: a late message is refused (held elsewhere).
    assert!(
        !store
            .hold_transcript_entry(&entry(&c, "w", 250), 1001)
            .await
            .unwrap()
    );
    // A second closer gets nothing while the lease runs, the window after it.
    assert!(
        store
            .claim_due_windows(1050, 100, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.claim_due_windows(1101, 100, 10).await.unwrap().len(),
        1
    );
    store.unclaim_window("matrix", "w").await.unwrap();
    assert_eq!(
        store.claim_due_windows(1102, 100, 10).await.unwrap().len(),
        1
    );

    let entries = store.window_entries("matrix", "w").await.unwrap();
    let order: Vec<_> = entries.iter().map(|e| e.key.clone()).collect();
    let expected: Vec<_> = ["b", "a", "q"]
        .iter()
        .map(|id| store.message_ref(&key(id)).unwrap())
        .collect();
    assert_eq!(order, expected, "send order");
    for k in [&a, &b] {
        assert_eq!(
            store.message(k).await.unwrap(),
            None,
            "held is not terminal"
        );
        assert_eq!(
            store.deletion_state(k).await.unwrap(),
            None,
            "no deletion while held"
        );
    }

    let archive = TranscriptArchive {
        source: "matrix".into(),
        window_token: "w".into(),
        leaf_key: key("transcript-w"),
        leaf_data: b"leaf".to_vec(),
        content_sha256: "11".repeat(32),
        resource: "DocumentReference/t1".into(),
        resources: vec!["Binary/b1".into(), "DocumentReference/t1".into()],
        members: vec![member(&b), member(&a), member(&q)],
    };
    assert_eq!(
        store.archive_transcript(&archive, 2000).await.unwrap(),
        Some(0)
    );
    for k in [&a, &b, &q] {
        let m = store.message(k).await.unwrap().unwrap();
        assert_eq!(m.state, MessageState::Archived, "{k}");
        assert_eq!(m.resource.as_deref(), Some("DocumentReference/t1"));
        assert_eq!(
            store.deletion_state(k).await.unwrap(),
            Some(DeletionState::Pending)
        );
    }
    assert!(
        store
            .log_leaf(&key("transcript-w"))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.held_transcript_messages().await.unwrap(), 0);

    // Recording again, or claiming again, does nothing.
    assert_eq!(
        store.archive_transcript(&archive, 2001).await.unwrap(),
        None
    );
    assert!(
        store
            .claim_due_windows(5000, 100, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.log_size().await.unwrap(), 1);
    // An archived window takes no more messages.
    assert!(
        !store
            .hold_transcript_entry(&entry(&c, "w", 250), 3000)
            .await
            .unwrap()
    );
}

/// Messages sent in the same second (WhatsApp's timestamps have a
/// resolution of one second) keep the order they were held in, not the
/// order of their keyed tokens.
async fn i6_same_second_messages_keep_their_arrival_order(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let keys: Vec<MessageKey> = (0..6).map(|i| key(&format!("m{i}"))).collect();
    for (i, k) in keys.iter().enumerate() {
        assert!(
            store
                .hold_transcript_entry(&entry(k, "w", 500), 100 + i as i64)
                .await
                .unwrap()
        );
    }
    let order: Vec<_> = store
        .window_entries("matrix", "w")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    let expected: Vec<_> = keys.iter().map(|k| store.message_ref(k).unwrap()).collect();
    assert_eq!(order, expected, "arrival order within one second");
}

both_backends!(
    i6_transcript_window_lifecycle,
    i6_same_second_messages_keep_their_arrival_order
);
