//! `chartbridge quarantine list|resolve|release|view|redact`: review of quarantined
//! messages. The list shows opaque ids, reason codes and ages only — no
//! content, no messenger ids, no patient identifiers.

use anyhow::Context;
use chartbridge::app;
use chartbridge::audit::Action;
use chartbridge::classify::Rules;
use chartbridge::config::Config;
use chartbridge::pipeline::{Outcome, Pipeline};
use chartbridge::quarantine;
use clap::Subcommand;
use std::process::ExitCode;

use crate::items::{ItemFilter, bulk_release, listed, print_list};
use crate::out::ChangeArgs;

/// `chartbridge quarantine …`
#[derive(Subcommand)]
pub enum QuarantineCommand {
    /// Open items: id, reason code, age, conversation, correlation id,
    /// whether a candidate or a resolution waits. No content.
    List {
        #[command(flatten)]
        filter: ItemFilter,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// An open item's sealed content and sender, for a reviewer (recorded
    /// in the audit trail; `review.reviewers` limits who may).
    Show {
        /// The item id from `quarantine list`.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Why (recorded sealed in the audit trail).
        #[arg(long)]
        why: Option<String>,
    },
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
    /// Run items through the pipeline again (after `resolve`, a new link,
    /// ADT data or a fixed configuration): one by id, or every open item
    /// the filters match (`--reason unknown_encounter`), each recorded in
    /// the audit trail.
    Release {
        /// The item id from `quarantine list`.
        id: Option<String>,
        #[command(flatten)]
        filter: ItemFilter,
        /// Every open item (without filters).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        change: ChangeArgs,
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

pub async fn run(config: &Config, command: QuarantineCommand) -> anyhow::Result<ExitCode> {
    let (store, sealer) = app::open_state(config).await?;
    let command = match command {
        QuarantineCommand::List { filter, json } => {
            let listed = listed(&store, &sealer, &filter).await?;
            print_list(&listed, json)?;
            return Ok(ExitCode::SUCCESS);
        }
        QuarantineCommand::Show { id, json, why } => {
            crate::held::show(config, &store, &sealer, &id, json, why).await?;
            return Ok(ExitCode::SUCCESS);
        }
        QuarantineCommand::Release {
            id: None,
            filter,
            all,
            change: ChangeArgs { dry_run, json, why },
        } => {
            anyhow::ensure!(
                all || filter.narrows(),
                "give an item id, filters (--reason, --older-than, --newer-than, --source) or --all"
            );
            return bulk_release(config, &store, &sealer, &filter, dry_run, json, why).await;
        }
        QuarantineCommand::Release {
            id: Some(_),
            ref filter,
            all,
            ..
        } if filter.narrows() || all => {
            anyhow::bail!(
                "give an item id or filters, not both (a note for the audit trail is --why)"
            )
        }
        command => command,
    };
    let rules = Rules::load(&config.mappings.rules_file)?;
    let pipeline = Pipeline::new(config, store.clone(), sealer.clone(), rules)?;
    let now = chrono::Utc::now();
    let outcome = match command {
        QuarantineCommand::List { .. }
        | QuarantineCommand::Show { .. }
        | QuarantineCommand::Release { id: None, .. } => unreachable!("handled above"),
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
                let (token, cid) =
                    chartbridge::review::conversation_of(&store, &sealer, &key).await?;
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
                crate::conversation::report(&released)?;
                return Ok(ExitCode::SUCCESS);
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
        QuarantineCommand::Release {
            id: Some(id),
            change: ChangeArgs { why, .. },
            ..
        } => {
            let key = quarantine::find(&store, &sealer, &id).await?;
            crate::conversation::record(
                &store,
                &sealer,
                Action::QuarantineRelease,
                format!("item {id}"),
                why.as_deref(),
                None,
            )
            .await?;
            quarantine::release(&pipeline, &key, now)
                .await
                .context("cannot release")?
        }
        QuarantineCommand::View { id, out } => {
            let key = quarantine::find(&store, &sealer, &id).await?;
            crate::held::authorise_reviewer(config)?;
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
            crate::held::write_new(&out, &bytes)?;
            eprintln!("held original written to {}", out.display());
            store.close().await;
            return Ok(ExitCode::SUCCESS);
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
    Ok(ExitCode::SUCCESS)
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
