//! Mount tests: the real binary on a real FUSE mount in a temp dir.

use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use testkit::{mount_type, require_root, run_layerfs, wait_mount, DevFuseOpen, Layerfs, BIN};

fn two_layers(base: &Path) -> Vec<PathBuf> {
    let (top, bottom) = (base.join("top"), base.join("bottom"));
    std::fs::create_dir_all(top.join("d")).unwrap();
    std::fs::create_dir_all(bottom.join("d")).unwrap();
    std::fs::write(top.join("f"), "top").unwrap();
    std::fs::write(bottom.join("f"), "bottom").unwrap();
    std::fs::write(bottom.join("d/b"), "b").unwrap();
    vec![top, bottom]
}

fn errno_of<T>(r: std::io::Result<T>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

#[test]
fn daemon_exits_zero_only_once_live_and_umount_removes_it() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let l = two_layers(t.path());
    let mp = t.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let opt = format!("lowerdir={}:{}", l[0].display(), l[1].display());
    succeeds(run_layerfs(&["-o", &opt, mp.to_str().unwrap()]));
    // No waiting: the parent returned, so the mount must already be there and serving.
    assert!(mount_type(&mp).is_some_and(|t| t.starts_with("fuse")));
    assert_eq!(std::fs::read_to_string(mp.join("f")).unwrap(), "top");
    assert_eq!(std::fs::read_to_string(mp.join("d/b")).unwrap(), "b");
    succeeds(run_layerfs(&["umount", mp.to_str().unwrap()]));
    assert_eq!(mount_type(&mp), None);
    // The `mount` subcommand is the same thing.
    succeeds(run_layerfs(&["mount", "-o", &opt, mp.to_str().unwrap()]));
    succeeds(run_layerfs(&["umount", mp.to_str().unwrap()]));
}

#[test]
fn bad_invocations_fail_with_one_clear_line_and_mount_nothing() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let l = two_layers(t.path());
    let mp = t.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let file = t.path().join("plainfile");
    std::fs::write(&file, "").unwrap();
    let mps = mp.to_str().unwrap();
    let good = format!("lowerdir={}", l[0].display());
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "-o".into(),
                "lowerdir=/nonexistent/layer".into(),
                mps.into(),
            ],
            "/nonexistent/layer",
        ),
        (
            vec![
                "-o".into(),
                format!("lowerdir={}", file.display()),
                mps.into(),
            ],
            "not a directory",
        ),
        (
            vec![
                "-o".into(),
                good.clone(),
                t.path().join("nomp").to_str().unwrap().into(),
            ],
            "nomp",
        ),
        (
            vec!["-o".into(), "lowerdir".into(), mps.into()],
            "needs a value",
        ),
        (
            vec!["-o".into(), format!("{good},upperdir=/x"), mps.into()],
            "workdir",
        ),
        (
            vec!["-o".into(), "upperdir=/x,workdir=/y".into(), mps.into()],
            "lowerdir",
        ),
        (vec![mps.into()], "lowerdir"),
        (vec!["-o".into(), good.clone()], "mountpoint"),
        (
            vec![
                "-o".into(),
                format!("{good},upperdir=/nonexistent/u,workdir=/nonexistent/w"),
                mps.into(),
            ],
            "upperdir /nonexistent/u: No such file or directory (create it first: mkdir -p /nonexistent/u)",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_layerfs(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains(needle),
            "{args:?}: {err:?} does not mention {needle:?}"
        );
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: not one line: {err:?}"
        );
        // The cause once, in words, without "(os error N)".
        assert!(!err.contains("os error"), "{args:?}: {err:?}");
        for cause in ["No such file or directory", "Not a directory"] {
            assert!(err.matches(cause).count() <= 1, "{args:?}: {err:?}");
        }
        assert_eq!(mount_type(&mp), None, "{args:?} left a mount");
    }
    // A failure in the daemon (after the fork): its mount(2) gets /dev/null for /dev/fuse,
    // in a mount namespace of its own. The parent prints it, once.
    let script = format!(
        "mount --bind /dev/null /dev/fuse && exec {} -o {good} {mps}",
        BIN
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("mounting on"), "{err:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert_eq!(mount_type(&mp), None, "a failed daemon left a mount");
    // Busy: something is already mounted there.
    let _m = Layerfs::mount(&l, &mp);
    let out = run_layerfs(&["-o", &good, mps]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("busy"), "{err}");
}

/// `--log-file` / `LAYERFS_LOG_FILE`: the daemon's log lines, written after it detached
/// from the terminal, land in the file; a failure at mount time goes to stderr and the file.
#[test]
fn a_daemonized_mount_logs_to_its_log_file() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let l = two_layers(t.path());
    let mp = t.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let log = t.path().join("layerfs.log");
    let lower = format!("lowerdir={}", l[0].display());
    let out = Command::new(BIN)
        .env("LAYERFS_LOG_FILE", &log)
        .env("RUST_LOG", "layerfs=info")
        .args(["-o", &lower])
        .arg(&mp)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "logged to stderr: {out:?}");
    let _ = run_layerfs(&["umount", mp.to_str().unwrap()]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("mounted on"), "{text}");

    let out = Command::new(BIN)
        .arg("--log-file")
        .arg(&log)
        .args(["-o", "lowerdir=/nonexistent/layer"])
        .arg(&mp)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/layer"), "{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("lower directory /nonexistent/layer"),
        "{text}"
    );
    let out = Command::new(BIN)
        .args(["--log-file", "/nonexistent/dir/log", "-o", &lower])
        .arg(&mp)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("log file /nonexistent/dir/log"));
    assert_eq!(mount_type(&mp), None);
}

#[test]
fn writes_fail_with_erofs() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let l = two_layers(t.path());
    let m = Layerfs::mount(&l, &t.path().join("mnt"));
    let erofs = Some(libc::EROFS);
    assert_eq!(errno_of(std::fs::write(m.path("new"), "x")), erofs);
    assert_eq!(
        errno_of(std::fs::OpenOptions::new().append(true).open(m.path("f"))),
        erofs
    );
    assert_eq!(errno_of(std::fs::create_dir(m.path("nd"))), erofs);
    assert_eq!(errno_of(std::fs::remove_file(m.path("f"))), erofs);
    assert_eq!(errno_of(std::fs::remove_dir_all(m.path("d"))), erofs);
    assert_eq!(errno_of(std::fs::rename(m.path("f"), m.path("g"))), erofs);
    assert_eq!(
        errno_of(std::os::unix::fs::symlink("x", m.path("s"))),
        erofs
    );
    assert_eq!(
        errno_of(std::fs::set_permissions(
            m.path("f"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600)
        )),
        erofs
    );
    let p = CString::new(m.path("f").as_os_str().as_bytes()).unwrap();
    // SAFETY: NUL-terminated strings and a one-byte value.
    let r = unsafe { libc::setxattr(p.as_ptr(), c"user.x".as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    assert_eq!(
        (r, std::io::Error::last_os_error().raw_os_error()),
        (-1, erofs)
    );
    // Nothing reached the layers.
    assert_eq!(std::fs::read_to_string(l[0].join("f")).unwrap(), "top");
    assert!(!l[0].join("new").exists());
}

#[test]
fn big_directory_reads_in_many_calls_and_resumes_after_seekdir() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (top, bottom) = (t.path().join("top"), t.path().join("bottom"));
    std::fs::create_dir_all(&top).unwrap();
    std::fs::create_dir_all(&bottom).unwrap();
    for i in 0..6000 {
        let name = format!("entry-with-a-longish-name-{i:05}");
        std::fs::write(if i % 2 == 0 { &top } else { &bottom }.join(&name), "").unwrap();
        if i % 5 == 0 {
            std::fs::write(bottom.join(&name), "dup").unwrap();
        }
        if i % 7 == 0 {
            std::fs::write(top.join(format!(".wh.{name}-gone")), "").unwrap();
            std::fs::write(bottom.join(format!("{name}-gone")), "").unwrap();
        }
    }
    let m = Layerfs::mount(&[top, bottom], &t.path().join("mnt"));
    let names: Vec<String> = std::fs::read_dir(&m.mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        names.len(),
        "duplicates in a multi-call readdir"
    );
    assert_eq!(names.len(), 6000);

    // Read half, remember the position, close; reopen, seek there, read the rest.
    let c = CString::new(m.mp.as_os_str().as_bytes()).unwrap();
    let read_n = |dir: *mut libc::DIR, n: usize, out: &mut Vec<String>| {
        for _ in 0..n {
            // SAFETY: `dir` is an open DIR stream; the entry is valid until the next call.
            let e = unsafe { libc::readdir(dir) };
            if e.is_null() {
                break;
            }
            // SAFETY: d_name is NUL-terminated within the entry.
            let name = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) };
            let name = name.to_string_lossy().into_owned();
            if name != "." && name != ".." {
                out.push(name);
            }
        }
    };
    let mut got = Vec::new();
    // SAFETY: `c` is NUL-terminated; streams are closed below.
    let dir = unsafe { libc::opendir(c.as_ptr()) };
    assert!(!dir.is_null());
    read_n(dir, 3001, &mut got);
    // SAFETY: `dir` is open.
    let pos = unsafe { libc::telldir(dir) };
    // SAFETY: `dir` is open and not used afterwards.
    unsafe { libc::closedir(dir) };
    // SAFETY: as above.
    let dir = unsafe { libc::opendir(c.as_ptr()) };
    // SAFETY: `pos` came from telldir on the same directory.
    unsafe { libc::seekdir(dir, pos) };
    read_n(dir, usize::MAX, &mut got);
    // SAFETY: `dir` is open and not used afterwards.
    unsafe { libc::closedir(dir) };
    let mut g = got.clone();
    g.sort();
    assert_eq!(
        g, sorted,
        "resuming at a saved offset skipped or repeated names"
    );
}

#[test]
fn sparse_files_seek_data_and_holes_and_large_reads_match() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let l = two_layers(t.path());
    let sparse = l[1].join("sparse");
    {
        let mut f = std::fs::File::create(&sparse).unwrap();
        f.seek(SeekFrom::Start(8 << 20)).unwrap();
        std::io::Write::write_all(&mut f, b"data at 8M").unwrap();
    }
    let big: Vec<u8> = (0..(3 << 20) + 123).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(l[1].join("big"), &big).unwrap();
    for extra in [
        &[][..],
        &["--no-passthrough"][..],
        &["--file-io", "cached"][..],
    ] {
        let m = Layerfs::mount_with(&l, &t.path().join("mnt"), extra);
        let f = std::fs::File::open(m.path("sparse")).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: plain lseek on an open fd.
        let data = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_DATA) };
        assert_eq!(data, 8 << 20, "{extra:?}");
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_HOLE) };
        assert_eq!(hole, 0, "{extra:?}");
        let mut content = Vec::new();
        std::fs::File::open(m.path("big"))
            .unwrap()
            .read_to_end(&mut content)
            .unwrap();
        assert!(content == big, "{extra:?}: big file content differs");
        assert_eq!(
            std::fs::metadata(m.path("sparse")).unwrap().size(),
            (8 << 20) + 10
        );
        let sv = nix_statvfs(&m.mp);
        assert!(sv > 0, "statfs reports no blocks");
    }
}

fn nix_statvfs(p: &Path) -> u64 {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `s` is writable; `c` is NUL-terminated.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) }, 0);
    // SAFETY: statvfs succeeded.
    unsafe { s.assume_init() }.f_blocks
}

/// A foreground daemon serving `-o opt` on `mp`, once the mount is there.
/// A foreground daemon whose stderr goes to `log` (read when it fails).
fn foreground(opt: &str, mp: &Path, log: &Path) -> std::process::Child {
    let mut child = Command::new(BIN)
        .args(["-f", "-o", opt, mp.to_str().unwrap()])
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    wait_mount(mp, |t| t.is_some(), || matches!(child.try_wait(), Ok(None)));
    // The mount shows before the daemon has answered the kernel's INIT; a request waits for
    // it, so once one is answered the session is up (a daemon stopped before that would
    // find the device gone when resumed, and rightly fail).
    std::fs::metadata(mp).unwrap();
    child
}

fn succeeds(out: std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigterm_unmounts_a_foreground_daemon() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let l = two_layers(t.path());
    let mp = t.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let mut child = foreground(
        &format!("lowerdir={}", l[0].display()),
        &mp,
        &t.path().join("daemon.log"),
    );
    let pid = child.id() as i32;
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(mount_type(&mp), None);
}

#[test]
fn an_exiting_daemon_never_unmounts_the_next_mount_on_its_mountpoint() {
    // The daemon of an externally unmounted mount must not unmount by path on its way out:
    // by then a new mount may sit on the same mountpoint (podman remounts at one path).
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let l = two_layers(t.path());
    let mp = t.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let opt = format!("lowerdir={}", l[0].display());
    let log = t.path().join("old-daemon.log");
    let mut old = foreground(&opt, &mp, &log);
    let pid = old.id() as i32;
    // Hold the old daemon still while its mount goes and a new one takes the path.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    succeeds(run_layerfs(&["umount", mp.to_str().unwrap()]));
    succeeds(run_layerfs(&["-o", &opt, mp.to_str().unwrap()]));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let status = old.wait().unwrap();
    assert!(
        status.success(),
        "old daemon: {status}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        mount_type(&mp).is_some_and(|t| t.starts_with("fuse")),
        "the old daemon unmounted the new mount"
    );
    assert_eq!(std::fs::read_to_string(mp.join("f")).unwrap(), "top");
    succeeds(run_layerfs(&["umount", mp.to_str().unwrap()]));
}

#[test]
fn podman_style_relative_symlinked_lowers_and_id_mapping() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("overlay");
    let diff = store.join("ABCDEF/diff");
    std::fs::create_dir_all(&diff).unwrap();
    std::fs::create_dir_all(store.join("l")).unwrap();
    std::os::unix::fs::symlink("../ABCDEF/diff", store.join("l/SHORT")).unwrap();
    // uidmapping=DISK:SHOWN:COUNT: image ids 0.. show as 100000..; an id outside every
    // range shows as the overflow id.
    std::fs::write(diff.join("owned"), "x").unwrap();
    std::os::unix::fs::chown(diff.join("owned"), Some(0), Some(1)).unwrap();
    std::fs::write(diff.join("unmapped"), "x").unwrap();
    std::os::unix::fs::chown(diff.join("unmapped"), Some(100_000), Some(100_001)).unwrap();
    let mp = t.path().join("merged");
    std::fs::create_dir(&mp).unwrap();
    let out = Command::new(BIN)
        .current_dir(&store)
        .args([
            "-o",
            "lowerdir=l/SHORT,uidmapping=0:100000:65536,gidmapping=0:100000:65536,,unknownopt",
        ])
        .arg(&mp)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknownopt"),
        "unknown options are warned about"
    );
    let md = std::fs::symlink_metadata(mp.join("owned"));
    let unmapped = std::fs::symlink_metadata(mp.join("unmapped"));
    let _ = run_layerfs(&["umount", mp.to_str().unwrap()]);
    let (md, unmapped) = (md.unwrap(), unmapped.unwrap());
    assert_eq!((md.uid(), md.gid()), (100_000, 100_001));
    assert_eq!((unmapped.uid(), unmapped.gid()), (65_534, 65_534));
}

#[test]
fn rootless_mount_as_an_unprivileged_user() {
    if !require_root() {
        return;
    }
    // `nobody`: fusermount3 wants a passwd entry, and every Debian system has this one.
    const UID: u32 = 65_534;
    let t = tempfile::tempdir().unwrap();
    let l = two_layers(t.path());
    std::fs::write(l[0].join(".wh.gone"), "").unwrap();
    std::fs::write(l[1].join("gone"), "x").unwrap();
    let mp = t.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    for p in [t.path(), &mp, &l[0], &l[1]] {
        std::os::unix::fs::chown(p, Some(UID), Some(UID)).unwrap();
    }
    // The binary lives under target/, which may not be traversable by others: copy it.
    let bin = t.path().join("layerfs");
    std::fs::copy(BIN, &bin).unwrap();
    let _fuse = DevFuseOpen::new();
    let as_user = |prog: &Path, args: &[&str]| {
        Command::new("setpriv")
            .args([
                "--reuid",
                &UID.to_string(),
                "--regid",
                &UID.to_string(),
                "--clear-groups",
            ])
            .arg(prog)
            .args(args)
            .output()
            .unwrap()
    };
    let opt = format!("lowerdir={}:{}", l[0].display(), l[1].display());
    let out = as_user(&bin, &["-o", &opt, mp.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "rootless mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without allow_other only the mounting user may look inside (not even root).
    let (f, b, gone) = (mp.join("f"), mp.join("d/b"), mp.join("gone"));
    let cat = as_user(
        Path::new("/bin/cat"),
        &[f.to_str().unwrap(), b.to_str().unwrap()],
    );
    let gone = as_user(Path::new("/usr/bin/test"), &["-e", gone.to_str().unwrap()]);
    let out = as_user(&bin, &["umount", mp.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "rootless umount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mount_type(&mp), None);
    assert_eq!(
        String::from_utf8_lossy(&cat.stdout),
        "topb",
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    assert!(
        !gone.status.success(),
        "whiteout ignored in a rootless mount"
    );
}

/// Layers that are one directory or nest: where the kernel refuses the mount (ELOOP,
/// "conflicting" / "overlapping lowerdir path" in its log), layerfs refuses it with one
/// line saying the same; where the kernel mounts an upper or workdir inside a lower but
/// answers ELOOP for the path leading to it, layerfs refuses at mount time.
#[test]
fn overlapping_layers_are_refused_like_the_kernel() {
    if !require_root() {
        return;
    }
    let t = tempfile::Builder::new()
        .prefix("layerfs-i17b-overlap-")
        .tempdir()
        .unwrap();
    let d = |p: &str| -> String {
        let p = t.path().join(p);
        std::fs::create_dir_all(&p).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (l, l2, u, w) = (d("l"), d("l2"), d("u"), d("w"));
    let cases: Vec<(&str, String, &str, bool)> = vec![
        // (case, options, layerfs's words, the kernel mounts it)
        (
            "upper = lower",
            format!("lowerdir={l},upperdir={l},workdir={w}"),
            "conflicting lowerdir path",
            false,
        ),
        (
            "lower in upper",
            format!("lowerdir={},upperdir={u},workdir={w}", d("u/l")),
            "overlapping lowerdir path",
            false,
        ),
        (
            "lower in work",
            format!("lowerdir={},upperdir={u},workdir={w}", d("w/l")),
            "overlapping lowerdir path",
            false,
        ),
        (
            "a lower twice",
            format!("lowerdir={l}:{l}"),
            "conflicting lowerdir path",
            false,
        ),
        (
            "lower in lower",
            format!("lowerdir={l}:{}", d("l/x")),
            "overlapping lowerdir path",
            false,
        ),
        (
            "upper in lower",
            format!("lowerdir={l2}:{l},upperdir={},workdir={w}", d("l/u")),
            "overlapping lowerdir path",
            true,
        ),
        (
            "work in lower",
            format!("lowerdir={l},upperdir={u},workdir={}", d("l/w")),
            "overlapping lowerdir path",
            true,
        ),
    ];
    for (case, opts, words, kernel_mounts) in cases {
        let kmp = d("kmnt");
        let k = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts, &kmp])
            .output()
            .unwrap();
        if k.status.success() {
            // The kernel's answer for the nested upper or workdir: ELOOP on its path.
            let inner = Path::new(&kmp).join(if case == "work in lower" { "w" } else { "u" });
            assert_eq!(
                errno_of(std::fs::metadata(&inner)),
                Some(libc::ELOOP),
                "{case}"
            );
            assert!(Command::new("umount").arg(&kmp).status().unwrap().success());
        }
        assert_eq!(k.status.success(), kernel_mounts, "{case}: kernel mount");
        let mp = d("mnt");
        let o = run_layerfs(&["-o", &opts, &mp]);
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.success() {
            let _ = run_layerfs(&["umount", &mp]);
        }
        assert!(!o.status.success(), "{case}: layerfs mounted {opts}");
        assert!(
            err.contains(words) && err.trim().lines().count() == 1,
            "{case}: {err}"
        );
        std::fs::remove_dir_all(&w).unwrap();
        std::fs::create_dir(&w).unwrap();
        d("w/l");
    }
}
