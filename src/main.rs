// jemalloc as the global allocator (cargo feature `jemalloc`, on by default;
// docs/benchmarks.md, "Allocator re-run").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chartbridge::classify::Rules;
use chartbridge::config::Config;
use chartbridge::map::MapSettings;
use chartbridge::seal::Sealer;
use chartbridge::store::Link;
use chartbridge::{app, telemetry};
use clap::{Parser, Subcommand};
use out::{out, outln};

#[path = "cli/audit.rs"]
mod audit_trail;
#[path = "cli/backup.rs"]
mod backup;
#[path = "cli/conversation.rs"]
mod conversation;
#[path = "cli/deletions.rs"]
mod deletions;
#[path = "cli/dlq.rs"]
mod dlq;
#[path = "cli/held.rs"]
mod held;
#[path = "cli/import.rs"]
mod import;
#[path = "cli/items.rs"]
mod items;
#[path = "cli/ops.rs"]
mod ops;
#[path = "cli/out.rs"]
mod out;
#[path = "cli/proofs.rs"]
mod proofs;
#[path = "cli/quarantine.rs"]
mod quarantine;
#[path = "cli/rollback.rs"]
mod rollback;
#[path = "cli/status.rs"]
mod status;

/// Moves treatment-relevant messenger content into the hospital record.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); `CHARTBRIDGE_SECTION__KEY` variables override it.
    #[arg(
        long,
        short,
        env = "CHARTBRIDGE_CONFIG",
        default_value = "chartbridge.toml",
        global = true
    )]
    config: PathBuf,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    json_logs: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker until SIGTERM.
    Run,
    /// Read the rooms the Matrix bot account joined (`/sync`) and publish
    /// their messages to the events queue, until SIGTERM.
    MatrixSource,
    /// Verify a Matrix sender's cross-signing identity as the bot (for
    /// `matrix.e2ee.trust = "verified"`), after comparing its master key
    /// with the sender out of band. Run while `matrix-source` is stopped.
    MatrixVerifyUser {
        /// The sender, `@user:server`.
        #[arg(long)]
        user: String,
        /// The master key the sender's client shows (unpadded base64).
        #[arg(long)]
        master_key: String,
    },
    /// Validate the configuration and print it, secrets masked.
    CheckConfig,
    /// Print the transaction Bundle an event file would become (offline, no IO).
    Map {
        /// The event: canonical, WhatsApp webhook or Matrix room event.
        event: PathBuf,
        /// Literal patient reference when the event carries none.
        #[arg(long)]
        patient: Option<String>,
        /// Archive time to use (RFC 3339); default now.
        #[arg(long)]
        now: Option<String>,
    },
    /// Counts per state, quarantine reasons and deletion states.
    Status {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// `GET` a URL of the worker's HTTP endpoint; exit 0 on a 2xx answer
    /// (the container HEALTHCHECK, which has no curl).
    Probe {
        #[arg(default_value = "http://127.0.0.1:9464/healthz")]
        url: String,
    },
    /// Link a conversation to a patient (and encounter), and release every
    /// message it holds for its patient (see also `conversation link`).
    Link {
        #[arg(long)]
        source: String,
        /// The conversation id (chat, room, `phone_number_id:wa_id`).
        #[arg(long)]
        conversation: String,
        /// Literal reference, `Patient/{id}`.
        #[arg(long)]
        patient: String,
        /// Literal reference, `Encounter/{id}`.
        #[arg(long)]
        encounter: Option<String>,
        /// A free-text note kept sealed with the reason in the audit trail
        /// (who acted is the operating-system account running the command).
        #[arg(long)]
        by: Option<String>,
        /// Why (recorded sealed in the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Review conversations whose messages wait for their patient: list,
    /// link to a patient (releasing them all), dismiss as not relevant.
    Conversation {
        #[command(subcommand)]
        command: conversation::ConversationCommand,
    },
    /// Create the at-rest key file named in the configuration.
    Keygen,
    /// Publish event files to the events queue (DSK I.3): `import` of
    /// these files, published before or not.
    Publish { files: Vec<PathBuf> },
    /// Create a checkpoint signer key file and register its public key,
    /// rotating out the current key (DSK I.5).
    KeygenSigning {
        /// Key name on signature lines; default `proofs.origin`.
        #[arg(long)]
        name: Option<String>,
        /// Where to write the signer key; default `proofs.signing_key_file`.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Why (recorded sealed in the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
    /// The audit trail of human actions (who, when, what, why), hash-chained.
    AuditTrail(audit_trail::AuditTrailArgs),
    /// Checkpoint signing keys.
    Keys {
        #[command(subcommand)]
        command: proofs::KeysCommand,
    },
    /// The proof log: checkpoints and consistency proofs.
    Log {
        #[command(subcommand)]
        command: proofs::LogCommand,
    },
    /// Review quarantined messages: list, resolve to a patient, release.
    Quarantine {
        #[command(subcommand)]
        command: quarantine::QuarantineCommand,
    },
    /// Proof bundles.
    Proof {
        #[command(subcommand)]
        command: proofs::ProofCommand,
    },
    #[command(flatten)]
    Ops(ops::OpsCommand),
    /// Verify a proof bundle offline, or an archived resource in the KIS.
    /// Exit status: 0 verified, 1 a check failed, 2 the check could not run.
    Verify(proofs::VerifyArgs),
    /// Re-verify a random sample of archived content in the KIS.
    /// Exit status: 0 all verified, 1 a mismatch, 2 the audit could not run.
    Audit {
        /// How many archived resources to check.
        #[arg(long, default_value_t = 20)]
        sample: u32,
        /// Print a machine-readable report.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.json_logs);
    match dispatch(cli).await {
        Ok(code) => code,
        // The reader of our output went away (`| head`): nothing to report.
        Err(e) if out::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", out::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let load = || Config::load(&cli.config).map_err(anyhow::Error::from);
    let checked = |r: anyhow::Result<ExitCode>| {
        r.unwrap_or_else(|e| {
            if out::is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", out::error_chain(&e));
            ExitCode::from(2)
        })
    };
    match cli.command {
        Command::Verify(args) => return Ok(checked(proofs::verify(&cli.config, args).await)),
        Command::Audit { sample, json } => {
            let config = load();
            return Ok(checked(match config {
                Ok(c) => proofs::audit(&c, sample, json).await,
                Err(e) => Err(e),
            }));
        }
        Command::KeygenSigning { name, out, reason } => {
            proofs::keygen_signing(&load()?, name, out, reason).await?
        }
        Command::AuditTrail(args) => {
            let config = load();
            return Ok(checked(match config {
                Ok(c) => audit_trail::run(&c, args).await,
                Err(e) => Err(e),
            }));
        }
        Command::Keys { command } => proofs::keys(&load()?, command).await?,
        Command::Log { command } => proofs::log(&load()?, command).await?,
        Command::Proof { command } => proofs::proof(&load()?, command).await?,
        Command::Quarantine { command } => return quarantine::run(&load()?, command).await,
        Command::Ops(command) => return ops::run(&load()?, command).await,
        Command::Conversation { command } => conversation::run(&load()?, command).await?,
        Command::Run => app::run(load()?).await?,
        Command::MatrixSource => app::run_matrix_source(load()?).await?,
        Command::MatrixVerifyUser { user, master_key } => {
            app::matrix_verify_user(load()?, &user, &master_key).await?
        }
        Command::CheckConfig => {
            let config = load()?;
            Rules::load(&config.mappings.rules_file)?;
            out!("{}", config.to_masked_toml());
            eprintln!("configuration is valid");
        }
        Command::Map {
            event,
            patient,
            now,
        } => {
            let config = load()?;
            let rules = Rules::load(&config.mappings.rules_file)?;
            let payload = std::fs::read(&event)
                .with_context(|| format!("cannot read {}", event.display()))?;
            let now = match now {
                Some(t) => chrono::DateTime::parse_from_rfc3339(&t)
                    .context("--now is not RFC 3339")?
                    .with_timezone(&chrono::Utc),
                None => chrono::Utc::now(),
            };
            let bundles = app::offline_map(
                &payload,
                &rules,
                &MapSettings::from(&config.kis),
                patient.as_deref(),
                now,
            )
            .map_err(anyhow::Error::msg)?;
            let out = if bundles.len() == 1 {
                bundles.into_iter().next().expect("one bundle")
            } else {
                serde_json::Value::Array(bundles)
            };
            outln!("{}", serde_json::to_string_pretty(&out)?);
        }
        Command::Probe { url } => {
            let answer = reqwest::Client::new()
                .get(&url)
                .timeout(std::time::Duration::from_secs(5))
                .send()
                .await;
            return Ok(match answer {
                Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
                Ok(r) => {
                    eprintln!("{url}: HTTP {}", r.status().as_u16());
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("{url}: {e}");
                    ExitCode::FAILURE
                }
            });
        }
        Command::Status { json: true } => {
            let config = load()?;
            let (store, _) = app::open_state(&config).await?;
            let report = status::report(&store, config.deletion.stuck_after).await?;
            outln!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Status { json: false } => {
            let config = load()?;
            let (store, _) = app::open_state(&config).await?;
            status::print(&store, config.deletion.stuck_after).await?;
        }
        Command::Link {
            source,
            conversation,
            patient,
            encounter,
            by,
            reason,
        } => {
            let config = load()?;
            let target = conversation::literal(patient, encounter)?;
            let described = conversation::describe(&target);
            let chartbridge::quarantine::Target::Literal { patient, encounter } = target else {
                unreachable!("literal references")
            };
            let (store, sealer) = app::open_state(&config).await?;
            let rules = Rules::load(&config.mappings.rules_file)?;
            let token = chartbridge::resolve::conversation_token(&sealer, &source, &conversation);
            let actor = conversation::record(
                &store,
                &sealer,
                chartbridge::audit::Action::ConversationLink,
                format!(
                    "conversation {} {described}",
                    chartbridge::review::conversation_id(&sealer, &token)
                ),
                reason.as_deref(),
                by.as_deref(),
            )
            .await?;
            let pipeline =
                chartbridge::pipeline::Pipeline::new(&config, store.clone(), sealer, rules)?;
            let released = chartbridge::review::link_conversation(
                &pipeline,
                &source,
                &conversation,
                Link { patient, encounter },
                actor.as_str(),
                chrono::Utc::now(),
            )
            .await?;
            store.close().await;
            eprintln!("linked");
            conversation::report(&released)?;
        }
        Command::Keygen => {
            let config = load()?;
            Sealer::generate_key_file(&config.store.key_file)?;
            eprintln!("key written to {}", config.store.key_file.display());
        }
        Command::Publish { files } => {
            return import::run(&load()?, import::ImportArgs::publish(files)).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}
