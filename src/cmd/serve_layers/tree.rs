//! The filesystem `serve-layers` mounts: containers/storage's additional layer store
//! layout (`image::als`), whose top levels are made up on lookup and whose `diff`
//! directories are lazy store layers served by the union core, one read-only [`Union`] per
//! layer, each with the lazy hook a lazy mount has (docs/ARCHITECTURE.md, "podman's
//! additional layer store").
//!
//! Node ids: the made-up nodes (the root, image and layer directories, `info`, `blob`) are
//! numbered from 1 in slot 0; node `n` of the union of slot `s` (1 and up) is
//! `s << SLOT_SHIFT | n`. Inode numbers (`st_ino`) of a union's files are passed as they
//! are: every layer is a directory of the one store filesystem, so they are its real,
//! distinct numbers already.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use layerfs_fuse::{Core, Ctx, DirEntry, Entry, Opened};
use layerfs_image::als::{self, Layer, LayerStore};
use layerfs_image::registry::Reference;
use layerfs_mount::{Config, Error, Result, Stack, Union};

use crate::cmd::lazy::LazyLayers;

/// Bits of a node id that are the node's number in its union.
const SLOT_SHIFT: u32 = 40;
const INNER: u64 = (1 << SLOT_SHIFT) - 1;
/// How long the kernel keeps the made-up entries and attributes.
const TTL: Duration = Duration::from_secs(1);
const ROOT: u64 = 1;

/// What a made-up node is.
enum Kind {
    Root,
    /// `<base64(ref)>`.
    Image(Reference),
    /// `<base64(ref)>/<digest>`.
    Layer(Arc<Layer>),
    /// `.../<digest>/info`.
    Info(Arc<Layer>),
    /// `.../<digest>/blob`.
    Blob(Arc<Layer>),
}

struct Made {
    kind: Kind,
    /// The names below it looked up so far, in the order they were (its listing).
    children: Vec<(Vec<u8>, u64)>,
}

struct MadeNodes {
    nodes: HashMap<u64, Made>,
    next: u64,
}

/// One layer's union.
struct Served {
    union: Union,
    /// Keeps the lazy layer (and its prefetch) alive as long as its union.
    _lazy: Option<Arc<LazyLayers>>,
}

/// The additional layer store as a filesystem core.
pub struct LayerStoreFs {
    als: LayerStore,
    made: RwLock<MadeNodes>,
    /// Slot `s` is `served[s - 1]`.
    served: RwLock<Vec<Arc<Served>>>,
    /// Slot of each layer directory served (two images sharing a layer share its union).
    slots: Mutex<HashMap<PathBuf, u64>>,
    passthrough: AtomicBool,
    /// `use` notices (containers/storage's create of `use`), for the log.
    uses: AtomicU64,
    started: SystemTime,
}

impl LayerStoreFs {
    pub fn new(als: LayerStore) -> LayerStoreFs {
        let mut made = MadeNodes {
            nodes: HashMap::new(),
            next: ROOT + 1,
        };
        made.nodes.insert(
            ROOT,
            Made {
                kind: Kind::Root,
                children: Vec::new(),
            },
        );
        LayerStoreFs {
            als,
            made: RwLock::new(made),
            served: RwLock::new(Vec::new()),
            slots: Mutex::new(HashMap::new()),
            passthrough: AtomicBool::new(false),
            uses: AtomicU64::new(0),
            started: SystemTime::now(),
        }
    }

    /// The union of node id `id` and its number there; `None` for a made-up node.
    fn union_of(&self, id: u64) -> Result<Option<(u64, Arc<Served>, u64)>> {
        let slot = id >> SLOT_SHIFT;
        if slot == 0 {
            return Ok(None);
        }
        let served = read(&self.served);
        let s = served.get(slot as usize - 1).ok_or(Error::StaleInode(id))?;
        Ok(Some((slot, Arc::clone(s), id & INNER)))
    }

    /// The made-up node `id`'s child `name`, made by `make` on first lookup.
    fn child(&self, parent: u64, name: &[u8], make: impl FnOnce() -> Result<Kind>) -> Result<u64> {
        {
            let made = read(&self.made);
            let p = made.nodes.get(&parent).ok_or(Error::StaleInode(parent))?;
            if let Some((_, id)) = p.children.iter().find(|(n, _)| n == name) {
                return Ok(*id);
            }
        }
        // Made outside the lock (it may ask a registry); a race makes it twice, the
        // first one recorded wins.
        let kind = make()?;
        let mut made = write(&self.made);
        if let Some((_, id)) = made.nodes[&parent].children.iter().find(|(n, _)| n == name) {
            return Ok(*id);
        }
        let id = made.next;
        made.next += 1;
        made.nodes.insert(
            id,
            Made {
                kind,
                children: Vec::new(),
            },
        );
        if let Some(p) = made.nodes.get_mut(&parent) {
            p.children.push((name.to_vec(), id));
        }
        Ok(id)
    }

    /// The attributes of made-up node `id`.
    fn made_entry(&self, id: u64) -> Result<Entry> {
        let made = read(&self.made);
        let m = made.nodes.get(&id).ok_or(Error::StaleInode(id))?;
        let (mode, size) = match &m.kind {
            Kind::Root | Kind::Image(_) | Kind::Layer(_) => (libc::S_IFDIR | 0o555, 0),
            Kind::Info(l) => (libc::S_IFREG | 0o444, l.info.len() as u64),
            Kind::Blob(l) => (libc::S_IFREG | 0o444, l.blob_size()),
        };
        let mut st = layerfs_base::sys::zeroed_stat();
        st.st_ino = id;
        st.st_mode = mode;
        st.st_nlink = if mode & libc::S_IFDIR != 0 { 2 } else { 1 };
        st.st_size = size as i64;
        st.st_blksize = 4096;
        st.st_blocks = size.div_ceil(512) as i64;
        let t = self
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        st.st_mtime = t.as_secs() as i64;
        st.st_ctime = st.st_mtime;
        st.st_atime = st.st_mtime;
        Ok(Entry {
            node: id,
            generation: 0,
            attr: st,
            ttl: TTL,
        })
    }

    /// The root of layer `l`'s union (made on first use), as an entry of ours.
    fn diff_entry(&self, l: &Layer) -> Result<Entry> {
        let slot = self.slot_for(l)?;
        let served = Arc::clone(&read(&self.served)[slot as usize - 1]);
        let e = served.union.getattr(ROOT)?;
        Ok(outer(slot, e))
    }

    fn slot_for(&self, l: &Layer) -> Result<u64> {
        let mut slots = lock(&self.slots);
        if let Some(s) = slots.get(&l.dir) {
            return Ok(*s);
        }
        let served = Arc::new(self.open_union(l).map_err(|e| {
            log::warn!("{}: {}", l.dir.display(), crate::cmd::one_line(&e));
            Error::Unavailable("serving a layer")
        })?);
        let mut all = write(&self.served);
        all.push(served);
        let slot = all.len() as u64;
        slots.insert(l.dir.clone(), slot);
        log::info!("serving {} ({}) as slot {slot}", l.diff_id, l.dir.display());
        Ok(slot)
    }

    /// A read-only union of the one layer `l`, with the lazy hook when it is lazy.
    fn open_union(&self, l: &Layer) -> anyhow::Result<Served> {
        let lowers = [l.dir.clone()];
        let mut union = Union::new(Stack::open(&lowers)?, None, Config::default(), false)?;
        let lazy = LazyLayers::of_one(&l.dir, l.source())?;
        if let Some(z) = &lazy {
            union.set_lazy(z.hook());
            // Filled in the background from now on, as a lazy mount's layers are
            // (`LAYERFS_LAZY_PREFETCH=0` turns it off).
            z.start_prefetch();
        }
        union.passthrough_granted(self.passthrough.load(Ordering::Relaxed));
        Ok(Served { union, _lazy: lazy })
    }

    fn layer_of(&self, id: u64) -> Option<Arc<Layer>> {
        match &read(&self.made).nodes.get(&id)?.kind {
            Kind::Layer(l) => Some(Arc::clone(l)),
            _ => None,
        }
    }

    fn made_lookup(&self, parent: u64, name: &[u8]) -> Result<Entry> {
        let kind_of = |id: u64| -> Result<Option<Reference>> {
            match &read(&self.made)
                .nodes
                .get(&id)
                .ok_or(Error::StaleInode(id))?
                .kind
            {
                Kind::Root => Ok(None),
                Kind::Image(r) => Ok(Some(r.clone())),
                Kind::Layer(_) => Err(Error::Bug("not asked")),
                Kind::Info(_) | Kind::Blob(_) => Err(Error::NotDir),
            }
        };
        if let Some(l) = self.layer_of(parent) {
            let id = match name {
                b"diff" => return self.diff_entry(&l),
                b"info" => self.child(parent, name, || Ok(Kind::Info(Arc::clone(&l))))?,
                b"blob" => self.child(parent, name, || Ok(Kind::Blob(Arc::clone(&l))))?,
                // `use` never exists: creating it is a notice (`create` below).
                _ => return Err(Error::NotFound),
            };
            return self.made_entry(id);
        }
        let id = match kind_of(parent)? {
            None => {
                let Some(r) = als::reference_of(name) else {
                    return Err(Error::NotFound);
                };
                self.child(parent, name, || Ok(Kind::Image(r)))?
            }
            Some(r) => {
                let digest = std::str::from_utf8(name).map_err(|_| Error::NotFound)?;
                if layerfs_image::source::Digest::parse(digest).is_err() {
                    return Err(Error::NotFound);
                }
                self.child(parent, name, || match self.als.layer(&r, digest) {
                    Ok(Some(l)) => Ok(Kind::Layer(l)),
                    Ok(None) => Err(Error::NotFound),
                    Err(e) => {
                        log::warn!("{}", crate::cmd::one_line(&e));
                        Err(Error::Unavailable("asking the registry"))
                    }
                })?
            }
        };
        self.made_entry(id)
    }
}

/// Entry `e` of union slot `slot` in our node ids.
fn outer(slot: u64, mut e: Entry) -> Entry {
    debug_assert!(e.node <= INNER, "node ids of a union stay below 2^40");
    e.node |= slot << SLOT_SHIFT;
    e
}

impl Core for LayerStoreFs {
    type Error = Error;

    fn passthrough_granted(&self, on: bool) {
        self.passthrough.store(on, Ordering::Relaxed);
        for s in read(&self.served).iter() {
            s.union.passthrough_granted(on);
        }
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<Entry> {
        match self.union_of(parent)? {
            Some((slot, s, n)) => s.union.lookup(n, name).map(|e| outer(slot, e)),
            None => self.made_lookup(parent, name.as_bytes()),
        }
    }

    fn negative_ttl(&self) -> Option<Duration> {
        // An image pushed later must be found: misses are not cached.
        None
    }

    fn forget(&self, ino: u64, nlookup: u64) {
        // Made-up nodes stay (a few per layer); a union's go as usual.
        if let Ok(Some((_, s, n))) = self.union_of(ino) {
            s.union.forget(n, nlookup);
        }
    }

    fn getattr(&self, ino: u64) -> Result<Entry> {
        match self.union_of(ino)? {
            Some((slot, s, n)) => s.union.getattr(n).map(|e| outer(slot, e)),
            None => self.made_entry(ino),
        }
    }

    fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        match self.union_of(ino)? {
            Some((_, s, n)) => s.union.readlink(n),
            None => Err(Error::Invalid),
        }
    }

    fn open(&self, ino: u64, flags: i32, kill_setid: bool, ctx: Ctx) -> Result<Opened> {
        match self.union_of(ino)? {
            Some((_, s, n)) => s.union.open(n, flags, kill_setid, ctx),
            None => {
                if self.made_entry(ino)?.attr.st_mode & libc::S_IFDIR != 0 {
                    return Err(Error::IsDir);
                }
                if flags & libc::O_ACCMODE != libc::O_RDONLY {
                    return Err(Error::ReadOnly);
                }
                Ok(Opened {
                    fh: 0,
                    keep_cache: true,
                    backing: None,
                    lower_size: None,
                })
            }
        }
    }

    fn files_immutable(&self) -> bool {
        true
    }

    fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        if let Some((_, s, n)) = self.union_of(ino)? {
            return s.union.read(n, fh, offset, size);
        }
        let made = read(&self.made);
        match &made.nodes.get(&ino).ok_or(Error::StaleInode(ino))?.kind {
            Kind::Info(l) => {
                let b = &l.info;
                let start = (offset as usize).min(b.len());
                let end = start.saturating_add(size as usize).min(b.len());
                Ok(b[start..end].to_vec())
            }
            Kind::Blob(l) => {
                let l = Arc::clone(l);
                drop(made);
                l.read_blob(offset, size as u64)
                    .map_err(Error::io("reading the blob from the registry"))
            }
            _ => Err(Error::IsDir),
        }
    }

    fn release(&self, ino: u64, fh: u64) {
        if let Ok(Some((_, s, n))) = self.union_of(ino) {
            s.union.release(n, fh);
        }
    }

    fn lseek(&self, ino: u64, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        match self.union_of(ino)? {
            Some((_, s, n)) => s.union.lseek(n, fh, offset, whence),
            None if whence == libc::SEEK_SET && offset >= 0 => Ok(offset),
            None => Err(Error::Invalid),
        }
    }

    fn readdir(
        &self,
        ino: u64,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> Result<()> {
        if let Some((slot, s, n)) = self.union_of(ino)? {
            return s.union.readdir(n, offset, plus, &mut |mut d| {
                d.entry = d.entry.map(|e| outer(slot, e));
                add(d)
            });
        }
        // The names looked up so far (a layer directory: its three files).
        let names: Vec<Vec<u8>> = match self.layer_of(ino) {
            Some(_) => vec![b"diff".to_vec(), b"info".to_vec(), b"blob".to_vec()],
            None => {
                let made = read(&self.made);
                let m = made.nodes.get(&ino).ok_or(Error::StaleInode(ino))?;
                if matches!(m.kind, Kind::Info(_) | Kind::Blob(_)) {
                    return Err(Error::NotDir);
                }
                m.children.iter().map(|(n, _)| n.clone()).collect()
            }
        };
        for (i, name) in names.iter().enumerate().skip(offset as usize) {
            let e = self.made_lookup(ino, name)?;
            let full = add(DirEntry {
                ino: e.attr.st_ino,
                next_offset: i as u64 + 1,
                mode: e.attr.st_mode,
                name,
                entry: plus.then_some(e),
            });
            if full {
                break;
            }
        }
        Ok(())
    }

    fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>> {
        match self.union_of(ino)? {
            Some((_, s, n)) => s.union.getxattr(n, name),
            None => Err(Error::NoAttr),
        }
    }

    fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        match self.union_of(ino)? {
            Some((_, s, n)) => s.union.listxattr(n),
            None => Ok(Vec::new()),
        }
    }

    fn statfs(&self, ino: u64) -> Result<libc::statvfs> {
        if let Some((_, s, n)) = self.union_of(ino)? {
            return s.union.statfs(n);
        }
        // The store's filesystem, where the layers are.
        let root =
            std::fs::File::open(self.als.store().root()).map_err(Error::io("opening the store"))?;
        layerfs_base::sys::fstatvfs(std::os::fd::AsFd::as_fd(&root)).map_err(Error::io("statfs"))
    }

    fn access(&self, ino: u64, mask: i32, uid: u32, gid: u32) -> Result<()> {
        match self.union_of(ino)? {
            Some((_, s, n)) => s.union.access(n, mask, uid, gid),
            None if mask & libc::W_OK != 0 => Err(Error::ReadOnly),
            None => Ok(()),
        }
    }

    fn mutation_error(&self) -> Error {
        Error::ReadOnly
    }

    fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        ctx: Ctx,
    ) -> Result<(Entry, Opened)> {
        if let Some((_, s, n)) = self.union_of(parent)? {
            return s.union.create(n, name, mode, flags, ctx);
        }
        if name.as_bytes() == b"use" && self.layer_of(parent).is_some() {
            // containers/storage's "I use this layer": ENOENT says the store counts it.
            let n = self.uses.fetch_add(1, Ordering::Relaxed) + 1;
            log::debug!("layer node {parent} used ({n} notices)");
            return Err(Error::NotFound);
        }
        Err(Error::ReadOnly)
    }

    fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        if let Some((_, s, n)) = self.union_of(parent)? {
            return s.union.rmdir(n, name);
        }
        // containers/storage's "I no longer use this layer" is an rmdir of the layer's
        // directory: ENOENT says it was heard. The layer stays served (it is in the store).
        let made = read(&self.made);
        match made.nodes.get(&parent).map(|m| &m.kind) {
            Some(Kind::Image(_)) => {
                log::debug!(
                    "layer {} released",
                    String::from_utf8_lossy(name.as_bytes())
                );
                Err(Error::NotFound)
            }
            _ => Err(Error::ReadOnly),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use layerfs_image::registry::Options;
    use layerfs_image::store::Store;

    /// The error of `r`, which must have failed.
    fn err<T>(r: Result<T>) -> Error {
        match r {
            Ok(_) => panic!("succeeded"),
            Err(e) => e,
        }
    }

    fn fs() -> (tempfile::TempDir, LayerStoreFs) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        (
            dir,
            LayerStoreFs::new(LayerStore::new(store, Options::default())),
        )
    }

    #[test]
    fn made_up_levels_answer_without_a_registry() {
        let (_d, fs) = fs();
        let is_dir = |e: &Entry| e.attr.st_mode & libc::S_IFMT == libc::S_IFDIR;
        assert!(is_dir(&fs.getattr(ROOT).unwrap()));
        // Not base64 of a qualified reference: not here.
        for name in ["not base64!", "YXBwOnYx" /* app:v1, unqualified */] {
            let e = err(fs.lookup(ROOT, OsStr::new(name)));
            assert!(matches!(e, Error::NotFound), "{name}: {e}");
        }
        let image = als::dir_name("127.0.0.1:1/app:v1");
        let img = fs.lookup(ROOT, OsStr::new(&image)).unwrap();
        assert!(is_dir(&img));
        // The same name, the same node.
        assert_eq!(fs.lookup(ROOT, OsStr::new(&image)).unwrap().node, img.node);
        // A name that is no digest is refused before any registry is asked.
        let e = err(fs.lookup(img.node, OsStr::new("not-a-digest")));
        assert!(matches!(e, Error::NotFound), "{e}");
        let mut listed = Vec::new();
        fs.readdir(ROOT, 0, false, &mut |d| {
            listed.push(d.name.to_vec());
            false
        })
        .unwrap();
        assert_eq!(listed, vec![image.as_bytes().to_vec()]);
        // Changes are refused, but for the release notice (an rmdir in an image directory).
        let e = fs.rmdir(ROOT, OsStr::new(&image)).unwrap_err();
        assert!(matches!(e, Error::ReadOnly), "{e}");
        let e = fs.rmdir(img.node, OsStr::new("sha256:00")).unwrap_err();
        assert!(matches!(e, Error::NotFound), "{e}");
        let ctx = Ctx {
            uid: 0,
            gid: 0,
            pid: 0,
            umask: 0o022,
        };
        let e = err(fs.create(img.node, OsStr::new("use"), 0o644, libc::O_WRONLY, ctx));
        assert!(matches!(e, Error::ReadOnly), "{e}");
        // A node id of a union slot never opened is stale, not a made-up node.
        let e = err(fs.getattr(1 << SLOT_SHIFT | 1));
        assert!(matches!(e, Error::StaleInode(_)), "{e}");
    }
}
