//! `layerfs [mount] [-f] [-d] -o OPTIONS MOUNTPOINT`: check everything, then mount.
//!
//! Every check that can fail with a clear message runs before anything is mounted. Without
//! `-f` the process forks: the child mounts and serves, the parent waits on a pipe and exits
//! 0 only once the child reports the mount live (fuser's `Session::new` returns after the
//! kernel's INIT handshake), or prints the child's error and exits 1. Nothing is left mounted
//! on failure.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use layerfs_base::format::MarkNs;
use layerfs_base::options::{self, MountFlags};
use layerfs_base::sys::mountinfo;
use layerfs_base::{sys, MountOptions};
use layerfs_fuse::fuser::IoUring;
use layerfs_fuse::{AdapterOptions, Core, FileIo, SessionOptions};
use layerfs_mount::{upper, Config, Stack, Union};
use log::{info, warn};
use std::sync::Arc;

use super::lazy::LazyLayers;

use crate::{FileIoArg, MountArgs};

/// Everything needed to mount, checked.
pub struct Plan {
    mountpoint: PathBuf,
    /// The mount's source in /proc/self/mountinfo.
    fsname: String,
    pub flags: MountFlags,
    fs: Union,
    threads: usize,
    /// Served over FUSE-over-io_uring where the kernel offers it (`io_uring=auto`, the
    /// default), insisted on (`-o io_uring`) or not (`-o noio_uring`).
    io_uring: IoUring,
    file_io: FileIo,
    /// POSIX ACLs on (off with `noacl` or an upper without xattrs).
    acl: bool,
    /// `lower_direct_io=`: lower files from this size on read with direct I/O (rootless).
    lower_direct_io: Option<u64>,
    /// Remove the mountpoint directory once unmounted (`layerfs run`'s temporary one).
    pub remove_mountpoint: bool,
    /// A directory tree to remove once unmounted (`layerfs run`'s ephemeral upper).
    pub remove_after: Option<PathBuf>,
    /// `-o supervise`: a supervisor keeps the connection and runs the daemons.
    supervise: bool,
    /// The stack's lazy layers, whose prefetch starts in the daemon.
    lazy: Option<Arc<LazyLayers>>,
}

pub fn run(args: MountArgs) -> Result<()> {
    if let Some(kept) = super::supervise::Kept::from_env()? {
        // A daemon started by a supervisor on the connection it keeps.
        return super::supervise::serve(&args, kept);
    }
    let plan = prepare(&args)?;
    if plan.supervise {
        return super::supervise::start(plan, args.foreground);
    }
    if args.foreground {
        return serve(plan, None);
    }
    let (rd, wr) = sys::pipe().context("creating the start-up pipe")?;
    // Single-threaded so far: nothing has spawned a thread before this fork.
    match sys::fork().context("forking the daemon")? {
        sys::Fork::Parent(_) => {
            drop(wr);
            wait_for_child(rd)
        }
        sys::Fork::Child => {
            drop(rd);
            let _ = sys::setsid();
            let _ = std::env::set_current_dir("/");
            serve(plan, Some(wr))
        }
    }
}

/// An error the daemon already sent to the parent, which prints it: the daemon only logs it
/// (to the log file, if any), so the user sees it once.
#[derive(Debug)]
pub struct Reported(pub anyhow::Error);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", super::one_line(&self.0))
    }
}

impl std::error::Error for Reported {}

pub fn prepare(args: &MountArgs) -> Result<Plan> {
    prepare_at(args, None)
}

/// [`prepare`]; with `mounted`, for a daemon on a kept connection: the mount point is that
/// (canonical, the mount already there, never looked at: nobody serves it yet).
pub fn prepare_at(args: &MountArgs, mounted: Option<&Path>) -> Result<Plan> {
    let Some(mp) = args.mountpoint() else {
        bail!("no mountpoint given (usage: layerfs -o lowerdir=TOP:...:BOTTOM MOUNTPOINT)");
    };
    let opts = MountOptions::parse(&args.options).context("bad mount options")?;
    let fsname = fsname(
        opts.fsname
            .clone()
            .or_else(|| args.source().map(|s| s.to_string_lossy().into_owned())),
    );
    for o in &opts.ignored {
        warn!("ignoring unknown mount option {o:?}");
    }
    for (o, instead) in &opts.not_honoured {
        warn!("mount option {o:?} is not honoured: {instead}");
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let lowers: Vec<PathBuf> = opts
        .lowers
        .iter()
        .map(|p| layerfs_mount::stack::resolve_against(&cwd, p))
        .collect();
    {
        // Canonical paths for the overlap check; a path that does not resolve is reported
        // when it is opened below.
        let canon =
            |p: &Path| std::fs::canonicalize(layerfs_mount::stack::resolve_against(&cwd, p));
        let lowers: Vec<PathBuf> = lowers.iter().filter_map(|l| canon(l).ok()).collect();
        let upper = opts.upper.as_deref().and_then(|u| canon(u).ok());
        let work = opts.work.as_deref().and_then(|w| canon(w).ok());
        layerfs_mount::stack::check_overlaps(&lowers, upper.as_deref(), work.as_deref())?;
    }
    let mountpoint = match mounted {
        Some(m) => m.to_path_buf(),
        None => check_mountpoint(mp)?,
    };
    let nofile = sys::raise_nofile_limit().unwrap_or(0);
    info!("open-file limit {nofile}");
    let cfg = Config {
        ids: opts.ids.clone(),
        ttl: opts.timeout.unwrap_or(Config::default().ttl),
        lowers_max_age: opts.timeout,
        overrides: opts.xattr_permissions,
        redirects: opts.redirect_dir,
        xattrs: opts.xattrs,
        metacopy: opts.metacopy,
        static_nlink: opts.static_nlink,
        lower_passthrough: opts.lower_passthrough,
    };
    let mut acl = opts.acl && opts.xattrs;
    let mut fs = match (&opts.upper, &opts.work) {
        (Some(u), Some(w)) => {
            // Rootless (or root of a user namespace): trusted.* needs CAP_SYS_ADMIN in the
            // initial user namespace.
            let ns = if opts.userxattr || sys::geteuid() != 0 || sys::in_user_namespace() {
                MarkNs::User
            } else {
                MarkNs::Trusted
            };
            let upper = upper::open(
                &layerfs_mount::stack::resolve_against(&cwd, u),
                &layerfs_mount::stack::resolve_against(&cwd, w),
                ns,
            )?;
            acl &= upper.xattrs;
            let dev = sys::fstat(std::os::fd::AsFd::as_fd(&*upper.fd))
                .context("upperdir")?
                .st_dev;
            let stack = Stack::open_with_upper(&lowers, Some(dev))?.with_ino32(opts.ino32);
            Union::new(stack, Some(upper), cfg, opts.volatile)
        }
        _ => Union::new(
            Stack::open(&lowers)?.with_ino32(opts.ino32),
            None,
            cfg,
            false,
        ),
    }
    .context("reading the top layer's root")?;
    if mounted.is_none() {
        // A fresh mount: orphans a supervised mount left in the workdir are garbage.
        fs.sweep_orphans();
    }
    if opts.verify {
        fs.set_verifier(
            layerfs_mount::verifier::Verifier::load(&lowers).map_err(anyhow::Error::msg)?,
        );
    }
    let lazy = LazyLayers::find(&lowers)?;
    if let Some(l) = &lazy {
        fs.set_lazy(l.hook());
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(2)
    });
    if opts.io_uring == options::IoUring::On && opts.supervise {
        warn!("-o io_uring is not used with -o supervise: the daemons come and go on one connection, and a ring dies with its process; serving over /dev/fuse reads");
    }
    Ok(Plan {
        mountpoint,
        fsname,
        flags: opts.flags,
        fs,
        threads,
        // A ring lives and dies with the process that set it up, and a supervised mount's
        // daemons come and go on one connection: supervised mounts use `/dev/fuse` reads.
        io_uring: match opts.io_uring {
            _ if opts.supervise => IoUring::Off,
            options::IoUring::Auto => IoUring::Auto,
            options::IoUring::On => IoUring::On,
            options::IoUring::Off => IoUring::Off,
        },
        acl,
        lower_direct_io: opts.lower_direct_io,
        remove_mountpoint: false,
        remove_after: None,
        supervise: opts.supervise,
        lazy,
        file_io: match (args.no_passthrough, args.file_io) {
            // A restarted daemon could not know which of the kernel's inodes are bound to
            // backing files; supervised mounts serve data through the page cache.
            (_, FileIoArg::Passthrough) if opts.supervise => FileIo::Cached,
            (true, _) | (_, FileIoArg::Handles) => FileIo::Handles,
            (_, FileIoArg::Cached) => FileIo::Cached,
            // Passthrough needs CAP_SYS_ADMIN in the initial user namespace (the adapter
            // also falls back when the kernel does not grant it); without it, handle-less
            // cached files are the fastest, and a writable mount takes the writeback cache.
            (_, FileIoArg::Passthrough) if sys::geteuid() == 0 && !sys::in_user_namespace() => {
                FileIo::Passthrough
            }
            (_, FileIoArg::Passthrough) => FileIo::Cached,
        },
    })
}

pub fn check_mountpoint(mp: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(mp).with_context(|| format!("mountpoint {}", mp.display()))?;
    if !meta.is_dir() {
        bail!("mountpoint {}: not a directory", mp.display());
    }
    let abs = std::fs::canonicalize(mp).with_context(|| format!("mountpoint {}", mp.display()))?;
    if let Some(fstype) = mountinfo::current_mount_type(&abs) {
        if fstype.starts_with("fuse") || fstype == "overlay" {
            bail!(
                "mountpoint {} is busy: a {fstype} filesystem is already mounted there \
                 (unmount it first with `layerfs umount {}`)",
                abs.display(),
                abs.display()
            );
        }
    }
    Ok(abs)
}

/// The parent side of daemonizing: relay the child's verdict. The "\0" of a live mount is
/// taken as soon as it arrives (not at the pipe's end of file, which waits for the daemon to
/// be scheduled again and close its end); an error's text is read to the end.
pub fn wait_for_child(rd: OwnedFd) -> Result<()> {
    let mut pipe = std::fs::File::from(rd);
    let mut first = [0u8; 1];
    let n = loop {
        match pipe.read(&mut first) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r.context("waiting for the daemon")?,
        }
    };
    if n == 0 {
        bail!("the daemon exited before the mount was live");
    }
    if first[0] == 0 {
        return Ok(());
    }
    let mut msg = first.to_vec();
    pipe.read_to_end(&mut msg)
        .context("waiting for the daemon")?;
    bail!("{}", String::from_utf8_lossy(&msg).trim_end())
}

/// Mounts and serves until unmounted. `report` (daemon mode) receives "\0" once the mount
/// is live, or the error text.
pub fn serve(plan: Plan, report: Option<OwnedFd>) -> Result<()> {
    serve_on(plan, report, Connect::Mount)
}

/// How a daemon reaches the kernel.
pub enum Connect {
    /// Mounts, and serves the new connection.
    Mount,
    /// Serves the connection a supervisor keeps (`supervise.rs`).
    Kept(super::supervise::Connection),
}

/// [`serve`] through `connect`.
pub fn serve_on(plan: Plan, report: Option<OwnedFd>, connect: Connect) -> Result<()> {
    let mut report = report.map(std::fs::File::from);
    let result = mount_and_run(plan, &mut report, connect);
    reported(result, report)
}

/// Mounts `core` (a filesystem other than a layer stack: `serve-layers`' store) on
/// `mountpoint` and serves it as a mount's daemon serves a stack: `report` hears once it is
/// live, SIGINT/TERM/HUP unmount it. Writable as far as the kernel knows (the core refuses
/// what it does not take), files through passthrough as root.
pub fn serve_core<C: Core>(
    core: C,
    mountpoint: PathBuf,
    name: &str,
    report: Option<OwnedFd>,
) -> Result<()> {
    let mut report = report.map(std::fs::File::from);
    let serve = Serve {
        mountpoint,
        fsname: fsname(Some(name.to_string())),
        flags: MountFlags::default(),
        threads: std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(4),
        // As before the transports' merge: serve-layers' mount stays on /dev/fuse reads and
        // its lower files in the page cache.
        io_uring: IoUring::Off,
        lower_direct_io: None,
        file_io: if sys::geteuid() == 0 && !sys::in_user_namespace() {
            FileIo::Passthrough
        } else {
            FileIo::Cached
        },
        acl: false,
        remove_mountpoint: false,
        remove_after: None,
    };
    let result = mount_core(serve, core, false, None, &mut report, Connect::Mount);
    reported(result, report)
}

/// A daemon's `result`, its error sent to the parent (`report`) when there is one.
fn reported(result: Result<()>, report: Option<std::fs::File>) -> Result<()> {
    match (result, report) {
        (Err(e), Some(mut r)) => {
            // The parent prints it; the daemon's own stderr is gone by now or soon.
            let _ = write!(r, "{}", super::one_line(&e));
            Err(Reported(e).into())
        }
        (result, _) => result,
    }
}

/// The source name a mount shows: `name` made safe for a mount option (no comma, no
/// backslash, no white space), `layerfs` when absent or empty.
/// How `plan` is mounted and served.
fn session_options(plan: &Serve, read_only: bool) -> SessionOptions {
    SessionOptions {
        fsname: plan.fsname.clone(),
        read_only,
        flags: plan.flags.ms_flags(),
        // Like kernel overlayfs: setuid binaries and device nodes in images keep working.
        privileged: sys::geteuid() == 0,
        threads: plan.threads,
        io_uring: plan.io_uring,
        adapter: AdapterOptions {
            file_io: plan.file_io,
            acl: plan.acl,
            lower_direct_io: plan.lower_direct_io,
        },
    }
}

impl Plan {
    /// How the plan is mounted and served, and where: for a supervisor, which only mounts.
    pub fn into_mount(self) -> (SessionOptions, PathBuf) {
        let read_only = self.fs.read_only();
        let serve = Serve {
            mountpoint: self.mountpoint,
            fsname: self.fsname,
            flags: self.flags,
            threads: self.threads,
            io_uring: IoUring::Off,
            file_io: self.file_io,
            acl: self.acl,
            lower_direct_io: self.lower_direct_io,
            remove_mountpoint: false,
            remove_after: None,
        };
        (session_options(&serve, read_only), serve.mountpoint)
    }

    /// A daemon restarted on a kept connection answers what `r` (the journal) recorded.
    pub fn recover_from(&mut self, r: layerfs_mount::union::journal::Recovered) {
        self.fs.recover_from(r);
    }
}

fn fsname(name: Option<String>) -> String {
    let clean: String = name
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c == ',' || c == '\\' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if clean.is_empty() {
        "layerfs".into()
    } else {
        clean
    }
}

/// A plan without its filesystem.
struct Serve {
    mountpoint: PathBuf,
    fsname: String,
    flags: MountFlags,
    threads: usize,
    io_uring: IoUring,
    file_io: FileIo,
    acl: bool,
    lower_direct_io: Option<u64>,
    remove_mountpoint: bool,
    remove_after: Option<PathBuf>,
}

fn mount_and_run(plan: Plan, report: &mut Option<std::fs::File>, connect: Connect) -> Result<()> {
    let Plan {
        mountpoint,
        fsname,
        flags,
        fs,
        threads,
        io_uring,
        file_io,
        acl,
        lower_direct_io,
        remove_mountpoint,
        remove_after,
        supervise: _,
        lazy,
    } = plan;
    if let Some(l) = &lazy {
        l.start_prefetch();
    }
    let serve = Serve {
        mountpoint,
        fsname,
        flags,
        threads,
        io_uring,
        file_io,
        acl,
        lower_direct_io,
        remove_mountpoint,
        remove_after,
    };
    let read_only = fs.read_only();
    let refresh = fs.refresher();
    mount_core(serve, fs, read_only, Some(refresh), report, connect)
}

fn mount_core<C: Core>(
    plan: Serve,
    core: C,
    read_only: bool,
    refresh: Option<layerfs_mount::union::Refresh>,
    report: &mut Option<std::fs::File>,
    connect: Connect,
) -> Result<()> {
    let opts = session_options(&plan, read_only);
    // Signals are handled by one thread below; block them before the workers start.
    // SIGUSR1 reads the lowers again (changes made in them behind the mount show at once);
    // SIGUSR2 (a supervised daemon) stops at a request boundary for a restart.
    let signals = [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ];
    sys::block_signals(&signals).context("blocking signals")?;
    // A daemon's stdio goes once it is live, but a supervisor's in the foreground, which
    // shares it with its daemons.
    let quiet = match &connect {
        Connect::Mount => true,
        Connect::Kept(c) => c.detached(),
    };
    let (mounted, gate, first) = match connect {
        Connect::Mount => {
            let m = layerfs_fuse::mount(core, &plan.mountpoint, &opts)
                .with_context(|| format!("mounting on {}", plan.mountpoint.display()))?;
            (m, None, true)
        }
        Connect::Kept(c) => {
            let first = c.first();
            let (m, gate) = c.serve(core, &opts)?;
            (m, Some(gate), first)
        }
    };
    info!("mounted on {}", plan.mountpoint.display());
    // Flags fuser cannot pass to the kernel: a bind remount adds them to the mount.
    let extra = plan.flags.ms_flags() & (libc::MS_NODIRATIME | libc::MS_STRICTATIME);
    if extra != 0 && first {
        if let Err(e) = sys::remount_with(&plan.mountpoint, extra) {
            warn!(
                "{}: nodiratime/strictatime not applied (the bind remount that sets them needs root): {e}",
                plan.mountpoint.display()
            );
        }
    }
    // The mount is live and served: release the parent now. The signal thread comes after
    // (a signal arriving before it waits is kept pending: they are blocked) so that the
    // caller, podman, does not wait for one more thread to be created and scheduled.
    if let Some(mut r) = report.take() {
        r.write_all(&[0])
            .context("reporting the mount to the parent")?;
        drop(r);
        if quiet {
            let _ = sys::redirect_stdio_to_null();
        }
    }
    let mp = plan.mountpoint.clone();
    let started = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(sig) = sys::wait_signal(&signals) {
                if sig == libc::SIGUSR1 {
                    if let Some(r) = &refresh {
                        r.run();
                    }
                    continue;
                }
                if sig == libc::SIGUSR2 {
                    if let Some(g) = &gate {
                        // Every request read from now on is left to the next daemon.
                        g.drain();
                        info!("stopped at a request boundary for a restart");
                        std::process::exit(0);
                    }
                    continue;
                }
                info!("signal {sig}: unmounting {}", mp.display());
                if let Err(e) = crate::cmd::umount::unmount(&mp, true) {
                    warn!("{}", super::one_line(&e));
                }
                break;
            }
        });
    if let Err(e) = started {
        // Too late to fail the mount: it serves on, unmounted by umount instead of signals.
        warn!(
            "no signal thread ({e}): SIGTERM will not unmount {}",
            plan.mountpoint.display()
        );
    }
    // Tests only (feature `failpoints`): the control socket of the syscall failpoints.
    #[cfg(feature = "failpoints")]
    sys::faults::serve_from_env();
    let served = mounted.join().context("serving the mount");
    if plan.remove_mountpoint {
        let _ = std::fs::remove_dir(&plan.mountpoint);
    }
    if let Some(d) = &plan.remove_after {
        let _ = std::fs::remove_dir_all(d);
    }
    served
}
