//! Parts of split messages ("message x of y", DSK II.2) held until their
//! group is complete or its wait ends. A held part is durable but not yet
//! terminal: its event is kept sealed in `held_parts` and its delivery may be
//! acked. A group is released once: its parts are archived (or reach another
//! terminal state), then `finish_group` records whether it was complete and
//! removes exactly the held rows it processed.
//!
//! Groups are keyed by `(source, group_token)`, a keyed token of the
//! conversation and the messenger's group id, so the table holds neither.

use sqlx::Row;

use super::{MessageRef, RowKey, Store, StoreError};
use crate::event::MessageKey;

/// A part to hold.
#[derive(Debug, Clone)]
pub struct NewPart<'a> {
    pub key: &'a MessageKey,
    pub group_token: &'a str,
    pub index: u32,
    pub count: u32,
    /// The canonical event, sealed when held.
    pub sealed_event: &'a crate::seal::Sealing,
}

/// What holding a part led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Held; `complete` when every index `1..=count` of its group is held.
    Held { complete: bool },
    /// The group was already released: the part is not held and is to be
    /// processed on its own (a late part).
    GroupReleased,
}

/// A held part, as read back for its group's release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldPart {
    pub key: MessageRef,
    pub group_token: String,
    pub index: u32,
    pub sealed_event: Vec<u8>,
}

/// A group and its held parts, ordered by index, then arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldGroup {
    pub source: String,
    pub group_token: String,
    pub count: u32,
    pub parts: Vec<HeldPart>,
}

impl HeldGroup {
    /// Indexes in `1..=count` of which no part is held.
    pub fn missing(&self) -> Vec<u32> {
        (1..=self.count)
            .filter(|i| !self.parts.iter().any(|p| p.index == *i))
            .collect()
    }
}

/// Counts for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitCounts {
    /// Groups still waiting for parts.
    pub waiting: i64,
    /// Parts held (sealed) in waiting groups or not yet processed.
    pub held_parts: i64,
    /// Groups released complete.
    pub complete: i64,
    /// Groups released with parts missing (archived with the marker).
    pub incomplete: i64,
}

const GROUP_IS_COMPLETE: &str = "split_groups.part_count <= (SELECT COUNT(DISTINCT h.part_index)
    FROM held_parts h WHERE h.source = split_groups.source AND h.group_token = split_groups.group_token)";

impl Store {
    /// Holds a part of a split message, creating its group on first sight.
    /// Idempotent on the message key; a group's count is the largest seen.
    pub async fn hold_part(&self, p: &NewPart<'_>, now_ms: i64) -> Result<Hold, StoreError> {
        let key = self.row(p.key)?;
        let source = &key.source;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO split_groups (source, group_token, part_count, first_seen, state)
             VALUES ($1, $2, $3, $4, 'waiting') ON CONFLICT DO NOTHING",
        )
        .bind(source)
        .bind(p.group_token)
        .bind(i64::from(p.count))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "UPDATE split_groups
             SET part_count = CASE WHEN part_count < $1 THEN $1 ELSE part_count END
             WHERE source = $2 AND group_token = $3
             RETURNING state, part_count",
        )
        .bind(i64::from(p.count))
        .bind(source)
        .bind(p.group_token)
        .fetch_one(&mut *tx)
        .await?;
        let state: String = row.try_get(0)?;
        let count: i64 = row.try_get(1)?;
        if state != "waiting" {
            tx.rollback().await?;
            return Ok(Hold::GroupReleased);
        }
        sqlx::query(
            "INSERT INTO held_parts (source, message_token, group_token, part_index, sealed_event, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(source)
        .bind(&key.token)
        .bind(p.group_token)
        .bind(i64::from(p.index))
        .bind(p.sealed_event.at(&super::sealed::held_part(&key)))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let present: i64 = sqlx::query(
            "SELECT COUNT(DISTINCT part_index) FROM held_parts
             WHERE source = $1 AND group_token = $2 AND part_index <= $3",
        )
        .bind(source)
        .bind(p.group_token)
        .bind(count)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        tx.commit().await?;
        Ok(Hold::Held {
            complete: present >= count,
        })
    }

    /// Reserves a waiting group for one releaser for `lease_ms`. `false`
    /// when it is released or another releaser holds it.
    pub async fn claim_group(
        &self,
        source: &str,
        group_token: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE split_groups SET claimed_until = $1
             WHERE source = $2 AND group_token = $3 AND state = 'waiting'
               AND (claimed_until IS NULL OR claimed_until < $4)",
        )
        .bind(now_ms + lease_ms)
        .bind(source)
        .bind(group_token)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Gives a claim back (after a transient failure), so the next sweep retries.
    pub async fn unclaim_group(&self, source: &str, group_token: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE split_groups SET claimed_until = NULL WHERE source = $1 AND group_token = $2",
        )
        .bind(source)
        .bind(group_token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A group with its held parts, or `None` if it does not exist.
    pub async fn held_group(
        &self,
        source: &str,
        group_token: &str,
    ) -> Result<Option<HeldGroup>, StoreError> {
        let Some(group) = sqlx::query(
            "SELECT part_count FROM split_groups WHERE source = $1 AND group_token = $2",
        )
        .bind(source)
        .bind(group_token)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let count: i64 = group.try_get(0)?;
        let rows = sqlx::query(
            "SELECT message_token, part_index, sealed_event FROM held_parts
             WHERE source = $1 AND group_token = $2
             ORDER BY part_index, created_at, message_token",
        )
        .bind(source)
        .bind(group_token)
        .fetch_all(&self.pool)
        .await?;
        let parts = rows
            .iter()
            .map(|r| {
                Ok(HeldPart {
                    key: MessageRef {
                        source: source.to_owned(),
                        token: r.try_get(0)?,
                    },
                    group_token: group_token.to_owned(),
                    index: index(r.try_get(1)?)?,
                    sealed_event: r.try_get(2)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some(HeldGroup {
            source: source.to_owned(),
            group_token: group_token.to_owned(),
            count: index(count)?,
            parts,
        }))
    }

    /// Records a group as released, complete or with `missing` indexes, and
    /// removes the held rows of `processed` (every one has a terminal state
    /// by now). Parts held meanwhile stay, for [`Store::orphan_parts`].
    pub async fn finish_group(
        &self,
        source: &str,
        group_token: &str,
        missing: &[u32],
        processed: &[impl RowKey],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let processed = processed
            .iter()
            .map(|k| self.row(k))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tx = self.pool.begin().await?;
        let (state, missing) = if missing.is_empty() {
            ("complete", None)
        } else {
            let list: Vec<String> = missing.iter().map(u32::to_string).collect();
            ("incomplete", Some(list.join(",")))
        };
        sqlx::query(
            "UPDATE split_groups SET state = $1, missing = $2, released_at = $3, claimed_until = NULL
             WHERE source = $4 AND group_token = $5 AND state = 'waiting'",
        )
        .bind(state)
        .bind(missing)
        .bind(now_ms)
        .bind(source)
        .bind(group_token)
        .execute(&mut *tx)
        .await?;
        for key in processed {
            sqlx::query("DELETE FROM held_parts WHERE source = $1 AND message_token = $2")
                .bind(&key.source)
                .bind(&key.token)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// How a released group was recorded: `Some((count, missing))` — its
    /// part count and the indexes missing at its release (empty: it was
    /// complete) — or `None` while it waits (or is unknown).
    pub async fn released_group(
        &self,
        source: &str,
        group_token: &str,
    ) -> Result<Option<(u32, Vec<u32>)>, StoreError> {
        let row = sqlx::query(
            "SELECT part_count, missing FROM split_groups
             WHERE source = $1 AND group_token = $2 AND state <> 'waiting'",
        )
        .bind(source)
        .bind(group_token)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let count: i64 = row.try_get(0)?;
        let missing: Option<String> = row.try_get(1)?;
        let missing = missing
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.trim().parse::<u32>().map_err(|_| {
                    StoreError::Corrupt("split_groups.missing: not a list of indexes".into())
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((index(count)?, missing)))
    }

    /// Waiting groups that are due: complete, or first seen at or before
    /// `expired_before_ms`, and not claimed at `now_ms`.
    pub async fn due_groups(
        &self,
        expired_before_ms: i64,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT source, group_token FROM split_groups
             WHERE state = 'waiting' AND (claimed_until IS NULL OR claimed_until < $1)
               AND (first_seen <= $2 OR {GROUP_IS_COMPLETE})
             ORDER BY first_seen LIMIT $3"
        )))
        .bind(now_ms)
        .bind(expired_before_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Held parts whose group was released while they were being held
    /// (a race with the release): they are processed on their own.
    pub async fn orphan_parts(&self, limit: i64) -> Result<Vec<HeldPart>, StoreError> {
        let rows = sqlx::query(
            "SELECT h.source, h.message_token, h.group_token, h.part_index, h.sealed_event
             FROM held_parts h JOIN split_groups g
               ON g.source = h.source AND g.group_token = h.group_token
             WHERE g.state <> 'waiting' ORDER BY h.created_at LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HeldPart {
                    key: MessageRef {
                        source: r.try_get(0)?,
                        token: r.try_get(1)?,
                    },
                    group_token: r.try_get(2)?,
                    index: index(r.try_get(3)?)?,
                    sealed_event: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// Removes one held part (it reached a terminal state on its own).
    pub async fn drop_held_part(&self, key: &(impl RowKey + ?Sized)) -> Result<(), StoreError> {
        let key = self.row(key)?;
        sqlx::query("DELETE FROM held_parts WHERE source = $1 AND message_token = $2")
            .bind(&key.source)
            .bind(&key.token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether a message is held as a part.
    pub async fn is_held(&self, key: &(impl RowKey + ?Sized)) -> Result<bool, StoreError> {
        let key = self.row(key)?;
        Ok(
            sqlx::query("SELECT 1 FROM held_parts WHERE source = $1 AND message_token = $2")
                .bind(&key.source)
                .bind(&key.token)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Groups per state and held parts, for `status`.
    pub async fn split_counts(&self) -> Result<SplitCounts, StoreError> {
        let mut counts = SplitCounts::default();
        for r in sqlx::query("SELECT state, COUNT(*) FROM split_groups GROUP BY state")
            .fetch_all(&self.pool)
            .await?
        {
            let state: String = r.try_get(0)?;
            let n: i64 = r.try_get(1)?;
            match state.as_str() {
                "waiting" => counts.waiting = n,
                "complete" => counts.complete = n,
                "incomplete" => counts.incomplete = n,
                other => {
                    return Err(StoreError::Corrupt(format!("unknown group state {other}")));
                }
            }
        }
        counts.held_parts = sqlx::query("SELECT COUNT(*) FROM held_parts")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok(counts)
    }
}

fn index(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt("part index out of range".into()))
}
