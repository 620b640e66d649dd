//! The writable side of a mount: opening and checking `upperdir` and `workdir`.
//!
//! Checked before anything is mounted, each with a message that names the path and says
//! what to do: both exist and are directories; they are on one filesystem (a copy is
//! renamed from the workdir into the upper); neither is inside the other; the upper's
//! filesystem takes the xattrs the marks need (`trusted.*`, or `user.*` rootless). Leftovers
//! of a copy interrupted by a crash are cleared from the workdir.

pub mod copyup;

use std::os::fd::{AsFd, OwnedFd};
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
    probe_xattrs(wfd.as_fd(), ns).map_err(|source| UpperError::NoXattr {
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
            MarkNs::User => "use a filesystem with user xattrs (ext4, xfs, btrfs, tmpfs >= 6.6)",
        },
    })?;
    let work = Workdir::new(wfd);
    let cleared = work
        .clear_leftovers()
        .map_err(|source| UpperError::Leftovers {
            path: wpath.clone(),
            source,
        })?;
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
    })
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
