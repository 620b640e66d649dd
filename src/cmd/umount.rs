//! `layerfs umount MOUNTPOINT`.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use layerfs::{mountinfo, sys};

pub fn run(mountpoint: &Path) -> Result<()> {
    let mp = std::fs::canonicalize(mountpoint)
        .with_context(|| format!("mountpoint {}", mountpoint.display()))?;
    if mountinfo::current_mount_type(&mp).is_none() {
        bail!("{}: not mounted", mp.display());
    }
    if sys::geteuid() == 0 {
        return sys::umount(&mp, 0).with_context(|| format!("umount {}", mp.display()));
    }
    let status = Command::new("fusermount3")
        .arg("-u")
        .arg(&mp)
        .status()
        .context("running fusermount3 (install the fuse3 package)")?;
    if !status.success() {
        bail!("fusermount3 -u {} failed ({status})", mp.display());
    }
    Ok(())
}
