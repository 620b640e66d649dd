//! The tests' shared helpers (a crate, so each test binary links what it uses instead of
//! compiling every helper): the root check, real mounts (layerfs and kernel overlayfs) with
//! unmount in Drop, tree snapshots to compare merged views, random programs, podman's and
//! debootstrap's set-ups, and small images ([`imagekit`]).

pub mod core_ops;
pub mod debian;
pub mod faults;
pub mod imagekit;
pub mod ops;
pub mod pair;
pub mod podman;
pub mod registry;
pub mod registry_env;
pub mod rw;
pub mod shrunk;
pub mod side;
pub mod spec;
pub mod tree;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `layerfs` binary cargo built beside the test binaries (`target/<profile>/layerfs`;
/// the tests run from `target/<profile>/deps/`), as cargo's `CARGO_BIN_EXE_layerfs` names
/// it to the root package's tests. A value usable as a path, an argument or in `format!`.
#[derive(Debug, Clone, Copy)]
pub struct Bin;

pub const BIN: Bin = Bin;

impl Bin {
    pub fn path(self) -> &'static Path {
        static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        PATH.get_or_init(|| {
            let exe = std::env::current_exe().expect("the test binary's path");
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("target/<profile>/deps");
            let bin = dir.join("layerfs");
            assert!(
                bin.exists(),
                "{}: not built (cargo test builds it)",
                bin.display()
            );
            bin
        })
    }
}

impl AsRef<Path> for Bin {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

impl AsRef<std::ffi::OsStr> for Bin {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path().as_os_str()
    }
}

impl std::fmt::Display for Bin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.path().display().fmt(f)
    }
}

/// True when mount tests can run. When not root they print SKIP (naming the test: libtest
/// runs each test on a thread of its name); with `LAYERFS_NO_SKIP=1` (set by `.ci/run`,
/// which is root) a skip is a failure instead.
pub fn require_root() -> bool {
    let current = std::thread::current();
    let test = current.name().unwrap_or("a test");
    // SAFETY: geteuid cannot fail and touches no memory.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("LAYERFS_NO_SKIP").is_some() {
        panic!("{test}: needs root to mount, and LAYERFS_NO_SKIP is set");
    }
    eprintln!("SKIP {test}: needs root to mount (set LAYERFS_NO_SKIP=1 to fail instead)");
    false
}

/// Polls `cond` until it holds, or fails the test after 15 s saying `what` never happened.
/// (Polling, never sleeping: the test goes on the moment the condition holds.)
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::yield_now();
    }
}

/// The filesystem type mounted exactly at `mp`, from /proc/self/mountinfo.
pub fn mount_type(mp: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    layerfs_base::sys::mountinfo::mount_type(&info, mp)
}

/// Polls /proc/self/mountinfo until `cond` holds for the mount at `mp`, or panics.
pub fn wait_mount(
    mp: &Path,
    mut cond: impl FnMut(Option<&str>) -> bool,
    mut alive: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if cond(mount_type(mp).as_deref()) {
            return;
        }
        assert!(alive(), "daemon exited before {} was mounted", mp.display());
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the mount at {}",
            mp.display()
        );
        std::thread::yield_now();
    }
}

fn lowerdir(lowers: &[PathBuf]) -> String {
    lowers
        .iter()
        .map(|p| {
            p.to_string_lossy()
                .replace('\\', "\\\\")
                .replace(':', "\\:")
                .replace(',', "\\,")
        })
        .collect::<Vec<_>>()
        .join(":")
}

/// A layerfs mount served by a foreground daemon; unmounted and reaped in Drop.
pub struct Layerfs {
    pub mp: PathBuf,
    child: Option<Child>,
    /// The daemon's `ERROR` log lines so far (its stderr is echoed to the test's).
    errors: Arc<Mutex<Vec<String>>>,
}

impl Layerfs {
    pub fn mount(lowers: &[PathBuf], mp: &Path) -> Layerfs {
        Self::mount_with(lowers, mp, &[])
    }

    pub fn mount_with(lowers: &[PathBuf], mp: &Path, extra: &[&str]) -> Layerfs {
        Self::mount_with_env(lowers, mp, extra, &[])
    }

    /// `mount_with`, the daemon run with `env` added to its environment.
    pub fn mount_with_env(
        lowers: &[PathBuf],
        mp: &Path,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> Layerfs {
        Self::mount_via(&[], lowers, mp, extra, env)
    }

    /// `mount_with_env`, the daemon started through the command `wrapper` (say
    /// `unshare --pid --fork`), which must run it in this mount namespace.
    pub fn mount_via(
        wrapper: &[&str],
        lowers: &[PathBuf],
        mp: &Path,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> Layerfs {
        std::fs::create_dir_all(mp).unwrap();
        let mp = std::fs::canonicalize(mp).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        // LAYERFS_TEST_IO_URING=1: every daemon serves over FUSE-over-io_uring (scripts/test
        // runs some suites so, with the kernel's enable_uring on).
        if std::env::var_os("LAYERFS_TEST_IO_URING").is_some() {
            cmd.args(["-o", "io_uring"]);
        }
        let mut child = cmd
            .envs(env.iter().copied())
            .arg("-f")
            .arg("-o")
            .arg(format!("lowerdir={}", lowerdir(lowers)))
            .args(extra)
            .arg(&mp)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn layerfs");
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let seen = errors.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // eprintln! goes to the harness's capture; a raw write shows it as before.
                let _ = writeln!(std::io::stderr().lock(), "{line}");
                if line.contains(" ERROR ") {
                    seen.lock().unwrap().push(line);
                }
            }
        });
        let mut m = Layerfs {
            mp,
            child: Some(child),
            errors,
        };
        // If this panics, Drop still reaps the daemon.
        let child = m.child.as_mut().unwrap();
        wait_mount(
            &m.mp,
            |t| t.is_some_and(|t| t.starts_with("fuse")),
            || matches!(child.try_wait(), Ok(None)),
        );
        m
    }

    /// A writable mount: `lowers` under `upper`, copies built in `work`.
    pub fn mount_rw(lowers: &[PathBuf], upper: &Path, work: &Path, mp: &Path) -> Layerfs {
        let rw = format!("upperdir={},workdir={}", upper.display(), work.display());
        Self::mount_with(lowers, mp, &["-o", &rw])
    }

    /// A writable mount whose daemon writes its request counts per opcode to `counts` when
    /// it exits (`LAYERFS_REQUEST_COUNTS`); read them with [`request_counts`].
    pub fn mount_rw_counted(
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        mp: &Path,
        counts: &Path,
    ) -> Layerfs {
        let rw = format!("upperdir={},workdir={}", upper.display(), work.display());
        let env = [("LAYERFS_REQUEST_COUNTS", counts)];
        Self::mount_with_env(lowers, mp, &["-o", &rw], &env)
    }

    /// Kills the daemon with SIGKILL (the mount stays, dead, until Drop detaches it).
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The daemon's process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mp.join(rel)
    }

    /// The daemon's `ERROR` log lines so far.
    pub fn errors_logged(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// Fails the test if the daemon logged an error: every failure an application can
    /// cause is an ordinary errno, never a logged bug. (fuser's "Failed to send FUSE
    /// reply" is not ours: the kernel dropped an interrupted request.)
    pub fn assert_no_errors_logged(&self) {
        let errors = self.errors.lock().unwrap();
        let ours: Vec<_> = errors
            .iter()
            .filter(|l| !l.contains("Failed to send FUSE reply"))
            .collect();
        assert!(ours.is_empty(), "the daemon logged errors:\n{ours:#?}");
    }
}

impl Drop for Layerfs {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.mp.as_os_str().as_encoded_bytes()).unwrap();
        if mount_type(&self.mp).is_some_and(|t| t.starts_with("fuse")) {
            // SAFETY: `c` is NUL-terminated.
            if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
                // SAFETY: as above; detach if busy so nothing is left behind.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::yield_now();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// FUSE-over-io_uring switched on or off in the kernel (`enable_uring`, a parameter of the
/// whole machine) while held, restored in Drop. One holder at a time in a test process. It
/// decides the transport of the mounts whose INIT happens meanwhile (layerfs's default,
/// `io_uring=auto`, takes the rings where offered), not of live ones: keep the window short.
pub struct EnableUring {
    was: String,
    _one: std::sync::MutexGuard<'static, ()>,
}

const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

impl EnableUring {
    pub fn set(on: bool) -> EnableUring {
        static ONE: Mutex<()> = Mutex::new(());
        let one = ONE.lock().unwrap_or_else(|e| e.into_inner());
        let was = std::fs::read_to_string(ENABLE_URING).unwrap_or_else(|e| {
            panic!("{ENABLE_URING}: {e} (FUSE-over-io_uring needs kernel 6.14 with CONFIG_FUSE_IO_URING)")
        });
        std::fs::write(ENABLE_URING, if on { "1" } else { "0" }).unwrap();
        EnableUring {
            was: was.trim().to_string(),
            _one: one,
        }
    }
}

impl Drop for EnableUring {
    fn drop(&mut self) {
        let was = if self.was == "Y" || self.was == "1" {
            "1"
        } else {
            "0"
        };
        if let Err(e) = std::fs::write(ENABLE_URING, was) {
            eprintln!("restoring {ENABLE_URING} to {was}: {e}");
        }
    }
}

/// The counts a daemon mounted with [`Layerfs::mount_rw_counted`] wrote when it exited
/// (after its `Layerfs` was dropped): opcode -> requests.
pub fn request_counts(file: &Path) -> std::collections::BTreeMap<String, u64> {
    let text = std::fs::read_to_string(file).expect("the daemon wrote no request counts");
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(op, n)| (op.to_string(), n.parse().unwrap()))
        .collect()
}

/// A kernel overlayfs mount of the same lowers; unmounted in Drop.
pub struct Kernel {
    pub mp: PathBuf,
    _spare: Option<tempfile::TempDir>,
}

impl Kernel {
    pub fn mount(lowers: &[PathBuf], mp: &Path) -> Kernel {
        std::fs::create_dir_all(mp).unwrap();
        let mp = std::fs::canonicalize(mp).unwrap();
        let mut lowers = lowers.to_vec();
        // Without an upper the kernel wants two lowers; an empty bottom layer changes nothing.
        let spare = if lowers.len() < 2 {
            let t = tempfile::tempdir().unwrap();
            lowers.push(t.path().to_path_buf());
            Some(t)
        } else {
            None
        };
        overlay_mount(&format!("lowerdir={}", lowerdir(&lowers)), &mp);
        Kernel { mp, _spare: spare }
    }

    /// A writable kernel overlayfs mount (lowers, upper, workdir); unmounted in Drop.
    pub fn mount_rw(lowers: &[PathBuf], upper: &Path, work: &Path, mp: &Path) -> Kernel {
        Self::mount_rw_with(lowers, upper, work, mp, "")
    }

    /// `mount_rw` with more options (`extra` starts with a comma, e.g. ",redirect_dir=on").
    pub fn mount_rw_with(
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        mp: &Path,
        extra: &str,
    ) -> Kernel {
        std::fs::create_dir_all(mp).unwrap();
        let mp = std::fs::canonicalize(mp).unwrap();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}{extra}",
            lowerdir(lowers),
            upper.display(),
            work.display()
        );
        overlay_mount(&opts, &mp);
        Kernel { mp, _spare: None }
    }
}

/// `mount -t overlay overlay -o OPTS MP`, or the test fails with mount's message.
fn overlay_mount(opts: &str, mp: &Path) {
    let out = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", opts])
        .arg(mp)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "kernel overlay mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.mp.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is NUL-terminated.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Runs the layerfs binary to completion.
pub fn run_layerfs(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run layerfs")
}

/// Makes /dev/fuse usable by everyone (Debian's usual default), or sets another mode, while
/// alive.
pub struct DevFuseOpen(u32);

impl DevFuseOpen {
    // A guard that changes the machine while alive: `Default` would hide that it does.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self::with_mode(0o666)
    }

    /// Sets /dev/fuse to `mode` until dropped.
    pub fn with_mode(mode: u32) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let old = std::fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o7777;
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(mode)).unwrap();
        DevFuseOpen(old)
    }
}

impl Drop for DevFuseOpen {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(self.0));
    }
}

/// An unprivileged user created for the tests, with subordinate uid/gid ranges; (uid, gid).
pub fn test_user() -> (u32, u32) {
    const NAME: &str = "layerfs-test";
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, NAME]).output().ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        // Debian's useradd also allocates /etc/subuid and /etc/subgid ranges.
        let ok = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/usr/sbin/nologin", NAME])
            .status()
            .unwrap()
            .success();
        assert!(ok || id("-u").is_some(), "useradd {NAME} failed");
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let has = std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&format!("{NAME}:")));
        if !has {
            let flag = if file.ends_with("uid") {
                "--add-subuids"
            } else {
                "--add-subgids"
            };
            let ok = Command::new("usermod")
                .args([flag, "300000-365535", NAME])
                .status()
                .unwrap()
                .success();
            assert!(ok, "usermod {flag} for {NAME} failed");
        }
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// The stdout of a finished command, after asserting it succeeded (`what` names it; the
/// failure shows its status, stdout and stderr).
pub fn ok(o: impl std::borrow::Borrow<std::process::Output>, what: &str) -> String {
    let o = o.borrow();
    assert!(o.status.success(), "{what}: {}", show(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A finished command for a failure message: its status, stdout and stderr.
pub fn show(o: &std::process::Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `sha256:HEX` of `b`, as OCI digests are written.
pub fn sha(b: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{:x}", sha2::Sha256::digest(b))
}
