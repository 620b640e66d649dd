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
    /// The file handle is not one we handed out.
    #[error("unknown file handle {0}")]
    BadHandle(u64),
    /// A malformed request (bad name, bad flags).
    #[error("invalid argument")]
    Invalid,
    /// The xattr does not exist or is private to the union.
    #[error("no such attribute")]
    NoAttr,
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

    /// A failure with a plain errno (EEXIST, ENOTEMPTY...) decided by the union itself.
    pub fn os(op: &'static str, code: i32) -> Error {
        Error::Io {
            op,
            source: io::Error::from_raw_os_error(code),
        }
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
            Error::BadHandle(_) => libc::EBADF,
            Error::Invalid => libc::EINVAL,
            Error::NoAttr => libc::ENODATA,
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
            Error::StaleInode(_) | Error::BadHandle(_) => true,
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
        let e = Error::io("openat")(io::Error::from_raw_os_error(libc::ELOOP));
        assert_eq!(e.errno(), libc::ELOOP);
        let e = Error::io("x")(io::Error::other("no os code"));
        assert_eq!(e.errno(), libc::EIO);
    }
}
