//! FUSE passthrough: the kernel reads the real file directly, no round trip per read.
//!
//! The kernel wants one backing id per inode shared by all its open handles, so ids are
//! kept per inode with a count of the handles using them, and closed with the last one.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fuser::{BackingId, ReplyOpen};
use log::debug;

#[derive(Default)]
pub struct Backing {
    enabled: AtomicBool,
    /// ino -> (backing id, open handles using it)
    ids: Mutex<HashMap<u64, (Arc<BackingId>, usize)>>,
    /// fh -> ino, for handles opened in passthrough mode
    handles: Mutex<HashMap<u64, u64>>,
}

impl Backing {
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// The backing id for `ino` (registering `fd` if it has none), counted for handle `fh`.
    /// `None` when the kernel refuses; the caller then serves reads itself.
    pub fn open(
        &self,
        ino: u64,
        fh: u64,
        fd: &Arc<OwnedFd>,
        reply: &ReplyOpen,
    ) -> Option<Arc<BackingId>> {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        let id = match ids.get_mut(&ino) {
            Some((id, n)) => {
                *n += 1;
                id.clone()
            }
            None => match reply.open_backing(fd.as_ref()) {
                Ok(id) => {
                    let id = Arc::new(id);
                    ids.insert(ino, (id.clone(), 1));
                    id
                }
                Err(e) => {
                    if e.raw_os_error() == Some(libc::EPERM) {
                        // Not ours to use (no CAP_SYS_ADMIN in the initial user namespace,
                        // e.g. a rootless mount): stop trying, for every later open.
                        log::info!(
                            "passthrough refused by the kernel ({e}); serving reads instead"
                        );
                        self.set_enabled(false);
                    } else {
                        debug!("passthrough: backing open failed: {e}");
                    }
                    return None;
                }
            },
        };
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, ino);
        Some(id)
    }

    /// Drops handle `fh`'s use of its backing id, closing the id with its last handle.
    pub fn release(&self, _ino: u64, fh: u64) {
        let Some(ino) = self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh)
        else {
            return;
        };
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, n)) = ids.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                ids.remove(&ino);
            }
        }
    }
}
