//! Recorded integrity audits (`audit_samples`): what `chartbridge audit
//! --sample N` and the scheduled audit found, for the console's log page.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Store, StoreError};

/// One integrity audit over a random sample of archived resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSample {
    /// Start, ms since the Unix epoch.
    pub started_at: i64,
    /// End, ms since the Unix epoch.
    pub finished_at: i64,
    /// Who ran it: `cli` (`chartbridge audit`) or `schedule`
    /// (`schedule.integrity_audit`).
    pub run_by: String,
    /// Resources drawn.
    pub checked: u64,
    /// Resources whose every check passed.
    pub verified: u64,
    /// Resources with a failed check.
    pub mismatched: u64,
    /// Resources whose check could not run (KIS unreachable, resource gone).
    pub unchecked: u64,
    /// The resources that did not verify, with what failed.
    pub findings: Vec<AuditFinding>,
}

/// A resource that did not verify in an [`AuditSample`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFinding {
    /// The KIS resource, `Type/id`.
    pub resource: String,
    /// The names of the failed checks (`sha256-extension`, `log-leaf`,
    /// `checkpoint`, …), or `could not run: <reason>`.
    pub failed: Vec<String>,
}

fn count(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt("negative count in audit_samples".into()))
}

fn param(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt("count beyond i64".into()))
}

impl Store {
    /// Records an audit's result; a second record of the same start and
    /// `run_by` is ignored.
    pub async fn record_audit_sample(&self, s: &AuditSample) -> Result<(), StoreError> {
        let findings = serde_json::to_string(&s.findings)
            .map_err(|e| StoreError::Corrupt(format!("audit findings: {e}")))?;
        sqlx::query(
            "INSERT INTO audit_samples
               (started_at, finished_at, run_by, checked, verified, mismatched, unchecked, findings)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(s.started_at)
        .bind(s.finished_at)
        .bind(&s.run_by)
        .bind(param(s.checked)?)
        .bind(param(s.verified)?)
        .bind(param(s.mismatched)?)
        .bind(param(s.unchecked)?)
        .bind(findings)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The `limit` most recent audits, newest first.
    pub async fn recent_audit_samples(&self, limit: i64) -> Result<Vec<AuditSample>, StoreError> {
        sqlx::query(
            "SELECT started_at, finished_at, run_by, checked, verified, mismatched, unchecked, findings
             FROM audit_samples ORDER BY started_at DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            let findings: String = r.try_get(7)?;
            Ok(AuditSample {
                started_at: r.try_get(0)?,
                finished_at: r.try_get(1)?,
                run_by: r.try_get(2)?,
                checked: count(r.try_get(3)?)?,
                verified: count(r.try_get(4)?)?,
                mismatched: count(r.try_get(5)?)?,
                unchecked: count(r.try_get(6)?)?,
                findings: serde_json::from_str(&findings)
                    .map_err(|e| StoreError::Corrupt(format!("audit_samples.findings: {e}")))?,
            })
        })
        .collect()
    }
}
