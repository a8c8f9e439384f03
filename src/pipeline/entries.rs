//! What decoding found besides messages: skipped entries (counted), entries
//! held at decoding (quarantined sealed) and a readable copy that
//! supersedes a hold (released). Each is retried until the store has it.

use chrono::Utc;
use tokio::sync::watch;

use super::attempts::{MessageRetry, Step};
use super::{Outcome, Pipeline, Transient};
use crate::event::{self, Message};
use crate::reason::Reason;
use crate::store::millis;
use crate::telemetry;

impl Pipeline {
    /// Adds a payload's skipped entries to the store's counts by kind
    /// (`chartbridge status` shows them). Retried like a message; a
    /// redelivered payload is counted again.
    pub(super) async fn record_skipped(
        &self,
        source: &str,
        skipped: &[event::SkipKind],
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), Step> {
        let mut counts: std::collections::BTreeMap<&str, u64> = Default::default();
        for kind in skipped {
            *counts.entry(kind.as_str()).or_default() += 1;
        }
        let counts: Vec<(&str, u64)> = counts.into_iter().collect();
        let logic = MessageRetry::until_stored(self);
        self.retried(&logic, shutdown, || async {
            self.store
                .add_skipped(source, &counts, millis(Utc::now()))
                .await
                .map_err(Transient::store)
        })
        .await
    }

    /// Retires the link and review decision of a conversation whose user
    /// changed identity ([`event::IdentityChange`]): neither its link nor a
    /// phone number resolves it until a person links it again, so its next
    /// messages are held. Decisions taken after the change stay
    /// ([`crate::store::Store::retire_conversation`]). The audit trail gets
    /// `conversation.unlink` (by the worker's account) before the store
    /// changes, so a crash between the two repeats the entry, never loses
    /// it. A notice without a readable time counts as of now (then a
    /// redelivery after a person's new link retires again: toward holding).
    pub(super) async fn retire_conversation(
        &self,
        change: &event::IdentityChange,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), Step> {
        let token =
            crate::resolve::conversation_token(&self.sealer, &change.source, &change.conversation);
        // A notice's time, never later than now (a notice dated ahead
        // would otherwise outrank a person's decision taken after it).
        let now = Utc::now();
        let at_ms = millis(change.at.map_or(now, |at| at.min(now)));
        let logic = MessageRetry::until_stored(self);
        self.retried(&logic, shutdown, || async {
            if !self
                .store
                .retirement_pending(&token, at_ms)
                .await
                .map_err(Transient::store)?
            {
                return Ok(());
            }
            let id = crate::review::conversation_id(&self.sealer, &token);
            self.audit_retired(&id).await?;
            self.store
                .retire_conversation(&token, at_ms)
                .await
                .map_err(Transient::store)?;
            tracing::info!(
                conversation = %id,
                "conversation retired: the messenger reports that its user changed identity"
            );
            Ok(())
        })
        .await
    }

    async fn audit_retired(&self, id: &str) -> Result<(), Transient> {
        let actor = crate::audit::Actor::os().map_err(|e| {
            tracing::error!(error = %e, "cannot name the worker's account for the audit trail");
            Transient::at("audit")
        })?;
        self.store
            .append_audit(
                &self.sealer,
                &crate::audit::Entry {
                    actor: &actor,
                    action: crate::audit::Action::ConversationUnlink,
                    target: format!("conversation {id}"),
                    reason: Some("the messenger reports that the user changed identity"),
                },
            )
            .await
            .map_err(Transient::store)?;
        Ok(())
    }

    /// Quarantines an entry held at decoding with the entry sealed, unless
    /// its key already has a terminal state. Retried like a message.
    pub(super) async fn hold_entry(
        &self,
        held: &event::HeldEntry,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Outcome, Step> {
        let logic = MessageRetry::until_stored(self);
        self.retried(&logic, shutdown, || {
            self.recorder.held_entry(held, millis(Utc::now()))
        })
        .await
    }

    /// A readable copy of a message quarantined with `hold` (a Matrix event
    /// held `undecryptable` whose room keys arrived later): the quarantine
    /// entry takes this copy as its sealed event and content claim, and is
    /// released through the pipeline ([`Pipeline::release`]), archived like
    /// any released item. A message not held so is left to the normal path
    /// (then already terminal, or fresh). Retried like a message.
    pub(super) async fn supersede_hold(
        &self,
        m: &Message,
        hold: Reason,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), Step> {
        let logic = MessageRetry::until_stored(self);
        self.retried(&logic, shutdown, || async {
            if !self.recorder.replace_held(m, hold).await? {
                return Ok(());
            }
            match self.release(&m.key, Utc::now()).await {
                Ok(outcome) => {
                    telemetry::outcome(&m.key.source, &outcome);
                    Ok(())
                }
                Err(super::ReleaseError::Transient(t)) => Err(t),
                Err(e) => {
                    // The copy stays sealed in the quarantine entry.
                    tracing::warn!(error = %e, "release of a superseded hold failed");
                    Ok(())
                }
            }
        })
        .await
    }
}
