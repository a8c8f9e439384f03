//! `chartbridge quarantine list|resolve|release`: review of quarantined
//! messages. The list shows opaque ids, reason codes and ages only — no
//! content, no messenger ids, no patient identifiers.

use anyhow::Context;
use chartbridge::classify::Rules;
use chartbridge::config::Config;
use chartbridge::pipeline::{Outcome, Pipeline};
use chartbridge::quarantine::{self, Target};
use chartbridge::{app, store::millis};
use clap::Subcommand;

use crate::out::outln;

/// `chartbridge quarantine …`
#[derive(Subcommand)]
pub enum QuarantineCommand {
    /// Open items: id, reason code, age, whether a candidate or a resolution waits.
    List,
    /// Resolve an item to a patient (and encounter), record who did it, and release it.
    Resolve {
        /// The item id from `quarantine list`.
        id: String,
        /// Literal reference, `Patient/{id}`.
        #[arg(
            long,
            conflicts_with = "accept_candidate",
            required_unless_present = "accept_candidate"
        )]
        patient: Option<String>,
        /// Literal reference, `Encounter/{id}`.
        #[arg(long, requires = "patient")]
        encounter: Option<String>,
        /// Confirm the candidate patient a phone-number match found.
        #[arg(long)]
        accept_candidate: bool,
        /// Who resolves (audit record); default the login name.
        #[arg(long)]
        by: Option<String>,
    },
    /// Run an item through the pipeline again (after `resolve`, a new link or ADT data).
    Release {
        /// The item id from `quarantine list`.
        id: String,
    },
}

pub async fn run(config: &Config, command: QuarantineCommand) -> anyhow::Result<()> {
    let (store, sealer) = app::open_state(config).await?;
    if let QuarantineCommand::List = command {
        let now = millis(chrono::Utc::now());
        outln!("{:<16}  {:<24}  {:>8}  note", "id", "reason", "age");
        for (id, item) in quarantine::list(&store, &sealer).await? {
            let age =
                std::time::Duration::from_secs(((now - item.created_at).max(0) / 1000) as u64);
            let note = if item.resolved {
                "resolved, release pending"
            } else if item.has_candidate {
                "candidate patient"
            } else {
                ""
            };
            outln!(
                "{id:<16}  {:<24}  {:>8}  {note}",
                item.reason,
                humantime::format_duration(age)
                    .to_string()
                    .split(' ')
                    .next()
                    .unwrap_or("0s"),
            );
        }
        return Ok(());
    }
    let rules = Rules::load(&config.mappings.rules_file)?;
    let pipeline = Pipeline::new(config, store.clone(), sealer.clone(), rules)?;
    let now = chrono::Utc::now();
    let outcome = match command {
        QuarantineCommand::List => unreachable!("handled above"),
        QuarantineCommand::Resolve {
            id,
            patient,
            encounter,
            accept_candidate,
            by,
        } => {
            let key = quarantine::find(&store, &sealer, &id).await?;
            let target = match patient {
                Some(patient) => {
                    anyhow::ensure!(
                        patient.starts_with("Patient/"),
                        "--patient must be a literal reference, Patient/{{id}}"
                    );
                    anyhow::ensure!(
                        encounter
                            .as_deref()
                            .is_none_or(|e| e.starts_with("Encounter/")),
                        "--encounter must be a literal reference, Encounter/{{id}}"
                    );
                    Target::Literal { patient, encounter }
                }
                None if accept_candidate => Target::Candidate,
                None => anyhow::bail!("give --patient or --accept-candidate"),
            };
            let by = by
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "unknown".into());
            quarantine::resolve(&pipeline, &key, target, &by, now)
                .await
                .context("cannot resolve")?
        }
        QuarantineCommand::Release { id } => {
            let key = quarantine::find(&store, &sealer, &id).await?;
            quarantine::release(&pipeline, &key, now)
                .await
                .context("cannot release")?
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
    Ok(())
}
