//! `chartbridge migrate`, `backup` and `restore`: the upgrade and backup
//! story (docs/operations.md, "Backup", "Restore", "Upgrade").

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use chartbridge::app::backup::{self, Header};
use chartbridge::audit::{Action, Actor};
use chartbridge::config::Config;
use chartbridge::store::schema::Schema;
use chartbridge::store::{Backend, Store, millis};
use serde_json::json;

use crate::out::outln;

/// `migrate [--dry-run]`: applies the pending migrations, then records it.
pub async fn migrate(config: &Config, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    let sealer = chartbridge::app::load_sealer(config)?;
    let store = chartbridge::app::open_store_with(config, Schema::Unchecked).await?;
    let before = store.schema_status().await?;
    if !before.unknown.is_empty() || !before.changed.is_empty() {
        before.require_current()?;
    }
    let pending: Vec<i64> = before.pending.iter().map(|(v, _)| *v).collect();
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "applied": before.applied,
                "pending": before.pending.iter().map(|(v, d)| json!({"version": v, "description": d})).collect::<Vec<_>>(),
                "dry_run": dry_run,
            }))?
        );
    } else {
        for (v, d) in &before.pending {
            outln!(
                "{} {v:04} {d}",
                if dry_run { "pending" } else { "applying" }
            );
        }
    }
    if pending.is_empty() {
        eprintln!(
            "the schema is current ({} migrations)",
            before.applied.len()
        );
        store.close().await;
        return Ok(ExitCode::SUCCESS);
    }
    if dry_run {
        store.close().await;
        return Ok(ExitCode::SUCCESS);
    }
    store.migrate().await?;
    // Rows written before migration 0018 name messages in clear: they
    // become keyed tokens now, once.
    let store = store.with_pseudonyms(&sealer);
    let converted = store.pseudonymise_legacy(&sealer).await?;
    if converted > 0 {
        eprintln!("{converted} stored messenger id(s) replaced by keyed tokens");
    }
    // Recorded after: a new database has no audit trail before migrating.
    chartbridge::app::audit::record(
        &store,
        &sealer,
        &Actor::os()?,
        Action::SchemaMigrate,
        format!(
            "schema {} -> {}",
            before.applied.last().copied().unwrap_or(0),
            pending.last().copied().unwrap_or(0)
        ),
        None,
    )
    .await?;
    store.close().await;
    eprintln!("applied {} migration(s)", pending.len());
    Ok(ExitCode::SUCCESS)
}

/// The SQLite file of `store.url`, or why there is none.
fn sqlite_path(config: &Config) -> anyhow::Result<std::path::PathBuf> {
    let url = config.store.url.expose();
    let Some(rest) = url.strip_prefix("sqlite:") else {
        anyhow::bail!(
            "store.url is PostgreSQL: back it up with pg_dump (docs/operations.md, \"Backup\"); \
             `chartbridge backup` snapshots SQLite"
        );
    };
    let path = rest.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or(path);
    anyhow::ensure!(
        !path.is_empty() && !path.contains(":memory:"),
        "store.url names no database file"
    );
    Ok(path.into())
}

/// `backup --out FILE`: records itself, snapshots with `VACUUM INTO`, seals.
pub async fn backup(config: &Config, out: &Path, why: Option<String>) -> anyhow::Result<ExitCode> {
    sqlite_path(config)?;
    anyhow::ensure!(!out.exists(), "{} exists; give a new file", out.display());
    let (store, sealer) = chartbridge::app::open_state(config).await?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    // Recorded first, so the backup holds its own record.
    crate::conversation::record(
        &store,
        &sealer,
        Action::BackupCreate,
        format!("backup {id}"),
        why.as_deref(),
        None,
    )
    .await?;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let snapshot = dir.join(format!(".chartbridge-backup-{id}.db"));
    let vacuum = sqlx::query("VACUUM INTO $1")
        .bind(snapshot.display().to_string())
        .execute(store.pool())
        .await;
    store.close().await;
    let sealed = vacuum.context("VACUUM INTO failed").and_then(|_| {
        let bytes = std::fs::metadata(&snapshot)?.len();
        let header = Header {
            backup_id: id.clone(),
            created_at: millis(chrono::Utc::now()),
            key_id: sealer.current_key_id().to_string(),
            bytes,
        };
        let bar = crate::ops::progress(bytes, "sealing");
        backup::seal_file(&sealer, &snapshot, out, &header, |n| bar.set_position(n))?;
        bar.finish_and_clear();
        Ok(header)
    });
    let _ = std::fs::remove_file(&snapshot);
    let header = sealed?;
    outln!(
        "backup {} written to {} ({} bytes, sealed under at-rest key {})",
        header.backup_id,
        out.display(),
        header.bytes,
        header.key_id
    );
    Ok(ExitCode::SUCCESS)
}

/// `restore BACKUP --to FILE`: opens the backup into a new file, checks it,
/// records the restore in its audit trail.
pub async fn restore(
    config: &Config,
    from: &Path,
    to: &Path,
    why: Option<String>,
) -> anyhow::Result<ExitCode> {
    let sealer = chartbridge::app::load_sealer(config)?;
    anyhow::ensure!(
        !to.exists(),
        "{} exists; restore into a new file",
        to.display()
    );
    let bar = crate::ops::progress(std::fs::metadata(from)?.len(), "opening");
    let header = backup::open_file(&sealer, from, to, |n| bar.set_position(n));
    bar.finish_and_clear();
    let header = match header {
        Ok(h) => h,
        Err(e) => {
            let _ = std::fs::remove_file(to);
            return Err(e.into());
        }
    };
    let url = format!("sqlite://{}", to.display());
    let store = Store::open_schema(&url, 1, Schema::Unchecked).await?;
    anyhow::ensure!(store.backend() == Backend::Sqlite, "a SQLite backup");
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(store.pool())
        .await?;
    anyhow::ensure!(
        check == "ok",
        "the restored database fails its integrity check: {check}"
    );
    chartbridge::app::audit::record(
        &store,
        &sealer,
        &Actor::os()?,
        Action::BackupRestore,
        format!(
            "backup {} of {}",
            header.backup_id,
            crate::ops::time(Some(header.created_at))
        ),
        why.as_deref(),
    )
    .await?;
    let behind = store.schema_status().await?.pending.len();
    store.close().await;
    outln!(
        "backup {} of {} restored into {}",
        header.backup_id,
        crate::ops::time(Some(header.created_at)),
        to.display()
    );
    eprintln!(
        "next: stop the worker, move it into place (or point store.url at it){}, start the \
         worker; with proofs.checkpoint_dir set it refuses a proof log older than what was \
         published (`chartbridge log accept-rollback`)",
        if behind > 0 {
            format!(", run `chartbridge migrate` ({behind} pending)")
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}
