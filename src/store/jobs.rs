//! Runs of the singleton jobs (`job_runs`): the leader claims each cron
//! instant of a job before it runs it, so an instant never runs twice even
//! if two workers believed they led at once; and a connection outside the
//! pool for the leader's session-level lock.

use sqlx::{AnyConnection, Row};

use super::{Store, StoreError};

/// How long run rows are kept.
const KEEP_MS: i64 = 7 * 24 * 3_600_000;

/// One run of a singleton job.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobRun {
    pub job: String,
    /// The cron instant it ran for (Unix ms).
    pub tick: i64,
    /// The worker that ran it (`host:pid.n`).
    pub worker: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

fn run_of(r: &sqlx::any::AnyRow) -> Result<JobRun, StoreError> {
    Ok(JobRun {
        job: r.try_get(0)?,
        tick: r.try_get(1)?,
        worker: r.try_get(2)?,
        started_at: r.try_get(3)?,
        finished_at: r.try_get(4)?,
    })
}

impl Store {
    /// Claims the instant `tick_ms` of `job` for `worker`; `false` when
    /// another worker claimed it. Prunes the job's rows older than a week.
    pub async fn claim_job_run(
        &self,
        job: &str,
        tick_ms: i64,
        worker: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let won = sqlx::query(
            "INSERT INTO job_runs (job, tick, worker, started_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(job)
        .bind(tick_ms)
        .bind(worker)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if won {
            sqlx::query("DELETE FROM job_runs WHERE job = $1 AND tick < $2")
                .bind(job)
                .bind(tick_ms - KEEP_MS)
                .execute(&self.pool)
                .await?;
        }
        Ok(won)
    }

    /// Records that the claimed run ended.
    pub async fn finish_job_run(
        &self,
        job: &str,
        tick_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE job_runs SET finished_at = $3 WHERE job = $1 AND tick = $2")
            .bind(job)
            .bind(tick_ms)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Runs of `job` for instants at or after `since_ms`, oldest first.
    pub async fn job_runs(&self, job: &str, since_ms: i64) -> Result<Vec<JobRun>, StoreError> {
        sqlx::query(
            "SELECT job, tick, worker, started_at, finished_at FROM job_runs
             WHERE job = $1 AND tick >= $2 ORDER BY tick",
        )
        .bind(job)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(run_of)
        .collect()
    }

    /// The latest run of every job, by job name.
    pub async fn last_job_runs(&self) -> Result<Vec<JobRun>, StoreError> {
        sqlx::query(
            "SELECT r.job, r.tick, r.worker, r.started_at, r.finished_at FROM job_runs r
             JOIN (SELECT job, MAX(tick) AS tick FROM job_runs GROUP BY job) l
               ON l.job = r.job AND l.tick = r.tick
             ORDER BY r.job",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(run_of)
        .collect()
    }

    /// A connection taken out of the pool for good (the pool opens another
    /// in its place): a session-level lock lives as long as it does.
    pub async fn dedicated_connection(&self) -> Result<AnyConnection, StoreError> {
        Ok(self.pool.acquire().await?.detach())
    }
}
