//! What the adapter needs from a filesystem core, in plain std/libc types.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

/// Maps a core error to the errno the application sees.
pub trait ToErrno: std::fmt::Display {
    fn errno(&self) -> i32;
    /// True when the failure deserves an error log line (not an everyday ENOENT).
    fn is_unexpected(&self) -> bool {
        false
    }
}

/// An entry handed to the kernel: the node it is, its attributes and how long the kernel may
/// cache them.
#[derive(Clone, Copy)]
pub struct Entry {
    /// The core's name for the node, what the kernel passes back in later calls: chosen by
    /// the core, apart from `attr.st_ino` (the number `stat` shows), so two nodes can show
    /// one number. `1` is the root; never 0.
    pub node: u64,
    /// Told apart from an earlier node that had the same id (0 when ids are never reused).
    pub generation: u64,
    /// `st_ino` is the inode number applications see.
    pub attr: libc::stat,
    pub ttl: Duration,
}

/// One directory entry for readdir; `entry` is set for readdirplus.
pub struct DirEntry<'a> {
    /// The inode number (`d_ino`), not the node id (that is `entry.node`).
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
    /// The real file, for kernel passthrough when the kernel allows it.
    pub backing: Option<BackingFile>,
    /// `Some(size)` when the handle reads a layer's file (a lower file opened read-only on a
    /// writable mount, not passed through): the layer's filesystem already caches it, so
    /// the kernel may read it with direct I/O rather than keep a second copy
    /// ([`AdapterOptions::lower_direct_io`](crate::AdapterOptions)).
    pub lower_size: Option<u64>,
}

/// A real file the kernel may read (and write) directly, bypassing the core.
pub struct BackingFile {
    pub fd: Arc<OwnedFd>,
    /// Which file it is (`st_dev`, `st_ino`): the kernel wants every passthrough open of a
    /// node to use one and the same backing file.
    pub file: (u64, u64),
}

/// What the kernel must forget because the core changed it on its own (a copy-up, say),
/// not as the direct result of the request the kernel sent.
#[derive(Debug, Clone)]
pub enum Inval {
    /// The attributes of a node (its page cache stays).
    Attr(u64),
    /// The attributes and page cache of a node. Not from inside a request (see below).
    Inode(u64),
    /// The entry `name` of directory node `parent`. Not from inside a request.
    Entry(u64, Box<[u8]>),
}

/// The core's way to tell the kernel to drop what it cached; cheap to clone, a no-op until
/// the session connects it. Delivered at once, from inside the request that made the
/// change, so the kernel can never see the old value after our reply: dropping attributes
/// takes no lock the kernel could be holding while it waits for that reply (dropping an
/// entry or page-cache range would, and would have to be sent from elsewhere).
#[derive(Clone, Default)]
pub struct Invalidate {
    notifier: Arc<OnceLock<fuser::Notifier>>,
}

impl std::fmt::Debug for Invalidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.notifier.get().is_some() {
            "Invalidate(connected)"
        } else {
            "Invalidate(not connected)"
        })
    }
}

impl Invalidate {
    pub fn send(&self, what: Inval) {
        let Some(n) = self.notifier.get() else { return };
        let r = match &what {
            // A negative offset: attributes only.
            Inval::Attr(ino) => n.inval_inode(fuser::INodeNo(*ino), -1, 0),
            Inval::Inode(ino) => n.inval_inode(fuser::INodeNo(*ino), 0, 0),
            Inval::Entry(parent, name) => {
                use std::os::unix::ffi::OsStrExt;
                let name = std::ffi::OsStr::from_bytes(name);
                n.inval_entry(fuser::INodeNo(*parent), name)
            }
        };
        match r {
            Ok(()) => {}
            // The kernel no longer holds the node: nothing to drop.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => log::debug!("invalidation {what:?}: {e}"),
        }
    }

    /// Connects the session's notifier.
    pub(crate) fn connect(&self, n: fuser::Notifier) {
        let _ = self.notifier.set(n);
    }
}

/// What the adapter needs from a filesystem core. Node ids are `u64` chosen by the core
/// ([`Entry::node`]), `1` is the root; every `ino` argument below is a node id.
pub trait Core: Send + Sync + 'static {
    type Error: ToErrno;

    /// Where the core sends invalidations, if it ever changes what the kernel cached on its
    /// own (a read-only core never does).
    fn invalidate(&self) -> Option<Invalidate> {
        None
    }

    /// Whether the kernel granted passthrough for this session (`Opened::backing` is used
    /// only then); called once, at INIT. A core may then offer backing files it would not
    /// otherwise.
    fn passthrough_granted(&self, on: bool) {
        let _ = on;
    }

    /// Request `unique` (a `RENAME_EXCHANGE`, which done twice undoes itself) is done;
    /// recorded where a daemon restarted on this connection finds it (a supervised mount),
    /// before the answer goes.
    fn request_done(&self, unique: u64) {
        let _ = unique;
    }

    /// Whether an earlier daemon on this connection recorded request `unique` done.
    fn was_done(&self, unique: u64) -> bool {
        let _ = unique;
        false
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<Entry, Self::Error>;
    /// How long the kernel may remember that a name does not exist (`None`: not at all).
    fn negative_ttl(&self) -> Option<Duration>;
    fn forget(&self, ino: u64, nlookup: u64);
    fn getattr(&self, ino: u64) -> Result<Entry, Self::Error>;
    fn readlink(&self, ino: u64) -> Result<Vec<u8>, Self::Error>;
    /// Opens a file; `kill_setid`: an `O_TRUNC` open by a caller without `CAP_FSETID` (the
    /// kernel's mark, see [`Core::drops_setid_bits`]).
    fn open(&self, ino: u64, flags: i32, kill_setid: bool, ctx: Ctx)
        -> Result<Opened, Self::Error>;
    /// True when file contents can never change (no upper layer): then files can be read
    /// without a handle, `read` and `lseek` being called with `fh == 0`.
    fn files_immutable(&self) -> bool;
    /// True when files may change without going through the mount (lowers changed behind
    /// it, `timeout=`): then the kernel keeps no size or times of its own (no writeback
    /// cache), drops a file's pages when getattr shows it changed, and keeps no listings.
    fn changes_behind(&self) -> bool {
        false
    }
    fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Self::Error>;
    fn release(&self, ino: u64, fh: u64);
    fn lseek(&self, ino: u64, fh: u64, offset: i64, whence: i32) -> Result<i64, Self::Error>;
    /// Lists entries of directory `ino` from `offset` on, calling `add` for each until it
    /// returns true (the reply buffer is full). With `plus`, entries carry attributes and
    /// each one `add` accepts counts as a lookup.
    ///
    /// Directories have no handles (the adapter answers OPENDIR with ENOSYS, so the kernel
    /// opens them without asking and caches their listings itself): the core keeps the
    /// listings itself, takes one afresh at every call from offset 0 (the kernel asks from
    /// 0 only when its own copy is missing or the directory changed), and a call from a
    /// later offset continues the listing that offset came from (offsets are the core's
    /// own; one saved by another process must still resume in the right place).
    fn readdir(
        &self,
        ino: u64,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> Result<(), Self::Error>;
    fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>, Self::Error>;
    /// The NUL-separated name list.
    fn listxattr(&self, ino: u64) -> Result<Vec<u8>, Self::Error>;
    fn statfs(&self, ino: u64) -> Result<libc::statvfs, Self::Error>;
    fn access(&self, ino: u64, mask: i32, uid: u32, gid: u32) -> Result<(), Self::Error>;
    /// An operation that changes the filesystem, refused on a read-only core.
    fn mutation_error(&self) -> Self::Error;

    // Every operation below changes the filesystem; a read-only core keeps the defaults,
    // which refuse with `mutation_error` (EROFS).

    fn setattr(&self, ino: u64, set: &SetAttr, ctx: Ctx) -> Result<Entry, Self::Error> {
        let _ = (ino, set, ctx);
        Err(self.mutation_error())
    }
    /// A regular file, fifo, socket or device (`mode` carries the type).
    fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u64,
        ctx: Ctx,
    ) -> Result<Entry, Self::Error> {
        let _ = (parent, name, mode, rdev, ctx);
        Err(self.mutation_error())
    }
    fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, ctx: Ctx) -> Result<Entry, Self::Error> {
        let _ = (parent, name, mode, ctx);
        Err(self.mutation_error())
    }
    fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &[u8],
        ctx: Ctx,
    ) -> Result<Entry, Self::Error> {
        let _ = (parent, name, target, ctx);
        Err(self.mutation_error())
    }
    fn link(&self, ino: u64, parent: u64, name: &OsStr) -> Result<Entry, Self::Error> {
        let _ = (ino, parent, name);
        Err(self.mutation_error())
    }
    fn unlink(&self, parent: u64, name: &OsStr) -> Result<(), Self::Error> {
        let _ = (parent, name);
        Err(self.mutation_error())
    }
    fn rmdir(&self, parent: u64, name: &OsStr) -> Result<(), Self::Error> {
        let _ = (parent, name);
        Err(self.mutation_error())
    }
    /// `flags`: `RENAME_NOREPLACE`, `RENAME_EXCHANGE` (`RENAME_WHITEOUT` is refused).
    fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<(), Self::Error> {
        let _ = (parent, name, newparent, newname, flags);
        Err(self.mutation_error())
    }
    /// Creates and opens a regular file (`kill_setid` as for [`Core::open`]).
    fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        ctx: Ctx,
    ) -> Result<(Entry, Opened), Self::Error> {
        let _ = (parent, name, mode, flags, ctx);
        Err(self.mutation_error())
    }
    /// Creates and opens a regular file with no name (`O_TMPFILE`) in directory `parent`;
    /// `linkat` may give it one later. Its attributes show no link (the kernel's FUSE
    /// client keeps the count it is given; 0 lets it refuse a link of an `O_EXCL` one).
    fn tmpfile(
        &self,
        parent: u64,
        mode: u32,
        flags: i32,
        ctx: Ctx,
    ) -> Result<(Entry, Opened), Self::Error> {
        let _ = (parent, mode, flags, ctx);
        Err(self.mutation_error())
    }
    /// True when the core drops the set-id bits a write, truncation or chown takes away,
    /// exactly as the VFS would (then the kernel leaves that to it: `FUSE_HANDLE_KILLPRIV_V2`,
    /// and stops asking for `security.capability` before every write). The kernel then
    /// marks what must drop them: a write, truncation (`setattr` with a size) or `O_TRUNC`
    /// open by a caller without `CAP_FSETID` (`kill_setid`, `SetAttr::kill_setid`), a chown
    /// of a non-directory (`SetAttr::kill_setid`, whoever asks); and an empty `setattr` is
    /// its own change before fallocate, copy_file_range and cached writes, sent only when
    /// it found bits that the caller's change must drop.
    fn drops_setid_bits(&self) -> bool {
        false
    }
    /// `kill_setid`: the caller (`ctx`) lacks `CAP_FSETID` (see [`Core::drops_setid_bits`]).
    fn write(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        ctx: Ctx,
        kill_setid: bool,
    ) -> Result<u32, Self::Error> {
        let _ = (ino, fh, offset, data, ctx, kill_setid);
        Err(self.mutation_error())
    }
    fn fsync(&self, ino: u64, fh: u64, datasync: bool) -> Result<(), Self::Error> {
        let _ = (ino, fh, datasync);
        Err(self.mutation_error())
    }
    fn fsyncdir(&self, ino: u64, fh: u64, datasync: bool) -> Result<(), Self::Error> {
        let _ = (ino, fh, datasync);
        Err(self.mutation_error())
    }
    /// `kill_sgid`: the kernel's `FUSE_SETXATTR_ACL_KILL_SGID`: an access ACL set by a caller
    /// who may not keep the set-gid bit; the bit goes once the ACL is set.
    fn setxattr(
        &self,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        kill_sgid: bool,
    ) -> Result<(), Self::Error> {
        let _ = (ino, name, value, flags, kill_sgid);
        Err(self.mutation_error())
    }
    fn removexattr(&self, ino: u64, name: &OsStr) -> Result<(), Self::Error> {
        let _ = (ino, name);
        Err(self.mutation_error())
    }
    fn fallocate(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        len: u64,
        mode: i32,
    ) -> Result<(), Self::Error> {
        let _ = (ino, fh, offset, len, mode);
        Err(self.mutation_error())
    }
    /// Copies `len` bytes from one open file to another; returns the count copied.
    fn copy_file_range(
        &self,
        src: (u64, u64, u64),
        dst: (u64, u64, u64),
        len: u64,
    ) -> Result<u32, Self::Error> {
        let _ = (src, dst, len);
        Err(self.mutation_error())
    }
}

/// Who asks: the caller's ids (as the kernel reports them), for new entries.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// The caller's umask, for a new entry, when the kernel left applying it to us
    /// (`FUSE_DONT_MASK`: it is not applied under a default ACL); else 0 (already applied).
    pub umask: u32,
}

/// A time to set: a given one or the current one.
#[derive(Debug, Clone, Copy)]
pub enum SetTime {
    Now,
    At(SystemTime),
}

/// What a `setattr` changes (`None`: unchanged).
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    /// The open file the change came through (ftruncate, fchmod...), if any.
    pub fh: Option<u64>,
    /// The change time is to be set (with the kernel's writeback cache). Alone, it is a
    /// chown that changes no id, which drops set-id bits.
    pub ctime: bool,
    /// The kernel asks for the set-id bits to go (`FATTR_KILL_SUIDGID`: a chown of a
    /// non-directory, or a truncation by a caller without `CAP_FSETID`).
    pub kill_setid: bool,
}
