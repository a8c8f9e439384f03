//! Review by conversation: quarantined messages carry the keyed token of
//! their conversation (the `links` token, never the conversation id), a
//! reviewer's decision about a conversation (linked or dismissed) is kept
//! with who and when, and a dismissal turns each held message into a not
//! relevant one with its deletion scheduled — exactly once, in one
//! transaction per message. Also the listing of conflicting duplicates
//! (`conflicts`), which are held for review like quarantined messages.

use sqlx::Row;

use super::{NewDeletion, Store, StoreError, outbox};
use crate::event::MessageKey;

/// Reasons a conversation-level decision (link or dismissal) applies to:
/// the message is held only because its patient is not known.
pub const IDENTITY_REASONS: [&str; 4] = [
    "unresolved_conversation",
    "patient_candidate",
    "patient_ambiguous",
    "unknown_patient",
];

/// An open quarantine item of a conversation, without content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldMessage {
    pub key: MessageKey,
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
    pub key: MessageKey,
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
        key: &MessageKey,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT conversation_token FROM quarantine WHERE source = $1 AND message_id = $2",
        )
        .bind(&key.source)
        .bind(&key.message_id)
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
            "SELECT q.conversation_token, q.source, q.message_id, m.reason, q.candidate, q.created_at
             FROM quarantine q JOIN messages m
               ON m.source = q.source AND m.message_id = q.message_id
             WHERE m.state = 'quarantined' AND q.conversation_token IS NOT NULL
               AND q.released_at IS NULL
               AND (CAST($1 AS TEXT) IS NULL OR q.conversation_token = $1)
               AND m.reason IN ($2, $3, $4, $5)
             ORDER BY q.created_at, q.source, q.message_id",
        )
        .bind(token)
        .bind(IDENTITY_REASONS[0])
        .bind(IDENTITY_REASONS[1])
        .bind(IDENTITY_REASONS[2])
        .bind(IDENTITY_REASONS[3])
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<HeldConversation> = Vec::new();
        for r in &rows {
            let token: String = r.try_get(0)?;
            let message = HeldMessage {
                key: MessageKey {
                    source: r.try_get(1)?,
                    message_id: r.try_get(2)?,
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
    /// transaction. `false` when it is no longer quarantined (nothing written).
    pub async fn record_dismissed(
        &self,
        key: &MessageKey,
        rule: &str,
        deletion: &NewDeletion,
        by: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE messages SET state = 'not_relevant', reason = $3, updated_at = $4
             WHERE source = $1 AND message_id = $2 AND state = 'quarantined'",
        )
        .bind(&key.source)
        .bind(&key.message_id)
        .bind(rule)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        outbox::insert(&mut tx, deletion, now_ms).await?;
        sqlx::query(
            "UPDATE quarantine SET released_at = $3, resolved_by = $4, resolved_at = $3,
                    sealed_event = $5, sealed_detail = NULL
             WHERE source = $1 AND message_id = $2",
        )
        .bind(&key.source)
        .bind(&key.message_id)
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
            "SELECT source, message_id, digest, created_at FROM conflicts
             ORDER BY created_at, source, message_id, digest",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ConflictItem {
                    key: MessageKey {
                        source: r.try_get(0)?,
                        message_id: r.try_get(1)?,
                    },
                    digest: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{both_backends, fresh};
    use super::super::*;
    use crate::event::MessageKey;

    fn key(id: &str) -> MessageKey {
        MessageKey {
            source: "whatsapp".into(),
            message_id: id.into(),
        }
    }

    fn scheduled(k: &MessageKey, due: i64) -> NewDeletion {
        NewDeletion {
            deletion_id: format!("del-{}", k.message_id),
            key: k.clone(),
            reason: "not-relevant",
            sealed_command: crate::seal::Sealer::from_key([1; 32]).seal(b"command"),
            not_before_ms: due,
            state: DeletionState::Scheduled,
        }
    }

    async fn conversation_items_are_listed_and_dismissed_once(backend: Backend) {
        let (store, _dir) = fresh(backend).await;
        let (a, b, c) = (key("w.a"), key("w.b"), key("w.c"));
        assert!(
            store
                .record_quarantine_conversation(
                    &a,
                    "unresolved_conversation",
                    &crate::store::tests::sealed(b"s"),
                    None,
                    "tok-1",
                    1
                )
                .await
                .unwrap()
        );
        assert!(
            store
                .record_quarantine_conversation(
                    &b,
                    "patient_candidate",
                    &crate::store::tests::sealed(b"s"),
                    Some("p-9"),
                    "tok-1",
                    2
                )
                .await
                .unwrap()
        );
        // Another conversation, and a redelivery that writes nothing.
        assert!(
            store
                .record_quarantine_conversation(
                    &c,
                    "unresolved_conversation",
                    &crate::store::tests::sealed(b"s"),
                    None,
                    "tok-2",
                    3
                )
                .await
                .unwrap()
        );
        assert!(
            !store
                .record_quarantine_conversation(
                    &a,
                    "unresolved_conversation",
                    &crate::store::tests::sealed(b"s"),
                    None,
                    "tok-1",
                    4
                )
                .await
                .unwrap()
        );
        let all = store.held_conversations().await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].token, "tok-1");
        assert_eq!(all[0].messages.len(), 2);
        assert_eq!(all[0].messages[1].candidate.as_deref(), Some("p-9"));
        assert_eq!(store.conversation_held("tok-2").await.unwrap().len(), 1);
        assert_eq!(
            store.quarantine_conversation(&a).await.unwrap().as_deref(),
            Some("tok-1")
        );

        store
            .record_conversation_review("tok-1", ConversationDecision::Dismissed, "rev-a", 10)
            .await
            .unwrap();
        let r = store.conversation_review("tok-1").await.unwrap().unwrap();
        assert_eq!(r.decision, ConversationDecision::Dismissed);
        assert_eq!((r.decided_by.as_str(), r.decided_at), ("rev-a", 10));
        for k in [&a, &b] {
            assert!(
                store
                    .record_dismissed(k, "conversation-dismissed", &scheduled(k, 99), "rev-a", 10)
                    .await
                    .unwrap()
            );
            // Exactly once: a second dismissal writes nothing.
            assert!(
                !store
                    .record_dismissed(k, "conversation-dismissed", &scheduled(k, 99), "rev-a", 11)
                    .await
                    .unwrap()
            );
            let m = store.message(k).await.unwrap().unwrap();
            assert_eq!(m.state, MessageState::NotRelevant);
            assert_eq!(m.reason, "conversation-dismissed");
            assert_eq!(
                store.deletion_state(k).await.unwrap(),
                Some(DeletionState::Scheduled)
            );
            let e = store.quarantine_entry(k).await.unwrap().unwrap();
            assert_eq!(e.resolved_by.as_deref(), Some("rev-a"));
            assert!(e.sealed_event.is_empty());
        }
        assert!(store.conversation_held("tok-1").await.unwrap().is_empty());
        assert_eq!(store.held_conversations().await.unwrap().len(), 1);
        // Linking replaces the decision.
        store
            .record_conversation_review("tok-1", ConversationDecision::Linked, "rev-b", 20)
            .await
            .unwrap();
        let r = store.conversation_review("tok-1").await.unwrap().unwrap();
        assert_eq!(r.decision, ConversationDecision::Linked);
    }

    async fn requarantined_items_list_their_current_reason_and_conflicts_are_listed(
        backend: Backend,
    ) {
        let (store, _dir) = fresh(backend).await;
        let k = key("w.r");
        store
            .record_quarantine_conversation(
                &k,
                "unresolved_conversation",
                &crate::store::tests::sealed(b"s"),
                None,
                "tok",
                1,
            )
            .await
            .unwrap();
        store.requarantine(&k, "kis_rejected", 2).await.unwrap();
        let items = store.quarantine_list().await.unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].reason, "kis_rejected");
        assert_eq!(
            store.quarantine_entry(&k).await.unwrap().unwrap().reason,
            "kis_rejected"
        );
        // No longer held for its patient: a conversation decision skips it.
        assert!(store.conversation_held("tok").await.unwrap().is_empty());

        assert!(store.conflict_list().await.unwrap().is_empty());
        store
            .record_conflict(&k, "dd", &crate::store::tests::sealed(b"sealed"), 3)
            .await
            .unwrap();
        let conflicts = store.conflict_list().await.unwrap();
        assert_eq!(conflicts.len(), 1);
        assert_eq!(
            (conflicts[0].key.clone(), conflicts[0].digest.as_str()),
            (k, "dd")
        );
    }

    both_backends!(
        conversation_items_are_listed_and_dismissed_once,
        requarantined_items_list_their_current_reason_and_conflicts_are_listed,
    );
}
