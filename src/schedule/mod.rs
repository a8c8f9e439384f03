//! Cron-driven jobs. [`run`] waits for each next instant of a cron schedule
//! (seconds first, UTC) and runs the job, until shutdown.

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// Runs `job` at every instant of `schedule` after `start`, until `shutdown`
/// flips. The next instant is computed from the previous one, not from the
/// wall clock, so a slow job is not skipped and tests can drive it with
/// paused tokio time.
pub async fn run<F, Fut>(
    schedule: cron::Schedule,
    start: DateTime<Utc>,
    mut shutdown: watch::Receiver<bool>,
    mut job: F,
) where
    F: FnMut(DateTime<Utc>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut cursor = start;
    loop {
        let Some(next) = schedule.after(&cursor).next() else {
            return;
        };
        let wait = (next - cursor).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        job(next).await;
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use std::sync::{Arc, Mutex};

    #[tokio::test(start_paused = true)]
    async fn fires_on_each_instant_and_stops_on_shutdown() {
        let schedule = cron::Schedule::from_str("0 */5 * * * *").unwrap();
        let start = DateTime::parse_from_rfc3339("2026-11-28T10:01:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let (tx, rx) = watch::channel(false);
        let fired = Arc::new(Mutex::new(Vec::new()));
        let f = fired.clone();
        let task = tokio::spawn(run(schedule, start, rx, move |at| {
            let f = f.clone();
            async move { f.lock().unwrap().push(at.to_rfc3339()) }
        }));
        tokio::time::sleep(std::time::Duration::from_secs(4 * 60 + 1)).await;
        assert_eq!(fired.lock().unwrap().len(), 1);
        tokio::time::sleep(std::time::Duration::from_secs(10 * 60)).await;
        assert_eq!(
            *fired.lock().unwrap(),
            vec![
                "2026-11-28T10:05:00+00:00",
                "2026-11-28T10:10:00+00:00",
                "2026-11-28T10:15:00+00:00"
            ]
        );
        tx.send(true).unwrap();
        task.await.unwrap();
    }
}
