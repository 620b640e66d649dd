//! The core's error type and its errno mapping: the one place where a union-level failure
//! becomes the number an application sees.

use std::io;

/// A failed union operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name is absent or hidden by a whiteout / opaque directory.
    #[error("no such entry")]
    NotFound,
    /// A directory operation on a non-directory.
    #[error("not a directory")]
    NotDir,
    /// A file operation on a directory.
    #[error("is a directory")]
    IsDir,
    /// A mutation on a mount without an upper layer.
    #[error("read-only mount")]
    ReadOnly,
    /// The inode is not (or no longer) known; the kernel holds a stale reference.
    #[error("unknown inode {0}")]
    StaleInode(u64),
    /// A node id or handle an earlier daemon on this connection gave and a restarted one
    /// cannot answer: its file lost its last name before the restart (`union/recover.rs`).
    #[error("node {0} was removed before the daemon restarted")]
    LostInRestart(u64),
    /// The name moved to a new node: the kernel must look it up again (a lower file its
    /// old node's open files are bound to is being copied up; `union/fs.rs`).
    #[error("node superseded; look the name up again")]
    Superseded,
    /// The file handle is not one we handed out.
    #[error("unknown file handle {0}")]
    BadHandle(u64),
    /// A malformed request (bad name, bad flags).
    #[error("invalid argument")]
    Invalid,
    /// The xattr does not exist or is private to the union.
    #[error("no such attribute")]
    NoAttr,
    /// The name is taken (create, link, a rename that must not replace).
    #[error("entry exists")]
    Exists,
    /// A directory to remove or replace still has entries.
    #[error("directory not empty")]
    NotEmpty,
    /// Truncating a file that is being executed.
    #[error("file is being executed")]
    Executing,
    /// Refused whoever asks, as the kernel refuses it (a hard link to a directory, a
    /// character device 0:0, which is the whiteout's shape).
    #[error("{0}: not permitted")]
    NotPermitted(&'static str),
    /// A mode change by a caller who neither owns the file nor holds `CAP_FOWNER` (the
    /// set-id bits a chown(-1, -1) drops), refused as the VFS refuses it.
    #[error("not the owner")]
    NotOwner,
    /// A permission check failed for this caller (`access(2)`'s classic owner/group/other
    /// check), as the VFS refuses it.
    #[error("permission denied")]
    Denied,
    /// A rename the upper cannot record (a lower directory, on an upper without xattrs for
    /// a redirect): EXDEV, which makes `mv` copy instead, as the kernel with
    /// `redirect_dir=off`.
    #[error("{0}: cannot be renamed in place")]
    CrossDevice(&'static str),
    /// An xattr name of the union's own on-disk format (`*.overlay.*`), never settable.
    #[error("private attribute")]
    PrivateXattr,
    /// xattrs are off on this mount (`noxattrs=1`, as fuse-overlayfs).
    #[error("xattrs are off on this mount")]
    NoXattrs,
    /// A state that should be impossible; a bug of ours, answered EIO and logged.
    #[error("internal error: {0}")]
    Bug(&'static str),
    /// A lower file whose content does not match its layer's hash list (`-o verify`):
    /// its bytes are never served. Logged as an error by the adapter.
    #[error("layer {layer}: {path}: {why}")]
    Corrupt {
        layer: String,
        path: String,
        why: String,
    },
    /// Content that exists elsewhere and cannot be had now (`serve-layers`: a registry that
    /// cannot be reached, a layer that cannot be served); the cause is logged where it
    /// happens.
    #[error("{0}: unavailable")]
    Unavailable(&'static str),
    /// A syscall on a layer failed; `op` names it for the log.
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps an `io::Error` from the syscall `op`.
    pub fn io(op: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { op, source }
    }

    /// The errno an application sees. Exhaustive on purpose: a new variant must decide.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound => libc::ENOENT,
            Error::NotDir => libc::ENOTDIR,
            Error::IsDir => libc::EISDIR,
            Error::ReadOnly => libc::EROFS,
            // The kernel reacts to ESTALE by dropping its dentry and looking the name up again.
            Error::StaleInode(_) => libc::ESTALE,
            // As for any file removed behind a client's back (NFS's answer).
            Error::LostInRestart(_) => libc::ESTALE,
            // The VFS retries a path-based call that fails so with LOOKUP_REVAL: the
            // revalidating LOOKUP finds the new node.
            Error::Superseded => libc::ESTALE,
            Error::BadHandle(_) => libc::EBADF,
            Error::Invalid => libc::EINVAL,
            Error::NoAttr => libc::ENODATA,
            Error::Exists => libc::EEXIST,
            Error::NotEmpty => libc::ENOTEMPTY,
            Error::Executing => libc::ETXTBSY,
            Error::NotPermitted(_) | Error::NotOwner => libc::EPERM,
            Error::Denied => libc::EACCES,
            Error::PrivateXattr => libc::EOPNOTSUPP,
            Error::CrossDevice(_) => libc::EXDEV,
            Error::NoXattrs => libc::EOPNOTSUPP,
            Error::Bug(_) => libc::EIO,
            // As a disk answers a bad sector: the data exists and cannot be given.
            Error::Corrupt { .. } => libc::EIO,
            // As a network filesystem answers when its server does not.
            Error::Unavailable(_) => libc::EIO,
            // An io::Error without an OS code is a bug of ours, not the caller's: EIO.
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// True for failures worth an `error!` log line (not the everyday ENOENT / ENODATA).
    pub fn is_unexpected(&self) -> bool {
        match self {
            Error::Io { source, .. } => !matches!(
                source.raw_os_error(),
                Some(
                    libc::ENOENT
                        | libc::ENODATA
                        | libc::ERANGE
                        | libc::ENOTSUP
                        | libc::EACCES
                        | libc::EPERM
                        | libc::EEXIST
                        | libc::ENOTEMPTY
                        | libc::ENOTDIR
                        | libc::EISDIR
                        | libc::EINVAL
                        | libc::ENAMETOOLONG
                        | libc::ENOSPC
                        | libc::EDQUOT
                        | libc::EXDEV
                        | libc::ETXTBSY
                )
            ),
            Error::StaleInode(_)
            | Error::BadHandle(_)
            | Error::Bug(_)
            | Error::Corrupt { .. }
            | Error::Unavailable(_) => true,
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

impl layerfs_fuse::ToErrno for Error {
    fn errno(&self) -> i32 {
        Error::errno(self)
    }
    fn is_unexpected(&self) -> bool {
        Error::is_unexpected(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        assert_eq!(Error::NotFound.errno(), libc::ENOENT);
        assert_eq!(Error::ReadOnly.errno(), libc::EROFS);
        assert_eq!(Error::Exists.errno(), libc::EEXIST);
        assert_eq!(Error::NotEmpty.errno(), libc::ENOTEMPTY);
        assert_eq!(Error::NotPermitted("link").errno(), libc::EPERM);
        assert!(Error::Bug("x").is_unexpected() && !Error::Exists.is_unexpected());
        assert_eq!(Error::Unavailable("registry").errno(), libc::EIO);
        let e = Error::io("openat")(io::Error::from_raw_os_error(libc::ELOOP));
        assert_eq!(e.errno(), libc::ELOOP);
        let e = Error::io("x")(io::Error::other("no os code"));
        assert_eq!(e.errno(), libc::EIO);
    }
}
