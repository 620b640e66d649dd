//! A lazy layer in the store: its tree made at once from a blob's table of contents
//! (regular files as placeholders of their size), and the filling of each file on demand:
//! its chunks fetched by range, checked against their digests, written into the
//! placeholder, the file marked done on disk (`format::lazy`). A background prefetch fills
//! the rest (landmark files first); when no file is pending, the lazy record is removed and
//! the layer is an ordinary store layer.
//!
//! Failures: a fetch is tried [`ATTEMPTS`] times; then the read that needed it gets EIO,
//! logged with the layer, the path and the blob range. A chunk whose bytes do not match
//! its digest is never written into the file. Nothing else of the layer is affected: files
//! already filled keep being served.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use log::{debug, error, info, warn};

use super::range::{FileSource, RangeSource};
use super::read::{decode_chunk, Opened};
use super::remote::RegistrySource;
use super::toc::{self, parse_sha256, Form, Kind};
use super::whole::{self, WholeLayer};
use crate::format::lazy::{self as mark, Record, Source};
use crate::sys;
use crate::tarread;
use crate::unpack;

/// How many times a chunk is fetched before the read fails with EIO.
pub const ATTEMPTS: u32 = 3;

fn form_of(name: &str) -> Result<Form> {
    match name {
        "zstd:chunked" => Ok(Form::ZstdChunked),
        "estargz" => Ok(Form::Estargz),
        other => bail!("unknown seekable form {other:.40}"),
    }
}

/// A TOC entry as the one unpacker takes it.
fn tar_entry(e: &toc::Entry) -> Result<tarread::Entry> {
    use tar::EntryType as T;
    let mut header = tar::Header::new_gnu();
    let (kind, link) = match &e.kind {
        Kind::Dir => (T::Directory, None),
        Kind::File => (T::Regular, None),
        Kind::Symlink(t) => (T::Symlink, Some(t.clone())),
        Kind::Hardlink(t) => (T::Link, Some(t.clone())),
        Kind::Char(ma, mi) | Kind::Block(ma, mi) => {
            header.set_device_major(*ma)?;
            header.set_device_minor(*mi)?;
            let k = if matches!(e.kind, Kind::Char(..)) {
                T::Char
            } else {
                T::Block
            };
            (k, None)
        }
        Kind::Fifo => (T::Fifo, None),
    };
    header.set_entry_type(kind);
    Ok(tarread::Entry {
        header,
        kind,
        path: e.path.clone(),
        link,
        size: e.size,
        mode: e.mode,
        uid: u64::from(e.uid),
        gid: u64::from(e.gid),
        mtime: e.mtime,
        mtime_nsec: i64::from(e.mtime_nsec),
        xattrs: e.xattrs.clone(),
    })
}

fn hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes the lazy layer `layer_dir` (`STORE/layers/<hex>`, which must not exist) from the
/// blob's TOC: the tree is built in `STORE/tmp/` and renamed into place after the record of
/// pending files is written, so a layer directory never exists without it while files are
/// placeholders, nor half made.
pub fn materialize(
    opened: &Opened,
    source: Source,
    layer_dir: &Path,
    opts: &unpack::Options,
) -> Result<()> {
    let lazy_dir = mark::dir_for(layer_dir)
        .ok_or_else(|| anyhow!("{}: not a store layer directory", layer_dir.display()))?;
    let record = Record {
        version: mark::VERSION,
        form: opened.form.name().to_string(),
        source,
        toc_digest: opened.toc_digest.clone(),
        files: files_of(&opened.toc),
    };
    let name = layer_dir.file_name().unwrap_or_default().to_string_lossy();
    let tmp_root = lazy_dir
        .parent()
        .and_then(Path::parent)
        .map(|store| store.join("tmp"))
        .ok_or_else(|| anyhow!("{}: no store around it", layer_dir.display()))?;
    std::fs::create_dir_all(&tmp_root)?;
    let building = tmp_root.join(format!("lazy-{name}"));
    if building.exists() {
        crate::store::remove_tree(&building)?;
    }
    std::fs::create_dir(&building).with_context(|| format!("creating {}", building.display()))?;
    let root = sys::open_host_dir(&building)?;
    let entries = opened
        .toc
        .entries
        .iter()
        .map(tar_entry)
        .collect::<Result<Vec<_>>>()?;
    if let Err(e) = unpack::unpack_skeleton(entries, root.as_fd(), opts) {
        let _ = crate::store::remove_tree(&building);
        return Err(e).with_context(|| format!("making the tree of {}", layer_dir.display()));
    }
    std::fs::create_dir_all(&lazy_dir)
        .with_context(|| format!("creating {}", lazy_dir.display()))?;
    let tmp = lazy_dir.join(".record.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&record)?)?;
    std::fs::rename(&tmp, lazy_dir.join(mark::RECORD))?;
    std::fs::write(lazy_dir.join(mark::DONE), b"")?;
    std::fs::rename(&building, layer_dir)
        .with_context(|| format!("moving the lazy layer into {}", layer_dir.display()))?;
    Ok(())
}

/// The regular files of `toc` with content, by their last entry (a later entry of the same
/// name replaces an earlier one), with their hard-link names.
fn files_of(toc: &toc::Toc) -> Vec<mark::File> {
    let mut files: Vec<mark::File> = Vec::new();
    let mut by_path: HashMap<Vec<u8>, usize> = HashMap::new();
    for e in &toc.entries {
        match &e.kind {
            Kind::File if !e.chunks.is_empty() => {
                let f = mark::File {
                    path: String::from_utf8_lossy(&e.path).into_owned(),
                    links: Vec::new(),
                    size: e.size,
                    chunks: e
                        .chunks
                        .iter()
                        .map(|c| mark::Chunk {
                            file_offset: c.file_offset,
                            size: c.size,
                            blob_offset: c.blob_offset,
                            blob_end: c.blob_end,
                            inner_offset: c.inner_offset,
                            digest: c.digest.as_ref().map(hex).unwrap_or_default(),
                        })
                        .collect(),
                    landmark: e.landmark,
                };
                by_path.insert(e.path.clone(), files.len());
                files.push(f);
            }
            Kind::Hardlink(target) => {
                if let Some(&i) = by_path.get(target) {
                    files[i]
                        .links
                        .push(String::from_utf8_lossy(&e.path).into_owned());
                    by_path.insert(e.path.clone(), i);
                }
            }
            _ => {
                by_path.remove(&e.path);
            }
        }
    }
    let live: std::collections::HashSet<usize> = by_path.values().copied().collect();
    files
        .into_iter()
        .enumerate()
        .filter(|(i, _)| live.contains(i))
        .map(|(_, f)| f)
        .collect()
}

/// A lazy layer of either kind: from a table of contents, or arriving whole.
pub enum AnyLazy {
    Toc(Arc<LazyLayer>),
    Whole(Arc<WholeLayer>),
}

/// The lazy layer `layer_dir`, of whichever kind its record says; `None` when the layer is
/// not (or no longer) lazy.
pub fn open_any(layer_dir: &Path) -> Result<Option<AnyLazy>> {
    let Some(lazy_dir) = mark::dir_for(layer_dir) else {
        return Ok(None);
    };
    let Some(record) = read_record(&lazy_dir)? else {
        return Ok(None);
    };
    if whole::compression_of(&record.form).is_some() {
        return Ok(Some(AnyLazy::Whole(WholeLayer::new(layer_dir, record)?)));
    }
    Ok(LazyLayer::open(layer_dir)?.map(AnyLazy::Toc))
}

/// Fills every pending file of `layer_dir` if it is a lazy layer (for tools that read a
/// store layer's files directly: exports, inspect); an error if one cannot be fetched.
pub fn fill_all(layer_dir: &Path) -> Result<()> {
    let l = match open_any(layer_dir)? {
        None => return Ok(()),
        Some(AnyLazy::Whole(w)) => {
            return w
                .fill()
                .with_context(|| format!("lazy layer {}", layer_dir.display()))
        }
        Some(AnyLazy::Toc(l)) => l,
    };
    for i in 0..l.files.len() {
        l.ensure_idx(i).with_context(|| {
            format!(
                "lazy layer {}: fetching {}",
                layer_dir.display(),
                l.files[i].path
            )
        })?;
    }
    Ok(())
}

/// A lazy layer being filled.
pub struct LazyLayer {
    layer_dir: PathBuf,
    lazy_dir: PathBuf,
    root: OwnedFd,
    form: Form,
    source: Arc<dyn RangeSource>,
    files: Vec<mark::File>,
    by_path: HashMap<Vec<u8>, usize>,
    /// Per file: done (the lock also orders two fills of one file).
    state: Vec<Mutex<bool>>,
    remaining: AtomicUsize,
    done_log: Mutex<std::fs::File>,
    prefetching: AtomicBool,
}

impl LazyLayer {
    /// The lazy layer `layer_dir`, with its blob from where its record says; `None` when
    /// the layer is not (or no longer) lazy.
    pub fn open(layer_dir: &Path) -> Result<Option<Arc<LazyLayer>>> {
        Self::open_preferring(layer_dir, None)
    }

    /// The lazy layer `layer_dir` reading its blob over `blob` (a connection with what a
    /// record never keeps: credentials) when its record names that same blob, else from
    /// where its record says (the layer was made from another blob of the same diff_id,
    /// whose chunk offsets `blob`'s bytes would not match); `None` when the layer is not
    /// (or no longer) lazy.
    pub fn open_for_blob(
        layer_dir: &Path,
        blob: &Arc<RegistrySource>,
    ) -> Result<Option<Arc<LazyLayer>>> {
        Self::open_preferring(layer_dir, Some(blob))
    }

    fn open_preferring(
        layer_dir: &Path,
        blob: Option<&Arc<RegistrySource>>,
    ) -> Result<Option<Arc<LazyLayer>>> {
        let Some(lazy_dir) = mark::dir_for(layer_dir) else {
            return Ok(None);
        };
        let Some(record) = read_record(&lazy_dir)? else {
            return Ok(None);
        };
        let same_blob = |b: &&Arc<RegistrySource>| match (&record.source, b.record()) {
            (Source::Registry { digest: ours, .. }, Source::Registry { digest, .. }) => {
                *ours == digest
            }
            _ => false,
        };
        let source: Arc<dyn RangeSource> = match (blob.filter(same_blob), &record.source) {
            (Some(b), _) => Arc::clone(b) as Arc<dyn RangeSource>,
            (None, Source::File { path }) => {
                Arc::new(FileSource::open(path).with_context(|| {
                    format!("the blob of {}: {}", layer_dir.display(), path.display())
                })?)
            }
            (None, Source::Registry { .. }) => Arc::new(
                RegistrySource::from_record(&record.source)
                    .with_context(|| format!("the blob of {}", layer_dir.display()))?
                    .expect("a registry source"),
            ),
        };
        Self::with_source(layer_dir, record, source).map(Some)
    }

    /// The lazy layer `layer_dir` reading its blob from `source` (tests count its bytes).
    pub fn open_with(layer_dir: &Path, source: Arc<dyn RangeSource>) -> Result<Arc<LazyLayer>> {
        let lazy_dir = mark::dir_for(layer_dir)
            .ok_or_else(|| anyhow!("{}: not a store layer", layer_dir.display()))?;
        let record = read_record(&lazy_dir)?
            .ok_or_else(|| anyhow!("{}: not a lazy layer", layer_dir.display()))?;
        Self::with_source(layer_dir, record, source)
    }

    fn with_source(
        layer_dir: &Path,
        record: Record,
        source: Arc<dyn RangeSource>,
    ) -> Result<Arc<LazyLayer>> {
        let lazy_dir = mark::dir_for(layer_dir)
            .ok_or_else(|| anyhow!("{}: not a store layer", layer_dir.display()))?;
        let form = form_of(&record.form)?;
        let n = record.files.len();
        let mut by_path = HashMap::new();
        for (i, f) in record.files.iter().enumerate() {
            for p in std::iter::once(&f.path).chain(&f.links) {
                by_path.insert(p.as_bytes().to_vec(), i);
            }
        }
        let done_path = lazy_dir.join(mark::DONE);
        let done = std::fs::read(&done_path).unwrap_or_default();
        let mut state: Vec<bool> = vec![false; n];
        for c in done.chunks_exact(4) {
            let i = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize;
            if let Some(s) = state.get_mut(i) {
                *s = true;
            }
        }
        let remaining = state.iter().filter(|d| !**d).count();
        let done_log = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&done_path)
            .with_context(|| format!("opening {}", done_path.display()))?;
        let layer = LazyLayer {
            layer_dir: layer_dir.to_path_buf(),
            lazy_dir,
            root: sys::open_host_dir(layer_dir)
                .with_context(|| format!("opening {}", layer_dir.display()))?,
            form,
            source,
            files: record.files,
            by_path,
            state: state.into_iter().map(Mutex::new).collect(),
            remaining: AtomicUsize::new(remaining),
            done_log: Mutex::new(done_log),
            prefetching: AtomicBool::new(false),
        };
        if remaining == 0 {
            layer.complete();
        }
        Ok(Arc::new(layer))
    }

    /// Files still without their content.
    pub fn pending(&self) -> usize {
        self.remaining.load(Ordering::Acquire)
    }

    /// Makes the content of `path` (relative to the layer root) present: at once for a
    /// file that is done or was never pending; else fetched, checked and written in, or
    /// EIO.
    pub fn ensure(&self, path: &[u8]) -> io::Result<()> {
        match self.by_path.get(path) {
            None => Ok(()),
            Some(&i) => self.ensure_idx(i),
        }
    }

    fn ensure_idx(&self, i: usize) -> io::Result<()> {
        let mut done = self.state[i].lock().unwrap_or_else(|p| p.into_inner());
        if *done {
            return Ok(());
        }
        match self.fill(i) {
            Ok(()) => {
                *done = true;
                drop(done);
                if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    self.complete();
                }
                Ok(())
            }
            Err(e) => {
                error!(
                    "lazy layer {}: {}: {e:#}",
                    self.layer_dir.display(),
                    self.files[i].path
                );
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
        }
    }

    /// Fetches, checks and writes every chunk of file `i`, then records it done.
    fn fill(&self, i: usize) -> Result<()> {
        let f = &self.files[i];
        let name = sys::cstr(f.path.as_bytes())?;
        let fd = sys::open_beneath(self.root.as_fd(), &name, libc::O_WRONLY)
            .with_context(|| format!("opening the placeholder {}", f.path))?;
        let st = sys::fstat(fd.as_fd())?;
        if st.st_size as u64 != f.size {
            bail!("placeholder of {} bytes, {} expected", st.st_size, f.size);
        }
        for c in &f.chunks {
            if c.digest.is_empty() {
                continue; // zeros: the hole already reads as zeros
            }
            let bytes = self.fetch(c).with_context(|| {
                format!(
                    "bytes {}..{} of {} (file bytes {}+{})",
                    c.blob_offset,
                    c.blob_end,
                    self.source.describe(),
                    c.file_offset,
                    c.size
                )
            })?;
            sys::pwrite_all(fd.as_fd(), &bytes, c.file_offset)?;
        }
        sys::fsync(fd.as_fd(), true)?;
        // The content arrived; the file's times are the layer's, as if it always had it.
        let (at, mt) = sys::times_of(&st);
        sys::futimens(fd.as_fd(), at, mt)?;
        let mut log = self.done_log.lock().unwrap_or_else(|p| p.into_inner());
        log.write_all(&(i as u32).to_le_bytes())?;
        log.sync_data()?;
        debug!("lazy layer {}: {} filled", self.layer_dir.display(), f.path);
        Ok(())
    }

    /// One chunk, fetched and checked, tried [`ATTEMPTS`] times.
    fn fetch(&self, c: &mark::Chunk) -> Result<Vec<u8>> {
        let chunk = toc::Chunk {
            file_offset: c.file_offset,
            size: c.size,
            blob_offset: c.blob_offset,
            blob_end: c.blob_end,
            inner_offset: c.inner_offset,
            digest: Some(parse_sha256(&format!("sha256:{}", c.digest))?),
            zeros: false,
        };
        let len = chunk
            .blob_end
            .checked_sub(chunk.blob_offset)
            .ok_or_else(|| anyhow!("empty range"))?;
        let mut last = None;
        for attempt in 1..=ATTEMPTS {
            match self
                .source
                .read_range(chunk.blob_offset, len)
                .map_err(anyhow::Error::from)
                .and_then(|raw| decode_chunk(&raw, self.form, &chunk))
            {
                Ok(b) => return Ok(b),
                Err(e) => {
                    warn!("fetch attempt {attempt} of {ATTEMPTS}: {e:#}");
                    last = Some(e);
                    if attempt < ATTEMPTS {
                        // A short pause before trying again (a registry's hiccup).
                        std::thread::sleep(std::time::Duration::from_millis(50 << attempt));
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no attempt")))
    }

    /// Every file is done: the record goes, the layer is an ordinary store layer.
    fn complete(&self) {
        match std::fs::remove_dir_all(&self.lazy_dir) {
            Ok(()) => info!(
                "lazy layer {}: every file fetched; an ordinary layer now",
                self.layer_dir.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => warn!("removing {}: {e}", self.lazy_dir.display()),
        }
    }

    /// Starts the background prefetch (once): landmark files first, then the rest in TOC
    /// order; it stops at the first file it cannot fetch (the read that needs it will try
    /// again and answer EIO itself).
    pub fn start_prefetch(self: &Arc<Self>) {
        if self.prefetching.swap(true, Ordering::AcqRel) || self.pending() == 0 {
            return;
        }
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("lazy-prefetch".into())
            .spawn(move || {
                // Held shared while prefetching: `layerfs lazy status` says "fetching".
                let _lock = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(me.lazy_dir.join(whole::LOCK))
                    .ok()
                    .filter(|f| sys::flock(f.as_fd(), libc::LOCK_SH).is_ok());
                let mut order: Vec<usize> = (0..me.files.len()).collect();
                order.sort_by_key(|&i| !me.files[i].landmark);
                for i in order {
                    if me.ensure_idx(i).is_err() {
                        warn!(
                            "lazy layer {}: prefetch stopped; files are fetched when read",
                            me.layer_dir.display()
                        );
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            warn!(
                "lazy layer {}: no prefetch thread: {e}",
                self.layer_dir.display()
            );
        }
    }
}

/// For a lazy layer: how many of its files have no content yet (`None`: not lazy). Reads
/// the record and the done marks only.
pub fn pending_files(layer_dir: &Path) -> Result<Option<usize>> {
    let Some(lazy_dir) = mark::dir_for(layer_dir) else {
        return Ok(None);
    };
    let Some(record) = read_record(&lazy_dir)? else {
        return Ok(None);
    };
    let done = std::fs::read(lazy_dir.join(mark::DONE)).unwrap_or_default();
    let mut seen = vec![false; record.files.len()];
    for c in done.chunks_exact(4) {
        if let Some(s) = seen.get_mut(u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize) {
            *s = true;
        }
    }
    Ok(Some(seen.iter().filter(|d| !**d).count()))
}

/// For a lazy layer: the size its tar is taken to have (`LayerRecord::size`), from its
/// record: each regular file's content and a block of header (the real tar's size is not
/// known without reading it all). `None`: not lazy.
pub fn estimated_size(layer_dir: &Path) -> Result<Option<u64>> {
    let Some(lazy_dir) = mark::dir_for(layer_dir) else {
        return Ok(None);
    };
    Ok(read_record(&lazy_dir)?.map(|r| {
        if whole::compression_of(&r.form).is_some() {
            // Not known before the stream has passed: the blob's size says something.
            return match r.source {
                Source::Registry { size, .. } => size,
                Source::File { path } => std::fs::metadata(path).map_or(0, |m| m.len()),
            };
        }
        r.files
            .iter()
            .map(|f| f.size.div_ceil(512) * 512 + 512 * (1 + f.links.len() as u64))
            .sum()
    }))
}

pub(crate) fn read_record(lazy_dir: &Path) -> Result<Option<Record>> {
    let path = lazy_dir.join(mark::RECORD);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let record: Record =
        serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?;
    if record.version != mark::VERSION {
        bail!(
            "{}: lazy record version {} (this layerfs knows {})",
            path.display(),
            record.version,
            mark::VERSION
        );
    }
    Ok(Some(record))
}
