//! `chartbridge audit-trail [verify]` and `keys rotate-at-rest`: the audit
//! trail of human actions, and at-rest key rotation (recorded in it).

use std::process::ExitCode;

use anyhow::Context;
use chartbridge::app::rotate::{RotateOptions, rotate_at_rest as rotate};
use chartbridge::audit::{self, Action, Actor};
use chartbridge::config::Config;
use chartbridge::prove::leaf::format_rfc3339_millis;
use chartbridge::store::audit::reason_place;
use chartbridge::{app, seal::Sealer};
use clap::Subcommand;

use crate::out::outln;

/// `chartbridge audit-trail …`
#[derive(clap::Args)]
pub struct AuditTrailArgs {
    #[command(subcommand)]
    command: Option<AuditTrailCommand>,
    /// Print the rows as JSON.
    #[arg(long)]
    json: bool,
    /// Open and show the sealed reasons (they may name patients).
    #[arg(long)]
    reasons: bool,
}

#[derive(Subcommand)]
enum AuditTrailCommand {
    /// Check the hash chain (and that each sealed reason matches its
    /// digest). Exit status: 0 verified, 1 broken, 2 the check could not run.
    Verify,
}

/// `audit-trail` lists, `audit-trail verify` checks.
pub async fn run(config: &Config, args: AuditTrailArgs) -> anyhow::Result<ExitCode> {
    let (store, sealer) = app::open_state(config).await?;
    let rows = store.audit_trail().await?;
    if let Some(AuditTrailCommand::Verify) = args.command {
        let head = match audit::verify(&rows) {
            Ok(head) => head,
            Err(e) => {
                eprintln!("audit trail does NOT verify: {e}");
                return Ok(ExitCode::from(1));
            }
        };
        for r in rows.iter().filter(|r| r.reason_digest.is_some()) {
            if reason(&store, &sealer, r).await?.is_none() {
                eprintln!(
                    "audit trail does NOT verify: the sealed reason of row {} does not match its digest",
                    r.seq
                );
                return Ok(ExitCode::from(1));
            }
        }
        outln!(
            "audit trail verified: {} rows, head {} {}",
            head.rows,
            head.seq,
            hex::encode(&head.hash)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut listed = Vec::with_capacity(rows.len());
    for r in &rows {
        let why = match (&r.reason_digest, args.reasons) {
            (None, _) => None,
            (Some(_), false) => Some("(sealed)".to_owned()),
            (Some(_), true) => Some(
                reason(&store, &sealer, r)
                    .await?
                    .unwrap_or_else(|| "(does not match its digest)".into()),
            ),
        };
        listed.push((r, why));
    }
    if args.json {
        let json: Vec<_> = listed
            .iter()
            .map(|(r, why)| {
                let mut v = serde_json::to_value(r).expect("a row serialises");
                v["reason"] = why.clone().into();
                v
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(ExitCode::SUCCESS);
    }
    for (r, why) in listed {
        outln!(
            "{:>6}  {}  {:<16}  {:<22}  {}{}",
            r.seq,
            format_rfc3339_millis(r.at).unwrap_or_default(),
            r.actor,
            r.action,
            r.target,
            why.map(|w| format!("  why: {w}")).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The reason of row `r`, opened and checked against its digest.
async fn reason(
    store: &chartbridge::store::Store,
    sealer: &Sealer,
    r: &audit::Row,
) -> anyhow::Result<Option<String>> {
    let Some(sealed) = store.audit_reason(r.seq).await? else {
        return Ok(None);
    };
    let seq = r.seq.to_string();
    let plain = sealer.open(&reason_place(&seq), &sealed)?;
    let text = String::from_utf8(plain).context("a reason is UTF-8")?;
    let digest = sealer.token(&["audit-reason", &seq, &text]);
    Ok((r.reason_digest.as_deref() == Some(digest.as_str())).then_some(text))
}

/// `keys rotate-at-rest`: recorded, then run; see [`rotate`].
pub async fn rotate_at_rest(
    config: &Config,
    batch_size: usize,
    reason: Option<String>,
    stop_after_batches: Option<u64>,
) -> anyhow::Result<()> {
    let (store, sealer) = app::open_state(config).await?;
    // Recorded first, naming the key current before the run; the rotation
    // then re-seals this row's reason too.
    app::audit::record(
        &store,
        &sealer,
        &Actor::os()?,
        Action::AtRestKeyRotate,
        format!("at-rest-key {} rotate", sealer.current_key_id()),
        reason.as_deref(),
    )
    .await?;
    let report = rotate(
        &config.store.key_file,
        &store,
        &RotateOptions {
            batch_size,
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            stop_after_batches,
        },
    )
    .await?;
    eprintln!(
        "{} rotation to at-rest key {}: {} blob(s) re-sealed",
        if report.resumed { "resumed" } else { "started" },
        report.key_id,
        report.resealed
    );
    for f in &report.failed {
        eprintln!("  left under its old key: {f}");
    }
    store.close().await;
    if report.finished {
        eprintln!(
            "rotation finished: every sealed blob is under key {}",
            report.key_id
        );
        Ok(())
    } else if report.failed.is_empty() {
        anyhow::bail!("rotation stopped before it finished; run the command again to resume")
    } else {
        anyhow::bail!(
            "{} blob(s) did not open; the rotation stays unfinished",
            report.failed.len()
        )
    }
}
