//! Metadata-only copy-up (`metacopy=on`), as the kernel does it: a change of metadata
//! (chmod, chown, utimens, an xattr) of a lower regular file copies its metadata only. The
//! upper file is a hole of the file's size carrying `*.overlay.metacopy` (empty, as the
//! kernel writes it) and the origin record; its data stays in the lower file at the same
//! path (or at the file's absolute `*.overlay.redirect`, which the kernel writes when it
//! renames one). Reads go to that lower file. Anything that needs the data in the upper
//! (a write open, a truncation, a rename or a hard link) copies it in first and then
//! removes the mark, as the kernel does (`ovl_copy_up_meta_inode_data`). Uppers the kernel
//! wrote with `metacopy=on` are read the same way, with or without the option.

use std::os::fd::{AsFd, OwnedFd};

use super::inode::Node;
use super::lower::{join, Rel};
use super::Union;
use crate::error::{Error, Result};
use crate::sys::{self, Stat};
use crate::upper::copyup;

impl Union {
    /// True when `node`'s upper file (open at `fd`, `fstat` `st`) is a metadata-only copy.
    pub(super) fn is_metacopy_fd(&self, node: &Node, fd: &OwnedFd, st: &Stat) -> Result<bool> {
        match &self.upper {
            Some(up) if up.xattrs && st.st_size > 0 && node.loc().upper => {
                crate::format::is_metacopy(fd.as_fd(), up.ns)
                    .map_err(Error::io("getxattr metacopy"))
            }
            _ => Ok(false),
        }
    }

    /// Where a metadata-only copy's data is: its redirect, the lower file it was copied
    /// from, else the same path in the lowers.
    fn data_rel(&self, node: &Node) -> Result<Rel> {
        let up = self.upper()?;
        let redirect = self.with_place(node, |d, n| {
            match sys::getxattr_at(d, n, up.ns.redirect()) {
                Ok(v) => Ok(Some(v)),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA | libc::ENOTSUP)) => {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        })?;
        if let Some(abs) = redirect.as_deref().and_then(|v| v.strip_prefix(b"/")) {
            return Ok(abs.into());
        }
        let loc = node.loc();
        if let Some(rel) = loc.lower {
            return Ok(rel);
        }
        let parent = loc.parent.as_ref().ok_or(Error::Invalid)?;
        let pl = parent
            .loc()
            .lower
            .ok_or(Error::Bug("metacopy with no lower"))?;
        Ok(join(&pl, &loc.name))
    }

    /// Opens the lower file holding a metadata-only copy's data.
    pub(super) fn open_metacopy_data(&self, node: &Node, flags: i32) -> Result<(OwnedFd, Stat)> {
        let rel = self.data_rel(node)?;
        let le = self
            .lowers
            .entry(&self.stack, &rel)
            .map_err(Error::io("lower lookup"))?
            .ok_or(Error::Bug("metacopy data not found in the lowers"))?;
        self.ensure_lower(&le)?;
        let fd = le
            .parent
            .with_dir_of(le.entry(), |d| {
                sys::openat(d, &sys::cstr(&le.entry().name)?, flags | libc::O_NONBLOCK)
            })
            .map_err(Error::io("open metacopy data"))?;
        let st = sys::fstat(fd.as_fd()).map_err(Error::io("fstat"))?;
        Ok((fd, st))
    }

    /// Copies up `node` for a change of metadata: metadata only with `metacopy=on` for a
    /// non-empty regular file, else whole.
    pub(super) fn copy_up_meta(&self, node: &std::sync::Arc<Node>) -> Result<()> {
        let meta = self.cfg.metacopy && !node.is_dir && node.fmt == libc::S_IFREG;
        let meta = meta && self.upper()?.xattrs;
        self.copy_up_with(node, true, meta)
    }

    /// Before the upper copy of `node` is written, cut, renamed or linked: if it is a
    /// metadata-only copy, copies its data in (unless `data` is false: the caller cuts it
    /// to nothing) and removes the mark. The caller holds the namespace lock exclusively.
    pub(super) fn fill_metacopy(&self, node: &Node, data: bool) -> Result<()> {
        let Some(up) = self.upper.as_ref().filter(|u| u.xattrs) else {
            return Ok(());
        };
        let loc = node.loc();
        if node.is_dir || !loc.upper || loc.unlinked || node.fmt != libc::S_IFREG {
            return Ok(());
        }
        if node.detached.get().is_some() {
            // Removed while open: no name to fill it through (a later write open of such a
            // file, through /proc, is refused by `open_real`).
            return Ok(());
        }
        let marked = self.with_place(node, |d, n| {
            match sys::getxattr_at(d, n, up.ns.metacopy()) {
                Ok(_) => Ok(true),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA | libc::ENOTSUP)) => {
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        })?;
        if !marked {
            return Ok(());
        }
        if data {
            let (src, st) = self.open_metacopy_data(node, libc::O_RDONLY)?;
            let dst = self.with_place(node, |d, n| {
                sys::openat(d, &sys::cstr(n)?, libc::O_WRONLY | libc::O_NONBLOCK)
            })?;
            copyup::copy_data(src.as_fd(), dst.as_fd(), st.st_size as u64)
                .map_err(Error::io("copy metacopy data"))?;
            if !self.volatile {
                sys::fsync(dst.as_fd(), false).map_err(Error::io("fsync"))?;
            }
        }
        self.with_place(node, |d, n| sys::removexattr_at(d, n, up.ns.metacopy()))?;
        log::debug!(
            "filled metacopy {:?}",
            String::from_utf8_lossy(&node.loc().name)
        );
        Ok(())
    }
}
