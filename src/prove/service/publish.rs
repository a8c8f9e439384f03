//! Checkpoints published outside the database (`proofs.checkpoint_dir`),
//! and the check that the local proof log has not gone back behind them.
//!
//! Restoring an older database rolls the proof log back: the next appends
//! would fork it against checkpoints (and proof bundles) already handed
//! out. Every signed checkpoint is therefore also written to a directory
//! the database backup does not contain, as
//! `{size:020}-{timestamp_ms:013}.checkpoint` (the signed note, verbatim,
//! written to a temporary file and renamed). At start the worker compares
//! the newest published checkpoint with the log ([`check`]); a log that is
//! shorter (behind) or has another root at that size (forked) stops the
//! worker until an operator accepts the contradiction
//! (`chartbridge log accept-rollback`, recorded in `log_rollbacks` and the
//! audit trail).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::ServiceError;
use crate::prove::checkpoint::Checkpoint;
use crate::prove::merkle::Hash;
use crate::store::{Store, StoredCheckpoint};

/// Suffix of a published checkpoint's file name.
const SUFFIX: &str = ".checkpoint";

/// A checkpoint read back from the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub size: u64,
    pub root: Hash,
    pub timestamp_ms: Option<i64>,
    /// The file, for messages.
    pub file: PathBuf,
}

/// How the local log contradicts a published checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Contradiction {
    /// The log has fewer leaves than the published checkpoint.
    Behind { local_size: u64 },
    /// The log's root at the published size differs.
    Forked { local_size: u64 },
}

impl std::fmt::Display for Contradiction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Behind { local_size } => {
                write!(f, "the proof log has {local_size} leaves, fewer (behind)")
            }
            Self::Forked { local_size } => write!(
                f,
                "the proof log (size {local_size}) has another root at that size (forked)"
            ),
        }
    }
}

fn io(path: &Path, e: std::io::Error) -> ServiceError {
    ServiceError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// The file name of `cp` in the directory.
pub fn file_name(cp: &StoredCheckpoint) -> String {
    format!("{:020}-{:013}{SUFFIX}", cp.size, cp.timestamp_ms.max(0))
}

/// Writes `cp` to `dir` unless it is there already; `true` when written.
pub fn publish(dir: &Path, cp: &StoredCheckpoint) -> Result<bool, ServiceError> {
    let path = dir.join(file_name(cp));
    if path.exists() {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let tmp = dir.join(format!(".{}.tmp", file_name(cp)));
    let mut file = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    file.write_all(cp.note.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(true)
}

/// Publishes the store's latest checkpoint to `dir` if it is not there yet;
/// returns its size when written.
pub async fn publish_latest(store: &Store, dir: &Path) -> Result<Option<u64>, ServiceError> {
    match store.latest_checkpoint().await? {
        Some(cp) if publish(dir, &cp)? => Ok(Some(cp.size)),
        _ => Ok(None),
    }
}

/// Published checkpoint files in `dir`, largest size first (by file name;
/// a missing directory has none).
fn names(dir: &Path) -> Result<Vec<PathBuf>, ServiceError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry.map_err(|e| io(dir, e))?.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(SUFFIX) && !name.starts_with('.') {
            names.push(dir.join(name.as_ref()));
        }
    }
    names.sort_unstable_by(|a, b| b.cmp(a));
    Ok(names)
}

fn read(path: &Path) -> Result<Published, ServiceError> {
    let note = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    let cp = Checkpoint::from_note_unverified(&note).map_err(|e| ServiceError::File {
        path: path.display().to_string(),
        reason: format!("not a checkpoint note: {e}"),
    })?;
    Ok(Published {
        size: cp.size,
        root: cp.root,
        timestamp_ms: cp.timestamp_ms,
        file: path.to_owned(),
    })
}

/// How the log contradicts `p`, if it does.
async fn compare(store: &Store, p: &Published) -> Result<Option<Contradiction>, ServiceError> {
    let local_size = store.log_size().await?;
    if local_size < p.size {
        return Ok(Some(Contradiction::Behind { local_size }));
    }
    if store.log_root(p.size).await? != p.root {
        return Ok(Some(Contradiction::Forked { local_size }));
    }
    Ok(None)
}

/// The newest published checkpoint not accepted by an operator, and how
/// the log contradicts it (`None`: it does not, or nothing is published).
pub async fn check(
    store: &Store,
    dir: &Path,
) -> Result<Option<(Published, Contradiction)>, ServiceError> {
    let accepted = store.accepted_rollbacks().await?;
    for path in names(dir)? {
        let p = read(&path)?;
        if accepted.contains(&(p.size, p.root)) {
            continue;
        }
        return Ok(compare(store, &p).await?.map(|c| (p, c)));
    }
    Ok(None)
}

/// Every published checkpoint the log contradicts and no operator accepted
/// yet, largest first (what `log accept-rollback` accepts).
pub async fn contradictions(
    store: &Store,
    dir: &Path,
) -> Result<Vec<(Published, Contradiction)>, ServiceError> {
    let accepted = store.accepted_rollbacks().await?;
    let mut out = Vec::new();
    for path in names(dir)? {
        let p = read(&path)?;
        if accepted.contains(&(p.size, p.root)) {
            continue;
        }
        if let Some(c) = compare(store, &p).await? {
            out.push((p, c));
        }
    }
    Ok(out)
}
