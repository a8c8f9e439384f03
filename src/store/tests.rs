//! Store tests, each run against SQLite and a fresh PostgreSQL database.

use super::*;
use crate::event::MessageKey;
use crate::prove::merkle::MemoryLog;

/// A fresh store naming rows with [`test_sealer`]'s keys: a temporary
/// SQLite file, or a new PostgreSQL database on the server named by
/// `CHARTBRIDGE_TEST_POSTGRES`.
pub(crate) async fn fresh(backend: Backend) -> (Store, Option<tempfile::TempDir>) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
            (
                Store::open(&url, 4, &test_sealer()).await.unwrap(),
                Some(dir),
            )
        }
        Backend::Postgres => (
            Store::open(&fresh_postgres_url().await, 8, &test_sealer())
                .await
                .unwrap(),
            None,
        ),
    }
}

pub(crate) async fn fresh_postgres_url() -> String {
    install_default_drivers();
    let admin = std::env::var("CHARTBRIDGE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("chartbridge_t_{}", uuid::Uuid::new_v4().simple());
    let pool = AnyPool::connect(&admin)
        .await
        .expect("PostgreSQL reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let base = admin.rsplit_once('/').expect("URL has a database").0;
    format!("{base}/{name}")
}

/// The keyring of store tests.
pub(crate) fn test_sealer() -> crate::seal::Sealer {
    crate::seal::Sealer::from_key([1; 32])
}

/// `plain` on its way into the store under [`test_sealer`].
pub(crate) fn sealed(plain: &[u8]) -> crate::seal::Sealing {
    test_sealer().seal(plain)
}

/// `b"sealed"` under [`test_sealer`], for values that borrow it.
pub(crate) static SEALED: std::sync::LazyLock<crate::seal::Sealing> =
    std::sync::LazyLock::new(|| sealed(b"sealed"));

pub(crate) fn key(i: u32) -> MessageKey {
    MessageKey {
        source: "whatsapp".into(),
        message_id: format!("wamid.{i}"),
    }
}

fn deletion(k: &MessageKey, state: DeletionState, not_before_ms: i64) -> NewDeletion {
    NewDeletion {
        deletion_id: format!("del-{}", k.message_id),
        key: k.clone(),
        reason: if state == DeletionState::Pending {
            "archived"
        } else {
            "not-relevant"
        },
        sealed_command: crate::seal::Sealer::from_key([1; 32]).seal(b"command"),
        not_before_ms,
        state,
    }
}

pub(crate) fn archive(i: u32) -> ArchiveRecord {
    let k = key(i);
    ArchiveRecord {
        deletion: deletion(&k, DeletionState::Pending, 0),
        key: k,
        rule: "linked-text".into(),
        content_sha256: "00".repeat(32),
        resource: format!("Communication/{i}"),
        resources: vec![format!("Communication/{i}")],
        leaf_data: format!("leaf {i}").into_bytes(),
    }
}

async fn archive_is_atomic_and_idempotent(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    assert_eq!(
        store.record_archive(&archive(1), 10).await.unwrap(),
        Some(0)
    );
    assert_eq!(store.record_archive(&archive(1), 11).await.unwrap(), None);
    assert_eq!(
        store.record_archive(&archive(2), 12).await.unwrap(),
        Some(1)
    );
    assert_eq!(store.log_size().await.unwrap(), 2);
    let m = store.message(&key(1)).await.unwrap().unwrap();
    assert_eq!(m.state, MessageState::Archived);
    assert_eq!(m.resource.as_deref(), Some("Communication/1"));
    assert_eq!(
        store.deletion_state(&key(1)).await.unwrap(),
        Some(DeletionState::Pending)
    );
    assert!(
        !store
            .record_quarantine(&key(1), "x", &crate::store::tests::sealed(b"e"), None, 13)
            .await
            .unwrap()
    );
}

async fn log_matches_reference_implementation(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let mut reference = MemoryLog::new();
    for i in 0..21 {
        let rec = archive(i);
        reference.append(&rec.leaf_data);
        store.record_archive(&rec, 1).await.unwrap();
    }
    for size in [1u64, 2, 3, 8, 13, 21] {
        assert_eq!(
            store.log_root(size).await.unwrap(),
            reference.root(size).unwrap()
        );
    }
    assert_eq!(
        store.log_inclusion(5, 21).await.unwrap(),
        reference.inclusion_proof(5, 21).unwrap()
    );
    assert_eq!(
        store.log_consistency(7, 21).await.unwrap(),
        reference.consistency_proof(7, 21).unwrap()
    );
    let leaf = store.log_leaf(&key(5)).await.unwrap().unwrap();
    assert_eq!(leaf.index, 5);
}

async fn outbox_lifecycle(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let k = key(7);
    let d = deletion(&k, DeletionState::Scheduled, 1_000);
    assert!(
        store
            .record_not_relevant(&k, "default", &d, 0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_not_relevant(&k, "default", &d, 0)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_deletions(2_000, 100, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.release_due_deletions(999).await.unwrap(), 0);
    assert_eq!(store.release_due_deletions(1_000).await.unwrap(), 1);
    let claimed = store.claim_deletions(2_000, 100, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        store
            .claim_deletions(2_050, 100, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.claim_deletions(2_200, 100, 10).await.unwrap().len(),
        1
    );
    store
        .mark_deletion_requested(&d.deletion_id, 2_300)
        .await
        .unwrap();
    let (_, stuck) = store.deletion_counts(3_000).await.unwrap();
    assert_eq!(stuck, 1);
    assert!(
        store
            .record_deletion_receipt(
                &d.deletion_id,
                DeletionState::Confirmed,
                "deleted",
                None,
                2_400
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_deletion_receipt("unknown", DeletionState::Confirmed, "deleted", None, 2_400)
            .await
            .unwrap()
    );
    assert_eq!(
        store.deletion_state(&k).await.unwrap(),
        Some(DeletionState::Confirmed)
    );
}

/// Requested → retrying (visible as stuck) → confirmed; a permanent failure
/// keeps its reason; a late receipt never reopens a confirmed deletion; every
/// receipt is kept.
async fn iv8_deletion_lifecycle_and_receipts(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let ok = key(20);
    let bad = key(21);
    let early = key(22);
    for k in [&ok, &bad, &early] {
        store
            .record_not_relevant(k, "r", &deletion(k, DeletionState::Pending, 0), 1)
            .await
            .unwrap();
    }
    // An adapter may report before the relay marked the command requested:
    // the deletion is retrying and counts from then on.
    let early_id = format!("del-{}", early.message_id);
    store
        .record_deletion_receipt(
            &early_id,
            DeletionState::Retrying,
            "retrying",
            Some("graph_http_503"),
            900,
        )
        .await
        .unwrap();
    assert_eq!(
        store.deletion_state(&early).await.unwrap(),
        Some(DeletionState::Retrying)
    );
    assert_eq!(store.stuck_deletions(5_000, 10).await.unwrap().len(), 1);
    store
        .record_deletion_receipt(&early_id, DeletionState::Confirmed, "deleted", None, 950)
        .await
        .unwrap();
    let claimed = store.claim_deletions(1_000, 100, 10).await.unwrap();
    assert_eq!(claimed.len(), 2);
    for d in &claimed {
        store
            .mark_deletion_requested(&d.deletion_id, 1_000)
            .await
            .unwrap();
    }
    let (ok_id, bad_id) = (
        format!("del-{}", ok.message_id),
        format!("del-{}", bad.message_id),
    );
    assert!(
        store
            .record_deletion_receipt(
                &ok_id,
                DeletionState::Retrying,
                "retrying",
                Some("redact_http_503"),
                2_000
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store.deletion_state(&ok).await.unwrap(),
        Some(DeletionState::Retrying)
    );
    // Both are stuck after the threshold; the retrying one shows its reason.
    let stuck = store.stuck_deletions(5_000, 10).await.unwrap();
    assert_eq!(stuck.len(), 2);
    let retrying = stuck.iter().find(|d| d.deletion_id == ok_id).unwrap();
    assert_eq!(retrying.state, DeletionState::Retrying);
    assert_eq!(retrying.detail.as_deref(), Some("redact_http_503"));
    assert_eq!(store.deletion_counts(5_000).await.unwrap().1, 2);
    assert_eq!(
        store.deletion_counts(500).await.unwrap().1,
        0,
        "not stuck before the threshold"
    );

    store
        .record_deletion_receipt(&ok_id, DeletionState::Confirmed, "deleted", None, 3_000)
        .await
        .unwrap();
    store
        .record_deletion_receipt(
            &bad_id,
            DeletionState::Failed,
            "failed",
            Some("graph_error_190"),
            3_000,
        )
        .await
        .unwrap();
    // A late duplicate `retrying` does not reopen a settled deletion.
    store
        .record_deletion_receipt(
            &ok_id,
            DeletionState::Retrying,
            "retrying",
            Some("redact_http_503"),
            3_500,
        )
        .await
        .unwrap();
    store
        .record_deletion_receipt(
            &bad_id,
            DeletionState::Retrying,
            "retrying",
            Some("x"),
            3_500,
        )
        .await
        .unwrap();
    assert_eq!(
        store.deletion_state(&ok).await.unwrap(),
        Some(DeletionState::Confirmed)
    );
    assert_eq!(
        store.deletion_state(&bad).await.unwrap(),
        Some(DeletionState::Failed)
    );
    assert_eq!(
        store.failed_deletions().await.unwrap(),
        vec![("whatsapp".to_owned(), "graph_error_190".to_owned(), 1)]
    );
    assert!(store.stuck_deletions(5_000, 10).await.unwrap().is_empty());
    let receipts = store.deletion_receipts(&ok_id).await.unwrap();
    let statuses: Vec<&str> = receipts.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(statuses, ["retrying", "deleted", "retrying"]);
    // A failed deletion may still be confirmed later (a manual retry worked).
    store
        .record_deletion_receipt(&bad_id, DeletionState::Confirmed, "not-found", None, 4_000)
        .await
        .unwrap();
    assert_eq!(
        store.deletion_state(&bad).await.unwrap(),
        Some(DeletionState::Confirmed)
    );
    assert!(
        store
            .record_deletion_receipt(&ok_id, DeletionState::Requested, "x", None, 4_000)
            .await
            .is_err()
    );
}

/// The Matrix next_batch: absent, saved, replaced, per account.
async fn i7_source_cursor_round_trip(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    assert_eq!(store.source_cursor("matrix", "@bot:a").await.unwrap(), None);
    store
        .set_source_cursor("matrix", "@bot:a", "s1_2", 1)
        .await
        .unwrap();
    store
        .set_source_cursor("matrix", "@bot:a", "s9_9", 2)
        .await
        .unwrap();
    store
        .set_source_cursor("matrix", "@bot:b", "s3", 2)
        .await
        .unwrap();
    assert_eq!(
        store
            .source_cursor("matrix", "@bot:a")
            .await
            .unwrap()
            .as_deref(),
        Some("s9_9")
    );
    assert_eq!(
        store
            .source_cursor("matrix", "@bot:b")
            .await
            .unwrap()
            .as_deref(),
        Some("s3")
    );
}

async fn quarantine_keeps_sealed_detail(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let k = key(9);
    assert!(
        store
            .record_quarantine(
                &k,
                "unknown_patient",
                &crate::store::tests::sealed(b"sealed"),
                Some(&crate::store::tests::sealed(b"outcome")),
                5
            )
            .await
            .unwrap()
    );
    let (reason, event, detail) = store.quarantine_detail(&k).await.unwrap().unwrap();
    assert_eq!(reason, "unknown_patient");
    let s = test_sealer();
    assert_eq!(
        s.open(
            &sealed::quarantine_event(&store.message_ref(&k).unwrap()),
            &event
        )
        .unwrap(),
        b"sealed"
    );
    assert_eq!(
        s.open(
            &sealed::quarantine_detail(&store.message_ref(&k).unwrap()),
            &detail.unwrap()
        )
        .unwrap(),
        b"outcome"
    );
    let counts = store.state_counts().await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0].state, "quarantined");
    assert!(store.deletion_state(&k).await.unwrap().is_none());
}

async fn links_round_trip(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let link = Link {
        patient: "Patient/1".into(),
        encounter: None,
    };
    store.set_link("tok", &link, 1).await.unwrap();
    assert_eq!(store.link("tok").await.unwrap(), Some(link));
    let moved = Link {
        patient: "Patient/2".into(),
        encounter: Some("Encounter/3".into()),
    };
    store.set_link("tok", &moved, 2).await.unwrap();
    assert_eq!(store.link("tok").await.unwrap(), Some(moved));
    assert_eq!(store.link("other").await.unwrap(), None);
}

async fn concurrent_archives_append_densely(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let rec = archive(w * 100 + i);
                loop {
                    match store.record_archive(&rec, 1).await {
                        Ok(_) => break,
                        Err(e) if e.is_transient() => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.log_size().await.unwrap(), 80);
    let mut reference = MemoryLog::new();
    for i in 0..80 {
        let leaf = sqlx::query("SELECT leaf_data FROM log_leaves WHERE leaf_index = $1")
            .bind(i as i64)
            .fetch_one(store.pool())
            .await
            .expect("no gap in the log");
        let data: Vec<u8> = sqlx::Row::try_get(&leaf, 0).unwrap();
        reference.append(&data);
    }
    assert_eq!(
        store.log_root(80).await.unwrap(),
        reference.root(80).unwrap()
    );
}

/// Undecrypted Matrix events: recorded once, retried, moved on, forgotten.
async fn matrix_undecrypted_lifecycle(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    assert!(
        store
            .record_undecrypted("$e1", &crate::store::tests::sealed(b"sealed-1"), 10)
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_undecrypted("$e1", &crate::store::tests::sealed(b"other"), 11)
            .await
            .unwrap()
    );
    assert!(
        store
            .record_undecrypted("$e2", &crate::store::tests::sealed(b"sealed-2"), 12)
            .await
            .unwrap()
    );
    let rows = store.undecrypted().await.unwrap();
    assert_eq!(rows.len(), 2);
    let (e1, e2) = (
        store.undecrypted_token("$e1").unwrap(),
        store.undecrypted_token("$e2").unwrap(),
    );
    assert_eq!(rows[0].event_token, e1);
    assert_eq!(e1.len(), 64, "a token, not the event id");
    assert_eq!(
        test_sealer()
            .open(&sealed::undecrypted_event(&e1), &rows[0].sealed_event)
            .unwrap(),
        b"sealed-1"
    );
    assert_eq!(rows[0].state, crate::store::AWAITING_KEYS);
    assert_eq!(rows[0].tries, 1);
    store
        .touch_undecrypted(&e1, crate::store::UNDECRYPTABLE, 20)
        .await
        .unwrap();
    assert_eq!(
        store.undecrypted_counts().await.unwrap(),
        vec![
            ("awaiting_keys".to_owned(), 1),
            ("undecryptable".to_owned(), 1)
        ]
    );
    let rows = store.undecrypted().await.unwrap();
    assert_eq!(
        (rows[0].state.as_str(), rows[0].tries),
        ("undecryptable", 2)
    );
    store.forget_undecrypted(&e1).await.unwrap();
    let rows = store.undecrypted().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event_token, e2);
    // Trust on first use: the first identity is pinned, later ones are not.
    assert_eq!(
        store.pin_identity("s1", "i1", 30).await.unwrap(),
        ("i1".to_owned(), true)
    );
    assert_eq!(
        store.pin_identity("s1", "i2", 31).await.unwrap(),
        ("i1".to_owned(), false)
    );
}

/// Runs each named `async fn(Backend)` as a test on SQLite and on PostgreSQL.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Postgres).await })*
        }
    };
}
pub(crate) use both_backends;

both_backends!(
    archive_is_atomic_and_idempotent,
    log_matches_reference_implementation,
    outbox_lifecycle,
    quarantine_keeps_sealed_detail,
    links_round_trip,
    concurrent_archives_append_densely,
    iv8_deletion_lifecycle_and_receipts,
    i7_source_cursor_round_trip,
    matrix_undecrypted_lifecycle,
);
