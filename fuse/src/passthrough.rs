//! FUSE passthrough: the kernel reads and writes the real file directly, no round trip per
//! read or write.
//!
//! The kernel puts each inode in one I/O mode while it has open files (fs/fuse/iomode.c):
//! passthrough, bound to one backing file, or cached. An open that does not fit the mode
//! of the inode's other open files fails with EIO: a cached open (direct I/O too) while a
//! passthrough one lives, a passthrough open while a cached one lives, or a passthrough open
//! with another backing file. So the mode of an inode is chosen by its first open and kept
//! by every later one until the last handle goes: the core offers a backing file when the
//! kernel may use it, and an open without one (a lower file of a writable mount, which a
//! later write open would copy up: the copy could not be bound to the inode while the lower
//! file is) puts the inode in cached mode.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fuser::BackingId;
use log::{debug, warn};

use crate::core::BackingFile;

/// The I/O mode of an inode with open handles.
enum Mode {
    /// Passthrough to `file` through `id`.
    Pass {
        id: Arc<BackingId>,
        file: (u64, u64),
    },
    /// Served by the core, through the kernel's page cache of the FUSE inode.
    Cached,
}

struct Inode {
    mode: Mode,
    handles: usize,
}

#[derive(Default)]
pub struct Backing {
    enabled: AtomicBool,
    /// ino -> its mode while it has open handles
    inodes: Mutex<HashMap<u64, Inode>>,
    /// fh -> ino, for the handles counted in `inodes`
    handles: Mutex<HashMap<u64, u64>>,
}

impl Backing {
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Counts handle `fh` of `ino` and returns the backing id to open it with, or `None` to
    /// open it in cached mode (always, when passthrough is off). The first open of an inode
    /// with a `backing` file registers it through `register`.
    pub fn open(
        &self,
        ino: u64,
        fh: u64,
        backing: Option<&BackingFile>,
        register: impl FnOnce(&OwnedFd) -> io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        if !self.enabled() {
            return None;
        }
        let mut inodes = self.inodes.lock().unwrap_or_else(|p| p.into_inner());
        let id = match inodes.get_mut(&ino) {
            Some(n) => {
                n.handles += 1;
                match &n.mode {
                    Mode::Cached => None,
                    Mode::Pass { id, file } => {
                        if backing.is_some_and(|b| b.file != *file) {
                            // Cannot happen: a node in passthrough mode is an upper file
                            // (or a file of a read-only mount), which stays the same file.
                            // The kernel accepts nothing else than this id.
                            warn!("passthrough: inode {ino} opened on another file");
                        }
                        Some(id.clone())
                    }
                }
            }
            None => {
                let mode = match backing.map(|b| (b, register(b.fd.as_ref()))) {
                    Some((b, Ok(id))) => Mode::Pass {
                        id: Arc::new(id),
                        file: b.file,
                    },
                    Some((_, Err(e))) => {
                        self.refused(&e);
                        Mode::Cached
                    }
                    None => Mode::Cached,
                };
                let id = match &mode {
                    Mode::Pass { id, .. } => Some(id.clone()),
                    Mode::Cached => None,
                };
                inodes.insert(ino, Inode { mode, handles: 1 });
                id
            }
        };
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, ino);
        id
    }

    fn refused(&self, e: &io::Error) {
        if e.raw_os_error() == Some(libc::EPERM) {
            // Not ours to use (no CAP_SYS_ADMIN in the initial user namespace, e.g. a
            // rootless mount): stop trying, for every later open.
            log::info!("passthrough refused by the kernel ({e}); serving file data instead");
            self.set_enabled(false);
        } else {
            debug!("passthrough: backing open failed: {e}");
        }
    }

    /// Drops handle `fh`; its inode leaves its mode (closing a backing id) with the last.
    pub fn release(&self, fh: u64) {
        let Some(ino) = self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh)
        else {
            return;
        };
        let mut inodes = self.inodes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = inodes.get_mut(&ino) {
            n.handles -= 1;
            if n.handles == 0 {
                inodes.remove(&ino);
            }
        }
    }
}
