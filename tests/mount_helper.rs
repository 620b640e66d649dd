//! layerfs under mount(8): `mount -t fuse.layerfs`, fstab lines, mount.fuse3's
//! `PROGRAM#SOURCE` form, and the generic mount flags (`nosuid`, `nodev`, `noexec`, `ro`,
//! `noatime`) honoured as the kernel's flags of the mount.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::{mount_type, ok, require_root, Layerfs, BIN};

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run a command")
}

/// The line of `findmnt -t fuse.layerfs` for `mp`: (source, options).
fn findmnt(mp: &Path) -> Option<(String, String)> {
    let o = run(Command::new("findmnt")
        .args([
            "-t",
            "fuse.layerfs",
            "-n",
            "-o",
            "SOURCE,OPTIONS",
            "--mountpoint",
        ])
        .arg(mp));
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let (src, opts) = out.split_once(char::is_whitespace)?;
    Some((src.to_string(), opts.trim().to_string()))
}

fn unmount(mp: &Path) {
    ok(run(Command::new("umount").arg(mp)), "umount");
    assert_eq!(mount_type(mp), None, "still mounted");
}

/// Unmounts (detaching if need be) whatever is left at the path when dropped.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if mount_type(&self.0).is_some() {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// `/sbin/mount.fuse.layerfs` pointing at a copy of the binary, removed when dropped;
/// an exclusive lock keeps concurrent test runs from removing each other's.
struct Helper {
    lock: fs::File,
}

const HELPER: &str = "/sbin/mount.fuse.layerfs";

impl Helper {
    fn install(bin: &Path) -> Helper {
        let lock = fs::File::create("/run/lock/layerfs-test-mount-helper.lock").unwrap();
        // SAFETY: flock on an fd we own; blocks until the other holder is done.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        let _ = fs::remove_file(HELPER);
        std::os::unix::fs::symlink(bin, HELPER).unwrap();
        Helper { lock }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = fs::remove_file(HELPER);
        // SAFETY: as above.
        unsafe { libc::flock(self.lock.as_raw_fd(), libc::LOCK_UN) };
    }
}

struct Setup {
    _t: tempfile::TempDir,
    base: PathBuf,
    lower: PathBuf,
    bin: PathBuf,
}

fn setup() -> Setup {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().to_path_buf();
    let lower = base.join("lower");
    fs::create_dir_all(lower.join("etc")).unwrap();
    fs::write(lower.join("etc/motd"), "from the lower\n").unwrap();
    // mount.fuse3 and mount(8) exec it by absolute path: a copy outside target/.
    let bin = base.join("layerfs");
    fs::copy(BIN, &bin).unwrap();
    Setup {
        _t: t,
        base,
        lower,
        bin,
    }
}

#[test]
fn mount_t_fuse_layerfs_and_an_fstab_line_mount_and_unmount() {
    if !require_root() {
        return;
    }
    let s = setup();
    let (upper, work, mp) = (s.base.join("u"), s.base.join("w"), s.base.join("mnt"));
    for d in [&upper, &work, &mp] {
        fs::create_dir(d).unwrap();
    }
    let _cleanup = Cleanup(mp.clone());
    let _helper = Helper::install(&s.bin);

    // mount -t fuse.layerfs, with the options fstab and systemd units carry.
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},nosuid,nofail,_netdev,x-systemd.automount,defaults",
        s.lower.display(),
        upper.display(),
        work.display()
    );
    let o = run(Command::new("mount")
        .args(["-t", "fuse.layerfs", "-o", &opts, "layerfs"])
        .arg(&mp));
    ok(&o, "mount -t fuse.layerfs");
    let (src, mopts) = findmnt(&mp).expect("findmnt -t fuse.layerfs finds the mount");
    assert_eq!(src, "layerfs");
    assert!(mopts.split(',').any(|o| o == "nosuid"), "{mopts}");
    assert!(mopts.split(',').any(|o| o == "rw"), "{mopts}");
    assert_eq!(
        fs::read_to_string(mp.join("etc/motd")).unwrap(),
        "from the lower\n"
    );
    fs::write(mp.join("new"), "x").unwrap();
    unmount(&mp);
    assert!(upper.join("new").exists());

    // An fstab line, mounted by its mount point (mount -T FSTAB MP).
    let fstab = s.base.join("fstab");
    fs::write(
        &fstab,
        format!(
            "# test fstab\nimage-root {} fuse.layerfs lowerdir={},noatime,nodev,nofail,x-systemd.requires=local-fs.target 0 0\n",
            mp.display(),
            s.lower.display()
        ),
    )
    .unwrap();
    let o = run(Command::new("mount").arg("-T").arg(&fstab).arg(&mp));
    ok(&o, "mount -T fstab");
    let (src, mopts) = findmnt(&mp).expect("findmnt -t fuse.layerfs finds the fstab mount");
    assert_eq!(src, "image-root");
    for flag in ["ro", "noatime", "nodev"] {
        assert!(mopts.split(',').any(|o| o == flag), "{flag} in {mopts}");
    }
    assert!(mp.join("etc/motd").exists());
    unmount(&mp);
}

#[test]
fn mount_fuse3_runs_layerfs_in_the_program_hash_source_form() {
    if !require_root() {
        return;
    }
    let s = setup();
    let mp = s.base.join("mnt");
    fs::create_dir(&mp).unwrap();
    let _cleanup = Cleanup(mp.clone());
    // mount.fuse3 runs `PROGRAM SOURCE MOUNTPOINT -o rw,...,dev,suid`.
    let o = run(Command::new("mount")
        .args(["-t", "fuse", "-o"])
        .arg(format!("lowerdir={}", s.lower.display()))
        .arg(format!("{}#stack-a", s.bin.display()))
        .arg(&mp));
    ok(&o, "mount -t fuse PROGRAM#SOURCE");
    let (src, _) = findmnt(&mp).expect("findmnt -t fuse.layerfs");
    assert_eq!(src, "stack-a");
    assert!(mp.join("etc/motd").exists());
    unmount(&mp);
}

/// Runs `path` as the unprivileged user nobody; its stdout.
fn as_nobody(path: &Path) -> Output {
    run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(path))
}

#[test]
fn generic_flags_nosuid_nodev_noexec_ro_are_the_mounts_flags() {
    if !require_root() {
        return;
    }
    let s = setup();
    fs::set_permissions(&s.base, fs::Permissions::from_mode(0o755)).unwrap();
    // A set-uid-root `id`: it prints euid=0 when the set-uid bit takes effect.
    let bin = s.lower.join("bin");
    fs::create_dir(&bin).unwrap();
    fs::copy("/usr/bin/id", bin.join("id")).unwrap();
    fs::set_permissions(bin.join("id"), fs::Permissions::from_mode(0o4755)).unwrap();
    let o = run(Command::new("mknod")
        .arg(s.lower.join("null"))
        .args(["c", "1", "3"]));
    ok(&o, "mknod");
    fs::set_permissions(s.lower.join("null"), fs::Permissions::from_mode(0o666)).unwrap();
    let lowers = [s.lower.clone()];

    // Default as root: set-uid and devices work, as on kernel overlayfs.
    {
        let m = Layerfs::mount(&lowers, &s.base.join("plain"));
        let out = as_nobody(&m.path("bin/id"));
        ok(&out, "id");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("euid=0"),
            "set-uid works without nosuid: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(fs::File::open(m.path("null")).is_ok());
    }
    // nosuid: the program runs without privilege.
    {
        let m = Layerfs::mount_with(&lowers, &s.base.join("nosuid"), &["-o", "nosuid"]);
        let out = as_nobody(&m.path("bin/id"));
        ok(&out, "id");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("euid=0"), "nosuid: {text}");
        assert!(text.starts_with("uid=65534"), "{text}");
    }
    // nodev: the device cannot be opened; noexec: nothing runs.
    {
        let m = Layerfs::mount_with(&lowers, &s.base.join("nodev"), &["-o", "nodev,noexec"]);
        let e = fs::File::open(m.path("null")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "nodev");
        let e = Command::new(m.path("bin/id")).output().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "noexec");
    }
    // ro with an upper: a read-only mount, the upper untouched.
    {
        let (u, w) = (s.base.join("u"), s.base.join("w"));
        fs::create_dir(&u).unwrap();
        fs::create_dir(&w).unwrap();
        let rw = format!("upperdir={},workdir={},ro", u.display(), w.display());
        let m = Layerfs::mount_with(&lowers, &s.base.join("ro"), &["-o", &rw]);
        let e = fs::write(m.path("new"), "x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        let e = fs::remove_file(m.path("etc/motd")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        let e = Command::new("chmod")
            .arg("700")
            .arg(m.path("etc"))
            .output()
            .unwrap();
        assert!(!e.status.success());
        assert_eq!(fs::read_dir(&u).unwrap().count(), 0, "upper written");
        assert_eq!(
            fs::metadata(s.lower.join("etc")).unwrap().mode() & 0o777,
            0o755
        );
    }
}
