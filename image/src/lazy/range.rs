//! Where a lazy layer's blob bytes come from: anything that can read a byte range of the
//! blob. A local blob file here; the registry's blob-range request is the other source.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Reads byte ranges of one blob.
pub trait RangeSource: Send + Sync {
    /// Exactly `len` bytes at `offset` (a short blob is an error, `UnexpectedEof`).
    fn read_range(&self, offset: u64, len: u64) -> io::Result<Vec<u8>>;
    /// The blob's size.
    fn size(&self) -> io::Result<u64>;
    /// What the blob is, for messages (a path, a reference).
    fn describe(&self) -> String;

    /// The blob from `offset` to its end as one stream, for a reader that takes it in order
    /// (a layer arriving whole). By default ranges of [`STREAM_STEP`] bytes read one after
    /// another; a registry's blob is one request.
    fn stream_from(&self, offset: u64) -> io::Result<Box<dyn io::Read + Send + '_>> {
        Ok(Box::new(Ranges {
            src: self,
            pos: offset,
            size: self.size()?,
            buf: io::Cursor::new(Vec::new()),
        }))
    }
}

/// The range size of [`RangeSource::stream_from`]'s default.
pub const STREAM_STEP: u64 = 4 << 20;

/// [`RangeSource::stream_from`]'s default: consecutive ranges.
struct Ranges<'a, S: ?Sized> {
    src: &'a S,
    pos: u64,
    size: u64,
    buf: io::Cursor<Vec<u8>>,
}

impl<S: RangeSource + ?Sized> io::Read for Ranges<'_, S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.buf.read(out)?;
        if n > 0 || out.is_empty() || self.pos >= self.size {
            return Ok(n);
        }
        let len = STREAM_STEP.min(self.size - self.pos);
        self.buf = io::Cursor::new(self.src.read_range(self.pos, len)?);
        self.pos += len;
        self.buf.read(out)
    }
}

/// The largest single range read (a chunk's compressed bytes, a TOC).
pub const MAX_RANGE: u64 = 256 << 20;

/// A blob in a local file, with a count of the bytes read (tests and `--json` status).
pub struct FileSource {
    path: PathBuf,
    file: File,
    read: AtomicU64,
    requests: AtomicU64,
}

impl FileSource {
    pub fn open(path: &Path) -> io::Result<FileSource> {
        Ok(FileSource {
            path: path.to_path_buf(),
            file: File::open(path)?,
            read: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        })
    }

    /// Bytes and ranges read so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.read.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
        )
    }
}

impl RangeSource for FileSource {
    fn read_range(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        if len > MAX_RANGE {
            return Err(io::Error::other(format!(
                "a range of {len} bytes (at most {MAX_RANGE})"
            )));
        }
        let mut buf = vec![0u8; len as usize];
        self.file.read_exact_at(&mut buf, offset)?;
        self.read.fetch_add(len, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        Ok(buf)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// A blob in memory (unit tests, the fuzz target).
impl RangeSource for Vec<u8> {
    fn read_range(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start
            .checked_add(usize::try_from(len).map_err(io::Error::other)?)
            .filter(|&e| e <= self.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        Ok(self[start..end].to_vec())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn describe(&self) -> String {
        format!("a blob of {} bytes in memory", self.len())
    }
}
