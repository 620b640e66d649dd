//! What the FUSE wire carries since it is ours (vendor/fuser/PATCHES.md), side by side with
//! the kernel's overlay: node ids apart from inode numbers (the names of a lower hard link
//! stay apart after one is copied up, and show the kernel's numbers after a remount, with
//! origin records opened by handle), `O_TMPFILE`, and the kernel's kill-suid marks
//! deciding set-id bits where the daemon cannot see the caller.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use testkit::pair::{write, Pair, Tmpfs, CHECK_INOS, INO_CLASSES, SAVE_INOS};
use testkit::{request_counts, require_root, EnableUring, Kernel, Layerfs};

/// A lower file with names in two directories: after one name is copied up (written,
/// chmodded, linked) the others still show the lower file (content, link count, number)
/// within the same mount, and the copy its own; looked up before and after, listed too.
#[test]
fn the_names_of_a_lower_hard_link_stay_apart_after_one_is_copied_up() {
    if !require_root() {
        return;
    }
    hard_link_steps(&Pair::new(1, hard_link_layer));
}

fn hard_link_layer(_: usize, d: &Path) {
    write(d, "f", "data\n");
    write(d, "g", "other\n");
    fs::create_dir(d.join("c")).unwrap();
    fs::hard_link(d.join("f"), d.join("c/f")).unwrap();
    fs::hard_link(d.join("f"), d.join("c/f2")).unwrap();
    fs::hard_link(d.join("g"), d.join("c/g")).unwrap();
    std::os::unix::fs::symlink("t", d.join("s")).unwrap();
    fs::hard_link(d.join("s"), d.join("c/s")).unwrap();
}

fn hard_link_steps(p: &Pair) {
    // Same number for each, before anything changes (and as readdir lists them).
    let same = r#"cd "$M"; s() { [ "$(stat -c %i "$1")" = "$(stat -c %i "$2")" ] && echo "$1 $2 same" || echo "$1 $2 apart"; }"#;
    p.steps(&[
        &format!("{same}; s f c/f; s c/f c/f2; s g c/g; s s c/s"),
        r#"cd "$M"; stat -c '%n %h %s' f c/f c/f2 g c/g s c/s; cat f c/f g"#,
        r#"cd "$M"; ls -i c | awk '{print $2}'"#,
    ]);
    // One name of each written, chmodded or linked: copied up.
    p.steps(&[
        r#"cd "$M"; echo more >> f; chmod 600 c/g; ln c/s s2"#,
        r#"cd "$M"; stat -c '%n %h %s %a' f c/f c/f2 g c/g s c/s s2; cat f c/f c/f2 g c/g"#,
        &format!("{same}; s f c/f; s c/f c/f2; s g c/g; s s c/s; s c/s s2"),
        // The copy takes new names as one inode; the lower names stay one file below.
        r#"cd "$M"; ln f f3; stat -c '%n %h' f f3 c/f; echo x >> c/f2; cat f3 c/f c/f2"#,
        &format!("{same}; s f f3; s c/f c/f2"),
        r#"cd "$M"; ls -l c f f3 | awk '{print $1, $2, $5, $NF}'"#,
    ]);
}

/// After a remount, every name of a lower hard link shows the number the kernel shows: a
/// copy its own, whatever names it took through the mount (a link, a rename, an exchange),
/// the names never copied up the lower file's. The kernel reads the origin's link count by
/// opening its handle; layerfs read only the number from the record, and a copy linked or
/// renamed away from its lower name showed the lower file's number, one the other names
/// show (found by the rw differential once it kept lower hard links).
#[test]
fn the_names_of_a_lower_hard_link_keep_the_kernels_numbers_after_a_remount() {
    if !require_root() {
        return;
    }
    let mut p = Pair::new(1, |i, d| {
        hard_link_layer(i, d);
        write(d, "h", "one link\n");
    });
    let exchange = r#"python3 -c 'import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.renameat2(-100, sys.argv[1].encode(), -100, sys.argv[2].encode(), 2):
    sys.exit(os.strerror(ctypes.get_errno()))' "#;
    p.step(&format!(
        r#"cd "$M" && ln f f3 && mv c/g g2 && ln c/s s2 && {exchange} c/f2 h"#
    ));
    let files = "FILES='f c/f c/f2 f3 g g2 h s c/s s2'";
    p.step(&format!("{files}; {INO_CLASSES}; {SAVE_INOS}"));
    p.unmount();
    p.mount();
    p.step(&format!("{files}; {INO_CLASSES}; {CHECK_INOS}"));
    p.step(r#"cd "$M" && cat f f3 c/f c/f2 g g2 h"#);
}

/// Without `CAP_DAC_READ_SEARCH` (a rootless daemon) an origin record cannot be opened by
/// handle, only decoded into a number: after a remount a copy of one name of a lower hard
/// link shows its own number while at that name, as on the kernel, but a name it took by
/// a link shows the lower file's number, where the kernel shows the copy's
/// (docs/SEMANTICS.md, pinned: every other name and every other line as on the kernel).
#[test]
fn without_cap_dac_read_search_origin_records_are_decoded_as_documented() {
    if !require_root() {
        return;
    }
    let mut p = Pair::new(1, hard_link_layer);
    p.wrap_layerfs(&[
        "setpriv",
        "--inh-caps=-dac_read_search",
        "--bounding-set=-dac_read_search",
    ]);
    p.step(r#"cd "$M" && ln f f3 && echo more >> c/f2"#);
    let files = "FILES='c/f f f3 c/f2'";
    p.step(&format!("{files}; {INO_CLASSES}; {SAVE_INOS}"));
    p.unmount();
    p.mount();
    let [k, l] = p.outcomes(&format!("{files}; {INO_CLASSES}; {CHECK_INOS}"));
    let (k, l): (Vec<_>, Vec<_>) = (k.lines().collect(), l.lines().collect());
    assert_eq!(k.len(), l.len(), "kernel {k:?}, layerfs {l:?}");
    for (k, l) in k.iter().zip(&l) {
        if l.starts_with("f3 ") {
            // Linked to the copy of f: the lower file's number (c/f's), so the remount
            // changed it.
            assert!(matches!(*l, "f3 c/f 2" | "f3 changed"), "layerfs: {l}");
        } else {
            assert_eq!(
                k, l,
                "kernel (left), layerfs without the capability (right)"
            );
        }
    }
    assert!(
        k.contains(&"f3 f 2") && k.contains(&"f3 same"),
        "kernel: {k:?}"
    );
}

/// Lowers on one tmpfs, uppers on another: the origin records (null uuid) fit both
/// filesystems' handle layout, and decoded they named no certain filesystem, so a copy
/// showed its upper number after a remount where the kernel shows the lower's. Opened by
/// handle on the lower filesystems (as the kernel), a copy keeps its number, a copy of one
/// name of a lower hard link shows its own, on both.
#[test]
fn copies_keep_the_kernels_numbers_over_two_filesystems_of_one_type() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (_lowers, _uppers) = (
        Tmpfs::mount(&t.path().join("a")),
        Tmpfs::mount(&t.path().join("b")),
    );
    let lower = t.path().join("a/lower");
    write(&lower, "f", "one link\n");
    write(&lower, "g", "two links\n");
    fs::hard_link(lower.join("g"), lower.join("g2")).unwrap();
    let side = |s: &str, kernel: bool| -> (Option<Kernel>, Option<Layerfs>) {
        let (up, work, mnt) = (
            t.path().join(format!("b/{s}/upper")),
            t.path().join(format!("b/{s}/work")),
            t.path().join(format!("{s}/mnt")),
        );
        for d in [&up, &work] {
            fs::create_dir_all(d).unwrap();
        }
        let lowers = [lower.clone()];
        if kernel {
            (
                Some(Kernel::mount_rw_with(
                    &lowers,
                    &up,
                    &work,
                    &mnt,
                    ",redirect_dir=on",
                )),
                None,
            )
        } else {
            let rw = format!("upperdir={},workdir={}", up.display(), work.display());
            (None, Some(Layerfs::mount_with(&lowers, &mnt, &["-o", &rw])))
        }
    };
    let run = |cmd: &str| -> [String; 2] {
        ["k", "l"].map(|s| {
            let out = Command::new("bash")
                .args(["-o", "pipefail", "-c", cmd])
                .env("M", t.path().join(format!("{s}/mnt")))
                .output()
                .unwrap();
            assert!(out.status.success(), "`{cmd}` on {s}: {out:?}");
            String::from_utf8_lossy(&out.stdout).to_string()
        })
    };
    let files = "FILES='f g g2 g3'";
    {
        let _mounts = [side("k", true), side("l", false)];
        run(r#"cd "$M" && touch f && ln g g3"#);
        let [k, l] = run(&format!("{files}; {INO_CLASSES}; {SAVE_INOS}"));
        assert_eq!(k, l, "kernel (left), layerfs (right)");
    }
    let _mounts = [side("k", true), side("l", false)];
    let [k, l] = run(&format!("{files}; {INO_CLASSES}; {CHECK_INOS}"));
    assert_eq!(k, l, "after a remount: kernel (left), layerfs (right)");
}

/// `O_TMPFILE` (`FUSE_TMPFILE`): an unnamed file, written, given a name with `linkat`
/// through `/proc/self/fd`, in an upper and in a lower-only directory; `O_EXCL` makes it
/// unlinkable; a directory that is not one refuses.
#[test]
fn o_tmpfile_works_as_on_the_kernel_overlay() {
    if !require_root() {
        return;
    }
    tmpfile_steps(&Pair::new(1, tmpfile_layer));
}

fn tmpfile_layer(_: usize, d: &Path) {
    write(d, "low/keep", "k\n");
    write(d, "file", "f\n");
}

fn tmpfile_steps(p: &Pair) {
    let script = r#"python3 - "$M" <<'EOF'
import os, sys
m = sys.argv[1]
# linkat(AT_SYMLINK_FOLLOW) (os.link without a dir fd calls link(2), which does not follow)
root = os.open("/", os.O_RDONLY)
def link(fd, dst):
    os.link("/proc/self/fd/%d" % fd, dst, src_dir_fd=root, follow_symlinks=True)
os.makedirs(m + "/up", exist_ok=True)
for d in ["up", "low", ""]:
    fd = os.open(m + "/" + d, os.O_TMPFILE | os.O_RDWR, 0o640)
    st = os.fstat(fd)
    print(d, "new", oct(st.st_mode), st.st_nlink, st.st_size)
    os.write(fd, b"tmp data\n")
    st = os.fstat(fd)
    print(d, "unnamed", oct(st.st_mode), st.st_nlink, st.st_size, sorted(os.listdir(m + "/" + d)))
    link(fd, m + "/" + d + "/named")
    os.write(fd, b"after\n")
    st = os.fstat(fd)
    st2 = os.stat(m + "/" + d + "/named")
    print(d, "named", oct(st2.st_mode), st2.st_nlink, st2.st_size, st.st_ino == st2.st_ino)
    print(open(m + "/" + d + "/named").read(), sorted(os.listdir(m + "/" + d)))
    os.close(fd)
fd = os.open(m + "/up", os.O_TMPFILE | os.O_RDWR | os.O_EXCL, 0o600)
try:
    link(fd, m + "/up/never")
except OSError as e:
    print("O_EXCL link:", e.errno)
for bad in ["file", "missing"]:
    try:
        os.open(m + "/" + bad, os.O_TMPFILE | os.O_RDWR, 0o600)
    except OSError as e:
        print(bad, e.errno)
EOF"#;
    p.step(script);
    p.step(
        r#"cd "$M"; cat named up/named low/named; stat -c '%n %h %s %a' named up/named low/named"#,
    );
}

/// Set-id bits of files truncated, opened with `O_TRUNC`, written and fallocated by root
/// (holding `CAP_FSETID`) while the daemon runs in a pid namespace of its own, where it
/// cannot see the caller (the request names pid 0): kept, as on the kernel's overlay. The
/// daemon used to read the caller's capabilities from `/proc/<pid>/status` and, unable to,
/// dropped the bits; it now follows the kernel's marks.
#[test]
fn set_id_bits_follow_the_kernel_when_the_daemon_cannot_see_the_caller() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let modes = [0o4755, 0o6755, 0o2745];
    let changes = [
        ("truncate", "truncate -s 1"),
        ("otrunc", "sh -c ': > \"$0\"'"),
        ("write", "sh -c 'echo x >> \"$0\"'"),
        ("fallocate", "fallocate -l 8192"),
    ];
    let side = |name: &str| {
        let d = t.path().join(name);
        for s in ["lower", "upper", "work", "mnt"] {
            fs::create_dir_all(d.join(s)).unwrap();
        }
        for (c, _) in changes {
            for m in modes {
                let f = d.join(format!("lower/{c}-{m:o}"));
                fs::write(&f, b"0123456789").unwrap();
                fs::set_permissions(&f, fs::Permissions::from_mode(m)).unwrap();
            }
        }
        d
    };
    let (k, l) = (side("k"), side("l"));
    let kernel = Kernel::mount_rw(
        &[k.join("lower")],
        &k.join("upper"),
        &k.join("work"),
        &k.join("mnt"),
    );
    let rw = format!(
        "upperdir={},workdir={}",
        l.join("upper").display(),
        l.join("work").display()
    );
    let layerfs = Layerfs::mount_via(
        &["unshare", "--pid", "--fork"],
        &[l.join("lower")],
        &l.join("mnt"),
        &["-o", &rw],
        &[],
    );
    let outcome = |mp: &Path| {
        let mut out = Vec::new();
        for (c, cmd) in changes {
            for m in modes {
                let f = mp.join(format!("{c}-{m:o}"));
                let st = Command::new("sh")
                    .arg("-c")
                    .arg(format!("{cmd} \"$0\"", cmd = cmd))
                    .arg(&f)
                    .status()
                    .unwrap();
                let mode = fs::metadata(&f).unwrap().permissions().mode() & 0o7777;
                out.push(format!("{c}-{m:o}: {} {mode:o}", st.code().unwrap_or(-1)));
            }
        }
        out
    };
    assert_eq!(outcome(&kernel.mp), outcome(&layerfs.mp));
    layerfs.assert_no_errors_logged();
}

/// The side-by-side steps above (hard links, O_TMPFILE) and a small tree's making, copying
/// and removal, served over FUSE-over-io_uring (`-o io_uring`, with the kernel's
/// `enable_uring` switched on for the test and restored): the same outcomes as the kernel's
/// overlay, and every request the core answers but FORGET (which the kernel sends through
/// `/dev/fuse`) came over the rings.
#[test]
fn the_wire_steps_match_the_kernel_over_io_uring() {
    if !require_root() {
        return;
    }
    let _on = EnableUring::set(true);
    let t = tempfile::tempdir().unwrap();
    let counts = t.path().join("counts");
    let env = || vec![("LAYERFS_REQUEST_COUNTS", counts.clone())];
    let over_rings = || {
        let c = request_counts(&counts);
        let ring = c.get("over_io_uring").copied().unwrap_or(0);
        let want = c["total"] - c.get("forget").copied().unwrap_or(0);
        assert!(
            ring > 0 && ring >= want,
            "requests {c:?}: not all over the rings"
        );
    };
    hard_link_steps(&Pair::new_with(
        1,
        hard_link_layer,
        false,
        ",io_uring",
        env(),
    ));
    over_rings();
    tmpfile_steps(&Pair::new_with(1, tmpfile_layer, false, ",io_uring", env()));
    over_rings();
    let p = Pair::new_with(1, hard_link_layer, false, ",io_uring", env());
    p.steps(&[
        r#"cd "$M"; mkdir -p t/a/b; for i in $(seq 200); do echo $i > t/a/b/$i; done; ln -s b t/l"#,
        r#"cd "$M"; cp -a t t2; tar --mtime=@0 -cf - t2 | md5sum; du -s --apparent-size t2; ls -R t2 | wc -l"#,
        r#"cd "$M"; head -c 3000000 /dev/urandom > big; cat big big > big2; stat -c '%s' big2; cmp big2 big2"#,
        r#"cd "$M"; mv t2 t3; rm -rf t c; ls; find . | sort | md5sum"#,
    ]);
    drop(p);
    over_rings();
}

/// `-o io_uring` where the kernel does not offer FUSE-over-io_uring (`enable_uring` off for
/// the test): the mount serves over `/dev/fuse` reads and the daemon logs one warning saying
/// why; no request came over a ring.
#[test]
fn io_uring_falls_back_to_dev_fuse_reads_with_a_warning() {
    if !require_root() {
        return;
    }
    let _off = EnableUring::set(false);
    let t = tempfile::tempdir().unwrap();
    let (lower, mp) = (t.path().join("lower"), t.path().join("mnt"));
    write(&lower, "f", "data\n");
    let (log, counts) = (t.path().join("log"), t.path().join("counts"));
    let m = Layerfs::mount_with_env(
        &[lower],
        &mp,
        &["-o", "io_uring"],
        &[
            ("LAYERFS_LOG_FILE", &log),
            ("LAYERFS_REQUEST_COUNTS", &counts),
        ],
    );
    assert_eq!(fs::read_to_string(m.path("f")).unwrap(), "data\n");
    drop(m);
    let log = fs::read_to_string(&log).unwrap();
    let warned: Vec<_> = log.lines().filter(|l| l.contains("io_uring")).collect();
    assert_eq!(warned.len(), 1, "log:\n{log}");
    assert!(
        warned[0].contains("WARN") && warned[0].contains("serving over /dev/fuse reads"),
        "{}",
        warned[0]
    );
    let c = request_counts(&counts);
    assert!(c["total"] > 0 && !c.contains_key("over_io_uring"), "{c:?}");
}

/// The transport a mount takes by default follows the kernel: FUSE-over-io_uring when
/// `enable_uring` is on (requests come over the rings, and nothing is logged about it), `/dev/fuse` reads when it is off, with one line at info
/// level (not a warning) saying why; `-o noio_uring` keeps `/dev/fuse` with the rings
/// offered. The kernel's parameter is switched for each mount's INIT only, and restored.
#[test]
fn the_default_transport_is_io_uring_where_the_kernel_offers_it() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let lower = t.path().join("lower");
    write(&lower, "f", "data\n");
    // One mount with the kernel's switch `on`: its log lines about io_uring, its counts.
    let serve = |on: bool, extra: &[&str], tag: &str| {
        let (log, counts) = (
            t.path().join(format!("log-{tag}")),
            t.path().join(format!("counts-{tag}")),
        );
        let mp = t.path().join(format!("mnt-{tag}"));
        // Held while the mount lives: the daemon registers its rings after INIT, and the
        // kernel refuses a registration once the switch is off again.
        let _uring = EnableUring::set(on);
        let m = {
            Layerfs::mount_with_env(
                std::slice::from_ref(&lower),
                &mp,
                extra,
                &[
                    ("LAYERFS_LOG_FILE", &log),
                    ("LAYERFS_REQUEST_COUNTS", &counts),
                    ("RUST_LOG", Path::new("info")),
                ],
            )
        };
        assert_eq!(fs::read_to_string(m.path("f")).unwrap(), "data\n");
        drop(m);
        drop(_uring);
        let log = fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains("io_uring"))
            .map(String::from)
            .collect();
        (lines, request_counts(&counts))
    };
    let (said, c) = serve(true, &[], "on");
    // Requests made before every ring has registered come through `/dev/fuse` (the
    // kernel waits for all queues): some, not all, are asked over the rings.
    let ring = c.get("over_io_uring").copied().unwrap_or(0);
    assert!(ring > 0, "enable_uring on, default: {c:?}");
    assert!(said.is_empty(), "{said:?}");
    let (said, c) = serve(false, &[], "off");
    assert!(
        c["total"] > 0 && !c.contains_key("over_io_uring"),
        "enable_uring off: {c:?}"
    );
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains("INFO")
            && said[0].contains("switched off")
            && said[0].contains("/dev/fuse"),
        "{}",
        said[0]
    );
    let (said, c) = serve(true, &["-o", "noio_uring"], "no");
    assert!(
        c["total"] > 0 && !c.contains_key("over_io_uring"),
        "noio_uring: {c:?}"
    );
    assert!(said.is_empty(), "{said:?}");
}

/// A POSIX access ACL set by a caller who owns a set-gid file or directory but is not in its
/// group (and has no `CAP_FSETID`): the set-gid bit goes, as on the kernel's overlay (the
/// kernel says so with `FUSE_SETXATTR_ACL_KILL_SGID`, sent once `FUSE_SETXATTR_EXT` is
/// negotiated; the daemon, root, used to keep the bit the upper's filesystem let it keep).
/// By a caller in the group, the bit stays on both.
#[test]
fn an_acl_set_outside_the_files_group_drops_set_gid_as_on_the_kernel() {
    if !require_root() {
        return;
    }
    let p = Pair::new(1, |_, d| {
        for (name, gid) in [("f", 2000), ("g", 1000)] {
            write(d, name, "data\n");
            std::os::unix::fs::chown(d.join(name), Some(1000), Some(gid)).unwrap();
            fs::set_permissions(d.join(name), fs::Permissions::from_mode(0o2755)).unwrap();
        }
        fs::create_dir(d.join("d")).unwrap();
        std::os::unix::fs::chown(d.join("d"), Some(1000), Some(2000)).unwrap();
        fs::set_permissions(d.join("d"), fs::Permissions::from_mode(0o2775)).unwrap();
    });
    p.steps(&[
        r#"cd "$M"; for x in f g d; do setpriv --reuid=1000 --regid=1000 --clear-groups setfacl -m u:1001:r $x; echo $x $?; done"#,
        r#"cd "$M"; stat -c '%n %a %u %g' f g d; getfacl -cp f g d"#,
    ]);
}
