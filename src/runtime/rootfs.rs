//! Building a container's root inside its new mount namespace, then switching to it.
//!
//! The order matters and is the point of this module, so the steps go through the
//! [`RootOps`] trait: [`Host`] performs them, tests record them. Every target inside the
//! image is opened beneath the root without following symlinks and mounted on through its
//! `/proc/self/fd` path, so an image holding `proc -> /etc` cannot redirect a mount.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use layerfs_base::sys;

/// What the root needs beyond the image.
#[derive(Debug, Clone)]
pub struct RootSpec {
    pub hostname: String,
    /// Host files bound over the image's (when the image has them): resolv.conf, hosts.
    pub host_files: Vec<(PathBuf, String)>,
    /// User binds: host path, target relative to the root (created when the image lacks
    /// it), read-only.
    pub binds: Vec<(PathBuf, String, bool)>,
    /// Make the root read-only once built (`-o ro`).
    pub read_only: bool,
    /// Leave the image's /tmp as it is (no tmpfs): what the command writes there stays in
    /// the upper, as in a buildah or docker build step.
    pub keep_tmp: bool,
}

/// The primitive steps, with targets relative to the new root.
pub trait RootOps {
    /// True when `rel` is a directory in the new root (never through a symlink).
    fn is_dir(&mut self, rel: &str) -> bool;
    /// True when `rel` is a regular file in the new root (never through a symlink).
    fn is_file(&mut self, rel: &str) -> bool;
    /// Stops mount events from propagating back to the host (`/` recursively private).
    fn make_private(&mut self) -> io::Result<()>;
    fn mount(
        &mut self,
        source: &str,
        rel: &str,
        fstype: &str,
        flags: libc::c_ulong,
        data: &str,
    ) -> io::Result<()>;
    /// Binds the host path `host` onto `rel` (recursively with `recursive`).
    fn bind(&mut self, host: &str, rel: &str, recursive: bool) -> io::Result<()>;
    /// Makes the bind mount at `rel` read-only.
    fn remount_ro(&mut self, rel: &str) -> io::Result<()>;
    /// True when `rel` exists in the new root (never through a symlink).
    fn exists(&mut self, rel: &str) -> bool;
    fn mkdir(&mut self, rel: &str, mode: u32) -> io::Result<()>;
    /// Creates an empty file to bind a device onto.
    fn touch(&mut self, rel: &str) -> io::Result<()>;
    fn symlink(&mut self, target: &str, rel: &str) -> io::Result<()>;
    fn sethostname(&mut self, name: &str) -> io::Result<()>;
    /// `pivot_root` into the new root and detach the old one.
    fn pivot(&mut self) -> io::Result<()>;
}

/// Why a root could not be built; the runtime reports it and exits 125.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("/{0} in the image is not a directory, so nothing can be mounted there")]
    NotDir(String),
    #[error("/{0} in the image is a directory: a file cannot be bound onto it")]
    NotFile(String),
    #[error("cannot create the mount point /{rel} in the container's upper: {source}")]
    MountPoint { rel: String, source: io::Error },
    #[error("{step}: {source}")]
    Step { step: String, source: io::Error },
}

const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// Builds the root and switches to it. Call inside the new mount (and pid) namespace.
pub fn build(ops: &mut dyn RootOps, spec: &RootSpec) -> Result<(), RootError> {
    let step = |what: &str| {
        let what = what.to_string();
        move |source| RootError::Step { step: what, source }
    };
    // Nothing below may leak back into the host's mount table.
    ops.make_private().map_err(step("making / private"))?;
    // Mount points the image lacks are made in the run's upper, as runc makes them in the
    // container's writable layer (an image may hold nothing but /bin).
    for (d, mode) in [
        ("proc", 0o555),
        ("dev", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
    ] {
        ensure_dir(ops, d, mode)?;
    }
    // /proc of the container's own pid namespace (we are its pid 1 or its child).
    ops.mount("proc", "proc", "proc", NOSUID_NODEV_NOEXEC, "")
        .map_err(step("mounting /proc"))?;
    // /dev: a fresh tmpfs with the host's harmless devices bound in, a private devpts.
    ops.mount(
        "tmpfs",
        "dev",
        "tmpfs",
        libc::MS_NOSUID,
        "mode=755,size=65536k",
    )
    .map_err(step("mounting /dev"))?;
    for dev in DEVICES {
        let rel = format!("dev/{dev}");
        ops.touch(&rel).map_err(step(&format!("creating /{rel}")))?;
        ops.bind(&format!("/dev/{dev}"), &rel, false)
            .map_err(step(&format!("binding /{rel}")))?;
    }
    ops.mkdir("dev/pts", 0o755)
        .map_err(step("creating /dev/pts"))?;
    ops.mount(
        "devpts",
        "dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )
    .map_err(step("mounting /dev/pts"))?;
    ops.symlink("pts/ptmx", "dev/ptmx")
        .map_err(step("linking /dev/ptmx"))?;
    ops.mkdir("dev/shm", 0o1777)
        .map_err(step("creating /dev/shm"))?;
    ops.mount(
        "shm",
        "dev/shm",
        "tmpfs",
        NOSUID_NODEV_NOEXEC,
        "mode=1777,size=65536k",
    )
    .map_err(step("mounting /dev/shm"))?;
    for (target, name) in [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ] {
        ops.symlink(target, &format!("dev/{name}"))
            .map_err(step(&format!("linking /dev/{name}")))?;
    }
    ops.bind("/sys", "sys", true)
        .map_err(step("binding /sys"))?;
    if !spec.keep_tmp {
        ops.mount(
            "tmpfs",
            "tmp",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777",
        )
        .map_err(step("mounting /tmp"))?;
    }
    for (host, rel) in &spec.host_files {
        // A symlink in the image (resolv.conf -> ../run/...) is left alone: never followed.
        if host.exists() && (ops.is_file(rel) || !ops.exists(rel)) {
            ensure_file(ops, rel)?;
            ops.bind(&host.to_string_lossy(), rel, false)
                .map_err(step(&format!("binding /{rel}")))?;
        }
    }
    for (host, rel, ro) in &spec.binds {
        // A missing target takes the kind of what is bound onto it.
        if !ops.exists(rel) {
            if std::fs::metadata(host).is_ok_and(|m| m.is_dir()) {
                ensure_dir(ops, rel, 0o755)?;
            } else {
                ensure_file(ops, rel)?;
            }
        }
        ops.bind(&host.to_string_lossy(), rel, true)
            .map_err(step(&format!("binding {} on /{rel}", host.display())))?;
        if *ro {
            ops.remount_ro(rel)
                .map_err(step(&format!("making /{rel} read-only")))?;
        }
    }
    if spec.read_only {
        // runc's read-only root: made so once its mount points exist; the mounts on it
        // (/proc, /dev, /tmp, binds) keep their own flags.
        ops.remount_ro(".")
            .map_err(step("making the root read-only"))?;
    }
    ops.sethostname(&spec.hostname)
        .map_err(step("setting the hostname"))?;
    ops.pivot().map_err(step("switching to the new root"))?;
    Ok(())
}

/// Makes `rel` a directory (and its missing parents) where the image has nothing there.
fn ensure_dir(ops: &mut dyn RootOps, rel: &str, mode: u32) -> Result<(), RootError> {
    if ops.is_dir(rel) {
        return Ok(());
    }
    if ops.exists(rel) {
        return Err(RootError::NotDir(rel.to_string()));
    }
    if let Some((parent, _)) = rel.rsplit_once('/') {
        ensure_dir(ops, parent, 0o755)?;
    }
    ops.mkdir(rel, mode)
        .map_err(|source| RootError::MountPoint {
            rel: rel.to_string(),
            source,
        })
}

/// Makes `rel` an empty file (and its missing parent directories) where the image has
/// nothing there, to bind a file onto.
fn ensure_file(ops: &mut dyn RootOps, rel: &str) -> Result<(), RootError> {
    if ops.is_dir(rel) {
        return Err(RootError::NotFile(rel.to_string()));
    }
    if ops.exists(rel) {
        return Ok(());
    }
    if let Some((parent, _)) = rel.rsplit_once('/') {
        ensure_dir(ops, parent, 0o755)?;
    }
    ops.touch(rel).map_err(|source| RootError::MountPoint {
        rel: rel.to_string(),
        source,
    })
}

/// The real steps, on the root directory `root` (an fd of the merged mount).
pub struct Host {
    root: OwnedFd,
}

impl Host {
    pub fn new(root: OwnedFd) -> Host {
        Host { root }
    }

    fn open(&self, rel: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
        sys::open_beneath(self.root.as_fd(), &cstr(rel)?, flags)
    }

    fn parent_and_name<'a>(&self, rel: &'a str) -> io::Result<(OwnedFd, &'a str)> {
        let (dir, name) = rel.rsplit_once('/').unwrap_or((".", rel));
        Ok((self.open(dir, libc::O_PATH | libc::O_DIRECTORY)?, name))
    }

    fn kind(&self, rel: &str) -> Option<u32> {
        let fd = self.open(rel, libc::O_PATH).ok()?;
        Some(sys::fstat(fd.as_fd()).ok()?.st_mode & libc::S_IFMT)
    }
}

fn cstr(s: &str) -> io::Result<CString> {
    sys::cstr(s.as_bytes())
}

fn opt(s: &str) -> io::Result<Option<CString>> {
    if s.is_empty() {
        Ok(None)
    } else {
        cstr(s).map(Some)
    }
}

impl RootOps for Host {
    fn is_dir(&mut self, rel: &str) -> bool {
        self.kind(rel) == Some(libc::S_IFDIR)
    }

    fn is_file(&mut self, rel: &str) -> bool {
        self.kind(rel) == Some(libc::S_IFREG)
    }

    fn make_private(&mut self) -> io::Result<()> {
        sys::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)
    }

    fn mount(
        &mut self,
        source: &str,
        rel: &str,
        fstype: &str,
        flags: libc::c_ulong,
        data: &str,
    ) -> io::Result<()> {
        let target = self.open(rel, libc::O_PATH | libc::O_DIRECTORY)?;
        let (src, fs, data) = (cstr(source)?, cstr(fstype)?, opt(data)?);
        sys::mount(
            Some(&src),
            &sys::fd_target(target.as_fd()),
            Some(&fs),
            flags,
            data.as_deref(),
        )
    }

    fn bind(&mut self, host: &str, rel: &str, recursive: bool) -> io::Result<()> {
        let target = self.open(rel, libc::O_PATH)?;
        let flags = libc::MS_BIND | if recursive { libc::MS_REC } else { 0 };
        sys::mount(
            Some(&cstr(host)?),
            &sys::fd_target(target.as_fd()),
            None,
            flags,
            None,
        )
    }

    fn remount_ro(&mut self, rel: &str) -> io::Result<()> {
        let target = self.open(rel, libc::O_PATH)?;
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        sys::mount(None, &sys::fd_target(target.as_fd()), None, flags, None)
    }

    fn exists(&mut self, rel: &str) -> bool {
        self.kind(rel).is_some()
    }

    fn mkdir(&mut self, rel: &str, mode: u32) -> io::Result<()> {
        let (dir, name) = self.parent_and_name(rel)?;
        sys::mkdirat(dir.as_fd(), &cstr(name)?, mode)?;
        // mkdir applies the umask; the mode asked for (1777 for shm) must stand.
        sys::chmodat(dir.as_fd(), &cstr(name)?, mode)
    }

    fn touch(&mut self, rel: &str) -> io::Result<()> {
        let (dir, name) = self.parent_and_name(rel)?;
        // Mode 0755, as runc creates a file mount point (so a build step leaves the same
        // /etc/hosts placeholder in its layer as buildah's does).
        let fd = sys::create_excl(dir.as_fd(), &cstr(name)?, libc::O_WRONLY, 0o755)?;
        sys::fchmod(fd.as_fd(), 0o755)
    }

    fn symlink(&mut self, target: &str, rel: &str) -> io::Result<()> {
        let (dir, name) = self.parent_and_name(rel)?;
        sys::symlinkat(&cstr(target)?, dir.as_fd(), &cstr(name)?)
    }

    fn sethostname(&mut self, name: &str) -> io::Result<()> {
        sys::sethostname(name)
    }

    fn pivot(&mut self) -> io::Result<()> {
        // pivot_root(".", ".") stacks the old root on top of the new one; detaching it then
        // leaves only the new root (no directory for the old root is needed in the image).
        sys::fchdir(self.root.as_fd())?;
        sys::pivot_root(c".", c".")?;
        sys::umount(std::path::Path::new("."), libc::MNT_DETACH)?;
        sys::chdir(c"/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every step; `dirs`/`files` say what the image has.
    #[derive(Default)]
    struct Recorder {
        dirs: Vec<&'static str>,
        files: Vec<&'static str>,
        steps: Vec<String>,
    }

    impl RootOps for Recorder {
        fn is_dir(&mut self, rel: &str) -> bool {
            self.dirs.contains(&rel)
        }
        fn is_file(&mut self, rel: &str) -> bool {
            self.files.contains(&rel)
        }
        fn make_private(&mut self) -> io::Result<()> {
            self.steps.push("private /".into());
            Ok(())
        }
        fn mount(
            &mut self,
            _s: &str,
            rel: &str,
            fstype: &str,
            _f: libc::c_ulong,
            _d: &str,
        ) -> io::Result<()> {
            self.steps.push(format!("mount {fstype} {rel}"));
            Ok(())
        }
        fn bind(&mut self, host: &str, rel: &str, rec: bool) -> io::Result<()> {
            self.steps
                .push(format!("bind{} {host} {rel}", if rec { " -r" } else { "" }));
            Ok(())
        }
        fn remount_ro(&mut self, rel: &str) -> io::Result<()> {
            self.steps.push(format!("ro {rel}"));
            Ok(())
        }
        fn exists(&mut self, rel: &str) -> bool {
            self.dirs.contains(&rel) || self.files.contains(&rel)
        }
        fn mkdir(&mut self, rel: &str, _m: u32) -> io::Result<()> {
            self.steps.push(format!("mkdir {rel}"));
            self.dirs.push(rel.to_string().leak());
            Ok(())
        }
        fn touch(&mut self, rel: &str) -> io::Result<()> {
            self.steps.push(format!("touch {rel}"));
            self.files.push(rel.to_string().leak());
            Ok(())
        }
        fn symlink(&mut self, t: &str, rel: &str) -> io::Result<()> {
            self.steps.push(format!("symlink {rel} -> {t}"));
            Ok(())
        }
        fn sethostname(&mut self, n: &str) -> io::Result<()> {
            self.steps.push(format!("hostname {n}"));
            Ok(())
        }
        fn pivot(&mut self) -> io::Result<()> {
            self.steps.push("pivot".into());
            Ok(())
        }
    }

    fn spec() -> RootSpec {
        RootSpec {
            hostname: "box".into(),
            host_files: vec![("/etc/hosts".into(), "etc/hosts".into())],
            binds: vec![("/srv/data".into(), "data".into(), true)],
            read_only: false,
            keep_tmp: false,
        }
    }

    fn pos(r: &Recorder, step: &str) -> usize {
        r.steps
            .iter()
            .position(|s| s == step)
            .unwrap_or_else(|| panic!("no step {step:?} in {:?}", r.steps))
    }

    #[test]
    fn steps_run_in_a_safe_order() {
        let mut r = Recorder {
            dirs: vec!["proc", "dev", "sys", "tmp", "data"],
            files: vec!["etc/hosts"],
            ..Default::default()
        };
        build(&mut r, &spec()).unwrap();
        assert_eq!(r.steps[0], "private /", "nothing may propagate to the host");
        assert_eq!(r.steps.last().unwrap(), "pivot");
        assert!(pos(&r, "mount tmpfs dev") < pos(&r, "touch dev/null"));
        assert!(pos(&r, "touch dev/null") < pos(&r, "bind /dev/null dev/null"));
        assert!(pos(&r, "mkdir dev/pts") < pos(&r, "mount devpts dev/pts"));
        assert!(pos(&r, "mount proc proc") < pos(&r, "pivot"));
        assert!(r.steps.contains(&"bind -r /sys sys".to_string()));
        assert!(r.steps.contains(&"mount tmpfs tmp".to_string()));
        assert!(pos(&r, "hostname box") < pos(&r, "pivot"));
        assert!(pos(&r, "bind -r /srv/data data") < pos(&r, "ro data"));
        assert!(pos(&r, "ro data") < pos(&r, "pivot"));
        assert!(!r.steps.iter().any(|s| s == "ro ."));
        let mut r = Recorder::default();
        build(
            &mut r,
            &RootSpec {
                read_only: true,
                keep_tmp: false,
                ..spec()
            },
        )
        .unwrap();
        assert!(pos(&r, "mkdir proc") < pos(&r, "ro ."));
        assert!(pos(&r, "ro data") < pos(&r, "ro ."));
        assert!(pos(&r, "ro .") < pos(&r, "pivot"));
    }

    #[test]
    fn missing_mount_points_are_created_before_their_mounts() {
        let mut r = Recorder::default();
        let spec = RootSpec {
            binds: vec![
                ("/".into(), "mnt/host/root".into(), false),
                ("/etc/hostname".into(), "etc/name".into(), true),
            ],
            ..spec()
        };
        build(&mut r, &spec).unwrap();
        for (made, mounted) in [
            ("mkdir proc", "mount proc proc"),
            ("mkdir dev", "mount tmpfs dev"),
            ("mkdir sys", "bind -r /sys sys"),
            ("mkdir tmp", "mount tmpfs tmp"),
            ("touch etc/hosts", "bind /etc/hosts etc/hosts"),
            ("mkdir mnt/host/root", "bind -r / mnt/host/root"),
            ("touch etc/name", "bind -r /etc/hostname etc/name"),
        ] {
            assert!(pos(&r, made) < pos(&r, mounted), "{made} before {mounted}");
        }
        // Parents first, each once.
        assert!(pos(&r, "mkdir mnt") < pos(&r, "mkdir mnt/host"));
        assert!(pos(&r, "mkdir mnt/host") < pos(&r, "mkdir mnt/host/root"));
        assert!(pos(&r, "mkdir etc") < pos(&r, "touch etc/hosts"));
        assert_eq!(r.steps.iter().filter(|s| *s == "mkdir etc").count(), 1);
    }

    #[test]
    fn what_is_there_is_used_and_what_cannot_be_a_mount_point_is_reported() {
        let mut r = Recorder {
            dirs: vec!["proc", "dev", "sys", "tmp", "data", "etc"],
            files: vec!["etc/hosts"],
            ..Default::default()
        };
        build(&mut r, &spec()).unwrap();
        assert!(!r
            .steps
            .iter()
            .any(|s| s.starts_with("mkdir ") && !s.starts_with("mkdir dev/")));
        assert!(!r.steps.iter().any(|s| s == "touch etc/hosts"));
        // /proc is a file (or a symlink) in the image: refused before anything is mounted.
        let mut r = Recorder {
            dirs: vec!["dev"],
            files: vec!["proc"],
            ..Default::default()
        };
        let e = build(&mut r, &spec()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/proc in the image is not a directory, so nothing can be mounted there"
        );
        assert!(
            r.steps.iter().all(|s| s == "private /"),
            "nothing mounted before the check: {:?}",
            r.steps
        );
    }
}
