//! The mount options fuse-overlayfs and containers/storage users rely on, each run side by
//! side with fuse-overlayfs 1.10 on copies of the same directories, outcomes compared:
//! `fsync=0`, `noacl`, `noxattrs=`, an upper without xattrs, `timeout=` and the SIGUSR1
//! refresh, `xattr_permissions=`, chown under the squash options. The options the kernel
//! has (`redirect_dir=`, `metacopy=`) are compared with it in `kernel_options.rs`.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use testkit::side::{daemonized, fuse_overlayfs, sh, view, write, Daemonized};
use testkit::{require_root, wait_mount, Layerfs, BIN};

/// The two programs compared.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Prog {
    FuseOverlayfs,
    Layerfs,
}

/// A mount by either program, unmounted when dropped.
struct Mount {
    _fo: Option<Daemonized>,
    _lf: Option<Layerfs>,
}

impl Mount {
    fn new(prog: Prog, opts: &str, mp: &Path) -> Mount {
        match prog {
            Prog::FuseOverlayfs => Mount {
                _fo: Some(fuse_overlayfs(opts, mp)),
                _lf: None,
            },
            Prog::Layerfs => {
                // One lower, given apart (the helper writes `lowerdir=` itself).
                let (low, rest) = opts.split_once(',').unwrap_or((opts, ""));
                let lower = PathBuf::from(low.strip_prefix("lowerdir=").unwrap());
                let extra: &[&str] = if rest.is_empty() { &[] } else { &["-o", rest] };
                Mount {
                    _fo: None,
                    _lf: Some(Layerfs::mount_with(&[lower], mp, extra)),
                }
            }
        }
    }
}

/// A stack of directories under `base`: `lower`, `upper`, `work`, and the options naming
/// them (`extra` appended).
fn opts(base: &Path, upper: &Path, work: &Path, extra: &str) -> String {
    format!(
        "lowerdir={},upperdir={},workdir={}{extra}",
        base.join("lower").display(),
        upper.display(),
        work.display()
    )
}

/// fsync and fdatasync calls a foreground FUSE daemon made while `ops` ran on its mount.
fn fsyncs(prog: Prog, extra: &str, base: &Path) -> usize {
    let (u, w, mp) = (base.join("upper"), base.join("work"), base.join("m"));
    for d in [&u, &w, &mp] {
        std::fs::create_dir_all(d).unwrap();
    }
    write(&base.join("lower/f"), "lower\n");
    let trace = base.join("trace");
    let program: &std::ffi::OsStr = match prog {
        Prog::FuseOverlayfs => "fuse-overlayfs".as_ref(),
        Prog::Layerfs => BIN.as_ref(),
    };
    let mut child: Child = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&trace)
        .arg(program)
        .args(["-f", "-o", &opts(base, &u, &w, extra)])
        .arg(&mp)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace is installed (scripts/test installs it)");
    let mp = std::fs::canonicalize(&mp).unwrap();
    wait_mount(
        &mp,
        |t| t.is_some_and(|t| t.starts_with("fuse")),
        || matches!(child.try_wait(), Ok(None)),
    );
    let m = Daemonized(mp.clone());
    // A copy-up (append to a lower file), an fsync asked for, a new file.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(mp.join("f"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"more\n").unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::write(mp.join("new"), "new\n").unwrap();
    std::fs::File::open(mp.join("new"))
        .unwrap()
        .sync_all()
        .unwrap();
    drop(m);
    child.wait().unwrap();
    let t = std::fs::read_to_string(&trace).unwrap();
    t.lines()
        .filter(|l| l.contains("fsync(") || l.contains("fdatasync("))
        .count()
}

#[test]
fn fsync_0_skips_every_fsync_as_fuse_overlayfs() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for prog in [Prog::FuseOverlayfs, Prog::Layerfs] {
        for (i, extra) in ["", ",fsync=0", ",volatile"].iter().enumerate() {
            let n = fsyncs(prog, extra, &t.path().join(format!("{prog:?}{i}")));
            seen.push((prog, *extra, n > 0));
        }
    }
    let expect = |prog| {
        vec![
            (prog, "", true),
            (prog, ",fsync=0", false),
            (prog, ",volatile", false),
        ]
    };
    assert_eq!(seen[..3], expect(Prog::FuseOverlayfs)[..], "{seen:?}");
    assert_eq!(seen[3..], expect(Prog::Layerfs)[..], "{seen:?}");
}

/// Sets an ACL denying nobody on a lower file through the mount; whether nobody can
/// still read it.
fn nobody_reads_after_acl(prog: Prog, extra: &str, base: &Path) -> (bool, bool) {
    let (u, w, mp) = (base.join("upper"), base.join("work"), base.join("m"));
    for d in [&u, &w, &mp] {
        std::fs::create_dir_all(d).unwrap();
    }
    write(&base.join("lower/f"), "secret\n");
    for d in [base, &mp] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let m = Mount::new(prog, &opts(base, &u, &w, extra), &mp);
    let f = mp.join("f");
    let set = sh(&format!("setfacl -m u:65534:--- {}", f.display()));
    let read = sh(&format!(
        "setpriv --reuid 65534 --regid 65534 --clear-groups cat {}",
        f.display()
    ));
    drop(m);
    (set.status.success(), read.status.success())
}

#[test]
fn noacl_turns_acls_off_as_fuse_overlayfs() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    for (extra, expect) in [("", (true, false)), (",noacl", (true, true))] {
        let fo = nobody_reads_after_acl(
            Prog::FuseOverlayfs,
            extra,
            &t.path().join(format!("fo{}", extra.len())),
        );
        let lf = nobody_reads_after_acl(
            Prog::Layerfs,
            extra,
            &t.path().join(format!("lf{}", extra.len())),
        );
        assert_eq!(
            fo, expect,
            "fuse-overlayfs -o ...{extra}: (setfacl ok, nobody reads)"
        );
        assert_eq!(
            lf, fo,
            "layerfs (left) and fuse-overlayfs (right), -o ...{extra}"
        );
    }
}

/// Runs a set of changes on a mount whose upper is a bindfs `--xattr-none` view; the
/// merged view after them, after a remount, and the upper's own entries.
fn on_upper_without_xattrs(prog: Prog, base: &Path) -> [BTreeMap<String, String>; 2] {
    write(&base.join("lower/d/a"), "a\n");
    write(&base.join("lower/d/b"), "b\n");
    write(&base.join("lower/e/g"), "g\n");
    write(&base.join("lower/f"), "f\n");
    write(&base.join("lower/h"), "h\n");
    std::fs::create_dir_all(base.join("store/upper")).unwrap();
    std::fs::create_dir_all(base.join("store/work")).unwrap();
    let store = base.join("nox");
    let _b = daemonized(
        "bindfs",
        &["--xattr-none", base.join("store").to_str().unwrap()],
        &store,
    );
    let (u, w, mp) = (store.join("upper"), store.join("work"), base.join("m"));
    let o = opts(base, &u, &w, "");
    let m = Mount::new(prog, &o, &mp);
    let script = format!(
        "cd {} && rm f && rm -r d && mkdir d && echo n > d/new && mv e e2 && echo x >> h \
         && mkdir -p p/q && echo r > p/q/r && rm -r p && ! setfattr -n user.x -v 1 h",
        mp.display()
    );
    let out = sh(&script);
    assert!(
        out.status.success(),
        "{prog:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = view(&mp);
    drop(m);
    let m = Mount::new(prog, &o, &mp);
    let second = view(&mp);
    drop(m);
    [first, second]
}

#[test]
fn upper_without_xattrs_works_as_fuse_overlayfs() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let fo = on_upper_without_xattrs(Prog::FuseOverlayfs, &t.path().join("fo"));
    let lf = on_upper_without_xattrs(Prog::Layerfs, &t.path().join("lf"));
    assert_eq!(lf[0], fo[0], "layerfs (left) and fuse-overlayfs (right)");
    assert_eq!(
        lf[1], fo[1],
        "after a remount: layerfs (left), fuse-overlayfs (right)"
    );
    assert_eq!(lf[0], lf[1], "layerfs before and after a remount");
    // The forms that need no xattrs: a device whiteout, an opaque marker file.
    let up = t.path().join("lf/store/upper");
    let f = std::fs::symlink_metadata(up.join("f")).unwrap();
    assert!(f.mode() & libc::S_IFMT == libc::S_IFCHR && f.rdev() == 0);
    assert!(up.join("d/.wh..wh..opq").exists());
    assert!(up.join("e").exists(), "a whiteout hides the moved lower e");
}

/// The lowers' changes, made behind the mount: a new file, a changed one, a removed one,
/// a new entry in a subdirectory.
fn change_lowers(lower: &Path) {
    write(&lower.join("new"), "new\n");
    write(&lower.join("a"), "changed, and longer\n");
    std::fs::remove_file(lower.join("gone")).unwrap();
    write(&lower.join("d/x"), "x\n");
}

fn lowers_for_refresh(base: &Path) -> PathBuf {
    let lower = base.join("lower");
    write(&lower.join("a"), "a\n");
    write(&lower.join("gone"), "gone\n");
    std::fs::create_dir_all(lower.join("d")).unwrap();
    lower
}

#[test]
fn timeout_and_sigusr1_show_changes_made_in_the_lowers() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    // Each file-data mode: the kernel reading lower files itself (passthrough), and through
    // the daemon with the kernel's page cache (cached, rootless's default).
    // And a writable mount whose root and `d` have upper copies (merged listings).
    let cases = [
        (",timeout=1", "passthrough"),
        (",timeout=1", "cached"),
        ("", "passthrough"),
        ("", "cached"),
        (",timeout=1", "rw"),
    ];
    for (i, (extra, io)) in cases.iter().enumerate() {
        let base = t.path().join(i.to_string());
        let lower = lowers_for_refresh(&base);
        let (u, w) = (base.join("upper"), base.join("work"));
        let o = match *io {
            "rw" => {
                std::fs::create_dir_all(&u).unwrap();
                std::fs::create_dir_all(&w).unwrap();
                format!("upperdir={},workdir={}{extra}", u.display(), w.display())
            }
            _ => format!("ro{extra}"),
        };
        let io_arg = if *io == "rw" { "passthrough" } else { io };
        let m = Layerfs::mount_with(
            std::slice::from_ref(&lower),
            &base.join("m"),
            &["-o", &o, "--file-io", io_arg],
        );
        if *io == "rw" {
            write(&m.mp.join("top"), "top\n");
            write(&m.mp.join("d/own"), "own\n");
        }
        // Read once, so the kernel holds the old data and listings.
        assert_eq!(std::fs::read_to_string(m.mp.join("a")).unwrap(), "a\n");
        let before = view(&m.mp);
        assert!(before.contains_key("gone") && !before.contains_key("d/x"));
        change_lowers(&lower);
        // The reference: a fresh fuse-overlayfs mount of the lowers as they are now.
        let layers = match *io {
            "rw" => format!("{}:{}", u.display(), lower.display()),
            _ => lower.display().to_string(),
        };
        let fresh = fuse_overlayfs(&format!("lowerdir={layers}"), &base.join("ref"));
        let want = view(&fresh.0);
        if extra.is_empty() {
            // No timeout: the lowers count as immutable until a refresh is asked for.
            let pid = m.pid().to_string();
            assert!(Command::new("kill")
                .args(["-USR1", &pid])
                .status()
                .unwrap()
                .success());
        }
        let started = std::time::Instant::now();
        let deadline = started + std::time::Duration::from_secs(15);
        let mut now = view(&m.mp);
        while now != want && std::time::Instant::now() < deadline {
            std::thread::yield_now();
            now = view(&m.mp);
        }
        assert_eq!(
            now, want,
            "-o {o} --file-io {io}: layerfs (left), the lowers (right)"
        );
        eprintln!(
            "-o {o} --file-io {io}: changes shown after {:?}",
            started.elapsed()
        );
        m.assert_no_errors_logged();
    }
}

/// With `timeout=` the adapter answers OPENDIR (the kernel is to keep no listing), so the
/// kernel sends a RELEASEDIR for each: counted like every request the adapter answers.
#[test]
fn timeout_mounts_answer_and_count_releasedir() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let lower = lowers_for_refresh(t.path());
    let counts = t.path().join("counts");
    let m = Layerfs::mount_with_env(
        std::slice::from_ref(&lower),
        &t.path().join("m"),
        &["-o", "ro,timeout=60"],
        &[("LAYERFS_REQUEST_COUNTS", &counts)],
    );
    for _ in 0..3 {
        assert_eq!(std::fs::read_dir(&m.mp).unwrap().count(), 3);
        assert_eq!(std::fs::read_dir(m.mp.join("d")).unwrap().count(), 0);
    }
    drop(m);
    let c = testkit::request_counts(&counts);
    let n = |op: &str| c.get(op).copied().unwrap_or(0);
    assert!(n("opendir") >= 6, "{c:?}");
    // The kernel sends RELEASEDIR in the background after the close: the last ones may
    // still be in flight when the mount goes.
    assert!(
        n("releasedir") > 0 && n("releasedir") <= n("opendir"),
        "{c:?}"
    );
}

/// A force_mask store as containers/storage writes it: every file mode 0700, owned by the
/// store's owner (here root), the real owner and mode in `user.containers.override_stat`.
fn force_mask_store(base: &Path) {
    let l = base.join("lower");
    write(&l.join("d/a"), "a\n");
    write(&l.join("f"), "f\n");
    for (p, v) in [
        ("", "0:0:0755"),
        ("d", "0:0:0755"),
        ("d/a", "1001:1001:0640"),
        ("f", "1000:1000:0644"),
    ] {
        let p = l.join(p);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        let out = sh(&format!(
            "setfattr -n user.containers.override_stat -v {v} {}",
            p.display()
        ));
        assert!(out.status.success());
    }
}

/// Owner and mode of `names` under `root` as `uid:gid mode`.
fn owners(root: &Path, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| {
            let m = std::fs::symlink_metadata(root.join(n)).unwrap();
            format!("{}:{} {:o}", m.uid(), m.gid(), m.mode() & 0o7777)
        })
        .collect()
}

const NAMES: [&str; 5] = ["f", "d", "d/a", "n", "nd"];

/// chown, chmod and new entries on a force_mask store; what the mount shows before a
/// remount and after.
fn on_force_mask(prog: Prog, base: &Path, extra: &str) -> [Vec<String>; 3] {
    force_mask_store(base);
    let (u, w, mp) = (base.join("upper"), base.join("work"), base.join("m"));
    for d in [&u, &w] {
        std::fs::create_dir_all(d).unwrap();
    }
    let o = opts(base, &u, &w, extra);
    let m = Mount::new(prog, &o, &mp);
    let shown = owners(&mp, &NAMES[..3]);
    let out = sh(&format!(
        "cd {} && chown 5:5 f && chmod 600 d/a && echo n > n && chown 7:8 n && chmod 604 n \
         && mkdir -m 711 nd",
        mp.display()
    ));
    assert!(
        out.status.success(),
        "{prog:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = owners(&mp, &NAMES);
    drop(m);
    let m = Mount::new(prog, &o, &mp);
    let remounted = owners(&mp, &NAMES);
    drop(m);
    [shown, after, remounted]
}

#[test]
fn xattr_permissions_keep_owners_and_modes_in_override_stat() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let fo = on_force_mask(
        Prog::FuseOverlayfs,
        &t.path().join("fo"),
        ",xattr_permissions=2",
    );
    for (extra, name) in [
        (",xattr_permissions=2", "user.containers.override_stat"),
        (",xattr_permissions=1", "security.containers.override_stat"),
    ] {
        let base = t.path().join(format!("lf{}", name.len()));
        let lf = on_force_mask(Prog::Layerfs, &base, extra);
        // What a caller set is what the mount shows, also after a remount.
        let set = ["5:5 644", "0:0 755", "1001:1001 600", "7:8 604", "0:0 711"];
        assert_eq!(
            lf[0],
            ["1000:1000 644", "0:0 755", "1001:1001 640"],
            "{extra}"
        );
        assert_eq!(lf[1], set, "{extra}");
        assert_eq!(lf[2], set, "after a remount, {extra}");
        // Where fuse-overlayfs 1.10 agrees: what the store shows, every mode, the owners
        // of f and d (docs/SEMANTICS.md names the rest: it loses d/a's and n's owners).
        assert_eq!(
            lf[0], fo[0],
            "layerfs (left), fuse-overlayfs (right), {extra}"
        );
        let mode = |v: &Vec<String>| -> Vec<String> {
            v.iter()
                .map(|s| s.split(' ').nth(1).unwrap().to_string())
                .collect()
        };
        assert_eq!(mode(&lf[2]), mode(&fo[2]), "modes, {extra}");
        assert_eq!(lf[2][..2], fo[2][..2], "owners of f and d, {extra}");
        // On disk: the store's mask and the daemon's owner; the values in `name`.
        let up = base.join("upper");
        assert_eq!(owners(&up, &["f", "d/a"]), ["0:0 700", "0:0 700"]);
        let got = sh(&format!(
            "getfattr --only-values -n {name} {}",
            up.join("f").display()
        ));
        assert_eq!(String::from_utf8_lossy(&got.stdout), "5:5:0644", "{extra}");
    }
    assert_eq!(
        fo[2][2..4],
        ["0:0 600", "0:0 604"],
        "fuse-overlayfs 1.10 changed?"
    );
}

/// chown 5:5 of a lower file on an upper that refuses every chown (bindfs
/// `--chown-deny`, as NFS with root squash): the outcome and the owner shown.
fn chown_on_squashing_upper(prog: Prog, base: &Path, extra: &str) -> (bool, String) {
    write(&base.join("lower/f"), "f\n");
    std::fs::create_dir_all(base.join("store/upper")).unwrap();
    std::fs::create_dir_all(base.join("store/work")).unwrap();
    let store = base.join("deny");
    let _b = daemonized(
        "bindfs",
        &["--chown-deny", base.join("store").to_str().unwrap()],
        &store,
    );
    let mp = base.join("m");
    let m = Mount::new(
        prog,
        &opts(base, &store.join("upper"), &store.join("work"), extra),
        &mp,
    );
    let ok = sh(&format!("chown 5:5 {}", mp.join("f").display()))
        .status
        .success();
    let shown = owners(&mp, &["f"]).remove(0);
    drop(m);
    (ok, shown)
}

#[test]
fn chown_under_squash_succeeds_as_fuse_overlayfs() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    for (i, extra) in ["", ",squash_to_root", ",squash_to_uid=7,squash_to_gid=8"]
        .iter()
        .enumerate()
    {
        let fo =
            chown_on_squashing_upper(Prog::FuseOverlayfs, &t.path().join(format!("fo{i}")), extra);
        let lf = chown_on_squashing_upper(Prog::Layerfs, &t.path().join(format!("lf{i}")), extra);
        assert_eq!(
            lf, fo,
            "layerfs (left), fuse-overlayfs (right), -o ...{extra}"
        );
        assert_eq!(lf.0, !extra.is_empty(), "{extra}");
    }
}

/// Reads and sets an xattr through a mount with `extra`: (getfattr ok, setfattr ok).
fn xattr_calls(prog: Prog, base: &Path, extra: &str) -> (bool, bool) {
    write(&base.join("lower/f"), "f\n");
    let (u, w, mp) = (base.join("upper"), base.join("work"), base.join("m"));
    for d in [&u, &w] {
        std::fs::create_dir_all(d).unwrap();
    }
    assert!(sh(&format!(
        "setfattr -n user.a -v 1 {}",
        base.join("lower/f").display()
    ))
    .status
    .success());
    let m = Mount::new(prog, &opts(base, &u, &w, extra), &mp);
    let f = mp.join("f");
    let get = sh(&format!("getfattr -n user.a {}", f.display()))
        .status
        .success();
    let set = sh(&format!("setfattr -n user.b -v 2 {}", f.display()))
        .status
        .success();
    drop(m);
    (get, set)
}

#[test]
fn noxattrs_turns_xattrs_off_as_fuse_overlayfs() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    for (i, (extra, expect)) in [("", (true, true)), (",noxattrs=1", (false, false))]
        .iter()
        .enumerate()
    {
        let fo = xattr_calls(Prog::FuseOverlayfs, &t.path().join(format!("fo{i}")), extra);
        let lf = xattr_calls(Prog::Layerfs, &t.path().join(format!("lf{i}")), extra);
        assert_eq!(fo, *expect, "fuse-overlayfs -o ...{extra}: (get, set)");
        assert_eq!(
            lf, fo,
            "layerfs (left), fuse-overlayfs (right), -o ...{extra}"
        );
    }
}

/// The link counts of a lower directory with two subdirectories and of the mount's root,
/// through a mount with `extra`.
fn dir_links(prog: Prog, base: &Path, extra: &str) -> Vec<u64> {
    for d in ["lower/d/a", "lower/d/b"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    let (u, w, mp) = (base.join("upper"), base.join("work"), base.join("m"));
    for d in [&u, &w] {
        std::fs::create_dir_all(d).unwrap();
    }
    let m = Mount::new(prog, &opts(base, &u, &w, extra), &mp);
    std::fs::create_dir(mp.join("d/c")).unwrap();
    let links = ["d", "d/a", "d/c"]
        .iter()
        .map(|p| std::fs::metadata(mp.join(p)).unwrap().nlink())
        .collect();
    drop(m);
    links
}

#[test]
fn static_nlink_shows_directories_with_one_link_as_fuse_overlayfs() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    for (i, extra) in ["", ",static_nlink"].iter().enumerate() {
        let fo = dir_links(Prog::FuseOverlayfs, &t.path().join(format!("fo{i}")), extra);
        let lf = dir_links(Prog::Layerfs, &t.path().join(format!("lf{i}")), extra);
        if extra.is_empty() {
            // Without the option each shows a directory's own count (layerfs: the topmost
            // copy's, as the kernel); d/c is new, with no subdirectory.
            assert_eq!(lf[2], 2, "layerfs: {lf:?}");
            assert_eq!(fo[2], 2, "fuse-overlayfs: {fo:?}");
        } else {
            assert_eq!(fo, vec![1, 1, 1], "fuse-overlayfs -o static_nlink");
            assert_eq!(
                lf, fo,
                "layerfs (left), fuse-overlayfs (right), static_nlink"
            );
        }
    }
}

/// A tmpfs mounted for a test, unmounted in Drop.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `stat -c %i` of every entry below `mp`, by path.
fn inode_numbers(mp: &Path) -> BTreeMap<String, u64> {
    let out = sh(&format!(
        "cd {} && find . -exec stat -c '%i %n' {{}} +",
        mp.display()
    ));
    assert!(out.status.success(), "find: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (ino, name) = l.split_once(' ').unwrap();
            (name.to_string(), ino.parse().unwrap())
        })
        .collect()
}

#[test]
fn ino32_t_keeps_inode_numbers_below_2_32_unique_and_stable() {
    if !require_root() {
        return;
    }
    // Two layers on two filesystems, so the inode scheme spends its top bits on the
    // filesystem: without ino32_t those numbers are above 2^32.
    let t = tempfile::tempdir().unwrap();
    let (top, bottom) = (t.path().join("top"), t.path().join("bottom"));
    std::fs::create_dir_all(&top).unwrap();
    assert!(sh(&format!("mount -t tmpfs tmpfs {}", top.display()))
        .status
        .success());
    let _tmpfs = Tmpfs(top.clone());
    write(&top.join("etc/top-file"), "t\n");
    write(&bottom.join("etc/bottom-file"), "b\n");
    write(&bottom.join("usr/lib/x"), "x\n");
    let mp = t.path().join("m");
    let numbers = |extra: &[&str]| {
        let m = Layerfs::mount_with(&[top.clone(), bottom.clone()], &mp, extra);
        let n = inode_numbers(&mp);
        drop(m);
        n
    };
    let wide = numbers(&[]);
    assert!(
        wide.values().any(|&i| i > u32::MAX as u64),
        "without ino32_t a layer's filesystem index sits above bit 32: {wide:?}"
    );
    let narrow = numbers(&["-o", "ino32_t"]);
    assert_eq!(narrow.len(), wide.len());
    assert!(
        narrow.values().all(|&i| i <= u32::MAX as u64),
        "ino32_t: {narrow:?}"
    );
    let distinct: std::collections::BTreeSet<_> = narrow.values().collect();
    assert_eq!(distinct.len(), narrow.len(), "unique: {narrow:?}");
    assert_eq!(
        numbers(&["-o", "ino32_t"]),
        narrow,
        "the same after a remount"
    );
}
