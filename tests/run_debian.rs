//! End to end, rootless: a `debootstrap --variant=minbase bookworm` base layer, `apt-get
//! install hello` in a `layerfs run` as an unprivileged user, then the base plus the upper
//! that run left as two lowers, and `hello` from the new stack.
//!
//! The base is downloaded once and cached in /var/tmp (`LAYERFS_TEST_CACHE`); the test needs
//! the Debian mirror named in the host's apt sources (or `LAYERFS_DEBIAN_MIRROR`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use testkit::debian::{cache_dir, debian_base, world_traversable};
use testkit::{require_root, show, BIN};

/// Host id for image id `id` under the rootless map: 0 -> the user, n -> start + n - 1.
fn shift(id: u32, own: u32, start: u32) -> u32 {
    if id == 0 {
        own
    } else {
        start + id - 1
    }
}

/// The first subordinate range of `name` in `file`.
fn subordinate_start(file: &str, name: &str) -> u32 {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .and_then(|rest| rest.split(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {file} entry for {name}"))
}

/// Changes the owner of every entry under `dir` (never following symlinks) the way rootless
/// podman stores an image's layers: image root is the user, the rest the subordinate range.
fn chown_tree(dir: &Path, uid: u32, gid: u32, subuid: u32, subgid: u32) {
    let md = std::fs::symlink_metadata(dir).unwrap();
    lchown(
        dir,
        shift(md.uid(), uid, subuid),
        shift(md.gid(), gid, subgid),
    );
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            chown_tree(&p, uid, gid, subuid, subgid);
        } else {
            let md = std::fs::symlink_metadata(&p).unwrap();
            lchown(
                &p,
                shift(md.uid(), uid, subuid),
                shift(md.gid(), gid, subgid),
            );
        }
    }
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    // chown(2) clears set-id bits; put the mode back (lchown on a symlink keeps it).
    let mode = std::fs::symlink_metadata(p).unwrap().mode();
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
    if mode & 0o170000 != 0o120000 && mode & 0o6000 != 0 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode & 0o7777)).unwrap();
    }
}

/// The base, owned as rootless podman would store it for `uid` (cached per user and range).
fn base_for(uid: u32, gid: u32) -> PathBuf {
    let (subuid, subgid) = (
        subordinate_start("/etc/subuid", "layerfs-test"),
        subordinate_start("/etc/subgid", "layerfs-test"),
    );
    let name = format!("bookworm-minbase-{uid}-{gid}-{subuid}-{subgid}");
    let shifted = cache_dir().join(&name);
    let done = cache_dir().join(format!("{name}.done"));
    if done.exists() {
        return shifted;
    }
    let base = debian_base();
    let _ = std::fs::remove_dir_all(&shifted);
    let ok = Command::new("cp")
        .args([OsStr::new("-a"), OsStr::new("--reflink=auto")])
        .arg(&base)
        .arg(&shifted)
        .status()
        .unwrap()
        .success();
    assert!(ok, "copying the base");
    chown_tree(&shifted, uid, gid, subuid, subgid);
    std::fs::write(&done, "").unwrap();
    shifted
}

/// `layerfs run` as `uid:gid` (rootless by default), from a copy of the binary anyone can run.
fn run_as(uid: u32, gid: u32, dir: &Path, args: &[&str]) -> Output {
    let bin = dir.join("layerfs");
    if !bin.exists() {
        std::fs::copy(BIN, &bin).unwrap();
    }
    Command::new("setpriv")
        .args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
        .arg("--init-groups")
        .arg(&bin)
        .arg("run")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn rootless_apt_get_install_then_the_upper_as_a_new_layer() {
    if !require_root() {
        return;
    }
    let _fuse = testkit::DevFuseOpen::new();
    let (uid, gid) = testkit::test_user();
    let base = base_for(uid, gid);
    assert!(!base.join("usr/bin/hello").exists());

    let t = tempfile::Builder::new()
        .prefix("layerfs-debian-")
        .tempdir_in(cache_dir())
        .unwrap();
    world_traversable(t.path());
    let (upper, work) = (t.path().join("upper"), t.path().join("work"));
    for d in [&upper, &work] {
        std::fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(uid), Some(gid)).unwrap();
    }
    let opt = format!(
        "lowerdir={},upperdir={},workdir={}",
        base.display(),
        upper.display(),
        work.display()
    );
    let o = run_as(
        uid,
        gid,
        t.path(),
        &[
            "-o",
            &opt,
            "--env",
            "DEBIAN_FRONTEND=noninteractive",
            "--",
            "sh",
            "-c",
            "apt-get update -q && apt-get install -y -q --no-install-recommends hello && hello",
        ],
    );
    assert!(o.status.success(), "apt-get in layerfs run: {}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Hello, world!"),
        "{}",
        show(&o)
    );
    // The install went to the upper; the base is untouched.
    assert!(upper.join("usr/bin/hello").is_file());
    assert!(!base.join("usr/bin/hello").exists());
    let status = std::fs::read(upper.join("var/lib/dpkg/status")).unwrap();
    assert!(
        status
            .windows(b"Package: hello\n".len())
            .any(|w| w == b"Package: hello\n"),
        "the upper's dpkg status lists hello"
    );
    // Owned as the user namespace wrote it: image root is the user on the host.
    assert_eq!(
        std::fs::metadata(upper.join("usr/bin/hello"))
            .unwrap()
            .uid(),
        uid
    );
    assert!(
        std::fs::read_dir(&work)
            .unwrap()
            .flatten()
            .all(|e| e.file_name().as_bytes() == b"work"),
        "workdir debris"
    );

    // The upper as a layer of its own, over the base: `hello` runs from the new stack.
    let two = format!("lowerdir={}:{}", upper.display(), base.display());
    let o = run_as(
        uid,
        gid,
        t.path(),
        &[
            "-o",
            &two,
            "--",
            "sh",
            "-c",
            "hello && dpkg -s hello | grep Status",
        ],
    );
    assert!(
        o.status.success(),
        "hello from the two-layer stack: {}",
        show(&o)
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "Hello, world!\nStatus: install ok installed\n",
        "{}",
        show(&o)
    );

    // The layer means the same to the kernel: overlayfs (user.overlay.* marks, as written in
    // the user namespace) over the same two lowers runs the same hello.
    let mnt = t.path().join("kernel");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("{two},userxattr"))
        .arg(&mnt)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount -t overlay of the upper and the base");
    let o = Command::new("chroot")
        .arg(&mnt)
        .args(["sh", "-c", "hello && dpkg -s hello | grep Status"])
        .output()
        .unwrap();
    let _ = Command::new("umount").arg(&mnt).status();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "Hello, world!\nStatus: install ok installed\n",
        "kernel overlayfs: {}",
        show(&o)
    );
}
