//! Set-id bits and file capabilities after changes to a file's data or owner, side by side
//! with kernel overlayfs: layerfs drops them itself (the kernel leaves it to the filesystem,
//! `FUSE_HANDLE_KILLPRIV_V2`), and must drop exactly what the kernel's overlay drops.
//! Each change is made by an unprivileged user and by root, on a file of a lower layer and
//! on one made in the upper. Also the round trips this saves.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use testkit::{require_root, test_user, Kernel, Layerfs};

/// A change to a file, made through one of the mounts.
#[derive(Debug, Clone, Copy)]
enum Change {
    Write,
    Truncate,
    OpenTrunc,
    Fallocate,
    CopyRange,
    Chown,
    /// chown(-1, -1): no ids change.
    ChownNothing,
}

const CHANGES: [Change; 7] = [
    Change::Write,
    Change::Truncate,
    Change::OpenTrunc,
    Change::Fallocate,
    Change::CopyRange,
    Change::Chown,
    Change::ChownNothing,
];

/// The modes of the files changed, and whether each has a file capability: set-user-id and
/// set-group-id with group execute (both go), set-group-id without it (it stays for a
/// member of the file's group, marking mandatory locking), and set-user-id given by a chmod
/// alone after the file was written (the kernel must forget that it found the file clean).
const MODES: [(u32, bool); 3] = [(0o6777, true), (0o6767, true), (0o4777, false)];

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

/// Makes `change` to `file` in a child process running as `who` (`None`: root); its errno,
/// 0 on success. `src` is a readable file of the same mount (copy_file_range's source).
fn change(who: Option<(u32, u32)>, change: Change, file: &Path, src: &Path) -> i32 {
    let (file, src) = (cstr(file), cstr(src));
    static USER: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    let (uid, gid) = *USER.get_or_init(test_user);
    // SAFETY: the child makes only raw syscalls on strings made before the fork, then exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: plain syscalls on live NUL-terminated strings; the child ends in _exit.
        unsafe {
            if let Some((u, g)) = who {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(g) != 0
                    || libc::setuid(u) != 0
                {
                    libc::_exit(200);
                }
            }
            let ok = match change {
                Change::Write => {
                    let fd = libc::open(file.as_ptr(), libc::O_WRONLY);
                    fd >= 0 && libc::pwrite(fd, b"x".as_ptr().cast(), 1, 0) == 1
                }
                Change::Truncate => libc::truncate(file.as_ptr(), 1) == 0,
                Change::OpenTrunc => libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_TRUNC) >= 0,
                Change::Fallocate => {
                    let fd = libc::open(file.as_ptr(), libc::O_WRONLY);
                    fd >= 0 && libc::fallocate(fd, 0, 0, 8192) == 0
                }
                Change::CopyRange => {
                    let s = libc::open(src.as_ptr(), libc::O_RDONLY);
                    let d = libc::open(file.as_ptr(), libc::O_WRONLY);
                    let (null, n) = (std::ptr::null_mut(), 1);
                    s >= 0 && d >= 0 && libc::copy_file_range(s, null, d, null, n, 0) == 1
                }
                Change::Chown => libc::chown(file.as_ptr(), uid, gid) == 0,
                Change::ChownNothing => libc::chown(file.as_ptr(), u32::MAX, u32::MAX) == 0,
            };
            libc::_exit(if ok { 0 } else { errno() });
        }
    }
    let mut status = 0;
    // SAFETY: waits for our own child into a valid status word.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child died: {status}");
    libc::WEXITSTATUS(status)
}

/// What a change leaves: mode bits, owner, and whether a file capability is still set.
fn outcome(path: &Path) -> (String, u32, u32, bool) {
    let m = fs::metadata(path).unwrap();
    let name = c"security.capability";
    let p = cstr(path);
    // SAFETY: a size query (null buffer, size 0) on a NUL-terminated path.
    let caps = unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) } > 0;
    (format!("{:o}", m.mode() & 0o7777), m.uid(), m.gid(), caps)
}

/// A mount point's dirs, open to the test user.
fn dirs(base: &Path) -> [PathBuf; 4] {
    let d = ["lower", "upper", "work", "mnt"].map(|n| base.join(n));
    for p in &d {
        fs::create_dir_all(p).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    d
}

/// Gives `path` mode `mode` and, with `cap`, a file capability (set through the mount, so
/// the overlay stores it as it would any other).
fn prepare(path: &Path, (mode, cap): (u32, bool)) {
    // Without a capability the file is written through the mount first: the kernel then
    // knows it clean, and must forget that when the chmod below gives it a set-id bit.
    if !cap || !path.exists() {
        fs::write(path, b"0123456789").unwrap();
    }
    if !cap {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        return;
    }
    // A v2 file capability: effective, permitted cap_net_raw (bit 13).
    let mut cap = [0u8; 20];
    cap[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());
    let p = cstr(path);
    let name = c"security.capability";
    // SAFETY: NUL-terminated path and name, a buffer of the given length.
    let r = unsafe { libc::setxattr(p.as_ptr(), name.as_ptr(), cap.as_ptr().cast(), 20, 0) };
    assert_eq!(r, 0, "setting a file capability on {path:?}: {}", errno());
    // After the capability: setting one does not keep set-id bits everywhere.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn set_id_bits_and_capabilities_go_as_with_kernel_overlayfs() {
    if !require_root() {
        return;
    }
    let user = test_user();
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let [kl, ku, kw, km] = dirs(&t.path().join("k"));
    let [ll, lu, lw, lm] = dirs(&t.path().join("l"));
    // Files of the lower layer: one per (who, change, mode), the same on both sides.
    let whos = [("user", Some(user)), ("root", None)];
    let mut names = Vec::new();
    for (who, _) in whos {
        for c in CHANGES {
            for (mode, _) in MODES {
                names.push(format!("{who}-{c:?}-{mode:o}"));
            }
        }
    }
    for dir in [&kl, &ll] {
        fs::write(dir.join("src"), b"s").unwrap();
        for n in &names {
            fs::write(dir.join(format!("lower-{n}")), b"0123456789").unwrap();
        }
    }
    let kernel = Kernel::mount_rw(std::slice::from_ref(&kl), &ku, &kw, &km);
    let layerfs = Layerfs::mount_rw(std::slice::from_ref(&ll), &lu, &lw, &lm);
    for m in [&kernel.mp, &layerfs.mp] {
        for (i, n) in names.iter().enumerate() {
            let mode = MODES[i % MODES.len()];
            prepare(&m.join(format!("lower-{n}")), mode);
            prepare(&m.join(format!("upper-{n}")), mode);
        }
    }
    let mut differ = Vec::new();
    let mut pinned_upper = Vec::new();
    for (who, id) in whos {
        for c in CHANGES {
            for (mode, cap) in MODES {
                for place in ["lower", "upper"] {
                    let name = format!("{place}-{who}-{c:?}-{mode:o}");
                    let [mut k, l] = [&kernel.mp, &layerfs.mp].map(|m| {
                        let rc = change(id, c, &m.join(&name), &m.join("src"));
                        (rc, outcome(&m.join(&name)))
                    });
                    if id.is_some() && cap && matches!(c, Change::ChownNothing) {
                        // Pinned: refused (EPERM) on both, but before the request reaches
                        // layerfs the kernel's FUSE has already removed the capability
                        // (setattr_prepare's killpriv; the mode change that refuses comes
                        // later, in the filesystem).
                        assert!(
                            k.1 .3,
                            "{name}: the kernel overlay now drops the capability too: unpin"
                        );
                        k.1 .3 = false;
                    }
                    if matches!(c, Change::ChownNothing) && mode & 0o6000 != 0 && id.is_some() {
                        // Pinned: without the writeback cache (a root mount has passthrough
                        // instead) a chown(-1, -1) reaches layerfs as the kernel's own
                        // set-id drop (docs/SEMANTICS.md, "chown(-1, -1) without the
                        // kernel's writeback cache"): a user who does not own the file
                        // loses the bits, where the kernel refuses (root: as the kernel).
                        let kept = format!("{:o}", mode & !0o6000);
                        assert_eq!((l.0, l.1 .0.as_str()), (0, kept.as_str()), "{name}");
                        continue;
                    }
                    if id.is_none()
                        && cap
                        && matches!(c, Change::Write | Change::Fallocate | Change::CopyRange)
                    {
                        // Pinned (docs/SEMANTICS.md, "a change of data by a caller with
                        // CAP_FSETID to a set-id file with a file capability"): the kernel
                        // sends its empty SETATTR to remove the capability, the same request
                        // it sends for set-id bits to go, so layerfs drops them as for any
                        // caller (the safe direction; the kernel keeps them for root).
                        let gone = 0o4000 | if mode & 0o010 != 0 { 0o2000 } else { 0 };
                        k.1 .0 = format!("{:o}", mode & !gone);
                        pinned_upper.push(name.clone());
                    }
                    if k != l {
                        differ.push(format!("{name}: kernel {k:?}, layerfs {l:?}"));
                    }
                }
            }
        }
    }
    layerfs.assert_no_errors_logged();
    // What reached the upper, too (not only what the kernel cached).
    drop(kernel);
    drop(layerfs);
    for n in &names {
        for place in ["lower", "upper"] {
            let name = format!("{place}-{n}");
            let (mut k, l) = (outcome(&ku.join(&name)), outcome(&lu.join(&name)));
            if n.starts_with("user-ChownNothing-") || pinned_upper.contains(&name) {
                k = l.clone(); // pinned above
            }
            if k != l {
                differ.push(format!("{name} in the upper: kernel {k:?}, layerfs {l:?}"));
            }
        }
    }
    assert!(differ.is_empty(), "differences:\n{}", differ.join("\n"));
}

/// Request counts of one mount session, from `LAYERFS_REQUEST_COUNTS`.
fn counts(file: &Path) -> std::collections::BTreeMap<String, u64> {
    fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (op, n) = l.split_once(' ')?;
            Some((op.to_string(), n.parse().ok()?))
        })
        .collect()
}

/// The requests of one mount session in which a new file gets 64 writes of 4 KiB through
/// one descriptor, then (with `chown`) a new owner through it.
fn session(chown: bool) -> std::collections::BTreeMap<String, u64> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let t = tempfile::tempdir().unwrap();
    let [lower, upper, work, mnt] = dirs(t.path());
    let file = t.path().join("counts");
    let rw = format!("upperdir={},workdir={}", upper.display(), work.display());
    let env = [("LAYERFS_REQUEST_COUNTS", file.as_path())];
    let m = Layerfs::mount_with_env(&[lower], &mnt, &["-o", &rw], &env);
    let f = fs::File::create(m.path("f")).unwrap();
    for i in 0..64u64 {
        f.write_at(&[7u8; 4096], i * 4096).unwrap();
    }
    if chown {
        // SAFETY: fchown on a live descriptor.
        assert_eq!(unsafe { libc::fchown(f.as_raw_fd(), 1, 1) }, 0);
    }
    drop(f);
    m.assert_no_errors_logged();
    drop(m);
    counts(&file)
}

#[test]
fn writes_do_not_ask_for_capabilities_and_chown_does_not_ask_for_attributes() {
    if !require_root() {
        return;
    }
    let (plain, chown) = (session(false), session(true));
    let get = |n: &std::collections::BTreeMap<String, u64>, op: &str| n.get(op).copied();
    // One look for security.capability before the first write, after which the kernel
    // knows the file has none; one more before the chown (the VFS asks whatever the
    // filesystem).
    assert_eq!(get(&plain, "getxattr"), Some(1), "{plain:?}");
    assert_eq!(get(&chown, "getxattr"), Some(2), "{chown:?}");
    // The chown goes out as it is, without a refresh of the attributes first.
    assert_eq!(
        get(&plain, "getattr"),
        get(&chown, "getattr"),
        "{plain:?} {chown:?}"
    );
}
