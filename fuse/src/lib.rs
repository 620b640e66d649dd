//! The thin adapter between fuser and a FUSE-agnostic filesystem core.
//!
//! [`Core`] is what the adapter needs from a filesystem, in plain std/libc types; the
//! layerfs core implements it without knowing fuser exists. [`Adapter`] implements
//! `fuser::Filesystem`: one small method per request, each one call into the core and one
//! `match` that replies with data or with the error's errno ([`ToErrno`], decided by the
//! core in one place). FUSE-only concerns live here: reply encoding, passthrough backing
//! ids, kernel capabilities, and the session set-up ([`mount`]).

// The adapter needs no `unsafe`: the wire (vendor/fuser) holds it.
#![forbid(unsafe_code)]

mod attr;
mod core;
mod counts;
mod init;
mod op;
mod passthrough;
mod reply;
mod resend;
mod session;
mod supervised;

pub use crate::core::*;
pub use crate::counts::Counts;
pub use crate::op::Op;
pub use crate::session::{mount, Mounted, SessionOptions};
pub use crate::supervised::{clone_connection, mount_connection, serve_connection, Gate, Serving};

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use fuser::{
    AccessFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

pub use fuser;

use reply::{call, ctx, reply_empty, reply_entry, reply_xattr};

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
    /// POSIX ACLs checked by the kernel (`FUSE_POSIX_ACL`); off with `noacl` or an upper
    /// that cannot store them.
    pub acl: bool,
    /// Where the kernel does not pass files through (rootless): lower files of at least
    /// this many bytes opened read-only on a writable mount are read with direct I/O
    /// (`FOPEN_DIRECT_IO`), so the layer's own page cache is their only copy in memory and
    /// every mount of a layer shares it. Only where the kernel lets such files be mapped
    /// shared (`FUSE_DIRECT_IO_ALLOW_MMAP`, 6.6+). `None`: through FUSE's page cache.
    pub lower_direct_io: Option<u64>,
}

/// `fuser::Filesystem` over a [`Core`].
pub struct Adapter<C: Core> {
    core: C,
    opts: AdapterOptions,
    passthrough: passthrough::Backing,
    /// The kernel leaves the umask of new entries to us (`FUSE_DONT_MASK`).
    dont_mask: bool,
    /// Requests per opcode, when counting is on ([`counts::ENV`]).
    counts: Option<Arc<Counts>>,
    /// The kernel caches writes (`FUSE_WRITEBACK_CACHE`), for a core whose files change.
    writeback: bool,
    /// The kernel maps direct-I/O files shared (`FUSE_DIRECT_IO_ALLOW_MMAP` granted) and
    /// `lower_direct_io` is on: large lower files are opened with direct I/O.
    lower_direct: bool,
}

impl<C: Core> Adapter<C> {
    pub fn new(core: C, opts: AdapterOptions) -> Self {
        Adapter {
            core,
            opts,
            passthrough: passthrough::Backing::default(),
            dont_mask: false,
            counts: None,
            writeback: false,
            lower_direct: false,
        }
    }

    /// Counts requests into `counts`.
    pub fn with_counts(mut self, counts: Arc<Counts>) -> Self {
        self.counts = Some(counts);
        self
    }

    /// Open flags for the core: with the writeback cache the kernel may read pages of a
    /// file opened write-only (to fill a partly written page), so the handle must read.
    fn open_flags(&self, flags: i32) -> i32 {
        if self.writeback && flags & libc::O_ACCMODE == libc::O_WRONLY {
            (flags & !libc::O_ACCMODE) | libc::O_RDWR
        } else {
            flags
        }
    }

    /// Whether `opened` (not passed through) is read with direct I/O: a lower file of at
    /// least `lower_direct_io` bytes, where the kernel allows mapping such files.
    fn direct_io(&self, opened: &Opened) -> bool {
        match (self.opts.lower_direct_io, opened.lower_size) {
            (Some(min), Some(size)) => self.lower_direct && size >= min,
            _ => false,
        }
    }

    /// Enters request `op` (the adapter's first step in each): counted when counting is on;
    /// its call into the core goes by its name.
    fn enter(&self, op: Op) -> Op {
        if let Some(c) = &self.counts {
            c.add(op);
        }
        op
    }
}

impl<C: Core> Filesystem for Adapter<C> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        self.negotiate(config);
        Ok(())
    }

    /// Not supported: ENOSYS makes the kernel stop asking and report every file ready
    /// (`DEFAULT_POLLMASK`), which is what the kernel's overlay answers for the regular
    /// files of the usual upper filesystems. Answered quietly (fuser's default logs a
    /// warning for each call).
    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        _events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        self.enter(Op::Poll);
        reply.error(Errno::ENOSYS);
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let op = self.enter(Op::Lookup);
        match call(op, || self.core.lookup(parent.0, name)) {
            Ok(e) => reply_entry(reply, Ok(e)),
            Err(e) if e.code() == libc::ENOENT && self.core.negative_ttl().is_some() => {
                // Node id 0 is a negative entry: the kernel caches the miss for the ttl.
                let ttl = self.core.negative_ttl().unwrap_or_default();
                reply.entry(&ttl, &attr::negative(), Generation(0));
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let op = self.enter(Op::Forget);
        let _ = call(op, || {
            self.core.forget(ino.0, nlookup);
            Ok::<_, C::Error>(())
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let op = self.enter(Op::Getattr);
        match call(op, || self.core.getattr(ino.0)) {
            Ok(e) => reply.attr(&e.ttl, &attr::to_fuse(&e.attr)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let op = self.enter(Op::Readlink);
        match call(op, || self.core.readlink(ino.0)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn open(
        &self,
        req: &Request,
        ino: INodeNo,
        flags: OpenFlags,
        kill_suidgid: bool,
        reply: ReplyOpen,
    ) {
        let op = self.enter(Op::Open);
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
        let flags = self.open_flags(flags.0);
        let opened = match call(op, || self.core.open(ino.0, flags, kill_suidgid, ctx(req))) {
            Ok(o) => o,
            Err(e) => return reply.error(e),
        };
        // We buffer nothing, so close() needs no FLUSH round trip.
        let mut fl = FopenFlags::FOPEN_NOFLUSH;
        if opened.keep_cache {
            fl |= FopenFlags::FOPEN_KEEP_CACHE;
        }
        let backing = opened.backing.as_ref();
        let id = self
            .passthrough
            .open(ino.0, opened.fh, backing, |fd| reply.open_backing(fd));
        if let Some(id) = id {
            // The kernel refuses (EIO at open) cache flags such as KEEP_CACHE on a
            // passthrough open: the page cache is the backing file's own.
            let fh = FileHandle(opened.fh);
            return reply.opened_passthrough(fh, FopenFlags::FOPEN_NOFLUSH, &id);
        }
        if self.direct_io(&opened) {
            // No page cache of ours for it: every read reaches the core, which reads the
            // layer's file through the layer's own cache (shared by every mount).
            fl = FopenFlags::FOPEN_NOFLUSH | FopenFlags::FOPEN_DIRECT_IO;
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
        let op = self.enter(Op::Read);
        match call(op, || self.core.read(ino.0, fh.0, offset, size)) {
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
        self.enter(Op::Flush);
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
        let op = self.enter(Op::Release);
        self.passthrough.release(fh.0);
        let r = call(op, || {
            self.core.release(ino.0, fh.0);
            Ok::<_, C::Error>(())
        });
        reply_empty(reply, r);
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
        let op = self.enter(Op::Lseek);
        match call(op, || self.core.lseek(ino.0, fh.0, offset, whence)) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.enter(Op::Opendir);
        if self.core.changes_behind() {
            // Directories change behind the mount: no listing kept by the kernel.
            return reply.opened(FileHandle(0), FopenFlags::empty());
        }
        // ENOSYS tells the kernel we keep no directory state: from now on it sends no
        // OPENDIR/RELEASEDIR (two round trips per directory saved), opens directories with
        // KEEP_CACHE | CACHE_DIR and caches listings itself, and READDIR comes with fh 0.
        // The kernel drops its copy of a listing when it changes the directory itself;
        // what changes without its knowing, the core tells it ([`Invalidate`]).
        reply.error(Errno::ENOSYS);
    }

    /// Sent only where OPENDIR was answered (`changes_behind`): no directory state here.
    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.enter(Op::Releasedir);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let op = self.enter(Op::Readdir);
        let r = call(op, || {
            self.core.readdir(ino.0, offset, false, &mut |d| {
                let kind = attr::kind(d.mode);
                reply.add(
                    INodeNo(d.ino),
                    d.next_offset,
                    kind,
                    OsStr::from_bytes(d.name),
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
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let op = self.enter(Op::Readdirplus);
        let r = call(op, || {
            self.core.readdir(ino.0, offset, true, &mut |d| {
                let Some(e) = d.entry else { return false };
                reply.add_node(
                    INodeNo(e.node),
                    Generation(e.generation),
                    d.next_offset,
                    OsStr::from_bytes(d.name),
                    &e.ttl,
                    &attr::to_fuse(&e.attr),
                )
            })
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let op = self.enter(Op::Statfs);
        match call(op, || self.core.statfs(ino.0)) {
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
        let op = self.enter(Op::Getxattr);
        match call(op, || self.core.getxattr(ino.0, name)) {
            Ok(v) => reply_xattr(reply, &v, size),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let op = self.enter(Op::Listxattr);
        match call(op, || self.core.listxattr(ino.0)) {
            Ok(v) => reply_xattr(reply, &v, size),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let op = self.enter(Op::Access);
        match call(op, || {
            self.core.access(ino.0, mask.bits(), req.uid(), req.gid())
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    // Every mutating request: the core decides (EROFS on a read-only stack).
    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<fuser::TimeOrNow>,
        mtime: Option<fuser::TimeOrNow>,
        ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        kill_suidgid: bool,
        reply: ReplyAttr,
    ) {
        let op = self.enter(Op::Setattr);
        let time = |t: fuser::TimeOrNow| match t {
            fuser::TimeOrNow::Now => SetTime::Now,
            fuser::TimeOrNow::SpecificTime(t) => SetTime::At(t),
        };
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
            fh: fh.map(|f| f.0),
            ctime: ctime.is_some(),
            kill_setid: kill_suidgid,
        };
        match call(op, || self.core.setattr(ino.0, &set, ctx(req))) {
            Ok(e) => reply.attr(&e.ttl, &attr::to_fuse(&e.attr)),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let op = self.enter(Op::Mknod);
        let ctx = self.ctx_new(req, umask);
        let r = call(op, || {
            self.core.mknod(parent.0, name, mode, u64::from(rdev), ctx)
        });
        reply_entry(reply, resend::made(req, r, || self.found(parent.0, name)));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let op = self.enter(Op::Mkdir);
        let ctx = self.ctx_new(req, umask);
        let r = call(op, || self.core.mkdir(parent.0, name, mode, ctx));
        reply_entry(reply, resend::made(req, r, || self.found(parent.0, name)));
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let op = self.enter(Op::Unlink);
        let r = call(op, || self.core.unlink(parent.0, name));
        reply_empty(reply, resend::removed(req, r));
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let op = self.enter(Op::Rmdir);
        let r = call(op, || self.core.rmdir(parent.0, name));
        reply_empty(reply, resend::removed(req, r));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let op = self.enter(Op::Symlink);
        use std::os::unix::ffi::OsStrExt;
        let t = target.as_os_str().as_bytes();
        let r = call(op, || self.core.symlink(parent.0, name, t, ctx(req)));
        reply_entry(reply, resend::made(req, r, || self.found(parent.0, name)));
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let op = self.enter(Op::Rename);
        let r = self.renamed(req, flags.bits(), || {
            call(op, || {
                self.core
                    .rename(parent.0, name, newparent.0, newname, flags.bits())
            })
        });
        reply_empty(reply, r);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let op = self.enter(Op::Link);
        let r = call(op, || self.core.link(ino.0, newparent.0, newname));
        reply_entry(
            reply,
            resend::made(req, r, || self.found(newparent.0, newname)),
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        kill_sgid: bool,
        reply: ReplyEmpty,
    ) {
        let op = self.enter(Op::Setxattr);
        let r = call(op, || {
            self.core.setxattr(ino.0, name, value, flags, kill_sgid)
        });
        reply_empty(reply, r);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let op = self.enter(Op::Removexattr);
        reply_empty(reply, call(op, || self.core.removexattr(ino.0, name)));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        // A file CREATE makes has no set-id bits to lose: the mark needs no answer.
        _kill_suidgid: bool,
        reply: fuser::ReplyCreate,
    ) {
        let op = self.enter(Op::Create);
        let ctx = self.ctx_new(req, umask);
        let flags = self.open_flags(flags);
        let r = call(op, || self.core.create(parent.0, name, mode, flags, ctx));
        let r = resend::made(req, r, || self.found_open(parent.0, name, flags, ctx));
        self.reply_created(reply, r);
    }

    fn tmpfile(
        &self,
        req: &Request,
        parent: INodeNo,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        let op = self.enter(Op::Tmpfile);
        let ctx = self.ctx_new(req, umask);
        let flags = self.open_flags(flags);
        let r = call(op, || self.core.tmpfile(parent.0, mode, flags, ctx));
        self.reply_created(reply, r);
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        let op = self.enter(Op::Write);
        let kill = write_flags.contains(fuser::WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match call(op, || {
            self.core.write(ino.0, fh.0, offset, data, ctx(req), kill)
        }) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let op = self.enter(Op::Fsync);
        reply_empty(reply, call(op, || self.core.fsync(ino.0, fh.0, datasync)));
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let op = self.enter(Op::Fsyncdir);
        let r = call(op, || self.core.fsyncdir(ino.0, fh.0, datasync));
        reply_empty(reply, r);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let op = self.enter(Op::Fallocate);
        let r = call(op, || {
            self.core.fallocate(ino.0, fh.0, offset, length, mode)
        });
        reply_empty(reply, r);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        self.enter(Op::Ioctl);
        // No file here is a terminal or takes device ioctls: what a plain file answers.
        reply.error(Errno::ENOTTY);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: fuser::ReplyWrite,
    ) {
        let op = self.enter(Op::CopyFileRange);
        let r = call(op, || {
            self.core.copy_file_range(
                (ino_in.0, fh_in.0, offset_in),
                (ino_out.0, fh_out.0, offset_out),
                len,
            )
        });
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }
}

impl<C: Core> Adapter<C> {
    /// Answers a CREATE or TMPFILE: the new node, opened (passed through when it can be).
    fn reply_created(&self, reply: fuser::ReplyCreate, r: Result<(Entry, Opened), Errno>) {
        let (e, o) = match r {
            Ok(v) => v,
            Err(e) => return reply.error(e),
        };
        let backing = o.backing.as_ref();
        let id = self
            .passthrough
            .open(e.node, o.fh, backing, |fd| reply.open_backing(fd));
        reply.created_node(
            INodeNo(e.node),
            Generation(e.generation),
            &e.ttl,
            &attr::to_fuse(&e.attr),
            FileHandle(o.fh),
            FopenFlags::FOPEN_NOFLUSH,
            id.as_deref(),
        );
    }

    /// The context of a request creating an entry, with its umask when ours to apply.
    fn ctx_new(&self, req: &Request, umask: u32) -> Ctx {
        Ctx {
            umask: if self.dont_mask { umask & 0o777 } else { 0 },
            ..ctx(req)
        }
    }
}
