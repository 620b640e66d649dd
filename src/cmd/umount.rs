//! `layerfs umount MOUNTPOINT`, and the unmount a daemon does on a signal.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use layerfs_base::sys::{self, mountinfo};

pub fn run(mountpoint: &Path) -> Result<()> {
    let mp = std::fs::canonicalize(mountpoint)
        .with_context(|| format!("mountpoint {}", mountpoint.display()))?;
    if mountinfo::current_mount_type(&mp).is_none() {
        bail!("{}: not mounted", mp.display());
    }
    unmount(&mp, false)
}

/// Unmounts `mp`: umount(2) as root, `fusermount3 -u` otherwise. With `detach_if_busy` a busy
/// mount is detached instead (it goes once its last user leaves).
pub fn unmount(mp: &Path, detach_if_busy: bool) -> Result<()> {
    if sys::geteuid() == 0 {
        let r = match sys::umount(mp, 0) {
            Err(e) if detach_if_busy && e.raw_os_error() == Some(libc::EBUSY) => {
                sys::umount(mp, libc::MNT_DETACH)
            }
            r => r,
        };
        // EPERM: root of a user namespace that does not own this mount; fusermount3 may.
        if !matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EPERM)) {
            return r.with_context(|| format!("umount {}", mp.display()));
        }
    }
    let fusermount = |lazy: bool| {
        let mut c = Command::new("fusermount3");
        c.arg(if lazy { "-uz" } else { "-u" }).arg(mp);
        c.status()
            .context("running fusermount3 (install the fuse3 package)")
    };
    let mut status = fusermount(false)?;
    if !status.success() && detach_if_busy {
        status = fusermount(true)?;
    }
    if !status.success() {
        bail!("fusermount3 -u {} failed ({status})", mp.display());
    }
    Ok(())
}
