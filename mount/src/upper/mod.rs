//! The writable side of a mount: opening and checking `upperdir` and `workdir`.
//!
//! Checked before anything is mounted, each with a message that names the path and says
//! what to do: both exist and are directories; they are on one filesystem (a copy is
//! renamed from the workdir into the upper); neither is inside the other; the upper's
//! filesystem takes the xattrs the marks need (`trusted.*`, or `user.*` rootless). Leftovers
//! of a copy interrupted by a crash are cleared from the workdir.
//!
//! An upper on a filesystem with no xattrs at all (NFS, bindfs `--xattr-none`, older
//! tmpfs) is taken as fuse-overlayfs takes it, with one warning naming what is lost:
//! whiteouts stay device nodes, opaque directories get a `.wh..wh..opq` file, a renamed
//! lower directory is refused with EXDEV (callers copy it, as with `redirect_dir=off`), no
//! origin is recorded (a copied-up file's inode number changes at the next mount), and
//! ACLs and file xattrs cannot be stored. A filesystem without `renameat2` flags (FUSE
//! filesystems such as bindfs) gets plain renames under the namespace lock instead.

pub mod copyup;
pub mod origin;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::format::MarkNs;
use crate::sys;
use crate::upper::copyup::Workdir;

/// An opened, checked upper layer and its workdir.
#[derive(Debug)]
pub struct Upper {
    pub path: PathBuf,
    pub fd: Arc<OwnedFd>,
    pub work: Workdir,
    pub ns: MarkNs,
    /// The upper's filesystem takes xattrs (else marks take the forms that need none).
    pub xattrs: bool,
    /// The upper's filesystem takes `RENAME_NOREPLACE` / `RENAME_EXCHANGE`.
    pub rename_flags: bool,
}

impl Upper {
    /// Marks the upper directory `name` of `dir` opaque: the kernel's xattr, or without
    /// xattrs a `.wh..wh..opq` file inside it.
    pub fn write_opaque(&self, dir: BorrowedFd<'_>, name: &[u8]) -> std::io::Result<()> {
        if self.xattrs {
            crate::format::write_opaque(dir, name, self.ns)
        } else {
            crate::format::write_opaque_marker(dir, name)
        }
    }
}

/// `EINVAL`: what a filesystem answers to `renameat2` flags it does not know.
pub fn no_rename_flags(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

#[derive(Debug, thiserror::Error)]
pub enum UpperError {
    #[error("{what} {path}: {source}{}", create_hint(source, path))]
    Open {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("upperdir {upper} and workdir {work} are on different filesystems; put the workdir on the upper's filesystem")]
    CrossDevice { upper: PathBuf, work: PathBuf },
    #[error("{inner} is inside {outer}: upperdir and workdir must be separate directories")]
    Nested { inner: PathBuf, outer: PathBuf },
    #[error("upperdir {path}: its filesystem does not take {ns}.* extended attributes ({source}); {hint}")]
    NoXattr {
        path: PathBuf,
        ns: &'static str,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("workdir {path}: clearing an interrupted copy: {source}")]
    Leftovers {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// For a directory that does not exist: how to make it.
fn create_hint(e: &std::io::Error, path: &Path) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        format!(" (create it first: mkdir -p {})", path.display())
    } else {
        String::new()
    }
}

fn open_dir(what: &'static str, path: &Path) -> Result<(OwnedFd, PathBuf, u64), UpperError> {
    let err = |source| UpperError::Open {
        what,
        path: path.to_path_buf(),
        source,
    };
    let fd = sys::open_host_dir(path).map_err(err)?;
    let st = sys::fstat(fd.as_fd()).map_err(err)?;
    let real = sys::fd_path(fd.as_fd()).map_err(err)?;
    Ok((fd, real, st.st_dev))
}

/// Opens and checks `upper` and `work`; marks will be written in namespace `ns`.
pub fn open(upper: &Path, work: &Path, ns: MarkNs) -> Result<Upper, UpperError> {
    let (ufd, upath, udev) = open_dir("upperdir", upper)?;
    let (wfd, wpath, wdev) = open_dir("workdir", work)?;
    if upath.starts_with(&wpath) {
        return Err(UpperError::Nested {
            inner: upath,
            outer: wpath,
        });
    }
    if wpath.starts_with(&upath) {
        return Err(UpperError::Nested {
            inner: wpath,
            outer: upath,
        });
    }
    if udev != wdev {
        return Err(UpperError::CrossDevice {
            upper: upath,
            work: wpath,
        });
    }
    let xattrs = match probe_xattrs(wfd.as_fd(), ns) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            log::warn!(
                "upperdir {}: its filesystem takes no xattrs: opaque directories get a \
                 .wh..wh..opq file, renaming a lower directory fails with EXDEV, copied-up \
                 files keep no origin (their inode numbers change at the next mount), \
                 and ACLs and xattrs cannot be set (the kernel cannot mount this upper)",
                upath.display()
            );
            false
        }
        Err(e) => Err(e).map_err(|source| UpperError::NoXattr {
            path: upath.clone(),
            ns: match ns {
                MarkNs::Trusted => "trusted",
                MarkNs::User => "user",
            },
            source,
            hint: match ns {
                MarkNs::Trusted => {
                    "trusted.* needs root in the initial user namespace; use -o userxattr"
                }
                MarkNs::User => {
                    "use a filesystem with user xattrs (ext4, xfs, btrfs, tmpfs >= 6.6)"
                }
            },
        })?,
    };
    let work = Workdir::new(wfd);
    let cleared = work
        .clear_leftovers()
        .map_err(|source| UpperError::Leftovers {
            path: wpath.clone(),
            source,
        })?;
    let rename_flags = probe_rename_flags(work.fd()).map_err(|source| UpperError::Leftovers {
        path: wpath.clone(),
        source,
    })?;
    if !rename_flags {
        log::info!(
            "workdir {}: no renameat2 flags on this filesystem; plain renames under the lock",
            wpath.display()
        );
    }
    if cleared > 0 {
        log::warn!(
            "workdir {}: removed {cleared} leftovers of an interrupted copy",
            wpath.display()
        );
    }
    Ok(Upper {
        path: upath,
        fd: Arc::new(ufd),
        work,
        ns,
        xattrs,
        rename_flags,
    })
}

/// True when the workdir's filesystem takes `RENAME_NOREPLACE` (tried on a temporary).
fn probe_rename_flags(work: std::os::fd::BorrowedFd<'_>) -> std::io::Result<bool> {
    let (a, b) = (c"#layerfs-probe-a", c"#layerfs-probe-b");
    drop(sys::create_excl(work, a, libc::O_WRONLY, 0o600)?);
    let r = sys::renameat2(work, a, work, b, libc::RENAME_NOREPLACE);
    let _ = sys::unlinkat(work, a, 0);
    let _ = sys::unlinkat(work, b, 0);
    match r {
        Ok(()) => Ok(true),
        Err(e) if no_rename_flags(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sets and removes a probe xattr on the workdir (same filesystem as the upper).
fn probe_xattrs(work: std::os::fd::BorrowedFd<'_>, ns: MarkNs) -> std::io::Result<()> {
    let name = match ns {
        MarkNs::Trusted => c"trusted.overlay.layerfs-probe",
        MarkNs::User => c"user.overlay.layerfs-probe",
    };
    sys::setxattr_at(work, b"", name, b"1", 0)?;
    sys::removexattr_at(work, b"", name)
}
