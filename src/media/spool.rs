//! Content too large to hold in memory: a medium above
//! `kis.binary_upload_threshold` is written, while it downloads, to an
//! unnamed temporary file in `media.spool_dir` and hashed on the way
//! ([`Hasher`]); it is later read back in chunks of [`CHUNK_BYTES`] (the
//! Binary upload, the read-back comparison), so memory per medium stays a
//! few chunks whatever its size.
//!
//! The file is made by `tempfile::tempfile_in`: `O_TMPFILE` on Linux (no
//! name in the directory at any time), owner-only (`0600`), and removed by
//! the kernel when its last handle closes, also when the process is
//! killed. Nothing else is written to disk.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::prove::ContentHashes;

/// Bytes kept in memory from the start of a spooled medium, for sniffing
/// its format (magic numbers, the `infer` crate).
pub const HEAD_BYTES: usize = 8192;

/// Bytes of one read from a spool: a multiple of 3, so each chunk encodes
/// to base64 without padding.
pub const CHUNK_BYTES: usize = 3 * 64 * 1024;

/// Bytes a download collects in memory before one write to the spool.
const WRITE_BUFFER: usize = 256 * 1024;

/// SHA-256 and SHA-1 ([`ContentHashes`]) computed chunk by chunk, and the
/// byte count.
#[derive(Clone, Default)]
pub struct Hasher {
    sha256: Sha256,
    sha1: Sha1,
    len: u64,
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        self.sha1.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> ContentHashes {
        ContentHashes {
            sha256: self.sha256.finalize().into(),
            sha1: self.sha1.finalize().into(),
        }
    }
}

/// Where spool files are made: `media.spool_dir`, else the system's
/// temporary directory.
#[derive(Debug, Clone)]
pub struct SpoolDir(PathBuf);

impl SpoolDir {
    pub fn new(dir: Option<&Path>) -> Self {
        Self(dir.map_or_else(std::env::temp_dir, Path::to_path_buf))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// A medium in an unnamed temporary file (see the module docs). Clones
/// share the file; it is removed when the last clone is dropped.
#[derive(Clone)]
pub struct Spool {
    file: Arc<File>,
    len: u64,
    head: Vec<u8>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("len", &self.len).finish()
    }
}

impl Spool {
    /// Bytes in the spool.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first [`HEAD_BYTES`] bytes (fewer if the medium is shorter).
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// Up to [`CHUNK_BYTES`] bytes from `offset`; empty at the end.
    /// Positional reads: clones may read concurrently.
    pub async fn chunk(&self, offset: u64) -> io::Result<Bytes> {
        let file = self.file.clone();
        let want = CHUNK_BYTES.min(self.len.saturating_sub(offset) as usize);
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0; want];
            file.read_exact_at(&mut buf, offset)?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(io::Error::other)?
    }

    /// The whole medium in memory (`len` bytes): for the steps that need
    /// it there, bounded by `media.in_memory_max_bytes`.
    pub async fn load(&self) -> io::Result<Vec<u8>> {
        let file = self.file.clone();
        let len = usize::try_from(self.len).map_err(io::Error::other)?;
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0; len];
            file.read_exact_at(&mut buf, 0)?;
            Ok(buf)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// A spool holding `bytes`.
    pub async fn of(dir: &SpoolDir, bytes: &[u8]) -> io::Result<Self> {
        let mut w = SpoolWriter::create(dir).await?;
        for chunk in bytes.chunks(WRITE_BUFFER) {
            w.write(chunk).await?;
        }
        w.finish().await
    }
}

/// Writes a [`Spool`] in order, buffering [`WRITE_BUFFER`] bytes per
/// write.
pub struct SpoolWriter {
    file: Arc<File>,
    written: u64,
    buffer: Vec<u8>,
    head: Vec<u8>,
}

impl SpoolWriter {
    pub async fn create(dir: &SpoolDir) -> io::Result<Self> {
        let dir = dir.path().to_path_buf();
        let file = tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir))
            .await
            .map_err(io::Error::other)??;
        Ok(Self {
            file: Arc::new(file),
            written: 0,
            buffer: Vec::with_capacity(WRITE_BUFFER),
            head: Vec::new(),
        })
    }

    /// Bytes written so far (buffered included).
    pub fn len(&self) -> u64 {
        self.written + self.buffer.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
        }
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= WRITE_BUFFER {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let buffer = std::mem::replace(&mut self.buffer, Vec::with_capacity(WRITE_BUFFER));
        let (file, offset) = (self.file.clone(), self.written);
        let n = buffer.len() as u64;
        tokio::task::spawn_blocking(move || file.write_all_at(&buffer, offset))
            .await
            .map_err(io::Error::other)??;
        self.written += n;
        Ok(())
    }

    pub async fn finish(mut self) -> io::Result<Spool> {
        self.flush().await?;
        Ok(Spool {
            file: self.file,
            len: self.written,
            head: self.head,
        })
    }
}

/// Received or archived bytes: in memory, or spooled.
pub enum Content<'m> {
    Memory(Cow<'m, [u8]>),
    Spooled(Spool),
}

impl std::fmt::Debug for Content<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory(c) => f.debug_struct("Memory").field("len", &c.len()).finish(),
            Self::Spooled(s) => s.fmt(f),
        }
    }
}

impl<'m> Content<'m> {
    pub fn len(&self) -> u64 {
        match self {
            Self::Memory(c) => c.len() as u64,
            Self::Spooled(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first [`HEAD_BYTES`] bytes, for sniffing.
    pub fn head(&self) -> &[u8] {
        match self {
            Self::Memory(c) => &c[..c.len().min(HEAD_BYTES)],
            Self::Spooled(s) => s.head(),
        }
    }

    /// The bytes when they are in memory.
    pub fn in_memory(&self) -> Option<&[u8]> {
        match self {
            Self::Memory(c) => Some(c),
            Self::Spooled(_) => None,
        }
    }

    /// The spool when the bytes are spooled.
    pub fn spool(&self) -> Option<&Spool> {
        match self {
            Self::Memory(_) => None,
            Self::Spooled(s) => Some(s),
        }
    }

    /// The bytes in memory (a spool is read whole).
    pub async fn into_memory(self) -> io::Result<Cow<'m, [u8]>> {
        match self {
            Self::Memory(c) => Ok(c),
            Self::Spooled(s) => s.load().await.map(Cow::Owned),
        }
    }

    /// Spooled when longer than `threshold` bytes, else as it is.
    pub async fn spooled_above(self, threshold: u64, dir: &SpoolDir) -> io::Result<Self> {
        match self {
            Self::Memory(c) if c.len() as u64 > threshold => {
                Ok(Self::Spooled(Spool::of(dir, &c).await?))
            }
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spool_reads_back_what_was_written_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = SpoolDir::new(Some(dir.path()));
        let bytes: Vec<u8> = (0..(CHUNK_BYTES * 2 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut w = SpoolWriter::create(&spool_dir).await.unwrap();
        for part in bytes.chunks(1000) {
            w.write(part).await.unwrap();
        }
        let spool = w.finish().await.unwrap();
        // Unnamed: the directory stays empty while the spool exists.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(spool.len(), bytes.len() as u64);
        assert_eq!(spool.head(), &bytes[..HEAD_BYTES]);
        let mut read = Vec::new();
        loop {
            let chunk = spool.chunk(read.len() as u64).await.unwrap();
            if chunk.is_empty() {
                break;
            }
            assert!(chunk.len() <= CHUNK_BYTES);
            read.extend_from_slice(&chunk);
        }
        assert_eq!(read, bytes);
        assert_eq!(spool.load().await.unwrap(), bytes);
        let mut h = Hasher::default();
        for part in bytes.chunks(777) {
            h.update(part);
        }
        assert_eq!(h.len(), bytes.len() as u64);
        assert_eq!(h.finish(), ContentHashes::of(&bytes));
        let small = Content::Memory(Cow::Borrowed(&bytes[..10]));
        assert!(
            small
                .spooled_above(10, &spool_dir)
                .await
                .unwrap()
                .in_memory()
                .is_some()
        );
        let large = Content::Memory(Cow::Borrowed(&bytes[..11]));
        let spooled = large.spooled_above(10, &spool_dir).await.unwrap();
        assert_eq!(spooled.spool().map(Spool::len), Some(11));
        assert_eq!(spooled.into_memory().await.unwrap(), &bytes[..11]);
    }
}
