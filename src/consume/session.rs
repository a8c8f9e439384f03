//! Broker sessions: connect (with backoff), declare the topology, run the
//! events and receipts consumers and the deletion relay on that connection;
//! when the connection or a channel fails, or the broker cancels a
//! consumer, end the session and start a new one. Nothing is acked across
//! sessions: deliveries of a failed session are redelivered by the broker
//! and found terminal by the idempotent store.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use super::{Broker, SessionEnd, consume_events, consume_receipts};
use crate::config::Config;
use crate::delete::relay;
use crate::pipeline::Pipeline;
use crate::push::Backoff;
use crate::seal::Sealer;
use crate::store::{Store, millis};
use crate::telemetry;

/// First and longest wait between connection attempts.
pub const RECONNECT: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

/// Runs broker sessions until `shutdown` flips. Fails only on a
/// configuration that no session can run with (a deletion adapter's).
pub async fn run(
    config: &Config,
    pipeline: Arc<Pipeline>,
    store: Store,
    sealer: Sealer,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let health = pipeline.health.clone();
    let mut backoff = Backoff::new(RECONNECT.0, RECONNECT.1);
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let broker = match Broker::connect(&config.broker).await {
            Ok(b) => b,
            Err(e) => {
                health.set_broker_up(false);
                let delay = backoff.next_delay(None);
                tracing::warn!(error = %e, attempt = backoff.attempts(), delay_ms = delay.as_millis() as u64, "cannot connect to the broker; retrying");
                if wait(delay, &shutdown).await {
                    return Ok(());
                }
                continue;
            }
        };
        backoff = Backoff::new(RECONNECT.0, RECONNECT.1);
        health.set_broker_up(true);
        tracing::info!(
            queue = %config.broker.events_queue,
            prefetch = config.broker.prefetch,
            concurrency = config.pipeline.concurrency,
            "broker session started"
        );
        let end = session(config, &broker, &pipeline, &store, &sealer, &shutdown).await;
        health.set_broker_up(false);
        broker.close().await;
        let cause = match &end? {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::Cancelled => "consumer_cancelled",
            SessionEnd::Lost(e) => {
                tracing::warn!(error = %e, "broker session failed");
                "connection_lost"
            }
        };
        telemetry::broker_reconnect(cause);
        if wait(backoff.next_delay(None), &shutdown).await {
            return Ok(());
        }
    }
}

/// Sleeps `delay`; `true` when shutdown came first.
async fn wait(delay: Duration, shutdown: &watch::Receiver<bool>) -> bool {
    let mut shutdown = shutdown.clone();
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown.changed() => true,
    }
}

async fn session(
    config: &Config,
    broker: &Broker,
    pipeline: &Arc<Pipeline>,
    store: &Store,
    sealer: &Sealer,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<SessionEnd> {
    // The session stops on the global shutdown or when a part of it fails.
    let (stop_tx, stop) = watch::channel(false);
    let adapter_tasks = crate::app::spawn_deletion_adapters(config, broker, &stop)?;
    let adt_task = if config.adt.enabled {
        let feed = crate::hl7::feed::AdtFeed {
            store: store.clone(),
            sealer: sealer.clone(),
            kis: crate::push::Kis::new(&config.kis)?,
            config: config.adt.clone(),
        };
        let (broker, stop) = (broker.clone(), stop.clone());
        let backoff = (config.kis.backoff_initial, config.kis.backoff_max);
        tracing::info!(queue = %config.adt.queue, "ADT feed enabled");
        Some(tokio::spawn(async move {
            crate::hl7::feed::consume_adt(&broker, &feed, backoff, stop).await
        }))
    } else {
        None
    };
    let forward = {
        let mut global = shutdown.clone();
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            while !*global.borrow() {
                if global.changed().await.is_err() {
                    break;
                }
            }
            let _ = stop_tx.send(true);
        })
    };
    let relay_task = tokio::spawn(relay_loop(
        store.clone(),
        sealer.clone(),
        broker.clone(),
        config.schedule.relay_interval,
        config.deletion.stuck_after,
        stop.clone(),
    ));
    let mut receipts_task = {
        let (broker, store, stop) = (broker.clone(), store.clone(), stop.clone());
        tokio::spawn(async move { consume_receipts(&broker, store, stop).await })
    };
    let events = consume_events(
        broker,
        pipeline.clone(),
        config.pipeline.concurrency,
        config.pipeline.drain_timeout,
        stop.clone(),
    );
    tokio::pin!(events);
    let mut receipts_done = false;
    let end = tokio::select! {
        end = &mut events => end,
        receipts = &mut receipts_task => {
            receipts_done = true;
            let global = *shutdown.borrow();
            let _ = stop_tx.send(true);
            let events_end = events.await;
            match (global, receipts) {
                (true, _) => events_end,
                (false, Ok(Err(e))) => SessionEnd::Lost(e),
                (false, _) => SessionEnd::Cancelled,
            }
        }
    };
    let _ = stop_tx.send(true);
    forward.abort();
    let _ = relay_task.await;
    for task in adapter_tasks {
        match task.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "deletion adapter ended with an error"),
            Err(e) => tracing::warn!(error = %e, "deletion adapter task failed"),
            Ok(Ok(())) => {}
        }
    }
    if let Some(task) = adt_task {
        match task.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "ADT consumer ended with an error"),
            Err(e) => tracing::warn!(error = %e, "ADT consumer task failed"),
            Ok(Ok(())) => {}
        }
    }
    if !receipts_done {
        match receipts_task.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "receipts consumer ended with an error"),
            Err(e) => tracing::warn!(error = %e, "receipts consumer task failed"),
            Ok(Ok(())) => {}
        }
    }
    Ok(end)
}

/// Counts stuck deletions into the `deletions_stuck` gauge.
async fn gauge_stuck(store: &Store, stuck_after: Duration) {
    let before = millis(Utc::now()) - stuck_after.as_millis() as i64;
    match store.deletion_counts(before).await {
        Ok((_, stuck)) => telemetry::deletions_stuck(stuck),
        Err(e) => tracing::warn!(error = %e, "cannot count stuck deletions"),
    }
}

async fn relay_loop(
    store: Store,
    sealer: Sealer,
    broker: Broker,
    every: Duration,
    stuck_after: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_gauge: Option<tokio::time::Instant> = None;
    loop {
        if last_gauge.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
            gauge_stuck(&store, stuck_after).await;
            last_gauge = Some(tokio::time::Instant::now());
        }
        match relay::relay_once(&store, &sealer, &broker, millis(Utc::now()), 256).await {
            Ok(n) => telemetry::deletions_requested(n),
            Err(e) => tracing::warn!(error = %e, "deletion relay pass failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {
                // One last pass so confirmed archives do not wait for the next start.
                if let Ok(n) = relay::relay_once(&store, &sealer, &broker, millis(Utc::now()), 1024).await {
                    telemetry::deletions_requested(n);
                }
                return;
            }
        }
    }
}
