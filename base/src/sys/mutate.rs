//! Safe wrappers for the syscalls that change a layer (the upper and the workdir only; the
//! lowers are never written). Same rules as the parent module: fd-relative, one path
//! component, no symlink followed, `io::Result`, a `SAFETY:` line on every `unsafe`. All
//! through rustix but the file handle pair, `file_handle` and `open_by_handle` (rustix has
//! no `name_to_handle_at` nor `open_by_handle_at`), kept together here though the second
//! changes nothing.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps};

use super::{at_flags, cvt, mode as raw_mode, oflags};

/// `mkdirat(dir, name, mode)`.
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    fault!("sys::mkdirat");
    Ok(rustix::fs::mkdirat(dir, name, raw_mode(mode))?)
}

/// `mknodat(dir, name, mode, rdev)`: fifos, sockets, devices and whiteouts (char 0:0).
pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    fault!("sys::mknodat");
    // rustix passes the type apart from the mode: the same bits, split. A mode without type
    // bits makes a regular file, as mknod(2) does.
    let kind = match mode & libc::S_IFMT {
        0 => FileType::RegularFile,
        t => FileType::from_raw_mode(t),
    };
    let perms = Mode::from_bits_retain(mode & !libc::S_IFMT);
    Ok(rustix::fs::mknodat(dir, name, kind, perms, rdev)?)
}

/// `symlinkat(target, dir, name)`.
pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    fault!("sys::symlinkat");
    Ok(rustix::fs::symlinkat(target, dir, name)?)
}

/// `unlinkat(dir, name, flags)` (`AT_REMOVEDIR` for directories).
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    fault!("sys::unlinkat");
    Ok(rustix::fs::unlinkat(dir, name, at_flags(flags))?)
}

/// `renameat2(olddir, old, newdir, new, flags)` (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`,
/// `RENAME_WHITEOUT`).
pub fn renameat2(
    olddir: BorrowedFd<'_>,
    old: &CStr,
    newdir: BorrowedFd<'_>,
    new: &CStr,
    flags: u32,
) -> io::Result<()> {
    fault!("sys::renameat2");
    let flags = rustix::fs::RenameFlags::from_bits_retain(flags);
    Ok(rustix::fs::renameat_with(olddir, old, newdir, new, flags)?)
}

/// `openat(dir, name, O_CREAT | O_EXCL | flags, mode)`: a new file, never an existing one.
pub fn create_excl(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    fault!("sys::create_excl");
    let flags = flags | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    Ok(rustix::fs::openat(
        dir,
        name,
        oflags(flags),
        raw_mode(mode),
    )?)
}

/// `openat(dir, ".", O_TMPFILE | flags, mode)`: an unnamed regular file in directory `dir`.
pub fn open_tmpfile(dir: BorrowedFd<'_>, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let flags = oflags(flags | libc::O_TMPFILE | libc::O_CLOEXEC);
    Ok(rustix::fs::openat(dir, c".", flags, raw_mode(mode))?)
}

/// Gives the inode `fd` refers to (an `O_TMPFILE` file, or one whose names are gone) the
/// name `new` in `newdir`: `linkat` of its `/proc/self/fd` magic link, followed.
pub fn link_fd(fd: BorrowedFd<'_>, newdir: BorrowedFd<'_>, new: &CStr) -> io::Result<()> {
    let p = super::proc_path(fd, b"")?;
    let (cwd, follow) = (rustix::fs::CWD, AtFlags::SYMLINK_FOLLOW);
    Ok(rustix::fs::linkat(cwd, p.as_cstr(), newdir, new, follow)?)
}

/// `fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW)`.
pub fn lchownat(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    fault!("sys::lchownat");
    let (uid, gid) = owner(uid, gid);
    Ok(rustix::fs::chownat(
        dir,
        name,
        uid,
        gid,
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// A chown's ids as rustix takes them: `u32::MAX` (-1, "unchanged") is `None`.
fn owner(uid: u32, gid: u32) -> (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) {
    let uid = (uid != u32::MAX).then(|| rustix::fs::Uid::from_raw(uid));
    let gid = (gid != u32::MAX).then(|| rustix::fs::Gid::from_raw(gid));
    (uid, gid)
}

/// Two `libc::timespec` (the callers' type, `UTIME_NOW` / `UTIME_OMIT` allowed in
/// `tv_nsec`) as rustix's.
fn timestamps(atime: libc::timespec, mtime: libc::timespec) -> Timestamps {
    let ts = |t: libc::timespec| Timespec {
        tv_sec: t.tv_sec,
        tv_nsec: t.tv_nsec,
    };
    Timestamps {
        last_access: ts(atime),
        last_modification: ts(mtime),
    }
}

/// `fchmodat(dir, name, mode, 0)`; symlinks have no mode of their own, never call it on one.
pub fn chmodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    fault!("sys::chmodat");
    Ok(rustix::fs::chmodat(
        dir,
        name,
        raw_mode(mode),
        AtFlags::empty(),
    )?)
}

/// `utimensat(dir, name, [atime, mtime], AT_SYMLINK_NOFOLLOW)`.
pub fn lutimesat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    atime: libc::timespec,
    mtime: libc::timespec,
) -> io::Result<()> {
    fault!("sys::lutimesat");
    let times = timestamps(atime, mtime);
    Ok(rustix::fs::utimensat(
        dir,
        name,
        &times,
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// `lsetxattr` of `name` inside `dir` (through the `/proc/self/fd` path of `dir`).
pub fn setxattr_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    xname: &CStr,
    value: &[u8],
    flags: libc::c_int,
) -> io::Result<()> {
    fault!("sys::setxattr_at");
    let p = super::proc_path(dir, name)?;
    let flags = rustix::fs::XattrFlags::from_bits_retain(flags as u32);
    if super::follows(name) {
        Ok(rustix::fs::setxattr(p.as_cstr(), xname, value, flags)?)
    } else {
        Ok(rustix::fs::lsetxattr(p.as_cstr(), xname, value, flags)?)
    }
}

/// `fsync(fd)`, or `fdatasync` with `data_only`.
pub fn fsync(fd: BorrowedFd<'_>, data_only: bool) -> io::Result<()> {
    fault!("sys::fsync");
    if data_only {
        Ok(rustix::fs::fdatasync(fd)?)
    } else {
        Ok(rustix::fs::fsync(fd)?)
    }
}

/// `ftruncate(fd, len)`.
pub fn ftruncate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    fault!("sys::ftruncate");
    Ok(rustix::fs::ftruncate(fd, len)?)
}

/// `ioctl(dst, FICLONE, src)`: share the source's extents (reflink), where the filesystem can.
pub fn reflink(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<()> {
    fault!("sys::reflink");
    Ok(rustix::fs::ioctl_ficlone(dst, src)?)
}

/// `copy_file_range` of up to `len` bytes at `off` (same offset on both sides).
pub fn copy_range(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    off: u64,
    len: usize,
) -> io::Result<usize> {
    fault!("sys::copy_range");
    let (mut src_off, mut dst_off) = (off, off);
    let n = rustix::fs::copy_file_range(src, Some(&mut src_off), dst, Some(&mut dst_off), len)?;
    Ok(n)
}

/// `pwrite(fd, buf, off)`, retried until all of `buf` is written.
pub fn pwrite_all(fd: BorrowedFd<'_>, mut buf: &[u8], mut off: u64) -> io::Result<()> {
    fault!("sys::pwrite_all");
    while !buf.is_empty() {
        match rustix::io::pwrite(fd, buf, off) {
            Ok(0) => return Err(io::Error::from_raw_os_error(libc::EIO)),
            Ok(n) => {
                buf = &buf[n..];
                off += n as u64;
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `lremovexattr` of `name` inside `dir` (through the `/proc/self/fd` path of `dir`).
pub fn removexattr_at(dir: BorrowedFd<'_>, name: &[u8], xname: &CStr) -> io::Result<()> {
    fault!("sys::removexattr_at");
    let p = super::proc_path(dir, name)?;
    if super::follows(name) {
        Ok(rustix::fs::removexattr(p.as_cstr(), xname)?)
    } else {
        Ok(rustix::fs::lremovexattr(p.as_cstr(), xname)?)
    }
}

/// The longest file handle we read or pass (`MAX_HANDLE_SZ`).
const MAX_HANDLE: usize = 128;

/// `struct file_handle` with room for [`MAX_HANDLE`] bytes.
#[repr(C)]
struct Handle {
    bytes: u32,
    kind: i32,
    data: [u8; MAX_HANDLE],
}

/// `name_to_handle_at(dir, name, 0)` (no symlink followed): the file handle type and bytes the
/// filesystem uses to find `name` again (what overlayfs records as a copy-up's origin).
pub fn file_handle(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<(i32, Vec<u8>)> {
    fault!("sys::file_handle");
    let mut h = Handle {
        bytes: MAX_HANDLE as u32,
        kind: 0,
        data: [0; MAX_HANDLE],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `h` is a `struct file_handle` with room for MAX_HANDLE bytes, as `bytes` says;
    // `name` is NUL-terminated; `mount_id` is a valid out-pointer.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut h as *mut Handle,
            &mut mount_id as *mut libc::c_int,
            0, // never follows a final symlink unless AT_SYMLINK_FOLLOW is given
        ) as libc::c_int
    })?;
    Ok((h.kind, h.data[..h.bytes as usize].to_vec()))
}

/// `open_by_handle_at(fs, handle, O_PATH)`: the file that handle (`file_handle`'s type and
/// bytes) names, wherever it is on the filesystem of `fs` (any fd on it). `EPERM` without
/// `CAP_DAC_READ_SEARCH`, `ESTALE` when the file is gone.
pub fn open_by_handle(fs: BorrowedFd<'_>, kind: i32, handle: &[u8]) -> io::Result<OwnedFd> {
    fault!("sys::open_by_handle");
    if handle.len() > MAX_HANDLE {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut h = Handle {
        bytes: handle.len() as u32,
        kind,
        data: [0; MAX_HANDLE],
    };
    h.data[..handle.len()].copy_from_slice(handle);
    // SAFETY: `h` is a `struct file_handle` whose `bytes` says how much of `data` is the
    // handle; the kernel only reads it.
    let fd = cvt(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            fs.as_raw_fd(),
            &h as *const Handle,
            libc::O_PATH | libc::O_CLOEXEC,
        ) as libc::c_int
    })?;
    // SAFETY: the kernel just returned `fd`, open and ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `linkat(olddir, old, newdir, new, 0)`: a new name for an existing file (never following a
/// symlink).
pub fn linkat(
    olddir: BorrowedFd<'_>,
    old: &CStr,
    newdir: BorrowedFd<'_>,
    new: &CStr,
) -> io::Result<()> {
    fault!("sys::linkat");
    Ok(rustix::fs::linkat(
        olddir,
        old,
        newdir,
        new,
        AtFlags::empty(),
    )?)
}

/// Opens the object an `O_PATH` fd refers to again, with `flags` (through its
/// `/proc/self/fd` magic link, which names the inode itself, not a path). The link must be
/// followed, so an `O_NOFOLLOW` among an application's flags is dropped; a symlink inode
/// still cannot be opened (ELOOP).
pub fn reopen(fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<OwnedFd> {
    fault!("sys::reopen");
    let p = super::proc_path(fd, b"")?;
    let flags = oflags((flags & !libc::O_NOFOLLOW) | libc::O_CLOEXEC);
    Ok(rustix::fs::open(p.as_cstr(), flags, Mode::empty())?)
}

/// `fallocate(fd, mode, off, len)`.
pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, off: u64, len: u64) -> io::Result<()> {
    fault!("sys::fallocate");
    let mode = rustix::fs::FallocateFlags::from_bits_retain(mode as u32);
    Ok(rustix::fs::fallocate(fd, mode, off, len)?)
}

/// `pwrite(fd, buf, off)` once: the number of bytes written.
pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], off: u64) -> io::Result<usize> {
    fault!("sys::pwrite");
    Ok(rustix::io::pwrite(fd, buf, off)?)
}

/// `copy_file_range` between two files at their own offsets.
pub fn copy_range_at(
    src: BorrowedFd<'_>,
    src_off: u64,
    dst: BorrowedFd<'_>,
    dst_off: u64,
    len: usize,
) -> io::Result<usize> {
    fault!("sys::copy_range_at");
    let (mut so, mut d) = (src_off, dst_off);
    Ok(rustix::fs::copy_file_range(
        src,
        Some(&mut so),
        dst,
        Some(&mut d),
        len,
    )?)
}

/// `umask(mask)`: the previous mask.
pub fn umask(mask: u32) -> u32 {
    rustix::process::umask(raw_mode(mask)).bits()
}

/// chmod of the inode `fd` refers to; `fd` may be `O_PATH` (through its `/proc/self/fd`
/// magic link, which lands on the inode itself). Symlinks have no mode of their own, never
/// call it on one.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    fault!("sys::fchmod");
    let p = super::proc_path(fd, b"")?;
    Ok(rustix::fs::chmod(p.as_cstr(), raw_mode(mode))?)
}

/// chown of the inode `fd` refers to, which may be `O_PATH` (`fchownat` with
/// `AT_EMPTY_PATH`); `u32::MAX`: unchanged.
pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    fault!("sys::fchown");
    let (uid, gid) = owner(uid, gid);
    Ok(rustix::fs::chownat(fd, c"", uid, gid, AtFlags::EMPTY_PATH)?)
}

/// Sets the times of the inode `fd` refers to, which may be `O_PATH` (`utimensat` with
/// `AT_EMPTY_PATH`; `UTIME_NOW` / `UTIME_OMIT` in `tv_nsec` as usual).
pub fn futimens(
    fd: BorrowedFd<'_>,
    atime: libc::timespec,
    mtime: libc::timespec,
) -> io::Result<()> {
    fault!("sys::futimens");
    let times = timestamps(atime, mtime);
    Ok(rustix::fs::utimensat(fd, c"", &times, AtFlags::EMPTY_PATH)?)
}

/// The effective group id.
pub fn getegid() -> u32 {
    rustix::process::getegid().as_raw()
}

/// `rename(from, to)` by path (the layer store's moves into place, in directories it
/// owns), with its failpoint.
pub fn rename_path(from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
    fault!("sys::rename_path");
    std::fs::rename(from, to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn reopen_follows_the_magic_link_whatever_the_flags() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), "data").unwrap();
        let dir = std::fs::File::open(t.path()).unwrap();
        let opath = super::super::openat(dir.as_fd(), c"f", libc::O_PATH).unwrap();
        std::fs::remove_file(t.path().join("f")).unwrap();
        let fd = reopen(opath.as_fd(), libc::O_RDONLY | libc::O_NOFOLLOW).unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut s).unwrap();
        assert_eq!(s, "data");
    }
}
