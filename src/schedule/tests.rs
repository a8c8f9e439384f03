//! The cron loop under paused tokio time: instants are reached with
//! `tokio::time::advance`, never by sleeping.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::*;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn every(expr: &str) -> cron::Schedule {
    cron::Schedule::from_str(expr).unwrap()
}

type Fired = Arc<Mutex<Vec<String>>>;

fn recorder() -> (Fired, impl FnMut(DateTime<Utc>) -> std::future::Ready<()>) {
    let fired: Fired = Arc::default();
    let f = fired.clone();
    (fired, move |at: DateTime<Utc>| {
        f.lock().unwrap().push(at.format("%H:%M:%S").to_string());
        std::future::ready(())
    })
}

/// Lets spawned tasks run until they wait on something.
async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

/// Advances paused time and lets the spawned scheduler run its job.
async fn advance(d: Duration) {
    tokio::time::advance(d).await;
    settle().await;
}

#[tokio::test(start_paused = true)]
async fn i7_jobs_fire_on_each_cron_instant() {
    let (tx, rx) = watch::channel(false);
    let (fired, job) = recorder();
    let task = tokio::spawn(run(
        every("0 */5 * * * *"),
        at("2026-11-28T10:01:00Z"),
        rx.into(),
        job,
    ));
    settle().await;
    advance(Duration::from_secs(3 * 60 + 59)).await;
    assert!(fired.lock().unwrap().is_empty(), "nothing before 10:05");
    advance(Duration::from_secs(1)).await;
    assert_eq!(*fired.lock().unwrap(), ["10:05:00"]);
    advance(Duration::from_secs(10 * 60)).await;
    assert_eq!(*fired.lock().unwrap(), ["10:05:00", "10:10:00", "10:15:00"]);
    tx.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_the_wait_at_once() {
    let (tx, rx) = watch::channel(false);
    let (fired, job) = recorder();
    // Once a year: an unresponsive loop would make the paused clock jump a year.
    let task = tokio::spawn(run(
        every("0 0 0 1 1 *"),
        at("2026-11-28T10:00:00Z"),
        rx.into(),
        job,
    ));
    advance(Duration::from_secs(60)).await;
    let before = tokio::time::Instant::now();
    tx.send(true).unwrap();
    task.await.unwrap();
    assert!(
        before.elapsed() < Duration::from_millis(1),
        "{:?}",
        before.elapsed()
    );
    assert!(fired.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_a_running_job_and_starts_no_other() {
    let (tx, rx) = watch::channel(false);
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let runs = Arc::new(Mutex::new(0));
    let (s, r, n) = (started.clone(), release.clone(), runs.clone());
    let task = tokio::spawn(run(
        every("0 * * * * *"),
        at("2026-11-28T10:00:30Z"),
        rx.into(),
        move |_| {
            let (s, r, n) = (s.clone(), r.clone(), n.clone());
            async move {
                s.notify_one();
                r.notified().await;
                *n.lock().unwrap() += 1;
            }
        },
    ));
    advance(Duration::from_secs(30)).await;
    started.notified().await;
    tx.send(true).unwrap();
    release.notify_one();
    task.await.unwrap();
    assert_eq!(*runs.lock().unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_before_start_or_a_dropped_sender_runs_nothing() {
    let (tx, rx) = watch::channel(true);
    let (fired, job) = recorder();
    run(
        every("* * * * * *"),
        at("2026-11-28T10:00:00Z"),
        rx.into(),
        job,
    )
    .await;
    drop(tx);
    let (tx, rx) = watch::channel(false);
    let (fired2, job) = recorder();
    let task = tokio::spawn(run(
        every("0 0 0 1 1 *"),
        at("2026-11-28T10:00:00Z"),
        rx.into(),
        job,
    ));
    advance(Duration::from_secs(1)).await;
    let before = tokio::time::Instant::now();
    drop(tx);
    task.await.unwrap();
    assert!(before.elapsed() < Duration::from_millis(1));
    assert!(fired.lock().unwrap().is_empty() && fired2.lock().unwrap().is_empty());
}

#[test]
fn bad_expressions_are_refused_by_setting_name() {
    let err = parse("schedule.split_sweep", "*/5 * * * *").unwrap_err();
    assert!(
        err.starts_with("schedule.split_sweep is not a cron expression"),
        "{err}"
    );
    assert!(parse("schedule.split_sweep", "*/10 * * * * *").is_ok());
}

#[tokio::test]
async fn the_workers_jobs_all_end_promptly_on_shutdown() {
    let (store, _dir) = crate::store::tests::fresh(crate::store::Backend::Sqlite).await;
    let config = crate::config::Config::from_parts(
        std::path::Path::new("t.toml"),
        "[broker]\nurl = \"amqp://127.0.0.1\"\n[store]\nkey_file = \"k\"\n\
         [kis]\nbase_url = \"http://127.0.0.1:9\"\n",
        std::iter::empty(),
    )
    .unwrap();
    let rules = crate::classify::Rules::parse(include_str!("../../mappings/rules.toml")).unwrap();
    let pipeline = Arc::new(
        crate::pipeline::Pipeline::new(
            &config,
            store.clone(),
            crate::seal::Sealer::from_key([1; 32]),
            rules,
        )
        .unwrap(),
    );
    tokio::time::pause();
    let (tx, rx) = watch::channel(false);
    let leader = super::leader::Leadership::new(&store, super::leader::Role::Jobs, "w");
    let tasks = jobs::spawn(
        &config.schedule,
        store,
        pipeline,
        leader,
        at("2026-11-28T10:00:30Z"),
        rx.into(),
    );
    assert_eq!(tasks.len(), 4);
    settle().await;
    let before = tokio::time::Instant::now();
    tx.send(true).unwrap();
    let joined = tokio::time::timeout(Duration::from_secs(3600), async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
    assert!(joined.is_ok(), "a job did not stop on shutdown");
    // The split sweep was 30 s away: a loop that waited for it would have
    // moved the paused clock.
    assert!(
        before.elapsed() < Duration::from_millis(1),
        "{:?}",
        before.elapsed()
    );
}
