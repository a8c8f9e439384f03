//! Where a source that reads the messenger itself continues (the Matrix
//! sync token), per account. The account (a Matrix user id) is kept as its
//! keyed token ([`super::Pseudonyms::account`]).

use sqlx::Row;

use super::{Store, StoreError};

impl Store {
    /// The saved cursor of a source reading `account` (Matrix: next_batch).
    /// The account is kept as its keyed token.
    pub async fn source_cursor(
        &self,
        source: &str,
        account: &str,
    ) -> Result<Option<String>, StoreError> {
        let account = self.names()?.account(source, account);
        sqlx::query("SELECT cursor FROM source_cursors WHERE source = $1 AND account_token = $2")
            .bind(source)
            .bind(account)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get(0).map_err(Into::into))
            .transpose()
    }

    /// Saves the cursor; call only after everything before it is durable.
    pub async fn set_source_cursor(
        &self,
        source: &str,
        account: &str,
        cursor: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let account = self.names()?.account(source, account);
        sqlx::query(
            "INSERT INTO source_cursors (source, account_token, cursor, updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (source, account_token) DO UPDATE SET cursor = $3, updated_at = $4",
        )
        .bind(source)
        .bind(account)
        .bind(cursor)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
