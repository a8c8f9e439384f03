//! The audit trail table (migration 0017): appended under the hash chain
//! of [`crate::audit`], never changed (triggers refuse UPDATE and DELETE
//! but for re-sealing the reason).

use sqlx::Row as _;

use super::{Store, StoreError, millis};
use crate::audit::{self, Entry, Row};
use crate::seal::{Place, Sealer};

/// Where a row's sealed reason lives.
pub fn reason_place(seq: &str) -> Place<'_> {
    Place::opaque("audit_trail", "sealed_reason", seq)
}

const COLUMNS: &str = "seq, at, actor, action, target, reason_digest, prev_hash, hash";

fn row(r: &sqlx::any::AnyRow) -> Result<Row, StoreError> {
    Ok(Row {
        seq: r.try_get(0)?,
        at: r.try_get(1)?,
        actor: r.try_get(2)?,
        action: r.try_get(3)?,
        target: r.try_get(4)?,
        reason_digest: r.try_get(5)?,
        prev_hash: r.try_get(6)?,
        hash: r.try_get(7)?,
    })
}

impl Store {
    /// Appends `entry` after the last row, chained to it; retried when
    /// another appender took the same `seq` first.
    pub async fn append_audit(
        &self,
        sealer: &Sealer,
        entry: &Entry<'_>,
    ) -> Result<Row, StoreError> {
        for _ in 0..20 {
            let mut tx = self.pool.begin().await?;
            let last = sqlx::query("SELECT seq, hash FROM audit_trail ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
            let (prev_seq, prev_hash) = match last {
                Some(r) => (r.try_get::<i64, _>(0)?, r.try_get::<Vec<u8>, _>(1)?),
                None => (0, audit::GENESIS.to_vec()),
            };
            let seq = prev_seq + 1;
            let at = millis(chrono::Utc::now());
            let digest = entry
                .reason
                .map(|r| sealer.token(&["audit-reason", &seq.to_string(), r]));
            let hash = audit::chain_hash(
                &prev_hash,
                seq,
                at,
                entry.actor.as_str(),
                entry.action.as_str(),
                &entry.target,
                digest.as_deref(),
            );
            let seq_text = seq.to_string();
            let sealed = entry
                .reason
                .map(|r| sealer.seal_at(&reason_place(&seq_text), r.as_bytes()));
            let inserted = sqlx::query(
                "INSERT INTO audit_trail (seq, at, actor, action, target, reason_digest,
                                          sealed_reason, prev_hash, hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (seq) DO NOTHING",
            )
            .bind(seq)
            .bind(at)
            .bind(entry.actor.as_str())
            .bind(entry.action.as_str())
            .bind(&entry.target)
            .bind(&digest)
            .bind(sealed)
            .bind(prev_hash.clone())
            .bind(hash.clone())
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(done) if done.rows_affected() == 1 => {
                    tx.commit().await?;
                    return Ok(Row {
                        seq,
                        at,
                        actor: entry.actor.to_string(),
                        action: entry.action.as_str().to_owned(),
                        target: entry.target.clone(),
                        reason_digest: digest,
                        prev_hash,
                        hash,
                    });
                }
                Ok(_) => tx.rollback().await?,
                Err(e) => {
                    let e = StoreError::from(e);
                    if !e.is_transient() {
                        return Err(e);
                    }
                    tx.rollback().await?;
                }
            }
        }
        Err(StoreError::Corrupt(
            "the audit trail stayed contended; nothing was appended".into(),
        ))
    }

    /// Every row, oldest first.
    pub async fn audit_trail(&self) -> Result<Vec<Row>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM audit_trail ORDER BY seq"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row).collect()
    }

    /// The sealed reason of row `seq`, if it has one.
    pub async fn audit_reason(&self, seq: i64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query("SELECT sealed_reason FROM audit_trail WHERE seq = $1")
                .bind(seq)
                .fetch_optional(&self.pool)
                .await?
                .and_then(|r| r.try_get::<Option<Vec<u8>>, _>(0).ok().flatten()),
        )
    }

    /// The target of the last row with `action`, if any.
    pub async fn last_audit_target(
        &self,
        action: audit::Action,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query(
            "SELECT target FROM audit_trail WHERE action = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(action.as_str())
        .fetch_optional(&self.pool)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?)
    }
}
