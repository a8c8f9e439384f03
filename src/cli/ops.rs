//! The operator commands of issue 13: dead letters, deletions, trace,
//! import, schema migration, backup and restore. Each prints JSON with
//! `--json`, takes filters where it acts on many, and draws a progress bar
//! (stderr, terminals only) where it runs long. Every one that changes
//! state or shows content records itself in the audit trail first, as the
//! operating-system account running it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chartbridge::config::Config;
use chartbridge::prove::leaf::format_rfc3339_millis;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use crate::out::outln;

/// `chartbridge dlq|deletions|trace|import|migrate|backup|restore`.
#[derive(Subcommand)]
pub enum OpsCommand {
    /// The dead-letter queue: list, show, replay into its queue, purge.
    Dlq {
        #[command(subcommand)]
        command: crate::dlq::DlqCommand,
    },
    /// Deletions: list the failed and stuck ones, request them again.
    Deletions {
        #[command(subcommand)]
        command: crate::deletions::DeletionsCommand,
    },
    /// One message's path: ledger, states, KIS resources, leaf, deletion,
    /// receipts. ID: a quarantine item id, a correlation id, a deletion id
    /// or a KIS resource `Type/id`. Prints no identifiers.
    Trace {
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Publish exported events (directories of `*.json`, or files) to the
    /// events queue (DSK I.3); files published before are skipped, so an
    /// interrupted import resumes.
    Import(crate::import::ImportArgs),
    /// Apply pending schema migrations (back up first). No other command
    /// migrates; read-only ones fail while the schema is behind.
    Migrate {
        /// Show what would be applied.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a consistent, sealed snapshot of the SQLite database
    /// (`VACUUM INTO`, then sealed with the at-rest key). For PostgreSQL
    /// use `pg_dump` (docs/operations.md, "Backup").
    Backup {
        /// The backup file to create (it must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Why (recorded sealed in the audit trail).
        #[arg(long)]
        why: Option<String>,
    },
    /// Open a sealed backup into a new SQLite database file (then point
    /// `store.url` at it, or move it into place with the worker stopped).
    Restore {
        /// The backup file `backup` wrote.
        backup: PathBuf,
        /// The database file to create (it must not exist).
        #[arg(long)]
        to: PathBuf,
        /// Why (recorded sealed in the restored database's audit trail).
        #[arg(long)]
        why: Option<String>,
    },
}

pub async fn run(config: &Config, command: OpsCommand) -> anyhow::Result<ExitCode> {
    match command {
        OpsCommand::Dlq { command } => crate::dlq::run(config, command).await,
        OpsCommand::Deletions { command } => crate::deletions::run(config, command).await,
        OpsCommand::Trace { id, json } => trace(config, &id, json).await,
        OpsCommand::Import(args) => crate::import::run(config, args).await,
        OpsCommand::Migrate { dry_run, json } => {
            crate::backup::migrate(config, dry_run, json).await
        }
        OpsCommand::Backup { out, why } => crate::backup::backup(config, &out, why).await,
        OpsCommand::Restore { backup, to, why } => {
            crate::backup::restore(config, &backup, &to, why).await
        }
    }
}

/// A progress bar on stderr over `len` items (hidden when stderr is not a
/// terminal).
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// A time (Unix ms) as RFC 3339, `-` when absent.
pub fn time(ms: Option<i64>) -> String {
    ms.and_then(format_rfc3339_millis)
        .unwrap_or_else(|| "-".into())
}

/// `Duration` arguments (`30m`, `2days`).
pub fn duration(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text)
}

async fn trace(config: &Config, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let (store, sealer) = chartbridge::app::open_state(config).await?;
    let traces = chartbridge::trace::trace(&store, &sealer, id).await?;
    store.close().await;
    if json {
        outln!("{}", serde_json::to_string_pretty(&traces)?);
        return Ok(ExitCode::SUCCESS);
    }
    for t in &traces {
        outln!("message {} ({})", t.item_id, t.source);
        match &t.ledger {
            Some(l) => {
                outln!("  state        {} ({})", l.state, l.reason);
                outln!("  recorded     {}", time(Some(l.recorded_at)));
                if let Some(sha) = &l.content_sha256 {
                    outln!("  content      sha256:{sha}");
                }
                for r in &l.resources {
                    outln!("  KIS          {r}");
                }
                if l.purged_at.is_some() {
                    outln!("  purged       {}", time(l.purged_at));
                }
            }
            None => outln!("  state        none yet (held, or never received)"),
        }
        if let Some(q) = &t.quarantine {
            outln!(
                "  quarantined  {} at {} (correlation {})",
                q.reason,
                time(Some(q.quarantined_at)),
                q.correlation_id.as_deref().unwrap_or("-")
            );
            if let Some(c) = &q.conversation {
                outln!("  conversation {c}");
            }
            if q.candidate {
                outln!("  candidate    a phone-number match waits for confirmation");
            }
            if let Some(by) = &q.resolved_by {
                outln!("  resolved     by {by} at {}", time(q.resolved_at));
            }
            if q.released_at.is_some() {
                outln!("  released     {}", time(q.released_at));
            }
        }
        if let Some(l) = &t.leaf {
            let covered = match l.checkpoint_size {
                Some(size) => format!("covered by checkpoint {size} of {}", time(l.checkpoint_at)),
                None => "no checkpoint covers it yet".into(),
            };
            outln!("  proof leaf   {} ({covered})", l.index);
        }
        if let Some(d) = &t.deletion {
            outln!(
                "  deletion     {} {} ({}), attempts {}, retries {}, requested {}, settled {}{}",
                d.deletion_id,
                d.state.as_str(),
                d.reason,
                d.attempts,
                d.retries,
                time(d.requested_at),
                time(d.settled_at),
                d.detail
                    .as_deref()
                    .map(|x| format!(", detail {x}"))
                    .unwrap_or_default()
            );
        }
        for r in &t.receipts {
            outln!(
                "  receipt      {} {}{}",
                time(Some(r.at)),
                r.status,
                r.detail
                    .as_deref()
                    .map(|x| format!(" ({x})"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
