//! The union core, FUSE-agnostic, one implementation for both mount kinds as in the kernel:
//! a read-only mount is the union without an upper layer (every change answers EROFS). With
//! an upper, changes are written in kernel overlayfs' on-disk format (whiteouts as character
//! devices 0:0, `*.overlay.opaque`, `*.overlay.redirect`, `*.overlay.origin`), so the kernel
//! can mount the upper we leave.
//!
//! The lowers are merged directory indexes, looked up by path and built once
//! ([`lower::LowerTree`]); the upper is read directly (one `fstatat` per lookup), since it
//! changes. Every node knows where it is ([`inode::Loc`]); a mutation takes the namespace
//! lock exclusively, lookups and listings share it, file data takes none.
//!
//! - `mod.rs`: the state, name resolution;
//! - `copy.rs`: copy-up, and a node giving its name up to its copy;
//! - `fs.rs`: the [`Core`](layerfs_fuse::Core) implementation;
//! - `listing.rs`, `readdir.rs`: a directory's listings and their offsets, what it lists, and
//!   reading them;
//! - `ops.rs`: namespace changes (create, remove, rename, link, attributes);
//! - `inode.rs`, `table.rs`, `handles.rs`: nodes, the inode table, open file handles;
//! - `config.rs`: id mappings and cache times;
//! - `metacopy.rs`: metadata-only copy-ups (`metacopy=on`) and reading their data below;
//! - `overrides.rs`: owners and modes kept in override_stat xattrs (`xattr_permissions=`);
//! - `refresh.rs`: reading changed lowers again now (SIGUSR1);
//! - `nested.rs`: whiteouts of an overlay stacked on the mount.

mod attrs;
mod config;
mod copy;
mod fs;
pub mod handles;
#[cfg(test)]
mod imports;
mod inode;
pub mod journal;
pub mod lazy;
mod listing;
pub mod lower;
mod metacopy;
mod nested;
mod node_id;
mod ops;
mod overrides;
mod privs;
mod readdir;
mod recover;
mod refresh;
pub mod table;

pub use config::Config;
pub use lazy::{Lazy, LazyContent};
pub use refresh::Refresh;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, OnceLock, RwLock};

use dashmap::DashMap;
use layerfs_fuse::Invalidate;

use crate::error::{Error, Result};
use crate::format;
use crate::stack::dirindex::{self, DirIndex, Kind, Xattrs};
use crate::stack::prefetch::Prefetcher;
use crate::stack::{Ino, Stack};
use crate::sys::{self, Stat};
use crate::upper::origin::{Origin, Origins};
use crate::upper::Upper;
use handles::Handles;
use inode::{Loc, Node};
use lower::{join, root_rel, LowerTree, Rel};
use table::{Key, NodeId, Table};

/// An open file.
#[derive(Debug)]
struct FileH {
    node: Arc<Node>,
    fd: RwLock<Arc<OwnedFd>>,
    /// The fd is the upper file's (a read-only fd of a lower file switches to the upper copy
    /// once one exists, so it sees later writes).
    upper: AtomicBool,
    /// Opened by execve (counted in `node.execs` until the handle goes).
    exec: bool,
    /// Offered to the kernel to read the lower file directly (counted in
    /// `node.lower_opens` until the handle goes).
    lower_backed: bool,
}

impl Drop for FileH {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.exec {
            self.node.execs.fetch_sub(1, Relaxed);
        }
        if self.lower_backed {
            self.node.lower_opens.fetch_sub(1, Relaxed);
        }
    }
}

/// What a name resolves to.
#[derive(Debug)]
struct Resolved {
    ino: Ino,
    /// The real `lstat` (not yet presented).
    st: Stat,
    upper: bool,
    lower: Option<Rel>,
}

/// A union mount: the lowers, and the upper layer when it is writable.
pub struct Union {
    stack: Arc<Stack>,
    /// `None`: a read-only mount; every change answers EROFS.
    upper: Option<Upper>,
    cfg: Config,
    /// No fsync of copied-up data or on request (`-o volatile`).
    volatile: bool,
    lowers: Arc<LowerTree>,
    table: Arc<Table<Node>>,
    /// The top layer's root attributes (the merged root's, without an upper).
    root_attr: Stat,
    root_xattrs: OnceLock<Arc<Xattrs>>,
    /// Started on first use, so its threads are born in the daemon, after the fork.
    prefetch: OnceLock<Prefetcher>,
    /// Tells the kernel what changed without its knowing (a copy-up's attributes).
    invalidate: Invalidate,
    files: Handles<Arc<FileH>>,
    /// The namespace lock: mutations exclusive, lookups and listings shared.
    ns: RwLock<()>,
    /// Upper inode -> node id of copied-up files (their number stays the lower one's),
    /// so every name of a hard-linked copy shows the same number.
    upper_inos: DashMap<u64, Ino>,
    /// Supervised mounts: nodes whose file lost its last name while the kernel held them,
    /// linked in the workdir meanwhile (`recover.rs`).
    orphans: DashMap<NodeId, ()>,
    /// Supervised mounts: handle sequence numbers below this are journaled as given.
    handle_mark: AtomicU64,
    /// Reads origin records (of copies made now or by earlier mounts, from any lower
    /// filesystem) back into inode numbers.
    origins: Origins,
    /// The kernel reads lower files of this writable mount directly (passthrough).
    lower_passthrough: AtomicBool,
    /// `-o verify`: lower files are checked against their layer's hash list before any of
    /// their bytes are served or copied up.
    verifier: Option<crate::verifier::Verifier>,
    /// What the journal of an earlier daemon on this connection recorded (`-o supervise`).
    recovered: Option<journal::Recovered>,
    /// Lower layers whose file content is fetched on first use (`lazy.rs`).
    lazy: Option<Lazy>,
}

/// True for a kernel whiteout (character device 0:0).
fn is_whiteout(st: &Stat) -> bool {
    format::is_whiteout_device(st.st_mode, st.st_rdev)
}

fn is_dir(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

impl Union {
    /// A union of `stack` (the lowers), under `upper` when the mount is writable. With an
    /// upper, the stack must have been opened with the upper's device
    /// ([`Stack::open_with_upper`]).
    pub fn new(
        stack: Stack,
        upper: Option<Upper>,
        cfg: Config,
        volatile: bool,
    ) -> std::io::Result<Union> {
        let top = stack
            .layers()
            .first()
            .ok_or_else(|| std::io::Error::other("a mount needs at least one lower layer"))?;
        let root_attr = sys::fstat(top.root.as_fd())?;
        // Keep at most half the fd limit as directory fds; the rest reopen on use.
        if let Ok(limit) = sys::nofile_limit() {
            dirindex::set_fd_budget((limit / 2) as usize);
        }
        if upper.is_some() {
            // Modes arrive with the caller's umask applied; ours must not mask them again.
            sys::umask(0);
        }
        let table = Arc::new(Table::default());
        let root = Node::new(
            NodeId::ROOT,
            Key::Ino(Ino::ROOT),
            Ino::ROOT,
            libc::S_IFDIR,
            Loc {
                parent: None,
                name: (*b"").into(),
                upper: upper.is_some(),
                lower: Some(root_rel()),
                unlinked: false,
            },
        );
        let mut origins = Origins::default();
        if let Some(up) = &upper {
            let _ = root.upper_dir.set(up.fd.clone());
            let upper_fs = stack.upper_fsid().map(|id| (id, up.fd.as_fd()));
            let lower_fs = stack.layers().iter().map(|l| (l.fsid, l.root.as_fd()));
            origins = Origins::new(upper_fs, lower_fs);
        }
        table.insert_root(root);
        let lowers = Arc::new(LowerTree::new(cfg.lowers_max_age));
        Ok(Union {
            stack: Arc::new(stack),
            upper,
            cfg,
            volatile,
            lowers,
            table,
            root_attr,
            root_xattrs: OnceLock::new(),
            prefetch: OnceLock::new(),
            invalidate: Invalidate::default(),
            files: Handles::default(),
            ns: RwLock::new(()),
            upper_inos: DashMap::new(),
            orphans: DashMap::new(),
            handle_mark: AtomicU64::new(0),
            origins,
            lower_passthrough: AtomicBool::new(false),
            verifier: None,
            recovered: None,
            lazy: None,
        })
    }

    /// Checks every lower file against `v` (`-o verify`) before serving its bytes.
    pub fn set_verifier(&mut self, v: crate::verifier::Verifier) {
        self.verifier = Some(v);
    }

    /// With `-o verify`: the lower file `le`, open as `fd` (`st` its attributes), matches
    /// its layer's hash list, or the error that refuses it (EIO, logged with layer and path).
    fn verify_lower(&self, le: &lower::LowerEntry, fd: BorrowedFd<'_>, st: &Stat) -> Result<()> {
        let Some(v) = &self.verifier else {
            return Ok(());
        };
        if v.known_good(st.st_dev, st.st_ino) {
            return Ok(());
        }
        let (layer, path) = le.parent.place_of(le.entry());
        v.check(layer, &path, (st.st_dev, st.st_ino), fd)
    }

    /// True on a mount without an upper layer: nothing can change.
    pub fn read_only(&self) -> bool {
        self.upper.is_none()
    }

    /// Refuses a change on a read-only mount.
    fn writable(&self) -> Result<&Upper> {
        self.upper()
    }

    /// Number of nodes the kernel currently references (plus the root).
    pub fn node_count(&self) -> usize {
        self.table.len()
    }

    /// The node the kernel calls `id` (mapped back to one, on a supervised mount's
    /// restarted daemon, when an earlier daemon gave it: `recover.rs`).
    fn node(&self, id: u64) -> Result<Arc<Node>> {
        match self.table.get(NodeId(id)) {
            Err(Error::StaleInode(_)) if self.recovered.is_some() => self.recover_node(NodeId(id)),
            r => r,
        }
    }

    /// The directory node `id` to make an entry in, and where it is: ENOTDIR for another
    /// kind, ENOENT once it was removed.
    fn live_dir(&self, id: u64) -> Result<(Arc<Node>, Loc)> {
        let dir = self.node(id)?;
        if !dir.is_dir {
            return Err(Error::NotDir);
        }
        let dloc = dir.loc();
        if dloc.unlinked {
            return Err(Error::NotFound);
        }
        Ok((dir, dloc))
    }

    fn shared(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.ns.read().unwrap_or_else(|p| p.into_inner())
    }

    fn exclusive(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.ns.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The upper layer; `Err(ReadOnly)` on a mount without one.
    fn upper(&self) -> Result<&Upper> {
        self.upper.as_ref().ok_or(Error::ReadOnly)
    }

    fn work(&self) -> Result<BorrowedFd<'_>> {
        Ok(self.upper()?.work.fd())
    }

    /// The upper copy of directory `node` (which must have one), opened once.
    fn upper_dir(&self, node: &Node) -> Result<Arc<OwnedFd>> {
        if let Some(fd) = node.upper_dir.get() {
            return Ok(fd.clone());
        }
        let loc = node.loc();
        let parent = loc.parent.as_ref().ok_or(Error::Invalid)?;
        if !loc.upper {
            return Err(Error::Bug("no upper copy of a directory marked upper"));
        }
        let pfd = self.upper_dir(parent)?;
        let fd = sys::open_subdir(
            pfd.as_fd(),
            &sys::cstr(&loc.name).map_err(Error::io("name"))?,
        )
        .map_err(Error::io("open upper directory"))?;
        Ok(node.upper_dir.get_or_init(|| Arc::new(fd)).clone())
    }

    /// The upper copy of directory `node`, copied up (with its parents) if needed.
    fn ensure_upper_dir(&self, node: &Arc<Node>) -> Result<Arc<OwnedFd>> {
        if !node.loc().upper {
            self.copy_up(node, true)?;
        }
        self.upper_dir(node)
    }

    /// Resolves `name` in directory `dir` (at `dloc`): upper first (a whiteout hides), then
    /// the lower directory merged under it.
    fn resolve(&self, dir: &Node, dloc: &Loc, name: &[u8]) -> Result<Option<Resolved>> {
        if format::is_reserved(name) {
            return Ok(None);
        }
        let lower_dir = dloc.lower.as_deref();
        let upper_dir = if dloc.upper {
            Some(self.upper_dir(dir)?)
        } else {
            None
        };
        if let Some(pfd) = &upper_dir {
            let cname = sys::cstr(name).map_err(Error::io("name"))?;
            match sys::lstatat(pfd.as_fd(), &cname) {
                Ok(st) => {
                    let what = self.upper_entry(pfd.as_fd(), name, &st)?;
                    if what == format::UpperEntry::Whiteout {
                        return Ok(None);
                    }
                    let lower = if is_dir(&st) {
                        self.dir_lower(pfd.as_fd(), name, lower_dir)?
                    } else {
                        None
                    };
                    // The number from what is stored (a copied-up nested whiteout is an
                    // empty file, as its origin is), before it is shown as what it means.
                    let ino =
                        self.upper_ino(&st, lower.as_deref(), pfd.as_fd(), name, lower_dir)?;
                    let st = Self::shown_as(what, st);
                    return Ok(Some(Resolved {
                        ino,
                        st,
                        upper: true,
                        lower,
                    }));
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(Error::io("lstat upper")(e)),
            }
        }
        let Some(ld) = lower_dir else {
            return Ok(None);
        };
        let Some(le) = self.lower_named(ld, name)? else {
            return Ok(None);
        };
        if let Some(pfd) = &upper_dir {
            if format::upper_oci_hides(pfd.as_fd(), name).map_err(Error::io("whiteout"))? {
                return Ok(None);
            }
        }
        let st = le.attr().map_err(Error::io("lstat"))?;
        Ok(Some(Resolved {
            ino: le.ino_of(&self.stack, &st),
            st,
            upper: false,
            lower: Some(join(ld, name)),
        }))
    }

    /// The number upper entry `name` of `pfd` shows: a merged directory's lower one's; a
    /// file's copy-up origin's if the origin has one link, else its own (`ovl_getattr`: a
    /// copy of one name of a lower hard link is apart from the others). `lower_dir` (under
    /// `pfd`) serves when origins cannot be opened by handle (no `CAP_DAC_READ_SEARCH`).
    fn upper_ino(
        &self,
        st: &Stat,
        lower: Option<&[u8]>,
        pfd: BorrowedFd<'_>,
        name: &[u8],
        lower_dir: Option<&[u8]>,
    ) -> Result<Ino> {
        let own = self.stack.upper_ino(st.st_ino);
        if is_dir(st) {
            if let Some(rel) = lower {
                let le = self.lowers.entry(&self.stack, rel);
                if let Some(le) = le.map_err(Error::io("lower lookup"))? {
                    return le.ino(&self.stack).map_err(Error::io("lstat"));
                }
            }
            return Ok(own);
        }
        if let Some(i) = self.upper_inos.get(&st.st_ino) {
            return Ok(*i);
        }
        let origin = match sys::getxattr_at(pfd, name, self.upper()?.ns.origin()) {
            Ok(v) => self.origins.read(&v),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA | libc::ENOTSUP)) => None,
            Err(e) => return Err(Error::io("getxattr origin")(e)),
        };
        Ok(match origin {
            Some(Origin::Found(fs, o))
                if o.st_nlink == 1 && o.st_mode & libc::S_IFMT == st.st_mode & libc::S_IFMT =>
            {
                self.stack.fs_ino(fs, o.st_ino)
            }
            Some(Origin::Found(..)) | None => own,
            Some(Origin::Decoded(fs, ino)) => {
                let ino = self.stack.fs_ino(fs, ino);
                self.origin_if_single_link(ino, own, lower_dir, name)?
            }
        })
    }

    /// `ino`, a copy's number decoded from its origin record (link count unknown), unless
    /// the lower file still at the copy's name is that origin with several links: then
    /// `own`. Renamed or linked elsewhere, such a copy shows the origin's number, where the
    /// kernel shows its own (docs/SEMANTICS.md).
    fn origin_if_single_link(
        &self,
        ino: Ino,
        own: Ino,
        lower_dir: Option<&[u8]>,
        name: &[u8],
    ) -> Result<Ino> {
        let Some(ld) = lower_dir.filter(|_| ino != own) else {
            return Ok(ino);
        };
        let Some(le) = self.lower_named(ld, name)? else {
            return Ok(ino);
        };
        let lst = le.attr().map_err(Error::io("lstat"))?;
        let lino = le.ino_of(&self.stack, &lst);
        Ok(if lst.st_nlink > 1 && !is_dir(&lst) && lino == ino {
            own
        } else {
            ino
        })
    }

    /// The lower directory merged under upper directory `name` of `pfd`: the redirect's
    /// target if it has one, else the same name in `lower_dir` unless it is opaque (in any
    /// form) or whited out beside it (OCI `.wh.NAME`: the layer replaced the directory).
    fn dir_lower(
        &self,
        pfd: BorrowedFd<'_>,
        name: &[u8],
        lower_dir: Option<&[u8]>,
    ) -> Result<Option<Rel>> {
        let exists = |rel: &[u8]| -> Result<bool> {
            let d = self.lowers.dir(&self.stack, rel);
            Ok(d.map_err(Error::io("lower lookup"))?.is_some())
        };
        match sys::getxattr_at(pfd, name, self.upper()?.ns.redirect()) {
            Ok(v) => {
                let rel: Rel = match v.strip_prefix(b"/") {
                    Some(b"") => root_rel(),
                    Some(abs) => abs.into(),
                    None => match lower_dir {
                        Some(ld) => join(ld, &v),
                        None => return Ok(None),
                    },
                };
                return Ok(exists(&rel)?.then_some(rel));
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA | libc::ENOTSUP)) => {}
            Err(e) => return Err(Error::io("getxattr redirect")(e)),
        }
        let Some(ld) = lower_dir else {
            return Ok(None);
        };
        let rel = join(ld, name);
        if !exists(&rel)?
            || format::upper_oci_hides(pfd, name).map_err(Error::io("whiteout"))?
            || format::upper_opaque(pfd, name).map_err(Error::io("opaque"))?
        {
            return Ok(None);
        }
        Ok(Some(rel))
    }

    /// The node for `name` in `dir` (counting a kernel reference with `count`) and its
    /// presented attributes.
    fn child(
        &self,
        dir: &Arc<Node>,
        dloc: &Loc,
        name: &[u8],
        count: bool,
    ) -> Result<Option<(Arc<Node>, Stat)>> {
        let c = self.child_at(dir, dloc, name, count)?;
        Ok(c.map(|(node, st, _)| (node, st)))
    }

    /// [`Self::child`], with where the name itself is (a node with several names may act
    /// through another one).
    fn child_at(
        &self,
        dir: &Arc<Node>,
        dloc: &Loc,
        name: &[u8],
        count: bool,
    ) -> Result<Option<(Arc<Node>, Stat, Loc)>> {
        let Some(r) = self.resolve(dir, dloc, name)? else {
            return Ok(None);
        };
        Ok(Some(self.insert_child_as(dir, name, r, count, None)))
    }

    /// The node for entry `i` of the lower index `ix` of directory `dir` (at lower path
    /// `rel`, with no upper copy, so the entry is what the name resolves to).
    fn lower_child(
        &self,
        dir: &Arc<Node>,
        rel: &[u8],
        ix: &DirIndex,
        i: u32,
        count: bool,
    ) -> Result<(Arc<Node>, Stat)> {
        let e = ix.entry(i);
        let st = ix.attr(e).map_err(Error::io("lstat"))?;
        let r = Resolved {
            ino: self.stack.ino(ix.layer_of(e), st.st_ino),
            st,
            upper: false,
            lower: Some(join(rel, &e.name)),
        };
        let (node, st, _) = self.insert_child_as(dir, &e.name, r, count, None);
        Ok((node, st))
    }

    /// Records resolved entry `name` of `dir` in the node table; the node, its presented
    /// attributes and where the name is.
    /// With `id`, as that node id (a restarted daemon's, see `recover.rs`).
    fn insert_child_as(
        &self,
        dir: &Arc<Node>,
        name: &[u8],
        r: Resolved,
        count: bool,
        id: Option<NodeId>,
    ) -> (Arc<Node>, Stat, Loc) {
        let loc = Loc {
            parent: Some(dir.clone()),
            name: name.into(),
            upper: r.upper,
            lower: r.lower,
            unlinked: false,
        };
        let fmt = r.st.st_mode & libc::S_IFMT;
        // Each name of a lower hard link is a node of its own (see `Key::Name`).
        let key = if !r.upper && fmt != libc::S_IFDIR && r.st.st_nlink > 1 {
            Key::Name(r.ino, dir.id, name.into())
        } else {
            Key::Ino(r.ino)
        };
        // A name an earlier daemon gave an id for keeps it, so that what this one does to the
        // name (a rename, say) happens to the node the kernel knows (`recover.rs`).
        let id = id.or_else(|| self.recovered_id(dir.id, name));
        let make = |id| Node::new(id, key.clone(), r.ino, fmt, loc.clone());
        let node = match id {
            Some(id) => self.table.insert_as(id, key.clone(), || make(id)),
            None => self.table.get_or_insert(key.clone(), count, make),
        };
        if node.fmt != r.st.st_mode & libc::S_IFMT {
            // A number reused while the kernel still holds the node: should not happen
            // (removed entries are kept open while referenced); say so if it does.
            log::warn!(
                "node {} changed type to {:o} ({:?})",
                r.ino.0,
                r.st.st_mode & libc::S_IFMT,
                String::from_utf8_lossy(name)
            );
        }
        node.seen_at(loc.clone());
        if self.lowers.may_change() && !loc.upper && !node.loc().is(dir, name) {
            // Lowers changed behind the mount (`timeout=`, a refresh): a file removed there may have
            // left its inode number to a new one, found here; act through this name.
            node.focus(dir, name);
        }
        let st = self.cfg.present(self.overridden(&node, r.st), node.ino());
        (node, st, loc)
    }

    /// Asks for the lower directory `rel` to be indexed in the background (a tree walk is
    /// about to enter it).
    fn prefetch_lower(&self, rel: Rel) {
        if self.lowers.has(&rel) {
            return;
        }
        let (stack, lowers) = (self.stack.clone(), self.lowers.clone());
        self.prefetch
            .get_or_init(Prefetcher::start)
            .hint(Box::new(move || {
                if let Err(e) = lowers.dir(&stack, &rel) {
                    // The real request will hit (and report) the same failure if it matters.
                    log::debug!("prefetch of {:?}: {e}", String::from_utf8_lossy(&rel));
                }
            }));
    }

    /// The xattrs of `node`: read once for what cannot change (lower entries never copied
    /// up, and the root of a read-only mount), else read now.
    fn xattrs_of(&self, node: &Node) -> Result<Arc<Xattrs>> {
        let loc = node.loc();
        if node.detached.get().is_none() && !loc.upper {
            if loc.parent.is_none() {
                if let Some(x) = self.root_xattrs.get() {
                    return Ok(x.clone());
                }
                self.ensure_trees()?;
                let x = Arc::new(self.with_place(node, dirindex::read_xattrs)?);
                return Ok(self.root_xattrs.get_or_init(|| x).clone());
            }
            let le = self.lower_of(&loc)?;
            return le.parent.xattrs(le.entry()).map_err(Error::io("listxattr"));
        }
        Ok(Arc::new(self.with_place(node, dirindex::read_xattrs)?))
    }

    /// The lower entry a node at `loc` shows or was copied from (its `lower`): `Invalid`
    /// without one, `NotFound` once it is gone from its layer.
    fn lower_of(&self, loc: &Loc) -> Result<lower::LowerEntry> {
        let rel = loc.lower.as_ref().ok_or(Error::Invalid)?;
        let le = self.lowers.entry(&self.stack, rel);
        le.map_err(Error::io("lower lookup"))?
            .ok_or(Error::NotFound)
    }

    /// The real `lstat` of `node`.
    fn real_attr(&self, node: &Node) -> Result<Stat> {
        if let Some(fd) = node.detached.get() {
            return sys::fstat(fd.as_fd()).map_err(Error::io("fstat"));
        }
        let loc = node.loc();
        if loc.parent.is_none() && !loc.upper {
            if self.lazy.as_ref().is_some_and(|l| l.whole) {
                // The top layer's root may still be arriving (and is whole once this returns).
                self.ensure_trees()?;
                let top = &self.stack.layers()[0];
                return sys::fstat(top.root.as_fd()).map_err(Error::io("fstat"));
            }
            if self.cfg.lowers_max_age.is_some() {
                // Lowers that change (`timeout=`): a new mtime drops the kernel's listing.
                let top = &self.stack.layers()[0];
                return sys::fstat(top.root.as_fd()).map_err(Error::io("fstat"));
            }
            return Ok(self.root_attr);
        }
        if loc.upper {
            if let Some(fd) = node.upper_dir.get() {
                return sys::fstat(fd.as_fd()).map_err(Error::io("fstat"));
            }
            let parent = loc.parent.as_ref().ok_or(Error::Invalid)?;
            let pfd = self.upper_dir(parent)?;
            let name = sys::cstr(&loc.name).map_err(Error::io("name"))?;
            let st = sys::lstatat(pfd.as_fd(), &name).map_err(Error::io("lstat"))?;
            return self.shown_upper(pfd.as_fd(), &loc.name, st);
        }
        let le = self.lower_of(&loc)?;
        le.attr().map_err(Error::io("lstat"))
    }

    fn attr_of(&self, node: &Node) -> Result<Stat> {
        let st = self.overridden(node, self.real_attr(node)?);
        Ok(self.cfg.present(st, node.ino()))
    }

    /// Runs `f` on the directory holding `node` and its name there: the upper parent if the
    /// node is in the upper, else its lower layer's directory.
    fn with_place<R>(
        &self,
        node: &Node,
        f: impl FnOnce(BorrowedFd<'_>, &[u8]) -> std::io::Result<R>,
    ) -> Result<R> {
        let loc = node.loc();
        match (&loc.parent, loc.upper) {
            (None, true) => f(self.upper()?.fd.as_fd(), b"").map_err(Error::io("root")),
            (None, false) => {
                let top = &self.stack.layers()[0];
                f(top.root.as_fd(), b"").map_err(Error::io("root"))
            }
            (Some(p), true) => {
                let pfd = self.upper_dir(p)?;
                f(pfd.as_fd(), &loc.name).map_err(Error::io("upper"))
            }
            (Some(_), false) => {
                let le = self.lower_of(&loc)?;
                le.parent
                    .with_dir_of(le.entry(), |d| f(d, &le.entry().name))
                    .map_err(Error::io("lower"))
            }
        }
    }

    /// The entry `name` of lower directory `dir`, if both exist.
    fn lower_named(&self, dir: &[u8], name: &[u8]) -> Result<Option<lower::LowerEntry>> {
        let le = self.lowers.child(&self.stack, dir, name);
        le.map_err(Error::io("lower lookup"))
    }

    /// True when a lower entry named `name` would show in `dloc` without an upper entry.
    fn lower_has(&self, dloc: &Loc, name: &[u8]) -> Result<bool> {
        let Some(ld) = &dloc.lower else {
            return Ok(false);
        };
        Ok(self.lower_named(ld, name)?.is_some())
    }

    /// True when the lower directory under `dloc` has a directory `name`.
    fn lower_has_dir(&self, dloc: &Loc, name: &[u8]) -> Result<bool> {
        let Some(ld) = &dloc.lower else {
            return Ok(false);
        };
        let le = self.lower_named(ld, name)?;
        Ok(le.is_some_and(|e| e.entry().kind == Kind::Dir))
    }
}
