//! Telling a redelivery from a conflicting duplicate: the first content seen
//! under a message key is claimed by its keyed digest; a later delivery with
//! another digest is recorded (sealed) as a conflict and changes nothing else.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::Row;

use super::ledger::discard_on_error;
use super::log::{ROWS_PER_INSERT, placeholders, values_sql};
use super::{MessageRef, MessageState, RowKey, Store, StoreError};

/// What a claim on a message key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The first content under this key, or the same content again.
    Ours,
    /// The key already carries other content.
    Conflict,
}

/// A claim of [`Store::claim_contents`] or [`Store::write_group`], with
/// the ledger state its key had when the claim was read back (after the
/// ledger rows of the group it was written with; `None`: no terminal or
/// held state yet; always `None` for a conflict).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    pub claim: Claim,
    pub state: Option<MessageState>,
}

/// The first digest and the ledger state of each of `keys`, read on `conn`:
/// one statement per source and [`ROWS_PER_INSERT`] keys, each an index
/// lookup on `(source, message_token)`.
pub(super) async fn claims_with_states(
    conn: &mut sqlx::AnyConnection,
    keys: &[(&MessageRef, &str)],
) -> Result<HashMap<MessageRef, (String, Option<MessageState>)>, StoreError> {
    let mut by_source: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (key, _) in keys {
        by_source.entry(&key.source).or_default().push(&key.token);
    }
    let mut found = HashMap::with_capacity(keys.len());
    for (source, tokens) in by_source {
        for chunk in tokens.chunks(ROWS_PER_INSERT) {
            let list = placeholders(2, chunk.len());
            let sql = format!(
                "SELECT c.message_token, c.digest,
                        (SELECT m.state FROM messages m
                         WHERE m.source = c.source AND m.message_token = c.message_token)
                 FROM content_digests c
                 WHERE c.source = $1 AND c.message_token IN ({list})"
            );
            // Audited: the statement holds only numbered placeholders.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(source);
            for token in chunk {
                q = q.bind(*token);
            }
            for row in q.fetch_all(&mut *conn).await? {
                let state = row
                    .try_get::<Option<String>, _>(2)?
                    .map(|s| MessageState::parse(&s))
                    .transpose()?;
                let key = MessageRef {
                    source: source.to_owned(),
                    token: row.try_get(0)?,
                };
                found.insert(key, (row.try_get(1)?, state));
            }
        }
    }
    Ok(found)
}

/// Each key of `keys` once, with the digest of its first claim in `batch`
/// (`keys[i]` names `batch[i]`), in key order: concurrent writers insert
/// claims in one order, so on PostgreSQL they wait for each other instead
/// of deadlocking.
pub(super) fn unique_claims<'k>(
    keys: &'k [MessageRef],
    batch: &[(&(impl RowKey + ?Sized), &'k str)],
) -> Vec<(&'k MessageRef, &'k str)> {
    let mut seen = HashSet::with_capacity(keys.len());
    let mut unique: Vec<_> = keys
        .iter()
        .zip(batch)
        .filter(|(key, _)| seen.insert(*key))
        .map(|(key, (_, digest))| (key, *digest))
        .collect();
    unique.sort_unstable_by(|a, b| a.0.cmp(b.0));
    unique
}

/// Inserts the claims `unique` (each key once) on `conn`, one multi-row
/// insert per [`ROWS_PER_INSERT`] keys; a key already claimed keeps its
/// first digest.
pub(super) async fn insert_claims(
    conn: &mut sqlx::AnyConnection,
    unique: &[(&MessageRef, &str)],
    now_ms: i64,
) -> Result<(), StoreError> {
    for chunk in unique.chunks(ROWS_PER_INSERT) {
        let sql = values_sql(
            "INSERT INTO content_digests (source, message_token, digest, created_at) VALUES ",
            4,
            chunk.len(),
        ) + " ON CONFLICT (source, message_token) DO NOTHING";
        // Audited: `values_sql` writes only the fixed head and numbered placeholders.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (key, digest) in chunk {
            q = q
                .bind(&key.source)
                .bind(&key.token)
                .bind(*digest)
                .bind(now_ms);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// One [`Claimed`] per item of `batch` (named by `keys`), from what
/// [`claims_with_states`] `found`: ours when the first digest is the
/// item's. Errors: [`StoreError::Corrupt`] when a claim is not found.
pub(super) fn answer_claims(
    keys: &[MessageRef],
    batch: &[(&(impl RowKey + ?Sized), &str)],
    found: &HashMap<MessageRef, (String, Option<MessageState>)>,
) -> Result<Vec<Claimed>, StoreError> {
    keys.iter()
        .zip(batch)
        .map(|(key, (_, digest))| {
            let (first, state) = found
                .get(key)
                .ok_or_else(|| StoreError::Corrupt("a claim just written is not found".into()))?;
            Ok(if first == digest {
                Claimed {
                    claim: Claim::Ours,
                    state: *state,
                }
            } else {
                Claimed {
                    claim: Claim::Conflict,
                    state: None,
                }
            })
        })
        .collect()
}

impl Store {
    /// How the store names the keys of `batch`, in order.
    pub(super) fn claim_keys(
        &self,
        batch: &[(&(impl RowKey + ?Sized), &str)],
    ) -> Result<Vec<MessageRef>, StoreError> {
        batch.iter().map(|(key, _)| self.row(*key)).collect()
    }

    /// Claims `key` for the content with `digest` (first writer wins, also
    /// across workers): [`Claim::Ours`] for the first content under the key
    /// or the same content again, [`Claim::Conflict`] for other content.
    /// One claim of [`Store::claim_contents`].
    pub async fn claim_content(
        &self,
        key: &(impl RowKey + ?Sized),
        digest: &str,
        now_ms: i64,
    ) -> Result<Claim, StoreError> {
        let claimed = self.claim_contents(&[(key, digest)], now_ms).await?;
        claimed
            .first()
            .map(|c| c.claim)
            .ok_or_else(|| StoreError::Corrupt("a claim without its result".into()))
    }

    /// Whether `key`'s processing began ([`Store::claim_content`]) and is
    /// still going on: claimed, and neither held as a split part
    /// (`held_parts`) nor in a transcript window (`transcript_messages`),
    /// which wait minutes to a day. Says nothing of a terminal state: ask
    /// [`Store::message`] first.
    pub async fn content_in_flight(
        &self,
        key: &(impl RowKey + ?Sized),
    ) -> Result<bool, StoreError> {
        let key = self.row(key)?;
        let row = sqlx::query(
            "SELECT 1 FROM content_digests c WHERE c.source = $1 AND c.message_token = $2
               AND NOT EXISTS (SELECT 1 FROM held_parts h
                   WHERE h.source = c.source AND h.message_token = c.message_token)
               AND NOT EXISTS (SELECT 1 FROM transcript_messages t
                   WHERE t.source = c.source AND t.message_token = c.message_token)",
        )
        .bind(&key.source)
        .bind(&key.token)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Claims several keys, each as [`Store::claim_content`] does, with
    /// one multi-row insert per [`ROWS_PER_INSERT`] keys (one commit for a
    /// burst of deliveries), then reads the first digest and the ledger
    /// state of each key (one statement per source and [`ROWS_PER_INSERT`]
    /// keys); one [`Claimed`] per
    /// item, in `batch` order. A key twice in `batch` is claimed by its
    /// first digest. On an error some claims may be recorded: claims are
    /// idempotent, so the retry finds them its own.
    ///
    /// Errors: [`StoreError`] of any statement.
    pub async fn claim_contents(
        &self,
        batch: &[(&(impl RowKey + ?Sized), &str)],
        now_ms: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let keys = self.claim_keys(batch)?;
        let unique = unique_claims(&keys, batch);
        let gate = self.write_gate().await;
        let mut conn = self.writers.acquire().await?;
        let result = async {
            // No transaction: each insert is atomic on its own, and a claim
            // recorded while a later one failed is harmless (the retry
            // claims the same content again and finds it its own).
            insert_claims(&mut conn, &unique, now_ms).await?;
            drop(gate);
            let found = claims_with_states(&mut conn, &unique).await?;
            answer_claims(&keys, batch, &found)
        }
        .await;
        discard_on_error(conn, &result);
        result
    }

    /// Keeps a conflicting duplicate for review. `false` if this very
    /// content was already recorded (a redelivery of the duplicate).
    pub async fn record_conflict(
        &self,
        key: &(impl RowKey + ?Sized),
        digest: &str,
        sealed_event: &crate::seal::Sealing,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let key = self.row(key)?;
        let inserted = sqlx::query(
            "INSERT INTO conflicts (source, message_token, digest, sealed_event, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source, message_token, digest) DO NOTHING",
        )
        .bind(&key.source)
        .bind(&key.token)
        .bind(digest)
        .bind(sealed_event.at(&super::sealed::conflict(&key, digest)))
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// The conflicting duplicates kept under `key`: digest and sealed event
    /// (which opens at [`super::sealed::conflict`]).
    pub async fn conflicts(
        &self,
        key: &(impl RowKey + ?Sized),
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let key = self.row(key)?;
        let rows = sqlx::query(
            "SELECT digest, sealed_event FROM conflicts WHERE source = $1 AND message_token = $2
             ORDER BY created_at, digest",
        )
        .bind(&key.source)
        .bind(&key.token)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{both_backends, fresh};
    use super::super::*;
    use crate::event::MessageKey;

    async fn first_content_wins_and_conflicts_are_kept(backend: Backend) {
        let (store, _dir) = fresh(backend).await;
        let key = MessageKey {
            source: "whatsapp".into(),
            message_id: "wamid.dup".into(),
        };
        assert_eq!(
            store.claim_content(&key, "aa", 1).await.unwrap(),
            Claim::Ours
        );
        assert_eq!(
            store.claim_content(&key, "aa", 2).await.unwrap(),
            Claim::Ours
        );
        assert_eq!(
            store.claim_content(&key, "bb", 3).await.unwrap(),
            Claim::Conflict
        );
        assert!(
            store
                .record_conflict(&key, "bb", &crate::store::tests::sealed(b"sealed-b"), 3)
                .await
                .unwrap()
        );
        assert!(
            !store
                .record_conflict(&key, "bb", &crate::store::tests::sealed(b"sealed-b"), 4)
                .await
                .unwrap()
        );
        assert!(
            store
                .record_conflict(&key, "cc", &crate::store::tests::sealed(b"sealed-c"), 5)
                .await
                .unwrap()
        );
        let s = crate::store::tests::test_sealer();
        let opened: Vec<Vec<u8>> = store
            .conflicts(&key)
            .await
            .unwrap()
            .iter()
            .map(|(digest, blob)| {
                s.open(
                    &crate::store::sealed::conflict(&store.message_ref(&key).unwrap(), digest),
                    blob,
                )
                .unwrap()
            })
            .collect();
        assert_eq!(opened, vec![b"sealed-b".to_vec(), b"sealed-c".to_vec()]);
        // The first content's claim is untouched.
        assert_eq!(
            store.claim_content(&key, "aa", 6).await.unwrap(),
            Claim::Ours
        );
    }

    both_backends!(first_content_wins_and_conflicts_are_kept);
}
