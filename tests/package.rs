//! The Debian package as a user gets it: `scripts/package --dev` builds it with cargo-deb
//! from the debug binary this test run already built, `dpkg -i` installs it, mount(8)
//! mounts through `mount -t fuse.layerfs` and an /etc/fstab line (removed again in Drop),
//! `man layerfs` reads the installed page, and `dpkg -r` leaves nothing behind.

mod common;

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{mount_type, require_root};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// What the package installs (besides the directories).
const FILES: &[&str] = &[
    "/usr/bin/layerfs",
    "/usr/sbin/mount.fuse.layerfs",
    "/usr/share/man/man1/layerfs.1.gz",
    "/usr/share/man/man1/layerfs-explore.1.gz",
    "/usr/share/man/man1/layerfs-mount.1.gz",
    "/usr/share/bash-completion/completions/layerfs",
    "/usr/share/zsh/vendor-completions/_layerfs",
    "/usr/share/fish/vendor_completions.d/layerfs.fish",
    "/usr/share/doc/layerfs/README.md",
    "/usr/share/doc/layerfs/LAYER-TOOLS.md",
];

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run a command")
}

fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `dpkg ARGS` under dpkg's frontend lock, as apt runs it: the lock is waited for (other
/// engineers' set-ups install packages on a shared machine), then dpkg is told it is held.
fn dpkg(args: &[&str]) -> Output {
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open("/var/lib/dpkg/lock-frontend")
        .unwrap();
    let fl = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    assert_eq!(
        // SAFETY: fcntl on an fd we own with a valid flock struct; blocks until apt / dpkg let go.
        unsafe { libc::fcntl(lock.as_raw_fd(), libc::F_SETLKW, &fl) },
        0
    );
    let o = run(Command::new("dpkg")
        .env("DPKG_FRONTEND_LOCKED", "1")
        .args(args));
    drop(lock);
    o
}

fn installed() -> bool {
    let o = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", "layerfs"]));
    String::from_utf8_lossy(&o.stdout).contains("install ok installed")
}

/// Holds the lock tests/mount_helper.rs takes around /sbin/mount.fuse.layerfs, removes the
/// package (if this test installed it), our /etc/fstab line, and any mount left, on drop.
struct Installed {
    _lock: fs::File,
    marker: String,
    mp: PathBuf,
    /// Whether /etc/fstab existed before (if not, it is removed again).
    had_fstab: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if mount_type(&self.mp).is_some() {
            let _ = Command::new("umount").arg("-l").arg(&self.mp).status();
        }
        remove_fstab_lines(&self.marker);
        if !self.had_fstab && fs::read("/etc/fstab").is_ok_and(|t| t.is_empty()) {
            let _ = fs::remove_file("/etc/fstab");
        }
        if installed() {
            let _ = dpkg(&["-r", "layerfs"]);
        }
    }
}

/// Removes the lines of /etc/fstab that carry `marker` (and only those: the file is
/// otherwise left byte for byte as it is).
fn remove_fstab_lines(marker: &str) {
    let Ok(text) = fs::read_to_string("/etc/fstab") else {
        return;
    };
    if !text.contains(marker) {
        return;
    }
    let kept: String = text
        .split_inclusive('\n')
        .filter(|l| !l.contains(marker))
        .collect();
    let tmp = format!("/etc/fstab.{marker}");
    fs::write(&tmp, kept).unwrap();
    fs::rename(&tmp, "/etc/fstab").unwrap();
}

fn findmnt_source(mp: &Path) -> String {
    let o = run(Command::new("findmnt")
        .args(["-t", "fuse.layerfs", "-n", "-o", "SOURCE", "--mountpoint"])
        .arg(mp));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn the_deb_installs_mounts_through_mount_and_fstab_has_man_pages_and_removes_cleanly() {
    if !require_root(
        "the_deb_installs_mounts_through_mount_and_fstab_has_man_pages_and_removes_cleanly",
    ) {
        return;
    }
    let lock = fs::File::create("/run/lock/layerfs-test-mount-helper.lock").unwrap();
    // SAFETY: flock on an fd we own; blocks until tests/mount_helper.rs is done with the path.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    assert!(
        !installed(),
        "the layerfs package is already installed here; this test installs and removes it"
    );
    let t = tempfile::tempdir().unwrap();
    let (lower, mp) = (t.path().join("lower"), t.path().join("mnt"));
    fs::create_dir_all(lower.join("etc")).unwrap();
    fs::write(lower.join("etc/motd"), "from the package test\n").unwrap();
    fs::create_dir(&mp).unwrap();
    let guard = Installed {
        _lock: lock,
        marker: format!("layerfs-package-test-{}", std::process::id()),
        mp: mp.clone(),
        had_fstab: Path::new("/etc/fstab").exists(),
    };

    // Build (cargo-deb on the debug binary) and install.
    let out = ok(
        &run(Command::new(Path::new(REPO).join("scripts/package")).arg("--dev")),
        "scripts/package --dev",
    );
    // cargo deb prints the package's path last.
    let deb = PathBuf::from(out.lines().last().unwrap_or_default().trim());
    assert!(
        deb.extension().is_some_and(|x| x == "deb") && deb.exists(),
        "no .deb named by scripts/package: {out}"
    );
    ok(&dpkg(&["-i", deb.to_str().unwrap()]), "dpkg -i");
    assert!(installed());
    let listed = ok(
        &run(Command::new("dpkg").args(["-L", "layerfs"])),
        "dpkg -L",
    );
    for f in FILES {
        assert!(listed.lines().any(|l| l == *f), "{f} not in dpkg -L");
        assert!(fs::symlink_metadata(f).is_ok(), "{f} not installed");
    }
    let helper = fs::canonicalize("/sbin/mount.fuse.layerfs").unwrap();
    assert_eq!(helper, fs::canonicalize("/usr/bin/layerfs").unwrap());
    let v = ok(
        &run(Command::new("layerfs").arg("--version")),
        "layerfs --version",
    );
    assert!(v.starts_with("layerfs "), "{v}");

    // The installed bash completion completes subcommands.
    let o = run(Command::new("bash").arg("-c").arg(
        "source /usr/share/bash-completion/completions/layerfs; COMP_WORDS=(layerfs exp); \
         COMP_CWORD=1; _layerfs layerfs exp layerfs; echo \"${COMPREPLY[@]}\"",
    ));
    assert_eq!(ok(&o, "bash completion").trim(), "explore");

    // man layerfs, and a subcommand's page.
    for (page, text) in [("layerfs", "explore"), ("layerfs-explore", "SOURCE")] {
        let o = run(Command::new("man")
            .arg(page)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100"));
        let out = ok(&o, &format!("man {page}"));
        assert!(out.contains(text), "man {page}: {out}");
    }

    // mount -t fuse.layerfs runs the installed helper.
    let o = run(Command::new("mount")
        .args(["-t", "fuse.layerfs", "-o"])
        .arg(format!("lowerdir={}", lower.display()))
        .arg("pkg-test")
        .arg(&mp));
    ok(&o, "mount -t fuse.layerfs");
    assert_eq!(findmnt_source(&mp), "pkg-test");
    assert_eq!(
        fs::read_to_string(mp.join("etc/motd")).unwrap(),
        "from the package test\n"
    );
    ok(&run(Command::new("umount").arg(&mp)), "umount");
    assert_eq!(mount_type(&mp), None);

    // An /etc/fstab line, mounted by its mount point; the line goes again in Drop.
    let line = format!(
        "pkg-fstab {} fuse.layerfs lowerdir={},noatime,nofail 0 0 # {}\n",
        mp.display(),
        lower.display(),
        guard.marker
    );
    let mut fstab = fs::read_to_string("/etc/fstab").unwrap_or_default();
    if !fstab.is_empty() && !fstab.ends_with('\n') {
        fstab.push('\n');
    }
    fstab.push_str(&line);
    let tmp = format!("/etc/fstab.{}", guard.marker);
    fs::write(&tmp, fstab).unwrap();
    fs::rename(&tmp, "/etc/fstab").unwrap();
    ok(
        &run(Command::new("mount").arg(&mp)),
        "mount MOUNTPOINT (fstab)",
    );
    assert_eq!(findmnt_source(&mp), "pkg-fstab");
    assert!(mp.join("etc/motd").exists());
    ok(&run(Command::new("umount").arg(&mp)), "umount");
    remove_fstab_lines(&guard.marker);
    assert!(!fs::read_to_string("/etc/fstab")
        .unwrap_or_default()
        .contains(&guard.marker));

    // dpkg -r: every file gone, the package unknown to dpkg.
    ok(&dpkg(&["-r", "layerfs"]), "dpkg -r");
    assert!(!installed());
    for f in FILES {
        assert!(fs::symlink_metadata(f).is_err(), "{f} left after dpkg -r");
    }
    assert!(!Path::new("/usr/share/doc/layerfs").exists());
    let o = run(Command::new("dpkg-query").args(["-W", "layerfs"]));
    assert!(!o.status.success(), "dpkg still knows layerfs after -r");
    drop(guard);
}
