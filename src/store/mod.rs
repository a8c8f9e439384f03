//! State in SQL through sqlx: SQLite (embedded default, WAL) or PostgreSQL
//! (several workers). One set of statements serves both (`$n` parameters,
//! `ON CONFLICT`, `RETURNING`); only the migrations differ in column types.
//!
//! Idempotency lives here: `(source, message_token)` is unique in every table,
//! inserts are `ON CONFLICT DO NOTHING`, and `rows_affected()` decides.

pub mod audit;
pub mod audit_samples;
mod checkpoints;
pub mod config;
mod conflicts;
mod cursors;
mod deletions;
mod gauges;
mod group;
mod identity;
mod inspect;
mod jobs;
mod ledger;
mod links;
mod log;
mod media;
mod outbox;
mod pseudonym;
mod pseudonymise;
mod purge;
mod quarantine;
mod redactions;
mod replays;
mod reseal;
mod review;
mod review_hold;
mod rollbacks;
pub mod schema;
pub mod sealed;
mod skipped;
mod split;
pub mod trace;
mod transcript;
mod undecrypted;

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

use crate::event::MessageKey;
use crate::seal::Sealer;

pub use checkpoints::StoredCheckpoint;
pub use conflicts::{Claim, Claimed};
pub use deletions::DeletionView;
pub use gauges::{QUARANTINE_AGES, StateTimeline, StoreGauges};
pub use identity::{
    Applied, ApplyError, IdentityPatient, MergeApplied, MergeRefs, encounter_token,
    identifier_token, phone_token,
};
pub use inspect::TableDump;
pub use jobs::JobRun;
pub use ledger::{ArchiveRecord, MessageState, StateCount, StoredMessage};
pub use links::Link;
pub use log::LogLeaf;
pub use outbox::{DeletionRow, DeletionState, NewDeletion, StuckDeletion};
pub use pseudonym::{ACCOUNT_INFO, MessageRef, Pseudonyms, RowKey};
pub use purge::PurgeCounts;
pub use quarantine::{QuarantineEntry, QuarantineItem};
pub use redactions::{PendingRedaction, RedactionMark};
pub use replays::ReplayBegin;
pub use reseal::{Batch, Rotation};
pub use review::{
    ConflictItem, ConversationDecision, ConversationReview, HeldConversation, HeldMessage,
};
pub use review_hold::RedactionRequest;
pub use split::{HeldGroup, HeldPart, Hold, NewPart, SplitCounts};
pub use transcript::{
    HeldEntry, NewTranscriptEntry, TranscriptArchive, TranscriptMember, TranscriptWindow,
};
pub use undecrypted::{AWAITING_KEYS, UNDECRYPTABLE, Undecrypted};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// The schema is not the one this binary was built for.
    #[error("{0}")]
    Schema(String),
    #[error(
        "the store was opened without the at-rest key file, which names messages \
         (store.key_file)"
    )]
    NoPseudonyms,
    #[error("a stored row cannot be converted to pseudonyms: {0}")]
    Pseudonymise(#[from] crate::seal::SealError),
}

impl StoreError {
    /// Locked or busy databases and dropped connections are worth retrying.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Db(sqlx::Error::Database(e)) => {
                let msg = e.message();
                e.code()
                    .is_some_and(|c| c == "40001" || c == "40P01" || c == "5" || c == "6")
                    || msg.contains("database is locked")
                    || msg.contains("busy")
            }
            Self::Db(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed) => {
                true
            }
            _ => false,
        }
    }

    /// The database cannot store anything now: disk full, an IO error, a
    /// database file that cannot be opened (SQLite FULL, IOERR, CANTOPEN,
    /// PostgreSQL class 53 and 58030). The worker stops taking deliveries
    /// and retries what it holds until a write succeeds again.
    pub fn is_storage_failure(&self) -> bool {
        let Self::Db(sqlx::Error::Database(e)) = self else {
            return false;
        };
        let Some(code) = e.code() else {
            return false;
        };
        if let Ok(n) = code.parse::<u32>() {
            // SQLite reports extended codes; the primary code is the low byte.
            return matches!(n & 0xff, 10 | 13 | 14);
        }
        code.starts_with("53") || code == "58030"
    }
}

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The connection pool and the statements over it.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// Connections of their own for the write paths every delivery passes
    /// (the group-commit tasks' claims and archives, the deletion relay):
    /// under load the per-delivery reads queue for `pool`, and a group
    /// commit waiting behind them would hold up every delivery of its
    /// group. The same pool as `pool` for an in-memory SQLite database (one
    /// connection).
    writers: AnyPool,
    backend: Backend,
    /// Names messages and accounts ([`Store::open`]); without them only
    /// what needs no message key works (counts, the proof log, keys).
    names: Option<std::sync::Arc<Pseudonyms>>,
    /// SQLite lets one writer in at a time and makes the others sleep in
    /// its busy handler (1, 2, 5, 10 … ms per try). The hot write paths
    /// (grouped claims and archives, the deletion relay) queue for this
    /// gate in-process instead, so the next writer starts the moment the
    /// previous one committed. `None` on PostgreSQL, where row locks
    /// order writers without sleeping.
    write_gate: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
}

/// Milliseconds since the Unix epoch, the time unit of every column.
pub fn millis(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}

/// Connections of [`Store`]'s writer pool: one per group-commit task
/// (`pipeline::group::writers`: two on PostgreSQL, one on SQLite) and one
/// for the deletion relay.
const WRITER_CONNECTIONS: u32 = 3;

impl Store {
    /// Connects, configures SQLite for concurrent use, runs migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        Self::open_schema(url, max_connections, schema::Schema::Migrate).await
    }

    /// Connects and configures SQLite for concurrent use; migrates, checks
    /// that the schema is current, or neither, as `schema` says. Rows are
    /// not named (see [`Store::with_pseudonyms`]).
    pub async fn open_schema(
        url: &str,
        max_connections: u32,
        schema: schema::Schema,
    ) -> Result<Self, StoreError> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let max = if memory { 1 } else { max_connections.max(1) };
        // No ping before each acquire (a round trip to PostgreSQL, a thread
        // hand-off on SQLite, per statement): sqlx pings every connection
        // when it is released, a connection broken while idle fails its
        // next statement as transient (retried), and a connection whose
        // terminal transaction failed is closed (`discard_on_error`).
        let mut options = AnyPoolOptions::new()
            .max_connections(max)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    // Deleted rows are overwritten, not left in free pages.
                    conn.execute("PRAGMA secure_delete = ON").await?;
                    Ok(())
                })
            });
        }
        let pool = options.clone().connect(url).await?;
        match schema {
            schema::Schema::Migrate => schema::migrator(backend).run(&pool).await?,
            schema::Schema::Current => {
                let status = schema::status(&pool, backend).await;
                if let Err(e) = status.and_then(|s| s.require_current()) {
                    pool.close().await;
                    return Err(e);
                }
            }
            schema::Schema::Unchecked => {}
        }
        let writers = if memory {
            pool.clone()
        } else {
            options
                .max_connections(WRITER_CONNECTIONS)
                .connect(url)
                .await?
        };
        Ok(Self {
            pool,
            writers,
            backend,
            names: None,
            write_gate: (backend == Backend::Sqlite)
                .then(|| std::sync::Arc::new(tokio::sync::Mutex::new(()))),
        })
    }

    /// Waits for the SQLite write gate ([`Store::write_gate`]'s field);
    /// hold the guard until the write transaction committed. Immediate on
    /// PostgreSQL. Never taken twice by one task: it is not reentrant.
    pub(super) async fn write_gate(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.write_gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        }
    }

    /// Connects, migrates, names rows with the keys of `sealer`'s key
    /// file, and converts rows written before migration 0018 to
    /// pseudonyms ([`Store::pseudonymise_legacy`]).
    pub async fn open(
        url: &str,
        max_connections: u32,
        sealer: &Sealer,
    ) -> Result<Self, StoreError> {
        let store = Self::connect(url, max_connections)
            .await?
            .with_pseudonyms(sealer);
        let converted = store.pseudonymise_legacy(sealer).await?;
        if converted > 0 {
            tracing::info!(
                rows = converted,
                "stored messenger ids replaced by keyed tokens"
            );
        }
        Ok(store)
    }

    /// This store, naming rows with the keys of `sealer`'s key file.
    pub fn with_pseudonyms(mut self, sealer: &Sealer) -> Self {
        self.names = Some(std::sync::Arc::new(Pseudonyms::new(sealer)));
        self
    }

    /// How the store names `key`. Fails on a store opened without keys.
    pub fn message_ref(&self, key: &MessageKey) -> Result<MessageRef, StoreError> {
        key.row_of(self.names.as_deref())
    }

    pub(crate) fn row(&self, key: &(impl RowKey + ?Sized)) -> Result<MessageRef, StoreError> {
        key.row_of(self.names.as_deref())
    }

    pub(crate) fn names(&self) -> Result<&Pseudonyms, StoreError> {
        self.names.as_deref().ok_or(StoreError::NoPseudonyms)
    }

    /// How the schema compares with this binary's migrations.
    pub async fn schema_status(&self) -> Result<schema::SchemaStatus, StoreError> {
        schema::status(&self.pool, self.backend).await
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        Ok(schema::migrator(self.backend).run(&self.pool).await?)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.writers.close().await;
        self.pool.close().await;
    }
}

#[cfg(test)]
mod checkpoint_tests;
#[cfg(test)]
mod identity_tests;
#[cfg(test)]
mod ops_tests;
#[cfg(test)]
mod retention_tests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod transcript_tests;
