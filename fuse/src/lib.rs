//! The thin adapter between fuser and a FUSE-agnostic filesystem core.
//!
//! [`Core`] is what the adapter needs from a filesystem, in plain std/libc types; the
//! layerfs core implements it without knowing fuser exists. [`Adapter`] implements
//! `fuser::Filesystem`: one small method per request, each one call into the core and one
//! `match` that replies with data or with the error's errno ([`ToErrno`], decided by the
//! core in one place). FUSE-only concerns live here: reply encoding, passthrough backing
//! ids, kernel capabilities.

mod attr;
mod passthrough;

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use log::{debug, error};

pub use fuser;

/// Maps a core error to the errno the application sees.
pub trait ToErrno: std::fmt::Display {
    fn errno(&self) -> i32;
    /// True when the failure deserves an error log line (not an everyday ENOENT).
    fn is_unexpected(&self) -> bool {
        false
    }
}

/// An entry handed to the kernel: its attributes (`st_ino` is the node id) and how long the
/// kernel may cache it.
#[derive(Clone, Copy)]
pub struct Entry {
    pub attr: libc::stat,
    pub ttl: Duration,
}

/// One directory entry for readdir; `attr` is set for readdirplus.
pub struct DirEntry<'a> {
    pub ino: u64,
    /// The offset of the *next* entry (what the kernel passes back to continue).
    pub next_offset: u64,
    pub mode: u32,
    pub name: &'a [u8],
    pub entry: Option<Entry>,
}

/// The result of an open.
pub struct Opened {
    pub fh: u64,
    /// The data cannot change behind the kernel's back: keep its page cache.
    pub keep_cache: bool,
    /// The real file, for kernel passthrough of reads when the kernel allows it.
    pub backing: Option<Arc<OwnedFd>>,
}

/// What the adapter needs from a filesystem core. Node ids are `u64`, `1` is the root.
pub trait Core: Send + Sync + 'static {
    type Error: ToErrno;

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<Entry, Self::Error>;
    /// How long the kernel may remember that a name does not exist (`None`: not at all).
    fn negative_ttl(&self) -> Option<Duration>;
    fn forget(&self, ino: u64, nlookup: u64);
    fn getattr(&self, ino: u64) -> Result<Entry, Self::Error>;
    fn readlink(&self, ino: u64) -> Result<Vec<u8>, Self::Error>;
    fn open(&self, ino: u64, flags: i32) -> Result<Opened, Self::Error>;
    /// True when file contents can never change (no upper layer): then files can be read
    /// without a handle, `read` and `lseek` being called with `fh == 0`.
    fn files_immutable(&self) -> bool;
    fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Self::Error>;
    fn release(&self, ino: u64, fh: u64);
    fn lseek(&self, ino: u64, fh: u64, offset: i64, whence: i32) -> Result<i64, Self::Error>;
    fn opendir(&self, ino: u64) -> Result<Opened, Self::Error>;
    /// True when directory listings can never change (no upper layer): then no handle is
    /// needed, and `readdir` is called with `fh == 0`.
    fn dirs_immutable(&self) -> bool;
    /// Lists entries from `offset` on, calling `add` for each until it returns true (the
    /// reply buffer is full). With `plus`, entries carry attributes and each one `add`
    /// accepts counts as a lookup.
    fn readdir(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> Result<(), Self::Error>;
    fn releasedir(&self, ino: u64, fh: u64);
    fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>, Self::Error>;
    /// The NUL-separated name list.
    fn listxattr(&self, ino: u64) -> Result<Vec<u8>, Self::Error>;
    fn statfs(&self, ino: u64) -> Result<libc::statvfs, Self::Error>;
    fn access(&self, ino: u64, mask: i32, uid: u32, gid: u32) -> Result<(), Self::Error>;
    /// An operation that changes the filesystem, refused on a read-only core.
    fn mutation_error(&self) -> Self::Error;
}

/// How file data reaches applications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileIo {
    /// Kernel passthrough: reads go straight to the layer's file (needs CAP_SYS_ADMIN and a
    /// kernel with FUSE passthrough; falls back to `Cached`). Two round trips per open
    /// (OPEN, RELEASE), none per read, and no second copy in the page cache.
    Passthrough,
    /// No handles at all (immutable files only): the kernel sends no OPEN/RELEASE and keeps
    /// the page cache; cold data comes through READ requests.
    Cached,
    /// Open handles and READ requests served in userspace.
    Handles,
}

/// Tunables of the FUSE session that are not the core's business.
#[derive(Debug, Clone, Copy)]
pub struct AdapterOptions {
    pub file_io: FileIo,
    /// Let the kernel cache directory listings (`FOPEN_CACHE_DIR`).
    pub cache_dirs: bool,
}

/// `fuser::Filesystem` over a [`Core`].
pub struct Adapter<C: Core> {
    core: C,
    opts: AdapterOptions,
    passthrough: passthrough::Backing,
}

impl<C: Core> Adapter<C> {
    pub fn new(core: C, opts: AdapterOptions) -> Self {
        Adapter {
            core,
            opts,
            passthrough: passthrough::Backing::default(),
        }
    }
}

/// Runs one call into the core. A panic is caught, logged and answered with EIO, so the
/// worker thread survives a bug; a failure becomes its errno, logged as it deserves. The one
/// place where either is decided.
fn call<T, E: ToErrno>(op: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, Errno> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(errno_of(op, &e)),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            error!("{op}: internal error ({msg}); answered EIO");
            Err(Errno::EIO)
        }
    }
}

/// The errno of `e`, logged as it deserves (once, here).
fn errno_of<E: ToErrno>(op: &str, e: &E) -> Errno {
    if e.is_unexpected() {
        error!("{op}: {e}");
    } else {
        debug!("{op}: {e}");
    }
    Errno::from_i32(e.errno())
}

fn reply_xattr(reply: ReplyXattr, data: &[u8], size: u32) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

impl<C: Core> Filesystem for Adapter<C> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let want = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_SPLICE_READ
            | InitFlags::FUSE_SPLICE_WRITE
            | InitFlags::FUSE_SPLICE_MOVE
            // The kernel then caches ACLs per inode: `ls -l` asks for
            // system.posix_acl_access on every file, and only the first ask per inode
            // reaches us.
            | InitFlags::FUSE_POSIX_ACL;
        let _ = config.add_capabilities(want & config.capabilities());
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        if self.opts.file_io == FileIo::Passthrough
            && config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH)
        {
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            self.passthrough.set_enabled(ok);
        }
        debug!("init: passthrough {}", self.passthrough.enabled());
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match call("lookup", || self.core.lookup(parent.0, name)) {
            Ok(e) => reply.entry(&e.ttl, &attr::to_fuse(&e.attr), Generation(0)),
            Err(e) if e.code() == libc::ENOENT && self.core.negative_ttl().is_some() => {
                // Node id 0 is a negative entry: the kernel caches the miss for the ttl.
                let ttl = self.core.negative_ttl().unwrap_or_default();
                reply.entry(&ttl, &attr::negative(), Generation(0));
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.core.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match call("getattr", || self.core.getattr(ino.0)) {
            Ok(e) => reply.attr(&e.ttl, &attr::to_fuse_with_ino(&e.attr, ino.0)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match call("readlink", || self.core.readlink(ino.0)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        // Cached mode, or passthrough that the kernel did not grant: without passthrough,
        // handle-less opens beat handles (no OPEN/RELEASE round trips, same page cache).
        let cached = match self.opts.file_io {
            FileIo::Cached => true,
            FileIo::Passthrough => !self.passthrough.enabled(),
            FileIo::Handles => false,
        };
        if cached && self.core.files_immutable() {
            // ENOSYS: the kernel stops sending OPEN/RELEASE, opens with KEEP_CACHE and
            // reads through READ with no handle (fh 0).
            return reply.error(Errno::ENOSYS);
        }
        let opened = match call("open", || self.core.open(ino.0, flags.0)) {
            Ok(o) => o,
            Err(e) => return reply.error(e),
        };
        // We buffer nothing, so close() needs no FLUSH round trip.
        let mut fl = FopenFlags::FOPEN_NOFLUSH;
        if opened.keep_cache {
            fl |= FopenFlags::FOPEN_KEEP_CACHE;
        }
        if let Some(fd) = opened
            .backing
            .as_ref()
            .filter(|_| self.passthrough.enabled())
        {
            match self.passthrough.open(ino.0, opened.fh, fd, &reply) {
                // The kernel refuses (EIO at open) cache flags such as KEEP_CACHE on a
                // passthrough open: the page cache is the backing file's own.
                Some(id) => {
                    return reply.opened_passthrough(
                        FileHandle(opened.fh),
                        FopenFlags::empty(),
                        &id,
                    )
                }
                None => debug!("open: passthrough refused for {}, serving reads", ino.0),
            }
        }
        reply.opened(FileHandle(opened.fh), fl);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match call("read", || self.core.read(ino.0, fh.0, offset, size)) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        // We buffer nothing and leave POSIX locks to the kernel, so close() needs no round
        // trip: ENOSYS makes the kernel stop sending FLUSH altogether.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.passthrough.release(ino.0, fh.0);
        self.core.release(ino.0, fh.0);
        reply.ok();
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match call("lseek", || self.core.lseek(ino.0, fh.0, offset, whence)) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.core.dirs_immutable() {
            // ENOSYS tells the kernel we keep no directory state: from now on it sends no
            // OPENDIR/RELEASEDIR (two round trips per directory saved) and caches listings
            // itself (it then opens directories with KEEP_CACHE | CACHE_DIR).
            return reply.error(Errno::ENOSYS);
        }
        match call("opendir", || self.core.opendir(ino.0)) {
            Ok(o) => {
                let mut fl = FopenFlags::empty();
                if o.keep_cache && self.opts.cache_dirs {
                    fl |= FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR;
                }
                reply.opened(FileHandle(o.fh), fl)
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = call("readdir", || {
            self.core.readdir(ino.0, fh.0, offset, false, &mut |d| {
                let kind = attr::kind(d.mode);
                reply.add(
                    INodeNo(d.ino),
                    d.next_offset,
                    kind,
                    OsStr::from_bytes_compat(d.name),
                )
            })
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = call("readdirplus", || {
            self.core.readdir(ino.0, fh.0, offset, true, &mut |d| {
                let Some(e) = d.entry else { return false };
                let fa = attr::to_fuse_with_ino(&e.attr, d.ino);
                reply.add(
                    INodeNo(d.ino),
                    d.next_offset,
                    OsStr::from_bytes_compat(d.name),
                    &e.ttl,
                    &fa,
                    Generation(0),
                )
            })
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.core.releasedir(ino.0, fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match call("statfs", || self.core.statfs(ino.0)) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match call("getxattr", || self.core.getxattr(ino.0, name)) {
            Ok(v) => reply_xattr(reply, &v, size),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match call("listxattr", || self.core.listxattr(ino.0)) {
            Ok(v) => reply_xattr(reply, &v, size),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match call("access", || {
            self.core.access(ino.0, mask.bits(), req.uid(), req.gid())
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    // Every mutating request: the core decides (EROFS on a read-only stack).
    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(errno_of("setattr", &self.core.mutation_error()));
    }

    fn mknod(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _r: u32,
        reply: ReplyEntry,
    ) {
        reply.error(errno_of("mknod", &self.core.mutation_error()));
    }

    fn mkdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, reply: ReplyEntry) {
        reply.error(errno_of("mkdir", &self.core.mutation_error()));
    }

    fn unlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(errno_of("unlink", &self.core.mutation_error()));
    }

    fn rmdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(errno_of("rmdir", &self.core.mutation_error()));
    }

    fn symlink(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _l: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(errno_of("symlink", &self.core.mutation_error()));
    }

    fn rename(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _np: INodeNo,
        _nn: &OsStr,
        _f: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(errno_of("rename", &self.core.mutation_error()));
    }

    fn link(&self, _req: &Request, _i: INodeNo, _np: INodeNo, _nn: &OsStr, reply: ReplyEntry) {
        reply.error(errno_of("link", &self.core.mutation_error()));
    }

    fn setxattr(
        &self,
        _req: &Request,
        _i: INodeNo,
        _n: &OsStr,
        _v: &[u8],
        _f: i32,
        _p: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(errno_of("setxattr", &self.core.mutation_error()));
    }

    fn removexattr(&self, _req: &Request, _i: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(errno_of("removexattr", &self.core.mutation_error()));
    }

    fn create(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _f: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply.error(errno_of("create", &self.core.mutation_error()));
    }
}

/// `OsStr::from_bytes` without importing the unix extension trait at every call site.
trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &OsStr;
}

impl FromBytesCompat for OsStr {
    fn from_bytes_compat(b: &[u8]) -> &OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}
