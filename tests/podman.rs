//! podman with layerfs as its overlay `mount_program`, end to end, as root and rootless:
//! an image imported offline (a busybox-static rootfs), runs with exit codes, a write, a
//! delete and a directory rename seen by `podman diff`, kept by `podman commit` and seen by
//! a run of the committed image, `--userns=keep-id` (image root shows as root, the user's
//! files are stored with the user's id), `podman image mount`, a saved and reloaded image
//! whose deletions podman applies as `.wh.` files in the layer it then mounts as the upper,
//! and nothing left mounted or running afterwards.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use testkit::{eventually, require_root, BIN};

/// One podman setup: its own configuration, storage and copy of layerfs, as root or as the
/// unprivileged test user.
struct Podman {
    base: PathBuf,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    _t: tempfile::TempDir,
}

impl Podman {
    fn new(user: Option<(u32, u32)>) -> Podman {
        Self::with_overlay_options(user, "")
    }

    /// A setup with `extra` lines in storage.conf's `[storage.options.overlay]`.
    fn with_overlay_options(user: Option<(u32, u32)>, extra: &str) -> Podman {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().to_path_buf();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        // podman execs it by absolute path; target/ may not be reachable by the user.
        let bin = base.join("layerfs");
        std::fs::copy(BIN, &bin).unwrap();
        for d in ["home", "xdg"] {
            std::fs::create_dir(base.join(d)).unwrap();
        }
        std::fs::set_permissions(base.join("xdg"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let g = base.join("graph");
        std::fs::write(
            base.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{g}\"\nrunroot = \"{r}\"\n\
                 rootless_storage_path = \"{g}\"\n[storage.options.overlay]\n\
                 mount_program = \"{b}\"\n{extra}",
                g = g.display(),
                r = base.join("run").display(),
                b = bin.display()
            ),
        )
        .unwrap();
        // What podman needs on this kind of machine (docs: CONTRACTS §4).
        std::fs::write(
            base.join("containers.conf"),
            "[containers]\nnetns = \"host\"\n\
             default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n",
        )
        .unwrap();
        write_image_tar(&base);
        if let Some((uid, gid)) = user {
            let ok = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(&base)
                .status()
                .unwrap()
                .success();
            assert!(ok);
        }
        Podman {
            base,
            bin,
            user,
            _t: t,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = match self.user {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
                    .args(["--init-groups", "podman"]);
                c
            }
            None => Command::new("podman"),
        };
        c.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", self.base.join("home"))
            .env("XDG_RUNTIME_DIR", self.base.join("xdg"))
            .env("CONTAINERS_CONF", self.base.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.base.join("storage.conf"))
            .env("LAYERFS_LOG_FILE", self.base.join("layerfs.log"))
            .args(args)
            .current_dir(&self.base)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .output()
            .expect("podman is installed (scripts/test installs it)")
    }

    /// Runs podman, fails the test on failure, returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "podman {args:?}: {}\nlayerfs log: {}",
            String::from_utf8_lossy(&o.stderr),
            std::fs::read_to_string(self.base.join("layerfs.log")).unwrap_or_default()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Processes running our copy of layerfs.
    fn daemons(&self) -> usize {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| std::fs::read_link(e.path().join("exe")).is_ok_and(|exe| exe == self.bin))
            .count()
    }

    /// Mounts of our storage: in our mount namespace, and (rootless) in podman's.
    fn mounts(&self) -> usize {
        let graph = self.base.join("graph").display().to_string();
        let mut n = count_lines(Path::new("/proc/self/mountinfo"), &graph);
        if let Ok(pid) = std::fs::read_to_string(self.base.join("xdg/libpod/tmp/pause.pid")) {
            n += count_lines(
                &Path::new("/proc").join(pid.trim()).join("mountinfo"),
                &graph,
            );
        }
        n
    }

    fn assert_nothing_left(&self) {
        eventually("no layerfs mount or daemon left by podman", || {
            self.mounts() == 0 && self.daemons() == 0
        });
        // Errors of ours, not fuser's "Failed to send FUSE reply" (the kernel dropped an
        // interrupted request, as on unmount).
        let log = std::fs::read_to_string(self.base.join("layerfs.log")).unwrap_or_default();
        let ours: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" ERROR ") && !l.contains("Failed to send FUSE reply"))
            .collect();
        assert!(ours.is_empty(), "layerfs logged errors:\n{ours:#?}");
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-af"]);
        let _ = self.run(&["image", "unmount", "-a"]);
        // Rootless podman keeps a pause process holding its user namespace.
        if let Ok(pid) = std::fs::read_to_string(self.base.join("xdg/libpod/tmp/pause.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: kill(2) on a pid podman wrote for this test's own storage.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn count_lines(file: &Path, needle: &str) -> usize {
    std::fs::read_to_string(file)
        .map(|s| s.lines().filter(|l| l.contains(needle)).count())
        .unwrap_or(0)
}

/// A busybox-static rootfs with /data/dir/f, /data/gone and a sticky /tmp, as a tarball.
fn write_image_tar(base: &Path) {
    let root = base.join("rootfs");
    for d in ["bin", "etc", "data/dir", "tmp", "srv"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox-static is installed (scripts/test installs it)");
    for app in ["sh", "ls", "cat", "echo", "mv", "rm", "id", "stat", "test"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("data/dir/f"), "base\n").unwrap();
    std::fs::write(root.join("data/gone"), "to delete\n").unwrap();
    let owned = root.join("srv/owned");
    std::fs::write(&owned, "owned\n").unwrap();
    std::fs::set_permissions(&owned, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&owned, Some(1000), Some(1001)).unwrap();
    let ok = Command::new("tar")
        .args(["-C"])
        .arg(&root)
        .arg("-cf")
        .arg(base.join("rootfs.tar"))
        .arg(".")
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Lines of `podman diff` / `podman image diff`, sorted.
fn changes(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

const CHANGE: &str = "echo new > /data/new && rm /data/gone && mv /data/dir /data/dir2";

/// The changes a container makes and a committed, saved and reloaded image shows.
fn assert_changes(diff: &str) {
    let got = changes(diff);
    for want in [
        "A /data/new",
        "A /data/dir2",
        "A /data/dir2/f",
        "D /data/gone",
        "D /data/dir",
    ] {
        assert!(got.iter().any(|l| l == want), "{want:?} not in {got:?}");
    }
    assert!(
        !got.iter().any(|l| l.contains(".wh.")),
        "a marker listed: {got:?}"
    );
}

#[test]
fn podman_runs_commits_and_mounts_images_on_layerfs_as_root() {
    if !require_root() {
        return;
    }
    let p = Podman::new(None);
    p.ok(&["import", "-q", "rootfs.tar", "lfs-base"]);
    let o = p.run(&[
        "run",
        "--rm",
        "lfs-base",
        "sh",
        "-c",
        "test -f /data/dir/f && exit 3",
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    p.ok(&["run", "--name", "c1", "lfs-base", "sh", "-c", CHANGE]);
    assert_changes(&p.ok(&["diff", "c1"]));
    p.ok(&["commit", "-q", "c1", "lfs-next"]);
    let out = p.ok(&[
        "run",
        "--rm",
        "lfs-next",
        "sh",
        "-c",
        "ls /data; cat /data/dir2/f",
    ]);
    assert_eq!(out, "dir2\nnew\nbase\n");

    // podman image mount: served by layerfs (type fuse.layerfs), read-only.
    let merged = PathBuf::from(p.ok(&["image", "mount", "lfs-next"]).trim());
    assert_eq!(
        testkit::mount_type(&merged).as_deref(),
        Some("fuse.layerfs"),
        "podman's mount is not a layerfs mount"
    );
    assert!(merged.join("data/new").exists() && !merged.join("data/gone").exists());
    p.ok(&["image", "unmount", "lfs-next"]);

    // Saved and loaded: podman applies the layer with `.wh.` files in its diff/ and then
    // mounts that diff/ as the upper to list its changes and to show it.
    p.ok(&["save", "-q", "-o", "next.tar", "lfs-next"]);
    p.ok(&["rm", "c1"]);
    p.ok(&["rmi", "lfs-next"]);
    p.ok(&["load", "-q", "-i", "next.tar"]);
    assert_changes(&p.ok(&["image", "diff", "lfs-next", "lfs-base"]));
    let out = p.ok(&["run", "--rm", "lfs-next", "ls", "-a", "/data"]);
    assert_eq!(out, ".\n..\ndir2\nnew\n");
    p.assert_nothing_left();
}

#[test]
fn rootless_podman_with_keep_id_shows_and_stores_the_right_owners() {
    if !require_root() {
        return;
    }
    let _fuse = testkit::DevFuseOpen::new();
    let (uid, gid) = testkit::test_user();
    let p = Podman::new(Some((uid, gid)));
    p.ok(&["import", "-q", "rootfs.tar", "lfs-base"]);
    let o = p.run(&["run", "--rm", "lfs-base", "sh", "-c", "exit 5"]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // keep-id: the user is itself inside, image root still shows as root, and what the
    // user writes is stored as the user's id in the image's id space.
    let script =
        "id -u; stat -c %u:%g /etc/passwd /data/dir; echo mine > /tmp/mine; stat -c %u /tmp/mine";
    let out = p.ok(&[
        "run",
        "--name",
        "k",
        "--userns=keep-id",
        "lfs-base",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(out, format!("{uid}\n0:0\n0:0\n{uid}\n"));
    let upper = p.ok(&["inspect", "-f", "{{.GraphDriver.Data.UpperDir}}", "k"]);
    let stored = p.ok(&[
        "unshare",
        "stat",
        "-c",
        "%u",
        &format!("{}/tmp/mine", upper.trim()),
    ]);
    assert_eq!(
        stored.trim(),
        uid.to_string(),
        "stored id, in podman's namespace"
    );
    // On the host: the user's id of the image is the (uid)th of its subordinate ids.
    let host = std::fs::metadata(format!("{}/tmp/mine", upper.trim())).unwrap();
    let sub_start: u32 = std::fs::read_to_string("/etc/subuid")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("layerfs-test:"))
        .and_then(|r| r.split(':').next()?.parse().ok())
        .unwrap();
    assert_eq!(host.uid(), sub_start + uid - 1);

    // The commit keeps the owner; a plain rootless run shows it as the image's uid.
    p.ok(&["commit", "-q", "k", "lfs-mine"]);
    let out = p.ok(&["run", "--rm", "lfs-mine", "stat", "-c", "%u", "/tmp/mine"]);
    assert_eq!(out.trim(), uid.to_string());

    // A write, a delete and a directory rename, rootless.
    p.ok(&["run", "--name", "c2", "lfs-base", "sh", "-c", CHANGE]);
    assert_changes(&p.ok(&["diff", "c2"]));

    // podman image mount, inside podman's namespace (rootless).
    let out = p.ok(&[
        "unshare",
        "sh",
        "-c",
        "m=$(podman image mount lfs-mine) && cat $m/tmp/mine && grep -c \" $m .* fuse.layerfs \" /proc/self/mountinfo; podman image unmount lfs-mine >/dev/null",
    ]);
    assert_eq!(out, "mine\n1\n");
    p.ok(&["rm", "k", "c2"]);
    p.assert_nothing_left();
}

/// containers/storage's `force_mask` (shared stores, NFS homes): every file of the store is
/// written mode 0700, owned by the store's owner, the real owner and mode kept in
/// `user.containers.override_stat`; podman mounts with `xattr_permissions=2`, and the
/// container sees the image's owners and modes and its own changes, also in a second run.
#[test]
fn podman_with_force_mask_shows_the_images_owners_and_modes() {
    if !require_root() {
        return;
    }
    let p = Podman::with_overlay_options(None, "force_mask = \"0700\"\n");
    p.ok(&["import", "-q", "rootfs.tar", "lfs-base"]);
    let show = "stat -c '%n %u:%g %a' /srv/owned /data/dir /data/dir/f /bin/busybox";
    let out = p.ok(&["run", "--name", "c1", "lfs-base", "sh", "-c",
        &format!("{show}; chown 7:8 /data/dir/f && chmod 604 /data/dir/f && echo n > /data/n && chmod 751 /data/n")]);
    assert_eq!(
        out,
        "/srv/owned 1000:1001 640\n/data/dir 0:0 755\n/data/dir/f 0:0 644\n/bin/busybox 0:0 755\n"
    );
    let out = p.ok(&["start", "-a", "c1"]);
    assert!(out.contains("/data/dir/f 7:8 604\n"), "{out}");
    let out = p.ok(&[
        "run",
        "--rm",
        "lfs-base",
        "stat",
        "-c",
        "%u:%g %a",
        "/srv/owned",
    ]);
    assert_eq!(out, "1000:1001 640\n");
    // The store: the mask and the store owner's ids on disk, the truth in the xattr.
    let f = walk_find(&p.base.join("graph/overlay"), "owned").expect("the layer's file");
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (0, 0, 0o700),
        "{}",
        f.display()
    );
    p.ok(&["rm", "c1"]);
    p.assert_nothing_left();
}

/// The first file named `name` under `dir`.
fn walk_find(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let t = e.file_type().ok()?;
        if t.is_file() && e.file_name() == name {
            return Some(p);
        }
        if t.is_dir() && !t.is_symlink() {
            if let Some(f) = walk_find(&p, name) {
                return Some(f);
            }
        }
    }
    None
}
