//! Filesystem operations as data: a generator (proptest) and an executor that runs one
//! operation on a mounted tree and reports what an application would see (value or errno).
//!
//! Nothing here follows a symlink: layers hold symlinks to `/etc` and `../..`, and an
//! operation through one would change the host. Final components are never followed
//! (`O_NOFOLLOW`, `l*` calls, `AT_SYMLINK_NOFOLLOW`), and an operation whose path crosses
//! a symlink in a directory position is not run at all (reported as `Skipped`, on both
//! sides alike since both trees are the same up to that point).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

#[derive(Debug, Clone)]
pub enum Op {
    /// open(O_WRONLY|O_CREAT [|O_TRUNC|O_APPEND]) + pwrite at `at` (or append).
    Write {
        path: String,
        data: Vec<u8>,
        how: WriteHow,
    },
    Truncate {
        path: String,
        len: u64,
    },
    Mkdir {
        path: String,
        mode: u32,
    },
    Rmdir {
        path: String,
    },
    Unlink {
        path: String,
    },
    Rename {
        from: String,
        to: String,
        flags: u32,
    },
    Symlink {
        target: String,
        path: String,
    },
    Link {
        from: String,
        to: String,
    },
    /// mknod of a fifo, or of a char device 0:0 (the whiteout's shape: the kernel refuses
    /// it with EPERM on the merged view, even for root).
    Mknod {
        path: String,
        kind: u32,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    Chown {
        path: String,
        uid: u32,
    },
    Utime {
        path: String,
        secs: i64,
    },
    SetXattr {
        path: String,
        name: String,
        value: Vec<u8>,
    },
    RemoveXattr {
        path: String,
        name: String,
    },
    Read {
        path: String,
    },
    /// setfacl: an access ACL (or a directory's default ACL) naming user 1000 and group
    /// 100, with permissions from `perms` (3 bits each: user 1000, group 100, mask).
    SetAcl {
        path: String,
        default: bool,
        perms: u16,
    },
}

#[derive(Debug, Clone, Copy)]
pub enum WriteHow {
    Truncate,
    Append,
    At(u64),
}

/// What an operation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Data(Vec<u8>),
    Errno(i32),
    Skipped,
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("a".to_string()),
        3 => Just("b".to_string()),
        2 => Just("c".to_string()),
        4 => Just("dir".to_string()),
        1 => Just("ünïcødé ✓".to_string()),
        1 => Just("x".repeat(251)),
        1 => Just("new".to_string()),
    ]
}

/// A path of one to three components from a small pool, so operations meet often.
pub fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(component(), 1..=3).prop_map(|c| c.join("/"))
}

pub fn op() -> impl Strategy<Value = Op> {
    let data = prop::collection::vec(any::<u8>(), 0..32);
    let how = prop_oneof![
        Just(WriteHow::Truncate),
        Just(WriteHow::Append),
        (0u64..40).prop_map(WriteHow::At),
    ];
    let rename_flags =
        prop::sample::select(vec![0, 0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE]);
    prop_oneof![
        6 => (path(), data, how).prop_map(|(path, data, how)| Op::Write { path, data, how }),
        2 => (path(), 0u64..50).prop_map(|(path, len)| Op::Truncate { path, len }),
        4 => (path(), prop::sample::select(vec![0o755u32, 0o700, 0o2775]))
            .prop_map(|(path, mode)| Op::Mkdir { path, mode }),
        3 => path().prop_map(|path| Op::Rmdir { path }),
        4 => path().prop_map(|path| Op::Unlink { path }),
        5 => (path(), path(), rename_flags).prop_map(|(from, to, flags)| Op::Rename { from, to, flags }),
        1 => (prop::sample::select(vec!["a", "/etc", "../x"]), path())
            .prop_map(|(t, path)| Op::Symlink { target: t.to_string(), path }),
        2 => (path(), path()).prop_map(|(from, to)| Op::Link { from, to }),
        1 => (path(), prop::sample::select(vec![libc::S_IFIFO, libc::S_IFIFO, libc::S_IFCHR]))
            .prop_map(|(path, kind)| Op::Mknod { path, kind }),
        2 => (path(), prop::sample::select(vec![0o644u32, 0o4755, 0o600, 0o1777]))
            .prop_map(|(path, mode)| Op::Chmod { path, mode }),
        1 => (path(), prop::sample::select(vec![0u32, 1000, 65534]))
            .prop_map(|(path, uid)| Op::Chown { path, uid }),
        1 => (path(), 0i64..2_000_000_000).prop_map(|(path, secs)| Op::Utime { path, secs }),
        2 => (path(), prop::sample::select(vec!["user.a", "user.new", "trusted.t"]), prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(path, name, value)| Op::SetXattr { path, name: name.to_string(), value }),
        1 => (path(), prop::sample::select(vec!["user.a", "trusted.t"]))
            .prop_map(|(path, name)| Op::RemoveXattr { path, name: name.to_string() }),
        3 => path().prop_map(|path| Op::Read { path }),
    ]
}

/// [`op`], and setfacl now and then (mounted tests only: the core replay has no ACL logic
/// of the kernel's VFS to stand in for it).
pub fn op_with_acls() -> impl Strategy<Value = Op> {
    prop_oneof![
        24 => op(),
        1 => (path(), any::<bool>(), 0u16..0o777)
            .prop_map(|(path, default, perms)| Op::SetAcl { path, default, perms }),
    ]
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn check(r: libc::c_int) -> Outcome {
    if r < 0 {
        Outcome::Errno(errno())
    } else {
        Outcome::Ok
    }
}

/// True when a directory position of `rel` under `root` is a symlink (never crossed).
fn crosses_symlink(root: &Path, rel: &str) -> bool {
    let mut p = root.to_path_buf();
    let comps: Vec<&str> = rel.split('/').collect();
    for comp in &comps[..comps.len() - 1] {
        p.push(comp);
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.file_type().is_symlink() => return true,
            Ok(_) => {}
            Err(_) => return false, // the operation fails with ENOENT/ENOTDIR by itself
        }
    }
    false
}

pub fn paths(op: &Op) -> Vec<&str> {
    match op {
        Op::Rename { from, to, .. } | Op::Link { from, to } => vec![from, to],
        Op::Write { path, .. }
        | Op::Truncate { path, .. }
        | Op::Mkdir { path, .. }
        | Op::Rmdir { path }
        | Op::Unlink { path }
        | Op::Symlink { path, .. }
        | Op::Mknod { path, .. }
        | Op::Chmod { path, .. }
        | Op::Chown { path, .. }
        | Op::Utime { path, .. }
        | Op::SetXattr { path, .. }
        | Op::RemoveXattr { path, .. }
        | Op::SetAcl { path, .. }
        | Op::Read { path } => vec![path],
    }
}

fn open_nofollow(p: &Path, flags: i32) -> Result<std::fs::File, i32> {
    // SAFETY: `p` is NUL-terminated; the mode argument is the variadic int.
    let fd = unsafe {
        libc::open(
            c(p).as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// A POSIX ACL xattr value (`posix_acl_xattr` version 2): owner rw-, user 1000, group
/// rwx... as `perms` says, group 100, mask, other r--.
fn acl_value(perms: u16) -> Vec<u8> {
    let (u, g, m) = ((perms >> 6) & 7, (perms >> 3) & 7, perms & 7);
    let entries: [(u16, u16, u32); 6] = [
        (0x01, 6, u32::MAX), // ACL_USER_OBJ
        (0x02, u, 1000),     // ACL_USER
        (0x04, 5, u32::MAX), // ACL_GROUP_OBJ
        (0x08, g, 100),      // ACL_GROUP
        (0x10, m, u32::MAX), // ACL_MASK
        (0x20, 4, u32::MAX), // ACL_OTHER
    ];
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// Runs `op` on the tree mounted at `root`.
pub fn apply(root: &Path, op: &Op) -> Outcome {
    if paths(op).iter().any(|p| crosses_symlink(root, p)) {
        return Outcome::Skipped;
    }
    let at = |p: &str| -> PathBuf { root.join(p) };
    use std::os::unix::fs::FileExt;
    // SAFETY: for every libc call below, paths are NUL-terminated CStrings that outlive the
    // call; buffers are live slices of the length passed.
    unsafe {
        match op {
            Op::Write { path, data, how } => {
                let mut flags = libc::O_WRONLY | libc::O_CREAT;
                match how {
                    WriteHow::Truncate => flags |= libc::O_TRUNC,
                    WriteHow::Append => flags |= libc::O_APPEND,
                    WriteHow::At(_) => {}
                }
                let f = match open_nofollow(&at(path), flags) {
                    Ok(f) => f,
                    Err(e) => return Outcome::Errno(e),
                };
                let r = match how {
                    WriteHow::At(off) => f.write_at(data, *off),
                    _ => std::io::Write::write(&mut &f, data),
                };
                match r {
                    Ok(_) => Outcome::Ok,
                    Err(e) => Outcome::Errno(e.raw_os_error().unwrap_or(0)),
                }
            }
            Op::Truncate { path, len } => match open_nofollow(&at(path), libc::O_WRONLY) {
                Ok(f) => match f.set_len(*len) {
                    Ok(()) => Outcome::Ok,
                    Err(e) => Outcome::Errno(e.raw_os_error().unwrap_or(0)),
                },
                Err(e) => Outcome::Errno(e),
            },
            Op::Mkdir { path, mode } => check(libc::mkdir(c(&at(path)).as_ptr(), *mode)),
            Op::Rmdir { path } => check(libc::rmdir(c(&at(path)).as_ptr())),
            Op::Unlink { path } => check(libc::unlink(c(&at(path)).as_ptr())),
            Op::Rename { from, to, flags } => check(libc::renameat2(
                libc::AT_FDCWD,
                c(&at(from)).as_ptr(),
                libc::AT_FDCWD,
                c(&at(to)).as_ptr(),
                *flags,
            )),
            Op::Symlink { target, path } => check(libc::symlink(
                CString::new(target.as_str()).unwrap().as_ptr(),
                c(&at(path)).as_ptr(),
            )),
            Op::Link { from, to } => check(libc::link(c(&at(from)).as_ptr(), c(&at(to)).as_ptr())),
            Op::Mknod { path, kind } => check(libc::mknod(c(&at(path)).as_ptr(), kind | 0o640, 0)),
            Op::Chmod { path, mode } => check(libc::fchmodat(
                libc::AT_FDCWD,
                c(&at(path)).as_ptr(),
                *mode,
                libc::AT_SYMLINK_NOFOLLOW,
            )),
            Op::Chown { path, uid } => check(libc::lchown(c(&at(path)).as_ptr(), *uid, *uid)),
            Op::Utime { path, secs } => {
                let t = libc::timespec {
                    tv_sec: *secs,
                    tv_nsec: 5,
                };
                let times = [t, t];
                check(libc::utimensat(
                    libc::AT_FDCWD,
                    c(&at(path)).as_ptr(),
                    times.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                ))
            }
            Op::SetXattr { path, name, value } => check(libc::lsetxattr(
                c(&at(path)).as_ptr(),
                CString::new(name.as_str()).unwrap().as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )),
            Op::RemoveXattr { path, name } => check(libc::lremovexattr(
                c(&at(path)).as_ptr(),
                CString::new(name.as_str()).unwrap().as_ptr(),
            )),
            Op::SetAcl {
                path,
                default,
                perms,
            } => {
                let name = if *default {
                    c"system.posix_acl_default"
                } else {
                    c"system.posix_acl_access"
                };
                let v = acl_value(*perms);
                check(libc::lsetxattr(
                    c(&at(path)).as_ptr(),
                    name.as_ptr(),
                    v.as_ptr().cast(),
                    v.len(),
                    0,
                ))
            }
            Op::Read { path } => match open_nofollow(&at(path), libc::O_RDONLY) {
                Ok(f) => {
                    let md = f.metadata().unwrap();
                    if !md.is_file() {
                        return Outcome::Ok;
                    }
                    let mut buf = Vec::new();
                    match std::io::Read::read_to_end(&mut &f, &mut buf) {
                        Ok(_) => Outcome::Data(buf),
                        Err(e) => Outcome::Errno(e.raw_os_error().unwrap_or(0)),
                    }
                }
                Err(e) => Outcome::Errno(e),
            },
        }
    }
}

/// What `mv` does where the kernel refuses a directory rename with EXDEV (an absolute
/// redirect longer than its `redirect_max`, 256 bytes): copy, then remove the source. Used
/// on the kernel side only when layerfs renamed in place, so both trees can be compared.
/// An exchange goes through a temporary name.
pub fn rename_as_mv(root: &Path, from: &str, to: &str, flags: u32) -> Outcome {
    let mv = |a: &Path, b: &Path| {
        let out = std::process::Command::new("mv")
            .arg("-T")
            .arg(a)
            .arg(b)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mv -T {} {}: {}",
            a.display(),
            b.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (a, b) = (root.join(from), root.join(to));
    if flags & libc::RENAME_EXCHANGE != 0 {
        let tmp = root.join(".exchange-by-mv");
        mv(&a, &tmp);
        mv(&b, &a);
        mv(&tmp, &b);
    } else {
        mv(&a, &b);
    }
    Outcome::Ok
}
