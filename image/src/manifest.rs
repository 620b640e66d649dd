//! Layer manifests: each layer summarised once (path, kind, mode, owner, size, xattrs,
//! hard-link group, blake3 of the content, whiteout / opaque / redirect marks), cached as a
//! bincode file and memory-mapped on the next run, so tools answer without reading layer
//! contents again. The format is described in docs/LAYER-TOOLS.md.
//!
//! - Blob layers (tars) are content-addressed: the cache entry is keyed by the blob digest
//!   (or diff_id) and is valid forever.
//! - Directory layers can change: the entry is keyed by the directory's identity (its
//!   path, device and inode), and on every run the layer's metadata is walked again
//!   (no content read); a file whose [`Stamp`] (inode, ctime, size) is unchanged keeps its
//!   cached hash, any other file is hashed again.
//!
//! Files are hashed in parallel (a pool over the files of directory layers; for tar layers,
//! one thread per layer, since a tar is one stream).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use super::source::{Entry, Image, Kind, Layer, Limits, Location, RelPath};
use crate::par;
use crate::sys;

/// Bumped whenever [`Manifest`]'s encoding or meaning changes; part of every cache key.
pub const FORMAT_VERSION: u32 = 2;
/// First bytes of a cache file.
const MAGIC: &[u8; 8] = b"LFSMANI\0";
/// Largest cache file read back (a corrupt length must not allocate without bound).
const MAX_CACHE_BYTES: u64 = 2 << 30;

/// A blake3 content hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub fn hex(&self) -> String {
        blake3::Hash::from(self.0).to_hex().to_string()
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex()[..16])
    }
}

/// One entry of a layer, as the manifest keeps it: the walker's [`Entry`] (read through
/// `Deref`, so `r.path`, `r.kind`, ... are the entry's) and what the manifest adds.
///
/// The `size` of a hard link's record is that of the file it names (the link itself stores
/// none: only [`Kind::File`] records count towards a layer's bytes), and `link` is a
/// symlink's target or a hard link's first name, as in [`Entry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub entry: Entry,
    /// Names of one file share a group number (1, 2, ...) within the layer.
    pub link_group: Option<u32>,
    /// blake3 of the content, for regular files and their hard links.
    pub hash: Option<Hash>,
}

impl std::ops::Deref for Record {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        &self.entry
    }
}

impl std::ops::DerefMut for Record {
    fn deref_mut(&mut self) -> &mut Entry {
        &mut self.entry
    }
}

impl Record {
    fn from_entry(e: &Entry) -> Record {
        Record {
            entry: e.clone(),
            link_group: None,
            hash: None,
        }
    }

    /// True for entries that show in the merged view (not whiteouts).
    pub fn is_visible(&self) -> bool {
        self.kind != Kind::Whiteout
    }
}

/// A layer's manifest: its records sorted by path, one per path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// The layer's id (digest or directory) when it was built.
    pub layer: String,
    pub records: Vec<Record>,
}

impl Manifest {
    /// The record of `path`, by binary search.
    pub fn get(&self, path: &RelPath) -> Option<&Record> {
        self.records
            .binary_search_by(|r| r.path.cmp(path))
            .ok()
            .map(|i| &self.records[i])
    }

    /// Bytes of file content the layer stores.
    pub fn content_bytes(&self) -> u64 {
        self.records
            .iter()
            .filter(|r| r.kind == Kind::File)
            .map(|r| r.size)
            .sum()
    }
}

/// Shared progress reporting (a bar on a terminal, nothing otherwise).
pub struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    /// A bar counting layers, with the bytes hashed so far, drawn only on a terminal.
    pub fn new(layers: usize) -> Progress {
        Progress {
            bar: super::progress::items("layers", layers as u64),
        }
    }

    pub fn hidden() -> Progress {
        Progress {
            bar: indicatif::ProgressBar::hidden(),
        }
    }

    fn bytes(&self, n: u64) {
        // The message is the running total; cheap enough at one update per file.
        let total = BYTES.fetch_add(n as usize, Ordering::Relaxed) + n as usize;
        if self.bar.is_hidden() {
            return;
        }
        self.bar
            .set_message(format!("{} hashed", human(total as u64)));
    }

    pub(crate) fn layer_done(&self) {
        self.bar.inc(1);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

static BYTES: AtomicUsize = AtomicUsize::new(0);

/// `1.5 MiB`-style sizes.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Builds a layer's manifest. `prev` (a cached manifest of the same directory layer) lends
/// the hashes of files whose stamp is unchanged.
pub fn build(
    layer: &Layer,
    limits: Limits,
    prev: Option<&Manifest>,
    progress: &Progress,
) -> Result<Manifest> {
    let mut records = Vec::new();
    match &layer.location {
        Location::Blob(_) => {
            let mut buf = vec![0u8; HASH_BUF];
            layer.walk_with(true, limits, &mut |e, content| {
                let mut r = Record::from_entry(e);
                if let Some(content) = content {
                    let (hash, n) = hash_reader(content, &mut buf)
                        .with_context(|| format!("reading {}", e.path))?;
                    if n != e.size {
                        return Err(anyhow!(
                            "{}: {n} bytes of content, header says {}",
                            e.path,
                            e.size
                        ));
                    }
                    r.hash = Some(hash);
                    progress.bytes(n);
                }
                records.push(r);
                Ok(())
            })?;
        }
        Location::Dir(dir) => {
            layer.walk_with(false, limits, &mut |e, _| {
                records.push(Record::from_entry(e));
                Ok(())
            })?;
            hash_dir_files(dir, &mut records, prev, progress)
                .with_context(|| format!("layer {}", layer.id))?;
        }
    }
    let records = settle(records);
    progress.layer_done();
    Ok(Manifest {
        version: FORMAT_VERSION,
        layer: layer.id.clone(),
        records,
    })
}

/// Bytes read at a time while hashing (one buffer per thread, reused across files).
const HASH_BUF: usize = 128 * 1024;

fn hash_reader(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<(Hash, u64)> {
    let mut h = blake3::Hasher::new();
    let mut n = 0u64;
    loop {
        let k = r.read(buf)?;
        if k == 0 {
            return Ok((Hash(*h.finalize().as_bytes()), n));
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
}

/// Hashes the regular files of a directory layer on a pool of threads, reusing `prev`'s
/// hash where the stamp is unchanged.
fn hash_dir_files(
    dir: &Path,
    records: &mut [Record],
    prev: Option<&Manifest>,
    progress: &Progress,
) -> Result<()> {
    let mut todo = Vec::new();
    for (i, r) in records.iter_mut().enumerate() {
        if r.kind != Kind::File {
            continue;
        }
        let reused = prev
            .and_then(|p| p.get(&r.path))
            .filter(|old| old.kind == Kind::File && old.stamp.is_some() && old.stamp == r.stamp)
            .and_then(|old| old.hash);
        match reused {
            Some(h) => r.hash = Some(h),
            None => todo.push(i),
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    let root = sys::open_host_dir(dir).with_context(|| format!("opening {}", dir.display()))?;
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let recs: &[Record] = records;
    let hashes = par::map_with(
        &todo,
        threads,
        || vec![0u8; HASH_BUF],
        |buf, &i| {
            let r = &recs[i];
            (|| -> Result<Hash> {
                let path = sys::cstr(r.path.as_bytes())?;
                let fd = sys::open_beneath(root.as_fd(), &path, libc::O_RDONLY)?;
                let (h, n) = hash_reader(&mut File::from(fd), buf)?;
                progress.bytes(n);
                Ok(h)
            })()
            .with_context(|| format!("hashing {}", r.path))
        },
    );
    for (&i, res) in todo.iter().zip(hashes) {
        records[i].hash = Some(res?);
    }
    Ok(())
}

/// One record per path, sorted: later duplicates win (as tar extraction does), opaque marks
/// folded into their directory, a whiteout next to an entry of the same name (legal in a
/// tar: the whiteout hides lower layers only) folded into it, hard links grouped.
fn settle(mut records: Vec<Record>) -> Vec<Record> {
    // Stable sort: within one path, walk order is kept.
    records.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out: Vec<Record> = Vec::with_capacity(records.len());
    let mut i = 0;
    while i < records.len() {
        let mut j = i;
        while j < records.len() && records[j].path == records[i].path {
            j += 1;
        }
        let group = &records[i..j];
        let opaque_mark = group.iter().any(|r| r.kind == Kind::OpaqueMark);
        let whiteout = group.iter().any(|r| r.kind == Kind::Whiteout);
        let entry = group
            .iter()
            .rev()
            .find(|r| !matches!(r.kind, Kind::OpaqueMark | Kind::Whiteout));
        let mut rec = match entry {
            Some(e) => e.clone(),
            None if whiteout => group
                .iter()
                .rev()
                .find(|r| r.kind == Kind::Whiteout)
                .expect("present")
                .clone(),
            None => {
                // Only an opaque marker: the directory itself had no entry in the tar.
                let mut d = group[0].clone();
                d.kind = Kind::Dir;
                d.mode = 0o755;
                d
            }
        };
        if rec.kind == Kind::Dir && (opaque_mark || (whiteout && entry.is_some())) {
            rec.opaque = true;
        }
        out.push(rec);
        i = j;
    }
    // Parents a tar did not list (extraction creates them): plain directories.
    let mut implicit: Vec<Record> = Vec::new();
    let mut seen: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    for r in &out {
        for a in r.path.ancestors() {
            if seen.contains(a) {
                continue;
            }
            seen.insert(a.to_vec());
            let a = RelPath::from_normalised(a.to_vec());
            if out.binary_search_by(|x| x.path.cmp(&a)).is_err() {
                let mut d = Record::from_entry(&Entry::new(a, Kind::Dir));
                d.mode = 0o755;
                implicit.push(d);
            }
        }
    }
    if !implicit.is_empty() {
        out.extend(implicit);
        out.sort_by(|a, b| a.path.cmp(&b.path));
    }
    // Hard links: a group per target file; the second names take the target's hash.
    let mut groups: HashMap<Vec<u8>, u32> = HashMap::new();
    for k in 0..out.len() {
        if out[k].kind != Kind::HardLink {
            continue;
        }
        let target = RelPath::from_normalised(out[k].link.clone().unwrap_or_default());
        let next = groups.len() as u32 + 1;
        let g = *groups.entry(target.as_bytes().to_vec()).or_insert(next);
        out[k].link_group = Some(g);
        if let Ok(t) = out.binary_search_by(|r| r.path.cmp(&target)) {
            out[t].link_group = Some(g);
            out[k].hash = out[t].hash;
            out[k].mode = out[t].mode;
            out[k].size = out[t].size;
        }
    }
    out
}

/// Where manifests are cached: `$XDG_CACHE_HOME/layerfs` (`~/.cache/layerfs`), or
/// `/var/cache/layerfs` for root; `None` disables caching.
#[derive(Debug, Clone)]
pub struct Cache {
    pub dir: Option<PathBuf>,
}

impl Cache {
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("LAYERFS_CACHE_DIR").filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(d));
        }
        // Root of a user namespace (a rootless tool reading the store) is still the user.
        if sys::geteuid() == 0 && !sys::in_user_namespace() {
            return Some(PathBuf::from("/var/cache/layerfs"));
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(base.join("layerfs"))
    }

    pub fn new(dir: Option<PathBuf>) -> Cache {
        Cache { dir }
    }

    /// The cache file of a layer: by digest for blobs, by identity for directories.
    fn file(&self, layer: &Layer) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let key = match &layer.location {
            Location::Blob(_) => {
                let d = layer.diff_id.as_ref().or(layer.digest.as_ref())?;
                format!("blob-{}", d.hex())
            }
            Location::Dir(p) => {
                let canon = std::fs::canonicalize(p).ok()?;
                let md = std::fs::metadata(&canon).ok()?;
                let mut h = blake3::Hasher::new();
                h.update(canon.as_os_str().as_encoded_bytes());
                h.update(&std::os::unix::fs::MetadataExt::dev(&md).to_le_bytes());
                h.update(&std::os::unix::fs::MetadataExt::ino(&md).to_le_bytes());
                format!("dir-{}", &h.finalize().to_hex()[..32])
            }
        };
        Some(dir.join(format!("manifests-v{FORMAT_VERSION}")).join(key))
    }

    /// A cached manifest, memory-mapped and decoded; `None` if absent or unreadable.
    pub fn load(&self, layer: &Layer) -> Option<Manifest> {
        let path = self.file(layer)?;
        let f = File::open(&path).ok()?;
        let len = f.metadata().ok()?.len();
        if len > MAX_CACHE_BYTES || len < MAGIC.len() as u64 {
            return None;
        }
        // Cache files are written to a temporary name and renamed into place, never modified
        // after (a file truncated by someone else would fault, which the cache's
        // single-writer design rules out).
        let map = crate::sys::map_immutable(&f).ok()?;
        let body = map.strip_prefix(MAGIC.as_slice())?;
        use bincode::Options;
        let m: Manifest = bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .with_limit(MAX_CACHE_BYTES)
            .deserialize(body)
            .map_err(|e| {
                log::warn!(
                    "ignoring the unreadable manifest cache {}: {e}",
                    path.display()
                )
            })
            .ok()?;
        (m.version == FORMAT_VERSION).then_some(m)
    }

    /// Stores a manifest (write to a temporary file, then rename). Failures are logged and
    /// otherwise ignored: the cache only saves time.
    pub fn store(&self, layer: &Layer, m: &Manifest) {
        let Some(path) = self.file(layer) else { return };
        let res = (|| -> Result<()> {
            let dir = path.parent().expect("a cache file has a directory");
            std::fs::create_dir_all(dir)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            use bincode::Options;
            let body = bincode::DefaultOptions::new()
                .with_fixint_encoding()
                .serialize(m)?;
            tmp.write_all(MAGIC)?;
            tmp.write_all(&body)?;
            tmp.persist(&path)?;
            Ok(())
        })();
        if let Err(e) = res {
            log::warn!(
                "could not cache the manifest of layer {} in {}: {e:#}",
                layer.id,
                path.display()
            );
        }
    }
}

/// The manifests of every layer of `image` (bottom first): from the cache where valid,
/// else built (layers in parallel) and cached.
pub fn manifests(image: &Image, cache: &Cache, progress: &Progress) -> Result<Vec<Manifest>> {
    let threads = std::thread::available_parallelism().map_or(2, |v| v.get());
    par::map_with(
        &image.layers,
        threads,
        || (),
        |_, layer| one(layer, image.limits, cache, progress),
    )
    .into_iter()
    .collect()
}

fn one(layer: &Layer, limits: Limits, cache: &Cache, progress: &Progress) -> Result<Manifest> {
    let cached = cache.load(layer);
    if let (Some(_), Location::Blob(_)) = (&cached, &layer.location) {
        progress.layer_done();
        return Ok(cached.expect("checked above"));
    }
    let m = build(layer, limits, cached.as_ref(), progress)?;
    if cached.as_ref() != Some(&m) {
        cache.store(layer, &m);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Stamp;

    fn rec(path: &str, kind: Kind) -> Record {
        let mut r = Record::from_entry(&Entry::new(
            RelPath::parse(path.as_bytes(), false).unwrap(),
            kind,
        ));
        if kind == Kind::HardLink {
            r.link = Some(b"a/f".to_vec());
        }
        r
    }

    #[test]
    fn cache_round_trips_every_field_under_its_version() {
        let t = tempfile::tempdir().unwrap();
        let layer_dir = t.path().join("layer");
        std::fs::create_dir(&layer_dir).unwrap();
        let stack = format!("lowerdir={}", layer_dir.display());
        let mut image =
            crate::source::open(&stack, &crate::source::OpenOptions::default()).unwrap();
        let layer = image.layers.remove(0);
        let mut r = rec("a/f", Kind::File);
        r.mode = 0o4755;
        (r.uid, r.gid, r.size, r.mtime, r.rdev) = (1, 2, 3, -4, 5);
        r.link = Some(b"t".to_vec());
        r.xattrs = vec![(b"user.x".to_vec(), b"v".to_vec())];
        r.opaque = true;
        r.redirect = Some(RelPath::parse(b"b", false).unwrap());
        r.stamp = Some(Stamp {
            dev: 6,
            ino: 7,
            ctime_sec: 8,
            ctime_nsec: 9,
            size: 3,
        });
        r.link_group = Some(1);
        r.hash = Some(Hash([10; 32]));
        let m = Manifest {
            version: FORMAT_VERSION,
            layer: "test".into(),
            records: vec![r],
        };
        let cache = Cache::new(Some(t.path().join("cache")));
        cache.store(&layer, &m);
        assert_eq!(cache.load(&layer), Some(m));
        let dirs: Vec<_> = std::fs::read_dir(t.path().join("cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(dirs, [format!("manifests-v{FORMAT_VERSION}").as_str()]);
    }

    #[test]
    fn settle_folds_a_tar_into_one_record_per_path() {
        let mut f1 = rec("a/f", Kind::File);
        f1.size = 1;
        let mut f2 = rec("a/f", Kind::File);
        f2.size = 2;
        f2.hash = Some(Hash([7; 32]));
        let out = settle(vec![
            rec("d", Kind::Whiteout),
            rec("d", Kind::Dir),
            f1,
            f2,
            rec("a/g", Kind::HardLink),
            rec("o", Kind::OpaqueMark),
            rec("x/y/z", Kind::Whiteout),
        ]);
        let paths: Vec<String> = out.iter().map(|r| r.path.to_string()).collect();
        assert_eq!(
            paths,
            ["/a", "/a/f", "/a/g", "/d", "/o", "/x", "/x/y", "/x/y/z"]
        );
        let get = |p: &str| out.iter().find(|r| r.path.to_string() == p).unwrap();
        assert!(
            get("/d").opaque && get("/d").kind == Kind::Dir,
            "whiteout + dir = opaque dir"
        );
        assert_eq!(get("/a/f").size, 2, "the later duplicate wins");
        assert_eq!(get("/a/g").hash, get("/a/f").hash);
        assert_eq!(get("/a/g").size, 2);
        assert!(
            get("/a/g").link_group.is_some() && get("/a/g").link_group == get("/a/f").link_group
        );
        assert!(get("/o").opaque && get("/o").kind == Kind::Dir);
        assert_eq!(
            (get("/x/y").kind, get("/x/y").mode),
            (Kind::Dir, 0o755),
            "implicit parent"
        );
    }
}
