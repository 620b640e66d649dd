//! Safe wrappers over the raw syscalls layerfs needs.
//!
//! Everything that touches a layer goes through here. The rules:
//! - calls are fd-relative (`*at`) and take a single path component where they can, so a
//!   symlink inside a layer is never followed on the host side;
//! - whole relative paths go through `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`;
//! - results are `io::Result`, fds are `OwnedFd`, and each `unsafe` says why it is sound.
//!
//! The calls go through rustix (its raw-syscall backend, typed flags, no `unsafe` here) where
//! it has them; what is still hand-written over libc, and why, is listed in
//! docs/ARCHITECTURE.md (`sys/`): file handles, `fork`, `exec`, signal masks, `unshare`,
//! zeroing the libc structs the callers take.
//!
//! Hot paths (a request's `fstatat`, `getdents`, `pread`, `getxattr`) allocate nothing the
//! libc versions did not: names are passed as the borrowed `&CStr` they come as, and the
//! `/proc/self/fd/N/NAME` paths of the xattr calls are built on the stack ([`ProcPath`]).

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

/// A named failpoint at the top of a wrapper (`fail` crate): compiled in only with the
/// `failpoints` feature, where a test can make the wrapper return an error instead of
/// making the call (src/sys/faults.rs). Nothing at all without the feature.
macro_rules! fault {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name, |arg| Err($crate::sys::faults::injected(arg)));
    };
}

#[cfg(feature = "failpoints")]
pub mod faults;

/// `struct stat` as the kernel fills it.
pub type Stat = libc::stat;

/// A `stat` of all zeroes (tests and builders fill in the fields they need).
pub fn zeroed_stat() -> Stat {
    // SAFETY: `libc::stat` is plain data (integers only); all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Maps `file` read-only. The caller promises the file is not modified while mapped (a
/// change would show in the map; a truncation would fault): for files written once under
/// a temporary name and renamed into place.
pub fn map_immutable(file: &std::fs::File) -> io::Result<memmap2::Mmap> {
    // SAFETY: the caller's promise above: the mapped bytes do not change under us.
    unsafe { memmap2::Mmap::map(file) }
}

/// The access and modification times of `st`, as `utimensat` takes them.
pub fn times_of(st: &Stat) -> (libc::timespec, libc::timespec) {
    let at = libc::timespec {
        tv_sec: st.st_atime,
        tv_nsec: st.st_atime_nsec,
    };
    let mt = libc::timespec {
        tv_sec: st.st_mtime,
        tv_nsec: st.st_mtime_nsec,
    };
    (at, mt)
}

/// A libc return value as an `io::Result` (for the calls still made through libc).
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The `O_*` flags the wrappers take (libc's `c_int`, as the callers spell them) as rustix's
/// type, every bit kept.
pub(crate) fn oflags(flags: libc::c_int) -> OFlags {
    OFlags::from_bits_retain(flags as u32)
}

/// A mode (permission bits, and the file type where the call takes one) as rustix's type,
/// every bit kept: the kernel masks it as it always did.
pub(crate) fn mode(mode: u32) -> Mode {
    Mode::from_bits_retain(mode)
}

/// The `AT_*` flags as rustix's type, every bit kept.
pub(crate) fn at_flags(flags: libc::c_int) -> AtFlags {
    AtFlags::from_bits_retain(flags as u32)
}

/// rustix's `struct stat` (the kernel's, on this backend) as the libc one the callers use.
/// Field by field: the layouts match on x86_64 but a copy needs no `unsafe`, and costs
/// nothing beside the syscall.
#[allow(clippy::unnecessary_cast)] // the field types differ by target
fn libc_stat(s: rustix::fs::Stat) -> Stat {
    let mut st = zeroed_stat();
    st.st_dev = s.st_dev as _;
    st.st_ino = s.st_ino as _;
    st.st_nlink = s.st_nlink as _;
    st.st_mode = s.st_mode as _;
    st.st_uid = s.st_uid as _;
    st.st_gid = s.st_gid as _;
    st.st_rdev = s.st_rdev as _;
    st.st_size = s.st_size as _;
    st.st_blksize = s.st_blksize as _;
    st.st_blocks = s.st_blocks as _;
    st.st_atime = s.st_atime as _;
    st.st_atime_nsec = s.st_atime_nsec as _;
    st.st_mtime = s.st_mtime as _;
    st.st_mtime_nsec = s.st_mtime_nsec as _;
    st.st_ctime = s.st_ctime as _;
    st.st_ctime_nsec = s.st_ctime_nsec as _;
    st
}

/// A path or name as a C string; a NUL inside is reported as `EINVAL`.
pub fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens a host directory given by the user (layer roots, the mountpoint). This is the one
/// place that follows symlinks: lower dirs may be symlinks (podman's `l/ID`), resolved once.
pub fn open_host_dir(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rustix::fs::open(path, flags, Mode::empty())?)
}

/// The path the kernel has for an open fd (`/proc/self/fd/N`).
pub fn fd_path(fd: BorrowedFd<'_>) -> io::Result<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC)` for one path component.
pub fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    fault!("sys::openat");
    let flags = oflags(flags | libc::O_NOFOLLOW | libc::O_CLOEXEC);
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
}

/// Opens a subdirectory (one component) without following a symlink.
pub fn open_subdir(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY)
}

/// Opens `rel` (a relative path, possibly several components) strictly beneath `root`,
/// refusing any symlink and any `..` escape: the kernel enforces it (`openat2`).
pub fn open_beneath(root: BorrowedFd<'_>, rel: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    openat2(root, rel, flags | libc::O_NOFOLLOW, resolve)
}

/// Opens `rel` as if `root` were `/`: symlinks are followed, absolute ones and `..` staying
/// inside `root` (`openat2` with `RESOLVE_IN_ROOT`), as a path inside a container resolves.
/// The last component too, unless `flags` has `O_NOFOLLOW`.
pub fn open_in_root(root: BorrowedFd<'_>, rel: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    openat2(
        root,
        rel,
        flags,
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

/// The one `openat2` call of `open_beneath` and `open_in_root`: `flags` with `O_CLOEXEC`,
/// no mode (neither creates), resolved as `resolve` says.
fn openat2(
    root: BorrowedFd<'_>,
    rel: &CStr,
    flags: libc::c_int,
    resolve: ResolveFlags,
) -> io::Result<OwnedFd> {
    let flags = oflags(flags | libc::O_CLOEXEC);
    Ok(rustix::fs::openat2(
        root,
        rel,
        flags,
        Mode::empty(),
        resolve,
    )?)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(libc_stat(st))
}

/// `fstat(fd)`.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    Ok(libc_stat(rustix::fs::fstat(fd)?))
}

/// `fstatvfs(fd)`, as the libc struct the FUSE adapter replies with.
pub fn fstatvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    let s = rustix::fs::fstatvfs(fd)?;
    // SAFETY: `libc::statvfs` is plain data (integers only); all zeroes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    st.f_bsize = s.f_bsize;
    st.f_frsize = s.f_frsize;
    st.f_blocks = s.f_blocks;
    st.f_bfree = s.f_bfree;
    st.f_bavail = s.f_bavail;
    st.f_files = s.f_files;
    st.f_ffree = s.f_ffree;
    st.f_favail = s.f_favail;
    st.f_fsid = s.f_fsid;
    st.f_flag = s.f_flag.bits();
    st.f_namemax = s.f_namemax;
    Ok(st)
}

/// `readlinkat(dir, name)`; never follows the link.
pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    let n = rustix::fs::readlinkat_raw(dir, name, &mut buf[..])?;
    buf.truncate(n);
    Ok(buf)
}

/// `pread(fd, buf, off)`, retried until `buf` is full or end of file.
pub fn pread_full(fd: BorrowedFd<'_>, buf: &mut [u8], mut off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pread(fd, &mut buf[done..], off) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                off += n as u64;
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// `lseek(fd, off, whence)`: used for SEEK_DATA / SEEK_HOLE.
pub fn lseek(fd: BorrowedFd<'_>, off: i64, whence: i32) -> io::Result<i64> {
    use rustix::fs::SeekFrom;
    let pos = match whence {
        libc::SEEK_SET => SeekFrom::Start(off as u64),
        libc::SEEK_CUR => SeekFrom::Current(off),
        libc::SEEK_END => SeekFrom::End(off),
        libc::SEEK_DATA => SeekFrom::Data(off as u64),
        libc::SEEK_HOLE => SeekFrom::Hole(off as u64),
        _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    Ok(rustix::fs::seek(fd, pos)? as i64)
}

/// One raw directory entry as `getdents64` returns it.
#[derive(Debug, Clone)]
pub struct RawDirent {
    pub name: Box<[u8]>,
    pub ino: u64,
    /// `DT_*` constant; `DT_UNKNOWN` on filesystems that do not fill it.
    pub d_type: u8,
}

/// Reads a whole directory with `getdents64`, skipping `.` and `..`.
pub fn read_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<RawDirent>> {
    // Start from offset 0 whatever the fd's position (the fd may be shared by readers).
    lseek(dir, 0, libc::SEEK_SET)?;
    let mut out = Vec::new();
    // Not zeroed: getdents64 writes it, and rustix reads only what it wrote.
    let mut buf = Vec::<u8>::with_capacity(64 * 1024);
    let mut entries = rustix::fs::RawDir::new(dir, buf.spare_capacity_mut());
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(RawDirent {
                name: name.into(),
                ino: entry.ino(),
                d_type: d_type(entry.file_type()),
            });
        }
    }
    Ok(out)
}

/// The `DT_*` constant of a file type: the type bits of its mode, shifted (`IFTODT`).
fn d_type(t: rustix::fs::FileType) -> u8 {
    match t {
        rustix::fs::FileType::Unknown => libc::DT_UNKNOWN,
        t => (t.as_raw_mode() >> 12) as u8,
    }
}

/// Path through `/proc/self/fd` naming `name` inside the directory `dir`. The directory part is
/// a magic link to an already-open (and already-checked) directory; `name` is one component,
/// so the `l*xattr` calls below never follow a symlink inside a layer. With an empty `name`
/// the path is the magic link itself: callers must then use the following variants
/// (`getxattr`, ...), which land on the directory the fd holds, while the `l*` variants
/// would act on the link in procfs. [`follows`] says which.
pub(crate) fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<ProcPath> {
    ProcPath::new(dir, name)
}

/// A `/proc/self/fd/N[/NAME]` path, built on the stack when it fits (any one component
/// does: NAME_MAX is 255), so the xattr calls of a request allocate nothing for it.
#[allow(clippy::large_enum_variant)] // on the stack on purpose: no allocation per call
pub(crate) enum ProcPath {
    Stack([u8; PROC_PATH_STACK], usize),
    Heap(CString),
}

const PROC_PREFIX: &[u8] = b"/proc/self/fd/";
const PROC_PATH_STACK: usize = 320;

impl ProcPath {
    fn new(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Self> {
        let mut digits = [0u8; 10];
        let mut fd = dir.as_raw_fd() as u32;
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (fd % 10) as u8;
            fd /= 10;
            if fd == 0 {
                break;
            }
        }
        let parts: [&[u8]; 4] = match name {
            [] => [PROC_PREFIX, &digits[start..], b"", b""],
            _ => [PROC_PREFIX, &digits[start..], b"/", name],
        };
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len >= PROC_PATH_STACK {
            return Ok(ProcPath::Heap(cstr(&parts.concat())?));
        }
        let mut buf = [0u8; PROC_PATH_STACK];
        let mut at = 0;
        for p in parts {
            buf[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        // A NUL inside the name: EINVAL, as `cstr` says.
        CStr::from_bytes_with_nul(&buf[..=len])
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        Ok(ProcPath::Stack(buf, len))
    }

    pub(crate) fn as_cstr(&self) -> &CStr {
        match self {
            ProcPath::Stack(buf, len) => {
                CStr::from_bytes_with_nul(&buf[..=*len]).expect("checked in new")
            }
            ProcPath::Heap(c) => c,
        }
    }
}

/// True when `name` is empty: the xattr call is about `dir` itself and must follow the
/// `/proc/self/fd` magic link (see [`proc_path`]).
pub(crate) fn follows(name: &[u8]) -> bool {
    name.is_empty()
}

/// Calls a size-probing xattr function until the buffer is large enough (an empty buffer
/// asks the size).
fn xattr_buf(mut call: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match call(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => {
                let need = call(&mut [])?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `lgetxattr` of `name` inside `dir` (empty `name`: the directory itself).
pub fn getxattr_at(dir: BorrowedFd<'_>, name: &[u8], xname: &CStr) -> io::Result<Vec<u8>> {
    let p = proc_path(dir, name)?;
    let p = p.as_cstr();
    xattr_buf(|buf| {
        if follows(name) {
            rustix::fs::getxattr(p, xname, buf)
        } else {
            rustix::fs::lgetxattr(p, xname, buf)
        }
    })
}

/// `llistxattr` of `name` inside `dir` (empty `name`: the directory itself), as the raw
/// NUL-separated list.
pub fn listxattr_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<u8>> {
    let p = proc_path(dir, name)?;
    let p = p.as_cstr();
    xattr_buf(|buf| {
        if follows(name) {
            rustix::fs::listxattr(p, buf)
        } else {
            rustix::fs::llistxattr(p, buf)
        }
    })
}

/// `flistxattr(fd)` on an fd opened for reading (not `O_PATH`).
pub fn flistxattr(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    xattr_buf(|buf| rustix::fs::flistxattr(fd, buf))
}

/// `fgetxattr(fd, name)` on an fd opened for reading (not `O_PATH`).
pub fn fgetxattr(fd: BorrowedFd<'_>, xname: &CStr) -> io::Result<Vec<u8>> {
    xattr_buf(|buf| rustix::fs::fgetxattr(fd, xname, buf))
}

/// Splits a NUL-separated xattr name list.
pub fn split_xattr_list(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|&b| b == 0).filter(|n| !n.is_empty())
}

/// `umount2(path, flags)`.
pub fn umount(path: &Path, flags: libc::c_int) -> io::Result<()> {
    let flags = rustix::mount::UnmountFlags::from_bits_retain(flags as u32);
    Ok(rustix::mount::unmount(path, flags)?)
}

/// An rlimit value as the kernel spells it: `RLIM_INFINITY` for "none".
fn rlim(v: Option<u64>) -> u64 {
    v.unwrap_or(libc::RLIM_INFINITY)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; a deep stack keeps a directory fd per
/// layer for each directory it has indexed.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: lim.maximum,
        maximum: lim.maximum,
    };
    setrlimit(Resource::Nofile, raised)?;
    Ok(rlim(lim.maximum))
}

/// The current soft `RLIMIT_NOFILE`.
pub fn nofile_limit() -> io::Result<u64> {
    Ok(rlim(
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current,
    ))
}

/// `flock(fd, op)` (`LOCK_EX`, `LOCK_SH`, `LOCK_UN`, `| LOCK_NB`), retried on EINTR.
pub fn flock(fd: BorrowedFd<'_>, op: libc::c_int) -> io::Result<()> {
    use rustix::fs::FlockOperation as Op;
    let op = match (op & !libc::LOCK_NB, op & libc::LOCK_NB != 0) {
        (libc::LOCK_SH, false) => Op::LockShared,
        (libc::LOCK_EX, false) => Op::LockExclusive,
        (libc::LOCK_UN, false) => Op::Unlock,
        (libc::LOCK_SH, true) => Op::NonBlockingLockShared,
        (libc::LOCK_EX, true) => Op::NonBlockingLockExclusive,
        (libc::LOCK_UN, true) => Op::NonBlockingUnlock,
        _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    loop {
        match rustix::fs::flock(fd, op) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return Ok(r?),
        }
    }
}

/// Effective uid of this process.
pub fn geteuid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The real user and group ids, `(getuid(), getgid())`.
pub fn real_ids() -> (u32, u32) {
    let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
    (uid.as_raw(), gid.as_raw())
}

/// `fork()`. Only call while the process has a single thread.
pub enum Fork {
    Parent(libc::pid_t),
    Child,
}

/// Forks the process. The caller must be single-threaded (the CLI forks before it mounts).
pub fn fork() -> io::Result<Fork> {
    // SAFETY: called while single-threaded (documented contract of this function), so the
    // child does not inherit locks held by other threads.
    match cvt(unsafe { libc::fork() })? {
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid)),
    }
}

/// `setsid()`: detach the daemon from the caller's session and terminal.
pub fn setsid() -> io::Result<()> {
    rustix::process::setsid()?;
    Ok(())
}

/// `pipe2(O_CLOEXEC)`: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Points stdin, stdout and stderr at /dev/null (a daemon must not hold the caller's pipes).
pub fn redirect_stdio_to_null() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    rustix::stdio::dup2_stdout(&null)?;
    rustix::stdio::dup2_stderr(&null)?;
    Ok(())
}

/// True when `name` is a single, valid path component (no `/`, not `.`/`..`, not empty).
pub fn is_component(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0)
}

/// Blocks `signals` in the calling thread (and in threads it spawns afterwards).
pub fn block_signals(signals: &[libc::c_int]) -> io::Result<()> {
    let set = sigset(signals)?;
    // SAFETY: `set` is an initialised sigset_t; the old-set pointer may be null.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Waits for one of `signals` (which must be blocked) and returns it.
pub fn wait_signal(signals: &[libc::c_int]) -> io::Result<libc::c_int> {
    let set = sigset(signals)?;
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is initialised and `sig` is a valid out-pointer.
    let r = unsafe { libc::sigwait(&set, &mut sig) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(sig)
}

fn sigset(signals: &[libc::c_int]) -> io::Result<libc::sigset_t> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given.
    cvt(unsafe { libc::sigemptyset(set.as_mut_ptr()) })?;
    // SAFETY: sigemptyset succeeded, so the set is initialised.
    let mut set = unsafe { set.assume_init() };
    for &s in signals {
        // SAFETY: `set` is initialised; sigaddset validates `s`.
        cvt(unsafe { libc::sigaddset(&mut set, s) })?;
    }
    Ok(set)
}

pub mod mountinfo;
mod mutate;
mod process;
pub use mutate::*;
pub use process::*;

/// The filesystem type (`f_type`, the superblock magic) of the filesystem holding `fd`.
pub fn fs_magic(fd: BorrowedFd<'_>) -> io::Result<i64> {
    let st = rustix::fs::fstatfs(fd)?;
    #[allow(clippy::unnecessary_cast)] // f_type is i64 here, not on every target
    Ok(st.f_type as i64)
}

#[cfg(test)]
mod tests;
