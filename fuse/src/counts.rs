//! Requests counted per opcode, for measuring what a workload costs in round trips (a count
//! is deterministic where a timing on a shared machine is not).
//!
//! Enabled by `LAYERFS_REQUEST_COUNTS=FILE`: when the session ends, the counts are written
//! to FILE as `opcode count` lines (and logged at debug level).

use std::sync::atomic::{AtomicU64, Ordering};

/// The requests the adapter answers.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Lookup,
    Forget,
    Getattr,
    Readlink,
    Open,
    Read,
    Flush,
    Release,
    Lseek,
    Opendir,
    Readdir,
    Readdirplus,
    Releasedir,
    Statfs,
    Getxattr,
    Listxattr,
    Access,
    Setattr,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Setxattr,
    Removexattr,
    Create,
    Write,
    Fsync,
    Fsyncdir,
    Fallocate,
    Ioctl,
    CopyFileRange,
    Tmpfile,
}

const NAMES: [&str; 35] = [
    "lookup",
    "forget",
    "getattr",
    "readlink",
    "open",
    "read",
    "flush",
    "release",
    "lseek",
    "opendir",
    "readdir",
    "readdirplus",
    "releasedir",
    "statfs",
    "getxattr",
    "listxattr",
    "access",
    "setattr",
    "mknod",
    "mkdir",
    "unlink",
    "rmdir",
    "symlink",
    "rename",
    "link",
    "setxattr",
    "removexattr",
    "create",
    "write",
    "fsync",
    "fsyncdir",
    "fallocate",
    "ioctl",
    "copy_file_range",
    "tmpfile",
];

/// Where to write the counts, from the environment.
pub const ENV: &str = "LAYERFS_REQUEST_COUNTS";

#[derive(Debug)]
pub struct Counts {
    n: [AtomicU64; NAMES.len()],
}

impl Counts {
    /// Counting is on only when [`ENV`] names a file.
    pub fn from_env() -> Option<Counts> {
        std::env::var_os(ENV).map(|_| Counts {
            n: std::array::from_fn(|_| AtomicU64::new(0)),
        })
    }

    pub fn add(&self, op: Op) {
        self.n[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// `opcode count` lines for the opcodes seen, then `total N`.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let mut total = 0;
        for (name, n) in NAMES.iter().zip(&self.n) {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                out.push_str(&format!("{name} {n}\n"));
                total += n;
            }
        }
        out.push_str(&format!("total {total}\n"));
        // How many of them came over FUSE-over-io_uring rings (`-o io_uring`), when any did.
        let ring = fuser::uring_requests();
        if ring > 0 {
            out.push_str(&format!("over_io_uring {ring}\n"));
        }
        out
    }

    /// Writes the report to the file named by [`ENV`].
    pub fn write(&self) {
        let report = self.report();
        log::debug!("requests:\n{report}");
        if let Some(path) = std::env::var_os(ENV) {
            if let Err(e) = std::fs::write(&path, report) {
                log::warn!("writing request counts to {path:?}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_ops() {
        assert_eq!(NAMES[Op::Lookup as usize], "lookup");
        assert_eq!(NAMES[Op::Readdirplus as usize], "readdirplus");
        assert_eq!(NAMES[Op::CopyFileRange as usize], "copy_file_range");
        let c = Counts {
            n: std::array::from_fn(|_| AtomicU64::new(0)),
        };
        c.add(Op::Getattr);
        c.add(Op::Getattr);
        c.add(Op::Write);
        assert_eq!(c.report(), "getattr 2\nwrite 1\ntotal 3\n");
    }
}
