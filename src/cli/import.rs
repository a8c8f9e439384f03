//! `chartbridge import PATH…` (and `publish FILE…`): exported events into
//! the events queue (DSK I.3). Every file is checked first (it must decode
//! as an event: canonical, WhatsApp webhook, Matrix room event); a file
//! that does not is reported and not published (`publish` publishes it,
//! and the worker dead-letters it). Each published file is
//! remembered (`imports`: a keyed token of its SHA-256) after the broker
//! confirmed it, so an interrupted import resumes where it stopped and a
//! second import of the same directory publishes nothing twice.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chartbridge::audit::Action;
use chartbridge::config::Config;
use chartbridge::consume::Broker;
use chartbridge::store::millis;
use clap::Args;
use serde_json::json;
use sha2::Digest;

use crate::out::outln;

/// `chartbridge import …`
#[derive(Args)]
pub struct ImportArgs {
    /// Directories (walked for `*.json`, in path order) or files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Check every file and list what would be published; publish nothing.
    #[arg(long)]
    dry_run: bool,
    /// Publish files published before too (no resume).
    #[arg(long)]
    again: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Why (recorded sealed in the audit trail).
    #[arg(long)]
    why: Option<String>,
    /// Publish files that do not decode too (`publish`: the worker
    /// dead-letters them with their reason).
    #[arg(skip)]
    unchecked: bool,
}

impl ImportArgs {
    /// `publish FILE…`: every file given as it is, published before or
    /// not, decodable or not (refused ones end in the dead-letter queue).
    pub fn publish(files: Vec<PathBuf>) -> Self {
        Self {
            paths: files,
            dry_run: false,
            again: true,
            json: false,
            why: None,
            unchecked: true,
        }
    }
}

/// `*.json` files under `path` (or `path` itself), sorted.
fn files(path: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if !path.is_dir() {
        out.push(path.to_owned());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for entry in entries {
        let hidden = entry
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if entry.is_dir() {
            files(&entry, out)?;
        } else if entry.extension().is_some_and(|e| e == "json") {
            out.push(entry);
        }
    }
    Ok(())
}

/// One file's fate.
enum Plan {
    Publish { token: String, payload: Vec<u8> },
    Before,
    Invalid(String),
}

pub async fn run(config: &Config, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let mut found = Vec::new();
    for p in &args.paths {
        files(p, &mut found)?;
    }
    let (store, sealer) = chartbridge::app::open_state(config).await?;
    let bar = crate::ops::progress(found.len() as u64, "checking");
    let mut plans = Vec::with_capacity(found.len());
    for f in &found {
        let payload = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        let digest = hex::encode(sha2::Sha256::digest(&payload));
        let token = sealer.token(&["import", &digest]);
        let plan = if !args.again && store.imported(&token).await? {
            Plan::Before
        } else {
            match chartbridge::event::decode(&payload, config.broker.max_event_bytes) {
                Err(e) if !args.unchecked => Plan::Invalid(e.code.as_str().to_owned()),
                _ => Plan::Publish { token, payload },
            }
        };
        plans.push(plan);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let pending = plans
        .iter()
        .filter(|p| matches!(p, Plan::Publish { .. }))
        .count();
    let mut published = Vec::new();
    if !args.dry_run && pending > 0 {
        let actor = crate::conversation::record(
            &store,
            &sealer,
            Action::Import,
            format!("files {} publish {pending}", found.len()),
            args.why.as_deref(),
            None,
        )
        .await?;
        let intake = chartbridge::auth::Intake::load(config)?;
        let broker = Broker::connect(&config.broker)
            .await?
            .signing(Arc::new(intake));
        let bar = crate::ops::progress(pending as u64, "publishing");
        for (f, plan) in found.iter().zip(&plans) {
            let Plan::Publish { token, payload } = plan else {
                continue;
            };
            broker
                .publish_event(payload)
                .await
                .with_context(|| format!("cannot publish {}", f.display()))?;
            store
                .record_import(token, actor.as_str(), millis(chrono::Utc::now()))
                .await?;
            published.push(f);
            bar.inc(1);
        }
        bar.finish_and_clear();
        broker.close().await;
    }
    store.close().await;
    let mut before = Vec::new();
    let mut invalid = Vec::new();
    let mut would = Vec::new();
    for (f, plan) in found.iter().zip(&plans) {
        match plan {
            Plan::Before => before.push(json!(f)),
            Plan::Invalid(code) => invalid.push(json!({"file": f, "reason": code})),
            Plan::Publish { .. } if args.dry_run => would.push(json!(f)),
            Plan::Publish { .. } => {}
        }
    }
    if args.json {
        let key = if args.dry_run {
            "would_publish"
        } else {
            "published"
        };
        let listed = if args.dry_run {
            would.clone()
        } else {
            published.iter().map(|f| json!(f)).collect()
        };
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                key: listed, "published_before": before, "invalid": invalid,
            }))?
        );
    } else {
        for i in &invalid {
            outln!(
                "invalid  {}  {}",
                i["file"].as_str().unwrap_or(""),
                i["reason"].as_str().unwrap_or("")
            );
        }
        eprintln!(
            "{} file(s): {} {}, published before {}, invalid {}",
            found.len(),
            if args.dry_run {
                "would publish"
            } else {
                "published"
            },
            if args.dry_run {
                would.len()
            } else {
                published.len()
            },
            before.len(),
            invalid.len()
        );
    }
    Ok(if invalid.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
