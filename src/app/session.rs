//! Broker sessions: connect (with backoff), declare the topology, run the
//! events and receipts consumers and the deletion relay on that connection;
//! when the connection or a channel fails, or the broker cancels a
//! consumer, end the session and start a new one. Nothing is acked across
//! sessions: deliveries of a failed session are redelivered by the broker
//! and found terminal by the idempotent store.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;

use crate::config::{AdapterKind, Config};
use crate::consume::{self, Broker, SessionEnd, consume_events};
use crate::delete::receipts::consume_receipts;
use crate::delete::relay;
use crate::pipeline::Pipeline;
use crate::retry::{Backoff, always, retry};
use crate::seal::Sealer;
use crate::shutdown::Shutdown;
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
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let health = pipeline.health().clone();
    let reconnect = || Backoff::new(RECONNECT.0, RECONNECT.1);
    let connect_failed = always(|e: &consume::BrokerError, attempt| {
        health.set_broker_up(false);
        tracing::warn!(error = %e, attempt, "cannot connect to the broker; retrying");
    });
    loop {
        if shutdown.is_shutdown() {
            return Ok(());
        }
        let connected = retry(&connect_failed, reconnect(), &mut shutdown, || {
            Broker::connect(&config.broker)
        })
        .await;
        let Ok(broker) = connected else {
            return Ok(());
        };
        let broker = broker
            .signing(pipeline.intake_handle())
            .sealing(sealer.clone());
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
        telemetry::emit(telemetry::BrokerReconnect { cause });
        if shutdown.sleep(reconnect().next_delay(None)).await {
            return Ok(());
        }
    }
}

async fn session(
    config: &Config,
    broker: &Broker,
    pipeline: &Arc<Pipeline>,
    store: &Store,
    sealer: &Sealer,
    shutdown: &Shutdown,
) -> anyhow::Result<SessionEnd> {
    // The session stops on the global shutdown or when a part of it fails.
    let (stop_session, stop) = shutdown.child();
    let adapter_tasks = spawn_deletion_adapters(config, broker, store, &stop).await?;
    let adt_task = if config.adt.enabled {
        let feed = Arc::new(crate::hl7::feed::AdtFeed {
            store: store.clone(),
            sealer: sealer.clone(),
            kis: crate::push::Kis::new(&config.kis)?
                .with_search_cache(pipeline.kis().search_cache().clone()),
            config: config.adt.clone(),
        });
        let (broker, stop) = (broker.clone(), stop.clone());
        let drain = config.pipeline.drain_timeout;
        let backoff = (config.kis.backoff_initial, config.kis.backoff_max);
        tracing::info!(queue = %config.adt.queue, "ADT feed enabled");
        Some(tokio::spawn(async move {
            crate::hl7::feed::consume_adt(&broker, feed, backoff, drain, stop).await
        }))
    } else {
        None
    };
    let relay_task = tokio::spawn(relay_loop(
        store.clone(),
        sealer.clone(),
        broker.clone(),
        config.schedule.relay_interval,
        config.deletion.stuck_after,
        i64::from(config.deletion.relay_batch),
        stop.clone(),
    ));
    let mut receipts_task = {
        let (broker, store, stop) = (broker.clone(), store.clone(), stop.clone());
        let intake = pipeline.intake_handle();
        let drain = config.pipeline.drain_timeout;
        tokio::spawn(async move { consume_receipts(&broker, store, intake, drain, stop).await })
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
            let global = shutdown.is_shutdown();
            stop_session.fire();
            let events_end = events.await;
            match (global, receipts) {
                (true, _) => events_end,
                (false, Ok(Err(e))) => SessionEnd::Lost(e),
                (false, _) => SessionEnd::Cancelled,
            }
        }
    };
    stop_session.fire();
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

async fn relay_loop(
    store: Store,
    sealer: Sealer,
    broker: Broker,
    every: Duration,
    stuck_after: Duration,
    batch: i64,
    mut shutdown: Shutdown,
) {
    let mut last_gauge: Option<tokio::time::Instant> = None;
    loop {
        if last_gauge.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
            crate::delete::gauge_stuck(&store, stuck_after, millis(Utc::now())).await;
            match broker.queue_depths().await {
                Ok((events, dead)) => {
                    telemetry::measure::queue_messages("events", events);
                    telemetry::measure::queue_messages("dead_letter", dead);
                }
                Err(e) => tracing::warn!(error = %e, "cannot count queue messages"),
            }
            last_gauge = Some(tokio::time::Instant::now());
        }
        let full =
            match relay::relay_once(&store, &sealer, &broker, millis(Utc::now()), batch).await {
                Ok(n) => {
                    telemetry::emit(telemetry::DeletionsRequested { count: n });
                    n as i64 >= batch
                }
                Err(e) => {
                    tracing::warn!(error = %e, "deletion relay pass failed");
                    false
                }
            };
        // A full batch leaves more due: the next pass starts at once.
        let pause = if full { Duration::ZERO } else { every };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.recv() => {
                // One last pass so confirmed archives do not wait for the next start.
                if let Ok(n) = relay::relay_once(&store, &sealer, &broker, millis(Utc::now()), batch).await {
                    telemetry::emit(telemetry::DeletionsRequested { count: n });
                }
                return;
            }
        }
    }
}

type AdapterTask = tokio::task::JoinHandle<Result<(), consume::BrokerError>>;

/// Starts the deletion adapter configured for each source
/// (`[deletion.<source>] adapter`); `none` leaves the queue to a gateway.
/// Each adapter's queue is declared and bound before this returns, so the
/// relay never publishes a command its adapter's queue misses.
async fn spawn_deletion_adapters(
    config: &Config,
    broker: &Broker,
    store: &crate::store::Store,
    shutdown: &Shutdown,
) -> anyhow::Result<Vec<AdapterTask>> {
    use crate::delete::{adapter, matrix::MatrixDeleter, whatsapp::WhatsAppDeleter};
    let settings = adapter::AdapterSettings::from(&config.deletion);
    async fn start<E: adapter::Executor>(
        broker: &Broker,
        executor: E,
        settings: adapter::AdapterSettings,
        shutdown: &Shutdown,
    ) -> anyhow::Result<AdapterTask> {
        broker.declare_deletion_queue(executor.source()).await?;
        let run = adapter::run(
            broker.clone(),
            Arc::new(executor),
            settings,
            shutdown.clone(),
        );
        Ok(tokio::spawn(run))
    }
    let mut tasks = Vec::new();
    if config.deletion.matrix.adapter == AdapterKind::Matrix {
        let executor = MatrixDeleter::new(&config.matrix)?
            .context("matrix.homeserver_url is not a URL")?
            .with_media_uses(store.clone());
        tasks.push(start(broker, executor, settings, shutdown).await?);
    }
    if config.deletion.whatsapp.adapter == AdapterKind::Whatsapp {
        let executor = WhatsAppDeleter::new(&config.media)?
            .context("media.api_base_url is not a URL")?
            .with_media_uses(store.clone());
        tasks.push(start(broker, executor, settings, shutdown).await?);
    }
    Ok(tasks)
}
