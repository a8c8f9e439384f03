//! Wiring for the binary: the worker's tasks, and the offline commands.
//! [`session`] runs the broker sessions.

pub mod audit;
pub mod backup;
pub mod rotate;
pub mod session;
pub mod singletons;

pub use crate::pipeline::offline_map;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;

use crate::classify::Rules;
use crate::config::Config;
use crate::consume::Broker;
use crate::pipeline::Pipeline;
use crate::prove::note::Signer;
use crate::prove::service;
use crate::schedule::leader::Role;
use crate::seal::Sealer;
use crate::shutdown::Shutdown;
use crate::store::schema::Schema;
use crate::store::{Store, millis};
use crate::{schedule, telemetry};

/// Opens what every command that touches state needs: the keyring, and
/// the store naming rows with its keys. The schema must be current: no
/// command but `migrate` (and a worker's start) migrates.
pub async fn open_state(config: &Config) -> anyhow::Result<(Store, Sealer)> {
    let sealer = load_sealer(config)?;
    let store = open_store(config).await?.with_pseudonyms(&sealer);
    Ok((store, sealer))
}

/// The at-rest keyring named by `store.key_file`.
pub fn load_sealer(config: &Config) -> anyhow::Result<Sealer> {
    Sealer::load(&config.store.key_file)
        .context("the at-rest key is required (create one with `chartbridge keygen`)")
}

/// Opens the store alone, for commands that need no at-rest key (they
/// cannot look a message up by its key); the schema must be current.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    open_store_with(config, Schema::Current).await
}

/// Opens the store, doing `schema` about its migrations.
pub async fn open_store_with(config: &Config, schema: Schema) -> anyhow::Result<Store> {
    Store::open_schema(
        config.store.url.expose(),
        config.store.max_connections,
        schema,
    )
    .await
    .context("cannot open the store")
}

/// Opens the store for a long-running process (`run`, `matrix-source`),
/// naming rows with `sealer`'s keys: migrating first, and converting rows
/// written before migration 0018 to pseudonyms, unless
/// `store.migrate_on_start = false` (then the schema must be current).
pub async fn open_state_at_start(config: &Config, sealer: &Sealer) -> anyhow::Result<Store> {
    if !config.store.migrate_on_start {
        return Ok(open_store(config).await?.with_pseudonyms(sealer));
    }
    Store::open(
        config.store.url.expose(),
        config.store.max_connections,
        sealer,
    )
    .await
    .context("cannot open the store")
}

/// The checkpoint signer named by `proofs.signing_key_file`, if any.
pub fn load_signer(config: &Config) -> anyhow::Result<Option<Signer>> {
    config
        .proofs
        .signing_key_file
        .as_deref()
        .map(|path| service::load_signer(path).context("cannot load proofs.signing_key_file"))
        .transpose()
}

/// Runs the worker until SIGTERM or SIGINT, then drains and returns.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (trigger, shutdown) = Shutdown::new();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; draining");
        trigger.fire();
    });
    run_until(config, shutdown).await
}

/// Runs the worker until `shutdown` flips.
pub async fn run_until(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let rules = Rules::load(&config.mappings.rules_file)?;
    let signer = load_signer(&config)?;
    let sealer = load_sealer(&config)?;
    let store = open_state_at_start(&config, &sealer).await?;
    if let Some(dir) = &config.proofs.checkpoint_dir {
        singletons::refuse_rolled_back_log(&store, dir).await?;
    }
    if audit::record_config_change(&store, &sealer, &config).await? {
        tracing::info!("configuration changed since the last start; recorded in the audit trail");
    }
    let pipeline = Arc::new(Pipeline::new(
        &config,
        store.clone(),
        sealer.clone(),
        rules,
    )?);
    if let Some(uses) = store
        .backfill_held_media(&sealer, &schedule::leader::worker_name())
        .await?
    {
        tracing::info!(uses, "media uses of held Matrix events recorded");
    }
    telemetry::install();
    let http_listener = crate::http::bind(&config.http)
        .await
        .with_context(|| format!("cannot listen on http.listen {}", config.http.listen))?;
    let console = if config.console.enabled && http_listener.is_some() {
        Some(
            crate::console::ConsoleState::new(
                &config.console,
                Some(store.clone()),
                Some(sealer.clone()),
                Some(pipeline.clone()),
                Some((Arc::new(config.clone()), pipeline.health().clone())),
            )
            .await,
        )
    } else {
        None
    };
    let http_task = http_listener.map(|listener| {
        tracing::info!(address = ?listener.local_addr().ok(), "HTTP endpoint listening (/healthz, /readyz, /metrics)");
        let mut app = crate::http::router(crate::http::AppState {
            health: pipeline.health().clone(),
            store: Some(store.clone()),
        });
        if let Some(console) = console {
            app = app.merge(crate::console::router(console));
            tracing::info!("console enabled under /console");
        }
        tokio::spawn(crate::http::serve(listener, app, shutdown.clone()))
    });
    let upkeep = tokio::spawn(metrics_upkeep(shutdown.clone()));
    tracing::info!("worker started");
    notify_systemd(sd_notify::NotifyState::Ready);
    let prober = tokio::spawn(crate::health::probe_kis_while_open(
        pipeline.kis().clone(),
        shutdown.clone(),
    ));

    let worker = schedule::leader::worker_name();
    let every = config.schedule.leader_interval;
    let (jobs_leader, jobs_lead) =
        singletons::lead(&store, (Role::Jobs, &worker), every, &shutdown);
    let mut lead_tasks = vec![jobs_lead];
    let job_tasks = schedule::jobs::spawn(
        &config.schedule,
        store.clone(),
        pipeline.clone(),
        jobs_leader,
        Utc::now(),
        shutdown.clone(),
    );
    let checkpoint_task = match signer {
        Some(signer) => {
            let (leader, lead) =
                singletons::lead(&store, (Role::Checkpoints, &worker), every, &shutdown);
            lead_tasks.push(lead);
            let signing = singletons::Signing {
                schedule: config.proofs.checkpoint_schedule.schedule().clone(),
                signer,
                origin: config.proofs.origin.clone(),
                publish_dir: config.proofs.checkpoint_dir.clone(),
                leader,
            };
            Some(tokio::spawn(singletons::checkpoint_loop(
                store.clone(),
                signing,
                shutdown.clone(),
            )))
        }
        None => {
            tracing::info!("no proofs.signing_key_file; checkpoints are not signed");
            None
        }
    };
    // ADT over MLLP (the queue consumer runs in the broker session).
    let mllp_task = match (&config.adt.mllp_listen, config.adt.enabled) {
        (Some(addr), true) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for MLLP on {addr}"))?;
            tracing::info!(%addr, tls = config.adt.mllp_tls.is_some(), "ADT over MLLP enabled");
            let feed = Arc::new(crate::hl7::feed::AdtFeed {
                store: store.clone(),
                sealer: sealer.clone(),
                kis: crate::push::Kis::new(&config.kis)?
                    .with_search_cache(pipeline.kis().search_cache().clone()),
                config: config.adt.clone(),
            });
            let guard = crate::hl7::mllp::Guard::from_config(&config.adt)?;
            Some(tokio::spawn(crate::hl7::mllp::serve(
                listener,
                feed,
                guard,
                (config.kis.backoff_initial, config.kis.backoff_max),
                shutdown.clone(),
            )))
        }
        _ => None,
    };

    // Broker sessions (events, receipts, deletion relay and adapters, the
    // ADT feed), reconnecting until shutdown.
    let result = session::run(&config, pipeline, store.clone(), sealer, shutdown).await;
    notify_systemd(sd_notify::NotifyState::Stopping);
    let _ = upkeep.await;
    for task in job_tasks.into_iter().chain(lead_tasks) {
        let _ = task.await;
    }
    let _ = prober.await;
    if let Some(task) = checkpoint_task {
        let _ = task.await;
    }
    if let Some(task) = http_task {
        let _ = task.await;
    }
    if let Some(task) = mllp_task {
        let _ = task.await;
    }
    store.close().await;
    tracing::info!(counters = ?telemetry::snapshot(), gauges = ?telemetry::gauges(), "worker stopped");
    result
}

/// Tells systemd (`Type=notify`, `NOTIFY_SOCKET`) about `state`; nothing
/// happens outside systemd.
fn notify_systemd(state: sd_notify::NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Drains histogram samples every few seconds until shutdown.
async fn metrics_upkeep(mut shutdown: Shutdown) {
    while !shutdown.sleep(Duration::from_secs(5)).await {
        telemetry::upkeep();
    }
}

/// `chartbridge matrix-source`: the bot's sync loop until SIGTERM.
pub async fn run_matrix_source(config: Config) -> anyhow::Result<()> {
    let (trigger, shutdown) = Shutdown::new();
    tokio::spawn(async move {
        wait_for_signal().await;
        trigger.fire();
    });
    // The key file names the account the cursor is kept for (a token).
    let sealer = load_sealer(&config)?;
    let store = open_state_at_start(&config, &sealer).await?;
    let intake = crate::auth::Intake::load(&config)?;
    let broker = Broker::connect(&config.broker)
        .await
        .context("cannot connect to the broker")?
        .signing(Arc::new(intake));
    let result = if config.matrix.e2ee.is_some() {
        run_e2ee_source(&config, store.clone(), broker.clone(), sealer, shutdown).await
    } else {
        let source = crate::source::matrix::MatrixSource::connect(
            &config.matrix,
            store.clone(),
            broker.clone(),
        )
        .await
        .context("cannot start the Matrix source")?;
        source.run(shutdown).await.map_err(Into::into)
    };
    broker.close().await;
    store.close().await;
    result
}

/// `[matrix.e2ee]`: the source as an end-to-end-encryption device.
#[cfg(feature = "e2ee")]
async fn run_e2ee_source(
    config: &Config,
    store: Store,
    broker: Broker,
    sealer: Sealer,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let source = crate::source::e2ee::E2eeSource::connect(&config.matrix, store, broker, sealer)
        .await
        .context("cannot start the Matrix source (end-to-end encryption)")?;
    source.run(shutdown).await.map_err(Into::into)
}

/// `chartbridge matrix-verify-user`: see `E2eeSource::verify_user`.
#[cfg(feature = "e2ee")]
pub async fn matrix_verify_user(
    config: Config,
    user: &str,
    master_key: &str,
) -> anyhow::Result<()> {
    let (store, sealer) = open_state(&config).await?;
    let broker = Broker::connect(&config.broker)
        .await
        .context("cannot connect to the broker")?;
    let source = crate::source::e2ee::E2eeSource::connect(&config.matrix, store, broker, sealer)
        .await
        .context("cannot open the Matrix device")?;
    source.verify_user(user, master_key).await?;
    println!("verified");
    Ok(())
}

#[cfg(not(feature = "e2ee"))]
pub async fn matrix_verify_user(
    _config: Config,
    _user: &str,
    _master_key: &str,
) -> anyhow::Result<()> {
    anyhow::bail!("this build has no end-to-end encryption (cargo feature e2ee)")
}

#[cfg(not(feature = "e2ee"))]
async fn run_e2ee_source(
    _config: &Config,
    _store: Store,
    _broker: Broker,
    _sealer: Sealer,
    _shutdown: Shutdown,
) -> anyhow::Result<()> {
    anyhow::bail!(
        "matrix.e2ee is configured but this build has no end-to-end encryption (cargo feature e2ee)"
    )
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// The deletion part of `chartbridge status`: counts per state, failures by
/// reason, and deletions without a final receipt after `stuck_after`.
pub async fn print_deletion_status(
    out: &mut impl std::io::Write,
    store: &Store,
    stuck_after: Duration,
) -> anyhow::Result<()> {
    let now = millis(Utc::now());
    let before = now - stuck_after.as_millis() as i64;
    let (deletions, stuck) = store.deletion_counts(before).await?;
    writeln!(out, "deletions:")?;
    for (state, n) in deletions {
        writeln!(out, "  {state:<13} {n}")?;
    }
    for (source, reason, n) in store.failed_deletions().await? {
        writeln!(out, "  failed        {source:<9} {reason:<28} {n}")?;
    }
    let threshold = humantime::format_duration(stuck_after);
    writeln!(
        out,
        "  stuck (requested over {threshold} ago, no final receipt): {stuck}"
    )?;
    for d in store.stuck_deletions(before, 20).await? {
        let age = humantime::format_duration(Duration::from_secs(
            ((now - d.requested_at_ms) / 1000).max(0) as u64,
        ));
        writeln!(
            out,
            "    {} {:<9} {:<9} for {age} {}",
            d.deletion_id,
            d.source,
            d.state.as_str(),
            d.detail.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}
