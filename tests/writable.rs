//! Writable mounts through a real FUSE mount: copy-up keeps what it must, open files see
//! the truth, whiteouts and opaque directories are the kernel's, bad conditions are handled.

use std::ffi::CString;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::rw::Rw;
use testkit::spec::setxattr;
use testkit::{require_root, run_layerfs, Layerfs};

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut v = vec![0u8; 4096];
    // SAFETY: NUL-terminated strings; the buffer is live and its length passed.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    (r >= 0).then(|| {
        v.truncate(r as usize);
        v
    })
}

#[test]
fn copy_up_keeps_mode_owner_times_xattrs_holes_and_inode_number() {
    if !require_root() {
        return;
    }
    let mut rw = Rw::new(|l| {
        let f = fs::File::create(l.join("f")).unwrap();
        f.set_len(8 << 20).unwrap(); // 8 MiB, all hole but the last page
        f.write_all_at_end(b"tail");
        std::os::unix::fs::chown(l.join("f"), Some(1000), Some(1000)).unwrap();
        fs::set_permissions(l.join("f"), fs::Permissions::from_mode(0o4755)).unwrap();
        setxattr(&l.join("f"), "user.k", b"v");
        let t = libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 123_456_789,
        };
        let p = CString::new(l.join("f").as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated path; two live timespecs.
        unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), [t, t].as_ptr(), 0) };
    });
    let before = fs::metadata(rw.p("f")).unwrap();
    // setxattr copies up without touching data or times.
    setxattr(&rw.p("f"), "user.new", b"1");
    let up = fs::metadata(rw.upper.join("f")).unwrap();
    let low = fs::metadata(rw.lower.join("f")).unwrap();
    assert_eq!(up.mode(), low.mode(), "mode (setuid kept)");
    assert_eq!((up.uid(), up.gid()), (1000, 1000));
    assert_eq!(
        (up.mtime(), up.mtime_nsec()),
        (low.mtime(), low.mtime_nsec())
    );
    assert_eq!(up.size(), low.size());
    assert!(
        up.blocks() * 512 < 1 << 20,
        "holes stay holes: {} blocks",
        up.blocks()
    );
    assert_eq!(
        xattr(&rw.upper.join("f"), "user.k").as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(
        fs::read(rw.upper.join("f")).unwrap(),
        fs::read(rw.lower.join("f")).unwrap()
    );
    let after = fs::metadata(rw.p("f")).unwrap();
    assert_eq!(
        before.ino(),
        after.ino(),
        "inode number kept across copy-up"
    );
    rw.remount();
    assert_eq!(
        fs::metadata(rw.p("f")).unwrap().ino(),
        before.ino(),
        "and after remount"
    );
}

trait AtEnd {
    fn write_all_at_end(&self, data: &[u8]);
}

impl AtEnd for fs::File {
    fn write_all_at_end(&self, data: &[u8]) {
        use std::os::unix::fs::FileExt;
        let len = self.metadata().unwrap().len();
        self.write_all_at(data, len - data.len() as u64).unwrap();
    }
}

#[test]
fn read_only_fd_taken_before_copy_up_sees_later_writes() {
    if !require_root() {
        return;
    }
    let rw = Rw::new(|l| fs::write(l.join("f"), b"old").unwrap());
    let mut ro = fs::File::open(rw.p("f")).unwrap();
    let mut w = fs::OpenOptions::new().write(true).open(rw.p("f")).unwrap();
    w.write_all(b"new").unwrap();
    drop(w);
    let mut s = String::new();
    ro.seek(SeekFrom::Start(0)).unwrap();
    ro.read_to_string(&mut s).unwrap();
    assert_eq!(s, "new");
    assert_eq!(
        fs::read(rw.lower.join("f")).unwrap(),
        b"old",
        "lower untouched"
    );
}

#[test]
fn a_copy_up_is_never_seen_with_stale_attributes() {
    if !require_root() {
        return;
    }
    let rw = Rw::new(|l| {
        fs::create_dir(l.join("d")).unwrap();
        fs::write(l.join("d/f"), b"data").unwrap();
    });
    // The kernel caches both nodes' attributes (for a day: every change goes through us).
    let (d0, f0) = (
        fs::metadata(rw.p("d")).unwrap(),
        fs::metadata(rw.p("d/f")).unwrap(),
    );
    // A write open that writes nothing: a copy-up the kernel does not see change anything.
    drop(
        fs::OpenOptions::new()
            .write(true)
            .open(rw.p("d/f"))
            .unwrap(),
    );
    let (ud, uf) = (
        fs::metadata(rw.upper.join("d")).unwrap(),
        fs::metadata(rw.upper.join("d/f")).unwrap(),
    );
    let (d1, f1) = (
        fs::metadata(rw.p("d")).unwrap(),
        fs::metadata(rw.p("d/f")).unwrap(),
    );
    // As on the kernel's overlay (checked side by side): the directory shows its upper
    // copy's times; the copy-up of `f` put its mtime back, the copy-up of `d` itself moved
    // its ctime (the kernel only learns that from the invalidation).
    assert_eq!((d1.mtime(), d1.mtime_nsec()), (ud.mtime(), ud.mtime_nsec()));
    assert_eq!((d1.mtime(), d1.mtime_nsec()), (d0.mtime(), d0.mtime_nsec()));
    assert_eq!((d1.ctime(), d1.ctime_nsec()), (ud.ctime(), ud.ctime_nsec()));
    assert_ne!((d1.ctime(), d1.ctime_nsec()), (d0.ctime(), d0.ctime_nsec()));
    // As root the mount has passthrough, not the writeback cache: the file shows its copy's
    // ctime, as on the kernel's overlay. (Without passthrough the writeback cache owns a
    // regular file's times, and its ctime stays as it was: docs/SEMANTICS.md.)
    assert_eq!((f1.ctime(), f1.ctime_nsec()), (uf.ctime(), uf.ctime_nsec()));
    assert_ne!((uf.ctime(), uf.ctime_nsec()), (f0.ctime(), f0.ctime_nsec()));
    assert_eq!((f1.mode(), f1.size()), (uf.mode(), uf.size()));
    assert_eq!(f1.ino(), f0.ino(), "a copy-up keeps the number");
}

#[test]
fn concurrent_write_opens_copy_up_once() {
    if !require_root() {
        return;
    }
    let rw = Rw::new(|l| fs::write(l.join("f"), b"base\n").unwrap());
    let path = rw.p("f");
    std::thread::scope(|s| {
        for i in 0..8 {
            let path = &path;
            s.spawn(move || {
                let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
                writeln!(f, "line {i}").unwrap();
            });
        }
    });
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("base\n"), "{text}");
    assert_eq!(
        text.lines().count(),
        9,
        "no append lost to a second copy-up: {text}"
    );
}

#[test]
fn deleted_lower_dir_stays_deleted_after_rm_rf_and_mkdir_at_the_root() {
    if !require_root() {
        return;
    }
    let mut rw = Rw::new(|l| {
        fs::create_dir_all(l.join("d/sub")).unwrap();
        fs::write(l.join("d/x"), b"x").unwrap();
        fs::write(l.join("d/sub/y"), b"y").unwrap();
    });
    fs::remove_dir_all(rw.p("d")).unwrap();
    fs::create_dir(rw.p("d")).unwrap();
    assert_eq!(fs::read_dir(rw.p("d")).unwrap().count(), 0);
    assert_eq!(
        xattr(&rw.upper.join("d"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..]),
        "re-created directory is opaque"
    );
    rw.remount();
    assert_eq!(
        fs::read_dir(rw.p("d")).unwrap().count(),
        0,
        "nothing came back"
    );
}

#[test]
fn whiteouts_are_character_devices_even_for_255_byte_names() {
    if !require_root() {
        return;
    }
    let long = "n".repeat(255);
    let rw = Rw::new(|l| {
        fs::write(l.join(&long), b"x").unwrap();
        fs::create_dir(l.join("dir")).unwrap();
    });
    fs::remove_file(rw.p(&long)).unwrap();
    fs::remove_dir(rw.p("dir")).unwrap();
    assert!(!rw.p(&long).exists() && !rw.p("dir").exists());
    for name in [long.as_str(), "dir"] {
        let md = fs::symlink_metadata(rw.upper.join(name)).unwrap();
        assert!(
            md.file_type().is_char_device() && md.rdev() == 0,
            "{name}: {md:?}"
        );
    }
    // Nothing but those two: no marker files of any kind.
    let names: Vec<_> = fs::read_dir(&rw.upper)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn special_files_shared_mmap_locks_and_ranges() {
    if !require_root() {
        return;
    }
    let rw = Rw::new(|l| fs::write(l.join("f"), vec![b'a'; 8192]).unwrap());
    // Devices (as root), fifos, sockets.
    let dev = CString::new(rw.p("null").as_os_str().as_bytes()).unwrap();
    assert_eq!(
        // SAFETY: NUL-terminated path.
        unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) },
        0
    );
    assert_eq!(
        fs::metadata(rw.upper.join("null")).unwrap().rdev(),
        libc::makedev(1, 3)
    );
    let sock = std::os::unix::net::UnixListener::bind(rw.p("sock")).unwrap();
    assert!(fs::symlink_metadata(rw.upper.join("sock"))
        .unwrap()
        .file_type()
        .is_socket());
    drop(sock);
    // A shared writable mapping of a lower file writes through to the upper copy.
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(rw.p("f"))
        .unwrap();
    // SAFETY: the file stays open and nothing else truncates it while mapped.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&f).unwrap() };
    map[..5].copy_from_slice(b"mmap!");
    map.flush().unwrap();
    drop(map);
    assert_eq!(&fs::read(rw.upper.join("f")).unwrap()[..6], b"mmap!a");
    // POSIX locks: another process cannot take a lock this one holds.
    let lock = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    use std::os::fd::AsRawFd;
    assert_eq!(
        // SAFETY: a live fd and a valid flock struct.
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &lock) },
        0
    );
    let probe =
        "import fcntl,sys\nf=open(sys.argv[1],'r+')\ntry:\n fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB)\n print('got')\nexcept OSError:\n print('busy')";
    let out = Command::new("python3")
        .args(["-c", probe])
        .arg(rw.p("f"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "busy");
    // copy_file_range, fallocate and SEEK_HOLE on upper files.
    let mut g = fs::File::create(rw.p("g")).unwrap();
    let n = copy_range(&f, &g, 4096);
    assert_eq!(n, 4096);
    let fd = g.as_raw_fd();
    // SAFETY: a live fd.
    assert_eq!(unsafe { libc::fallocate(fd, 0, 1 << 20, 4096) }, 0);
    assert_eq!(g.metadata().unwrap().len(), (1 << 20) + 4096);
    assert_eq!(g.seek(SeekFrom::Start(0)).unwrap(), 0);
    // SAFETY: a live fd.
    let hole = unsafe { libc::lseek(fd, 0, libc::SEEK_HOLE) };
    assert_eq!(hole, 4096, "first hole right after the copied range");
}

fn copy_range(src: &fs::File, dst: &fs::File, len: usize) -> isize {
    use std::os::fd::AsRawFd;
    let (mut a, mut b) = (0i64, 0i64);
    // SAFETY: live fds and offsets.
    unsafe { libc::copy_file_range(src.as_raw_fd(), &mut a, dst.as_raw_fd(), &mut b, len, 0) }
}

/// A small tmpfs, unmounted in Drop.
struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    fn new(at: PathBuf, size: &str) -> SmallTmpfs {
        fs::create_dir_all(&at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs");
        SmallTmpfs(at)
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_upper_gives_enospc_leaves_nothing_partial_and_recovers() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let lower = t.path().join("l");
    fs::create_dir(&lower).unwrap();
    fs::write(lower.join("big"), vec![7u8; 3 << 20]).unwrap();
    fs::write(lower.join("small"), b"s").unwrap();
    let small = SmallTmpfs::new(t.path().join("tmpfs"), "1m");
    let (upper, work) = (small.0.join("u"), small.0.join("w"));
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    let m = Layerfs::mount_rw(
        std::slice::from_ref(&lower),
        &upper,
        &work,
        &t.path().join("m"),
    );
    let err = fs::OpenOptions::new()
        .append(true)
        .open(m.path("big"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(!upper.join("big").exists(), "no partial copy in the upper");
    assert_eq!(
        fs::read_dir(&work).unwrap().count(),
        0,
        "no debris in the workdir"
    );
    assert_eq!(
        fs::read(m.path("big")).unwrap().len(),
        3 << 20,
        "lower still shown"
    );
    // The mount keeps working for what fits.
    fs::OpenOptions::new()
        .append(true)
        .open(m.path("small"))
        .unwrap()
        .write_all(b"+")
        .unwrap();
    assert_eq!(fs::read(m.path("small")).unwrap(), b"s+");
}

#[test]
fn bad_upper_setups_are_refused_with_one_clear_line() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (l, u, mp) = (t.path().join("l"), t.path().join("u"), t.path().join("m"));
    for d in [&l, &u, &mp] {
        fs::create_dir(d).unwrap();
    }
    let other = SmallTmpfs::new(t.path().join("other"), "1m");
    let cases = [
        (
            format!("upperdir={},workdir={}", u.display(), other.0.display()),
            "different filesystems",
        ),
        (
            format!("upperdir={},workdir={}", u.display(), u.join("w").display()),
            "workdir",
        ),
        (format!("upperdir={}", u.display()), "workdir="),
        (
            format!("upperdir={},workdir={}", u.display(), u.display()),
            "inside",
        ),
    ];
    fs::create_dir(u.join("w")).unwrap();
    for (opts, want) in cases {
        let lower = format!("lowerdir={}", l.display());
        let out = run_layerfs(&["-o", &lower, "-o", &opts, mp.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{opts}: accepted");
        assert!(err.contains(want), "{opts}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{opts}: {err}");
        assert!(testkit::mount_type(&fs::canonicalize(&mp).unwrap()).is_none());
    }
}

/// open(O_RDONLY|O_TRUNC) of a program being executed: the kernel answers ETXTBSY and
/// leaves the file alone. Through FUSE the truncation comes with OPEN, before the kernel's
/// own check, so the daemon must refuse it itself (it once cut the running program, which
/// then died of SIGSEGV and let the truncation through).
#[test]
fn a_running_program_is_never_truncated() {
    if !require_root() {
        return;
    }
    let sleep = fs::read("/bin/sleep").unwrap();
    let rw = Rw::new(|l| {
        fs::write(l.join("lower-sleep"), &sleep).unwrap();
        fs::set_permissions(l.join("lower-sleep"), fs::Permissions::from_mode(0o755)).unwrap();
    });
    fs::write(rw.p("upper-sleep"), &sleep).unwrap();
    fs::set_permissions(rw.p("upper-sleep"), fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["lower-sleep", "upper-sleep"] {
        let p = rw.p(name);
        let mut child = Command::new(&p).arg("30").spawn().unwrap();
        for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
            let c = CString::new(p.as_os_str().as_bytes()).unwrap();
            // SAFETY: NUL-terminated path; a returned fd is closed right away.
            let fd = unsafe { libc::open(c.as_ptr(), flags) };
            let err = std::io::Error::last_os_error();
            if fd >= 0 {
                // SAFETY: fd was just returned by open.
                unsafe { libc::close(fd) };
            }
            assert_eq!(
                (fd, err.raw_os_error()),
                (-1, Some(libc::ETXTBSY)),
                "{name} opened with flags {flags:#o} while running"
            );
        }
        assert_eq!(
            child.try_wait().unwrap(),
            None,
            "{name}: the running program died"
        );
        assert_eq!(fs::read(&p).unwrap(), sleep, "{name} changed");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// What an application sees when it changes the attributes of entries it removed but still
/// holds through an `O_PATH` fd: owner and times of every kind, the mode of all but the
/// symlink, each as (errno or 0, the new values).
fn attribute_changes_on_removed_entries(mp: &Path) -> Vec<(String, Vec<i64>)> {
    let mut out = Vec::new();
    for kind in ["file", "fifo", "socket", "chardev", "symlink", "lower"] {
        let p = mp.join(kind);
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        match kind {
            "file" => fs::write(&p, "x").unwrap(),
            "symlink" => std::os::unix::fs::symlink("/etc/passwd", &p).unwrap(),
            "lower" => {}
            _ => {
                let fmt = match kind {
                    "fifo" => libc::S_IFIFO,
                    "socket" => libc::S_IFSOCK,
                    _ => libc::S_IFCHR,
                };
                // SAFETY: NUL-terminated path.
                let r = unsafe { libc::mknod(c.as_ptr(), fmt | 0o644, libc::makedev(1, 3)) };
                assert_eq!(r, 0, "mknod {kind}: {}", std::io::Error::last_os_error());
            }
        }
        // SAFETY: NUL-terminated path; the fd is closed below.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW) };
        assert!(fd >= 0, "open {kind}");
        fs::remove_file(&p).unwrap();
        let errno = |r: i32| {
            if r == 0 {
                0
            } else {
                std::io::Error::last_os_error().raw_os_error().unwrap() as i64
            }
        };
        let empty = c"".as_ptr();
        // SAFETY: live fd, NUL-terminated empty name.
        let chown = errno(unsafe { libc::fchownat(fd, empty, 1234, 5678, libc::AT_EMPTY_PATH) });
        let times = [
            libc::timespec {
                tv_sec: 1_000_000,
                tv_nsec: 0,
            },
            libc::timespec {
                tv_sec: 2_000_000,
                tv_nsec: 0,
            },
        ];
        // SAFETY: live fd, NUL-terminated empty name, two timespecs.
        let utime =
            errno(unsafe { libc::utimensat(fd, empty, times.as_ptr(), libc::AT_EMPTY_PATH) });
        let chmod = if kind == "symlink" {
            0
        } else {
            let proc = CString::new(format!("/proc/self/fd/{fd}")).unwrap();
            // SAFETY: NUL-terminated path.
            errno(unsafe { libc::chmod(proc.as_ptr(), 0o600) })
        };
        // SAFETY: zeroed stat is a valid out-buffer; live fd; NUL-terminated empty name.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above: a live fd, an empty NUL-terminated name, a stat to fill.
        let r = unsafe { libc::fstatat(fd, empty, &mut st, libc::AT_EMPTY_PATH) };
        assert_eq!(r, 0, "fstat {kind}");
        // SAFETY: fd was returned by open above.
        unsafe { libc::close(fd) };
        let mode = if kind == "symlink" {
            0
        } else {
            (st.st_mode & 0o7777) as i64
        };
        out.push((
            kind.to_string(),
            vec![
                chown,
                utime,
                chmod,
                st.st_uid as i64,
                st.st_gid as i64,
                st.st_mtime,
                mode,
            ],
        ));
    }
    out
}

#[test]
fn attributes_of_removed_entries_held_open_change_as_on_the_kernel() {
    if !require_root() {
        return;
    }
    let fill = |l: &Path| fs::write(l.join("lower"), "lower").unwrap();
    let rw = Rw::new(fill);
    let ours = attribute_changes_on_removed_entries(rw.m.as_ref().unwrap().mp.as_path());
    let t = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = ["l", "u", "w", "m"]
        .iter()
        .map(|d| t.path().join(d))
        .collect();
    for d in &dirs[..3] {
        fs::create_dir(d).unwrap();
    }
    fill(&dirs[0]);
    let k = testkit::Kernel::mount_rw(&dirs[..1], &dirs[1], &dirs[2], &dirs[3]);
    let mut kernel = attribute_changes_on_removed_entries(&k.mp);
    // A removed lower file cannot be copied up any more: the kernel fails with EEXIST (the
    // whiteout now at its name is in the way), layerfs with ENOENT; nothing changes on both.
    let lower = kernel.iter_mut().find(|(k, _)| k == "lower").unwrap();
    assert_eq!(
        &lower.1[..3],
        &[17, 17, 17],
        "kernel on the removed lower file"
    );
    lower.1[..3].copy_from_slice(&[2, 2, 2]);
    assert_eq!(ours, kernel, "layerfs (left) and kernel overlayfs (right)");
    for (kind, v) in ours.iter().filter(|(k, _)| k != "lower") {
        assert_eq!(
            &v[..3],
            &[0, 0, 0],
            "{kind}: chown, utimens and chmod must succeed"
        );
    }
}

/// Moving a lower directory from under a 251-byte name to the root needs an absolute
/// redirect longer than the kernel's `redirect_max` (256): the kernel itself answers EXDEV
/// (and `mv` copies), layerfs renames in place, and the kernel follows the long redirect
/// when it mounts the upper.
#[test]
fn a_directory_rename_beyond_the_kernels_redirect_limit_is_read_by_the_kernel() {
    if !require_root() {
        return;
    }
    let long = "x".repeat(251);
    let src = format!("{long}/ünïcødé ✓");
    let mut rw = Rw::new(|l| {
        fs::create_dir_all(l.join(&src)).unwrap();
        fs::write(l.join(&src).join("f"), "lower").unwrap();
    });
    fs::rename(rw.p(&src), rw.p("dir")).unwrap();
    assert_eq!(fs::read_to_string(rw.p("dir/f")).unwrap(), "lower");
    assert!(!rw.p(&src).exists());
    let redirect = xattr(&rw.upper.join("dir"), "trusted.overlay.redirect").unwrap();
    assert!(redirect.len() > 256, "{} bytes", redirect.len());
    rw.m = None;
    let kw = rw.t.path().join("kw");
    fs::create_dir(&kw).unwrap();
    let k = testkit::Kernel::mount_rw_with(
        std::slice::from_ref(&rw.lower),
        &rw.upper,
        &kw,
        &rw.t.path().join("k"),
        ",redirect_dir=on",
    );
    assert_eq!(fs::read_to_string(k.mp.join("dir/f")).unwrap(), "lower");
    assert_eq!(fs::read_dir(k.mp.join(&long)).unwrap().count(), 0);
}
