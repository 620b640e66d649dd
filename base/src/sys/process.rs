//! Safe wrappers for the process and namespace syscalls of `layerfs run`, and a thread's
//! disk reads. Through rustix but `unshare` (rustix 1.1 offers it only as `unsafe`), the
//! signal mask, `execvpe` and `getrusage` (rustix has none of them), each with its SAFETY
//! line.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::mount::MountFlags;
use rustix::process::{Pid, Signal};

use super::cvt;

/// `unshare(flags)` (`CLONE_NEW*`).
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall without pointers. (rustix 1.1 deprecates its safe `unshare` for
    // `unshare_unsafe`, as CLONE_FILES can leave other threads' fds behind: no gain there.)
    cvt(unsafe { libc::unshare(flags) }).map(drop)
}

/// `mount(source, target, fstype, flags, data)`. A new mount without a source gets an empty
/// one (rustix passes NULL only where the kernel ignores it); every caller names one.
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    use rustix::mount as m;
    let bits = MountFlags::from_bits_retain(flags as u32);
    let propagation = libc::MS_SHARED | libc::MS_PRIVATE | libc::MS_SLAVE | libc::MS_UNBINDABLE;
    // rustix spells each kind of mount(2) as its own call, passing NULL where the kernel takes
    // no source, type or data; the kind is the one the kernel picks (`path_mount`'s order).
    match (source, fstype) {
        (Some(src), Some(fs)) => m::mount(src, target, fs, bits, data)?,
        _ if flags & libc::MS_REMOUNT != 0 => {
            let rest = MountFlags::from_bits_retain((flags & !libc::MS_REMOUNT) as u32);
            m::mount_remount(target, rest, data.unwrap_or(c""))?
        }
        (Some(src), None) if flags & libc::MS_BIND != 0 && flags & libc::MS_REC != 0 => {
            m::mount_bind_recursive(src, target)?
        }
        (Some(src), None) if flags & libc::MS_BIND != 0 => m::mount_bind(src, target)?,
        _ if flags & propagation != 0 => {
            let change = m::MountPropagationFlags::from_bits_retain(flags as u32);
            m::mount_change(target, change)?
        }
        (Some(src), None) if flags & libc::MS_MOVE != 0 => m::mount_move(src, target)?,
        (src, fs) => m::mount(src.unwrap_or(c""), target, fs.unwrap_or(c""), bits, data)?,
    }
    Ok(())
}

/// Adds the per-mount flags `add` (`MS_NODIRATIME`, `MS_STRICTATIME`, ...) to the mount at
/// `path` with a bind remount, keeping the flags it has (read back with `statvfs`, whose
/// `ST_*` bits are the `MS_*` ones).
pub fn remount_with(path: &std::path::Path, add: libc::c_ulong) -> io::Result<()> {
    let p = CString::new(path.as_os_str().as_encoded_bytes())?;
    let have = rustix::fs::statvfs(&*p)?.f_flag.bits();
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
    Ok(rustix::process::pivot_root(new_root, put_old)?)
}

/// `chdir(path)`.
pub fn chdir(path: &CStr) -> io::Result<()> {
    Ok(rustix::process::chdir(path)?)
}

/// `fchdir(fd)`.
pub fn fchdir(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::process::fchdir(fd)?)
}

/// `sethostname(name)`.
pub fn sethostname(name: &str) -> io::Result<()> {
    Ok(rustix::system::sethostname(name.as_bytes())?)
}

/// A pid > 0 as rustix's type (which takes no other: groups and "any" are calls of their own).
fn positive(raw: libc::pid_t) -> Option<Pid> {
    if raw > 0 {
        Pid::from_raw(raw)
    } else {
        None
    }
}

/// A signal number as rustix's type; one it has no name for is `EINVAL` (every caller passes
/// a named one: SIGKILL, SIGTERM and the ones `layerfs run` forwards).
fn signal(sig: libc::c_int) -> io::Result<Signal> {
    Signal::from_named_raw(sig).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Asks the kernel to send `sig` to this process when its parent dies (0: none).
pub fn set_parent_death_signal(sig: libc::c_int) -> io::Result<()> {
    let sig = if sig == 0 { None } else { Some(signal(sig)?) };
    Ok(rustix::process::set_parent_process_death_signal(sig)?)
}

/// `kill(pid, sig)`: `pid` > 0 that process, 0 our process group, < -1 the group -`pid`
/// (sig 0: only whether it exists). -1, every process we may signal, is `EINVAL`: rustix has
/// no such call, and nothing here wants it.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    use rustix::process as p;
    let sig = if sig == 0 { None } else { Some(signal(sig)?) };
    let r = match (pid, positive(pid), positive(pid.wrapping_neg()), sig) {
        (_, Some(one), _, Some(s)) => p::kill_process(one, s),
        (_, Some(one), _, None) => p::test_kill_process(one),
        (0, _, _, Some(s)) => p::kill_current_process_group(s),
        (0, _, _, None) => p::test_kill_current_process_group(),
        (-1, ..) => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        (_, _, Some(group), Some(s)) => p::kill_process_group(group, s),
        (_, _, Some(group), None) => p::test_kill_process_group(group),
        (_, None, None, _) => return Err(io::Error::from_raw_os_error(libc::ESRCH)),
    };
    Ok(r?)
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
    use rustix::process::{wait, waitpgid, waitpid as wait_for, WaitOptions};
    let opts = WaitOptions::from_bits_retain(flags as u32);
    loop {
        // waitpid(2)'s pid: > 0 that child, -1 any child, 0 our process group, < -1 group -pid.
        // (rustix's waitpid(None) is 0, our group: "any" is its `wait`.)
        let r = match pid {
            -1 => wait(opts),
            0 => wait_for(None, opts),
            p => match (positive(p), positive(p.wrapping_neg())) {
                (Some(child), _) => wait_for(Some(child), opts),
                (None, Some(group)) => waitpgid(group, opts),
                (None, None) => return Err(io::Error::from_raw_os_error(libc::ESRCH)),
            },
        };
        let (child, status) = match r {
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(None) => return Ok(None),
            Ok(Some(got)) => got,
        };
        let status = status.as_raw();
        let exit = if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        };
        return Ok(Some((child.as_raw_pid(), exit)));
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
    let set = 1u64
        .checked_shl(cap)
        .map(rustix::thread::CapabilitySet::from_bits_retain)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(rustix::thread::remove_capability_from_bounding_set(set)?)
}

/// Switches to `uid`:`gid` with no supplementary groups (setgroups, setgid, then setuid).
/// These are the raw syscalls, which change the calling thread only (glibc's wrappers signal
/// every thread to follow): call it single-threaded, as the forked command process does.
pub fn set_identity(uid: u32, gid: u32) -> io::Result<()> {
    use rustix::thread::{set_thread_gid, set_thread_groups, set_thread_uid};
    set_thread_groups(&[])?;
    set_thread_gid(rustix::process::Gid::from_raw(gid))?;
    Ok(set_thread_uid(rustix::process::Uid::from_raw(uid))?)
}

/// True inside a user namespace other than the initial one (its uid map is not the
/// identity map of every id).
pub fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
        .unwrap_or(false)
}

/// `memfd_create(name, MFD_CLOEXEC)`: an anonymous file in memory (a supervised mount's
/// journal, kept open by the supervisor across its daemons).
pub fn memfd(name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    let fd = cvt(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: memfd_create returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets or clears `FD_CLOEXEC` on `fd` (fds a supervisor hands to the daemons it execs).
pub fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let flag = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD on a live fd, with an int argument.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flag) }).map(drop)
}

/// Takes ownership of fd number `fd`, inherited from the process that exec'd this one; it
/// must be open (checked) and owned by nothing else in this process.
pub fn inherited_fd(fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the flags of fd number `fd`; it fails if none is open.
    cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: the fd is open (above), and the caller says nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Blocks this thread has read from a disk so far (`ru_inblock` of `RUSAGE_THREAD`): a
/// cache miss shows as a change, however long a busy CPU kept the thread waiting.
pub fn thread_blocks_read() -> u64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is a writable rusage that outlives the call; RUSAGE_THREAD cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, ru.as_mut_ptr()) };
    // SAFETY: zeroed, then filled by the kernel: every field is an integer.
    let ru = unsafe { ru.assume_init() };
    ru.ru_inblock as u64
}
