//! A lazy layer without a table of contents (a plain gzip, zstd or uncompressed tar blob):
//! it cannot be read at random, so it is fetched whole, in order, as one stream (one GET of
//! a registry's blob, asked again with `Range` from the byte reached when it breaks), by a
//! thread a few pieces ahead of the decompression and unpacking into its store directory;
//! the blob's digest and the tar's diff_id are checked at the end. Its tree is only known
//! once the stream has passed, so a mount shows none of it until then: the union core waits
//! for it before it builds the root's index (`LazyContent::ensure_trees`,
//! docs/SEMANTICS.md "Lazy layers").
//!
//! ```text
//! STORE/lazy/<hex>/record     the lazy record, form `gzip-whole`, `zstd-whole` or
//!                             `tar-whole`, no files: where the blob is
//! STORE/lazy/<hex>/lock       held (flock, exclusive) by the process streaming the layer
//! STORE/lazy/<hex>/progress   JSON: bytes of the blob fetched, regular files unpacked
//! ```
//!
//! One process streams a layer at a time (the lock); another that needs it waits for the
//! lock, then finds the record gone (the layer is whole) or streams it again itself (the
//! first died: what it unpacked is cleared first). Failures: [`super::layer::ATTEMPTS`]
//! attempts in a row without progress; then every waiter gets EIO (logged with the
//! reference and the byte offset) and, in a mount, the stream keeps trying every
//! [`RETRY_PAUSE`] from where it stopped, so the mount serves the layer once the registry
//! answers again.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use log::{error, info, warn};
use serde::{Deserialize, Serialize};

use super::range::{FileSource, RangeSource};
use super::remote::RegistrySource;
use crate::format::lazy::{self as mark, Record, Source};
use crate::source::blob::{decompress, Compression, Verify};
use crate::source::Digest;
use crate::sys;
use crate::unpack;

/// Bytes per piece handed from the fetching thread to the unpacking (and per progress
/// report).
pub const STEP: u64 = 4 << 20;
/// How long a mount's stream waits before trying a failed range again.
pub const RETRY_PAUSE: Duration = Duration::from_secs(2);
/// How long another process streaming the layer may go without progress before a waiter
/// stops waiting (a tool) or answers EIO meanwhile (a mount).
pub const STALE: Duration = Duration::from_secs(30);
pub const LOCK: &str = "lock";
pub const PROGRESS: &str = "progress";

/// The record's form for a blob compressed as `c`.
pub fn form_name(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "gzip-whole",
        Compression::Zstd => "zstd-whole",
        Compression::None => "tar-whole",
    }
}

/// The compression a whole form names; `None` for a seekable form.
pub fn compression_of(form: &str) -> Option<Compression> {
    match form {
        "gzip-whole" => Some(Compression::Gzip),
        "zstd-whole" => Some(Compression::Zstd),
        "tar-whole" => Some(Compression::None),
        _ => None,
    }
}

/// What the streaming process writes beside the record, for `layerfs lazy status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    pub fetched: u64,
    pub size: u64,
    /// Entries of the tar unpacked so far.
    pub entries: u64,
}

/// Makes layer directory `layer_dir` (which must not exist) a lazy layer that arrives
/// whole from `source`: an empty directory and the record, written first.
pub fn make(layer_dir: &Path, source: Source, compression: Compression) -> Result<()> {
    let lazy_dir = mark::dir_for(layer_dir)
        .ok_or_else(|| anyhow!("{}: not a store layer directory", layer_dir.display()))?;
    let record = Record {
        version: mark::VERSION,
        form: form_name(compression).to_string(),
        source,
        toc_digest: String::new(),
        files: Vec::new(),
    };
    std::fs::create_dir_all(&lazy_dir)
        .with_context(|| format!("creating {}", lazy_dir.display()))?;
    let tmp = lazy_dir.join(".record.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&record)?)?;
    std::fs::rename(&tmp, lazy_dir.join(mark::RECORD))?;
    std::fs::create_dir(layer_dir).with_context(|| format!("creating {}", layer_dir.display()))
}

#[derive(Debug, Clone)]
enum State {
    /// Not started, or being streamed.
    Coming,
    /// The last attempt failed (the message); a mount's stream tries again.
    Failed(String),
    Whole,
}

/// The state waiters wait on, shared with the stream's reader.
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// The current failure was logged with a request's EIO (once per failure, not per
    /// request).
    reported: AtomicBool,
}

impl Shared {
    fn set(&self, s: State) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
        self.reported.store(false, Ordering::Release);
        self.changed.notify_all();
    }
}

/// A layer arriving whole.
pub struct WholeLayer {
    layer_dir: PathBuf,
    lazy_dir: PathBuf,
    diff_id: Digest,
    compression: Compression,
    record: Source,
    shared: Arc<Shared>,
    started: AtomicBool,
    fetched: Arc<AtomicU64>,
    /// The blob from elsewhere than its record says (tests).
    given: Option<Arc<dyn RangeSource>>,
}

impl WholeLayer {
    /// The layer of `layer_dir` whose record is `record` (a whole form).
    pub(super) fn new(layer_dir: &Path, record: Record) -> Result<Arc<WholeLayer>> {
        let lazy_dir = mark::dir_for(layer_dir)
            .ok_or_else(|| anyhow!("{}: not a store layer", layer_dir.display()))?;
        let compression = compression_of(&record.form)
            .ok_or_else(|| anyhow!("{}: not a whole form", record.form))?;
        let name = layer_dir.file_name().unwrap_or_default().to_string_lossy();
        let diff_id = Digest::parse(&format!("sha256:{name}"))
            .with_context(|| format!("{}: the layer's name", layer_dir.display()))?;
        Ok(Arc::new(WholeLayer {
            layer_dir: layer_dir.to_path_buf(),
            lazy_dir,
            diff_id,
            compression,
            record: record.source,
            shared: Arc::new(Shared {
                state: Mutex::new(State::Coming),
                changed: Condvar::new(),
                reported: AtomicBool::new(false),
            }),
            started: AtomicBool::new(false),
            fetched: Arc::new(AtomicU64::new(0)),
            given: None,
        }))
    }

    /// The layer `layer_dir` (arriving whole) reading its blob from `source` (tests).
    pub fn open_with(layer_dir: &Path, source: Arc<dyn RangeSource>) -> Result<WholeLayer> {
        let lazy_dir = mark::dir_for(layer_dir)
            .ok_or_else(|| anyhow!("{}: not a store layer", layer_dir.display()))?;
        let record = super::layer::read_record(&lazy_dir)?
            .ok_or_else(|| anyhow!("{}: not a lazy layer", layer_dir.display()))?;
        let l = Self::new(layer_dir, record)?;
        let mut l = Arc::try_unwrap(l).map_err(|_| anyhow!("shared"))?;
        l.given = Some(source);
        Ok(l)
    }

    /// The blob's bytes received so far by this process.
    pub fn fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// Starts the stream in a thread of its own (once); a mount's stream never gives up.
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("lazy-whole".into())
            .spawn(move || {
                let r = me.stream(true);
                me.set(match r {
                    Ok(()) => State::Whole,
                    Err(e) => {
                        error!("lazy layer {}: {e:#}", me.layer_dir.display());
                        State::Failed(format!("{e:#}"))
                    }
                });
            });
        if let Err(e) = spawned {
            self.set(State::Failed(format!("no thread for the stream: {e}")));
        }
    }

    fn set(&self, s: State) {
        self.shared.set(s);
    }

    /// Returns once the layer is whole, or EIO while its stream is failing. Starts the
    /// stream if nothing did.
    pub fn wait(self: &Arc<Self>) -> io::Result<()> {
        self.start();
        let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match &*s {
                State::Whole => return Ok(()),
                State::Failed(why) => {
                    if !self.shared.reported.swap(true, Ordering::AcqRel) {
                        error!(
                            "lazy layer {}: not there yet ({why}); answering EIO while it fails",
                            self.layer_dir.display()
                        );
                    }
                    return Err(io::Error::from_raw_os_error(libc::EIO));
                }
                State::Coming => {
                    s = self
                        .shared
                        .changed
                        .wait(s)
                        .unwrap_or_else(|p| p.into_inner())
                }
            }
        }
    }

    /// Streams the layer in this thread (tools that read a store layer's files); an error
    /// after the bounded retry.
    pub fn fill(&self) -> Result<()> {
        self.stream(false)
    }

    /// Takes the layer's lock, then streams it unless another process made it whole
    /// meanwhile. `persist`: a failed range is tried again every [`RETRY_PAUSE`] (waiters
    /// meanwhile get EIO) instead of failing the stream.
    fn stream(&self, persist: bool) -> Result<()> {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.lazy_dir.join(LOCK));
        let lock = match lock {
            Ok(f) => f,
            // The lazy directory went: another process made the layer whole.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).context("opening the layer's lock"),
        };
        self.take_lock(&lock, persist)?;
        if !self.lazy_dir.join(mark::RECORD).exists() {
            return Ok(());
        }
        // A fresh progress file: what a waiting process measures this one's progress by.
        let progress_path = self.lazy_dir.join(PROGRESS);
        std::fs::write(&progress_path, serde_json::to_vec(&Progress::default())?)?;
        clear_dir(&self.layer_dir)?;
        let source: Arc<dyn RangeSource> = match &self.record {
            _ if self.given.is_some() => Arc::clone(self.given.as_ref().expect("given")),
            Source::File { path } => Arc::new(
                FileSource::open(path).with_context(|| format!("the blob {}", path.display()))?,
            ),
            s @ Source::Registry { .. } => {
                Arc::new(RegistrySource::from_record(s)?.expect("a registry source"))
            }
        };
        let size = source.size()?;
        let digest = match &self.record {
            Source::Registry { digest, .. } => Some(Digest::parse(digest)?),
            Source::File { .. } => None,
        };
        let what = source.describe();
        info!("lazy layer {}: streaming {what}", self.layer_dir.display());
        self.fetched.store(0, Ordering::Relaxed);
        let files = Arc::new(AtomicU64::new(0));
        let mut reader = Fetcher {
            source,
            pos: 0,
            size,
            persist,
            failing: false,
            on_fail: Box::new({
                let shared = Arc::clone(&self.shared);
                move |failed: Option<String>| {
                    shared.set(match failed {
                        Some(m) => State::Failed(m),
                        None => State::Coming,
                    })
                }
            }),
        }
        .start()
        .context("starting the fetching thread")?;
        reader.fetched = Arc::clone(&self.fetched);
        reader.progress = Box::new({
            let files = Arc::clone(&files);
            move |fetched| {
                let p = Progress {
                    fetched,
                    size,
                    entries: files.load(Ordering::Relaxed),
                };
                if let Ok(b) = serde_json::to_vec(&p) {
                    let _ = std::fs::write(&progress_path, b);
                }
            }
        });
        // A registry's compressed blob is kept as it came (`kept.rs`), as a full pull keeps
        // it, so a push of the image sends the same bytes; written beside the stream.
        let store_root = self
            .layer_dir
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| anyhow!("{}: no store around it", self.layer_dir.display()))?
            .to_path_buf();
        let keep = match (&digest, self.compression) {
            (Some(_), Compression::Gzip | Compression::Zstd) => Some(
                tempfile::Builder::new()
                    .prefix(&crate::store::Store::tmp_prefix("whole"))
                    .tempfile_in(store_root.join("tmp"))
                    .context("creating a file for the kept blob")?,
            ),
            _ => None,
        };
        let raw: Box<dyn Read + Send> = match (&digest, &keep) {
            (Some(d), Some(k)) => Box::new(Verify::new(
                Tee {
                    inner: reader,
                    // Unbuffered: the decompressor reads 256 KiB at a time.
                    out: k.reopen()?,
                },
                d.clone(),
                "blob",
            )),
            (Some(d), None) => Box::new(Verify::new(reader, d.clone(), "blob")),
            (None, _) => Box::new(reader),
        };
        let (plain, _) = decompress(raw, Some(self.compression))
            .with_context(|| format!("{what}: reading its start"))?;
        let mut tar = Verify::new(plain, self.diff_id.clone(), "uncompressed layer (diff_id)");
        let root = sys::open_host_dir(&self.layer_dir)?;
        let opts = unpack::Options::for_this_process();
        let stats = unpack::unpack_counting(&mut tar, root.as_fd(), &opts, &files)
            .with_context(|| format!("unpacking {what}"))?;
        io::copy(&mut tar, &mut io::sink()).with_context(|| format!("reading {what}"))?;
        let fetched = self.fetched();
        if fetched != size {
            bail!("{what}: the compressed stream ended at byte {fetched} of {size}");
        }
        // What `verify` and `-o verify` check the layer against, as for any store layer.
        let list =
            crate::verify::hash_list_of(&self.layer_dir).context("hashing the layer's files")?;
        if let Some(d) = crate::verity::HashList::path_for(&self.layer_dir).parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        list.store(&self.layer_dir)
            .with_context(|| format!("writing the hash list of {}", self.layer_dir.display()))?;
        if let (Some(d), Some(k)) = (&digest, keep) {
            let name = self.layer_dir.file_name().unwrap_or_default();
            let (_, path) = k.keep().context("keeping the blob")?;
            let mut staged =
                crate::kept::stage_file(&store_root.join("tmp"), &path, d, Some(self.compression))?;
            staged.seal(self.diff_id.as_str(), &self.layer_dir)?;
            staged.publish(&store_root.join("kept").join(name))?;
        }
        std::fs::remove_dir_all(&self.lazy_dir)
            .with_context(|| format!("removing {}", self.lazy_dir.display()))?;
        info!(
            "lazy layer {}: whole ({} entries, {size} bytes of blob); an ordinary layer now",
            self.layer_dir.display(),
            stats.entries
        );
        drop(lock);
        Ok(())
    }
}

impl WholeLayer {
    /// Takes the layer's lock, waiting while another process streams it. Waiting is
    /// bounded by that process's progress: when its progress file has not changed for
    /// [`STALE`], a tool gives up, and a mount answers EIO meanwhile (and keeps waiting).
    fn take_lock(&self, lock: &std::fs::File, persist: bool) -> Result<()> {
        let mut failing = false;
        loop {
            match sys::flock(lock.as_fd(), libc::LOCK_EX | libc::LOCK_NB) {
                Ok(()) => {
                    if failing {
                        self.set(State::Coming);
                    }
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
                Err(e) => return Err(e).context("locking the lazy layer"),
            }
            let moved = std::fs::metadata(self.lazy_dir.join(PROGRESS))
                .or_else(|_| std::fs::metadata(self.lazy_dir.join(LOCK)))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            let stale = moved.is_none_or(|age| age > STALE);
            if stale && !persist {
                bail!("another process is fetching it and has made no progress for {STALE:?}");
            }
            if stale != failing {
                failing = stale;
                self.set(if stale {
                    State::Failed(format!(
                        "another process is fetching it and has made no progress for {STALE:?}"
                    ))
                } else {
                    State::Coming
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Removes everything inside `dir` (what a stream that died left).
fn clear_dir(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        crate::store::remove_tree(&e?.path())?;
    }
    Ok(())
}

/// How many pieces the fetching thread may get ahead of the unpacking (the network and
/// the decompression and unpacking overlap).
const AHEAD: usize = 2;

/// Fetches the blob in order in a thread of its own, [`AHEAD`] pieces of [`STEP`] bytes
/// ahead of the reader: one stream ([`RangeSource::stream_from`], one request for a
/// registry), opened again from the byte reached when it breaks; [`super::layer::ATTEMPTS`]
/// attempts in a row without progress, then the stream fails (a tool) or is tried again
/// every [`RETRY_PAUSE`] while waiters get EIO (a mount).
struct Fetcher {
    source: Arc<dyn RangeSource>,
    pos: u64,
    size: u64,
    persist: bool,
    /// The stream is failing (waiters were told).
    failing: bool,
    /// Told when the stream starts failing (the message) and when it recovers (`None`).
    on_fail: Box<dyn Fn(Option<String>) + Send>,
}

/// Why [`Fetcher::pump`] stopped.
enum Stop {
    /// The reader is gone (it met a bad blob): nothing more to do.
    Reader,
    Failed(io::Error),
}

type Piece = io::Result<Vec<u8>>;

impl Fetcher {
    /// Starts the thread; the reader gets the pieces in order, then the channel closes.
    fn start(self) -> io::Result<Ranges> {
        let (tx, rx) = std::sync::mpsc::sync_channel(AHEAD);
        std::thread::Builder::new()
            .name("lazy-whole-fetch".into())
            .spawn(move || self.run(&tx))?;
        Ok(Ranges {
            rx,
            buf: Vec::new(),
            at: 0,
            fetched: Arc::new(AtomicU64::new(0)),
            progress: Box::new(|_| {}),
        })
    }

    fn run(mut self, tx: &std::sync::mpsc::SyncSender<Piece>) {
        let mut stalls = 0;
        while self.pos < self.size {
            let before = self.pos;
            let e = match self.pump(tx) {
                Ok(()) => continue,
                Err(Stop::Reader) => return,
                Err(Stop::Failed(e)) => e,
            };
            stalls = if self.pos > before { 1 } else { stalls + 1 };
            let msg = format!("{} from byte {}: {e}", self.source.describe(), self.pos);
            if stalls < super::layer::ATTEMPTS {
                warn!("{msg} (attempt {stalls} of {})", super::layer::ATTEMPTS);
                std::thread::sleep(Duration::from_millis(50 << stalls));
                continue;
            }
            if !self.persist {
                let _ = tx.send(Err(io::Error::new(e.kind(), msg)));
                return;
            }
            if !self.failing {
                error!("{msg}; trying again every {RETRY_PAUSE:?}");
                (self.on_fail)(Some(msg));
                self.failing = true;
            }
            std::thread::sleep(RETRY_PAUSE);
        }
    }

    /// Reads the blob from `pos` on through one stream, sending it in pieces.
    fn pump(&mut self, tx: &std::sync::mpsc::SyncSender<Piece>) -> Result<(), Stop> {
        let source = Arc::clone(&self.source);
        let mut r = source.stream_from(self.pos).map_err(Stop::Failed)?;
        while self.pos < self.size {
            let want = STEP.min(self.size - self.pos) as usize;
            let mut buf = vec![0u8; want];
            let mut got = 0;
            let broke = loop {
                if got == want {
                    break None;
                }
                match r.read(&mut buf[got..]) {
                    Ok(0) => {
                        break Some(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the blob ended before its {} bytes", self.size),
                        ))
                    }
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Some(e),
                }
            };
            if got > 0 {
                buf.truncate(got);
                self.pos += got as u64;
                if self.failing {
                    info!("{}: answering again", self.source.describe());
                    (self.on_fail)(None);
                    self.failing = false;
                }
                tx.send(Ok(buf)).map_err(|_| Stop::Reader)?;
            }
            if let Some(e) = broke {
                return Err(Stop::Failed(e));
            }
        }
        Ok(())
    }
}

/// The blob's bytes in order, as the fetching thread delivers them.
struct Ranges {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    /// The last range, and how much of it was read.
    buf: Vec<u8>,
    at: usize,
    fetched: Arc<AtomicU64>,
    progress: Box<dyn Fn(u64) + Send>,
}

impl Read for Ranges {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Reads are asked for by the decompressor's buffer (256 KiB); one range request
        // serves [`STEP`] bytes, kept here until consumed.
        if self.at == self.buf.len() {
            match self.rx.recv() {
                // The channel closed: every range was delivered.
                Err(_) => return Ok(0),
                Ok(r) => self.buf = r?,
            }
            self.at = 0;
            let n = self.buf.len() as u64;
            let total = self.fetched.fetch_add(n, Ordering::Relaxed) + n;
            (self.progress)(total);
        }
        let n = buf.len().min(self.buf.len() - self.at);
        buf[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Passes the blob's bytes through, writing them to `out` too (the kept copy).
struct Tee<R, W: io::Write> {
    inner: R,
    out: W,
}

impl<R: Read, W: io::Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}
