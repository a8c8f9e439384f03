//! `chartbridge conversation list|link|dismiss`: review of conversations
//! whose messages are held because their patient is not known
//! (`unresolved_conversation`, `patient_candidate`, `patient_ambiguous`,
//! `unknown_patient`). One decision per conversation reaches every message
//! it holds. The list shows opaque ids, reasons, counts and ages only — no
//! conversation ids, no content, no patient identifiers.

use anyhow::Context;
use chartbridge::audit::{Action, Actor};
use chartbridge::classify::Rules;
use chartbridge::config::Config;
use chartbridge::pipeline::{Outcome, Pipeline};
use chartbridge::quarantine::Target;
use chartbridge::review::{self, Released};
use chartbridge::{app, store::millis};
use clap::{Args, Subcommand};

use crate::out::outln;

/// `chartbridge conversation …`
#[derive(Subcommand)]
pub enum ConversationCommand {
    /// Conversations with held messages: id, source, messages, reasons, oldest age.
    List,
    /// Link the conversation to a patient (recorded: who, when) and release
    /// every message it holds: each archived once in the KIS, deletion after.
    Link {
        /// The conversation id from `conversation list` (or `quarantine list`).
        id: String,
        #[command(flatten)]
        to: TargetArgs,
    },
    /// Dismiss the conversation as not relevant (recorded: who, when): its
    /// held messages are not archived, their messenger copies are deleted
    /// after the `[default]` retention.
    Dismiss {
        /// The conversation id from `conversation list`.
        id: String,
        /// A free-text note kept sealed with the reason in the audit trail
        /// (who acted is the operating-system account running the command).
        #[arg(long)]
        by: Option<String>,
        /// Why (recorded sealed in the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Whom a reviewer links or resolves to, and why.
#[derive(Args)]
pub struct TargetArgs {
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
    /// A free-text note kept sealed with the reason in the audit trail
    /// (who acted is the operating-system account running the command).
    #[arg(long)]
    by: Option<String>,
    /// Why (recorded sealed in the audit trail).
    #[arg(long)]
    reason: Option<String>,
}

/// The audit trail's free text of a decision: `--reason` and `--by`.
pub struct Why {
    pub reason: Option<String>,
    pub by: Option<String>,
}

impl TargetArgs {
    /// The target and the audit trail's free text.
    pub fn parse(self) -> anyhow::Result<(Target, Why)> {
        let target = match self.patient {
            Some(p) => literal(p, self.encounter)?,
            None if self.accept_candidate => Target::Candidate,
            None => anyhow::bail!("give --patient or --accept-candidate"),
        };
        let why = Why {
            reason: self.reason,
            by: self.by,
        };
        Ok((target, why))
    }
}

/// Records a review decision in the audit trail as the process's
/// operating-system account, before it is carried out; the account is who
/// the review tables name.
pub async fn record(
    store: &chartbridge::store::Store,
    sealer: &chartbridge::seal::Sealer,
    action: Action,
    target: String,
    reason: Option<&str>,
    by: Option<&str>,
) -> anyhow::Result<Actor> {
    let actor = Actor::os()?;
    let why = app::audit::why(reason, by);
    app::audit::record(store, sealer, &actor, action, target, why.as_deref()).await?;
    Ok(actor)
}

/// A decision's target in the audit trail: literal references or `candidate`.
pub fn describe(target: &Target) -> String {
    target.describe()
}

/// Checks operator-given literal references.
pub fn literal(patient: String, encounter: Option<String>) -> anyhow::Result<Target> {
    Target::literal(patient, encounter).map_err(|e| match e {
        chartbridge::quarantine::ReviewError::NotLiteral(_, "Patient") => {
            anyhow::anyhow!("--patient must be a literal reference, Patient/{{id}}")
        }
        _ => anyhow::anyhow!("--encounter must be a literal reference, Encounter/{{id}}"),
    })
}

/// One summary line on stderr; exit status 1 when a message stayed held.
pub fn report(released: &Released) -> anyhow::Result<()> {
    let archived = released.count(|o| matches!(o, Outcome::Archived { .. }));
    let dismissed = released.count(|o| matches!(o, Outcome::NotRelevant { .. }));
    let still = released.count(|o| matches!(o, Outcome::Quarantined { .. }));
    let before = released.count(|o| matches!(o, Outcome::AlreadyTerminal(_)));
    let failed = released.failed();
    eprintln!(
        "{} held message(s): archived {archived}, not relevant {dismissed}, still quarantined {still}, \
         already done {before}, failed {failed}",
        released.outcomes.len()
    );
    for (_, o) in &released.outcomes {
        if let Err(e) = o {
            eprintln!("  left held: {e}");
        }
    }
    anyhow::ensure!(
        failed == 0 && still == 0,
        "some messages stay held; see `chartbridge quarantine list`"
    );
    Ok(())
}

pub async fn run(config: &Config, command: ConversationCommand) -> anyhow::Result<()> {
    let (store, sealer) = app::open_state(config).await?;
    if let ConversationCommand::List = command {
        let now = millis(chrono::Utc::now());
        outln!(
            "{:<16}  {:<9}  {:>8}  {:>8}  reasons",
            "id",
            "source",
            "messages",
            "oldest"
        );
        for (id, c) in review::list(&store, &sealer).await? {
            let oldest = c.messages.iter().map(|m| m.created_at).min().unwrap_or(now);
            let mut reasons: Vec<&str> = c.messages.iter().map(|m| m.reason.as_str()).collect();
            reasons.sort_unstable();
            reasons.dedup();
            outln!(
                "{id:<16}  {:<9}  {:>8}  {:>8}  {}",
                c.source,
                c.messages.len(),
                crate::quarantine::age(now, oldest),
                reasons.join(",")
            );
        }
        return Ok(());
    }
    let rules = Rules::load(&config.mappings.rules_file)?;
    let pipeline = Pipeline::new(config, store.clone(), sealer.clone(), rules)?;
    let now = chrono::Utc::now();
    let released = match command {
        ConversationCommand::List => unreachable!("handled above"),
        ConversationCommand::Link { id, to } => {
            let token = review::find(&store, &sealer, &id).await?;
            let (target, why) = to.parse()?;
            let actor = record(
                &store,
                &sealer,
                Action::ConversationLink,
                format!("conversation {id} {}", describe(&target)),
                why.reason.as_deref(),
                why.by.as_deref(),
            )
            .await?;
            review::link(&pipeline, &token, target, actor.as_str(), now)
                .await
                .context("cannot link")?
        }
        ConversationCommand::Dismiss { id, by, reason } => {
            let token = review::find(&store, &sealer, &id).await?;
            let actor = record(
                &store,
                &sealer,
                Action::ConversationDismiss,
                format!("conversation {id}"),
                reason.as_deref(),
                by.as_deref(),
            )
            .await?;
            review::dismiss(&pipeline, &token, actor.as_str(), now)
                .await
                .context("cannot dismiss")?
        }
    };
    store.close().await;
    report(&released)
}
