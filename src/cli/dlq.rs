//! `chartbridge dlq list|show|replay|purge`: the dead-letter queue. Dead
//! letters are read with `basic.get` and held unacknowledged
//! (`chartbridge::dlq::Held`); only a confirmed replay or a purge removes
//! one, everything else goes back to the queue when the command ends.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chartbridge::audit::Action;
use chartbridge::config::Config;
use chartbridge::consume::Broker;
use chartbridge::dlq::{self, DeadLetter, Filter, Held, Replayed};
use chartbridge::store::millis;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::ops::{duration, progress, time};
use crate::out::{ChangeArgs, outln};

/// Filters of the dead-letter commands.
#[derive(Args)]
pub struct FilterArgs {
    /// Only dead letters with this reason code (repeatable).
    #[arg(long = "reason")]
    reasons: Vec<String>,
    /// Only the dead letter with this id (repeatable).
    #[arg(long = "id")]
    ids: Vec<String>,
    /// Only those dead-lettered at least this long ago (`2h`, `3days`).
    #[arg(long, value_parser = duration)]
    older_than: Option<Duration>,
    /// Only those dead-lettered at most this long ago.
    #[arg(long, value_parser = duration)]
    newer_than: Option<Duration>,
    /// Only those taken from this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Read at most this many dead letters from the queue.
    #[arg(long, default_value_t = 10_000)]
    limit: usize,
}

impl FilterArgs {
    fn filter(&self) -> Filter {
        Filter {
            reasons: self.reasons.clone(),
            ids: self.ids.clone(),
            older_than: self.older_than,
            newer_than: self.newer_than,
            queue: self.queue.clone(),
        }
    }

    fn narrows(&self) -> bool {
        !(self.reasons.is_empty()
            && self.ids.is_empty()
            && self.older_than.is_none()
            && self.newer_than.is_none()
            && self.queue.is_none())
    }
}

/// `chartbridge dlq …`
#[derive(Subcommand)]
pub enum DlqCommand {
    /// Dead letters: id, reason, age, queue, size, correlation id, whether
    /// replayed before. No content.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter with its payload (content: for reviewers, recorded
    /// in the audit trail).
    Show {
        id: String,
        /// Write the payload to this new file (owner-only) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Why (recorded sealed in the audit trail).
        #[arg(long)]
        why: Option<String>,
        /// Read at most this many dead letters to find it.
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
    },
    /// Publish matching dead letters back into the queue they came from,
    /// each at most once (a dead letter replayed before is refused).
    Replay {
        #[command(flatten)]
        filter: FilterArgs,
        /// Every dead letter (without filters).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Remove matching dead letters from the queue.
    Purge {
        #[command(flatten)]
        filter: FilterArgs,
        /// Every dead letter (without filters).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

fn row(d: &DeadLetter, now: i64, replayed: Option<i64>) -> serde_json::Value {
    json!({
        "id": d.id, "reason": d.reason, "detail": d.detail, "queue": d.queue,
        "dead_lettered_at": d.dead_lettered_at,
        "age_seconds": d.dead_lettered_at.map(|t| (now - t).max(0) / 1000),
        "correlation_id": d.correlation_id, "replay_of": d.replay_of,
        "bytes": d.bytes, "replayed_at": replayed,
    })
}

fn print_table(rows: &[serde_json::Value]) -> anyhow::Result<()> {
    outln!(
        "{:<16}  {:<24}  {:>8}  {:<24}  {:>7}  {:<16}  note",
        "id",
        "reason",
        "age",
        "queue",
        "bytes",
        "correlation"
    );
    for r in rows {
        let age = r["age_seconds"]
            .as_i64()
            .map(|s| crate::quarantine::age(s * 1000, 0))
            .unwrap_or_else(|| "?".into());
        let mut note = Vec::new();
        if let Some(at) = r["replayed_at"].as_i64() {
            note.push(format!("replayed {}", time(Some(at))));
        }
        if let Some(of) = r["replay_of"].as_str() {
            note.push(format!("failed again after replay of {of}"));
        }
        outln!(
            "{:<16}  {:<24}  {:>8}  {:<24}  {:>7}  {:<16}  {}",
            r["id"].as_str().unwrap_or(""),
            r["reason"].as_str().unwrap_or(""),
            age,
            r["queue"].as_str().unwrap_or("-"),
            r["bytes"].as_u64().unwrap_or(0),
            r["correlation_id"].as_str().unwrap_or("-"),
            note.join("; ")
        );
    }
    Ok(())
}

pub async fn run(config: &Config, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let (store, sealer) = chartbridge::app::open_state(config).await?;
    let broker = Broker::connect(&config.broker).await?;
    let limit = match &command {
        DlqCommand::List { filter, .. }
        | DlqCommand::Replay { filter, .. }
        | DlqCommand::Purge { filter, .. } => filter.limit,
        DlqCommand::Show { limit, .. } => *limit,
    };
    if let DlqCommand::Replay { filter, all, .. } | DlqCommand::Purge { filter, all, .. } = &command
    {
        anyhow::ensure!(
            *all || filter.narrows(),
            "give a filter (--reason, --id, --older-than, --newer-than, --queue) or --all"
        );
    }
    // Payloads stay in memory only for what is shown or replayed.
    let now = millis(chrono::Utc::now());
    let keep = |d: &DeadLetter| match &command {
        DlqCommand::Show { id, .. } => d.id == *id,
        DlqCommand::Replay { filter, .. } => filter.filter().matches(d, now),
        DlqCommand::List { .. } | DlqCommand::Purge { .. } => false,
    };
    let bar = progress(0, "reading dead letters");
    let held = Held::take(&broker, &sealer, (limit, keep), |n, of| {
        bar.set_length(of.max(n));
        bar.set_position(n);
    })
    .await?;
    bar.finish_and_clear();
    if held.len() < held.in_queue as usize && held.len() == limit {
        eprintln!(
            "read {} of {} dead letters (--limit); the rest are not considered",
            held.len(),
            held.in_queue
        );
    }
    let result = act(config, (&store, &sealer), &broker, &held, command, now).await;
    let released = held.release().await;
    broker.close().await;
    store.close().await;
    let code = result?;
    released?;
    Ok(code)
}

/// Acts on the held dead letters; `now` is the instant the filters were
/// evaluated at while reading (the payloads kept are the ones they matched).
async fn act(
    config: &Config,
    (store, sealer): (&chartbridge::store::Store, &chartbridge::seal::Sealer),
    broker: &Broker,
    held: &Held,
    command: DlqCommand,
    now: i64,
) -> anyhow::Result<ExitCode> {
    let replayed = store.replayed().await?;
    let rows = |indexes: &[usize]| -> Vec<serde_json::Value> {
        indexes
            .iter()
            .map(|&i| {
                let d = held.get(i).0;
                row(d, now, replayed.get(&d.id).copied())
            })
            .collect()
    };
    match command {
        DlqCommand::List { filter, json } => {
            let listed = rows(&held.matching(&filter.filter(), now));
            if json {
                outln!("{}", serde_json::to_string_pretty(&listed)?);
            } else {
                print_table(&listed)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Show {
            id, out, json, why, ..
        } => {
            let index = held.find(&id)?;
            crate::held::authorise_reviewer(config)?;
            crate::conversation::record(
                store,
                sealer,
                Action::DeadLetterShow,
                format!("dead-letter {id}"),
                why.as_deref(),
                None,
            )
            .await?;
            let (d, delivery) = held.get(index);
            let payload = dlq::payload_of(delivery, sealer)?;
            let meta = row(d, now, replayed.get(&d.id).copied());
            crate::held::show_payload(&meta, &payload, out.as_deref(), json)
        }
        DlqCommand::Replay {
            filter,
            change: ChangeArgs { dry_run, json, why },
            ..
        } => {
            let matching = held.matching(&filter.filter(), now);
            if dry_run {
                return report(json, "would replay", &rows(&matching), &[]);
            }
            let actor = crate::conversation::record(
                store,
                sealer,
                Action::Replay,
                format!(
                    "dead-letters {} {}",
                    matching.len(),
                    filter.filter().describe()
                ),
                why.as_deref(),
                None,
            )
            .await?;
            let queues = dlq::replay_queues(config);
            let bar = progress(matching.len() as u64, "replaying");
            let mut done = Vec::new();
            let mut refused = Vec::new();
            for &i in &matching {
                let id = held.get(i).0.id.clone();
                match dlq::replay(
                    broker,
                    store,
                    held,
                    i,
                    (&queues, actor.as_str(), sealer),
                    now,
                )
                .await
                {
                    Ok(Replayed::Published { queue }) => {
                        done.push(json!({"id": id, "queue": queue}))
                    }
                    Ok(Replayed::AlreadyReplayed { at }) => refused.push(
                        json!({"id": id, "why": format!("replayed before, at {}", time(Some(at)))}),
                    ),
                    Err(e) => refused.push(json!({"id": id, "why": e.to_string()})),
                }
                bar.inc(1);
            }
            bar.finish_and_clear();
            report(json, "replayed", &done, &refused)
        }
        DlqCommand::Purge {
            filter,
            change: ChangeArgs { dry_run, json, why },
            ..
        } => {
            let matching = held.matching(&filter.filter(), now);
            if dry_run {
                return report(json, "would purge", &rows(&matching), &[]);
            }
            crate::conversation::record(
                store,
                sealer,
                Action::DeadLetterPurge,
                format!(
                    "dead-letters {} {}",
                    matching.len(),
                    filter.filter().describe()
                ),
                why.as_deref(),
                None,
            )
            .await?;
            let bar = progress(matching.len() as u64, "purging");
            let mut done = Vec::new();
            for &i in &matching {
                held.ack(i).await?;
                done.push(json!({"id": held.get(i).0.id}));
                bar.inc(1);
            }
            bar.finish_and_clear();
            report(json, "purged", &done, &[])
        }
    }
}

/// Prints what was done (and refused); exit status 1 when something was refused.
fn report(
    json: bool,
    what: &str,
    done: &[serde_json::Value],
    refused: &[serde_json::Value],
) -> anyhow::Result<ExitCode> {
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ what.replace(' ', "_"): done, "refused": refused })
            )?
        );
    } else {
        for d in done {
            outln!(
                "{what} {}{}",
                d["id"].as_str().unwrap_or(""),
                d["queue"]
                    .as_str()
                    .map(|q| format!(" into {q}"))
                    .unwrap_or_default()
            );
        }
        for r in refused {
            outln!(
                "refused {}: {}",
                r["id"].as_str().unwrap_or(""),
                r["why"].as_str().unwrap_or("")
            );
        }
        eprintln!("{what}: {}, refused: {}", done.len(), refused.len());
    }
    Ok(if refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
