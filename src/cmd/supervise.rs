//! `-o supervise`: a mount that outlives its daemon.
//!
//! The mount process becomes a small supervisor: it mounts, keeps every fd of the FUSE
//! connection (the mount's and one clone per worker thread) and the journal (a memfd:
//! `union/journal.rs`), and runs the serving daemon as a child: this binary again, exec'd
//! with the same arguments and those fds ([`Kept`], in `LAYERFS_SUPERVISED`). When the
//! daemon dies (SIGKILL, a crash) nothing of the connection closes: the requests it had
//! read stay with the kernel, and the supervisor starts a new daemon on the same fds, which
//! reads the journal, replays the INIT, and has the kernel send those requests again
//! (`FUSE_NOTIFY_RESEND`). `layerfs restart MNT` asks the daemon to stop at a request
//! boundary (SIGUSR2: requests in progress finish, later ones wait for the next daemon) and
//! starts the binary now on disk. `layerfs status MNT` asks the supervisor, through a unix
//! socket in a directory only its user can enter, named after the mount's device.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use layerfs_base::sys::{self, mountinfo};
use log::{error, info, warn};

use super::mount::{self, Connect, Plan};
use crate::MountArgs;

/// The environment variable that hands a daemon its fds.
const ENV: &str = "LAYERFS_SUPERVISED";

/// Daemons that die before they serve, in a row, after which the supervisor gives up.
const START_TRIES: u32 = 3;

/// What a daemon started by the supervisor inherits (`LAYERFS_SUPERVISED`).
pub struct Kept {
    fds: Vec<OwnedFd>,
    journal: OwnedFd,
    ready: OwnedFd,
    mountpoint: PathBuf,
    detached: bool,
}

impl Kept {
    /// The fds named in the environment, if this process is a supervised daemon.
    pub fn from_env() -> Result<Option<Kept>> {
        let Some(v) = std::env::var_os(ENV) else {
            return Ok(None);
        };
        // Not for anything this process starts.
        std::env::remove_var(ENV);
        let v = v.to_string_lossy().into_owned();
        let bad = || anyhow::anyhow!("{ENV}: malformed ({v:?})");
        let (head, mp) = v.split_once(";mp=").ok_or_else(bad)?;
        let mut k = (Vec::new(), None, None, false);
        for item in head.split(';') {
            let (key, val) = item.split_once('=').ok_or_else(bad)?;
            let fd = |s: &str| -> Result<OwnedFd> {
                let n = s.parse().map_err(|_| bad())?;
                sys::inherited_fd(n).with_context(|| format!("{ENV}: fd {n}"))
            };
            match key {
                "fds" => k.0 = val.split(',').map(fd).collect::<Result<_>>()?,
                "journal" => k.1 = Some(fd(val)?),
                "ready" => k.2 = Some(fd(val)?),
                "detached" => k.3 = val == "1",
                _ => return Err(bad()),
            }
        }
        let (fds, Some(journal), Some(ready), detached) = k else {
            return Err(bad());
        };
        for f in fds.iter().chain([&journal, &ready]) {
            sys::set_cloexec(f.as_fd(), true).context("FD_CLOEXEC")?;
        }
        Ok(Some(Kept {
            fds,
            journal,
            ready,
            mountpoint: mp.into(),
            detached,
        }))
    }
}

/// The daemon side: serves the kept connection, restarted or first.
pub fn serve(args: &MountArgs, kept: Kept) -> Result<()> {
    let Kept {
        fds,
        journal,
        ready,
        mountpoint,
        detached,
    } = kept;
    let planned = mount::prepare_at(args, Some(&mountpoint)).and_then(|mut plan| {
        let recovered = layerfs_mount::union::journal::install(std::fs::File::from(journal))
            .context("reading the journal")?;
        let init = recovered.blob.clone();
        if init.is_some() {
            info!(
                "restarted: {} node ids, {} open handles from the journal",
                recovered.nodes.len(),
                recovered.handles.len()
            );
            plan.recover_from(recovered);
        }
        Ok((plan, init))
    });
    let (plan, init) = match planned {
        Ok(p) => p,
        Err(e) => {
            let _ = write!(std::fs::File::from(ready), "{}", super::one_line(&e));
            return Err(e);
        }
    };
    let conn = Connection {
        fds,
        init,
        detached,
    };
    mount::serve_on(plan, Some(ready), Connect::Kept(conn))
}

/// A kept connection, for [`mount::serve_on`].
pub struct Connection {
    fds: Vec<OwnedFd>,
    init: Option<Vec<u8>>,
    detached: bool,
}

impl Connection {
    /// The first daemon on the connection (it answers the kernel's INIT).
    pub fn first(&self) -> bool {
        self.init.is_none()
    }

    /// The supervisor is a daemon (its stdio is gone).
    pub fn detached(&self) -> bool {
        self.detached
    }

    /// Serves `core` on the connection; the first daemon keeps the INIT in the journal.
    pub fn serve<C: layerfs_fuse::Core>(
        self,
        core: C,
        opts: &layerfs_fuse::SessionOptions,
    ) -> Result<(layerfs_fuse::Mounted, Arc<layerfs_fuse::Gate>)> {
        let first = self.first();
        let s = layerfs_fuse::serve_connection(core, self.fds, self.init, opts)
            .context("serving the kept connection")?;
        if first {
            layerfs_mount::union::journal::keep_blob(&s.init);
        }
        Ok((s.mounted, s.gate))
    }
}

/// What `layerfs status` shows, shared by the supervisor's threads.
#[derive(Debug, Default)]
struct State {
    /// The daemon now (started, or serving).
    pid: i32,
    /// The daemon serving, once it does.
    serving: Option<i32>,
    restarts: u64,
    /// A restart asked for (by `layerfs restart`) and when.
    asked: Option<Instant>,
    /// Bumped at each daemon started.
    generation: u64,
    /// Milliseconds from the old daemon's stop (asked or found dead) to the new one's
    /// serving, at the last restart.
    last_pause_ms: Option<f64>,
    gave_up: bool,
}

/// The supervisor: what it keeps and how it starts daemons.
struct Supervisor {
    exe: PathBuf,
    args: Vec<std::ffi::OsString>,
    cwd: PathBuf,
    mountpoint: PathBuf,
    device: String,
    fds: Vec<OwnedFd>,
    journal: OwnedFd,
    detached: bool,
    state: Mutex<State>,
    changed: Condvar,
}

/// The mount side: mounts `plan` and supervises its daemons (forking first unless
/// `foreground`).
pub fn start(plan: Plan, foreground: bool) -> Result<()> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let exe = std::env::current_exe().context("finding this program")?;
    // Single-threaded so far: nothing has spawned a thread before this fork.
    mount::daemonize("the supervisor", foreground, |report| {
        supervise(plan, report, cwd, exe)
    })
}

fn supervise(plan: Plan, report: Option<OwnedFd>, cwd: PathBuf, exe: PathBuf) -> Result<()> {
    let mut report = report.map(std::fs::File::from);
    let r = supervise_inner(plan, &mut report, cwd, exe);
    if let (Err(e), Some(mut rep)) = (&r, report) {
        let _ = write!(rep, "{}", super::one_line(e));
    }
    r
}

fn supervise_inner(
    plan: Plan,
    report: &mut Option<std::fs::File>,
    cwd: PathBuf,
    exe: PathBuf,
) -> Result<()> {
    let (opts, mountpoint) = plan.into_mount();
    let threads = opts.threads.max(1);
    // Listening before the mount exists, so that whoever sees the mount can ask at once:
    // named after its device once it has one.
    let pending = socket_dir()?.join(format!("pending-{}.sock", std::process::id()));
    let listener = bind(&pending);
    // The daemon opens the layers itself; the supervisor only mounts.
    let fd = layerfs_fuse::mount_connection(&mountpoint, &opts)
        .with_context(|| format!("mounting on {}", mountpoint.display()))?;
    let mut fds = vec![fd];
    for _ in 1..threads {
        fds.push(layerfs_fuse::clone_connection(fds[0].as_fd()).context("cloning /dev/fuse")?);
    }
    let journal = sys::memfd(c"layerfs-journal").context("creating the journal")?;
    for f in fds.iter().chain([&journal]) {
        sys::set_cloexec(f.as_fd(), false).context("FD_CLOEXEC")?;
    }
    let device = mountinfo::current_mount_device(&mountpoint).unwrap_or_default();
    let socket = socket_dir()?.join(socket_name(&device));
    // Replaces a socket left by the supervisor of an earlier mount with this device number.
    let listener = listener.and_then(|l| {
        std::fs::rename(&pending, &socket)?;
        Ok((l, Socket::identify(&socket)?))
    });
    let sup = Arc::new(Supervisor {
        exe,
        args: std::env::args_os().skip(1).collect(),
        cwd,
        mountpoint: mountpoint.clone(),
        device: device.clone(),
        fds,
        journal,
        detached: report.is_some(),
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
    });
    let signals = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1];
    sys::block_signals(&signals).context("blocking signals")?;
    if let Err(e) = sup.start_daemon() {
        // Nobody serves the mount: take it away again (it is ours, made just now).
        let _ = sys::umount(&mountpoint, libc::MNT_DETACH);
        return Err(e);
    }
    info!(
        "supervising the mount on {} (device {device})",
        mountpoint.display()
    );
    if let Some(mut r) = report.take() {
        r.write_all(&[0]).context("reporting the mount")?;
        drop(r);
        let _ = sys::redirect_stdio_to_null();
    }
    let mut ours = None;
    match listener {
        Ok((l, id)) => {
            ours = Some(id);
            let s = sup.clone();
            std::thread::Builder::new()
                .name("control".into())
                .spawn(move || s.serve_control(l))
                .context("starting the control thread")?;
        }
        Err(e) => warn!("{}: no status or restart: {e:#}", socket.display()),
    }
    let s = sup.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            // Forwarded: the daemon unmounts on these (or refreshes, SIGUSR1).
            while let Ok(sig) = sys::wait_signal(&signals) {
                let pid = s.lock().pid;
                let _ = sys::kill(pid, sig);
            }
        })
        .context("starting the signal thread")?;
    let r = sup.watch();
    if let Some(id) = ours {
        id.remove();
    }
    r
}

/// The control socket's file, known by its inode: another mount may get this device
/// number once ours is gone, and its supervisor the name; only ours is removed.
struct Socket {
    path: PathBuf,
    ino: (u64, u64),
}

impl Socket {
    fn identify(path: &Path) -> std::io::Result<Socket> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path)?;
        Ok(Socket {
            path: path.to_path_buf(),
            ino: (m.dev(), m.ino()),
        })
    }

    fn remove(self) {
        if Socket::identify(&self.path).is_ok_and(|s| s.ino == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Supervisor {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a daemon on the kept connection and waits until it serves; its pid recorded.
    fn start_daemon(&self) -> Result<()> {
        let (rd, wr) = sys::pipe().context("creating the ready pipe")?;
        sys::set_cloexec(wr.as_fd(), false).context("FD_CLOEXEC")?;
        let fds: Vec<String> = self.fds.iter().map(|f| f.as_raw_fd().to_string()).collect();
        let env = format!(
            "fds={};journal={};ready={};detached={};mp={}",
            fds.join(","),
            self.journal.as_raw_fd(),
            wr.as_raw_fd(),
            u8::from(self.detached),
            self.mountpoint.display()
        );
        let child = Command::new(&self.exe)
            .args(&self.args)
            .current_dir(&self.cwd)
            .env(ENV, env)
            .spawn()
            .with_context(|| format!("starting {}", self.exe.display()))?;
        drop(wr);
        let pid = child.id() as i32;
        // Reaped by `watch` (waitpid), not by `Child`.
        drop(child);
        self.lock().pid = pid;
        mount::wait_for_child(rd).inspect_err(|_| {
            let _ = sys::waitpid(pid, 0);
        })?;
        self.lock().serving = Some(pid);
        self.changed.notify_all();
        Ok(())
    }

    /// Waits for the daemon to end, and starts the next one while the mount is there.
    fn watch(&self) -> Result<()> {
        loop {
            let pid = self.lock().pid;
            let exit = match sys::waitpid(pid, 0) {
                Ok(Some((_, exit))) => exit,
                Ok(None) => continue,
                Err(e) => return Err(e).context("waiting for the daemon"),
            };
            let died = Instant::now();
            let asked = {
                let mut st = self.lock();
                st.serving = None;
                st.asked.take()
            };
            let mounted = mountinfo::current_mount_device(&self.mountpoint).as_deref()
                == Some(self.device.as_str());
            if !mounted {
                info!(
                    "{}: unmounted; daemon {pid} {exit:?}",
                    self.mountpoint.display()
                );
                return Ok(());
            }
            if asked.is_none() {
                warn!("daemon {pid} ended ({exit:?}) with the mount live: starting another");
            }
            let mut failed = 0;
            while let Err(e) = self.start_daemon() {
                // Reaped already: the next one is started at once.
                failed += 1;
                error!("starting a daemon: {e:#}");
                if failed >= START_TRIES {
                    let mut st = self.lock();
                    st.gave_up = true;
                    st.generation += 1;
                    self.changed.notify_all();
                    bail!("{START_TRIES} daemons in a row failed to start; giving up");
                }
            }
            let ms = asked.unwrap_or(died).elapsed().as_secs_f64() * 1000.0;
            let mut st = self.lock();
            st.restarts += 1;
            st.generation += 1;
            st.last_pause_ms = Some(ms);
            info!("daemon {} serves (paused {ms:.1} ms)", st.pid);
            self.changed.notify_all();
        }
    }

    /// Answers `layerfs status` and `layerfs restart`, one line each.
    fn serve_control(&self, l: UnixListener) {
        for conn in l.incoming().map_while(Result::ok) {
            let mut line = String::new();
            if BufReader::new(&conn).read_line(&mut line).is_err() {
                continue;
            }
            let reply = match line.trim() {
                "status" => self.status(),
                "restart" => self.restart(),
                other => serde_json::json!({ "error": format!("unknown command {other:?}") }),
            };
            let _ = writeln!(&conn, "{reply}");
        }
    }

    fn status(&self) -> serde_json::Value {
        let st = self.lock();
        serde_json::json!({
            "mountpoint": self.mountpoint,
            "supervisor_pid": std::process::id(),
            "serving_pid": st.serving,
            "restarts": st.restarts,
            "last_pause_ms": st.last_pause_ms,
            "program": self.exe,
            "arguments": self.args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>(),
        })
    }

    /// Stops the daemon at a request boundary and waits for the next one to serve.
    fn restart(&self) -> serde_json::Value {
        let mut st = self.lock();
        // A daemon still starting has not blocked SIGUSR2 yet: wait until it serves.
        while st.serving.is_none() && !st.gave_up {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        let generation = st.generation;
        st.asked = Some(Instant::now());
        match sys::kill(st.pid, libc::SIGUSR2) {
            // Died just now: the next daemon is the restart.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => {
                st.asked = None;
                return serde_json::json!({ "error": format!("signalling daemon {}: {e}", st.pid) });
            }
            Ok(()) => {}
        }
        while st.generation == generation {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.gave_up {
            return serde_json::json!({ "error": "the new daemon failed to start" });
        }
        serde_json::json!({
            "mountpoint": self.mountpoint,
            "serving_pid": st.pid,
            "pause_ms": st.last_pause_ms,
        })
    }
}

/// The control socket's name for the mount with device `device` (`MAJOR:MINOR`).
fn socket_name(device: &str) -> String {
    format!("{}.sock", device.replace(':', "_"))
}

/// Where the supervisors' control sockets are: a directory only this user can enter.
fn socket_dir() -> Result<PathBuf> {
    let dir = if sys::geteuid() == 0 {
        PathBuf::from("/run/layerfs")
    } else if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        Path::new(&d).join("layerfs")
    } else {
        PathBuf::from(format!("/tmp/layerfs-{}", sys::geteuid()))
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("{}", dir.display()))?;
    Ok(dir)
}

/// Listens at `path` (a new name).
fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

/// Sends `command` to the supervisor of the mount at `mountpoint`; its one-line answer.
fn ask(mountpoint: &Path, command: &str) -> Result<serde_json::Value> {
    // Canonical as the supervisor has it; a mount whose daemon is gone answers ENOTCONN.
    let mp = std::fs::canonicalize(mountpoint)
        .or_else(|_| std::path::absolute(mountpoint))
        .with_context(|| format!("mountpoint {}", mountpoint.display()))?;
    let Some(device) = mountinfo::current_mount_device(&mp) else {
        bail!("{}: not mounted", mp.display());
    };
    let path = socket_dir()?.join(socket_name(&device));
    // A supervisor names its socket a moment after its mount shows: asked again meanwhile.
    let deadline = Instant::now() + std::time::Duration::from_secs(2);
    let conn = loop {
        match UnixStream::connect(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => break r,
        }
    };
    let conn = conn.map_err(|e| {
        anyhow::anyhow!(
            "{}: no supervisor answers ({}: {e}); only mounts with -o supervise have one",
            mp.display(),
            path.display()
        )
    })?;
    writeln!(&conn, "{command}")?;
    let mut line = String::new();
    BufReader::new(&conn)
        .read_line(&mut line)
        .with_context(|| format!("{}: reading the supervisor's answer", mp.display()))?;
    let v: serde_json::Value = serde_json::from_str(&line)
        .with_context(|| format!("{}: the supervisor's answer {line:?}", mp.display()))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("{}: {e}", mp.display());
    }
    if v.get("mountpoint").and_then(|m| m.as_str()) != mp.to_str() {
        bail!(
            "{}: no supervisor answers (only mounts with -o supervise have one)",
            mp.display()
        );
    }
    Ok(v)
}

/// `layerfs status MNT [--json]`.
pub fn status(mountpoint: &Path, json: bool) -> Result<()> {
    let v = ask(mountpoint, "status")?;
    if json {
        println!("{v}");
        return Ok(());
    }
    let get = |k: &str| v.get(k).map(|x| x.to_string()).unwrap_or_default();
    println!("mountpoint      {}", mountpoint.display());
    println!("serving pid     {}", get("serving_pid"));
    println!("supervisor pid  {}", get("supervisor_pid"));
    println!("restarts        {}", get("restarts"));
    println!("last pause ms   {}", get("last_pause_ms"));
    println!("program         {}", get("program"));
    println!("arguments       {}", get("arguments"));
    Ok(())
}

/// `layerfs restart MNT`: the binary on disk takes over the mount.
pub fn restart(mountpoint: &Path) -> Result<()> {
    let v = ask(mountpoint, "restart")?;
    let pause = v.get("pause_ms").and_then(|p| p.as_f64()).unwrap_or(0.0);
    println!(
        "{}: daemon {} serves (paused {pause:.1} ms)",
        mountpoint.display(),
        v.get("serving_pid")
            .map(|x| x.to_string())
            .unwrap_or_default()
    );
    Ok(())
}
