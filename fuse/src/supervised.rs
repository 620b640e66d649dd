//! Serving a connection another process keeps (the supervisor of a mount that outlives its
//! daemon; `vendor/fuser`'s patch 7).
//!
//! The supervisor mounts ([`mount_connection`]) and clones one fd per worker
//! ([`clone_connection`]), keeps them all, and starts serving processes on them; each
//! serves with [`serve_connection`]. The first answers the kernel's INIT and hands its
//! bytes on; a later one replays them into its adapter (so it negotiates what the first
//! did) and has the kernel queue again the requests its predecessor read and never
//! answered.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

pub use fuser::{clone_connection, Gate};

use crate::session::{adapter_of, fuser_config};
use crate::{Core, Mounted, SessionOptions};

/// Mounts on `mountpoint` as [`crate::mount`] would, and returns the connection's fd without
/// serving it.
pub fn mount_connection(mountpoint: &Path, opts: &SessionOptions) -> io::Result<OwnedFd> {
    fuser::mount_connection(mountpoint, &fuser_config(opts))
}

/// A process serving a kept connection.
pub struct Serving {
    pub mounted: Mounted,
    /// The INIT request, for the next process.
    pub init: Vec<u8>,
    /// Closed to stop at a request boundary (requests read later are left to the next
    /// process).
    pub gate: Arc<Gate>,
}

/// Serves `core` on the connection's fds (`fds[0]` the mount's, one more per worker). With
/// `init` (an earlier process's [`Serving::init`]) the INIT is replayed and the requests
/// left unanswered by earlier processes are queued again.
pub fn serve_connection<C: Core>(
    core: C,
    fds: Vec<OwnedFd>,
    init: Option<Vec<u8>>,
    opts: &SessionOptions,
) -> io::Result<Serving> {
    let mut config = fuser_config(opts);
    config.n_threads = Some(fds.len());
    let restarted = init.is_some();
    let (adapter, invalidate, counts) = adapter_of(core, opts);
    let gate = Arc::new(Gate::default());
    let session = fuser::Session::on_connection(adapter, fds, config, init, gate.clone())?;
    let init = session
        .init_request()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| io::Error::other("no INIT request"))?;
    let notifier = session.notifier();
    if let Some(inv) = &invalidate {
        inv.connect(notifier.clone());
    }
    let session = session.spawn()?;
    if restarted {
        // The workers are reading: what the dead process held comes back to them.
        notifier.resend()?;
    }
    Ok(Serving {
        mounted: Mounted { session, counts },
        init,
        gate,
    })
}
