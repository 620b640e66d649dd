//! Safe wrappers over the raw syscalls layerfs needs.
//!
//! Everything that touches a layer goes through here. The rules:
//! - calls are fd-relative (`*at`) and take a single path component where they can, so a
//!   symlink inside a layer is never followed on the host side;
//! - whole relative paths go through `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`;
//! - results are `io::Result`, fds are `OwnedFd`, and each `unsafe` says why it is sound.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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

pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub(crate) fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// A path or name as a C string; a NUL inside is reported as `EINVAL`.
pub fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens a host directory given by the user (layer roots, the mountpoint). This is the one
/// place that follows symlinks: lower dirs may be symlinks (podman's `l/ID`), resolved once.
pub fn open_host_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated string; the returned fd is checked and owned.
    let fd = cvt(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The path the kernel has for an open fd (`/proc/self/fd/N`).
pub fn fd_path(fd: BorrowedFd<'_>) -> io::Result<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC)` for one path component.
pub fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    fault!("sys::openat");
    // SAFETY: `dir` is a live fd for the duration of the call, `name` is NUL-terminated.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by openat(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a subdirectory (one component) without following a symlink.
pub fn open_subdir(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY)
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// `openat2(root, rel, how)`: the one call both resolutions below make.
fn openat2(root: BorrowedFd<'_>, rel: &CStr, how: OpenHow) -> io::Result<OwnedFd> {
    // SAFETY: `how` is a properly laid out `struct open_how` living across the call, its size
    // is passed, `rel` is NUL-terminated and `root` is a live fd.
    let fd = cvt_long(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            rel.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })?;
    // SAFETY: the syscall returned a fresh fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Opens `rel` (a relative path, possibly several components) strictly beneath `root`,
/// refusing any symlink and any `..` escape: the kernel enforces it (`openat2`).
pub fn open_beneath(root: BorrowedFd<'_>, rel: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    openat2(root, rel, how)
}

/// Opens `rel` as if `root` were `/`: symlinks are followed, absolute ones and `..` staying
/// inside `root` (`openat2` with `RESOLVE_IN_ROOT`), as a path inside a container resolves.
/// The last component too, unless `flags` has `O_NOFOLLOW`.
pub fn open_in_root(root: BorrowedFd<'_>, rel: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    openat2(root, rel, how)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
    let mut st = MaybeUninit::<Stat>::uninit();
    // SAFETY: `st` is valid for writes of a `struct stat`; `name` is NUL-terminated.
    cvt(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so the kernel initialised the whole struct.
    Ok(unsafe { st.assume_init() })
}

/// `fstat(fd)`.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    let mut st = MaybeUninit::<Stat>::uninit();
    // SAFETY: `st` is valid for writes of a `struct stat`; `fd` is live.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so the kernel initialised the whole struct.
    Ok(unsafe { st.assume_init() })
}

/// `fstatvfs(fd)`.
pub fn fstatvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `st` is valid for writes of a `struct statvfs`; `fd` is live.
    cvt(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatvfs succeeded and initialised the struct.
    Ok(unsafe { st.assume_init() })
}

/// `readlinkat(dir, name)`; never follows the link.
pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is writable for `buf.len()` bytes; `name` is NUL-terminated.
    let n = cvt_size(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

/// `pread(fd, buf, off)`, retried until `buf` is full or end of file.
pub fn pread_full(fd: BorrowedFd<'_>, buf: &mut [u8], mut off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is writable for `rest.len()` bytes; `fd` is live.
        let r = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                rest.as_mut_ptr().cast(),
                rest.len(),
                off as libc::off_t,
            )
        };
        match cvt_size(r) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// `lseek(fd, off, whence)`: used for SEEK_DATA / SEEK_HOLE.
pub fn lseek(fd: BorrowedFd<'_>, off: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: plain syscall on a live fd.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off as libc::off_t, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as i64)
    }
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
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is writable for its length; getdents64 writes at most that many bytes.
        let n = cvt_long(unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        })? as usize;
        if n == 0 {
            return Ok(out);
        }
        let mut pos = 0;
        while pos < n {
            // linux_dirent64: u64 d_ino, i64 d_off, u16 d_reclen, u8 d_type, char d_name[].
            let rec = &buf[pos..n];
            let ino = u64::from_ne_bytes(rec[0..8].try_into().expect("8 bytes"));
            let reclen = u16::from_ne_bytes(rec[16..18].try_into().expect("2 bytes")) as usize;
            let d_type = rec[18];
            let name_area = &rec[19..reclen];
            let len = name_area
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_area.len());
            let name = &name_area[..len];
            if name != b"." && name != b".." {
                out.push(RawDirent {
                    name: name.into(),
                    ino,
                    d_type,
                });
            }
            pos += reclen;
        }
    }
}

/// Path through `/proc/self/fd` naming `name` inside the directory `dir`. The directory part is
/// a magic link to an already-open (and already-checked) directory; `name` is one component,
/// so the `l*xattr` calls below never follow a symlink inside a layer. With an empty `name`
/// the path is the magic link itself: callers must then use the following variants
/// (`getxattr`, ...), which land on the directory the fd holds, while the `l*` variants
/// would act on the link in procfs. [`follows`] says which.
pub(crate) fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if !name.is_empty() {
        p.push(b'/');
        p.extend_from_slice(name);
    }
    cstr(&p)
}

/// True when `name` is empty: the xattr call is about `dir` itself and must follow the
/// `/proc/self/fd` magic link (see [`proc_path`]).
pub(crate) fn follows(name: &[u8]) -> bool {
    name.is_empty()
}

/// Calls a size-probing xattr function until the buffer is large enough.
fn xattr_buf(
    mut call: impl FnMut(*mut libc::c_void, usize) -> libc::ssize_t,
) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match cvt_size(call(buf.as_mut_ptr().cast(), buf.len())) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                let need = cvt_size(call(std::ptr::null_mut(), 0))?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// `lgetxattr` of `name` inside `dir` (empty `name`: the directory itself).
pub fn getxattr_at(dir: BorrowedFd<'_>, name: &[u8], xname: &CStr) -> io::Result<Vec<u8>> {
    let p = proc_path(dir, name)?;
    // SAFETY: `p` and `xname` are NUL-terminated; the buffer pointer/len come from xattr_buf
    // and describe writable memory (or are null/0 for a size probe).
    xattr_buf(|ptr, len| unsafe {
        if follows(name) {
            libc::getxattr(p.as_ptr(), xname.as_ptr(), ptr, len)
        } else {
            libc::lgetxattr(p.as_ptr(), xname.as_ptr(), ptr, len)
        }
    })
}

/// `llistxattr` of `name` inside `dir` (empty `name`: the directory itself), as the raw
/// NUL-separated list.
pub fn listxattr_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<u8>> {
    let p = proc_path(dir, name)?;
    // SAFETY: as in getxattr_at.
    xattr_buf(|ptr, len| unsafe {
        if follows(name) {
            libc::listxattr(p.as_ptr(), ptr.cast(), len)
        } else {
            libc::llistxattr(p.as_ptr(), ptr.cast(), len)
        }
    })
}

/// `flistxattr(fd)` on an fd opened for reading (not `O_PATH`).
pub fn flistxattr(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    // SAFETY: the buffer pointer/len describe writable memory (or null/0 for a probe).
    xattr_buf(|ptr, len| unsafe { libc::flistxattr(fd.as_raw_fd(), ptr.cast(), len) })
}

/// `fgetxattr(fd, name)` on an fd opened for reading (not `O_PATH`).
pub fn fgetxattr(fd: BorrowedFd<'_>, xname: &CStr) -> io::Result<Vec<u8>> {
    // SAFETY: `xname` is NUL-terminated; buffer as in flistxattr.
    xattr_buf(|ptr, len| unsafe { libc::fgetxattr(fd.as_raw_fd(), xname.as_ptr(), ptr, len) })
}

/// Splits a NUL-separated xattr name list.
pub fn split_xattr_list(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|&b| b == 0).filter(|n| !n.is_empty())
}

/// `umount2(path, flags)`.
pub fn umount(path: &Path, flags: libc::c_int) -> io::Result<()> {
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is NUL-terminated.
    cvt(unsafe { libc::umount2(c.as_ptr(), flags) }).map(drop)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; a deep stack keeps a directory fd per
/// layer for each directory it has indexed.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = MaybeUninit::<libc::rlimit>::uninit();
    // SAFETY: `lim` is valid for writes of a `struct rlimit`.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, lim.as_mut_ptr()) })?;
    // SAFETY: getrlimit succeeded and initialised it.
    let mut lim = unsafe { lim.assume_init() };
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid, initialised `struct rlimit`.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    Ok(lim.rlim_cur)
}

/// The current soft `RLIMIT_NOFILE`.
pub fn nofile_limit() -> io::Result<u64> {
    let mut lim = MaybeUninit::<libc::rlimit>::uninit();
    // SAFETY: `lim` is valid for writes of a `struct rlimit`.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, lim.as_mut_ptr()) })?;
    // SAFETY: getrlimit succeeded and initialised it.
    Ok(unsafe { lim.assume_init() }.rlim_cur)
}

/// `flock(fd, op)` (`LOCK_EX`, `LOCK_SH`, `LOCK_UN`, `| LOCK_NB`), retried on EINTR.
pub fn flock(fd: BorrowedFd<'_>, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: plain syscall on a live fd.
        match cvt(unsafe { libc::flock(fd.as_raw_fd(), op) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r.map(drop),
        }
    }
}

/// Effective uid of this process.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// The real user and group ids, `(getuid(), getgid())`.
pub fn real_ids() -> (u32, u32) {
    // SAFETY: getuid(2) and getgid(2) cannot fail and touch no memory.
    unsafe { (libc::getuid(), libc::getgid()) }
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
    // SAFETY: plain syscall without pointers.
    cvt(unsafe { libc::setsid() }).map(drop)
}

/// `pipe2(O_CLOEXEC)`: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Points stdin, stdout and stderr at /dev/null (a daemon must not hold the caller's pipes).
pub fn redirect_stdio_to_null() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for target in 0..3 {
        // SAFETY: dup2 onto the standard fds; `null` stays open across the calls.
        cvt(unsafe { libc::dup2(null.as_raw_fd(), target) })?;
    }
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
    let mut st = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `st` is valid for writes of a `struct statfs`; `fd` is live.
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatfs succeeded and filled the struct.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // f_type is i64 here, not on every target
    Ok(st.f_type as i64)
}
