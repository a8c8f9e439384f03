//! The schema version. Migrations are applied by `chartbridge migrate` (and
//! by a worker at start unless `store.migrate_on_start = false`); every
//! other command only checks that the schema is the one this binary was
//! built for and fails with a clear message when it is not, so reading a
//! database never changes it.

use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};

use super::{Backend, StoreError};

static SQLITE: Migrator = sqlx::migrate!("src/store/migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("src/store/migrations/postgres");

/// What opening a store does about the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Apply pending migrations (`migrate`, a worker's start).
    Migrate,
    /// Require the schema to be current; change nothing.
    Current,
    /// Neither check nor migrate (`restore` records itself in a database
    /// of any version that has the audit trail).
    Unchecked,
}

/// The migrations of `backend` this binary carries.
pub(super) fn migrator(backend: Backend) -> &'static Migrator {
    match backend {
        Backend::Sqlite => &SQLITE,
        Backend::Postgres => &POSTGRES,
    }
}

/// How the database's schema compares with this binary's migrations.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SchemaStatus {
    /// Versions applied, ascending.
    pub applied: Vec<i64>,
    /// Versions this binary would apply, with their descriptions.
    pub pending: Vec<(i64, String)>,
    /// Versions applied that this binary does not know (a newer binary ran).
    pub unknown: Vec<i64>,
    /// Versions applied whose script differs from this binary's.
    pub changed: Vec<i64>,
}

impl SchemaStatus {
    /// `Ok` when the schema is exactly this binary's.
    pub fn require_current(&self) -> Result<(), StoreError> {
        if let Some(v) = self.unknown.first() {
            return Err(StoreError::Schema(format!(
                "the database has migration {v}, which this version of chartbridge does not \
                 know: it was upgraded by a newer version; run that version"
            )));
        }
        if let Some(v) = self.changed.first() {
            return Err(StoreError::Schema(format!(
                "migration {v} in the database differs from this version's"
            )));
        }
        if self.applied.is_empty() {
            return Err(StoreError::Schema(
                "the database has no schema yet: run `chartbridge migrate` (or start the worker)"
                    .into(),
            ));
        }
        if let Some((v, _)) = self.pending.first() {
            return Err(StoreError::Schema(format!(
                "the database schema is behind this version ({} migration(s) pending, from {v}): \
                 back it up, then run `chartbridge migrate`",
                self.pending.len()
            )));
        }
        Ok(())
    }
}

/// Compares the applied migrations of `pool` with this binary's, reading
/// only (a database without the migrations table has none applied).
pub async fn status(pool: &AnyPool, backend: Backend) -> Result<SchemaStatus, StoreError> {
    let rows = match sqlx::query(
        "SELECT version, checksum FROM _sqlx_migrations WHERE success = TRUE ORDER BY version",
    )
    .fetch_all(pool)
    .await
    {
        Ok(rows) => rows,
        Err(sqlx::Error::Database(e))
            if e.code().as_deref() == Some("42P01") || e.message().contains("no such table") =>
        {
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    let mut applied = Vec::with_capacity(rows.len());
    for r in &rows {
        applied.push((r.try_get::<i64, _>(0)?, r.try_get::<Vec<u8>, _>(1)?));
    }
    let known: Vec<_> = migrator(backend)
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .collect();
    let mut status = SchemaStatus {
        applied: applied.iter().map(|(v, _)| *v).collect(),
        ..Default::default()
    };
    for m in &known {
        match applied.iter().find(|(v, _)| *v == m.version) {
            Some((_, sum)) if sum.as_slice() != &*m.checksum => status.changed.push(m.version),
            Some(_) => {}
            None => status
                .pending
                .push((m.version, m.description.clone().into_owned())),
        }
    }
    status.unknown = applied
        .iter()
        .map(|(v, _)| *v)
        .filter(|v| !known.iter().any(|m| m.version == *v))
        .collect();
    Ok(status)
}
