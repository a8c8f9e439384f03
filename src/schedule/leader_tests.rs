//! Leadership and the claimed instants of the singleton jobs, on SQLite
//! and on a fresh PostgreSQL database.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::jobs::singleton;
use super::leader::{Leadership, Role};
use crate::store::Backend;
use crate::store::tests::fresh;

fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    s.parse().unwrap()
}

/// Each instant runs once however many leaders believe they lead.
async fn each_instant_runs_once(backend: Backend) {
    let (store, _dir) = fresh(backend).await;
    let (a, b) = (
        Leadership::new(&store, Role::Jobs, "a"),
        Leadership::new(&store, Role::Jobs, "b"),
    );
    let (stop, rx) = watch::channel(false);
    let tasks = [
        a.spawn(Duration::from_millis(20), rx.clone().into()),
        b.spawn(Duration::from_millis(20), rx.into()),
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let leaders = [a.is_leader(), b.is_leader()];
    match backend {
        Backend::Sqlite => assert_eq!(leaders, [true, true], "the one process leads"),
        Backend::Postgres => assert_eq!(
            leaders.iter().filter(|l| **l).count(),
            1,
            "one advisory lock holder: {leaders:?}"
        ),
    }
    let runs = Arc::new(AtomicUsize::new(0));
    for tick in ["2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"] {
        for leader in [&a, &b, &a] {
            let runs = runs.clone();
            singleton(leader, &store, "job", at(tick), async move {
                runs.fetch_add(1, Ordering::SeqCst);
            })
            .await;
        }
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2, "once per instant");
    let recorded = store.job_runs("job", 0).await.unwrap();
    assert_eq!(recorded.len(), 2);
    assert!(recorded.iter().all(|r| r.finished_at.is_some()));
    if backend == Backend::Postgres {
        // The leader stops: the other takes the lock within a round.
        let (leader, other) = if a.is_leader() { (&a, &b) } else { (&b, &a) };
        stop.send(true).unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(!leader.is_leader() && !leader.confirm().await);
        let (_stop2, rx2) = watch::channel(false);
        let again = other.spawn(Duration::from_millis(20), rx2.into());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(other.is_leader() && other.confirm().await, "took over");
        again.abort();
    }
}

#[tokio::test]
async fn each_instant_runs_once_sqlite() {
    each_instant_runs_once(Backend::Sqlite).await;
}

#[tokio::test]
async fn each_instant_runs_once_postgres() {
    each_instant_runs_once(Backend::Postgres).await;
}

#[tokio::test]
async fn a_worker_that_does_not_lead_runs_nothing() {
    let (store, _dir) = fresh(Backend::Postgres).await;
    let idle = Leadership::new(&store, Role::Checkpoints, "idle");
    assert!(!idle.is_leader());
    let ran = singleton(
        &idle,
        &store,
        "checkpoint",
        at("2026-01-01T00:00:00Z"),
        async { panic!("must not run") },
    )
    .await;
    assert!(!ran);
    assert!(store.job_runs("checkpoint", 0).await.unwrap().is_empty());
}
