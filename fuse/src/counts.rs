//! Requests counted per opcode (the table in `op.rs`), for measuring what a workload costs
//! in round trips (a count is deterministic where a timing on a shared machine is not).
//!
//! Enabled by `LAYERFS_REQUEST_COUNTS=FILE`: when the session ends, the counts are written
//! to FILE as `opcode count` lines (and logged at debug level). When FILE is a directory,
//! each daemon writes its own file in it, named by its pid (a program such as podman that
//! starts many mounts with one environment).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::op::Op;

/// Where to write the counts, from the environment.
pub const ENV: &str = "LAYERFS_REQUEST_COUNTS";

#[derive(Debug)]
pub struct Counts {
    n: [AtomicU64; Op::ALL.len()],
}

impl Counts {
    /// Counting is on only when `LAYERFS_REQUEST_COUNTS` names a file.
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
        for (op, n) in Op::ALL.iter().zip(&self.n) {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                out.push_str(&format!("{} {n}\n", op.name()));
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

    /// Writes the report to the file named by `LAYERFS_REQUEST_COUNTS`.
    pub fn write(&self) {
        let report = self.report();
        log::debug!("requests:\n{report}");
        if let Some(path) = std::env::var_os(ENV) {
            let mut path = std::path::PathBuf::from(path);
            if path.is_dir() {
                path.push(std::process::id().to_string());
            }
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
    fn counts_are_reported_by_name_in_the_tables_order() {
        let c = Counts {
            n: std::array::from_fn(|_| AtomicU64::new(0)),
        };
        c.add(Op::Write);
        c.add(Op::Getattr);
        c.add(Op::Getattr);
        c.add(Op::CopyFileRange);
        assert_eq!(
            c.report(),
            "getattr 2\nwrite 1\ncopy_file_range 1\ntotal 4\n"
        );
    }
}
