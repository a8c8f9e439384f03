//! `chartbridge deletions list|retry`: failed deletions and those stuck
//! (requested longer than `deletion.stuck_after` ago without a final
//! receipt), and requesting them again — each is put back to `pending`
//! and the worker's relay publishes its command again under the same
//! `deletion_id` (gateways and adapters deduplicate on it).

use std::process::ExitCode;
use std::time::Duration;

use chartbridge::audit::Action;
use chartbridge::config::Config;
use chartbridge::store::{DeletionState, DeletionView, millis};
use clap::{Args, Subcommand};

use crate::ops::{duration, time};
use crate::out::{ChangeArgs, outln};

/// Which failed or stuck deletions a command applies to.
#[derive(Args)]
pub struct DeletionFilter {
    /// Only failed deletions.
    #[arg(long)]
    failed: bool,
    /// Only stuck deletions.
    #[arg(long)]
    stuck: bool,
    /// Only deletions of this source.
    #[arg(long)]
    source: Option<String>,
    /// Only those whose last receipt carried this reason code.
    #[arg(long)]
    detail: Option<String>,
    /// Only the deletion with this id (repeatable).
    #[arg(long = "id")]
    ids: Vec<String>,
    /// Count a deletion as stuck after this long instead of `deletion.stuck_after`.
    #[arg(long, value_parser = duration)]
    stuck_after: Option<Duration>,
}

impl DeletionFilter {
    fn stuck_before(&self, config: &Config, now: i64) -> i64 {
        let after = self.stuck_after.unwrap_or(config.deletion.stuck_after);
        now - i64::try_from(after.as_millis()).unwrap_or(i64::MAX)
    }

    fn matches(&self, d: &DeletionView, stuck_before: i64) -> bool {
        let (failed, stuck) = (d.state == DeletionState::Failed, d.stuck(stuck_before));
        let kind = match (self.failed, self.stuck) {
            (false, false) | (true, true) => failed || stuck,
            (true, false) => failed,
            (false, true) => stuck,
        };
        kind && self.source.as_ref().is_none_or(|s| *s == d.source)
            && self
                .detail
                .as_ref()
                .is_none_or(|x| d.detail.as_ref() == Some(x))
            && (self.ids.is_empty() || self.ids.contains(&d.deletion_id))
    }
}

/// `chartbridge deletions …`
#[derive(Subcommand)]
pub enum DeletionsCommand {
    /// Failed and stuck deletions: id, source, state, attempts, retries,
    /// times, last reason code. No content.
    List {
        #[command(flatten)]
        filter: DeletionFilter,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Request failed and stuck deletions again (each recorded in the
    /// audit trail); a running worker publishes their commands again.
    Retry {
        #[command(flatten)]
        filter: DeletionFilter,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

fn print(rows: &[&DeletionView], json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    outln!(
        "{:<36}  {:<9}  {:<9}  {:<12}  {:>8}  {:>7}  {:<24}  detail",
        "deletion",
        "source",
        "state",
        "reason",
        "attempts",
        "retries",
        "requested"
    );
    for d in rows {
        outln!(
            "{:<36}  {:<9}  {:<9}  {:<12}  {:>8}  {:>7}  {:<24}  {}",
            d.deletion_id,
            d.source,
            d.state.as_str(),
            d.reason,
            d.attempts,
            d.retries,
            time(d.requested_at),
            d.detail.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

pub async fn run(config: &Config, command: DeletionsCommand) -> anyhow::Result<ExitCode> {
    let (store, sealer) = chartbridge::app::open_state(config).await?;
    let now = millis(chrono::Utc::now());
    let (filter, retry) = match &command {
        DeletionsCommand::List { filter, .. } => (filter, None),
        DeletionsCommand::Retry { filter, change } => {
            (filter, (!change.dry_run).then_some(&change.why))
        }
    };
    let json = match &command {
        DeletionsCommand::List { json, .. } => *json,
        DeletionsCommand::Retry { change, .. } => change.json,
    };
    let stuck_before = filter.stuck_before(config, now);
    let all = store.retryable_deletions(stuck_before).await?;
    let matching: Vec<&DeletionView> = all
        .iter()
        .filter(|d| filter.matches(d, stuck_before))
        .collect();
    let Some(why) = retry else {
        print(&matching, json)?;
        if matches!(command, DeletionsCommand::Retry { .. }) {
            eprintln!("would retry {} deletion(s)", matching.len());
        }
        store.close().await;
        return Ok(ExitCode::SUCCESS);
    };
    let bar = crate::ops::progress(matching.len() as u64, "retrying deletions");
    let mut retried = Vec::new();
    for d in &matching {
        crate::conversation::record(
            &store,
            &sealer,
            Action::DeletionRetry,
            format!("deletion {} {}", d.deletion_id, d.state.as_str()),
            why.as_deref(),
            None,
        )
        .await?;
        if store.retry_deletion(&d.deletion_id, stuck_before).await? {
            retried.push(*d);
        } else {
            eprintln!("deletion {} settled meanwhile; not retried", d.deletion_id);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    store.close().await;
    print(&retried, json)?;
    eprintln!(
        "{} deletion(s) requested again; a running worker publishes them within schedule.relay_interval",
        retried.len()
    );
    Ok(ExitCode::SUCCESS)
}
