//! The merged view of one directory, built once from every layer that contributes to it.
//!
//! A lookup on a deep stack must not cost a syscall per layer: the first lookup (or readdir)
//! of a directory reads each contributing layer's directory once and records, for every
//! visible name, which layer wins and which lower directories merge under it. Later lookups
//! in that directory are a hash probe, and a child directory knows its own contributing
//! layers from this index without probing the others.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::format::{self, Class, DirMarks, Found, Redirect};
use crate::par;
use crate::stack::LayerIdx;
use crate::sys::{self, Stat};

/// File type of an entry, as far as the union cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl Kind {
    /// From `st_mode`.
    pub fn from_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            _ => Kind::File,
        }
    }

    pub(crate) fn from_dtype(d: u8) -> Option<Kind> {
        Some(match d {
            libc::DT_DIR => Kind::Dir,
            libc::DT_REG => Kind::File,
            libc::DT_LNK => Kind::Symlink,
            libc::DT_FIFO => Kind::Fifo,
            libc::DT_SOCK => Kind::Socket,
            libc::DT_CHR => Kind::CharDev,
            libc::DT_BLK => Kind::BlockDev,
            _ => return None,
        })
    }

    /// The `S_IFMT` bits for this kind.
    pub fn mode_bits(self) -> u32 {
        match self {
            Kind::Dir => libc::S_IFDIR,
            Kind::File => libc::S_IFREG,
            Kind::Symlink => libc::S_IFLNK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Socket => libc::S_IFSOCK,
            Kind::CharDev => libc::S_IFCHR,
            Kind::BlockDev => libc::S_IFBLK,
        }
    }
}

/// How many directory fds indexes may keep open, and how many they keep. An index keeps
/// its layers' directory fds while the total stays within the budget; past it, a directory
/// is reopened from its layer root for each use (`openat2`, beneath the root, no symlinks).
static FD_BUDGET: AtomicUsize = AtomicUsize::new(4096);
static FDS_KEPT: AtomicUsize = AtomicUsize::new(0);

/// Sets how many directory fds indexes may keep open (layerfs uses half its fd limit).
pub fn set_fd_budget(n: usize) {
    FD_BUDGET.store(n, Ordering::Relaxed);
}

/// Directory fds currently kept by indexes.
pub fn fds_kept() -> usize {
    FDS_KEPT.load(Ordering::Relaxed)
}

/// A layer's copy of a directory, opened, about to be indexed.
#[derive(Debug)]
pub struct Candidate {
    pub layer: LayerIdx,
    /// The layer's root directory.
    pub root: Arc<OwnedFd>,
    pub fd: OwnedFd,
    /// Its path in the layer, when not the merged directory's own (reached by a redirect).
    pub path: Option<CString>,
    /// Its marks, when already read.
    pub marks: Option<DirMarks>,
    /// Every layer's root, by [`LayerIdx`] (absolute redirects start there).
    pub roots: Roots,
}

/// Every layer's root directory, by [`LayerIdx`].
pub type Roots = Arc<[Arc<OwnedFd>]>;

impl Candidate {
    /// Every layer's root directory, top first: the candidates of the mount root's index.
    pub fn roots(stack: &crate::stack::Stack) -> io::Result<Vec<Candidate>> {
        let roots: Roots = stack.layers().iter().map(|l| l.root.clone()).collect();
        stack
            .layers()
            .iter()
            .map(|l| {
                Ok(Candidate {
                    layer: l.idx,
                    root: l.root.clone(),
                    fd: sys::open_subdir(l.root.as_fd(), c".")?,
                    path: None,
                    marks: None,
                    roots: roots.clone(),
                })
            })
            .collect()
    }
}

/// A layer's copy of an indexed directory.
#[derive(Debug)]
pub struct Source {
    pub layer: LayerIdx,
    root: Arc<OwnedFd>,
    /// Its path in the layer, when not the index's (reached by a redirect).
    path: Option<CString>,
    /// Kept open within the fd budget; otherwise reopened for each use.
    fd: Option<OwnedFd>,
}

/// One visible name of the merged directory.
#[derive(Debug)]
pub struct Entry {
    pub name: Box<[u8]>,
    /// Index into [`DirIndex::sources`] of the layer that provides this entry.
    pub src: u16,
    pub kind: Kind,
    /// Inode number in the providing layer, from `getdents` (used until `attr` is known).
    pub real_ino: u64,
    /// Directories only: indices into `sources` of every layer whose same-named directory
    /// merges into this one, top first (the first is `src`). Empty for non-directories.
    pub merge: Vec<u16>,
    attr: OnceLock<Stat>,
    xattrs: OnceLock<Arc<Xattrs>>,
}

/// The visible xattrs of an entry, read once (layers are immutable under a read-only mount).
#[derive(Debug, Default)]
pub struct Xattrs {
    pub names: Vec<Box<[u8]>>,
    pub values: Vec<Box<[u8]>>,
}

impl Xattrs {
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.names
            .iter()
            .position(|n| n.as_ref() == name)
            .map(|i| self.values[i].as_ref())
    }
}

/// From this many layers on, a directory's copies are opened and read in parallel.
const PARALLEL_LAYERS: usize = 16;

/// What one layer's copy of a directory says, read without regard to the other layers.
struct Scan {
    /// Hides every lower copy (opaque xattr or `.wh..wh..opq`), when honoured.
    opaque: bool,
    /// Ordinary entries: name, type, inode number.
    entries: Vec<(Box<[u8]>, Kind, u64)>,
    /// Names this layer whites out in the layers below it.
    hides_below: Vec<Box<[u8]>>,
}

/// Reads one layer's copy of a directory and classifies its entries.
fn scan(fd: BorrowedFd<'_>, marks: Option<&DirMarks>, honour_opaque: bool) -> io::Result<Scan> {
    let marks = match marks {
        Some(m) => m.clone(),
        None => format::dir_marks(fd)?,
    };
    let raw = sys::read_dir(fd)?;
    let mut out = Scan {
        opaque: honour_opaque && marks.opaque,
        entries: Vec::with_capacity(raw.len()),
        hides_below: Vec::new(),
    };
    for ent in raw {
        match format::classify(fd, &marks, &ent)? {
            Class::OciOpaque => out.opaque |= honour_opaque,
            Class::OciWhiteout(target) => out.hides_below.push(target.into()),
            Class::Whiteout => out.hides_below.push(ent.name),
            Class::Entry => {
                let kind = match Kind::from_dtype(ent.d_type) {
                    Some(k) if !(marks.nested_whiteouts && k == Kind::File) => k,
                    _ => {
                        let st = sys::lstatat(fd, &sys::cstr(&ent.name)?)?;
                        let nested =
                            format::is_nested_whiteout(fd, &ent.name, &st, marks.nested_whiteouts)?;
                        // A nested overlay's whiteout shows as the device it was made as.
                        if nested {
                            Kind::CharDev
                        } else {
                            Kind::from_mode(st.st_mode)
                        }
                    }
                };
                out.entries.push((ent.name, kind, ent.ino));
            }
        }
    }
    Ok(out)
}

/// The merged view of one directory.
#[derive(Debug)]
pub struct DirIndex {
    /// The directory's path relative to every layer root ("." for the root).
    rel: CString,
    /// Contributing layers, top first, cut after the first opaque one.
    pub sources: Vec<Source>,
    /// Visible entries in a fixed order (top layer's order, then each lower's new names),
    /// so readdir offsets are positions in this vector and stay valid.
    pub entries: Vec<Entry>,
    by_name: HashMap<Box<[u8]>, u32>,
    roots: Roots,
}

impl DirIndex {
    /// Builds the merged view from candidate `sources` (top first). With `honour_opaque`
    /// false (the mount root) opaque marks are ignored, as the kernel ignores them there.
    pub fn build(
        rel: CString,
        candidates: Vec<Candidate>,
        honour_opaque: bool,
    ) -> io::Result<DirIndex> {
        // Each layer's copy is read on its own (in parallel on deep stacks), then merged
        // top-down. Layers below an opaque one are read for nothing; opaque is rare.
        let scans = par::map(&candidates, PARALLEL_LAYERS, |c| {
            scan(c.fd.as_fd(), c.marks.as_ref(), honour_opaque)
        });
        let roots = candidates
            .first()
            .map_or_else(|| Arc::from(Vec::new()), |c| c.roots.clone());
        let mut sources = Vec::with_capacity(candidates.len());
        let mut entries: Vec<Entry> = Vec::new();
        let mut by_name: HashMap<Box<[u8]>, u32> = HashMap::new();
        // Names hidden from the layers still to come, and directories whose merging ended.
        let mut hidden: HashSet<Box<[u8]>> = HashSet::new();
        let mut closed: Vec<bool> = Vec::new();

        for (src, scan) in candidates.into_iter().zip(scans) {
            let scan = scan?;
            let si = sources.len() as u16;
            for (name, kind, ino) in scan.entries {
                if hidden.contains(&name) {
                    continue;
                }
                if let Some(&i) = by_name.get(&name) {
                    // A lower copy of a visible name: it merges only into an upper
                    // directory whose merging is still open; anything else ends it.
                    let i = i as usize;
                    if kind == Kind::Dir && entries[i].kind == Kind::Dir && !closed[i] {
                        entries[i].merge.push(si);
                    } else {
                        closed[i] = true;
                    }
                    continue;
                }
                by_name.insert(name.clone(), entries.len() as u32);
                closed.push(kind != Kind::Dir);
                entries.push(Entry {
                    name,
                    src: si,
                    kind,
                    real_ino: ino,
                    merge: if kind == Kind::Dir {
                        vec![si]
                    } else {
                        Vec::new()
                    },
                    attr: OnceLock::new(),
                    xattrs: OnceLock::new(),
                });
            }
            // Whiteouts act on the layers below this one only (an OCI `.wh.X` never hides a
            // sibling X of its own layer).
            for name in scan.hides_below {
                if let Some(&i) = by_name.get(&name) {
                    closed[i as usize] = true;
                }
                hidden.insert(name);
            }
            let keep = FDS_KEPT.fetch_add(1, Ordering::Relaxed) < FD_BUDGET.load(Ordering::Relaxed);
            if !keep {
                FDS_KEPT.fetch_sub(1, Ordering::Relaxed);
            }
            sources.push(Source {
                layer: src.layer,
                root: src.root,
                path: src.path,
                fd: keep.then_some(src.fd),
            });
            if scan.opaque {
                break;
            }
        }
        Ok(DirIndex {
            rel,
            sources,
            entries,
            by_name,
            roots,
        })
    }

    pub fn find(&self, name: &[u8]) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    pub fn entry(&self, i: u32) -> &Entry {
        &self.entries[i as usize]
    }

    /// The layer that provides entry `i`.
    pub fn layer_of(&self, e: &Entry) -> LayerIdx {
        self.sources[e.src as usize].layer
    }

    /// Runs `f` on source `si`'s directory fd: the kept one, or one reopened beneath the
    /// layer root for this call.
    fn with_source<R>(
        &self,
        si: u16,
        f: impl FnOnce(BorrowedFd<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        let src = &self.sources[si as usize];
        match &src.fd {
            Some(fd) => f(fd.as_fd()),
            None => {
                let fd = sys::open_beneath(
                    src.root.as_fd(),
                    src.path.as_ref().unwrap_or(&self.rel),
                    libc::O_RDONLY | libc::O_DIRECTORY,
                )?;
                f(fd.as_fd())
            }
        }
    }

    /// Runs `f` on the directory fd of the layer providing entry `e`.
    pub fn with_dir_of<R>(
        &self,
        e: &Entry,
        f: impl FnOnce(BorrowedFd<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        self.with_source(e.src, f)
    }

    /// `lstat` of entry `e` in its layer, read once.
    pub fn attr(&self, e: &Entry) -> io::Result<Stat> {
        if let Some(st) = e.attr.get() {
            return Ok(*st);
        }
        let name = sys::cstr(&e.name)?;
        let mut st = self.with_dir_of(e, |d| sys::lstatat(d, &name))?;
        if e.kind == Kind::CharDev && st.st_mode & libc::S_IFMT == libc::S_IFREG {
            // Found to be a nested whiteout when the directory was read.
            st = format::show_nested_whiteout(st);
        }
        Ok(*e.attr.get_or_init(|| st))
    }

    /// Reads the attributes of entries `from..` that are not cached yet, several at a time
    /// when the disk must be read: on a cold cache each `lstat` waits for the disk, and
    /// overlapping them lets the device work on several inode reads at once. On a warm one
    /// (a build's base, read a moment ago) an `lstat` costs a microsecond or two and threads
    /// cost more than they save: 8 spawned per large directory, 219 per walk of a Debian
    /// base, each waiting its turn on a busy CPU before the reply can go. So the first few
    /// are read here, and the rest go to threads only when those read the disk (the
    /// thread's block reads grew), or took long (a lower without a block device: NFS).
    /// Errors are left for `attr` to report; what is not read here, `attr` reads when asked.
    pub fn prefetch_attrs(&self, from: usize) {
        const MIN_BATCH: usize = 48;
        const PROBE: usize = 8;
        // Eight cached `lstat`s take microseconds; a time slice lost to a busy CPU, 4 ms.
        const SLOW: Duration = Duration::from_millis(8);
        let todo: Vec<&Entry> = self
            .entries
            .iter()
            .skip(from)
            .filter(|e| e.attr.get().is_none())
            .collect();
        if todo.len() < MIN_BATCH {
            return;
        }
        let (probe, rest) = todo.split_at(PROBE);
        let (t, blocks) = (Instant::now(), sys::thread_blocks_read());
        for e in probe {
            drop(self.attr(e));
        }
        if sys::thread_blocks_read() != blocks || t.elapsed() >= SLOW {
            par::map(rest, 2, |e| drop(self.attr(e)));
        }
    }

    /// The visible xattrs of entry `e`, read once.
    pub fn xattrs(&self, e: &Entry) -> io::Result<Arc<Xattrs>> {
        if let Some(x) = e.xattrs.get() {
            return Ok(x.clone());
        }
        let x = Arc::new(self.with_dir_of(e, |d| read_xattrs(d, &e.name))?);
        Ok(e.xattrs.get_or_init(|| x).clone())
    }

    /// The path of child `e` relative to the layer roots.
    pub fn child_rel(&self, e: &Entry) -> io::Result<CString> {
        let mut p = Vec::with_capacity(self.rel.as_bytes().len() + 1 + e.name.len());
        if self.rel.as_bytes() != b"." {
            p.extend_from_slice(self.rel.as_bytes());
            p.push(b'/');
        }
        p.extend_from_slice(&e.name);
        sys::cstr(&p)
    }

    /// Source `si`'s path in its layer.
    fn source_path(&self, si: u16) -> &CString {
        self.sources[si as usize].path.as_ref().unwrap_or(&self.rel)
    }

    /// The layer providing entry `e` and the entry's path in it (`a/b`, no leading `/`):
    /// what a layer's hash list names it by (`-o verify`).
    pub fn place_of(&self, e: &Entry) -> (LayerIdx, Vec<u8>) {
        let layer = self.sources[e.src as usize].layer;
        (layer, join(self.source_path(e.src).as_bytes(), &e.name))
    }

    /// The path of child `name` in source `si`'s layer, when it differs from the child
    /// index's own.
    fn child_path(&self, si: u16, name: &[u8]) -> io::Result<Option<CString>> {
        match &self.sources[si as usize].path {
            None => Ok(None),
            Some(p) => Ok(Some(sys::cstr(&join(p.as_bytes(), name))?)),
        }
    }

    /// Opens, for a directory entry `e`, its copy in every merging layer: the candidates
    /// of the child's own index. A copy carrying a redirect (a renamed directory) merges,
    /// in the layers below it, with what the redirect names instead of the same name, as
    /// the kernel follows it (`redirect_dir` lookups).
    pub fn open_child_sources(&self, e: &Entry) -> io::Result<Vec<Candidate>> {
        let name = sys::cstr(&e.name)?;
        let mut out = par::map(&e.merge, PARALLEL_LAYERS, |&si| {
            let src = &self.sources[si as usize];
            let fd = self.with_source(si, |d| sys::open_subdir(d, &name))?;
            Ok(Candidate {
                layer: src.layer,
                root: src.root.clone(),
                marks: Some(format::dir_marks(fd.as_fd())?),
                fd,
                path: self.child_path(si, &e.name)?,
                roots: self.roots.clone(),
            })
        })
        .into_iter()
        .collect::<io::Result<Vec<Candidate>>>()?;
        // The kernel checks opaque first: an opaque copy ends the merge, redirect or not.
        let first = out.iter().position(|c| {
            c.marks
                .as_ref()
                .is_some_and(|m| m.opaque || m.redirect.is_some())
        });
        if let Some(k) = first {
            out.truncate(k + 1);
            let m = out[k].marks.as_ref().filter(|m| !m.opaque);
            if let Some(r) = m.and_then(|m| m.redirect.clone()) {
                let layer = out[k].layer;
                out.extend(self.follow(r, layer)?);
            }
        }
        Ok(out)
    }

    /// The directories a redirect found in layer `from` names in every layer below it,
    /// walked as the kernel walks them (`ovl_lookup_layer`): component by component from
    /// the layer root (absolute) or in this directory's copy in that layer (relative); a
    /// whiteout or a non-directory ends the walk for every layer; an opaque directory ends
    /// it after its layer, unless a directory below it on the path carries an absolute
    /// redirect; a redirect on the way changes the path for the layers below.
    fn follow(&self, r: Redirect, from: LayerIdx) -> io::Result<Vec<Candidate>> {
        let mut path: Vec<Box<[u8]>> = Vec::new();
        let mut absolute = false;
        // A redirect met on component `at` of the walk (of `len`): the components after it
        // stay, what comes before changes. Counted from the end, as the kernel counts
        // (`ovl_lookup_layer`'s `rem`): an earlier redirect in the same layer may have
        // changed the prefix's length.
        let set =
            |r: Redirect, path: &mut Vec<Box<[u8]>>, absolute: &mut bool, at: usize, len: usize| {
                let here = path.len() - (len - at);
                match r {
                    Redirect::Absolute(c) => {
                        let rest = path.split_off(here + 1);
                        *path = c;
                        path.extend(rest);
                        *absolute = true;
                    }
                    Redirect::Relative(n) => path[here] = n,
                }
            };
        match r {
            Redirect::Absolute(c) => {
                path = c;
                absolute = true;
            }
            Redirect::Relative(n) => path.push(n),
        }
        let mut out = Vec::new();
        for li in (from.0 as usize + 1)..self.roots.len() {
            let layer = LayerIdx(li as u16);
            // Where the walk starts in this layer, and that start's path.
            let (start, mut at_path): (OwnedFd, Vec<u8>) = if absolute {
                (sys::open_subdir(self.roots[li].as_fd(), c".")?, Vec::new())
            } else {
                let Some(si) = self.sources.iter().position(|s| s.layer == layer) else {
                    continue;
                };
                let si = si as u16;
                let fd = self.with_source(si, |d| sys::open_subdir(d, c"."))?;
                (fd, self.source_path(si).as_bytes().to_vec())
            };
            let mut cur = start;
            let mut stop = false;
            let mut found = None;
            let comps = path.clone();
            for (i, c) in comps.iter().enumerate() {
                let last = i + 1 == comps.len();
                match format::find_dir(cur.as_fd(), c)? {
                    Found::Missing => break,
                    Found::Stop => {
                        stop = true;
                        break;
                    }
                    Found::Dir(fd, marks) => {
                        at_path = join(&at_path, c);
                        if marks.opaque {
                            stop = true;
                        } else if let Some(r) = marks.redirect.clone() {
                            // An absolute redirect further down the path starts the walk
                            // afresh in the layers below, even if an opaque directory above
                            // it on the path had ended it (the kernel's `ovl_check_redirect`
                            // clears `d->stop`); a relative one does not.
                            if matches!(r, Redirect::Absolute(_)) {
                                stop = false;
                            }
                            set(r, &mut path, &mut absolute, i, comps.len());
                        }
                        if last {
                            found = Some((fd, marks));
                        } else {
                            cur = fd;
                        }
                    }
                }
            }
            if comps.is_empty() {
                // An absolute redirect to the root.
                let fd = sys::open_subdir(self.roots[li].as_fd(), c".")?;
                found = Some((fd, DirMarks::default()));
                at_path = b".".to_vec();
            }
            if let Some((fd, marks)) = found {
                out.push(Candidate {
                    layer,
                    root: self.roots[li].clone(),
                    fd,
                    path: Some(sys::cstr(&at_path)?),
                    marks: Some(marks),
                    roots: self.roots.clone(),
                });
            }
            if stop {
                break;
            }
        }
        Ok(out)
    }
}

/// `dir/name`, where `dir` may be empty or `.` (the root).
fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() || dir == b"." {
        return name.to_vec();
    }
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

impl Drop for DirIndex {
    fn drop(&mut self) {
        let kept = self.sources.iter().filter(|s| s.fd.is_some()).count();
        FDS_KEPT.fetch_sub(kept, Ordering::Relaxed);
    }
}

/// Reads the xattrs of `name` in `dir` (empty name: `dir` itself) but the private ones,
/// under their names in the layer (escaped overlay names stay escaped: a copy-up keeps them
/// so, as the kernel's; the mount shows them unescaped).
pub fn read_xattrs(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Xattrs> {
    let list = match sys::listxattr_at(dir, name) {
        Ok(l) => l,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Xattrs::default()),
        Err(e) => return Err(e),
    };
    let mut x = Xattrs::default();
    for n in sys::split_xattr_list(&list) {
        if format::is_private_xattr(n) {
            continue;
        }
        match sys::getxattr_at(dir, name, &sys::cstr(n)?) {
            Ok(v) => {
                x.names.push(n.into());
                x.values.push(v.into());
            }
            // Removed in between, or not readable by us: leave it out.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENODATA | libc::EPERM | libc::EACCES)
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(x)
}
