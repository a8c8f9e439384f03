//! Open quarantine items by filters: `quarantine list` (reason, age,
//! source; text or JSON, no content) and the bulk `quarantine release
//! --reason R`.

use std::process::ExitCode;

use chartbridge::audit::Action;
use chartbridge::classify::Rules;
use chartbridge::config::Config;
use chartbridge::pipeline::{Outcome, Pipeline};
use chartbridge::quarantine;
use chartbridge::store::millis;
use clap::Args;

use crate::out::outln;
use crate::quarantine::age;

/// Which open items a command applies to. Empty parts match everything.
#[derive(Args)]
pub struct ItemFilter {
    /// Only items with this reason code (repeatable).
    #[arg(long = "reason", value_parser = reason_code)]
    reasons: Vec<String>,
    /// Only items quarantined at least this long ago (`2h`, `3days`).
    #[arg(long, value_parser = crate::ops::duration)]
    older_than: Option<std::time::Duration>,
    /// Only items quarantined at most this long ago.
    #[arg(long, value_parser = crate::ops::duration)]
    newer_than: Option<std::time::Duration>,
    /// Only items of this source (`whatsapp`, `matrix`, …).
    #[arg(long)]
    source: Option<String>,
}

fn reason_code(code: &str) -> Result<String, String> {
    chartbridge::reason::Reason::from_code(code)
        .map(|r| r.as_str().to_owned())
        .ok_or_else(|| {
            "not a quarantine reason code (see `quarantine list`; a note for the audit trail is --why)"
                .into()
        })
}

impl ItemFilter {
    pub fn narrows(&self) -> bool {
        !self.reasons.is_empty()
            || self.older_than.is_some()
            || self.newer_than.is_some()
            || self.source.is_some()
    }

    fn matches(&self, source: &str, reason: &str, created_at: i64, now: i64) -> bool {
        let age = (now - created_at).max(0);
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        (self.reasons.is_empty() || self.reasons.iter().any(|r| r == reason))
            && self.older_than.is_none_or(|d| age >= ms(d))
            && self.newer_than.is_none_or(|d| age <= ms(d))
            && self.source.as_deref().is_none_or(|s| s == source)
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.reasons.is_empty() {
            parts.push(format!("reason={}", self.reasons.join(",")));
        }
        if let Some(d) = self.older_than {
            parts.push(format!("older-than={}", humantime::format_duration(d)));
        }
        if let Some(d) = self.newer_than {
            parts.push(format!("newer-than={}", humantime::format_duration(d)));
        }
        if let Some(s) = &self.source {
            parts.push(format!("source={s}"));
        }
        parts.join(" ")
    }
}

/// One listed item, without content: what `quarantine list` prints.
#[derive(serde::Serialize)]
pub struct Listed {
    id: String,
    source: String,
    reason: String,
    quarantined_at: i64,
    age_seconds: i64,
    conversation: Option<String>,
    correlation_id: Option<String>,
    candidate: bool,
    resolved: bool,
    note: &'static str,
    #[serde(skip)]
    key: Option<chartbridge::store::MessageRef>,
}

/// Open items and conflicting duplicates `filter` matches, oldest first.
pub async fn listed(
    store: &chartbridge::store::Store,
    sealer: &chartbridge::seal::Sealer,
    filter: &ItemFilter,
) -> anyhow::Result<Vec<Listed>> {
    let now = millis(chrono::Utc::now());
    let mut out = Vec::new();
    for (id, item) in quarantine::list(store, sealer).await? {
        if !filter.matches(&item.key.source, &item.reason, item.created_at, now) {
            continue;
        }
        let conversation = store
            .quarantine_conversation(&item.key)
            .await?
            .map(|token| chartbridge::review::conversation_id(sealer, &token));
        out.push(Listed {
            id,
            source: item.key.source.clone(),
            reason: item.reason,
            quarantined_at: item.created_at,
            age_seconds: (now - item.created_at).max(0) / 1000,
            conversation,
            correlation_id: item.correlation_id,
            candidate: item.has_candidate,
            resolved: item.resolved,
            note: if item.resolved {
                "resolved, release pending"
            } else if item.has_candidate {
                "candidate patient"
            } else {
                ""
            },
            key: Some(item.key),
        });
    }
    let conflict = chartbridge::reason::Reason::DuplicateIdConflict.as_str();
    for (id, item) in quarantine::conflicts(store, sealer).await? {
        if !filter.matches(&item.key.source, conflict, item.created_at, now) {
            continue;
        }
        out.push(Listed {
            id,
            source: item.key.source.clone(),
            reason: conflict.into(),
            quarantined_at: item.created_at,
            age_seconds: (now - item.created_at).max(0) / 1000,
            conversation: None,
            correlation_id: None,
            candidate: false,
            resolved: false,
            note: "another payload under an id already used; kept sealed",
            key: None,
        });
    }
    Ok(out)
}

pub fn print_list(listed: &[Listed], json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(listed)?);
        return Ok(());
    }
    outln!(
        "{:<16}  {:<24}  {:>8}  {:<16}  {:<16}  note",
        "id",
        "reason",
        "age",
        "conversation",
        "correlation"
    );
    for i in listed {
        outln!(
            "{:<16}  {:<24}  {:>8}  {:<16}  {:<16}  {}",
            i.id,
            i.reason,
            age(i.age_seconds * 1000, 0),
            i.conversation.as_deref().unwrap_or("-"),
            i.correlation_id.as_deref().unwrap_or("-"),
            i.note
        );
    }
    Ok(())
}

/// `quarantine release` by filters: each matching open item recorded, then
/// run through the pipeline again; exit status 1 when one stayed held or
/// failed.
pub async fn bulk_release(
    config: &Config,
    store: &chartbridge::store::Store,
    sealer: &chartbridge::seal::Sealer,
    filter: &ItemFilter,
    dry_run: bool,
    json: bool,
    why: Option<String>,
) -> anyhow::Result<ExitCode> {
    // Conflicting duplicates are not released (they have no item to run).
    let items: Vec<Listed> = listed(store, sealer, filter)
        .await?
        .into_iter()
        .filter(|i| i.key.is_some())
        .collect();
    if dry_run {
        print_list(&items, json)?;
        eprintln!("would release {} item(s)", items.len());
        return Ok(ExitCode::SUCCESS);
    }
    let rules = Rules::load(&config.mappings.rules_file)?;
    let pipeline = Pipeline::new(config, store.clone(), sealer.clone(), rules)?;
    let note = format!("bulk release {}", filter.describe());
    let why = chartbridge::app::audit::why(why.as_deref(), Some(&note));
    let bar = crate::ops::progress(items.len() as u64, "releasing");
    let mut results = Vec::new();
    let (mut archived, mut held) = (0, 0);
    for item in &items {
        let key = item.key.as_ref().expect("items with a key");
        crate::conversation::record(
            store,
            sealer,
            Action::QuarantineRelease,
            format!("item {}", item.id),
            why.as_deref(),
            None,
        )
        .await?;
        let outcome = quarantine::release(&pipeline, key, chrono::Utc::now()).await;
        let (state, detail) = match &outcome {
            Ok(Outcome::Archived { resource }) => ("archived", resource.clone()),
            Ok(Outcome::Quarantined { reason }) => ("quarantined", reason.clone()),
            Ok(Outcome::NotRelevant { rule }) => ("not_relevant_left_held", rule.clone()),
            Ok(Outcome::AlreadyTerminal(s)) => ("already", s.as_str().to_owned()),
            Ok(Outcome::Held) => ("held", String::new()),
            Err(e) => ("failed", e.to_string()),
        };
        if state == "archived" || state == "already" {
            archived += 1;
        } else {
            held += 1;
        }
        results.push(serde_json::json!({"id": item.id, "outcome": state, "detail": detail}));
        bar.inc(1);
    }
    bar.finish_and_clear();
    if json {
        outln!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for r in &results {
            outln!(
                "{}  {}  {}",
                r["id"].as_str().unwrap_or(""),
                r["outcome"].as_str().unwrap_or(""),
                r["detail"].as_str().unwrap_or("")
            );
        }
    }
    eprintln!(
        "{} item(s) released: archived {archived}, still held or failed {held}",
        items.len()
    );
    store.close().await;
    Ok(if held == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
