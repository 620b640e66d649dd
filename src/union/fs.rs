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

use super::ops::Make;
use super::privs::Changer;
use super::readdir::Cursor;
use super::{FileH, Listing, Union};
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

impl Union {
    pub(super) fn entry_of(&self, st: Stat) -> Entry {
        Entry {
            attr: st,
            ttl: self.cfg.ttl,
        }
    }

    /// The fd for reads of `node` through handle `fh`, or (handle-less, `fh == 0`, only
    /// where files cannot change) a fresh one.
    fn read_fd(&self, ino: u64, fh: u64) -> Result<Arc<OwnedFd>> {
        if fh == 0 && self.read_only() {
            let node = self.node(ino)?;
            return Ok(Arc::new(self.open_real(&node, libc::O_RDONLY)?.0));
        }
        self.handle_fd(fh)
    }

    fn handle(&self, fh: u64) -> Result<Arc<FileH>> {
        self.files.get(fh).ok_or(Error::BadHandle(fh))
    }

    /// The fd of handle `fh`; a read-only handle of a lower file moves to the upper copy
    /// once there is one.
    fn handle_fd(&self, fh: u64) -> Result<Arc<OwnedFd>> {
        let h = self.handle(fh)?;
        if !h.upper.load(Ordering::Acquire) && h.node.loc().upper {
            let _g = self.shared();
            let (fd, _) = self.open_real(&h.node, libc::O_RDONLY)?;
            *h.fd.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fd);
            h.upper.store(true, Ordering::Release);
        }
        let fd = h.fd.read().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(fd)
    }

    /// Opens the regular file behind `node` where it is now (upper or lower). Never blocks
    /// (`O_NONBLOCK`, which regular files ignore) and never hands out anything else: a
    /// name that no longer holds this node's file answers ESTALE, and the kernel looks again.
    fn open_real(&self, node: &super::Node, flags: i32) -> Result<(OwnedFd, Stat)> {
        let flags = flags | libc::O_NONBLOCK;
        let fd = match node.detached.get() {
            // Through the fd's magic link, which must be followed (no O_NOFOLLOW here).
            Some(fd) => sys::reopen(fd.as_fd(), flags).map_err(Error::io("reopen"))?,
            None => self.with_place(node, |d, n| sys::openat(d, &sys::cstr(n)?, flags))?,
        };
        let st = sys::fstat(fd.as_fd()).map_err(Error::io("fstat"))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Error::StaleInode(node.ino.0));
        }
        if self.verifier.is_some() && node.detached.get().is_none() {
            let loc = node.loc();
            if !loc.upper {
                let rel = loc.lower.as_ref().ok_or(Error::Invalid)?;
                let le = self
                    .lowers
                    .entry(&self.stack, rel)
                    .map_err(Error::io("lower lookup"))?
                    .ok_or(Error::NotFound)?;
                self.verify_lower(&le, fd.as_fd(), &st)?;
            }
        }
        Ok((fd, st))
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
        let fh = self.files.insert(Arc::new(FileH {
            node,
            fd: RwLock::new(fd.clone()),
            upper: AtomicBool::new(upper),
            exec,
        }));
        // Every change to the data goes through the kernel, which keeps its page cache in
        // step: it may keep it across opens. The kernel may also read and write the real file
        // directly, where it stays the node's file for good: an upper file, or any file of a
        // mount without an upper. Not a lower file that a write open can still copy up: the
        // kernel binds one backing file to an inode while any passthrough open of it lives,
        // and would fail that write open (the lower file is no place for its writes).
        let backing = (upper || self.read_only()).then(|| BackingFile {
            fd: fd.clone(),
            file: (st.st_dev, st.st_ino),
        });
        Opened {
            fh,
            keep_cache: true,
            backing,
        }
    }
}

impl Core for Union {
    type Error = Error;

    fn invalidate(&self) -> Option<Invalidate> {
        (!self.read_only()).then(|| self.invalidate.clone())
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
            Some((_, st)) => Ok(self.entry_of(st)),
            None => Err(Error::NotFound),
        }
    }

    fn negative_ttl(&self) -> Option<Duration> {
        Some(self.cfg.ttl)
    }

    fn forget(&self, ino: u64, nlookup: u64) {
        self.table.forget(Ino(ino), nlookup);
    }

    fn getattr(&self, ino: u64) -> Result<Entry> {
        let _g = self.shared();
        let n = self.node(ino)?;
        Ok(self.entry_of(self.attr_of(&n)?))
    }

    fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let _g = self.shared();
        let n = self.node(ino)?;
        self.with_place(&n, |d, name| sys::readlinkat(d, &sys::cstr(name)?))
    }

    fn open(&self, ino: u64, flags: i32, ctx: Ctx) -> Result<Opened> {
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
            let fd = self.open_real(&node, real_flags(flags))?;
            if trunc {
                self.drop_setid(ino, fd.0.as_fd(), Changer::thread(ctx.pid))?;
            }
            return Ok(self.new_handle(node, fd, true, flags));
        }
        let _g = self.shared();
        let upper = node.loc().upper;
        let fd = self.open_real(&node, real_flags(flags))?;
        Ok(self.new_handle(node, fd, upper, flags))
    }

    fn files_immutable(&self) -> bool {
        self.read_only()
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
            (b".", ino),
            (b"..", dloc.parent.as_ref().map_or(Ino::ROOT, |p| p.ino).0),
        ];
        for (i, (name, dino)) in dots.into_iter().enumerate() {
            if pos <= i as u64 {
                let st = self.attr_of(&node)?;
                let e = DirEntry {
                    ino: dino,
                    next_offset: at.offset(i as u64 + 1),
                    mode: libc::S_IFDIR,
                    name,
                    entry: Some(self.entry_of(st)),
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
        if format::is_private_xattr(name.as_bytes()) {
            return Err(Error::NoAttr);
        }
        let _g = self.shared();
        let n = self.node(ino)?;
        let name = name.as_bytes();
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
        let _g = self.shared();
        let n = self.node(ino)?;
        Ok(self.xattrs_of(&n)?.list())
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
        Union::setattr(self, ino, set, Changer::thread(ctx.pid))
    }

    fn mknod(&self, parent: u64, name: &OsStr, mode: u32, rdev: u64, ctx: Ctx) -> Result<Entry> {
        self.writable()?;
        // A char device 0:0 is the whiteout's shape; in the upper it would hide the name
        // instead of creating it. The kernel refuses it on the merged view (ovl_mknod), and so
        // do we, before anything is written.
        if mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0 {
            return Err(Error::NotPermitted("mknod of a whiteout"));
        }
        let what = match mode & libc::S_IFMT {
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
        let node = self.node(entry.attr.st_ino)?;
        let fd = fd.ok_or(Error::Bug("create made no file"))?;
        let st = sys::fstat(fd.as_fd()).map_err(Error::io("fstat"))?;
        Ok((entry, self.new_handle(node, (fd, st), true, 0)))
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
            let by = Changer {
                tid: ctx.pid,
                lacks_fsetid: true,
            };
            self.drop_setid(ino, fd.as_fd(), by)?;
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

    fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        self.writable()?;
        self.set_xattr(ino, name, Some((value, flags)))
    }

    fn removexattr(&self, ino: u64, name: &OsStr) -> Result<()> {
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
    let denied = || Error::Io {
        op: "access",
        source: std::io::Error::from_raw_os_error(libc::EACCES),
    };
    if uid == 0 {
        let any_x = st.st_mode & 0o111 != 0;
        return if want & (libc::X_OK as u32) != 0 && kind != Kind::Dir && !any_x {
            Err(denied())
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
        Err(denied())
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
