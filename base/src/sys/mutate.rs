//! Safe wrappers for the syscalls that change a layer (the upper and the workdir only; the
//! lowers are never written). Same rules as the parent module: fd-relative, one path
//! component, no symlink followed, `io::Result`, a `SAFETY:` line on every `unsafe`.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{cvt, cvt_size};

/// `mkdirat(dir, name, mode)`.
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    fault!("sys::mkdirat");
    // SAFETY: `name` is NUL-terminated; `dir` is live.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// `mknodat(dir, name, mode, rdev)`: fifos, sockets, devices and whiteouts (char 0:0).
pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    fault!("sys::mknodat");
    // SAFETY: `name` is NUL-terminated; `dir` is live.
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

/// `symlinkat(target, dir, name)`.
pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    fault!("sys::symlinkat");
    // SAFETY: both strings are NUL-terminated; `dir` is live.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// `unlinkat(dir, name, flags)` (`AT_REMOVEDIR` for directories).
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    fault!("sys::unlinkat");
    // SAFETY: `name` is NUL-terminated; `dir` is live.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
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
    // SAFETY: both names are NUL-terminated; both dir fds are live.
    cvt(unsafe {
        libc::renameat2(
            olddir.as_raw_fd(),
            old.as_ptr(),
            newdir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// `openat(dir, name, O_CREAT | O_EXCL | flags, mode)`: a new file, never an existing one.
pub fn create_excl(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    fault!("sys::create_excl");
    // SAFETY: `name` is NUL-terminated; the mode argument is passed as the variadic int.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: `fd` was just returned by openat(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat(dir, ".", O_TMPFILE | flags, mode)`: an unnamed regular file in directory `dir`.
pub fn open_tmpfile(dir: BorrowedFd<'_>, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: the name is a NUL-terminated literal; the mode is passed as the variadic int.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c".".as_ptr(),
            flags | libc::O_TMPFILE | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: `fd` was just returned by openat(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Gives the inode `fd` refers to (an `O_TMPFILE` file, or one whose names are gone) the
/// name `new` in `newdir`: `linkat` of its `/proc/self/fd` magic link, followed.
pub fn link_fd(fd: BorrowedFd<'_>, newdir: BorrowedFd<'_>, new: &CStr) -> io::Result<()> {
    let p = super::proc_path(fd, b"")?;
    // SAFETY: both names are NUL-terminated; `newdir` is live.
    cvt(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            p.as_ptr(),
            newdir.as_raw_fd(),
            new.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(drop)
}

/// `fchownat(dir, name, uid, gid, AT_SYMLINK_NOFOLLOW)`.
pub fn lchownat(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    fault!("sys::lchownat");
    // SAFETY: `name` is NUL-terminated; `dir` is live.
    cvt(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// `fchmodat(dir, name, mode, 0)`; symlinks have no mode of their own, never call it on one.
pub fn chmodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    fault!("sys::chmodat");
    // SAFETY: `name` is NUL-terminated; `dir` is live.
    cvt(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) }).map(drop)
}

/// `utimensat(dir, name, [atime, mtime], AT_SYMLINK_NOFOLLOW)`.
pub fn lutimesat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    atime: libc::timespec,
    mtime: libc::timespec,
) -> io::Result<()> {
    fault!("sys::lutimesat");
    let times = [atime, mtime];
    // SAFETY: `times` holds two timespecs as utimensat expects; `name` is NUL-terminated.
    cvt(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
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
    let (v, n) = (value.as_ptr().cast(), value.len());
    // SAFETY: `p` and `xname` are NUL-terminated; `v`/`n` describe the live slice `value`.
    cvt(unsafe {
        if super::follows(name) {
            libc::setxattr(p.as_ptr(), xname.as_ptr(), v, n, flags)
        } else {
            libc::lsetxattr(p.as_ptr(), xname.as_ptr(), v, n, flags)
        }
    })
    .map(drop)
}

/// `fsync(fd)`, or `fdatasync` with `data_only`.
pub fn fsync(fd: BorrowedFd<'_>, data_only: bool) -> io::Result<()> {
    fault!("sys::fsync");
    // SAFETY: plain syscalls on a live fd.
    cvt(unsafe {
        if data_only {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })
    .map(drop)
}

/// `ftruncate(fd, len)`.
pub fn ftruncate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    fault!("sys::ftruncate");
    // SAFETY: plain syscall on a live fd.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) }).map(drop)
}

/// `ioctl(dst, FICLONE, src)`: share the source's extents (reflink), where the filesystem can.
pub fn reflink(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<()> {
    fault!("sys::reflink");
    // SAFETY: FICLONE takes the source fd as its integer argument; both fds are live.
    cvt(unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) }).map(drop)
}

/// `copy_file_range` of up to `len` bytes at `off` (same offset on both sides).
pub fn copy_range(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    off: u64,
    len: usize,
) -> io::Result<usize> {
    fault!("sys::copy_range");
    let mut src_off = off as libc::loff_t;
    let mut dst_off = off as libc::loff_t;
    // SAFETY: the offsets are live out-pointers; both fds are live.
    cvt_size(unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut src_off,
            dst.as_raw_fd(),
            &mut dst_off,
            len,
            0,
        )
    })
}

/// `pwrite(fd, buf, off)`, retried until all of `buf` is written.
pub fn pwrite_all(fd: BorrowedFd<'_>, mut buf: &[u8], mut off: u64) -> io::Result<()> {
    fault!("sys::pwrite_all");
    while !buf.is_empty() {
        // SAFETY: `buf` is a live slice of its length; `fd` is live.
        let r = unsafe {
            libc::pwrite(
                fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                off as libc::off_t,
            )
        };
        match cvt_size(r) {
            Ok(0) => return Err(io::Error::from_raw_os_error(libc::EIO)),
            Ok(n) => {
                buf = &buf[n..];
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `lremovexattr` of `name` inside `dir` (through the `/proc/self/fd` path of `dir`).
pub fn removexattr_at(dir: BorrowedFd<'_>, name: &[u8], xname: &CStr) -> io::Result<()> {
    fault!("sys::removexattr_at");
    let p = super::proc_path(dir, name)?;
    // SAFETY: `p` and `xname` are NUL-terminated.
    cvt(unsafe {
        if super::follows(name) {
            libc::removexattr(p.as_ptr(), xname.as_ptr())
        } else {
            libc::lremovexattr(p.as_ptr(), xname.as_ptr())
        }
    })
    .map(drop)
}

/// `name_to_handle_at(dir, name, 0)` (no symlink followed): the file handle type and bytes the
/// filesystem uses to find `name` again (what overlayfs records as a copy-up's origin).
pub fn file_handle(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<(i32, Vec<u8>)> {
    fault!("sys::file_handle");
    const MAX_HANDLE: usize = 128;
    #[repr(C)]
    struct Handle {
        bytes: u32,
        kind: i32,
        data: [u8; MAX_HANDLE],
    }
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

/// `linkat(olddir, old, newdir, new, 0)`: a new name for an existing file (never following a
/// symlink).
pub fn linkat(
    olddir: BorrowedFd<'_>,
    old: &CStr,
    newdir: BorrowedFd<'_>,
    new: &CStr,
) -> io::Result<()> {
    fault!("sys::linkat");
    // SAFETY: both names are NUL-terminated; both dir fds are live.
    cvt(unsafe {
        libc::linkat(
            olddir.as_raw_fd(),
            old.as_ptr(),
            newdir.as_raw_fd(),
            new.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// Opens the object an `O_PATH` fd refers to again, with `flags` (through its
/// `/proc/self/fd` magic link, which names the inode itself, not a path). The link must be
/// followed, so an `O_NOFOLLOW` among an application's flags is dropped; a symlink inode
/// still cannot be opened (ELOOP).
pub fn reopen(fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<OwnedFd> {
    fault!("sys::reopen");
    let p = super::proc_path(fd, b"")?;
    let flags = (flags & !libc::O_NOFOLLOW) | libc::O_CLOEXEC;
    // SAFETY: `p` is NUL-terminated; the returned fd is checked by cvt.
    let fd = cvt(unsafe { libc::open(p.as_ptr(), flags) })?;
    // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fallocate(fd, mode, off, len)`.
pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, off: u64, len: u64) -> io::Result<()> {
    fault!("sys::fallocate");
    // SAFETY: plain syscall on a live fd.
    cvt(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off as libc::off_t, len as libc::off_t) })
        .map(drop)
}

/// `pwrite(fd, buf, off)` once: the number of bytes written.
pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], off: u64) -> io::Result<usize> {
    fault!("sys::pwrite");
    // SAFETY: `buf` is a live slice of its length; `fd` is live.
    cvt_size(unsafe {
        libc::pwrite(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            off as libc::off_t,
        )
    })
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
    let mut so = src_off as libc::loff_t;
    let mut d = dst_off as libc::loff_t;
    // SAFETY: the offsets are live out-pointers; both fds are live.
    cvt_size(unsafe {
        libc::copy_file_range(src.as_raw_fd(), &mut so, dst.as_raw_fd(), &mut d, len, 0)
    })
}

/// `umask(mask)`: the previous mask.
pub fn umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// chmod of the inode `fd` refers to; `fd` may be `O_PATH` (through its `/proc/self/fd`
/// magic link, which lands on the inode itself). Symlinks have no mode of their own, never
/// call it on one.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    fault!("sys::fchmod");
    let p = super::proc_path(fd, b"")?;
    // SAFETY: `p` is NUL-terminated.
    cvt(unsafe { libc::chmod(p.as_ptr(), mode) }).map(drop)
}

/// chown of the inode `fd` refers to, which may be `O_PATH` (`fchownat` with
/// `AT_EMPTY_PATH`); `u32::MAX`: unchanged.
pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    fault!("sys::fchown");
    // SAFETY: the empty name is a NUL-terminated literal; `fd` is live.
    cvt(unsafe { libc::fchownat(fd.as_raw_fd(), c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH) })
        .map(drop)
}

/// Sets the times of the inode `fd` refers to, which may be `O_PATH` (`utimensat` with
/// `AT_EMPTY_PATH`; `UTIME_NOW` / `UTIME_OMIT` in `tv_nsec` as usual).
pub fn futimens(
    fd: BorrowedFd<'_>,
    atime: libc::timespec,
    mtime: libc::timespec,
) -> io::Result<()> {
    fault!("sys::futimens");
    let times = [atime, mtime];
    // SAFETY: `times` holds two timespecs as utimensat expects; the empty name is a
    // NUL-terminated literal; `fd` is live.
    cvt(unsafe {
        libc::utimensat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            times.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// The effective group id.
pub fn getegid() -> u32 {
    // SAFETY: getegid cannot fail.
    unsafe { libc::getegid() }
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
