//! `chartbridge keys rotate-at-rest`: a new at-rest key becomes current and
//! every sealed blob under another key (or of version 1) is re-sealed, in
//! batches, with a progress bar. Resumable: when the current key is not the
//! root and its rotation has not finished, a run re-seals what is left
//! instead of adding yet another key. docs/key-management.md.

use std::path::Path;

use anyhow::Context;
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};

use crate::seal::{KeyFile, Sealer, keyring};
use crate::store::sealed::COLUMNS;
use crate::store::{Store, millis};

/// How a rotation runs.
#[derive(Debug, Clone)]
pub struct RotateOptions {
    /// Rows per transaction.
    pub batch_size: usize,
    /// Draw a progress bar on standard error.
    pub progress: bool,
    /// Stop (as a crash would) after this many batches; for tests.
    pub stop_after_batches: Option<u64>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateReport {
    /// The key now current (8 hex digits).
    pub key_id: String,
    /// `true` when this run continued an unfinished rotation.
    pub resumed: bool,
    /// Blobs re-sealed by this run.
    pub resealed: u64,
    /// `true` when no blob is left under another key.
    pub finished: bool,
    /// Blobs that did not open (their place; they keep their old key).
    pub failed: Vec<String>,
}

/// Adds a key to `key_file` (unless resuming) and re-seals the store.
/// Workers must be stopped: they hold the keyring they started with.
pub async fn rotate_at_rest(
    key_file: &Path,
    store: &Store,
    options: &RotateOptions,
) -> anyhow::Result<RotateReport> {
    let mut file = KeyFile::read(key_file)?;
    let mut sealer = Sealer::from_file(&file)?;
    let root = sealer.key_ids()[0];
    let current = sealer.current_key_id().to_string();
    let resumed = sealer.current_key_id() != root
        && store
            .rotation(&current)
            .await?
            .is_none_or(|r| r.finished_at.is_none());
    if !resumed {
        file.keys.push(keyring::random_key());
        sealer = Sealer::from_file(&file)?;
        file.write(key_file, false)
            .context("cannot add the new key to the key file")?;
    }
    let key_id = sealer.current_key_id().to_string();
    store.start_rotation(&key_id, millis(Utc::now())).await?;

    let total = store.stale_blob_count(sealer.current_key_id()).await?;
    let bar = if options.progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} blobs ({per_sec}, {eta} left)")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("re-sealing under key {key_id}"));
    let mut report = RotateReport {
        key_id: key_id.clone(),
        resumed,
        resealed: 0,
        finished: false,
        failed: Vec::new(),
    };
    let mut batches = 0u64;
    for column in COLUMNS {
        let mut skip = 0;
        loop {
            if options.stop_after_batches.is_some_and(|n| batches >= n) {
                bar.abandon();
                return Ok(report);
            }
            let batch = store
                .reseal_batch(&sealer, column, skip, options.batch_size.max(1))
                .await?;
            if batch.read == 0 {
                break;
            }
            batches += 1;
            skip += batch.failed.len();
            store.count_resealed(&key_id, batch.resealed as i64).await?;
            report.resealed += batch.resealed as u64;
            bar.inc((batch.resealed + batch.failed.len()) as u64);
            report
                .failed
                .extend(batch.failed.iter().map(ToString::to_string));
        }
    }
    bar.finish();
    if report.failed.is_empty() {
        store.finish_rotation(&key_id, millis(Utc::now())).await?;
        report.finished = true;
    }
    Ok(report)
}
