//! Copy-up: making an upper copy of a lower entry before it is changed.
//!
//! The copy is built under a fresh name in the workdir and renamed into the upper with
//! `RENAME_NOREPLACE`, so a crash leaves either no copy or a complete one (plus, at worst,
//! a temporary in the workdir, which is cleared at mount). Kept: content (sparse files stay
//! sparse: reflink if the filesystem can, else only the data extents are copied), mode
//! including setuid/setgid (set after chown, which clears them), owner, atime and mtime to
//! the nanosecond, and every visible xattr. Directories are copied without their contents
//! (the lower entries stay visible through the merge). Data is fsynced before the rename
//! unless the mount is `volatile`, as the kernel does.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use log::debug;

use crate::stack::dirindex::{self, Kind};
use crate::sys::{self, Stat};

/// The workdir: where copies are built before they appear in the upper.
#[derive(Debug)]
pub struct Workdir {
    fd: OwnedFd,
    next: AtomicU64,
}

/// Prefix of every temporary name layerfs creates in the workdir.
pub const TEMP_PREFIX: &str = "#layerfs-";
/// A supervised mount's removed-but-open file, linked in the workdir until the kernel
/// forgets it (`union/recover.rs`).
pub const ORPHAN_PREFIX: &str = "#layerfs-orphan-";

impl Workdir {
    pub fn new(fd: OwnedFd) -> Workdir {
        Workdir {
            fd,
            next: AtomicU64::new(0),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A name no other copy in flight uses.
    pub(crate) fn temp_name(&self) -> CString {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        CString::new(format!("{TEMP_PREFIX}{}-{n}", std::process::id())).expect("no NUL")
    }

    /// Removes leftovers of an earlier daemon that died mid-copy (they are never visible:
    /// the workdir is not part of the merged view).
    pub fn clear_leftovers(&self) -> io::Result<usize> {
        let mut n = 0;
        for e in sys::read_dir(self.fd())? {
            // Orphans are the union's, kept across a supervised mount's restart
            // (`Union::sweep_orphans`).
            if e.name.starts_with(TEMP_PREFIX.as_bytes())
                && !e.name.starts_with(ORPHAN_PREFIX.as_bytes())
            {
                remove_tree(self.fd(), &e.name)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Removes `name` in `dir`, recursively if it is a directory, never following a symlink.
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let c = sys::cstr(name)?;
    match sys::unlinkat(dir, &c, 0) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR | libc::EPERM)) => {
            let sub = sys::open_subdir(dir, &c)?;
            for e in sys::read_dir(sub.as_fd())? {
                remove_tree(sub.as_fd(), &e.name)?;
            }
            sys::unlinkat(dir, &c, libc::AT_REMOVEDIR)
        }
        Err(e) => Err(e),
    }
}

/// How a copy-up behaves.
#[derive(Debug, Clone, Copy)]
pub struct CopyOpts {
    /// fsync data and the new entry before it becomes visible (off with `volatile`).
    pub fsync: bool,
    /// Record the lower file as the copy's origin in this namespace (`*.overlay.origin`),
    /// so its inode number survives the copy-up and a remount, as with the kernel.
    pub origin: Option<crate::format::MarkNs>,
    /// Copy the file's data (false for an open with `O_TRUNC`: the copy starts empty).
    pub data: bool,
    /// Copy metadata only, marked `*.overlay.metacopy` in this namespace (`metacopy=on`):
    /// a regular file's data stays in the lower file.
    pub metacopy: Option<crate::format::MarkNs>,
    /// The upper may refuse to give the copy its owner (`EPERM`: NFS with root squash, a
    /// rootless daemon): the mount squashes owners, so nobody sees the difference.
    pub owner_optional: bool,
}

/// Copies entry `name` of the lower directory `src_dir` (whose `lstat` is `st`) to entry
/// `name` of the upper directory `dst_dir`. Fails with `EEXIST` if the upper has that name.
pub fn copy_up(
    src_dir: BorrowedFd<'_>,
    name: &[u8],
    st: &Stat,
    work: &Workdir,
    dst_dir: BorrowedFd<'_>,
    opts: CopyOpts,
) -> io::Result<()> {
    let tmp = work.temp_name();
    let result = build(src_dir, name, st, work, &tmp, opts)
        .and_then(|()| rename_noreplace(work.fd(), &tmp, dst_dir, &sys::cstr(name)?));
    if result.is_err() {
        if let Err(e) = remove_tree(work.fd(), tmp.as_bytes()) {
            if e.raw_os_error() != Some(libc::ENOENT) {
                debug!("copy-up: leaving {tmp:?} in the workdir: {e}");
            }
        }
    }
    result
}

/// Renames without replacing: `RENAME_NOREPLACE`, or on a filesystem without renameat2
/// flags (bindfs, other FUSE uppers) a check then a plain rename, which the caller's
/// exclusive namespace lock makes safe (the upper changes only through the mount).
pub(crate) fn rename_noreplace(
    from_dir: BorrowedFd<'_>,
    from: &std::ffi::CStr,
    to_dir: BorrowedFd<'_>,
    to: &std::ffi::CStr,
) -> io::Result<()> {
    match sys::renameat2(from_dir, from, to_dir, to, libc::RENAME_NOREPLACE) {
        Err(e) if super::no_rename_flags(&e) => match sys::lstatat(to_dir, to) {
            Ok(_) => Err(io::Error::from_raw_os_error(libc::EEXIST)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                sys::renameat2(from_dir, from, to_dir, to, 0)
            }
            Err(e) => Err(e),
        },
        r => r,
    }
}

/// Builds the complete copy under `tmp` in the workdir.
fn build(
    src_dir: BorrowedFd<'_>,
    name: &[u8],
    st: &Stat,
    work: &Workdir,
    tmp: &CString,
    opts: CopyOpts,
) -> io::Result<()> {
    let cname = sys::cstr(name)?;
    let kind = Kind::from_mode(st.st_mode);
    let mut data: Option<OwnedFd> = None;
    match kind {
        Kind::File => {
            let src = sys::openat(src_dir, &cname, libc::O_RDONLY)?;
            let dst = sys::create_excl(work.fd(), tmp, libc::O_WRONLY, 0o600)?;
            if opts.metacopy.is_some() {
                // Metadata only: a hole of the file's size; the data stays below.
                sys::ftruncate(dst.as_fd(), st.st_size as u64)?;
            } else if opts.data {
                copy_data(src.as_fd(), dst.as_fd(), st.st_size as u64)?;
            }
            data = Some(dst);
        }
        Kind::Dir => sys::mkdirat(work.fd(), tmp, 0o700)?,
        Kind::Symlink => sys::symlinkat(
            &sys::cstr(&sys::readlinkat(src_dir, &cname)?)?,
            work.fd(),
            tmp,
        )?,
        Kind::Fifo | Kind::Socket | Kind::CharDev | Kind::BlockDev => sys::mknodat(
            work.fd(),
            tmp,
            st.st_mode & libc::S_IFMT | 0o600,
            st.st_rdev,
        )?,
    }
    let xattrs = dirindex::read_xattrs(src_dir, name)?;
    for (x, v) in xattrs.names.iter().zip(&xattrs.values) {
        if let Err(e) = sys::setxattr_at(work.fd(), tmp.as_bytes(), &sys::cstr(x)?, v, 0) {
            // Namespaces we may not write (trusted.* without CAP_SYS_ADMIN, user.* on a
            // symlink) cannot be kept; the kernel drops them the same way.
            if !matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOTSUP)) {
                return Err(e);
            }
            debug!(
                "copy-up: xattr {} not kept: {e}",
                String::from_utf8_lossy(x)
            );
        }
    }
    if let (Some(ns), Kind::File) = (opts.metacopy, kind) {
        sys::setxattr_at(work.fd(), tmp.as_bytes(), ns.metacopy(), b"", 0)?;
    }
    if let Some(ns) = opts.origin {
        match sys::file_handle(src_dir, &cname) {
            Ok((kind, handle)) => sys::setxattr_at(
                work.fd(),
                tmp.as_bytes(),
                ns.origin(),
                &crate::format::origin::record(kind, &handle),
                0,
            )?,
            // A lower filesystem without file handles: no origin, as with the kernel.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) => {}
            Err(e) => return Err(e),
        }
    }
    match sys::lchownat(work.fd(), tmp, st.st_uid, st.st_gid) {
        // Squashed owners show the same whatever the copy's owner is (fuse-overlayfs#374).
        Err(e) if opts.owner_optional && e.raw_os_error() == Some(libc::EPERM) => {
            debug!("copy-up: owner not kept (owners are squashed): {e}")
        }
        r => r?,
    }
    if kind != Kind::Symlink {
        sys::chmodat(work.fd(), tmp, st.st_mode & 0o7777)?;
    }
    let (at, mt) = sys::times_of(st);
    sys::lutimesat(work.fd(), tmp, at, mt)?;
    if let (Some(fd), true) = (data, opts.fsync) {
        sys::fsync(fd.as_fd(), false)?;
    }
    Ok(())
}

/// Copies `size` bytes of file data: a reflink when the filesystem shares extents, else
/// only the data extents (holes stay holes), with `copy_file_range` or, failing that,
/// read/write.
pub fn copy_data(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    if size == 0 || sys::reflink(src, dst).is_ok() {
        return Ok(());
    }
    sys::ftruncate(dst, size)?;
    let mut off = 0u64;
    while off < size {
        let data = match sys::lseek(src, off as i64, libc::SEEK_DATA) {
            Ok(d) => d as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break, // only a hole is left
            Err(e) => return Err(e),
        };
        let end = (sys::lseek(src, data as i64, libc::SEEK_HOLE)? as u64).min(size);
        copy_extent(src, dst, data, end)?;
        off = end;
    }
    Ok(())
}

fn copy_extent(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, mut off: u64, end: u64) -> io::Result<()> {
    let mut use_cfr = true;
    let mut buf = Vec::new();
    while off < end {
        let want = (end - off).min(1 << 30) as usize;
        if use_cfr {
            match sys::copy_range(src, dst, off, want) {
                Ok(0) => return Err(io::Error::from_raw_os_error(libc::EIO)), // file shrank
                Ok(n) => {
                    off += n as u64;
                    continue;
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP)
                    ) =>
                {
                    use_cfr = false;
                }
                Err(e) => return Err(e),
            }
        }
        buf.resize(want.min(1 << 20), 0);
        let n = sys::pread_full(src, &mut buf, off)?;
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        sys::pwrite_all(dst, &buf[..n], off)?;
        off += n as u64;
    }
    Ok(())
}
