//! Sealed backups of the SQLite database (`chartbridge backup|restore`).
//!
//! A backup is a consistent snapshot (`VACUUM INTO`) sealed with the
//! at-rest keyring in chunks of 1 MiB, so neither the database's metadata
//! nor its sealed columns leave the host readable. File layout:
//!
//! ```text
//! chartbridge-backup/1\n
//! {"backup_id": …, "created_at": …, "key_id": …, "bytes": …}\n
//! (u32 big-endian length, sealed chunk)*
//! ```
//!
//! Chunk `i` is sealed at the place `backup.chunk` of row
//! `{backup_id}/{i}/{1 if last else 0}`: a chunk moved, dropped, swapped
//! with another backup's or a truncated file does not open.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::seal::{Place, SealError, Sealer};

/// First line of a backup file.
pub const MAGIC: &[u8] = b"chartbridge-backup/1\n";
const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} is not a chartbridge backup")]
    NotABackup(String),
    #[error("chunk {index} does not open ({source}): another key, or the file was altered")]
    Chunk { index: u64, source: SealError },
    #[error("the backup ends before its last chunk (truncated)")]
    Truncated,
    #[error("the backup holds {found} bytes, its header says {expected}")]
    Length { found: u64, expected: u64 },
}

/// What a backup says about itself (not secret; bound into every chunk by
/// `backup_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub backup_id: String,
    /// Unix ms.
    pub created_at: i64,
    /// The at-rest key that sealed it.
    pub key_id: String,
    /// Size of the database file.
    pub bytes: u64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn place_row(id: &str, index: u64, last: bool) -> String {
    format!("{id}/{index}/{}", u8::from(last))
}

/// Creates `path` for writing: owner-only, never over an existing file.
pub fn create_new(path: &Path) -> Result<std::fs::File, BackupError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(io(path))
}

/// Fills `buf` from `r` as far as it goes; the count read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Seals the file `plain` into the new file `out`; `progress` gets the
/// bytes done.
pub fn seal_file(
    sealer: &Sealer,
    plain: &Path,
    out: &Path,
    header: &Header,
    progress: impl Fn(u64),
) -> Result<(), BackupError> {
    let mut reader = BufReader::new(std::fs::File::open(plain).map_err(io(plain))?);
    let file = create_new(out)?;
    let mut w = BufWriter::new(file);
    w.write_all(MAGIC).map_err(io(out))?;
    let line = serde_json::to_string(header).expect("a header serialises");
    writeln!(w, "{line}").map_err(io(out))?;
    let mut current = vec![0u8; CHUNK];
    let mut next = vec![0u8; CHUNK];
    let mut n = fill(&mut reader, &mut current).map_err(io(plain))?;
    let (mut index, mut done) = (0u64, 0u64);
    loop {
        let m = if n == CHUNK {
            fill(&mut reader, &mut next).map_err(io(plain))?
        } else {
            0
        };
        let last = m == 0;
        let row = place_row(&header.backup_id, index, last);
        let sealed = sealer.seal_at(&Place::opaque("backup", "chunk", &row), &current[..n]);
        w.write_all(&(sealed.len() as u32).to_be_bytes())
            .and_then(|()| w.write_all(&sealed))
            .map_err(io(out))?;
        done += n as u64;
        progress(done);
        if last {
            break;
        }
        std::mem::swap(&mut current, &mut next);
        n = m;
        index += 1;
    }
    let file = w.into_inner().map_err(|e| io(out)(e.into_error()))?;
    file.sync_all().map_err(io(out))?;
    Ok(())
}

/// Reads a backup's header.
pub fn read_header(r: &mut impl std::io::BufRead, path: &Path) -> Result<Header, BackupError> {
    let mut magic = vec![0u8; MAGIC.len()];
    let not = || BackupError::NotABackup(path.display().to_string());
    r.read_exact(&mut magic).map_err(|_| not())?;
    if magic != MAGIC {
        return Err(not());
    }
    let mut line = String::new();
    r.read_line(&mut line).map_err(io(path))?;
    serde_json::from_str(&line).map_err(|_| not())
}

/// Opens the backup `sealed` into the new file `to`; returns its header.
pub fn open_file(
    sealer: &Sealer,
    sealed: &Path,
    to: &Path,
    progress: impl Fn(u64),
) -> Result<Header, BackupError> {
    let mut r = BufReader::new(std::fs::File::open(sealed).map_err(io(sealed))?);
    let header = read_header(&mut r, sealed)?;
    let mut w = BufWriter::new(create_new(to)?);
    let (mut index, mut done) = (0u64, 0u64);
    let read_chunk = |r: &mut BufReader<std::fs::File>| -> Result<Option<Vec<u8>>, BackupError> {
        let mut len = [0u8; 4];
        match fill(r, &mut len).map_err(io(sealed))? {
            0 => return Ok(None),
            4 => {}
            _ => return Err(BackupError::Truncated),
        }
        let mut chunk = vec![0u8; u32::from_be_bytes(len) as usize];
        if fill(r, &mut chunk).map_err(io(sealed))? != chunk.len() {
            return Err(BackupError::Truncated);
        }
        Ok(Some(chunk))
    };
    let mut current = read_chunk(&mut r)?.ok_or(BackupError::Truncated)?;
    loop {
        let next = read_chunk(&mut r)?;
        let last = next.is_none();
        let row = place_row(&header.backup_id, index, last);
        let plain = sealer
            .open(&Place::opaque("backup", "chunk", &row), &current)
            .map_err(|source| BackupError::Chunk { index, source })?;
        w.write_all(&plain).map_err(io(to))?;
        done += plain.len() as u64;
        progress(done);
        match next {
            Some(chunk) => current = chunk,
            None => break,
        }
        index += 1;
    }
    if done != header.bytes {
        return Err(BackupError::Length {
            found: done,
            expected: header.bytes,
        });
    }
    let file = w.into_inner().map_err(|e| io(to)(e.into_error()))?;
    file.sync_all().map_err(io(to))?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(bytes: u64) -> Header {
        Header {
            backup_id: "b1".into(),
            created_at: 1,
            key_id: "k".into(),
            bytes,
        }
    }

    #[test]
    fn a_sealed_backup_opens_only_whole_and_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::from_key([7; 32]);
        for size in [0usize, 10, CHUNK, CHUNK + 1, 2 * CHUNK + 5] {
            let plain: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let (p, s, o) = (
                dir.path().join(format!("p{size}")),
                dir.path().join(format!("s{size}")),
                dir.path().join(format!("o{size}")),
            );
            std::fs::write(&p, &plain).unwrap();
            seal_file(&sealer, &p, &s, &header(size as u64), |_| {}).unwrap();
            let sealed = std::fs::read(&s).unwrap();
            assert!(
                plain.len() < 16 || !sealed.windows(16).any(|w| w == &plain[..16]),
                "no plaintext"
            );
            assert_eq!(
                open_file(&sealer, &s, &o, |_| {}).unwrap(),
                header(size as u64)
            );
            assert_eq!(std::fs::read(&o).unwrap(), plain, "{size}");
            // Another key does not open it.
            let other = dir.path().join(format!("x{size}"));
            assert!(matches!(
                open_file(&Sealer::from_key([8; 32]), &s, &other, |_| {}),
                Err(BackupError::Chunk { index: 0, .. })
            ));
            // A truncated file (the last chunk dropped) does not open.
            if size > CHUNK {
                let cut = dir.path().join(format!("c{size}"));
                let keep = MAGIC.len()
                    + sealed[MAGIC.len()..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .unwrap()
                    + 1;
                let first = u32::from_be_bytes(sealed[keep..keep + 4].try_into().unwrap());
                std::fs::write(&cut, &sealed[..keep + 4 + first as usize]).unwrap();
                let out = dir.path().join(format!("t{size}"));
                assert!(matches!(
                    open_file(&sealer, &cut, &out, |_| {}),
                    Err(BackupError::Chunk { index: 0, .. })
                ));
            }
        }
        assert!(matches!(
            open_file(
                &sealer,
                &dir.path().join("p10"),
                &dir.path().join("n"),
                |_| {}
            ),
            Err(BackupError::NotABackup(_))
        ));
    }
}
