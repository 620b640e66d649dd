//! `layerfs run` on a busybox-static root: namespaces, mounts, pid 1, exit statuses and
//! cleanup, as root and rootless (from an unprivileged user).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use testkit::{eventually, require_root, BIN};

/// The tests check that no run leaves anything behind, so they must not overlap.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A minimal busybox root filesystem.
fn busybox_root(base: &Path) -> PathBuf {
    let root = base.join("root");
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox-static is installed (scripts/test installs it)");
    for app in [
        "sh", "ls", "cat", "echo", "hostname", "id", "ps", "sleep", "kill", "env", "grep", "wc",
        "tr", "true",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
    }
    std::fs::write(root.join("etc/hosts"), "").unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\napp:x:1234:4321::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\ngrp:x:777:\n").unwrap();
    std::fs::write(root.join("etc/resolv.conf"), "").unwrap();
    std::fs::write(root.join("bin/not-executable"), "#!/bin/sh\n").unwrap();
    root
}

/// Root check, serialisation and a fresh busybox root; `None` when the test must skip.
fn setup() -> Option<(
    std::sync::MutexGuard<'static, ()>,
    tempfile::TempDir,
    PathBuf,
)> {
    if !require_root() {
        return None;
    }
    let serial = serial();
    let t = tempfile::tempdir().unwrap();
    let root = busybox_root(t.path());
    Some((serial, t, root))
}

fn run(lower: &Path, extra: &[&str], cmd: &[&str]) -> Output {
    Command::new(BIN)
        .arg("run")
        .arg("-o")
        .arg(format!("lowerdir={}", lower.display()))
        .args(extra)
        .arg("--")
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("run layerfs")
}

fn sh(lower: &Path, script: &str) -> Output {
    run(lower, &[], &["sh", "-c", script])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// No layerfs mount and no temporary mountpoint left on the host.
fn assert_nothing_left() {
    eventually("no layerfs-run mount or temporary mountpoint left", || {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mounted = mounts.lines().any(|l| l.contains("layerfs-run-"));
        let dirs = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("layerfs-run-"));
        !mounted && !dirs
    });
}

#[test]
fn a_command_runs_as_root_in_its_own_namespaces() {
    let Some((_serial, _t, root)) = setup() else {
        return;
    };
    let o = run(&root, &["--hostname", "box"], &["sh", "-c", "hostname; id -u; ls /proc | grep -c '^[0-9]'; ls /dev/null /dev/pts/ptmx /dev/shm >/dev/null && echo devs; exit 3"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "box");
    assert_eq!(lines[1], "0");
    let pids: usize = lines[2].parse().unwrap();
    assert!(
        pids <= 4,
        "the container's /proc shows {pids} processes: not its own pid namespace"
    );
    assert_eq!(lines[3], "devs");
    assert_nothing_left();
}

#[test]
fn exit_statuses_follow_podman() {
    let Some((_serial, t, root)) = setup() else {
        return;
    };
    assert_eq!(
        sh(&root, "kill -TERM $$").status.code(),
        Some(128 + libc::SIGTERM)
    );
    let o = run(&root, &[], &["no-such-command"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no-such-command"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        run(&root, &[], &["/bin/not-executable"]).status.code(),
        Some(126)
    );
    let o = run(&t.path().join("missing-layer"), &[], &["true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing-layer"));
    assert_nothing_left();
}

#[test]
fn pid_1_reaps_orphans_and_the_environment_is_clean() {
    let Some((_serial, _t, root)) = setup() else {
        return;
    };
    // The inner shell exits at once; its sleep is orphaned to pid 1, which must reap it.
    let o = sh(
        &root,
        "sh -c 'sleep 0.2 &'; sleep 0.6; ps -o stat,comm | grep -c '^Z' || true",
    );
    assert_eq!(stdout(&o).trim(), "0", "zombies left: {}", stdout(&o));
    let o = run(
        &root,
        &["--env", "FOO=bar", "--cwd", "/tmp"],
        &[
            "sh",
            "-c",
            "env | grep -v '^PWD=' | grep -v '^SHLVL=' | sort; pwd",
        ],
    );
    let out = stdout(&o);
    assert!(
        out.contains("FOO=bar\n")
            && out.contains("HOME=/root\n")
            && out.contains("PATH=/usr/local/sbin"),
        "{out}"
    );
    assert!(
        !out.contains("CARGO"),
        "the host environment leaked in: {out}"
    );
    assert!(out.ends_with("/tmp\n"), "{out}");
}

#[test]
fn signals_reach_the_command_and_a_killed_runtime_leaves_nothing() {
    let Some((_serial, _t, root)) = setup() else {
        return;
    };
    let cases = [
        (
            libc::SIGTERM,
            Some(128 + libc::SIGTERM),
            "--hostname=rootful",
        ),
        (libc::SIGKILL, None, "--hostname=rootful"),
        (libc::SIGTERM, Some(128 + libc::SIGTERM), "--rootless"),
        (libc::SIGKILL, None, "--rootless"),
    ];
    for (sig, want, mode) in cases {
        let mut child = Command::new(BIN)
            .args([
                "run",
                mode,
                "-o",
                &format!("lowerdir={}", root.display()),
                "--",
                "sh",
                "-c",
                "echo up; exec sleep 30",
            ])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the command is running (it says so), then signal the runtime.
        let mut buf = [0u8; 3];
        use std::io::Read;
        child.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = child.wait().unwrap();
        if let Some(code) = want {
            assert_eq!(status.code(), Some(code), "signal {sig} ({mode})");
        }
        assert_nothing_left();
        // No process of the container survives: nothing runs `sleep 30` any more.
        eventually("the container's processes end with the runtime", || {
            !Command::new("pgrep")
                .args(["-f", "^sleep 30$"])
                .status()
                .unwrap()
                .success()
        });
    }
}

#[test]
fn network_none_and_a_hostile_image_cannot_redirect_mounts() {
    let Some((_serial, _t, root)) = setup() else {
        return;
    };
    let o = run(&root, &["--net", "none"], &["cat", "/proc/net/dev"]);
    let ifaces: Vec<String> = stdout(&o)
        .lines()
        .skip(2)
        .map(|l| l.split(':').next().unwrap().trim().to_string())
        .collect();
    assert_eq!(ifaces, vec!["lo".to_string()]);
    // An image whose /proc is a symlink to /etc: the mount must be refused, not redirected.
    std::fs::remove_dir(root.join("proc")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("proc")).unwrap();
    let o = run(&root, &[], &["true"]);
    assert_eq!(
        o.status.code(),
        Some(125),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("/proc"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(std::path::Path::new("/etc/passwd").exists());
    assert_nothing_left();
}

#[test]
fn user_binds_and_the_default_capability_set() {
    let Some((_serial, t, root)) = setup() else {
        return;
    };
    let data = t.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("file"), "from the host").unwrap();
    let ro = format!("{}:/root:ro", data.display());
    let o = run(&root, &["--user", "1000:1001", "--bind", &ro], &["sh", "-c", "id -u; id -g; cat /root/file; echo; (echo x > /root/new) 2>/dev/null || echo refused; grep CapBnd /proc/self/status"]);
    let out = stdout(&o);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "1000",
            "1001",
            "from the host",
            "refused",
            "CapBnd:\t00000000800405fb"
        ],
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rw = format!("{}:/root", data.display());
    let o = run(
        &root,
        &["--bind", &rw],
        &["sh", "-c", "echo written > /root/new"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(data.join("new")).unwrap(),
        "written\n"
    );
    // Names come from the image's own /etc/passwd and /etc/group.
    let ids = |user: &str| {
        stdout(&run(
            &root,
            &["--user", user],
            &["sh", "-c", "echo $(id -u):$(id -g)"],
        ))
        .trim()
        .to_string()
    };
    assert_eq!(ids("app"), "1234:4321");
    assert_eq!(ids("app:grp"), "1234:777");
    let o = run(&root, &["--user", "nosuch"], &["true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nosuch"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // podman's default bounding set for root too, not everything root has.
    let o = run(&root, &[], &["grep", "CapBnd", "/proc/self/status"]);
    assert_eq!(stdout(&o).trim(), "CapBnd:\t00000000800405fb");
    // A missing target is made (in the run's upper); a directory cannot go onto a file.
    let o = run(
        &root,
        &["--bind", &format!("{}:/nope", data.display())],
        &["cat", "/nope/file"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(
        &root,
        &["--bind", &format!("{}:/etc/passwd", data.display())],
        &["true"],
    );
    assert_eq!(o.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/etc/passwd"));
    assert_nothing_left();
}

/// Polls a tmux pane until it shows `text`.
fn wait_pane(session: &str, text: &str) {
    eventually(&format!("the terminal shows {text:?}"), || {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(text)
    });
}

#[test]
fn an_interactive_shell_on_a_terminal_survives_ctrl_c() {
    let Some((_serial, t, root)) = setup() else {
        return;
    };
    let session = format!("layerfs-test-{}", std::process::id());
    let status_file = t.path().join("status");
    let script = format!(
        "{BIN} run -o lowerdir={} -- sh; echo $? > {}",
        root.display(),
        status_file.display()
    );
    let tmux = |args: &[&str]| {
        let ok = Command::new("tmux").args(args).status().unwrap().success();
        assert!(ok, "tmux {args:?}");
    };
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "120",
        "-y",
        "30",
        &script,
    ]);
    let send = |keys: &[&str]| tmux(&[&["send-keys", "-t", &session][..], keys].concat());
    send(&["echo hi from $(hostname)", "Enter"]);
    wait_pane(&session, "hi from layerfs");
    send(&["sleep 30", "Enter"]);
    send(&["C-c"]);
    // Ctrl-C reached the command in the container, not the FUSE daemon: the root is still there.
    // (The typed line is echoed too: wait for output that differs from the input.)
    send(&["ls /bin/busybox && echo still-$((40+2))", "Enter"]);
    wait_pane(&session, "still-42");
    // The daemon's mount is still in the host's namespace. (busybox sh does job control, so
    // its Ctrl-C never reaches the daemon either way; the daemon's own session, setsid in
    // cmd::run, is what protects it from commands without job control.)
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        host_mounts.contains("layerfs-run-"),
        "the root's mount left the host namespace"
    );
    send(&["exit 5", "Enter"]);
    eventually("the shell exits", || status_file.exists());
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status();
    assert_eq!(std::fs::read_to_string(&status_file).unwrap().trim(), "5");
    assert_nothing_left();
}

/// Runs the layerfs binary as `uid:gid` (a copy readable by anyone).
fn run_as(uid: u32, gid: u32, dir: &Path, args: &[&str]) -> Output {
    let bin = dir.join("layerfs");
    if !bin.exists() {
        std::fs::copy(BIN, &bin).unwrap();
    }
    Command::new("setpriv")
        .args([
            "--reuid",
            &uid.to_string(),
            "--regid",
            &gid.to_string(),
            "--init-groups",
        ])
        .arg(&bin)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn readable_by_all(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn rootless_runs_map_the_subordinate_range_or_fall_back_to_one_id() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let _fuse = testkit::DevFuseOpen::new();
    let t = tempfile::tempdir().unwrap();
    readable_by_all(t.path());
    let root = busybox_root(t.path());
    let opt = format!("lowerdir={}", root.display());
    let script = "id -u; cat /proc/self/uid_map | wc -l; echo scratch > /tmp/x && cat /tmp/x; ls /proc | grep -c '^[0-9]'; exit 6";

    // A user with /etc/subuid and /etc/subgid ranges: uid 0 inside, the full range mapped.
    let (uid, gid) = testkit::test_user();
    let o = run_as(
        uid,
        gid,
        t.path(),
        &["run", "-o", &opt, "--", "sh", "-c", script],
    );
    assert_eq!(
        o.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["0", "2", "scratch"], "{out}");
    assert!(
        lines[3].parse::<usize>().unwrap() <= 4,
        "not its own pid namespace: {out}"
    );
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("mapping only"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // --rootless as root: the same user-namespace path (a real user namespace, not the
    // initial one, whose map is "0 0 4294967295").
    let o = run(
        &root,
        &["--rootless"],
        &["sh", "-c", "id -u; cat /proc/self/uid_map"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert_eq!(out.lines().next(), Some("0"));
    assert!(
        !out.contains("4294967295"),
        "--rootless ran in the initial user namespace: {out}"
    );

    // nobody has no subordinate range: one id mapped, with a warning saying what breaks.
    let o = run_as(
        65534,
        65534,
        t.path(),
        &[
            "run",
            "-o",
            &opt,
            "--",
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map | wc -l",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout(&o).lines().collect::<Vec<_>>(), ["0", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/etc/subuid") && err.contains("mapping only"),
        "{err}"
    );
    assert_nothing_left();
}

#[test]
fn rootless_without_dev_fuse_access_says_what_to_do() {
    let Some((_serial, t, root)) = setup() else {
        return;
    };
    readable_by_all(t.path());
    // Not accessible to others, whatever this machine's default.
    let _fuse = testkit::DevFuseOpen::with_mode(0o600);
    let o = run_as(
        65534,
        65534,
        t.path(),
        &[
            "run",
            "-o",
            &format!("lowerdir={}", root.display()),
            "--",
            "true",
        ],
    );
    assert_eq!(o.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("chmod 666 /dev/fuse"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn writes_land_in_the_upper_and_the_ephemeral_upper_goes_away() {
    let Some((_serial, t, lower)) = setup() else {
        return;
    };
    let before = std::fs::read_dir(lower.join("bin")).unwrap().count();
    // No upperdir=: a temporary upper, gone afterwards.
    let o = sh(
        &lower,
        "echo eph > /root/f && cat /root/f && rm /bin/true && ls /bin | wc -l",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert!(out.starts_with("eph\n"), "{out}");
    assert_eq!(out.lines().nth(1).unwrap().trim(), (before - 1).to_string());
    assert!(!lower.join("root/f").exists() && lower.join("bin/true").exists());
    assert_nothing_left();
    // With upperdir=: the changes persist there, in the kernel's format.
    let (u, w) = (t.path().join("upper"), t.path().join("work"));
    std::fs::create_dir(&u).unwrap();
    std::fs::create_dir(&w).unwrap();
    let rw = format!("upperdir={},workdir={}", u.display(), w.display());
    let o = run(
        &lower,
        &["-o", &rw],
        &["sh", "-c", "echo kept > /root/f; rm /bin/true"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(u.join("root/f")).unwrap(), b"kept\n");
    let wh = std::fs::symlink_metadata(u.join("bin/true")).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout for /bin/true"
    );
    assert!(!lower.join("root/f").exists());
    assert_nothing_left();
}

/// A root filesystem with nothing but /bin (busybox), as `podman import` of a bare
/// tarball gives.
fn bare_root(base: &Path) -> PathBuf {
    let root = base.join("bare");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for app in ["sh", "ls", "cat", "touch", "test", "id", "grep", "mount"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
    }
    root
}

const BARE_SCRIPT: &str = "ls -d /proc /dev /sys /tmp /etc/resolv.conf /etc/hosts /mnt/data/file \
     && test -c /dev/null && test -e /proc/self/status && echo ok";

/// The mount points a bare root lacks are made in the run's upper, like runc does: in the
/// ephemeral upper, in a persistent one (and never in the image), as root and rootless;
/// with `-o ro` the root is read-only once they exist.
#[test]
fn a_root_with_only_bin_gets_its_mount_points_in_the_upper() {
    if !require_root() {
        return;
    }
    let _serial = serial();
    let t = tempfile::tempdir().unwrap();
    readable_by_all(t.path());
    let root = bare_root(t.path());
    let data = t.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("file"), "x").unwrap();
    let bind = format!("{}:/mnt/data", data.display());

    let o = run(&root, &["--bind", &bind], &["sh", "-c", BARE_SCRIPT]);
    assert_eq!(stdout(&o).lines().last(), Some("ok"), "{o:?}");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A persistent upper keeps them; the image does not get them.
    let (u, w) = (t.path().join("u"), t.path().join("w"));
    std::fs::create_dir(&u).unwrap();
    std::fs::create_dir(&w).unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        root.display(),
        u.display(),
        w.display()
    );
    let o = Command::new(BIN)
        .args([
            "run",
            "-o",
            &opts,
            "--bind",
            &bind,
            "--",
            "sh",
            "-c",
            BARE_SCRIPT,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(stdout(&o).lines().last(), Some("ok"), "{o:?}");
    for p in ["proc", "dev", "sys", "tmp", "mnt/data"] {
        assert!(u.join(p).is_dir(), "{p} not in the upper");
    }
    for p in ["etc/resolv.conf", "etc/hosts"] {
        assert!(u.join(p).is_file(), "{p} not in the upper");
    }
    let image: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(image, ["bin"], "the image was written");

    // -o ro: mount points made first, then the root is read-only.
    let o = run(
        &root,
        &["-o", "ro"],
        &[
            "sh",
            "-c",
            "ls -d /proc /tmp && touch /tmp/ok && (touch /x 2>/dev/null || echo refused)",
        ],
    );
    assert_eq!(stdout(&o).lines().last(), Some("refused"), "{o:?}");

    // Rootless, from a user with a subordinate range.
    let _fuse = testkit::DevFuseOpen::new();
    let (uid, gid) = testkit::test_user();
    let opt = format!("lowerdir={}", root.display());
    let o = run_as(
        uid,
        gid,
        t.path(),
        &[
            "run",
            "-o",
            &opt,
            "--bind",
            &bind,
            "--",
            "sh",
            "-c",
            BARE_SCRIPT,
        ],
    );
    assert_eq!(stdout(&o).lines().last(), Some("ok"), "{o:?}");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_nothing_left();
}

/// The command starts with umask 0022 as under podman and runc (the daemon's own umask 0
/// must not leak into the container), so files a build step makes are not world-writable;
/// `--umask` sets another.
#[test]
fn the_command_starts_with_umask_0022_unless_told_otherwise() {
    let Some((_serial, t, lower)) = setup() else {
        return;
    };
    let (u, w) = (t.path().join("upper"), t.path().join("work"));
    std::fs::create_dir(&u).unwrap();
    std::fs::create_dir(&w).unwrap();
    let rw = format!("upperdir={},workdir={}", u.display(), w.display());
    let o = run(
        &lower,
        &["-o", &rw],
        &["sh", "-c", "umask; echo x > /root/f; mkdir /root/d"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout(&o).trim(), "0022");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| std::fs::metadata(u.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("root/f"), 0o644, "a new file in the upper");
    assert_eq!(mode("root/d"), 0o755, "a new directory in the upper");
    let o = run(&lower, &["--umask", "0077"], &["sh", "-c", "umask"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout(&o).trim(), "0077");
    assert_nothing_left();
}
