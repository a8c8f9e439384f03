//! The store's operator parts on both backends: outbox claims by several
//! workers, deletion retries, replays and imports, the schema check.

use std::collections::HashSet;

use super::tests::{both_backends, fresh, fresh_postgres_url};
use super::*;
use crate::event::MessageKey;

fn key(i: usize) -> MessageKey {
    MessageKey {
        source: "matrix".into(),
        message_id: format!("$e{i}"),
    }
}

fn pending(i: usize) -> NewDeletion {
    NewDeletion {
        deletion_id: format!("d{i:04}"),
        key: key(i),
        reason: "not-relevant",
        sealed_command: super::tests::sealed(b"command"),
        not_before_ms: 0,
        state: DeletionState::Pending,
    }
}

/// Three workers' relays claiming at once: every pending deletion is
/// claimed by exactly one of them (PostgreSQL: `FOR UPDATE SKIP LOCKED`).
async fn claims_are_disjoint_across_workers(backend: Backend) {
    let (first, dir) = fresh(backend).await;
    let url = match (&dir, backend) {
        (Some(d), Backend::Sqlite) => {
            format!("sqlite://{}?mode=rwc", d.path().join("t.db").display())
        }
        _ => {
            // A database of its own for the three workers.
            let url = fresh_postgres_url().await;
            Store::open(&url, 2, &super::tests::test_sealer())
                .await
                .unwrap();
            url
        }
    };
    let sealer = super::tests::test_sealer();
    let stores = [
        Store::open(&url, 4, &sealer).await.unwrap(),
        Store::open(&url, 4, &sealer).await.unwrap(),
        Store::open(&url, 4, &sealer).await.unwrap(),
    ];
    drop(first);
    let n = 300;
    for i in 0..n {
        assert!(
            stores[0]
                .record_not_relevant(&key(i), "r", &pending(i), 0)
                .await
                .unwrap()
        );
    }
    let mut tasks = Vec::new();
    for store in stores {
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = store.claim_deletions(1_000, 60_000, 7).await.unwrap();
                if claimed.is_empty() {
                    return mine;
                }
                for row in claimed {
                    assert_eq!(row.attempts, 1, "claimed once: {}", row.deletion_id);
                    store
                        .mark_deletion_requested(&row.deletion_id, 1_000)
                        .await
                        .unwrap();
                    mine.push(row.deletion_id);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), n, "no deletion claimed twice");
    assert_eq!(distinct.len(), n, "every deletion claimed");
}

/// The relay marks a published batch in one statement: only rows still
/// pending move; a receipt that came first is kept.
async fn a_batch_is_marked_requested_in_one_statement(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    for i in 0..5 {
        store
            .record_not_relevant(&key(i), "r", &pending(i), 0)
            .await
            .unwrap();
    }
    let claimed = store.claim_deletions(1_000, 10, 10).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|r| r.deletion_id.as_str()).collect();
    assert_eq!(ids, ["d0000", "d0001", "d0002", "d0003", "d0004"]);
    store
        .record_deletion_receipt("d0001", DeletionState::Confirmed, "deleted", None, 1_001)
        .await
        .unwrap();
    assert_eq!(store.mark_deletions_requested(&[], 1_002).await.unwrap(), 0);
    assert_eq!(
        store.mark_deletions_requested(&ids, 1_002).await.unwrap(),
        4
    );
    assert_eq!(
        store.mark_deletions_requested(&ids, 1_003).await.unwrap(),
        0
    );
    for (i, want) in [
        DeletionState::Requested,
        DeletionState::Confirmed,
        DeletionState::Requested,
        DeletionState::Requested,
        DeletionState::Requested,
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(store.deletion_state(&key(i)).await.unwrap(), Some(want));
    }
    assert!(
        store
            .claim_deletions(1_000_000, 10, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn failed_and_stuck_deletions_are_retried_once(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    for i in 0..3 {
        store
            .record_not_relevant(&key(i), "r", &pending(i), 0)
            .await
            .unwrap();
    }
    store.claim_deletions(1_000, 10, 10).await.unwrap();
    for i in 0..3 {
        store
            .mark_deletion_requested(&format!("d{i:04}"), 1_000)
            .await
            .unwrap();
    }
    store
        .record_deletion_receipt(
            "d0000",
            DeletionState::Failed,
            "failed",
            Some("graph_error_100"),
            2_000,
        )
        .await
        .unwrap();
    store
        .record_deletion_receipt("d0002", DeletionState::Confirmed, "deleted", None, 2_000)
        .await
        .unwrap();
    // d0001 is requested without a receipt: stuck after 1 s.
    let retryable = store.retryable_deletions(5_000).await.unwrap();
    let ids: Vec<&str> = retryable.iter().map(|d| d.deletion_id.as_str()).collect();
    assert_eq!(ids, ["d0000", "d0001"]);
    assert!(retryable[1].stuck(5_000) && !retryable[0].stuck(5_000));
    assert!(
        store.retryable_deletions(500).await.unwrap().len() == 1,
        "only the failed one"
    );
    assert!(store.retry_deletion("d0000", 5_000).await.unwrap());
    assert!(store.retry_deletion("d0001", 5_000).await.unwrap());
    assert!(
        !store.retry_deletion("d0002", 5_000).await.unwrap(),
        "confirmed"
    );
    assert!(
        !store.retry_deletion("d0000", 5_000).await.unwrap(),
        "already pending"
    );
    let again = store.claim_deletions(6_000, 10, 10).await.unwrap();
    assert_eq!(again.len(), 2, "the relay publishes both again");
    let view = store.deletion_of(&key(0)).await.unwrap().unwrap();
    assert_eq!((view.state, view.retries), (DeletionState::Pending, 1));
    assert_eq!(view.settled_at, None);
    assert_eq!(
        store.deletion_message("d0001").await.unwrap(),
        Some(store.message_ref(&key(1)).unwrap())
    );
}

async fn replays_and_imports_are_remembered(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    assert_eq!(
        store.begin_replay("x", "q", "os:a", 1).await.unwrap(),
        ReplayBegin::Fresh
    );
    assert_eq!(
        store.begin_replay("x", "q", "os:a", 2).await.unwrap(),
        ReplayBegin::Unfinished,
        "not confirmed: publish again"
    );
    store.finish_replay("x", 3).await.unwrap();
    assert_eq!(
        store.begin_replay("x", "q", "os:a", 4).await.unwrap(),
        ReplayBegin::Published { at: 3 }
    );
    assert_eq!(store.replayed().await.unwrap().get("x"), Some(&3));
    assert!(!store.imported("t").await.unwrap());
    store.record_import("t", "os:a", 5).await.unwrap();
    store.record_import("t", "os:a", 6).await.unwrap();
    assert!(store.imported("t").await.unwrap());
}

async fn reading_commands_never_migrate(backend: Backend) {
    let url = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("n.db").display());
            std::mem::forget(dir);
            url
        }
        Backend::Postgres => fresh_postgres_url().await,
    };
    let err = Store::open_schema(&url, 1, schema::Schema::Current)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("chartbridge migrate"), "{err}");
    let raw = Store::open_schema(&url, 1, schema::Schema::Unchecked)
        .await
        .unwrap();
    let status = raw.schema_status().await.unwrap();
    assert!(status.applied.is_empty() && !status.pending.is_empty());
    raw.migrate().await.unwrap();
    let status = raw.schema_status().await.unwrap();
    assert!(status.pending.is_empty() && status.require_current().is_ok());
    Store::open_schema(&url, 1, schema::Schema::Current)
        .await
        .unwrap();
}

both_backends!(
    claims_are_disjoint_across_workers,
    a_batch_is_marked_requested_in_one_statement,
    failed_and_stuck_deletions_are_retried_once,
    replays_and_imports_are_remembered,
    reading_commands_never_migrate,
);
