//! `layerfs run -o lowerdir=... -- CMD [ARG...]`: a command with the merged stack as root.
//!
//! Process layout (see docs/ARCHITECTURE.md):
//! - this process stays in the host's namespaces: it mounts, waits, forwards signals and
//!   cleans up;
//! - the FUSE daemon is its child, outside the container's mount namespace (a pivot_root
//!   there would move its root too); it dies with us (parent-death signal), unmounting and
//!   removing the temporary mountpoint;
//! - pid 1 of a new pid namespace (a child forked after `unshare(CLONE_NEWPID)`) makes the
//!   mount, uts and ipc (and with `--net none`, network) namespaces, builds the root,
//!   pivots into it and runs the command as its own child (`runtime::init::pid1`); it dies
//!   with us too (SIGKILL as parent-death signal), and the kernel then kills the rest of the
//!   pid namespace.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use crate::runtime::init::{self, Command, EXIT_RUNTIME};
use crate::runtime::rootfs::{self, Host, RootSpec};
use anyhow::{bail, Context, Result};
use layerfs_base::sys::{self, Fork};

use super::{mount, rootless};
use crate::{MountArgs, NetMode, RunArgs};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs the container and returns the status to exit with.
pub fn run(mut args: RunArgs) -> Result<i32> {
    // Without upperdir=, writes go to a temporary upper removed at exit (podman run --rm).
    let has_upper = args
        .options
        .iter()
        .any(|o| o.split(',').any(|kv| kv.starts_with("upperdir=")));
    if !has_upper {
        let d = tempfile::Builder::new()
            .prefix("layerfs-run-upper-")
            .tempdir()
            .context("creating a temporary upper directory")?
            .keep();
        for sub in ["upper", "work"] {
            std::fs::create_dir(d.join(sub)).context("creating a temporary upper directory")?;
        }
        args.options.push(format!(
            "upperdir={},workdir={}",
            d.join("upper").display(),
            d.join("work").display()
        ));
        args.ephemeral = Some(d);
    }
    let mountpoint = tempfile::Builder::new()
        .prefix("layerfs-run-")
        .tempdir()
        .context("creating a temporary mountpoint")?
        .keep();
    let result = if sys::geteuid() == 0 && !args.rootless {
        run_in(&args, &mountpoint)
    } else {
        run_rootless(&args, &mountpoint)
    };
    // The daemon removes them once unmounted; this covers failures before the daemon ran.
    let _ = std::fs::remove_dir(&mountpoint);
    if let Some(d) = &args.ephemeral {
        let _ = std::fs::remove_dir_all(d);
    }
    result
}

/// Mounts and runs; as root, or as root of a user namespace (rootless).
fn run_in(args: &RunArgs, mountpoint: &Path) -> Result<i32> {
    let mount_args = MountArgs {
        options: args.options.clone(),
        paths: vec![mountpoint.to_path_buf()],
        ..MountArgs::default()
    };
    let mut plan = mount::prepare(&mount_args)?;
    // `ro`: the root is made read-only inside the container, after its mount points were
    // made in the upper (runc's read-only root); the FUSE mount itself stays writable.
    let read_only = std::mem::take(&mut plan.serve.flags.read_only);
    plan.serve.remove_mountpoint = true;
    plan.serve.remove_after = args.ephemeral.clone();
    let command = command(args)?;
    let spec = RootSpec {
        hostname: args.hostname.clone(),
        host_files: vec![
            (PathBuf::from("/etc/resolv.conf"), "etc/resolv.conf".into()),
            (PathBuf::from("/etc/hosts"), "etc/hosts".into()),
        ],
        binds: args
            .binds
            .iter()
            .map(|b| parse_bind(b))
            .collect::<Result<_>>()?,
        read_only,
        keep_tmp: args.keep_tmp,
    };

    // The FUSE daemon: our child, in the host's namespaces, gone when we are.
    let (rd, wr) = sys::pipe().context("creating the start-up pipe")?;
    let daemon = match sys::fork().context("starting the FUSE daemon")? {
        Fork::Child => {
            drop(rd);
            let _ = sys::set_parent_death_signal(libc::SIGTERM);
            // Its own session: a Ctrl-C on the terminal goes to the foreground process
            // group, and must reach the command, not unmount its root.
            let _ = sys::setsid();
            let code = match mount::serve(plan, Some(wr)) {
                Ok(()) => 0,
                Err(_) => 1, // already reported through the pipe
            };
            std::process::exit(code);
        }
        Fork::Parent(pid) => pid,
    };
    drop(wr);
    mount::wait_for_child(rd)?;

    // Signals reach us only through sigwait; pid 1 inherits the mask and sets its own.
    let forwarded = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGCHLD];
    sys::block_signals(&forwarded).context("blocking signals")?;
    sys::unshare(libc::CLONE_NEWPID).context("creating a pid namespace")?;
    let pid1 = match sys::fork().context("starting the container")? {
        Fork::Child => {
            let _ = sys::set_parent_death_signal(libc::SIGKILL);
            std::process::exit(container(mountpoint, &spec, &command, args.net));
        }
        Fork::Parent(pid) => pid,
    };
    let status = wait_forwarding(pid1, &forwarded)?;
    // Unmount (the daemon's signal thread does it) and let the daemon remove the mountpoint.
    let _ = sys::kill(daemon, libc::SIGTERM);
    let _ = sys::waitpid(daemon, 0);
    Ok(status)
}

/// Rootless: the same run as root of a new user namespace. The caller's full subordinate
/// range is mapped where /etc/subuid and /etc/subgid allow (so apt can setgroups, seteuid
/// and chown inside); else only the caller's own id, with a warning saying what will not
/// work. The child then makes a mount namespace (the FUSE mount lives only there, and
/// vanishes with it) and runs the rootful path unchanged.
fn run_rootless(args: &RunArgs, mountpoint: &Path) -> Result<i32> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .context("opening /dev/fuse (rootless runs need it readable and writable by all: chmod 666 /dev/fuse)")?;
    let (uid, gid) = sys::real_ids();
    let signals = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGCHLD];
    sys::block_signals(&signals).context("blocking signals")?;
    let child = |full: bool| -> Result<i32> {
        if !full {
            rootless::map_self(uid, gid).context("mapping the caller's own ids")?;
        }
        sys::unshare(libc::CLONE_NEWNS).context("creating a mount namespace")?;
        run_in(args, mountpoint)
    };
    let (pid, mapped) =
        rootless::fork_mapped("layerfs run", crate::runtime::init::EXIT_RUNTIME, child)?;
    if let Err(why) = mapped {
        // Logged under the id-mapping module's name, as it was before this moved here.
        log::warn!(
            target: "layerfs::cmd::rootless",
            "{why}: mapping only uid {uid} (as root) in the container; \
             setgroups, changing to other users and chown to other ids will fail there"
        );
    }
    wait_forwarding(pid, &signals)
}

/// Waits for `pid`, forwarding every signal of `signals` but SIGCHLD to it (they must be
/// blocked); returns its status.
fn wait_forwarding(pid: libc::pid_t, signals: &[libc::c_int]) -> Result<i32> {
    loop {
        let sig = sys::wait_signal(signals).context("waiting for the container")?;
        if sig != libc::SIGCHLD {
            let _ = sys::kill(pid, sig);
            continue;
        }
        if let Some((_, exit)) =
            sys::waitpid(pid, libc::WNOHANG).context("waiting for the container")?
        {
            return Ok(exit.status());
        }
    }
}

/// Pid 1 of the new pid namespace: namespaces, root, then the command.
fn container(
    mountpoint: &std::path::Path,
    spec: &RootSpec,
    command: &Command,
    net: NetMode,
) -> i32 {
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if net == NetMode::None {
        flags |= libc::CLONE_NEWNET;
    }
    if let Err(e) = sys::unshare(flags) {
        eprintln!("layerfs run: creating namespaces: {e}");
        return EXIT_RUNTIME;
    }
    // Opened only now: an fd taken before unshare(CLONE_NEWNS) would point into the host's
    // mount namespace, where mounting is refused (EINVAL). No fd of ours may outlive the
    // container either, or the FUSE connection would survive the unmount.
    let root = match sys::open_host_dir(mountpoint) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!(
                "layerfs run: opening the merged root {}: {e}",
                mountpoint.display()
            );
            return EXIT_RUNTIME;
        }
    };
    if let Err(e) = rootfs::build(&mut Host::new(root), spec) {
        eprintln!("layerfs run: building the container's root: {e}");
        return EXIT_RUNTIME;
    }
    init::pid1(command)
}

/// The command line, a clean environment and the working directory.
fn command(args: &RunArgs) -> Result<Command> {
    let c = |s: &str| CString::new(s).with_context(|| format!("{s:?} contains a NUL byte"));
    let argv = args
        .command
        .iter()
        .map(|a| c(a))
        .collect::<Result<Vec<_>>>()?;
    if argv.is_empty() {
        bail!("no command given (usage: layerfs run -o lowerdir=... -- CMD [ARG...])");
    }
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), "/root".into()),
        ("HOSTNAME".into(), args.hostname.clone()),
        ("container".into(), "layerfs".into()),
    ];
    if let Ok(term) = std::env::var("TERM") {
        env.push(("TERM".into(), term));
    }
    for kv in &args.env {
        let (k, v) = match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), std::env::var(kv).unwrap_or_default()),
        };
        env.retain(|(ek, _)| *ek != k);
        env.push((k, v));
    }
    let env = env
        .iter()
        .map(|(k, v)| c(&format!("{k}={v}")))
        .collect::<Result<Vec<_>>>()?;
    Ok(Command {
        argv,
        env,
        cwd: c(args.cwd.as_deref().unwrap_or("/"))?,
        user: args.user.as_deref().map(init::User::parse),
        // Rootful runs keep podman's default set, not everything root has.
        caps: Some(init::PODMAN_DEFAULT_CAPS.to_vec()),
        umask: args.umask,
    })
}

/// `SRC:DST[:ro]`: an absolute host path and an absolute path in the container.
fn parse_bind(s: &str) -> Result<(PathBuf, String, bool)> {
    let mut parts = s.splitn(3, ':');
    let (src, dst, mode) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next(),
    );
    let ro = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(other) => bail!("--bind {s}: unknown mode {other:?} (ro or rw)"),
    };
    if !src.starts_with('/') || !dst.starts_with('/') {
        bail!("--bind {s}: expected /HOST/PATH:/CONTAINER/PATH[:ro]");
    }
    let src = std::fs::canonicalize(src).with_context(|| format!("--bind source {src}"))?;
    Ok((src, dst.trim_start_matches('/').to_string(), ro))
}
