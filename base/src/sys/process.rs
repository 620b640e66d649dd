//! Safe wrappers for the process and namespace syscalls of `layerfs run`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::cvt;

/// `unshare(flags)` (`CLONE_NEW*`).
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall without pointers.
    cvt(unsafe { libc::unshare(flags) }).map(drop)
}

/// `mount(source, target, fstype, flags, data)`.
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let p = |c: Option<&CStr>| c.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is null or a NUL-terminated string living across the call.
    cvt(unsafe { libc::mount(p(source), target.as_ptr(), p(fstype), flags, p(data).cast()) })
        .map(drop)
}

/// Adds the per-mount flags `add` (`MS_NODIRATIME`, `MS_STRICTATIME`, ...) to the mount at
/// `path` with a bind remount, keeping the flags it has (read back with `statvfs`, whose
/// `ST_*` bits are the `MS_*` ones).
pub fn remount_with(path: &std::path::Path, add: libc::c_ulong) -> io::Result<()> {
    let p = CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `p` is NUL-terminated and `st` is valid for writes of a `struct statvfs`.
    cvt(unsafe { libc::statvfs(p.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: statvfs succeeded and filled the struct.
    let have = unsafe { st.assume_init() }.f_flag;
    let kept = have
        & (libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC
            | libc::MS_NOATIME
            | libc::MS_NODIRATIME
            | libc::MS_RELATIME);
    let mut flags = kept | add;
    if add & libc::MS_STRICTATIME != 0 {
        flags &= !(libc::MS_RELATIME | libc::MS_NOATIME);
    }
    mount(
        None,
        &p,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | flags,
        None,
    )
}

/// The `/proc/self/fd/N` path of `fd`: mounting there mounts onto the object the fd holds,
/// which was opened without following symlinks (the runc way).
pub fn fd_target(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL")
}

/// `pivot_root(new_root, put_old)`.
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated.
    cvt(
        unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) }
            as libc::c_int,
    )
    .map(drop)
}

/// `chdir(path)`.
pub fn chdir(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated.
    cvt(unsafe { libc::chdir(path.as_ptr()) }).map(drop)
}

/// `fchdir(fd)`.
pub fn fchdir(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on a live fd.
    cvt(unsafe { libc::fchdir(fd.as_raw_fd()) }).map(drop)
}

/// `sethostname(name)`.
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer/length describe the live string.
    cvt(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// Asks the kernel to send `sig` to this process when its parent dies.
pub fn set_parent_death_signal(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes the signal number as its only argument.
    cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) }).map(drop)
}

/// `kill(pid, sig)`.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall without pointers.
    cvt(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell's convention: the code, or 128 + the signal number.
    pub fn status(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// `waitpid(pid, flags)`: `Ok(None)` when `WNOHANG` found nothing.
pub fn waitpid(pid: libc::pid_t, flags: libc::c_int) -> io::Result<Option<(libc::pid_t, Exit)>> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(None);
        }
        let exit = if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        };
        return Ok(Some((r, exit)));
    }
}

/// Unblocks every signal in the calling thread (a child about to exec).
pub fn unblock_all_signals() -> io::Result<()> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises the set it is given.
    cvt(unsafe { libc::sigfillset(set.as_mut_ptr()) })?;
    // SAFETY: the set was initialised above; the old-set pointer may be null.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, set.as_ptr(), std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// `execvpe`-like: replaces the process with `argv[0]` searched in `PATH` of `env`.
/// Returns only on failure.
pub fn exec(argv: &[CString], env: &[CString]) -> io::Error {
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = env.iter().map(|c| c.as_ptr()).collect();
    e.push(std::ptr::null());
    // SAFETY: both arrays are NULL-terminated arrays of NUL-terminated strings that outlive
    // the call (execvpe does not return on success).
    unsafe { libc::execvpe(a[0], a.as_ptr(), e.as_ptr()) };
    io::Error::last_os_error()
}

/// The highest capability number this kernel knows.
pub fn cap_last_cap() -> io::Result<u32> {
    let s = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")?;
    s.trim()
        .parse()
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Removes `cap` from the bounding set: no exec can gain it back.
pub fn capbset_drop(cap: u32) -> io::Result<()> {
    // SAFETY: PR_CAPBSET_DROP takes the capability number as its only argument.
    cvt(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) }).map(drop)
}

/// Switches to `uid`:`gid` with no supplementary groups (setgroups, setgid, then setuid).
pub fn set_identity(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: an empty group list (null pointer, length 0) is valid for setgroups.
    cvt(unsafe { libc::setgroups(0, std::ptr::null()) })?;
    // SAFETY: plain syscalls without pointers.
    cvt(unsafe { libc::setgid(gid) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::setuid(uid) }).map(drop)
}

/// True inside a user namespace other than the initial one (its uid map is not the
/// identity map of every id).
pub fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
        .unwrap_or(false)
}
