//! Holding parts and releasing groups, on the pipeline.
//!
//! A part is held in one store transaction; its delivery is acked after that
//! (a held part is durable). The arrival that completes a group releases it
//! at once; the split sweep releases groups whose wait ended, complete groups
//! a crash left behind, and parts held while their group was being released.
//! Release is idempotent: parts already terminal are skipped, the KIS writes
//! are conditional, and a claim with a lease keeps two releasers apart.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Outcome, Pipeline, Transient};
use crate::classify::Outcome as RuleOutcome;
use crate::event::{self, Message, MessageKey};
use crate::reason::Reason;
use crate::resolve;
use crate::split::{GroupContext, LEASE_MS, SweepSummary, group_token};
use crate::store::{HeldPart, Hold, millis};
use crate::telemetry;

impl Pipeline {
    /// Holds a part of a split message; releases its group if this part
    /// completed it. A part of an already released group is processed alone.
    pub(super) async fn hold_part(
        &self,
        m: &Message,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Transient> {
        let alone = GroupContext::default();
        let Some(token) = group_token(&self.sealer, m) else {
            return self.process_in_group(m, &alone, now).await;
        };
        match self.recorder.hold_part(m, &token, now).await? {
            None => self.process_in_group(m, &alone, now).await,
            Some(Hold::GroupReleased) => self.late_part(m, &token, now).await,
            Some(Hold::Held { complete: false }) => Ok(Outcome::Held),
            Some(Hold::Held { complete: true }) => {
                self.release_group(&m.key.source, &token, now).await?;
                Ok(Outcome::Held)
            }
        }
    }

    /// Releases one group if it can be claimed: every held part reaches a
    /// terminal state, then the group is recorded complete or incomplete.
    /// `false` when another releaser has it or it was released already.
    pub async fn release_group(
        &self,
        source: &str,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, Transient> {
        let claimed = self
            .store
            .claim_group(source, token, millis(now), LEASE_MS)
            .await
            .map_err(Transient::store)?;
        if !claimed {
            return Ok(false);
        }
        let result = self.release_claimed(source, token, now).await;
        if result.is_err() {
            let _ = self.store.unclaim_group(source, token).await;
        }
        result.map(|()| true)
    }

    async fn release_claimed(
        &self,
        source: &str,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(), Transient> {
        let Some(group) = self
            .store
            .held_group(source, token)
            .await
            .map_err(Transient::store)?
        else {
            return Ok(());
        };
        let mut parts = Vec::with_capacity(group.parts.len());
        for p in &group.parts {
            parts.push((p.index, self.open_part(p)?));
        }
        let mut context = GroupContext {
            relevant: None,
            missing: group.missing(),
            count: group.count,
            late: false,
        };
        for (_, m) in &parts {
            let hint = resolve::hint(m, &self.store, &self.sealer, &self.adt.default_country_code)
                .await
                .map_err(Transient::store)?;
            let decision = self.rules.classify(m, hint.linked());
            if matches!(decision.outcome, RuleOutcome::Relevant { .. }) {
                context.relevant = Some(decision);
                break;
            }
        }
        let mut processed: Vec<MessageKey> = Vec::with_capacity(parts.len());
        let mut previous = None;
        for (index, m) in &parts {
            let outcome = if let Some(existing) =
                self.store.message(&m.key).await.map_err(Transient::store)?
            {
                Outcome::AlreadyTerminal(existing.state)
            } else if previous == Some(*index) {
                self.recorder
                    .quarantine_sealed(m, Reason::SplitDuplicatePart, None, now)
                    .await?
            } else {
                self.process_in_group(m, &context, now).await?
            };
            telemetry::outcome(&m.key.source, &outcome);
            previous = Some(*index);
            processed.push(m.key.clone());
        }
        self.store
            .finish_group(source, token, &context.missing, &processed, millis(now))
            .await
            .map_err(Transient::store)?;
        telemetry::emit(telemetry::SplitReleased {
            source,
            complete: context.missing.is_empty(),
            parts: processed.len(),
        });
        Ok(())
    }

    /// A part of a group released before it arrived (or while it was
    /// being held). An index the group had at its release: the part is a
    /// second message claiming it (`split_duplicate_part`). An index
    /// missing then: it is decided with the group's
    /// recorded gap, so a part no rule makes relevant is held
    /// `split_incomplete` rather than deleted on its own rule (the group's
    /// other parts may have been relevant, or held for a person).
    async fn late_part(
        &self,
        m: &Message,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Outcome, Transient> {
        let released = self
            .store
            .released_group(&m.key.source, token)
            .await
            .map_err(Transient::store)?;
        let Some((count, mut missing)) = released else {
            return self
                .process_in_group(m, &GroupContext::default(), now)
                .await;
        };
        let index = m.part.as_ref().map_or(0, |p| p.index);
        // An index the group had when it was released: a second message
        // claiming it.
        if !missing.contains(&index) && index <= count {
            return self
                .recorder
                .quarantine_sealed(m, Reason::SplitDuplicatePart, None, now)
                .await;
        }
        // The parts still missing besides this one mark its record.
        missing.retain(|&i| i != index);
        let context = GroupContext {
            relevant: None,
            missing,
            count: count.max(index),
            late: true,
        };
        self.process_in_group(m, &context, now).await
    }

    fn open_part(&self, p: &HeldPart) -> Result<Message, Transient> {
        let place = crate::store::sealed::held_part(&p.key);
        let bytes = self.sealer.open(&place, &p.sealed_event).map_err(|e| {
            tracing::error!(error = %e, "a held part cannot be opened");
            Transient::at("seal")
        })?;
        let decoded = event::reopen(&bytes).map_err(|e| {
            tracing::error!(reason = e.code.as_str(), "a held part does not decode");
            Transient::at("held-part")
        })?;
        decoded
            .messages
            .into_iter()
            .next()
            .ok_or(Transient::at("held-part"))
    }

    /// The split sweep: releases groups that are complete or whose first
    /// part is at least `wait` older than `now`, and processes parts held
    /// while their group was released. Transient failures leave the group
    /// for the next sweep.
    pub async fn release_due_groups(
        &self,
        wait: Duration,
        now: DateTime<Utc>,
    ) -> Result<SweepSummary, Transient> {
        let now_ms = millis(now);
        let expired_before = now_ms - i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
        let mut summary = SweepSummary::default();
        let due = self
            .store
            .due_groups(expired_before, now_ms, 256)
            .await
            .map_err(Transient::store)?;
        for (source, token) in due {
            match self.release_group(&source, &token, now).await {
                Ok(true) => summary.released += 1,
                Ok(false) => {}
                Err(t) => {
                    tracing::warn!(stage = t.stage, "split group release deferred");
                    summary.deferred += 1;
                }
            }
        }
        for p in self
            .store
            .orphan_parts(256)
            .await
            .map_err(Transient::store)?
        {
            let m = self.open_part(&p)?;
            let outcome = match self.store.message(&m.key).await.map_err(Transient::store)? {
                Some(existing) => Outcome::AlreadyTerminal(existing.state),
                None => self.late_part(&m, &p.group_token, now).await?,
            };
            telemetry::outcome(&m.key.source, &outcome);
            self.store
                .drop_held_part(&p.key)
                .await
                .map_err(Transient::store)?;
            summary.orphans += 1;
        }
        Ok(summary)
    }
}
