//! The daemon's failpoint control socket (`base/src/sys/faults.rs`, feature `failpoints`):
//! the wrappers that can fail, and one command at a time.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::eventually;

/// The wrappers faulted: every one that changes the upper or the workdir (not the data
/// path of WRITE, fallocate and fsync, whose errors the kernel's writeback cache reports
/// later, on another call), and `openat`.
pub const POINTS: &[&str] = &[
    "sys::openat",
    "sys::mkdirat",
    "sys::mknodat",
    "sys::symlinkat",
    "sys::unlinkat",
    "sys::renameat2",
    "sys::create_excl",
    "sys::lchownat",
    "sys::chmodat",
    "sys::lutimesat",
    "sys::setxattr_at",
    "sys::removexattr_at",
    "sys::ftruncate",
    "sys::reflink",
    "sys::copy_range",
    "sys::pwrite_all",
    "sys::file_handle",
    "sys::linkat",
    "sys::reopen",
    "sys::copy_range_at",
    "sys::fchmod",
    "sys::fchown",
    "sys::futimens",
];

/// One command to the daemon's failpoint socket; its answer after `ok`.
pub fn ctl(sock: &Path, cmd: &str) -> String {
    // The socket's file exists from bind(2), a moment before listen(2): retried then.
    let mut conn = None;
    eventually("the failpoint socket accepting", || {
        conn = UnixStream::connect(sock).ok();
        conn.is_some()
    });
    let mut s = conn.expect("connected");
    writeln!(s, "{cmd}").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    let rest = line
        .trim()
        .strip_prefix("ok")
        .unwrap_or_else(|| panic!("{cmd}: {line}"));
    rest.trim().to_string()
}
