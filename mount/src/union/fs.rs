//! The union as a [`Core`]: reads resolve through the upper then the lowers, file I/O goes
//! through handles (a write open copies up first; without an upper, files can also be read
//! handle-less), and every namespace change is in `ops.rs`.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use layerfs_fuse::{BackingFile, Core, Ctx, DirEntry, Entry, Invalidate, Opened, SetAttr};

use super::listing::{Cursor, Listing};
use super::ops::Make;
use super::privs::Changer;
use super::table::{Key, NodeId};
use super::{FileH, Union};
use crate::error::{Error, Result};
use crate::format;
use crate::stack::dirindex::Kind;
use crate::stack::Ino;
use crate::sys::{self, Stat};

/// The kernel's `__FMODE_EXEC`: set in the flags of the OPEN that execve sends.
const OPEN_FOR_EXEC: i32 = 0x20;

/// Open flags for the real file: no creation (done already), no append (the kernel gives
/// every write its offset), nothing that fails on the daemon's side only.
fn real_flags(flags: i32) -> i32 {
    flags
        & !(libc::O_CREAT
            | libc::O_EXCL
            | libc::O_NOCTTY
            | libc::O_APPEND
            | libc::O_DIRECT
            | libc::O_NOATIME
            | OPEN_FOR_EXEC)
}

/// A file opened where its data is.
pub(super) struct Real {
    pub(super) fd: OwnedFd,
    st: Stat,
    /// A metadata-only copy's: the fd is the lower file holding its data.
    pub(super) data_below: bool,
}

impl Union {
    /// What the kernel is told of `node`, showing attributes `st`.
    pub(super) fn entry_of(&self, node: &super::Node, st: Stat) -> Entry {
        Entry {
            node: node.id.0,
            generation: 0,
            attr: st,
            ttl: self.cfg.ttl,
        }
    }

    /// The fd for reads of `node` through handle `fh`, or (handle-less, `fh == 0`, only
    /// where files cannot change) a fresh one.
    fn read_fd(&self, ino: u64, fh: u64) -> Result<Arc<OwnedFd>> {
        if fh == 0 && self.read_only() {
            let node = self.node(ino)?;
            return Ok(Arc::new(self.open_real(&node, libc::O_RDONLY)?.fd));
        }
        self.handle_fd(fh)
    }

    fn handle(&self, fh: u64) -> Result<Arc<FileH>> {
        match self.files.get(fh) {
            Some(h) => Ok(h),
            None if self.recovered.is_some() => self.recover_handle(fh),
            None => Err(Error::BadHandle(fh)),
        }
    }

    /// The fd of handle `fh`; a read-only handle of a lower file moves to the upper copy
    /// once there is one.
    fn handle_fd(&self, fh: u64) -> Result<Arc<OwnedFd>> {
        let h = self.handle(fh)?;
        if !h.upper.load(Ordering::Acquire) && h.node.loc().upper {
            let _g = self.shared();
            let r = self.open_real(&h.node, libc::O_RDONLY)?;
            // A metadata-only copy keeps reading below, until its data is copied in.
            if !r.data_below {
                *h.fd.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(r.fd);
                h.upper.store(true, Ordering::Release);
            }
        }
        let fd = h.fd.read().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(fd)
    }

    /// Opens the regular file behind `node` where it is now (upper or lower). Never blocks
    /// (`O_NONBLOCK`, which regular files ignore) and never hands out anything else: a
    /// name that no longer holds this node's file answers ESTALE, and the kernel looks again.
    pub(super) fn open_real(&self, node: &super::Node, flags: i32) -> Result<Real> {
        let flags = flags | libc::O_NONBLOCK;
        let fd = match node.detached.get() {
            // Through the fd's magic link, which must be followed (no O_NOFOLLOW here).
            Some(fd) => sys::reopen(fd.as_fd(), flags).map_err(Error::io("reopen"))?,
            None => self.with_place(node, |d, n| sys::openat(d, &sys::cstr(n)?, flags))?,
        };
        let st = sys::fstat(fd.as_fd()).map_err(Error::io("fstat"))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Error::StaleInode(node.id.0));
        }
        if (self.verifier.is_some() || self.lazy.is_some()) && node.detached.get().is_none() {
            let loc = node.loc();
            if !loc.upper {
                let le = self.lower_of(&loc)?;
                // A lazy layer's file gets its content first (the fd is of the same
                // inode, so it sees the bytes written in), then `-o verify` hashes it.
                self.ensure_lower(&le)?;
                self.verify_lower(&le, fd.as_fd(), &st)?;
            }
        }
        if self.is_metacopy_fd(node, &fd, &st)? {
            if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
                return Err(Error::Bug(
                    "a write open of a metadata-only copy not filled",
                ));
            }
            let (fd, mut lst) = self.open_metacopy_data(node, flags)?;
            // The copy's attributes, the data's size and blocks.
            (lst.st_mode, lst.st_uid, lst.st_gid) = (st.st_mode, st.st_uid, st.st_gid);
            return Ok(Real {
                fd,
                st: lst,
                data_below: true,
            });
        }
        Ok(Real {
            fd,
            st,
            data_below: false,
        })
    }

    fn new_handle(
        &self,
        node: Arc<super::Node>,
        (fd, st): (OwnedFd, Stat),
        upper: bool,
        flags: i32,
    ) -> Opened {
        let exec = flags & OPEN_FOR_EXEC != 0;
        if exec {
            node.execs.fetch_add(1, Ordering::Relaxed);
        }
        let fd = Arc::new(fd);
        // A lower file opened read-only on a writable mount, where the kernel reads files
        // directly: it may read this one too (one page cache with every other mount of
        // the layer). A copy-up while it is open gives the name a new node (`supersede`).
        let lower_backed =
            !upper && !self.read_only() && self.lower_passthrough.load(Ordering::Relaxed);
        if lower_backed {
            node.lower_opens.fetch_add(1, Ordering::Relaxed);
        }
        let id = node.id;
        let h = Arc::new(FileH {
            node,
            fd: RwLock::new(fd.clone()),
            upper: AtomicBool::new(upper),
            exec,
            lower_backed,
        });
        let fh = match super::journal::current() {
            Some(j) => self.journaled_handle(j, h, id, upper),
            None => self.files.insert(h),
        };
        // Every change to the data goes through the kernel, which keeps its page cache in
        // step: it may keep it across opens. The kernel may also read and write the real file
        // directly: an upper file, any file of a mount without an upper, and a lower file
        // opened read-only (the kernel binds one backing file to an inode while any
        // passthrough open of it lives, so a copy-up meanwhile moves the name to a new node).
        let backing = (upper || self.read_only() || lower_backed).then(|| BackingFile {
            fd: fd.clone(),
            file: (st.st_dev, st.st_ino),
        });
        // A lower file's data never changes but by a copy-up (which moves this handle to
        // the copy, read through the core from then on).
        let lower_size =
            (!upper && !self.read_only() && !lower_backed).then_some(st.st_size as u64);
        Opened {
            fh,
            // Lower files changed behind the mount (`timeout=`) are read afresh at each open.
            keep_cache: upper || self.cfg.lowers_max_age.is_none(),
            backing,
            lower_size,
        }
    }
}

impl Core for Union {
    type Error = Error;

    fn invalidate(&self) -> Option<Invalidate> {
        // Read-only mounts too: a refresh (SIGUSR1) drops what the kernel cached.
        Some(self.invalidate.clone())
    }

    fn passthrough_granted(&self, on: bool) {
        let lower = on && !self.read_only() && self.cfg.lower_passthrough;
        self.lower_passthrough.store(lower, Ordering::Relaxed);
    }

    fn request_done(&self, unique: u64) {
        if let Some(j) = super::journal::current() {
            j.done(unique);
        }
    }

    fn was_done(&self, unique: u64) -> bool {
        self.recovered
            .as_ref()
            .is_some_and(|r| r.done.contains(&unique))
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<Entry> {
        if !sys::is_component(name) {
            return Err(Error::Invalid);
        }
        let _g = self.shared();
        let dir = self.node(parent)?;
        if !dir.is_dir {
            return Err(Error::NotDir);
        }
        let dloc = dir.loc();
        match self.child(&dir, &dloc, name.as_bytes(), true)? {
            Some((node, st)) => Ok(self.entry_of(&node, st)),
            None => Err(Error::NotFound),
        }
    }

    fn negative_ttl(&self) -> Option<Duration> {
        Some(self.cfg.ttl)
    }

    fn forget(&self, ino: u64, nlookup: u64) {
        self.table.forget(NodeId(ino), nlookup);
        self.forget_orphan(NodeId(ino));
    }

    fn getattr(&self, ino: u64) -> Result<Entry> {
        let _g = self.shared();
        let n = self.node(ino)?;
        Ok(self.entry_of(&n, self.attr_of(&n)?))
    }

    fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let _g = self.shared();
        let n = self.node(ino)?;
        self.with_place(&n, |d, name| sys::readlinkat(d, &sys::cstr(name)?))
    }

    fn open(&self, ino: u64, flags: i32, kill_setid: bool, ctx: Ctx) -> Result<Opened> {
        let node = self.node(ino)?;
        if node.is_dir {
            return Err(Error::IsDir);
        }
        let read_only = flags & libc::O_ACCMODE == libc::O_RDONLY;
        let trunc = flags & libc::O_TRUNC != 0;
        if !read_only || trunc {
            self.writable()?;
        }
        // O_TRUNC arrives with OPEN (atomic_o_trunc), and the kernel checks that the file is
        // not being executed only after OPEN: for a write access mode it checked before, but
        // O_RDONLY|O_TRUNC would have cut a running program. Refuse as the kernel would.
        if read_only && trunc && node.execs.load(Ordering::Relaxed) > 0 {
            return Err(Error::Executing);
        }
        if !read_only || trunc {
            let _g = self.exclusive();
            self.copy_up(&node, !trunc)?;
            self.fill_metacopy(&node, !trunc)?;
            let r = self.open_real(&node, real_flags(flags))?;
            if trunc {
                self.drop_setid(ino, r.fd.as_fd(), Changer::new(ctx, kill_setid))?;
            }
            return Ok(self.new_handle(node, (r.fd, r.st), true, flags));
        }
        let _g = self.shared();
        let upper = node.loc().upper;
        let r = self.open_real(&node, real_flags(flags))?;
        let upper = upper && !r.data_below;
        Ok(self.new_handle(node, (r.fd, r.st), upper, flags))
    }

    fn files_immutable(&self) -> bool {
        // Not with `timeout=`: lower files may change behind the mount's back.
        self.read_only() && self.cfg.lowers_max_age.is_none()
    }

    fn changes_behind(&self) -> bool {
        self.cfg.lowers_max_age.is_some()
    }

    fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let fd = self.read_fd(ino, fh)?;
        let mut buf = vec![0u8; size as usize];
        let n = sys::pread_full(fd.as_fd(), &mut buf, offset).map_err(Error::io("pread"))?;
        buf.truncate(n);
        Ok(buf)
    }

    fn release(&self, _ino: u64, fh: u64) {
        self.files.remove(fh);
        self.released(fh);
    }

    fn lseek(&self, ino: u64, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        let fd = self.read_fd(ino, fh)?;
        sys::lseek(fd.as_fd(), offset, whence).map_err(Error::io("lseek"))
    }

    fn readdir(
        &self,
        ino: u64,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> Result<()> {
        // The directory's listing: taken at offset 0 (a first read, a rewind, or the
        // kernel's cache of it dropped after a change), continued at later offsets.
        let _g = self.shared();
        let node = self.node(ino)?;
        if !node.is_dir {
            return Err(Error::NotDir);
        }
        let (gen, listing) = node
            .listings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .at(offset, || self.list(&node))?;
        let (at, pos) = Cursor::new(gen, offset);
        let dloc = node.loc();
        let dots: [(&[u8], u64); 2] = [
            (b".", node.ino().0),
            (b"..", dloc.parent.as_ref().map_or(Ino::ROOT, |p| p.ino()).0),
        ];
        for (i, (name, dino)) in dots.into_iter().enumerate() {
            if pos <= i as u64 {
                let st = self.attr_of(&node)?;
                let e = DirEntry {
                    ino: dino,
                    next_offset: at.offset(i as u64 + 1),
                    mode: libc::S_IFDIR,
                    name,
                    entry: Some(self.entry_of(&node, st)),
                };
                if add(e) {
                    return Ok(());
                }
            }
        }
        match &*listing {
            // Still no upper copy: the index entries are what the names resolve to.
            Listing::Lower { rel, ix } if !dloc.upper => {
                self.readdir_lower(&node, rel, ix, at, plus, add)
            }
            Listing::Lower { ix, .. } => {
                let names = ix.entries.iter().map(|e| (&e.name, e.kind));
                self.readdir_resolving(&node, &dloc, names, at, plus, add)
            }
            Listing::Merged(v) => {
                let names = v.iter().map(|(n, k)| (n, *k));
                self.readdir_resolving(&node, &dloc, names, at, plus, add)
            }
        }
    }

    fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>> {
        if !self.cfg.xattrs {
            return Err(Error::NoXattrs);
        }
        let name = match self.stored_xattr(name.as_bytes()) {
            Ok(n) => n,
            Err(Error::PrivateXattr) => return Err(Error::NoAttr),
            Err(e) => return Err(e),
        };
        let name = name.as_ref();
        let _g = self.shared();
        let n = self.node(ino)?;
        if format::is_nested_whiteout_xattr(name) && self.is_nested(&n) {
            return Err(Error::NoAttr);
        }
        if n.loc().upper || n.detached.get().is_some() {
            let xname = sys::cstr(name).map_err(Error::io("name"))?;
            let v = self
                .with_place(&n, |d, name| sys::getxattr_at(d, name, &xname))
                .map_err(|e| match e.errno() {
                    libc::ENODATA => Error::NoAttr,
                    _ => e,
                })?;
            return Ok(match self.cfg.ids.show_xattr(name, &v) {
                std::borrow::Cow::Borrowed(_) => v,
                std::borrow::Cow::Owned(shown) => shown,
            });
        }
        let x = self.xattrs_of(&n)?;
        let v = x.get(name).ok_or(Error::NoAttr)?;
        Ok(self.cfg.ids.show_xattr(name, v).into_owned())
    }

    fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        if !self.cfg.xattrs {
            return Err(Error::NoXattrs);
        }
        let _g = self.shared();
        let n = self.node(ino)?;
        let x = self.xattrs_of(&n)?;
        let mut out = Vec::new();
        // A nested whiteout's mark is its form: it shows as a device 0:0 without it.
        let nested =
            x.names.iter().any(|n| format::is_nested_whiteout_xattr(n)) && self.is_nested(&n);
        let names = x
            .names
            .iter()
            .filter(|n| !(nested && format::is_nested_whiteout_xattr(n)));
        for name in names.filter_map(|n| self.shown_xattr(n)) {
            out.extend_from_slice(&name);
            out.push(0);
        }
        Ok(out)
    }

    fn statfs(&self, _ino: u64) -> Result<libc::statvfs> {
        let fd = match &self.upper {
            Some(up) => up.fd.as_fd(),
            None => self.stack.layers()[0].root.as_fd(),
        };
        sys::fstatvfs(fd).map_err(Error::io("fstatvfs"))
    }

    fn access(&self, ino: u64, mask: i32, uid: u32, gid: u32) -> Result<()> {
        let st = self.getattr(ino)?.attr;
        access_check(&st, mask, uid, gid, self.read_only())
    }

    fn mutation_error(&self) -> Error {
        Error::ReadOnly
    }

    fn setattr(&self, ino: u64, set: &SetAttr, ctx: Ctx) -> Result<Entry> {
        self.writable()?;
        Union::setattr(self, ino, set, Changer::new(ctx, set.kill_setid))
    }

    fn mknod(&self, parent: u64, name: &OsStr, mode: u32, rdev: u64, ctx: Ctx) -> Result<Entry> {
        self.writable()?;
        // A char device 0:0 is the whiteout's shape; in the upper it would hide the name
        // instead of creating it. The kernel refuses it on the merged view (ovl_mknod), and
        // so do we, but for the whiteout a kernel overlay makes (`vfs_whiteout`: mode 0),
        // kept as a nested overlay's whiteout (`nested.rs`) so that a kernel overlay can
        // have its upper on the mount (refused where the upper takes no xattrs).
        let nested = mode == libc::S_IFCHR && rdev == 0;
        if nested {
            self.nested_upper()?;
        } else if mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0 {
            return Err(Error::NotPermitted("mknod of a whiteout"));
        }
        let what = match mode & libc::S_IFMT {
            _ if nested => Make::NestedWhiteout,
            libc::S_IFREG => Make::File {
                flags: libc::O_RDONLY,
            },
            _ => Make::Node { rdev },
        };
        Ok(self.make_entry(parent, name, mode, what, ctx)?.0)
    }

    fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, ctx: Ctx) -> Result<Entry> {
        self.writable()?;
        let mode = (mode & 0o7777) | libc::S_IFDIR;
        Ok(self.make_entry(parent, name, mode, Make::Dir, ctx)?.0)
    }

    fn symlink(&self, parent: u64, name: &OsStr, target: &[u8], ctx: Ctx) -> Result<Entry> {
        self.writable()?;
        let what = Make::Symlink { target };
        Ok(self
            .make_entry(parent, name, libc::S_IFLNK | 0o777, what, ctx)?
            .0)
    }

    fn link(&self, ino: u64, parent: u64, name: &OsStr) -> Result<Entry> {
        self.writable()?;
        Union::link(self, ino, parent, name)
    }

    fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.writable()?;
        self.remove(parent, name, false)
    }

    fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.writable()?;
        self.remove(parent, name, true)
    }

    fn rename(&self, p1: u64, n1: &OsStr, p2: u64, n2: &OsStr, flags: u32) -> Result<()> {
        self.writable()?;
        Union::rename(self, p1, n1, p2, n2, flags)
    }

    fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        ctx: Ctx,
    ) -> Result<(Entry, Opened)> {
        self.writable()?;
        let mode = (mode & 0o7777) | libc::S_IFREG;
        let what = Make::File {
            flags: real_flags(flags) & !libc::O_TRUNC,
        };
        let (entry, fd) = self.make_entry(parent, name, mode, what, ctx)?;
        let node = self.node(entry.node)?;
        let fd = fd.ok_or(Error::Bug("create made no file"))?;
        let st = sys::fstat(fd.as_fd()).map_err(Error::io("fstat"))?;
        Ok((entry, self.new_handle(node, (fd, st), true, 0)))
    }

    fn tmpfile(&self, parent: u64, mode: u32, flags: i32, ctx: Ctx) -> Result<(Entry, Opened)> {
        self.writable()?;
        let _g = self.exclusive();
        let (dir, _) = self.live_dir(parent)?;
        // In the upper copy of the directory (copied up first), as the kernel's overlay.
        let pfd = self.ensure_upper_dir(&dir)?;
        let pst = sys::fstat(pfd.as_fd()).map_err(Error::io("fstat"))?;
        let owner = self.new_owner(ctx, &pst);
        let (mode, _) = super::ops::new_mode(pfd.as_fd(), mode, ctx)?;
        let rw = real_flags(flags) & !(libc::O_TRUNC | libc::O_ACCMODE) | libc::O_RDWR;
        let fd = sys::open_tmpfile(pfd.as_fd(), rw, mode & 0o7777).map_err(Error::io("tmpfile"))?;
        let made = sys::fstat(fd.as_fd()).map_err(Error::io("fstat"))?;
        if (made.st_uid, made.st_gid) != owner {
            sys::fchown(fd.as_fd(), owner.0, owner.1).map_err(Error::io("chown"))?;
            if made.st_mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
                sys::fchmod(fd.as_fd(), made.st_mode & 0o7777).map_err(Error::io("chmod"))?;
            }
        }
        let st = sys::fstat(fd.as_fd()).map_err(Error::io("fstat"))?;
        let ino = self.stack.upper_ino(st.st_ino);
        let loc = super::Loc {
            parent: Some(dir.clone()),
            name: (*b"").into(),
            upper: true,
            lower: None,
            unlinked: true,
        };
        let key = Key::Ino(ino);
        let node = self.table.get_or_insert(key.clone(), true, |id| {
            super::Node::new(id, key, ino, libc::S_IFREG, loc)
        });
        // The node's inode, for attributes and a later link, as for any removed file.
        let path = sys::reopen(fd.as_fd(), libc::O_PATH).map_err(Error::io("reopen"))?;
        let _ = node.detached.set(path);
        // No link (the kernel's FUSE client instantiates it as it is: a link count of 0,
        // with `I_LINKABLE` unless `O_EXCL`, is what lets `linkat` name it).
        let entry = self.entry_of(&node, self.cfg.present(st, ino));
        Ok((entry, self.new_handle(node, (fd, st), true, flags)))
    }

    fn drops_setid_bits(&self) -> bool {
        true
    }

    fn write(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        ctx: Ctx,
        kill_setid: bool,
    ) -> Result<u32> {
        self.writable()?;
        let h = self.handle(fh)?;
        if !h.upper.load(Ordering::Acquire) {
            return Err(Error::BadHandle(fh));
        }
        let fd = h.fd.read().unwrap_or_else(|p| p.into_inner()).clone();
        if kill_setid {
            // Before the data lands: never new contents under the old bits.
            self.drop_setid(ino, fd.as_fd(), Changer::new(ctx, true))?;
        }
        let n = sys::pwrite(fd.as_fd(), data, offset).map_err(Error::io("pwrite"))?;
        Ok(n as u32)
    }

    fn fsync(&self, _ino: u64, fh: u64, datasync: bool) -> Result<()> {
        self.writable()?;
        if self.volatile {
            return Ok(());
        }
        let fd = self.handle_fd(fh)?;
        sys::fsync(fd.as_fd(), datasync).map_err(Error::io("fsync"))
    }

    fn fsyncdir(&self, ino: u64, _fh: u64, datasync: bool) -> Result<()> {
        self.writable()?;
        if self.volatile {
            return Ok(());
        }
        let n = self.node(ino)?;
        match n.upper_dir.get() {
            Some(fd) => sys::fsync(fd.as_fd(), datasync).map_err(Error::io("fsync")),
            None => Ok(()), // nothing of it is in the upper
        }
    }

    fn setxattr(
        &self,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        kill_sgid: bool,
    ) -> Result<()> {
        if !self.cfg.xattrs {
            return Err(Error::NoXattrs);
        }
        self.writable()?;
        self.set_xattr(ino, name, Some((value, flags)))?;
        if kill_sgid && name.as_bytes() == b"system.posix_acl_access" {
            self.drop_set_gid(ino)?;
        }
        Ok(())
    }

    fn removexattr(&self, ino: u64, name: &OsStr) -> Result<()> {
        if !self.cfg.xattrs {
            return Err(Error::NoXattrs);
        }
        self.writable()?;
        self.set_xattr(ino, name, None)
    }

    fn fallocate(&self, _ino: u64, fh: u64, offset: u64, len: u64, mode: i32) -> Result<()> {
        self.writable()?;
        let fd = self.handle_fd(fh)?;
        sys::fallocate(fd.as_fd(), mode, offset, len).map_err(Error::io("fallocate"))
    }

    fn copy_file_range(&self, src: (u64, u64, u64), dst: (u64, u64, u64), len: u64) -> Result<u32> {
        self.writable()?;
        let (sfd, dfd) = (self.handle_fd(src.1)?, self.handle_fd(dst.1)?);
        let len = len.min(1 << 30) as usize;
        let n = sys::copy_range_at(sfd.as_fd(), src.2, dfd.as_fd(), dst.2, len)
            .map_err(Error::io("copy_file_range"))?;
        Ok(n as u32)
    }
}

/// `access(2)`: on a read-only mount writes to files and directories are EROFS; the rest is
/// the classic owner/group/other check (root passes, but needs an x bit to execute).
pub fn access_check(st: &Stat, mask: i32, uid: u32, gid: u32, read_only: bool) -> Result<()> {
    let kind = Kind::from_mode(st.st_mode);
    if read_only && mask & libc::W_OK != 0 && matches!(kind, Kind::File | Kind::Dir | Kind::Symlink)
    {
        return Err(Error::ReadOnly);
    }
    let want = (mask & 0o7) as u32;
    if want == 0 {
        return Ok(());
    }
    if uid == 0 {
        let any_x = st.st_mode & 0o111 != 0;
        return if want & (libc::X_OK as u32) != 0 && kind != Kind::Dir && !any_x {
            Err(Error::Denied)
        } else {
            Ok(())
        };
    }
    let bits = if uid == st.st_uid {
        (st.st_mode >> 6) & 7
    } else if gid == st.st_gid {
        (st.st_mode >> 3) & 7
    } else {
        st.st_mode & 7
    };
    if bits & want == want {
        Ok(())
    } else {
        Err(Error::Denied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_flags_drop_creation_and_append() {
        let f = real_flags(libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_APPEND);
        assert_eq!(f, libc::O_WRONLY);
        assert_eq!(
            real_flags(libc::O_RDWR | libc::O_TRUNC),
            libc::O_RDWR | libc::O_TRUNC
        );
    }
}
