//! The proof commands of the binary: signing keys, checkpoints, bundles,
//! verification and audits. Exit status of `verify` and `audit`: 0 verified,
//! 1 a check failed, 2 the check could not run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use chartbridge::app;
use chartbridge::audit::{Action, Actor};
use chartbridge::config::Config;
use chartbridge::prove::checkpoint::KeyInfo;
use chartbridge::prove::leaf::format_rfc3339_millis;
use chartbridge::prove::service::{self, ProofTarget, ServiceError};
use chartbridge::push::Kis;
use chartbridge::store::millis;
use clap::Subcommand;

use crate::out::{out, outln};

/// `chartbridge keys …`
#[derive(Subcommand)]
pub enum KeysCommand {
    /// List the checkpoint signing keys with validity and revocation.
    List {
        /// Print the list as JSON (usable as `verify --key`).
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: checkpoints it signed at or after `--at` stop verifying.
    Revoke {
        /// Key id, 8 hex digits.
        #[arg(long)]
        key_id: String,
        /// Revocation time (RFC 3339); default now.
        #[arg(long)]
        at: Option<String>,
        /// Why (recorded sealed in the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Add a new at-rest key to `store.key_file` as current and re-seal
    /// every sealed blob under it, in batches; re-run to resume after an
    /// interruption. Stop the workers first.
    RotateAtRest {
        /// Rows per transaction.
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
        /// Why (recorded sealed in the audit trail).
        #[arg(long)]
        reason: Option<String>,
        /// Stop after this many batches, as a crash would (tests).
        #[arg(long, hide = true)]
        stop_after_batches: Option<u64>,
    },
}

/// `chartbridge log …`
#[derive(Subcommand)]
pub enum LogCommand {
    /// Sign a checkpoint of the log now and print the signed note.
    Checkpoint,
    /// Print a verified consistency proof between two tree sizes (JSON).
    Consistency {
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
    },
    /// Accept that the proof log contradicts checkpoints published in
    /// `proofs.checkpoint_dir` (a restored backup): recorded, after which
    /// the worker appends again.
    AcceptRollback(crate::rollback::AcceptArgs),
}

/// `chartbridge proof …`
#[derive(Subcommand)]
pub enum ProofCommand {
    /// Export the proof bundle of an archived content (JSON).
    Export {
        /// The message, `SOURCE:ID`.
        #[arg(
            long,
            conflicts_with = "resource",
            required_unless_present = "resource"
        )]
        message_id: Option<String>,
        /// The KIS resource, `Type/ID`.
        #[arg(long)]
        resource: Option<String>,
        /// Write the bundle here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Why (recorded sealed in the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Arguments of `chartbridge verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// A proof bundle to verify offline (no configuration needed).
    #[arg(long, conflicts_with = "kis", required_unless_present = "kis")]
    bundle: Option<PathBuf>,
    /// The content bytes the bundle is about.
    #[arg(long, requires = "bundle")]
    content: Option<PathBuf>,
    /// Trusted keys: verifier keys one per line, or a JSON key list.
    #[arg(long, requires = "bundle")]
    key: Option<PathBuf>,
    /// Re-verify an archived resource in the KIS, `DocumentReference/ID` or `Communication/ID`.
    #[arg(long)]
    kis: Option<String>,
    /// Print a machine-readable report.
    #[arg(long)]
    json: bool,
}

fn now_ms() -> i64 {
    millis(chrono::Utc::now())
}

fn parse_time(text: &str) -> anyhow::Result<i64> {
    Ok(chrono::DateTime::parse_from_rfc3339(text)
        .context("not an RFC 3339 time")?
        .timestamp_millis())
}

fn show_time(ms: Option<i64>) -> String {
    ms.and_then(format_rfc3339_millis)
        .unwrap_or_else(|| "-".into())
}

/// `keygen-signing`: a new signer key file, registered (rotating out the
/// current key).
pub async fn keygen_signing(
    config: &Config,
    name: Option<String>,
    out: Option<PathBuf>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let path = out
        .or_else(|| config.proofs.signing_key_file.clone())
        .context("set proofs.signing_key_file in the configuration, or give --out")?;
    anyhow::ensure!(
        !path.exists(),
        "{} exists; refusing to overwrite a signing key",
        path.display()
    );
    let (store, sealer) = app::open_state(config).await?;
    let name = name.unwrap_or_else(|| config.proofs.origin.clone());
    let signer = service::generate_signer_file(&name, &path)?;
    let now = now_ms();
    let info = KeyInfo::new(&signer.verifier(), now);
    app::audit::record(
        &store,
        &sealer,
        &Actor::os()?,
        Action::SigningKeyRotate,
        format!("signing-key {}", info.key_id),
        reason.as_deref(),
    )
    .await?;
    store
        .rotate_signing_key(&info, now)
        .await
        .context("key file written, but registering the key failed")?;
    outln!("{}", info.verifier_key);
    eprintln!(
        "signer key written to {} (keep it secret); the verifier key above is registered, \
         valid from now, and any previous key ends now. Publish it to verifiers.",
        path.display()
    );
    Ok(())
}

/// `keys list|revoke|rotate-at-rest`.
pub async fn keys(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    if let KeysCommand::RotateAtRest {
        batch_size,
        reason,
        stop_after_batches,
    } = command
    {
        return crate::audit_trail::rotate_at_rest(config, batch_size, reason, stop_after_batches)
            .await;
    }
    let store = app::open_store(config).await?;
    let list = match command {
        KeysCommand::RotateAtRest { .. } => unreachable!("handled above"),
        KeysCommand::List { json: true } => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&store.signing_keys().await?)?
            );
            return Ok(());
        }
        KeysCommand::List { json: false } => store.signing_keys().await?,
        KeysCommand::Revoke { key_id, at, reason } => {
            let at = at
                .as_deref()
                .map(parse_time)
                .transpose()?
                .unwrap_or_else(now_ms);
            let sealer = app::load_sealer(config)?;
            app::audit::record(
                &store,
                &sealer,
                &Actor::os()?,
                Action::SigningKeyRevoke,
                format!("signing-key {}", key_id.to_lowercase()),
                reason.as_deref(),
            )
            .await?;
            let keys = store.revoke_signing_key(&key_id.to_lowercase(), at).await?;
            anyhow::ensure!(!keys.is_empty(), "no signing key with id {key_id}");
            keys
        }
    };
    for k in list {
        outln!(
            "{}+{}  valid {} .. {}  revoked {}\n  {}",
            k.name,
            k.key_id,
            show_time(Some(k.valid_from_ms)),
            show_time(k.valid_until_ms),
            show_time(k.revoked_at_ms),
            k.verifier_key
        );
    }
    Ok(())
}

/// `log checkpoint|consistency|accept-rollback`.
pub async fn log(config: &Config, command: LogCommand) -> anyhow::Result<()> {
    if let LogCommand::AcceptRollback(args) = command {
        return crate::rollback::accept(config, args).await;
    }
    let store = app::open_store(config).await?;
    match command {
        LogCommand::Checkpoint => {
            let signer = app::load_signer(config)?.ok_or(ServiceError::NoSigningKey)?;
            let signed =
                service::sign_checkpoint(&store, &signer, &config.proofs.origin, now_ms()).await?;
            if let Some(dir) = &config.proofs.checkpoint_dir {
                service::publish::publish_latest(&store, dir).await?;
            }
            match signed {
                Some(cp) => out!("{}", cp.note),
                None => match store.latest_checkpoint().await? {
                    Some(cp) => {
                        eprintln!(
                            "the log did not grow since this checkpoint (size {})",
                            cp.size
                        );
                        out!("{}", cp.note);
                    }
                    None => eprintln!("the log is empty; nothing to sign"),
                },
            }
        }
        LogCommand::Consistency { from, to } => {
            let proof = service::consistency(&store, from, to).await?;
            outln!("{}", serde_json::to_string_pretty(&proof)?);
            eprintln!("consistency from {from} to {to} verified");
        }
        LogCommand::AcceptRollback(_) => unreachable!("handled above"),
    }
    Ok(())
}

/// `proof export`.
pub async fn proof(config: &Config, command: ProofCommand) -> anyhow::Result<()> {
    let ProofCommand::Export {
        message_id,
        resource,
        out,
        reason,
    } = command;
    let target = match (message_id, resource) {
        (Some(m), _) => ProofTarget::message(&m)?,
        (None, Some(r)) => ProofTarget::resource(&r)?,
        (None, None) => anyhow::bail!("give --message-id or --resource"),
    };
    let signer = app::load_signer(config)?;
    let (store, sealer) = app::open_state(config).await?;
    let bundle = app::audit::export_bundle(
        (&store, &sealer),
        &Actor::os()?,
        &target,
        (signer.as_ref(), &config.proofs.origin),
        reason.as_deref(),
    )
    .await?;
    let json = bundle.to_json();
    match out {
        Some(path) => {
            std::fs::write(&path, format!("{json}\n"))
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "bundle for leaf {} of {} written to {}",
                bundle.leaf_index,
                bundle.tree_size,
                path.display()
            );
        }
        None => outln!("{json}"),
    }
    Ok(())
}

fn emit<T: serde::Serialize>(json: bool, value: &T, human: String) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(value)?);
    } else {
        out!("{human}");
    }
    Ok(())
}

fn verdict(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `verify --bundle … | --kis …`.
pub async fn verify(config_path: &Path, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    if let Some(bundle) = &args.bundle {
        let v = service::verify_bundle_files(bundle, args.content.as_deref(), args.key.as_deref())?;
        emit(args.json, &v, v.human())?;
        return Ok(verdict(v.verified));
    }
    let resource = args.kis.context("give --bundle or --kis")?;
    let config = Config::load(config_path)?;
    let (store, sealer) = app::open_state(&config).await?;
    let kis = Kis::new(&config.kis)?;
    let keys = sealer.proof_keys();
    let report = service::verify_against_kis(&kis, &resource, (&store, &keys)).await?;
    emit(args.json, &report, report.human())?;
    Ok(verdict(report.ok()))
}

/// `audit --sample N`.
pub async fn audit(config: &Config, sample: u32, json: bool) -> anyhow::Result<ExitCode> {
    let (store, sealer) = app::open_state(config).await?;
    let kis = Kis::new(&config.kis)?;
    let report =
        service::audit_and_record(&kis, (&store, &sealer.proof_keys()), sample, "cli").await?;
    emit(json, &report, report.human())?;
    Ok(verdict(report.ok()))
}
