//! The writable union: an upper directory over the read-only lowers, with kernel overlayfs'
//! on-disk format (whiteouts as character devices 0:0, `*.overlay.opaque`,
//! `*.overlay.redirect`, `*.overlay.origin`), so the kernel can mount the upper we leave.
//!
//! The lowers are the read-only union's merged indexes, looked up by path
//! ([`lower::LowerTree`]); the upper is read directly (one `fstatat` per lookup), since it
//! changes. Every node knows where it is ([`node::Loc`]); a mutation takes the namespace lock
//! exclusively, lookups and listings share it, file data takes none.
//!
//! - `mod.rs`: the state, name resolution, copy-up;
//! - `fs.rs`: the [`Core`](layerfs_fuse::Core) implementation;
//! - `ops.rs`: namespace changes (create, remove, rename, link, attributes).

mod fs;
pub mod lower;
mod node;
mod ops;

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use dashmap::DashMap;

use crate::error::{Error, Result};
use crate::format;
use crate::stack::dirindex::Kind;
use crate::stack::{Ino, Stack};
use crate::sys::{self, Stat};
use crate::union::handles::Handles;
use crate::union::node::Table;
use crate::union::Config;
use crate::upper::copyup::{self, CopyOpts};
use crate::upper::Upper;
use lower::{join, root_rel, LowerTree, Rel};
use node::{Loc, WNode};

/// An open file of a writable mount.
#[derive(Debug)]
struct FileH {
    node: Arc<WNode>,
    fd: RwLock<Arc<OwnedFd>>,
    /// The fd is the upper file's (a read-only fd of a lower file switches to the upper copy
    /// once one exists, so it sees later writes).
    upper: AtomicBool,
    /// Opened by execve (counted in `node.execs` until the handle goes).
    exec: bool,
}

impl Drop for FileH {
    fn drop(&mut self) {
        if self.exec {
            self.node
                .execs
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A directory listing taken at `opendir`: offsets are positions in it.
type Listing = Vec<(Box<[u8]>, Kind)>;

/// What a name resolves to.
#[derive(Debug)]
struct Resolved {
    ino: Ino,
    /// The real `lstat` (not yet presented).
    st: Stat,
    upper: bool,
    lower: Option<Rel>,
}

/// A writable union mount.
pub struct Overlay {
    stack: Stack,
    upper: Upper,
    cfg: Config,
    /// No fsync of copied-up data or on request (`-o volatile`).
    volatile: bool,
    lowers: LowerTree,
    table: Table<WNode>,
    files: Handles<Arc<FileH>>,
    dirs: Handles<Arc<Listing>>,
    /// The namespace lock: mutations exclusive, lookups and listings shared.
    ns: RwLock<()>,
    /// Upper inode -> node id of copied-up files (their number stays the lower one's),
    /// so every name of a hard-linked copy shows the same number.
    upper_inos: DashMap<u64, Ino>,
    /// The upper filesystem's type, for reading file handles in origin records.
    upper_magic: i64,
    /// Origin records on this upper can be read back into inode numbers.
    origin_readable: bool,
}

/// True when an origin record written on this upper reads back as the inode number it names
/// (the filesystem's handle layout is one we know): tried on the workdir itself.
fn probe_origin(upper: &Upper, magic: i64) -> bool {
    let work = upper.work.fd();
    let (Ok((kind, handle)), Ok(st)) = (sys::file_handle(work, c"."), sys::fstat(work)) else {
        return false;
    };
    copyup::origin_ino(&copyup::origin_record(kind, &handle), magic) == Some(st.st_ino)
}

/// True for a kernel whiteout (character device 0:0).
fn is_whiteout(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

fn is_dir(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

impl Overlay {
    /// A writable union of `stack` (the lowers) under `upper`. The stack must have been
    /// opened with the upper's device ([`Stack::open_with_upper`]).
    pub fn new(stack: Stack, upper: Upper, cfg: Config, volatile: bool) -> Overlay {
        // Modes arrive with the caller's umask applied; ours must not mask them again.
        sys::umask(0);
        let table = Table::default();
        let root = WNode::new(
            Ino::ROOT,
            libc::S_IFDIR,
            Loc {
                parent: None,
                name: (*b"").into(),
                upper: true,
                lower: Some(root_rel()),
                unlinked: false,
            },
        );
        let _ = root.upper_dir.set(upper.fd.clone());
        let upper_magic = sys::fs_magic(upper.fd.as_fd()).unwrap_or(0);
        let origin_readable = probe_origin(&upper, upper_magic);
        table.insert_root(root);
        Overlay {
            stack,
            upper,
            cfg,
            volatile,
            lowers: LowerTree::default(),
            table,
            files: Handles::default(),
            dirs: Handles::default(),
            ns: RwLock::new(()),
            upper_inos: DashMap::new(),
            upper_magic,
            origin_readable,
        }
    }

    /// Number of nodes the kernel currently references (plus the root).
    pub fn node_count(&self) -> usize {
        self.table.len()
    }

    fn node(&self, ino: u64) -> Result<Arc<WNode>> {
        self.table.get(Ino(ino))
    }

    fn shared(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.ns.read().unwrap_or_else(|p| p.into_inner())
    }

    fn exclusive(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.ns.write().unwrap_or_else(|p| p.into_inner())
    }

    fn work(&self) -> BorrowedFd<'_> {
        self.upper.work.fd()
    }

    /// The upper copy of directory `node` (which must have one), opened once.
    fn upper_dir(&self, node: &WNode) -> Result<Arc<OwnedFd>> {
        if let Some(fd) = node.upper_dir.get() {
            return Ok(fd.clone());
        }
        let loc = node.loc();
        let parent = loc.parent.as_ref().ok_or(Error::Invalid)?;
        if !loc.upper {
            return Err(Error::os("upper directory", libc::EIO));
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
    fn ensure_upper_dir(&self, node: &Arc<WNode>) -> Result<Arc<OwnedFd>> {
        if !node.loc().upper {
            self.copy_up(node, true)?;
        }
        self.upper_dir(node)
    }

    /// Copies `node` up (parents first); `data: false` leaves a file empty (`O_TRUNC`).
    /// Takes effect atomically (built in the workdir, renamed into place). The caller holds
    /// the namespace lock exclusively.
    fn copy_up(&self, node: &Arc<WNode>, data: bool) -> Result<()> {
        let loc = node.loc();
        if loc.upper {
            return Ok(());
        }
        if loc.unlinked {
            return Err(Error::NotFound);
        }
        let parent = loc.parent.as_ref().ok_or(Error::Invalid)?;
        let pfd = self.ensure_upper_dir(parent)?;
        let rel = loc.lower.as_ref().ok_or(Error::Invalid)?;
        let le = self
            .lowers
            .entry(&self.stack, rel)
            .map_err(Error::io("lower lookup"))?
            .ok_or(Error::NotFound)?;
        let st = le.attr().map_err(Error::io("lstat"))?;
        // The origin names the lower file by handle, on the upper's filesystem only (the
        // record carries no filesystem uuid).
        let same_fs =
            Some(self.stack.layer(le.parent.layer_of(le.entry())).fsid) == self.stack.upper_fsid();
        let opts = CopyOpts {
            fsync: !self.volatile,
            origin: same_fs.then_some(self.upper.ns),
            data,
        };
        le.parent
            .with_dir_of(le.entry(), |d| {
                copyup::copy_up(d, &loc.name, &st, &self.upper.work, pfd.as_fd(), opts)
            })
            .map_err(Error::io("copy-up"))?;
        log::debug!("copied up {}", String::from_utf8_lossy(rel));
        node.set_loc(|l| l.upper = true);
        if !node.is_dir && (!same_fs || !self.origin_readable) {
            // No origin the number can be read back from: remember it for this mount.
            let name = sys::cstr(&loc.name).map_err(Error::io("name"))?;
            let ust = sys::lstatat(pfd.as_fd(), &name).map_err(Error::io("lstat"))?;
            self.upper_inos.insert(ust.st_ino, node.ino);
        }
        Ok(())
    }

    /// Resolves `name` in directory `dir` (at `dloc`): upper first (a whiteout hides), then
    /// the lower directory merged under it.
    fn resolve(&self, dir: &WNode, dloc: &Loc, name: &[u8]) -> Result<Option<Resolved>> {
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
                Ok(st)
                    if format::upper_whiteout(pfd.as_fd(), name, &st)
                        .map_err(Error::io("whiteout"))? =>
                {
                    return Ok(None)
                }
                Ok(st) => {
                    let d = is_dir(&st);
                    let lower = if d {
                        self.dir_lower(pfd.as_fd(), name, lower_dir)?
                    } else {
                        None
                    };
                    let ino = self.upper_ino(&st, lower.as_deref(), pfd.as_fd(), name)?;
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
        let Some(le) = self
            .lowers
            .child(&self.stack, ld, name)
            .map_err(Error::io("lower lookup"))?
        else {
            return Ok(None);
        };
        if let Some(pfd) = &upper_dir {
            if format::upper_oci_hides(pfd.as_fd(), name).map_err(Error::io("whiteout"))? {
                return Ok(None);
            }
        }
        let st = le.attr().map_err(Error::io("lstat"))?;
        Ok(Some(Resolved {
            ino: self.stack.ino(le.parent.layer_of(le.entry()), st.st_ino),
            st,
            upper: false,
            lower: Some(join(ld, name)),
        }))
    }

    /// The number upper entry `name` of `pfd` shows: a file's copy-up origin's (recorded
    /// in its origin xattr, which all its hard links share), a merged directory's lower
    /// one's, else its own.
    fn upper_ino(
        &self,
        st: &Stat,
        lower: Option<&[u8]>,
        pfd: BorrowedFd<'_>,
        name: &[u8],
    ) -> Result<Ino> {
        if is_dir(st) {
            if let Some(rel) = lower {
                let le = self.lowers.entry(&self.stack, rel);
                if let Some(le) = le.map_err(Error::io("lower lookup"))? {
                    return le.ino(&self.stack).map_err(Error::io("lstat"));
                }
            }
            return Ok(self.stack.upper_ino(st.st_ino));
        }
        if let Some(i) = self.upper_inos.get(&st.st_ino) {
            return Ok(*i);
        }
        let origin = match sys::getxattr_at(pfd, name, self.upper.ns.origin()) {
            Ok(v) => copyup::origin_ino(&v, self.upper_magic),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA | libc::ENOTSUP)) => None,
            Err(e) => return Err(Error::io("getxattr origin")(e)),
        };
        Ok(self.stack.upper_ino(origin.unwrap_or(st.st_ino)))
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
        match sys::getxattr_at(pfd, name, self.upper.ns.redirect()) {
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
        dir: &Arc<WNode>,
        dloc: &Loc,
        name: &[u8],
        count: bool,
    ) -> Result<Option<(Arc<WNode>, Stat)>> {
        let Some(r) = self.resolve(dir, dloc, name)? else {
            return Ok(None);
        };
        let loc = Loc {
            parent: Some(dir.clone()),
            name: name.into(),
            upper: r.upper,
            lower: r.lower,
            unlinked: false,
        };
        let node = self.table.get_or_insert(r.ino, count, || {
            WNode::new(r.ino, r.st.st_mode & libc::S_IFMT, loc.clone())
        });
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
        // Refresh where the node is, except that a copied-up node stays with its copy when
        // another (lower) hard link of its origin is looked up.
        node.set_loc(|l| {
            if !(l.upper && !l.unlinked && !loc.upper) {
                *l = loc;
            }
        });
        Ok(Some((node, self.cfg.present(r.st, r.ino))))
    }

    /// The real `lstat` of `node`.
    fn real_attr(&self, node: &WNode) -> Result<Stat> {
        if let Some(fd) = node.detached.get() {
            return sys::fstat(fd.as_fd()).map_err(Error::io("fstat"));
        }
        let loc = node.loc();
        if loc.upper {
            if let Some(fd) = node.upper_dir.get() {
                return sys::fstat(fd.as_fd()).map_err(Error::io("fstat"));
            }
            let parent = loc.parent.as_ref().ok_or(Error::Invalid)?;
            let pfd = self.upper_dir(parent)?;
            let name = sys::cstr(&loc.name).map_err(Error::io("name"))?;
            return sys::lstatat(pfd.as_fd(), &name).map_err(Error::io("lstat"));
        }
        let rel = loc.lower.as_ref().ok_or(Error::Invalid)?;
        let le = self.lowers.entry(&self.stack, rel);
        let le = le
            .map_err(Error::io("lower lookup"))?
            .ok_or(Error::NotFound)?;
        le.attr().map_err(Error::io("lstat"))
    }

    fn attr_of(&self, node: &WNode) -> Result<Stat> {
        Ok(self.cfg.present(self.real_attr(node)?, node.ino))
    }

    /// Runs `f` on the directory holding `node` and its name there: the upper parent if the
    /// node is in the upper, else its lower layer's directory.
    fn with_place<R>(
        &self,
        node: &WNode,
        f: impl FnOnce(BorrowedFd<'_>, &[u8]) -> std::io::Result<R>,
    ) -> Result<R> {
        let loc = node.loc();
        match (&loc.parent, loc.upper) {
            (None, _) => f(self.upper.fd.as_fd(), b"").map_err(Error::io("root")),
            (Some(p), true) => {
                let pfd = self.upper_dir(p)?;
                f(pfd.as_fd(), &loc.name).map_err(Error::io("upper"))
            }
            (Some(_), false) => {
                let rel = loc.lower.as_ref().ok_or(Error::Invalid)?;
                let le = self.lowers.entry(&self.stack, rel);
                let le = le
                    .map_err(Error::io("lower lookup"))?
                    .ok_or(Error::NotFound)?;
                le.parent
                    .with_dir_of(le.entry(), |d| f(d, &le.entry().name))
                    .map_err(Error::io("lower"))
            }
        }
    }

    /// The merged entries of directory `node`: upper entries, then lower ones not hidden by
    /// an upper entry or whiteout.
    fn list(&self, node: &WNode) -> Result<Listing> {
        let loc = node.loc();
        let mut out = Vec::new();
        let mut seen: HashSet<Box<[u8]>> = HashSet::new();
        if loc.upper {
            let fd = self.upper_dir(node)?;
            // A private fd: getdents moves the offset of the fd it reads.
            let d = sys::open_subdir(fd.as_fd(), c".").map_err(Error::io("open upper"))?;
            // Regular files are whiteouts only in a directory marked for xattr whiteouts.
            let xattr_whiteouts = format::dir_marks(d.as_fd())
                .map_err(Error::io("listxattr"))?
                .xattr_whiteouts;
            for ent in sys::read_dir(d.as_fd()).map_err(Error::io("getdents"))? {
                if let Some(hidden) = ent.name.strip_prefix(format::OCI_PREFIX) {
                    // OCI markers never show; `.wh.X` hides X below (not an upper X).
                    if ent.name.as_ref() != format::OCI_OPAQUE {
                        seen.insert(hidden.into());
                    }
                    continue;
                }
                let kind = match Kind::from_dtype(ent.d_type) {
                    Some(k) if k != Kind::CharDev && !(xattr_whiteouts && k == Kind::File) => k,
                    _ => {
                        let name = sys::cstr(&ent.name).map_err(Error::io("name"))?;
                        match sys::lstatat(d.as_fd(), &name) {
                            Ok(st)
                                if format::upper_whiteout(d.as_fd(), &ent.name, &st)
                                    .map_err(Error::io("whiteout"))? =>
                            {
                                seen.insert(ent.name);
                                continue;
                            }
                            Ok(st) => Kind::from_mode(st.st_mode),
                            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                            Err(e) => return Err(Error::io("lstat")(e)),
                        }
                    }
                };
                seen.insert(ent.name.clone());
                out.push((ent.name, kind));
            }
        }
        if let Some(rel) = &loc.lower {
            if let Some(ix) = self
                .lowers
                .dir(&self.stack, rel)
                .map_err(Error::io("lower directory"))?
            {
                for e in &ix.entries {
                    if !seen.contains(&e.name) {
                        out.push((e.name.clone(), e.kind));
                    }
                }
            }
        }
        Ok(out)
    }

    /// True when a lower entry named `name` would show in `dloc` without an upper entry.
    fn lower_has(&self, dloc: &Loc, name: &[u8]) -> Result<bool> {
        let Some(ld) = &dloc.lower else {
            return Ok(false);
        };
        let le = self.lowers.child(&self.stack, ld, name);
        Ok(le.map_err(Error::io("lower lookup"))?.is_some())
    }

    /// True when the lower directory under `dloc` has a directory `name`.
    fn lower_has_dir(&self, dloc: &Loc, name: &[u8]) -> Result<bool> {
        let Some(ld) = &dloc.lower else {
            return Ok(false);
        };
        let le = self.lowers.child(&self.stack, ld, name);
        Ok(matches!(le.map_err(Error::io("lower lookup"))?, Some(e) if e.entry().kind == Kind::Dir))
    }

    /// Moves upper entry `name` of `pfd` into the workdir, leaving a whiteout in its place
    /// in one step; returns the workdir name of what was moved.
    fn swap_for_whiteout(&self, pfd: BorrowedFd<'_>, name: &[u8]) -> Result<std::ffi::CString> {
        let cname = sys::cstr(name).map_err(Error::io("name"))?;
        let tmp = self.upper.work.temp_name();
        match sys::renameat2(pfd, &cname, self.work(), &tmp, libc::RENAME_WHITEOUT) {
            Ok(()) => return Ok(tmp),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EPERM)) => {}
            Err(e) => return Err(Error::io("rename whiteout")(e)),
        }
        // No RENAME_WHITEOUT here: build the whiteout in the workdir and swap it in.
        crate::format::write_whiteout(self.work(), &tmp).map_err(Error::io("mknod whiteout"))?;
        sys::renameat2(self.work(), &tmp, pfd, &cname, libc::RENAME_EXCHANGE)
            .map_err(Error::io("rename exchange"))?;
        Ok(tmp)
    }

    /// Removes a workdir temporary (a file, or a directory with its whiteouts).
    fn discard(&self, tmp: &std::ffi::CStr) {
        if let Err(e) = copyup::remove_tree(self.work(), tmp.to_bytes()) {
            log::warn!("workdir: could not remove {tmp:?}: {e}");
        }
    }
}
