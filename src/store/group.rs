//! Group commit: the content claims and the archives of several
//! deliveries in one transaction (claims, ledger rows, proof leaves,
//! deletion outbox rows), so a burst of deliveries pays one commit (one
//! fsync or WAL flush) instead of one each.

use std::collections::HashSet;

use sqlx::{Any, Connection, Row, Transaction};

use super::conflicts::{self, Claimed};
use super::ledger::{ArchiveRecord, TerminalRow, discard_on_error};
use super::{MessageRef, NewDeletion, RowKey, Store, StoreError, log, outbox};

impl Store {
    /// Records `batch` — `(archive, now_ms)` pairs, each as
    /// [`Store::record_archive`] would — as [`Store::write_group`] does
    /// with no claims. Per record: `Some(leaf index)`, or `None` when its
    /// message already had a terminal state.
    #[cfg(test)]
    pub(crate) async fn record_archives(
        &self,
        batch: &[(&ArchiveRecord, i64)],
    ) -> Result<Vec<Option<u64>>, StoreError> {
        let none: [(&MessageRef, &str); 0] = [];
        Ok(self.write_group(&none, 0, batch).await?.1)
    }

    /// Claims and archives of several deliveries in one transaction:
    /// `claims` (`(message key, content digest)` pairs) as
    /// [`Store::claim_contents`] records them, all at `claims_now_ms`
    /// (milliseconds since the Unix epoch), and `archives` (`(archive,
    /// now_ms)` pairs) each as [`Store::record_archive`] would, in order,
    /// so the leaves they append are dense and in `archives` order.
    ///
    /// Returns one [`Claimed`] per claim, in order (its key's ledger state
    /// as read after this group's ledger rows), and per archive
    /// `Some(leaf index)`, or `None` when its message already had a
    /// terminal state or an earlier archive of the group holds the same
    /// key (nothing of it written).
    ///
    /// With archives, all or nothing: on an error nothing of the group is
    /// recorded and the connection is closed. Claims alone take
    /// [`Store::claim_contents`]'s path (no transaction; claims recorded
    /// before an error stay, and are harmless). Rows are written in key
    /// order (claims, then ledger and outbox rows, then the `log_head`
    /// row), so concurrent groups on PostgreSQL take their row locks in
    /// one order and wait for each other instead of deadlocking.
    ///
    /// Errors: [`StoreError`] of any statement or of the commit;
    /// [`StoreError::Corrupt`] when a claim just written is not read back.
    pub async fn write_group(
        &self,
        claims: &[(&(impl RowKey + ?Sized), &str)],
        claims_now_ms: i64,
        archives: &[(&ArchiveRecord, i64)],
    ) -> Result<(Vec<Claimed>, Vec<Option<u64>>), StoreError> {
        if archives.is_empty() {
            if claims.is_empty() {
                return Ok((Vec::new(), Vec::new()));
            }
            return Ok((
                self.claim_contents(claims, claims_now_ms).await?,
                Vec::new(),
            ));
        }
        let _stage = crate::telemetry::measure::Stage::start("store");
        let claim_keys = self.claim_keys(claims)?;
        let unique = conflicts::unique_claims(&claim_keys, claims);
        let _gate = self.write_gate().await;
        let mut conn = self.writers.acquire().await?;
        let result = async {
            let mut tx = conn.begin().await?;
            conflicts::insert_claims(&mut tx, &unique, claims_now_ms).await?;
            // Ledger and outbox rows first, the proof leaves last: on
            // PostgreSQL the leaves' `log_head` row lock is then held only
            // for the append and the commit.
            let keys = self.archive_rows_in(&mut tx, archives).await?;
            // Read after the archives: a redelivery claimed beside its
            // first delivery's archive finds the message archived.
            let found = if unique.is_empty() {
                Default::default()
            } else {
                conflicts::claims_with_states(&mut tx, &unique).await?
            };
            let leaves: Vec<log::NewLeaf<'_>> = archives
                .iter()
                .zip(&keys)
                .filter_map(|((rec, now_ms), key)| {
                    key.as_ref().map(|key| log::NewLeaf {
                        key,
                        leaf_data: &rec.leaf_data,
                        now_ms: *now_ms,
                    })
                })
                .collect();
            let mut next = if leaves.is_empty() {
                0
            } else {
                log::append_many(&mut tx, &leaves).await?
            };
            let claimed = conflicts::answer_claims(&claim_keys, claims, &found)?;
            tx.commit().await?;
            let indexes = keys
                .iter()
                .map(|key| {
                    key.as_ref().map(|_| {
                        next += 1;
                        next - 1
                    })
                })
                .collect();
            Ok((claimed, indexes))
        }
        .await;
        discard_on_error(conn, &result);
        result
    }

    /// The ledger rows and the deletion outbox rows of `batch`, written in
    /// key order: per record its key as named, or `None` (nothing written)
    /// when its message already has a terminal state or an earlier record
    /// of the batch holds the same key. One multi-row insert of ledger rows
    /// (`RETURNING` the keys it wrote) and one of outbox rows per
    /// statement's worth of records ([`log::statement_chunks`]).
    async fn archive_rows_in(
        &self,
        tx: &mut Transaction<'_, Any>,
        batch: &[(&ArchiveRecord, i64)],
    ) -> Result<Vec<Option<MessageRef>>, StoreError> {
        let named = batch
            .iter()
            .map(|(rec, _)| Ok((self.row(&rec.key)?, self.row(&rec.deletion.key)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut seen = HashSet::with_capacity(batch.len());
        let mut first: Vec<usize> = (0..batch.len())
            .filter(|&i| seen.insert(&named[i].0))
            .collect();
        // Key order: concurrent groups lock ledger and outbox rows in one order.
        first.sort_unstable_by(|&a, &b| named[a].0.cmp(&named[b].0));
        let mut written = HashSet::with_capacity(first.len());
        let row_bytes = |&i: &usize| {
            let rec = batch[i].0;
            200 + rec.rule.len()
                + rec.resource.len()
                + rec.resources.iter().map(|r| r.len() + 3).sum::<usize>()
        };
        for chunk in log::statement_chunks(&first, row_bytes) {
            let sql = log::values_sql(
                "INSERT INTO messages
                    (source, message_token, state, reason, content_sha256, resource, resources, created_at, updated_at)
                 VALUES ",
                9,
                chunk.len(),
            ) + " ON CONFLICT (source, message_token) DO NOTHING RETURNING source, message_token";
            // Audited: `values_sql` writes only the fixed head and numbered placeholders.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for &i in chunk {
                let ((rec, now_ms), (key, _)) = (batch[i], &named[i]);
                q = TerminalRow::archived(key, rec)
                    .bind_to(q)
                    .bind(now_ms)
                    .bind(now_ms);
            }
            for row in q.fetch_all(&mut **tx).await? {
                written.insert(MessageRef {
                    source: row.try_get(0)?,
                    token: row.try_get(1)?,
                });
            }
        }
        let fresh: Vec<usize> = first
            .into_iter()
            .filter(|&i| written.contains(&named[i].0))
            .collect();
        let outbox: Vec<(&NewDeletion, &MessageRef, i64)> = fresh
            .iter()
            .map(|&i| (&batch[i].0.deletion, &named[i].1, batch[i].1))
            .collect();
        outbox::insert_many(tx, &outbox).await?;
        let fresh: HashSet<usize> = fresh.into_iter().collect();
        Ok(named
            .into_iter()
            .enumerate()
            .map(|(i, (key, _))| fresh.contains(&i).then_some(key))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{archive, both_backends, fresh, key};
    use super::super::{Backend, Claim, Claimed, DeletionState, MessageState};
    use crate::event::MessageKey;

    /// A batch appends dense leaves in batch order, skips what is already
    /// terminal (also a duplicate inside the batch) and matches the log a
    /// record-by-record run builds.
    async fn a_batch_appends_dense_leaves_and_skips_terminal_ones(backend: Backend) {
        let (store, _dir) = fresh(backend).await;
        assert_eq!(store.record_archive(&archive(0), 1).await.unwrap(), Some(0));
        let (a0, a1, a2, a3) = (archive(0), archive(1), archive(2), archive(3));
        let got = store
            .record_archives(&[(&a1, 2), (&a0, 2), (&a2, 2), (&a1, 2), (&a3, 2)])
            .await
            .unwrap();
        assert_eq!(got, [Some(1), None, Some(2), None, Some(3)]);
        assert_eq!(store.log_size().await.unwrap(), 4);
        for i in 0..4 {
            let m = store.message(&key(i)).await.unwrap().unwrap();
            assert_eq!(m.state, MessageState::Archived);
            assert_eq!(
                store.deletion_state(&key(i)).await.unwrap(),
                Some(DeletionState::Pending)
            );
            assert_eq!(
                store.log_leaf(&key(i)).await.unwrap().unwrap().index,
                u64::from(i)
            );
        }
        let (alone, _dir2) = fresh(backend).await;
        for i in 0..4 {
            alone.record_archive(&archive(i), 1).await.unwrap();
        }
        assert_eq!(
            store.log_root(4).await.unwrap(),
            alone.log_root(4).await.unwrap()
        );
    }

    /// Batches of every size, starting at every offset into the tree, store
    /// the same perfect-subtree nodes as appends one at a time: the roots of
    /// every prefix agree (node hashes of a batch are computed in memory,
    /// their left siblings before the batch read from the store).
    async fn batched_appends_store_the_nodes_single_appends_do(backend: Backend) {
        let (batched, _dir) = fresh(backend).await;
        let (alone, _dir2) = fresh(backend).await;
        let records: Vec<_> = (0..40).map(archive).collect();
        let mut next = 0;
        for size in [1, 3, 5, 7, 16, 8] {
            let pairs: Vec<_> = records[next..next + size].iter().map(|r| (r, 1)).collect();
            batched.record_archives(&pairs).await.unwrap();
            next += size;
        }
        for r in &records[..next] {
            alone.record_archive(r, 1).await.unwrap();
        }
        for size in 1..=next as u64 {
            assert_eq!(
                batched.log_root(size).await.unwrap(),
                alone.log_root(size).await.unwrap(),
                "root of {size} leaves"
            );
        }
    }

    /// Grouped claims: the first digest under a key wins, also a key twice
    /// in one batch; a claim of the same content again is ours and reads
    /// the key's ledger state, also past one statement's worth of keys.
    async fn grouped_claims_keep_the_first_content(backend: Backend) {
        let (store, _dir) = fresh(backend).await;
        let (a, b) = (key(1), key(2));
        let claims = |got: Vec<Claimed>| got.into_iter().map(|c| c.claim).collect::<Vec<_>>();
        let got = store
            .claim_contents(&[(&a, "d1"), (&b, "d2"), (&a, "other")], 1)
            .await
            .unwrap();
        assert_eq!(claims(got), [Claim::Ours, Claim::Ours, Claim::Conflict]);
        let again = store
            .claim_contents(&[(&b, "d2"), (&a, "d1")], 2)
            .await
            .unwrap();
        assert_eq!(claims(again), [Claim::Ours, Claim::Ours]);
        assert_eq!(
            store.claim_content(&a, "late", 3).await.unwrap(),
            Claim::Conflict
        );

        store.record_archive(&archive(70), 4).await.unwrap();
        let keys: Vec<_> = (0..100).map(key).collect();
        let digests: Vec<_> = (0..100).map(|i| format!("digest {i}")).collect();
        let batch: Vec<_> = keys
            .iter()
            .zip(&digests)
            .map(|(k, d)| (k, d.as_str()))
            .collect();
        let got = store.claim_contents(&batch, 5).await.unwrap();
        for (i, claimed) in got.iter().enumerate() {
            let expected = match i {
                1 | 2 => Claimed {
                    claim: Claim::Conflict,
                    state: None,
                },
                70 => Claimed {
                    claim: Claim::Ours,
                    state: Some(MessageState::Archived),
                },
                _ => Claimed {
                    claim: Claim::Ours,
                    state: None,
                },
            };
            assert_eq!(*claimed, expected, "claim {i}");
        }
    }

    /// Claims and archives in one group: each claim answers as alone, a
    /// claim of a key archived in the same group reads it archived, the
    /// archives append dense leaves and their outbox rows, and the claims
    /// hold afterwards.
    async fn a_group_writes_claims_and_archives_together(backend: Backend) {
        let (store, _dir) = fresh(backend).await;
        assert_eq!(
            store.claim_content(&key(9), "d9", 1).await.unwrap(),
            Claim::Ours
        );
        let (a0, a1) = (archive(0), archive(1));
        let (k0, k5, k9) = (key(0), key(5), key(9));
        let (claimed, archived) = store
            .write_group(
                &[(&k5, "d5"), (&k0, "d0"), (&k9, "other"), (&k5, "d5")],
                2,
                &[(&a0, 2), (&a1, 2)],
            )
            .await
            .unwrap();
        assert_eq!(archived, [Some(0), Some(1)]);
        let ours = |state| Claimed {
            claim: Claim::Ours,
            state,
        };
        let conflict = Claimed {
            claim: Claim::Conflict,
            state: None,
        };
        assert_eq!(
            claimed,
            [
                ours(None),
                ours(Some(MessageState::Archived)),
                conflict,
                ours(None)
            ]
        );
        assert_eq!(store.log_size().await.unwrap(), 2);
        for i in 0..2 {
            assert_eq!(
                store.deletion_state(&key(i)).await.unwrap(),
                Some(DeletionState::Pending)
            );
        }
        assert_eq!(
            store.claim_content(&k5, "late", 3).await.unwrap(),
            Claim::Conflict
        );
        assert_eq!(
            store.claim_content(&k0, "d0", 3).await.unwrap(),
            Claim::Ours
        );
        // Claims alone, archives alone.
        let (claimed, archived) = store.write_group(&[(&k9, "d9")], 4, &[]).await.unwrap();
        assert_eq!((claimed, archived), (vec![ours(None)], vec![]));
        let a2 = archive(2);
        let none: [(&MessageKey, &str); 0] = [];
        let (claimed, archived) = store.write_group(&none, 4, &[(&a2, 4)]).await.unwrap();
        assert_eq!((claimed, archived), (vec![], vec![Some(2)]));
    }

    both_backends!(
        a_batch_appends_dense_leaves_and_skips_terminal_ones,
        batched_appends_store_the_nodes_single_appends_do,
        grouped_claims_keep_the_first_content,
        a_group_writes_claims_and_archives_together,
    );
}
