//! Held content shown to a reviewer: `quarantine show` (the sealed event
//! with its sender, and the sealed detail) and `dlq show` (a dead letter's
//! payload). The reviewer is the operating-system account running the
//! command; `review.reviewers` may limit who that can be, and every
//! showing is recorded in the audit trail before anything is shown.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use chartbridge::audit::{Action, Actor};
use chartbridge::config::Config;
use chartbridge::quarantine;
use chartbridge::seal::Sealer;
use chartbridge::store::Store;
use serde_json::{Value, json};

use crate::out::outln;

/// Fails unless the account running the command may see held content.
pub fn authorise_reviewer(config: &Config) -> anyhow::Result<()> {
    config
        .review
        .authorise(&Actor::os()?)
        .map_err(anyhow::Error::msg)
}

/// Creates `path` (owner-only, never over an existing file) with `bytes`.
pub fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
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

/// `bytes` as JSON when they parse as JSON, as a string when UTF-8, else
/// `None` (binary).
fn readable(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice(bytes).ok().or_else(|| {
        std::str::from_utf8(bytes)
            .ok()
            .map(|s| Value::String(s.into()))
    })
}

/// Prints `meta` and `payload` (or writes the payload to `out`).
pub fn show_payload(
    meta: &Value,
    payload: &[u8],
    out: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(out) = out {
        write_new(out, payload)?;
        eprintln!(
            "payload ({} bytes) written to {}",
            payload.len(),
            out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let Some(shown) = readable(payload) else {
        anyhow::bail!(
            "the payload is binary ({} bytes): give --out FILE",
            payload.len()
        );
    };
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({"dead_letter": meta, "payload": shown}))?
        );
    } else {
        outln!("{}", serde_json::to_string_pretty(meta)?);
        match shown {
            Value::String(s) => outln!("{s}"),
            v => outln!("{}", serde_json::to_string_pretty(&v)?),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `quarantine show ID`: the open item's sealed event (its sender and
/// content) and sealed detail, after the showing is recorded.
pub async fn show(
    config: &Config,
    store: &Store,
    sealer: &Sealer,
    id: &str,
    json: bool,
    why: Option<String>,
) -> anyhow::Result<()> {
    let key = quarantine::find(store, sealer, id).await?;
    authorise_reviewer(config)?;
    crate::conversation::record(
        store,
        sealer,
        Action::QuarantineShow,
        format!("item {id}"),
        why.as_deref(),
        None,
    )
    .await?;
    let (event, detail) = quarantine::sealed_content(store, sealer, &key).await?;
    let row = store.quarantine_row(&key).await?;
    let event = readable(&event).unwrap_or_else(|| json!(format!("({} bytes)", event.len())));
    let detail = detail.map(|d| {
        readable(&d).unwrap_or_else(|| {
            json!(format!(
                "binary, {} bytes (`quarantine view {id} --out FILE` writes it)",
                d.len()
            ))
        })
    });
    let sender = event.get("sender").cloned();
    let shown = json!({
        "id": id,
        "reason": row.as_ref().map(|r| r.reason.clone()),
        "quarantined_at": row.as_ref().map(|r| r.created_at),
        "correlation_id": row.as_ref().and_then(|r| r.correlation_id.clone()),
        "sender": sender,
        "event": event,
        "detail": detail,
    });
    store.close().await;
    if json {
        outln!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(());
    }
    outln!("item         {id}");
    if let Some(r) = &row {
        outln!("reason       {}", r.reason);
        outln!("quarantined  {}", crate::ops::time(Some(r.created_at)));
        outln!(
            "correlation  {}",
            r.correlation_id.as_deref().unwrap_or("-")
        );
    }
    if let Some(sender) = &shown["sender"].as_object() {
        outln!("sender       {}", serde_json::to_string(sender)?);
    }
    outln!("event:");
    outln!("{}", serde_json::to_string_pretty(&shown["event"])?);
    if !shown["detail"].is_null() {
        outln!("detail:");
        outln!("{}", serde_json::to_string_pretty(&shown["detail"])?);
    }
    Ok(())
}
