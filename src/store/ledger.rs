//! The ledger: one terminal state per message, written in the same
//! transaction as its consequences (proof leaf, deletion outbox, quarantine).

use sqlx::AnyConnection;
use sqlx::any::AnyArguments;
use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::{Any, Connection, Row, Transaction};

use super::outbox::{self, NewDeletion};
use super::{MessageRef, RowKey, Store, StoreError, log, sealed};
use crate::event::MessageKey;
use crate::seal::Sealing;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    Archived,
    NotRelevant,
    Quarantined,
}

impl MessageState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Archived => "archived",
            Self::NotRelevant => "not_relevant",
            Self::Quarantined => "quarantined",
        }
    }

    pub(super) fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "archived" => Ok(Self::Archived),
            "not_relevant" => Ok(Self::NotRelevant),
            "quarantined" => Ok(Self::Quarantined),
            other => Err(StoreError::Corrupt(format!(
                "unknown message state {other}"
            ))),
        }
    }
}

/// What the ledger knows of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub state: MessageState,
    /// Quarantine reason code or the deciding rule.
    pub reason: String,
    pub content_sha256: Option<String>,
    /// The primary KIS resource, `Type/id`.
    pub resource: Option<String>,
}

/// Everything recorded when the KIS confirmed an archive.
#[derive(Debug, Clone)]
pub struct ArchiveRecord {
    pub key: MessageKey,
    pub rule: String,
    pub content_sha256: String,
    pub resource: String,
    pub resources: Vec<String>,
    pub leaf_data: Vec<u8>,
    pub deletion: NewDeletion,
}

/// Count of messages per state and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCount {
    pub state: String,
    pub reason: String,
    pub count: i64,
}

pub(super) const INSERT_MESSAGE: &str = "INSERT INTO messages
    (source, message_token, state, reason, content_sha256, resource, resources, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
    ON CONFLICT (source, message_token) DO NOTHING";

/// The terminal-state row of a message.
pub(super) struct TerminalRow<'a> {
    key: &'a MessageRef,
    state: MessageState,
    reason: &'a str,
    content_sha256: Option<&'a str>,
    resource: Option<&'a str>,
    resources: Option<String>,
}

impl<'a> TerminalRow<'a> {
    pub(super) fn bare(key: &'a MessageRef, state: MessageState, reason: &'a str) -> Self {
        Self {
            key,
            state,
            reason,
            content_sha256: None,
            resource: None,
            resources: None,
        }
    }

    /// The archived row of `rec`, whose message the store names `key`.
    pub(super) fn archived(key: &'a MessageRef, rec: &'a ArchiveRecord) -> Self {
        Self {
            content_sha256: Some(&rec.content_sha256),
            resource: Some(&rec.resource),
            resources: Some(serde_json::to_string(&rec.resources).unwrap_or_default()),
            ..Self::bare(key, MessageState::Archived, &rec.rule)
        }
    }

    /// Binds the row's values to `q` in [`INSERT_MESSAGE`] order, up to
    /// and without the time columns.
    pub(super) fn bind_to<'q>(self, q: Query<'q, Any, AnyArguments>) -> Query<'q, Any, AnyArguments>
    where
        'a: 'q,
    {
        q.bind(&self.key.source)
            .bind(&self.key.token)
            .bind(self.state.as_str())
            .bind(self.reason)
            .bind(self.content_sha256)
            .bind(self.resource)
            .bind(self.resources)
    }
}

impl Store {
    /// Opens a transaction that first writes `row`. `None` (nothing written)
    /// when the message already has a terminal state.
    pub(super) async fn begin_terminal<'c>(
        conn: &'c mut AnyConnection,
        row: TerminalRow<'_>,
        now_ms: i64,
    ) -> Result<Option<Transaction<'c, Any>>, StoreError> {
        let mut tx = conn.begin().await?;
        let inserted = row
            .bind_to(sqlx::query(INSERT_MESSAGE))
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        Ok(Some(tx))
    }

    pub async fn message(
        &self,
        key: &(impl RowKey + ?Sized),
    ) -> Result<Option<StoredMessage>, StoreError> {
        let key = self.row(key)?;
        let row = sqlx::query(
            "SELECT state, reason, content_sha256, resource FROM messages
             WHERE source = $1 AND message_token = $2",
        )
        .bind(&key.source)
        .bind(&key.token)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(StoredMessage {
                state: MessageState::parse(r.try_get::<String, _>(0)?.as_str())?,
                reason: r.try_get(1)?,
                content_sha256: r.try_get(2)?,
                resource: r.try_get(3)?,
            })
        })
        .transpose()
    }

    /// Records the archive, appends its proof leaf and queues the deletion of
    /// the messenger copy, atomically. Returns the leaf index, or `None` when
    /// the message already had a terminal state (nothing written).
    pub async fn record_archive(
        &self,
        rec: &ArchiveRecord,
        now_ms: i64,
    ) -> Result<Option<u64>, StoreError> {
        let _stage = crate::telemetry::measure::Stage::start("store");
        let key = self.row(&rec.key)?;
        let deletion = self.row(&rec.deletion.key)?;
        let row = TerminalRow::archived(&key, rec);
        let mut conn = self.pool.acquire().await?;
        let result = async {
            let Some(mut tx) = Self::begin_terminal(&mut conn, row, now_ms).await? else {
                return Ok(None);
            };
            // The leaf last: its `log_head` lock is held until the commit.
            outbox::insert(&mut tx, &rec.deletion, &deletion, now_ms).await?;
            let index = log::append(&mut tx, &key, &rec.leaf_data, now_ms).await?;
            tx.commit().await?;
            Ok(Some(index))
        }
        .await;
        discard_on_error(conn, &result);
        result
    }

    /// Records a not-relevant message and schedules the deletion of its
    /// messenger copy for when its retention ends. `false` if already terminal.
    pub async fn record_not_relevant(
        &self,
        key: &MessageKey,
        rule: &str,
        deletion: &NewDeletion,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let key = self.row(key)?;
        let named = self.row(&deletion.key)?;
        let row = TerminalRow::bare(&key, MessageState::NotRelevant, rule);
        let mut conn = self.pool.acquire().await?;
        let result = async {
            let Some(mut tx) = Self::begin_terminal(&mut conn, row, now_ms).await? else {
                return Ok(false);
            };
            outbox::insert(&mut tx, deletion, &named, now_ms).await?;
            tx.commit().await?;
            Ok(true)
        }
        .await;
        discard_on_error(conn, &result);
        result
    }

    /// Quarantines a message with a reason code; the event and any detail
    /// (such as the KIS's OperationOutcome) are kept sealed. The messenger
    /// copy is kept. `false` if already terminal.
    pub async fn record_quarantine(
        &self,
        key: &MessageKey,
        reason: &str,
        sealed_event: &Sealing,
        sealed_detail: Option<&Sealing>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let key = &self.row(key)?;
        let row = TerminalRow::bare(key, MessageState::Quarantined, reason);
        let mut conn = self.pool.acquire().await?;
        let result = async {
            let Some(mut tx) = Self::begin_terminal(&mut conn, row, now_ms).await? else {
                return Ok(false);
            };
            sqlx::query(
                "INSERT INTO quarantine (source, message_token, reason, sealed_event, sealed_detail,
                                         created_at, correlation_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&key.source)
            .bind(&key.token)
            .bind(reason)
            .bind(sealed_event.at(&sealed::quarantine_event(key)))
            .bind(sealed_detail.map(|d| d.at(&sealed::quarantine_detail(key))))
            .bind(now_ms)
            .bind(crate::correlation::current())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        }
        .await;
        discard_on_error(conn, &result);
        result
    }

    /// The sealed detail kept with a quarantined message.
    pub async fn quarantine_detail(
        &self,
        key: &(impl RowKey + ?Sized),
    ) -> Result<Option<(String, Vec<u8>, Option<Vec<u8>>)>, StoreError> {
        let key = self.row(key)?;
        let row = sqlx::query(
            "SELECT reason, sealed_event, sealed_detail FROM quarantine
             WHERE source = $1 AND message_token = $2",
        )
        .bind(&key.source)
        .bind(&key.token)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .transpose()
    }

    /// Messages per state and reason, for `chartbridge status`.
    pub async fn state_counts(&self) -> Result<Vec<StateCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT state, reason, COUNT(*) FROM messages GROUP BY state, reason ORDER BY state, reason",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StateCount {
                    state: r.try_get(0)?,
                    reason: r.try_get(1)?,
                    count: r.try_get(2)?,
                })
            })
            .collect()
    }
}

/// A connection whose terminal transaction failed is closed, not pooled:
/// after a failed statement or COMMIT (SQLite FULL or IOERR in particular)
/// its transaction state is not to be trusted, and a reused connection that
/// still holds a transaction would keep the write lock and never commit.
pub(super) fn discard_on_error<T>(mut conn: PoolConnection<Any>, result: &Result<T, StoreError>) {
    if result.is_err() {
        conn.close_on_drop();
    }
}
