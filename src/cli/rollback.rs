//! `chartbridge log accept-rollback`: an operator's decision that the
//! proof log may go on although it contradicts checkpoints published in
//! `proofs.checkpoint_dir` — after a restored backup, the messages archived
//! since the backup are in the KIS but no longer in the log, and the
//! bundles handed out against those checkpoints no longer extend to new
//! ones. Recorded in the audit trail and in `log_rollbacks`; the worker
//! refuses to start until then.

use anyhow::Context;
use chartbridge::audit::Action;
use chartbridge::config::Config;
use chartbridge::prove::service::publish;
use chartbridge::store::millis;
use serde_json::json;

use crate::out::outln;

/// Arguments of `log accept-rollback`.
#[derive(clap::Args)]
pub struct AcceptArgs {
    #[command(flatten)]
    change: crate::out::ChangeArgs,
}

pub async fn accept(config: &Config, args: AcceptArgs) -> anyhow::Result<()> {
    let dir = config
        .proofs
        .checkpoint_dir
        .as_deref()
        .context("proofs.checkpoint_dir is not set: there is nothing published to compare")?;
    let (store, sealer) = chartbridge::app::open_state(config).await?;
    let found = publish::contradictions(&store, dir).await?;
    let local = store.log_size().await?;
    let listed: Vec<_> = found
        .iter()
        .map(|(p, c)| {
            json!({
                "published_size": p.size,
                "published_root": hex::encode(p.root),
                "published_at": p.timestamp_ms,
                "file": p.file,
                "contradiction": c,
            })
        })
        .collect();
    if args.change.json {
        outln!("{}", serde_json::to_string_pretty(&listed)?);
    } else {
        for (p, c) in &found {
            outln!(
                "checkpoint {} of {} ({}): {c}",
                p.size,
                crate::ops::time(p.timestamp_ms),
                p.file.display()
            );
        }
    }
    if found.is_empty() {
        eprintln!("the proof log (size {local}) contradicts no published checkpoint");
        store.close().await;
        return Ok(());
    }
    if args.change.dry_run {
        eprintln!("would accept {} published checkpoint(s)", found.len());
        store.close().await;
        return Ok(());
    }
    let newest = &found[0].0;
    let actor = crate::conversation::record(
        &store,
        &sealer,
        Action::LogRollbackAccept,
        format!(
            "log-size {local} published-size {} checkpoints {}",
            newest.size,
            found.len()
        ),
        args.change.why.as_deref(),
        None,
    )
    .await?;
    let now = millis(chrono::Utc::now());
    for (p, _) in &found {
        store
            .accept_rollback((p.size, &p.root), local, actor.as_str(), now)
            .await?;
    }
    store.close().await;
    eprintln!(
        "accepted {} published checkpoint(s); the worker appends to the log of size {local} again",
        found.len()
    );
    Ok(())
}
