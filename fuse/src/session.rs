//! Mounting a [`Core`] and serving it on worker threads.
//!
//! [`mount`] mounts (fuser's `Session::new` returns after the kernel's INIT handshake, so the
//! mount is live when it returns) and starts the workers; [`Mounted::join`] waits until the
//! kernel ends the connection. fuser's own unmount-at-exit goes by path, even after the mount
//! is gone, and so could unmount the next mount on the same mountpoint: [`Mounted::join`]
//! lets it run only when serving stopped with the connection still up.

use std::io;
use std::path::Path;

use std::sync::Arc;

use fuser::{BackgroundSession, MountOption, SessionACL};

use crate::{Adapter, AdapterOptions, Core, Counts};

/// How to mount and serve.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// The mount's source, as /proc/self/mountinfo shows it (the type is `fuse.layerfs`).
    pub fsname: String,
    /// Mount read-only (`ro`).
    pub read_only: bool,
    /// The kernel's per-mount flags (`MS_NOSUID`, `MS_NODEV`, `MS_NOEXEC`, `MS_NOATIME`,
    /// `MS_RDONLY`, `MS_SYNCHRONOUS`, `MS_DIRSYNC`) the mount gets; other bits are left to
    /// the caller (a bind remount).
    pub flags: libc::c_ulong,
    /// Allow setuid binaries and device nodes and let every user in (`suid`, `dev`,
    /// `allow_other`), like kernel overlayfs; needs root.
    pub privileged: bool,
    /// Worker threads (each with its own cloned /dev/fuse fd).
    pub threads: usize,
    /// Serve over FUSE-over-io_uring when the kernel offers it (one ring per CPU beside the
    /// `/dev/fuse` workers, which still get FORGET and INTERRUPT): `Auto` or `On`; otherwise
    /// `/dev/fuse` reads, after one line naming the reason (a warning only under `On`).
    pub io_uring: fuser::IoUring,
    pub adapter: AdapterOptions,
}

/// A live mount served by worker threads.
pub struct Mounted {
    pub(crate) session: BackgroundSession,
    pub(crate) counts: Option<Arc<Counts>>,
}

/// Mounts `core` on `mountpoint` and starts serving it. Signals the caller wants handled on
/// its own thread must be blocked before this call: the workers inherit the mask.
pub fn mount<C: Core>(core: C, mountpoint: &Path, opts: &SessionOptions) -> io::Result<Mounted> {
    let config = fuser_config(opts);
    let (adapter, invalidate, counts) = adapter_of(core, opts);
    let session = fuser::Session::new(adapter, mountpoint, &config)?;
    if let Some(inv) = &invalidate {
        inv.connect(session.notifier());
    }
    Ok(Mounted {
        session: session.spawn()?,
        counts,
    })
}

/// The adapter over `core`, what it tells the kernel of changes, its request counts.
pub(crate) fn adapter_of<C: Core>(
    core: C,
    opts: &SessionOptions,
) -> (Adapter<C>, Option<crate::Invalidate>, Option<Arc<Counts>>) {
    let invalidate = core.invalidate();
    let mut adapter = Adapter::new(core, opts.adapter);
    let counts = Counts::from_env().map(Arc::new);
    if let Some(c) = &counts {
        adapter = adapter.with_counts(c.clone());
    }
    (adapter, invalidate, counts)
}

/// fuser's configuration for `opts`: mount options, threads.
pub(crate) fn fuser_config(opts: &SessionOptions) -> fuser::Config {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName(opts.fsname.clone()),
        // fuser's own `Subtype` only reaches fusermount3; as a data option the kernel takes
        // it too when fuser mounts directly (as root), so the type reads `fuse.layerfs`.
        MountOption::CUSTOM("subtype=layerfs".into()),
        MountOption::DefaultPermissions,
    ];
    let flag = |bit: libc::c_ulong| opts.flags & bit != 0;
    if opts.read_only || flag(libc::MS_RDONLY) {
        config.mount_options.push(MountOption::RO);
    }
    // fuser mounts nosuid and nodev unless told otherwise.
    if opts.privileged && !flag(libc::MS_NOSUID) {
        config.mount_options.push(MountOption::Suid);
    }
    if opts.privileged && !flag(libc::MS_NODEV) {
        config.mount_options.push(MountOption::Dev);
    }
    for (bit, o) in [
        (libc::MS_NOEXEC, MountOption::NoExec),
        (libc::MS_NOATIME, MountOption::NoAtime),
        (libc::MS_SYNCHRONOUS, MountOption::Sync),
        (libc::MS_DIRSYNC, MountOption::DirSync),
    ] {
        if flag(bit) {
            config.mount_options.push(o);
        }
    }
    if opts.privileged {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(opts.threads);
    config.clone_fd = true;
    config.io_uring = opts.io_uring;
    config
}

impl Mounted {
    /// Waits until serving stops. `Ok` when the kernel ended the connection (unmounted);
    /// the error otherwise.
    pub fn join(self) -> io::Result<()> {
        let mut session = self.session;
        // Take the workers' handle out (a finished stand-in takes its place) so that
        // `session`, which owns fuser's unmount-on-drop, stays ours to drop or to forget.
        let workers = std::mem::replace(&mut session.guard, std::thread::spawn(|| Ok(())));
        let joined = workers.join();
        if let Some(c) = &self.counts {
            c.write();
        }
        match joined {
            Err(_) => Err(io::Error::other("a worker panicked")),
            // ENODEV or DESTROY: the kernel ended the connection, so the mount is gone.
            Ok(Ok(())) => {
                std::mem::forget(session);
                Ok(())
            }
            // Unmounted while requests were in flight: the kernel aborts the connection.
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ECONNABORTED) => {
                std::mem::forget(session);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
        }
    }
}
