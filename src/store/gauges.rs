//! Counts for the metrics gauges (`crate::telemetry::measure`): grouped
//! SQL, no rows loaded, no content or identifiers read.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{Store, StoreError};

/// Age buckets of open quarantine items (label `age`).
pub const QUARANTINE_AGES: [&str; 4] = ["lt_1h", "1h_1d", "1d_7d", "gt_7d"];

const HOUR_MS: i64 = 3_600_000;

/// What the store holds now, as the gauges report it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreGauges {
    /// Deletions per state.
    pub outbox: BTreeMap<String, i64>,
    /// Open quarantine items per (reason, age bucket).
    pub quarantine: BTreeMap<(String, &'static str), i64>,
    pub split_parts_held: i64,
    /// Transcript windows not archived (open or closing).
    pub transcript_windows_open: i64,
    pub log_size: u64,
    /// Tree size and signing time (ms) of the latest checkpoint.
    pub checkpoint: Option<(u64, i64)>,
}

impl Store {
    /// Counts for the gauges as of `now_ms`.
    pub async fn gauges(&self, now_ms: i64) -> Result<StoreGauges, StoreError> {
        let mut g = StoreGauges::default();
        for r in sqlx::query("SELECT state, COUNT(*) FROM deletions GROUP BY state")
            .fetch_all(&self.pool)
            .await?
        {
            g.outbox.insert(r.try_get(0)?, r.try_get(1)?);
        }
        let ages = sqlx::query(
            "SELECT m.reason,
                    CAST(CASE WHEN q.created_at > $1 THEN 0
                              WHEN q.created_at > $2 THEN 1
                              WHEN q.created_at > $3 THEN 2
                              ELSE 3 END AS BIGINT) AS bucket,
                    COUNT(*)
             FROM quarantine q JOIN messages m
               ON m.source = q.source AND m.message_token = q.message_token
             WHERE m.state = 'quarantined'
             GROUP BY m.reason, bucket",
        )
        .bind(now_ms - HOUR_MS)
        .bind(now_ms - 24 * HOUR_MS)
        .bind(now_ms - 7 * 24 * HOUR_MS)
        .fetch_all(&self.pool)
        .await?;
        for r in ages {
            let bucket: i64 = r.try_get(1)?;
            let age = QUARANTINE_AGES[bucket.clamp(0, 3) as usize];
            g.quarantine.insert((r.try_get(0)?, age), r.try_get(2)?);
        }
        g.split_parts_held = sqlx::query("SELECT COUNT(*) FROM held_parts")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        g.transcript_windows_open =
            sqlx::query("SELECT COUNT(*) FROM transcript_windows WHERE state <> 'archived'")
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
        g.log_size = self.log_size().await?;
        g.checkpoint = self
            .latest_checkpoint()
            .await?
            .map(|c| (c.size, c.timestamp_ms));
        Ok(g)
    }
}

/// Messages by the state they are in and the time bucket in which they
/// reached it (`messages.updated_at`), for the console's charts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateTimeline {
    /// Start of the first bucket, ms since the epoch.
    pub since_ms: i64,
    /// Width of a bucket, ms.
    pub bucket_ms: i64,
    /// Per bucket (oldest first): state → messages.
    pub buckets: Vec<BTreeMap<String, i64>>,
    /// Every message by state, whenever recorded.
    pub totals: BTreeMap<String, i64>,
}

impl Store {
    /// [`StateTimeline`] of `buckets` buckets of `bucket_ms` ending at
    /// `now_ms`: grouped SQL over `messages` (state, updated_at), no
    /// identifiers read. A message counts once, in the bucket of its last
    /// state change (a held message archived later counts when archived).
    pub async fn state_timeline(
        &self,
        now_ms: i64,
        bucket_ms: i64,
        buckets: usize,
    ) -> Result<StateTimeline, StoreError> {
        let bucket_ms = bucket_ms.max(1);
        let since_ms = now_ms - bucket_ms * buckets as i64;
        let mut t = StateTimeline {
            since_ms,
            bucket_ms,
            buckets: vec![BTreeMap::new(); buckets],
            totals: BTreeMap::new(),
        };
        let rows = sqlx::query(
            "SELECT state, CAST((updated_at - $1) / $2 AS BIGINT) AS bucket, COUNT(*)
             FROM messages WHERE updated_at >= $1 AND updated_at < $3
             GROUP BY state, bucket",
        )
        .bind(since_ms)
        .bind(bucket_ms)
        .bind(now_ms + 1)
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            let bucket: i64 = r.try_get(1)?;
            let i = usize::try_from(bucket)
                .unwrap_or(0)
                .min(buckets.saturating_sub(1));
            if let Some(b) = t.buckets.get_mut(i) {
                *b.entry(r.try_get(0)?).or_default() += r.try_get::<i64, _>(2)?;
            }
        }
        for r in sqlx::query("SELECT state, COUNT(*) FROM messages GROUP BY state")
            .fetch_all(&self.pool)
            .await?
        {
            t.totals.insert(r.try_get(0)?, r.try_get(1)?);
        }
        Ok(t)
    }
}
