//! What `chartbridge trace` reads of one message: its ledger row, its
//! quarantine row (without the sealed columns), and the lookups from the
//! opaque ids operators hold to the message key.

use sqlx::Row;

use super::{MessageRef, RowKey};
use super::{Store, StoreError};

/// A ledger row with its times (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub state: String,
    /// Quarantine reason code or the deciding rule.
    pub reason: String,
    pub content_sha256: Option<String>,
    pub resource: Option<String>,
    pub resources: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub purged_at: Option<i64>,
}

/// A quarantine row without its sealed columns or patient references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineRow {
    pub reason: String,
    pub created_at: i64,
    pub correlation_id: Option<String>,
    pub has_candidate: bool,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub released_at: Option<i64>,
    pub conversation_token: Option<String>,
}

fn key_of(r: &sqlx::any::AnyRow) -> Result<MessageRef, StoreError> {
    Ok(MessageRef {
        source: r.try_get(0)?,
        token: r.try_get(1)?,
    })
}

impl Store {
    /// The ledger row of `key`, if it has one.
    pub async fn ledger_row(
        &self,
        key: &(impl RowKey + ?Sized),
    ) -> Result<Option<LedgerRow>, StoreError> {
        let key = self.row(key)?;
        let row = sqlx::query(
            "SELECT state, reason, content_sha256, resource, resources, created_at, updated_at,
                    purged_at
             FROM messages WHERE source = $1 AND message_token = $2",
        )
        .bind(&key.source)
        .bind(&key.token)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let resources: Option<String> = r.try_get(4)?;
            Ok(LedgerRow {
                state: r.try_get(0)?,
                reason: r.try_get(1)?,
                content_sha256: r.try_get(2)?,
                resource: r.try_get(3)?,
                resources: resources
                    .and_then(|j| serde_json::from_str(&j).ok())
                    .unwrap_or_default(),
                created_at: r.try_get(5)?,
                updated_at: r.try_get(6)?,
                purged_at: r.try_get(7)?,
            })
        })
        .transpose()
    }

    /// The quarantine row of `key` (open or released), if it has one.
    pub async fn quarantine_row(
        &self,
        key: &(impl RowKey + ?Sized),
    ) -> Result<Option<QuarantineRow>, StoreError> {
        let key = self.row(key)?;
        let row = sqlx::query(
            "SELECT reason, created_at, correlation_id, candidate, resolved_by, resolved_at,
                    released_at, conversation_token
             FROM quarantine WHERE source = $1 AND message_token = $2",
        )
        .bind(&key.source)
        .bind(&key.token)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(QuarantineRow {
                reason: r.try_get(0)?,
                created_at: r.try_get(1)?,
                correlation_id: r.try_get(2)?,
                has_candidate: r.try_get::<Option<String>, _>(3)?.is_some(),
                resolved_by: r.try_get(4)?,
                resolved_at: r.try_get(5)?,
                released_at: r.try_get(6)?,
                conversation_token: r.try_get(7)?,
            })
        })
        .transpose()
    }

    /// The key of every quarantine row, open or released (to find one by
    /// its opaque item id).
    pub async fn quarantine_keys(&self) -> Result<Vec<MessageRef>, StoreError> {
        sqlx::query("SELECT source, message_token FROM quarantine ORDER BY created_at")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(key_of)
            .collect()
    }

    /// The messages a delivery with correlation id `id` quarantined.
    pub async fn quarantine_by_correlation(&self, id: &str) -> Result<Vec<MessageRef>, StoreError> {
        sqlx::query(
            "SELECT source, message_token FROM quarantine WHERE correlation_id = $1
             ORDER BY created_at, source, message_token",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(key_of)
        .collect()
    }

    /// The message whose ledger row names `resource` among its KIS
    /// resources (primary or not).
    pub async fn message_with_resource(
        &self,
        resource: &str,
    ) -> Result<Option<MessageRef>, StoreError> {
        if let Some(key) = self.message_by_resource(resource).await? {
            return Ok(Some(key));
        }
        let quoted = serde_json::to_string(resource).unwrap_or_default();
        let row = sqlx::query(
            "SELECT source, message_token FROM messages WHERE resources LIKE $1 ORDER BY created_at",
        )
        .bind(format!("%{quoted}%"))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_of).transpose()
    }
}
