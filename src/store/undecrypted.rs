//! Matrix events of end-to-end-encrypted rooms whose room keys have not
//! arrived yet (migration 0012): recorded, sealed, by the Matrix source
//! before its sync cursor moves past them, retried until they decrypt.

use sqlx::Row;

use super::{RowKey, Store, StoreError};
use crate::event::MessageKey;

/// `awaiting_keys`: within `matrix.e2ee.undecryptable_after`.
pub const AWAITING_KEYS: &str = "awaiting_keys";
/// `undecryptable`: the wait ran out; also quarantined `undecryptable`.
pub const UNDECRYPTABLE: &str = "undecryptable";

/// One recorded undecrypted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecrypted {
    /// The message token of the event (source `matrix`, its event id);
    /// the event id itself is inside the sealed event.
    pub event_token: String,
    /// The `m.room.encrypted` event with its `room_id`, sealed.
    pub sealed_event: Vec<u8>,
    /// [`AWAITING_KEYS`] or [`UNDECRYPTABLE`].
    pub state: String,
    /// When the source first saw it, ms since the epoch.
    pub first_seen_at: i64,
    /// Decryption attempts so far.
    pub tries: i64,
}

impl Store {
    /// Records an event that did not decrypt, in state `awaiting_keys`; a
    /// second record of the same event (a republished sync) changes nothing.
    /// `true` when recorded now. The row is named by the event's message
    /// token ([`undecrypted_token`](Store::undecrypted_token)).
    pub async fn record_undecrypted(
        &self,
        event_id: &str,
        sealed_event: &crate::seal::Sealing,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let token = self.undecrypted_token(event_id)?;
        let done = sqlx::query(
            "INSERT INTO matrix_undecrypted
                 (event_token, sealed_event, state, first_seen_at, last_try_at, tries)
             VALUES ($1, $2, 'awaiting_keys', $3, $3, 1)
             ON CONFLICT (event_token) DO NOTHING",
        )
        .bind(&token)
        .bind(sealed_event.at(&super::sealed::undecrypted_event(&token)))
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The name of the undecrypted Matrix event `event_id`: the message
    /// token of `(matrix, event_id)`.
    pub fn undecrypted_token(&self, event_id: &str) -> Result<String, StoreError> {
        let key = MessageKey {
            source: crate::event::matrix::SOURCE.into(),
            message_id: event_id.into(),
        };
        Ok(key.row_of(self.names.as_deref())?.token)
    }

    /// Every recorded undecrypted event, oldest first.
    pub async fn undecrypted(&self) -> Result<Vec<Undecrypted>, StoreError> {
        let rows = sqlx::query(
            "SELECT event_token, sealed_event, state, first_seen_at, tries
             FROM matrix_undecrypted ORDER BY first_seen_at, event_token",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Undecrypted {
                    event_token: r.try_get(0)?,
                    sealed_event: r.try_get(1)?,
                    state: r.try_get(2)?,
                    first_seen_at: r.try_get(3)?,
                    tries: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// Counts by state (`awaiting_keys`, `undecryptable`), for `status`.
    pub async fn undecrypted_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) FROM matrix_undecrypted GROUP BY state ORDER BY state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Notes a failed retry; `state` moves on to `undecryptable` when given.
    pub async fn touch_undecrypted(
        &self,
        event_token: &str,
        state: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE matrix_undecrypted SET state = $2, last_try_at = $3, tries = tries + 1
             WHERE event_token = $1",
        )
        .bind(event_token)
        .bind(state)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes the record once the decrypted event was published.
    pub async fn forget_undecrypted(&self, event_token: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM matrix_undecrypted WHERE event_token = $1")
            .bind(event_token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replaces the sealed event of an open quarantine entry held with
    /// `reason` by a readable copy, and the key's content claim by the
    /// copy's `digest`, in one transaction. `false` (nothing changed) when
    /// the key is not held open with that reason.
    pub async fn replace_held_event(
        &self,
        key: &MessageKey,
        reason: &str,
        digest: &str,
        sealed_event: &crate::seal::Sealing,
    ) -> Result<bool, StoreError> {
        let key = self.row(key)?;
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE quarantine SET sealed_event = $4
             WHERE source = $1 AND message_token = $2 AND reason = $3 AND released_at IS NULL",
        )
        .bind(&key.source)
        .bind(&key.token)
        .bind(reason)
        .bind(sealed_event.at(&super::sealed::quarantine_event(&key)))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE content_digests SET digest = $3 WHERE source = $1 AND message_token = $2",
        )
        .bind(&key.source)
        .bind(&key.token)
        .bind(digest)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Trust on first use: pins `identity_token` for `sender_token` if the
    /// sender has none yet. Returns the pinned identity token (the given
    /// one on first use) and whether it was pinned now.
    pub async fn pin_identity(
        &self,
        sender_token: &str,
        identity_token: &str,
        now_ms: i64,
    ) -> Result<(String, bool), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO matrix_tofu (sender_token, identity_token, first_trusted_at)
             VALUES ($1, $2, $3) ON CONFLICT (sender_token) DO NOTHING",
        )
        .bind(sender_token)
        .bind(identity_token)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        let pinned: String =
            sqlx::query("SELECT identity_token FROM matrix_tofu WHERE sender_token = $1")
                .bind(sender_token)
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
        Ok((pinned, inserted))
    }
}
