//! Patch 9 (PATCHES.md): a connection that outlives the process serving it.
//!
//! The kernel ends a FUSE connection when the last fd of it closes, and ends the requests a
//! worker had read (ECONNABORTED) when that worker's own fd closes. So a supervisor process
//! keeps every fd of the connection (the mount's and one clone per worker, made once) and a
//! serving process inherits them: when it dies, nothing closes, its unanswered requests stay
//! on the connection, and the next serving process has the kernel queue them again
//! (`FUSE_NOTIFY_RESEND`, kernel 6.9+; such a request's unique carries
//! [`RESEND_BIT`]). The INIT handshake happens once per connection: its request bytes are
//! kept ([`Session::init_request`]) and replayed into the next process's filesystem
//! (`init` runs again, its reply goes nowhere), so that it negotiates the same things.
//!
//! A [`Gate`] stops a serving process at a request boundary: once closed, requests in
//! progress finish, requests read later are left unanswered (queued again by the next
//! process's resend), and [`Gate::drain`] returns when none is in progress.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::{Condvar, Mutex};

use super::{FilesystemHolder, Session, UmountOnDrop};
use crate::Filesystem;
use crate::channel::Channel;
use crate::dev_fuse::DevFuse;
use crate::mnt::Mount;
use crate::mnt::mount_options::{Config, check_option_conflicts};

/// The bit the kernel sets in the unique of a request it queued again after
/// `FUSE_NOTIFY_RESEND` (`FUSE_UNIQUE_RESEND`).
pub const RESEND_BIT: u64 = 1 << 63;

/// What a session on a kept connection carries besides a plain one.
#[derive(Debug, Default)]
pub(crate) struct Supervised {
    /// The workers' fds (clones made by the supervisor), used instead of new clones.
    workers: Vec<Channel>,
    /// INIT request bytes to replay instead of reading INIT from the kernel.
    replay: Option<Vec<u8>>,
    /// The INIT request bytes this session was set up with.
    pub(crate) init: Option<Vec<u8>>,
    pub(crate) gate: Option<Arc<Gate>>,
}

/// Mounts with `config` and returns the connection's fd, the mount left to the kernel (it
/// ends with an unmount, never with this process).
pub fn mount_connection(mountpoint: &Path, config: &Config) -> io::Result<OwnedFd> {
    check_option_conflicts(config)?;
    let (dev, mount) = Mount::new(mountpoint, &config.mount_options, config.acl)?;
    // Dropping `Mount` would unmount by path: the mount belongs to the connection now (it
    // may hold the device too, which then stays open with it).
    std::mem::forget(mount);
    Ok(dev.0.try_clone()?.into())
}

/// A new fd of the connection `fd` (`FUSE_DEV_IOC_CLONE`): requests read on it are its own.
pub fn clone_connection(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let new_dev = DevFuse::open()?;
    let mut source_fd = fd.as_raw_fd() as u32;
    // SAFETY: FUSE_DEV_IOC_CLONE on a fresh /dev/fuse fd; `&mut source_fd` is a valid,
    // aligned u32 the kernel reads the source fd from.
    unsafe {
        crate::ll::ioctl::fuse_dev_ioc_clone(new_dev.as_raw_fd(), &mut source_fd)?;
    }
    Ok(new_dev.0.into())
}

impl<FS: Filesystem> Session<FS> {
    /// A session on a kept connection: `fds[0]` is the mount's fd, the others the workers'
    /// (so `config.n_threads` should be `fds.len()`). Without `init` the kernel's INIT is
    /// read and answered; with it (the bytes of [`Session::init_request`] of an earlier
    /// process on this connection) the filesystem is initialised from them and nothing is
    /// sent.
    pub fn on_connection(
        filesystem: FS,
        mut fds: Vec<OwnedFd>,
        config: Config,
        init: Option<Vec<u8>>,
        gate: Arc<Gate>,
    ) -> io::Result<Session<FS>> {
        if fds.is_empty() {
            return Err(io::Error::other("no fd of the connection"));
        }
        let chan = |fd: OwnedFd| Channel::new(Arc::new(DevFuse(File::from(fd))));
        let first = fds.remove(0);
        let replaying = init.is_some();
        // A replayed INIT's reply goes to /dev/null: the kernel has had its answer.
        let ch = match replaying {
            true => Channel::new(Arc::new(DevFuse(
                std::fs::OpenOptions::new().write(true).open("/dev/null")?,
            ))),
            false => chan(first.try_clone()?),
        };
        let mut session = Session {
            filesystem: FilesystemHolder {
                fs: Some(filesystem),
            },
            ch,
            mount: UmountOnDrop {
                mount: Arc::new(parking_lot::Mutex::new(None)),
            },
            allowed: config.acl,
            session_owner: nix::unistd::geteuid(),
            proto_version: None,
            config,
            // Patch 7's rings live and die with the process that set them up: a kept
            // connection is served over `/dev/fuse` reads.
            rings: Vec::new(),
            supervised: Supervised {
                workers: fds.into_iter().map(chan).collect(),
                replay: init,
                init: None,
                gate: Some(gate),
            },
        };
        session.handshake()?;
        if replaying {
            session.ch = chan(first);
        }
        Ok(session)
    }

    /// The INIT request this session was set up with (on a connection from
    /// [`Session::on_connection`]), for the next process.
    pub fn init_request(&self) -> Option<&[u8]> {
        self.supervised.init.as_deref()
    }

    /// The INIT request: the one to replay, or the kernel's (kept).
    pub(super) fn read_init(&mut self, buf: &mut [u8]) -> nix::Result<usize> {
        let size = match self.supervised.replay.take() {
            Some(b) if b.len() <= buf.len() => {
                buf[..b.len()].copy_from_slice(&b);
                b.len()
            }
            Some(_) => return Err(nix::errno::Errno::EINVAL),
            None => self.ch.receive_retrying(buf)?,
        };
        self.supervised.init = Some(buf[..size].to_vec());
        Ok(size)
    }
}

impl Supervised {
    /// The channel for another worker: one the supervisor made, if any is left.
    pub(super) fn worker_channel(&mut self) -> Option<Channel> {
        self.workers.pop()
    }
}

/// Admits requests until closed; counts those in progress.
#[derive(Debug, Default)]
pub struct Gate {
    closed: AtomicBool,
    busy: AtomicUsize,
    idle: Mutex<()>,
    wake: Condvar,
}

/// A request in progress (see [`Gate::enter`]).
#[derive(Debug)]
pub(crate) struct Pass<'a>(&'a Gate);

impl Gate {
    /// A pass for one request, or `None` once closed (the request is then left unanswered).
    pub(crate) fn enter(&self) -> Option<Pass<'_>> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.leave();
            return None;
        }
        Some(Pass(self))
    }

    fn leave(&self) {
        if self.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            let _g = self.idle.lock();
            self.wake.notify_all();
        }
    }

    /// Closes the gate and waits until no request is in progress.
    pub fn drain(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let mut g = self.idle.lock();
        while self.busy.load(Ordering::SeqCst) != 0 {
            self.wake.wait(&mut g);
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ll::fuse_abi::fuse_notify_code;
    use crate::ll::notify::Notification;

    #[test]
    fn resend_is_a_bare_header_with_code_7() {
        let n = Notification::new_empty();
        let bytes = n
            .with_iovec(fuse_notify_code::FUSE_NOTIFY_RESEND, |iov| {
                iov.iter().flat_map(|s| s.to_vec()).collect::<Vec<u8>>()
            })
            .unwrap();
        // fuse_out_header: len u32, error i32 (the notify code), unique u64 (0).
        assert_eq!(bytes.len(), 16);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), 16);
        assert_eq!(i32::from_ne_bytes(bytes[4..8].try_into().unwrap()), 7);
        assert_eq!(u64::from_ne_bytes(bytes[8..16].try_into().unwrap()), 0);
    }

    #[test]
    fn a_drained_gate_admits_nothing_and_waits_for_what_it_admitted() {
        let gate = Arc::new(Gate::default());
        let pass = gate.enter().expect("open");
        let g = gate.clone();
        let drained = std::thread::spawn(move || g.drain());
        // The drain cannot end while `pass` lives; once closed, no new pass.
        while gate.enter().is_some() {
            std::thread::yield_now();
        }
        assert!(!drained.is_finished());
        drop(pass);
        drained.join().unwrap();
        assert!(gate.enter().is_none());
    }
}
