use super::super::tests::{both_backends, fresh};
use super::super::*;
use crate::event::MessageKey;

fn key(id: &str) -> MessageKey {
    MessageKey {
        source: "whatsapp".into(),
        message_id: id.into(),
    }
}

fn scheduled(k: &MessageKey, due: i64) -> NewDeletion {
    NewDeletion {
        deletion_id: format!("del-{}", k.message_id),
        key: k.clone(),
        reason: "not-relevant",
        sealed_command: crate::seal::Sealer::from_key([1; 32]).seal(b"command"),
        not_before_ms: due,
        state: DeletionState::Scheduled,
    }
}

async fn conversation_items_are_listed_and_dismissed_once(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let (a, b, c) = (key("w.a"), key("w.b"), key("w.c"));
    assert!(
        store
            .record_quarantine_conversation(
                &a,
                "unresolved_conversation",
                &crate::store::tests::sealed(b"s"),
                None,
                "tok-1",
                1
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .record_quarantine_conversation(
                &b,
                "patient_candidate",
                &crate::store::tests::sealed(b"s"),
                Some("p-9"),
                "tok-1",
                2
            )
            .await
            .unwrap()
    );
    // Another conversation, and a redelivery that writes nothing.
    assert!(
        store
            .record_quarantine_conversation(
                &c,
                "unresolved_conversation",
                &crate::store::tests::sealed(b"s"),
                None,
                "tok-2",
                3
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_quarantine_conversation(
                &a,
                "unresolved_conversation",
                &crate::store::tests::sealed(b"s"),
                None,
                "tok-1",
                4
            )
            .await
            .unwrap()
    );
    let all = store.held_conversations().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].token, "tok-1");
    assert_eq!(all[0].messages.len(), 2);
    assert_eq!(all[0].messages[1].candidate.as_deref(), Some("p-9"));
    assert_eq!(store.conversation_held("tok-2").await.unwrap().len(), 1);
    assert_eq!(
        store.quarantine_conversation(&a).await.unwrap().as_deref(),
        Some("tok-1")
    );

    store
        .record_conversation_review("tok-1", ConversationDecision::Dismissed, "rev-a", 10)
        .await
        .unwrap();
    let r = store.conversation_review("tok-1").await.unwrap().unwrap();
    assert_eq!(r.decision, ConversationDecision::Dismissed);
    assert_eq!((r.decided_by.as_str(), r.decided_at), ("rev-a", 10));
    // Held for another reason since the list was read (a link's release
    // the KIS refused): not the reviewer's to dismiss.
    store.requarantine(&a, "kis_rejected", 9).await.unwrap();
    assert!(
        !store
            .record_dismissed(
                &a,
                "conversation-dismissed",
                &scheduled(&a, 99),
                "rev-a",
                10
            )
            .await
            .unwrap()
    );
    assert_eq!(store.deletion_state(&a).await.unwrap(), None);
    store
        .requarantine(&a, "unresolved_conversation", 9)
        .await
        .unwrap();
    for k in [&a, &b] {
        assert!(
            store
                .record_dismissed(k, "conversation-dismissed", &scheduled(k, 99), "rev-a", 10)
                .await
                .unwrap()
        );
        // Exactly once: a second dismissal writes nothing.
        assert!(
            !store
                .record_dismissed(k, "conversation-dismissed", &scheduled(k, 99), "rev-a", 11)
                .await
                .unwrap()
        );
        let m = store.message(k).await.unwrap().unwrap();
        assert_eq!(m.state, MessageState::NotRelevant);
        assert_eq!(m.reason, "conversation-dismissed");
        assert_eq!(
            store.deletion_state(k).await.unwrap(),
            Some(DeletionState::Scheduled)
        );
        let e = store.quarantine_entry(k).await.unwrap().unwrap();
        assert_eq!(e.resolved_by.as_deref(), Some("rev-a"));
        assert!(e.sealed_event.is_empty());
    }
    assert!(store.conversation_held("tok-1").await.unwrap().is_empty());
    assert_eq!(store.held_conversations().await.unwrap().len(), 1);
    // Linking replaces the decision.
    store
        .record_conversation_review("tok-1", ConversationDecision::Linked, "rev-b", 20)
        .await
        .unwrap();
    let r = store.conversation_review("tok-1").await.unwrap().unwrap();
    assert_eq!(r.decision, ConversationDecision::Linked);
}

async fn requarantined_items_list_their_current_reason_and_conflicts_are_listed(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let k = key("w.r");
    store
        .record_quarantine_conversation(
            &k,
            "unresolved_conversation",
            &crate::store::tests::sealed(b"s"),
            None,
            "tok",
            1,
        )
        .await
        .unwrap();
    store.requarantine(&k, "kis_rejected", 2).await.unwrap();
    let items = store.quarantine_list().await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].reason, "kis_rejected");
    assert_eq!(
        store.quarantine_entry(&k).await.unwrap().unwrap().reason,
        "kis_rejected"
    );
    // No longer held for its patient: a conversation decision skips it.
    assert!(store.conversation_held("tok").await.unwrap().is_empty());

    assert!(store.conflict_list().await.unwrap().is_empty());
    store
        .record_conflict(&k, "dd", &crate::store::tests::sealed(b"sealed"), 3)
        .await
        .unwrap();
    let conflicts = store.conflict_list().await.unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(
        (conflicts[0].key.clone(), conflicts[0].digest.as_str()),
        (store.message_ref(&k).unwrap(), "dd")
    );
}

/// An identity change retires a conversation: links and review decisions
/// from before it go, and it stays retired through a dismissal; only a
/// person's new link ends it. A redelivered notice changes nothing after
/// that link, and a decision taken after the notice's time stays.
async fn a_retired_conversation_stays_retired_until_a_new_link(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let link = Link {
        patient: "Patient/1".into(),
        encounter: None,
    };
    store.set_link("tok-r", &link, 100).await.unwrap();
    store
        .record_conversation_review("tok-r", ConversationDecision::Linked, "os:a", 100)
        .await
        .unwrap();
    assert!(!store.conversation_retired("tok-r").await.unwrap());
    assert!(store.retirement_pending("tok-r", 200).await.unwrap());
    store.retire_conversation("tok-r", 200).await.unwrap();
    assert!(store.conversation_retired("tok-r").await.unwrap());
    assert_eq!(store.link("tok-r").await.unwrap(), None);
    assert_eq!(store.conversation_review("tok-r").await.unwrap(), None);
    assert!(!store.retirement_pending("tok-r", 200).await.unwrap());
    // A dismissal does not end the retirement.
    store
        .record_conversation_review("tok-r", ConversationDecision::Dismissed, "os:a", 300)
        .await
        .unwrap();
    assert!(store.conversation_retired("tok-r").await.unwrap());
    // A new link does; the notice redelivered changes nothing.
    store.set_link("tok-r", &link, 400).await.unwrap();
    assert!(!store.conversation_retired("tok-r").await.unwrap());
    assert!(!store.retirement_pending("tok-r", 200).await.unwrap());
    store.retire_conversation("tok-r", 200).await.unwrap();
    assert_eq!(store.link("tok-r").await.unwrap(), Some(link));
    assert!(!store.conversation_retired("tok-r").await.unwrap());
    // A later notice retires again.
    assert!(store.retirement_pending("tok-r", 500).await.unwrap());
    store.retire_conversation("tok-r", 500).await.unwrap();
    assert!(store.conversation_retired("tok-r").await.unwrap());
}

both_backends!(
    conversation_items_are_listed_and_dismissed_once,
    requarantined_items_list_their_current_reason_and_conflicts_are_listed,
    a_retired_conversation_stays_retired_until_a_new_link,
);
