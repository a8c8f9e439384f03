//! `chartbridge quarantine list|resolve|release|view|redact`: review of quarantined
//! messages. The list shows opaque ids, reason codes and ages only — no
//! content, no messenger ids, no patient identifiers.

use anyhow::Context;
use chartbridge::audit::Action;
use chartbridge::classify::Rules;
use chartbridge::config::Config;
use chartbridge::pipeline::{Outcome, Pipeline};
use chartbridge::quarantine;
use chartbridge::{app, store::millis};
use clap::Subcommand;

use crate::out::outln;

/// `chartbridge quarantine …`
#[derive(Subcommand)]
pub enum QuarantineCommand {
    /// Open items: id, reason code, age, whether a candidate or a resolution waits.
    List,
    /// Resolve an item to a patient (and encounter), record who did it, and release it.
    Resolve {
        /// The item id from `quarantine list`.
        id: String,
        #[command(flatten)]
        to: crate::conversation::TargetArgs,
        /// Link the item's whole conversation and release every message it
        /// holds (as `conversation link`), not this item alone.
        #[arg(long)]
        conversation: bool,
    },
    /// Run an item through the pipeline again (after `resolve`, a new link or ADT data).
    Release {
        /// The item id from `quarantine list`.
        id: String,
        /// Why (recorded sealed in the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Write the held original of an item held `review_redaction` to a new
    /// file (owner-only), with its metadata removed, for the reviewer.
    View {
        /// The item id from `quarantine list`.
        id: String,
        /// The file to create; it must not exist.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Black out rectangles of an item held `review_redaction` and archive
    /// the rendering (the KIS never receives the original); without
    /// `--rect` it is archived with its metadata removed only.
    Redact {
        /// The item id from `quarantine list`.
        id: String,
        /// `x,y,w,h` in pixels of the image as displayed (as `view` writes
        /// it); repeat for several.
        #[arg(long = "rect")]
        rects: Vec<chartbridge::media::redact::Rect>,
        /// Archive without blacking anything out (a decision, recorded).
        #[arg(long, conflicts_with = "rects")]
        nothing: bool,
        /// A free-text note kept sealed with the reason in the audit trail
        /// (who acted is the operating-system account running the command).
        #[arg(long)]
        by: Option<String>,
        /// Why (recorded sealed in the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
}

pub async fn run(config: &Config, command: QuarantineCommand) -> anyhow::Result<()> {
    let (store, sealer) = app::open_state(config).await?;
    if let QuarantineCommand::List = command {
        let now = millis(chrono::Utc::now());
        outln!(
            "{:<16}  {:<24}  {:>8}  {:<16}  note",
            "id",
            "reason",
            "age",
            "conversation"
        );
        for (id, item) in quarantine::list(&store, &sealer).await? {
            let note = if item.resolved {
                "resolved, release pending"
            } else if item.has_candidate {
                "candidate patient"
            } else {
                ""
            };
            let conversation = match store.quarantine_conversation(&item.key).await? {
                Some(token) => chartbridge::review::conversation_id(&sealer, &token),
                None => "-".into(),
            };
            outln!(
                "{id:<16}  {:<24}  {:>8}  {conversation:<16}  {note}",
                item.reason,
                age(now, item.created_at),
            );
        }
        for (id, item) in quarantine::conflicts(&store, &sealer).await? {
            outln!(
                "{id:<16}  {:<24}  {:>8}  {:<16}  {}",
                chartbridge::reason::Reason::DuplicateIdConflict.as_str(),
                age(now, item.created_at),
                "-",
                "another payload under an id already used; kept sealed"
            );
        }
        return Ok(());
    }
    let rules = Rules::load(&config.mappings.rules_file)?;
    let pipeline = Pipeline::new(config, store.clone(), sealer.clone(), rules)?;
    let now = chrono::Utc::now();
    let outcome = match command {
        QuarantineCommand::List => unreachable!("handled above"),
        QuarantineCommand::Resolve {
            id,
            to,
            conversation,
        } => {
            let key = quarantine::find(&store, &sealer, &id).await?;
            let (target, why) = to.parse()?;
            let (reason, by) = (why.reason, why.by);
            let described = crate::conversation::describe(&target);
            if conversation {
                let token = store
                    .quarantine_conversation(&key)
                    .await?
                    .ok_or(quarantine::ReviewError::NoConversation)?;
                let cid = chartbridge::review::conversation_id(&sealer, &token);
                let actor = crate::conversation::record(
                    &store,
                    &sealer,
                    Action::ConversationLink,
                    format!("conversation {cid} item {id} {described}"),
                    reason.as_deref(),
                    by.as_deref(),
                )
                .await?;
                let released =
                    chartbridge::review::link(&pipeline, &token, target, actor.as_str(), now)
                        .await
                        .context("cannot link the conversation")?;
                store.close().await;
                return crate::conversation::report(&released);
            }
            let actor = crate::conversation::record(
                &store,
                &sealer,
                Action::QuarantineResolve,
                format!("item {id} {described}"),
                reason.as_deref(),
                by.as_deref(),
            )
            .await?;
            quarantine::resolve(&pipeline, &key, target, actor.as_str(), now)
                .await
                .context("cannot resolve")?
        }
        QuarantineCommand::Release { id, reason } => {
            let key = quarantine::find(&store, &sealer, &id).await?;
            crate::conversation::record(
                &store,
                &sealer,
                Action::QuarantineRelease,
                format!("item {id}"),
                reason.as_deref(),
                None,
            )
            .await?;
            quarantine::release(&pipeline, &key, now)
                .await
                .context("cannot release")?
        }
        QuarantineCommand::View { id, out } => {
            let key = quarantine::find(&store, &sealer, &id).await?;
            // Every view of held content is in the audit trail.
            crate::conversation::record(
                &store,
                &sealer,
                Action::QuarantineView,
                format!("item {id}"),
                None,
                None,
            )
            .await?;
            let bytes = quarantine::held_original(&store, &sealer, &key).await?;
            write_new(&out, &bytes)?;
            eprintln!("held original written to {}", out.display());
            store.close().await;
            return Ok(());
        }
        QuarantineCommand::Redact {
            id,
            rects,
            nothing,
            by,
            reason,
        } => {
            if rects.is_empty() && !nothing {
                anyhow::bail!("give --rect x,y,w,h (repeatable) or --nothing");
            }
            let key = quarantine::find(&store, &sealer, &id).await?;
            let actor = crate::conversation::record(
                &store,
                &sealer,
                Action::QuarantineRedact,
                format!("item {id} regions {}", rects.len()),
                reason.as_deref(),
                by.as_deref(),
            )
            .await?;
            quarantine::redact(&pipeline, &key, rects, actor.as_str(), now)
                .await
                .context("cannot redact")?
        }
    };
    match outcome {
        Outcome::Archived { resource } => eprintln!("archived as {resource}"),
        Outcome::Quarantined { reason } => eprintln!("still quarantined: {reason}"),
        Outcome::NotRelevant { rule } => {
            eprintln!("classified not relevant by rule {rule}; left in quarantine")
        }
        Outcome::AlreadyTerminal(state) => eprintln!("already {}", state.as_str()),
        Outcome::Held => eprintln!("held (split-message group or transcript window)"),
    }
    store.close().await;
    Ok(())
}

/// Creates `path` (owner-only, never over an existing file) with `bytes`.
fn write_new(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// An age in its largest unit, `3h`, `2days`.
pub fn age(now_ms: i64, then_ms: i64) -> String {
    let age = std::time::Duration::from_secs(((now_ms - then_ms).max(0) / 1000) as u64);
    humantime::format_duration(age)
        .to_string()
        .split(' ')
        .next()
        .unwrap_or("0s")
        .to_owned()
}
