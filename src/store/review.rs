//! Review by conversation: quarantined messages carry the keyed token of
//! their conversation (the `links` token, never the conversation id), a
//! reviewer's decision about a conversation (linked or dismissed) is kept
//! with who and when, and a dismissal turns each held message into a not
//! relevant one with its deletion scheduled — exactly once, in one
//! transaction per message. Also the listing of conflicting duplicates
//! (`conflicts`), which are held for review like quarantined messages.

use sqlx::Row;

use super::{MessageRef, NewDeletion, RowKey, Store, StoreError, outbox};
use crate::event::MessageKey;
use crate::reason::Reason;

/// Reasons a conversation-level decision (link or dismissal) applies to
/// ([`Reason::IDENTITY`]).
const IDENTITY_REASONS: [Reason; 4] = Reason::IDENTITY;

/// An open quarantine item of a conversation, without content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldMessage {
    pub key: MessageRef,
    pub reason: String,
    pub candidate: Option<String>,
    pub created_at: i64,
}

/// A conversation with messages held for its patient: its token, the
/// source, and its open items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldConversation {
    pub token: String,
    pub source: String,
    pub messages: Vec<HeldMessage>,
}

/// A reviewer's decision about a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConversationDecision {
    Linked,
    Dismissed,
}

impl ConversationDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linked => "linked",
            Self::Dismissed => "dismissed",
        }
    }
}

/// The recorded decision: what, who, when (ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationReview {
    pub decision: ConversationDecision,
    pub decided_by: String,
    pub decided_at: i64,
}

/// A conflicting duplicate kept sealed (`conflicts`), without content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictItem {
    pub key: MessageRef,
    pub digest: String,
    pub created_at: i64,
}

impl Store {
    /// Quarantines a message whose patient is not known, keeping its
    /// conversation token (and a candidate patient, if a phone match left
    /// one). `false` if the message already has a terminal state.
    pub async fn record_quarantine_conversation(
        &self,
        key: &MessageKey,
        reason: &str,
        sealed_event: &crate::seal::Sealing,
        candidate: Option<&str>,
        conversation_token: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.insert_quarantine(
            key,
            reason,
            sealed_event,
            candidate,
            Some(conversation_token),
            now_ms,
        )
        .await
    }

    /// The conversation token kept with a quarantined message, if any.
    pub async fn quarantine_conversation(
        &self,
        key: &(impl RowKey + ?Sized),
    ) -> Result<Option<String>, StoreError> {
        let key = self.row(key)?;
        let row = sqlx::query(
            "SELECT conversation_token FROM quarantine WHERE source = $1 AND message_token = $2",
        )
        .bind(&key.source)
        .bind(&key.token)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => r.try_get(0)?,
            None => None,
        })
    }

    /// Conversations with open quarantine items held for their patient
    /// ([`IDENTITY_REASONS`], current reason), oldest item first.
    pub async fn held_conversations(&self) -> Result<Vec<HeldConversation>, StoreError> {
        self.held_where(None).await
    }

    /// The open items of one conversation held for their patient.
    pub async fn conversation_held(&self, token: &str) -> Result<Vec<HeldMessage>, StoreError> {
        Ok(self
            .held_where(Some(token))
            .await?
            .into_iter()
            .flat_map(|c| c.messages)
            .collect())
    }

    async fn held_where(&self, token: Option<&str>) -> Result<Vec<HeldConversation>, StoreError> {
        let rows = sqlx::query(
            "SELECT q.conversation_token, q.source, q.message_token, m.reason, q.candidate, q.created_at
             FROM quarantine q JOIN messages m
               ON m.source = q.source AND m.message_token = q.message_token
             WHERE m.state = 'quarantined' AND q.conversation_token IS NOT NULL
               AND q.released_at IS NULL
               AND (CAST($1 AS TEXT) IS NULL OR q.conversation_token = $1)
               AND m.reason IN ($2, $3, $4, $5)
             ORDER BY q.created_at, q.source, q.message_token",
        )
        .bind(token)
        .bind(IDENTITY_REASONS[0].as_str())
        .bind(IDENTITY_REASONS[1].as_str())
        .bind(IDENTITY_REASONS[2].as_str())
        .bind(IDENTITY_REASONS[3].as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<HeldConversation> = Vec::new();
        for r in &rows {
            let token: String = r.try_get(0)?;
            let message = HeldMessage {
                key: MessageRef {
                    source: r.try_get(1)?,
                    token: r.try_get(2)?,
                },
                reason: r.try_get(3)?,
                candidate: r.try_get(4)?,
                created_at: r.try_get(5)?,
            };
            match out.iter_mut().find(|c| c.token == token) {
                Some(c) => c.messages.push(message),
                None => out.push(HeldConversation {
                    token,
                    source: message.key.source.clone(),
                    messages: vec![message],
                }),
            }
        }
        Ok(out)
    }

    /// Records (or replaces) a reviewer's decision about a conversation.
    pub async fn record_conversation_review(
        &self,
        token: &str,
        decision: ConversationDecision,
        by: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO conversation_reviews (conversation_token, decision, decided_by, decided_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (conversation_token) DO UPDATE SET decision = excluded.decision,
                 decided_by = excluded.decided_by, decided_at = excluded.decided_at",
        )
        .bind(token)
        .bind(decision.as_str())
        .bind(by)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn conversation_review(
        &self,
        token: &str,
    ) -> Result<Option<ConversationReview>, StoreError> {
        let row = sqlx::query(
            "SELECT decision, decided_by, decided_at FROM conversation_reviews
             WHERE conversation_token = $1",
        )
        .bind(token)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let decision: String = r.try_get(0)?;
            Ok(ConversationReview {
                decision: match decision.as_str() {
                    "linked" => ConversationDecision::Linked,
                    "dismissed" => ConversationDecision::Dismissed,
                    other => {
                        return Err(StoreError::Corrupt(format!(
                            "conversation review decision '{other}'"
                        )));
                    }
                },
                decided_by: r.try_get(1)?,
                decided_at: r.try_get(2)?,
            })
        })
        .transpose()
    }

    /// A quarantined message dismissed by a reviewer: the ledger row becomes
    /// not relevant under `rule`, its deletion is scheduled, the sealed copy
    /// is dropped and who and when stay on the quarantine row — one
    /// transaction. `false` (nothing written) when it is no longer
    /// quarantined, or no longer held for its patient
    /// ([`Reason::IDENTITY`]): a hold another path gave it since the
    /// reviewer's list was read (a release the KIS refused, held
    /// `kis_rejected`) is not the reviewer's to dismiss.
    pub async fn record_dismissed(
        &self,
        key: &MessageKey,
        rule: &str,
        deletion: &NewDeletion,
        by: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let key = self.row(key)?;
        let named = self.row(&deletion.key)?;
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE messages SET state = 'not_relevant', reason = $3, updated_at = $4
             WHERE source = $1 AND message_token = $2 AND state = 'quarantined'
               AND reason IN ($5, $6, $7, $8)",
        )
        .bind(&key.source)
        .bind(&key.token)
        .bind(rule)
        .bind(now_ms)
        .bind(IDENTITY_REASONS[0].as_str())
        .bind(IDENTITY_REASONS[1].as_str())
        .bind(IDENTITY_REASONS[2].as_str())
        .bind(IDENTITY_REASONS[3].as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        outbox::insert(&mut tx, deletion, &named, now_ms).await?;
        sqlx::query(
            "UPDATE quarantine SET released_at = $3, resolved_by = $4, resolved_at = $3,
                    sealed_event = $5, sealed_detail = NULL
             WHERE source = $1 AND message_token = $2",
        )
        .bind(&key.source)
        .bind(&key.token)
        .bind(now_ms)
        .bind(by)
        .bind(Vec::<u8>::new())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Every conflicting duplicate kept sealed, oldest first.
    pub async fn conflict_list(&self) -> Result<Vec<ConflictItem>, StoreError> {
        let rows = sqlx::query(
            "SELECT source, message_token, digest, created_at FROM conflicts
             ORDER BY created_at, source, message_token, digest",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ConflictItem {
                    key: MessageRef {
                        source: r.try_get(0)?,
                        token: r.try_get(1)?,
                    },
                    digest: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "review_tests.rs"]
mod tests;
