//! Copy-up: a lower entry's upper copy, built in the workdir and renamed into place; and a
//! node that gives its name up to a new node for the copy when the kernel reads its lower
//! file directly.

use std::os::fd::AsFd;
use std::sync::Arc;

use layerfs_fuse::Inval;

use super::inode::Node;
use super::table::Key;
use super::Union;
use crate::error::{Error, Result};
use crate::format;
use crate::sys;
use crate::upper::copyup::{self, CopyOpts};

impl Union {
    /// Copies `node` up (parents first); `data: false` leaves a file empty (`O_TRUNC`).
    /// Takes effect atomically (built in the workdir, renamed into place). The caller holds
    /// the namespace lock exclusively.
    pub(super) fn copy_up(&self, node: &Arc<Node>, data: bool) -> Result<()> {
        self.copy_up_with(node, data, false)
    }

    /// [`Self::copy_up`], metadata only with `meta` (see `metacopy.rs`).
    pub(super) fn copy_up_with(&self, node: &Arc<Node>, data: bool, meta: bool) -> Result<()> {
        let loc = node.loc();
        if loc.upper {
            return Ok(());
        }
        if loc.unlinked {
            return Err(Error::NotFound);
        }
        if node.lower_opens.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            // The kernel reads the lower file through this node's open files, and would
            // refuse the copy as the node's file while they live: the name gets a new node,
            // which the kernel finds when it looks again (ESTALE), and copies up then.
            self.supersede(node);
            return Err(Error::Superseded);
        }
        let parent = loc.parent.as_ref().ok_or(Error::Invalid)?;
        let pfd = self.ensure_upper_dir(parent)?;
        let le = self.lower_of(&loc)?;
        let mut st = le.attr().map_err(Error::io("lstat"))?;
        if format::is_whiteout_device(st.st_mode, st.st_rdev) {
            // A lower entry shown as a device 0:0 is a nested overlay's whiteout: copied up
            // as it is stored (an empty file with the escaped whiteout mark, which the copy
            // keeps), into its parent marked as holding one.
            self.mark_nested(parent)?;
            let name = sys::cstr(&loc.name).map_err(Error::io("name"))?;
            st = le
                .parent
                .with_dir_of(le.entry(), |d| sys::lstatat(d, &name))
                .map_err(Error::io("lstat"))?;
        }
        // The origin names the lower file by handle (null uuid, as the kernel writes it).
        let up = self.upper()?;
        let opts = CopyOpts {
            fsync: !self.volatile,
            origin: up.xattrs.then_some(up.ns),
            data,
            metacopy: (meta && st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_size > 0)
                .then_some(up.ns),
            owner_optional: self.cfg.ids.squashes(),
        };
        // The parent's times before the copy lands in it, put back after (as the kernel's
        // overlay does): a copy-up changes no name in the parent as the mount shows it.
        let pst = sys::fstat(pfd.as_fd()).map_err(Error::io("fstat"))?;
        if data && !meta && st.st_mode & libc::S_IFMT == libc::S_IFREG {
            // A lazy layer's file is copied with its content, never its placeholder.
            self.ensure_lower(&le)?;
        }
        if data && !meta && self.verifier.is_some() && st.st_mode & libc::S_IFMT == libc::S_IFREG {
            // `-o verify`: no byte of a lower file that differs from its hash list is copied.
            let name = sys::cstr(&loc.name).map_err(Error::io("name"))?;
            let fd = le
                .parent
                .with_dir_of(le.entry(), |d| sys::openat(d, &name, libc::O_RDONLY))
                .map_err(Error::io("open"))?;
            self.verify_lower(&le, fd.as_fd(), &st)?;
        }
        le.parent
            .with_dir_of(le.entry(), |d| {
                copyup::copy_up(d, &loc.name, &st, &up.work, pfd.as_fd(), opts)
            })
            .map_err(Error::io("copy-up"))?;
        let rel = loc.lower.as_deref().unwrap_or_default();
        log::debug!("copied up {}", String::from_utf8_lossy(rel));
        node.set_loc(|l| l.upper = true);
        let (at, mt) = sys::times_of(&pst);
        if let Err(e) = sys::futimens(pfd.as_fd(), at, mt) {
            // Best effort, as on the kernel: the copy is in place either way.
            log::debug!("restoring the times of {:?}'s parent: {e}", loc.name);
        }
        // The copy's ctime and blocks are its own: the kernel did not see that happen. The
        // parent's times are as they were (its ctime moved, which the kernel's cache keeps
        // until the next change it sees there: not dropped, as that would cost every later
        // lookup in the directory a GETATTR under `default_permissions`).
        if !node.is_dir {
            let name = sys::cstr(&loc.name).map_err(Error::io("name"))?;
            let ust = sys::lstatat(pfd.as_fd(), &name).map_err(Error::io("lstat"))?;
            if st.st_nlink > 1 {
                // A name of a lower hard link: the copy is a file of its own, apart from
                // the other names (their nodes keep the lower file), and shows its own
                // number, as on the kernel (the origin's only for a lower with one link);
                // every name the copy gets through the mount shows that number too.
                let own = self.stack.upper_ino(ust.st_ino);
                self.upper_inos.insert(ust.st_ino, own);
                let old = node.renumber(own, Key::Ino(own));
                self.table.rekey(node, &old);
            } else if self.upper_ino(&ust, None, pfd.as_fd(), &loc.name, None)? != node.ino() {
                // No origin the number reads back from: remember it for this mount.
                self.upper_inos.insert(ust.st_ino, node.ino());
            }
        }
        self.invalidate.send(Inval::Attr(node.id.0));
        Ok(())
    }

    /// `node` keeps the lower file its open files are bound to, and gives up its name: it is
    /// found by its id only, as a removed file (its open files read on, its attributes are
    /// the lower file's), and the next lookup of the name makes a new node. The kernel's
    /// overlay would show those open files the copy's later writes; passthrough binds them
    /// to the lower file (docs/SEMANTICS.md).
    fn supersede(&self, node: &Arc<Node>) {
        let old = node.renumber(node.ino(), Key::Gone(node.id));
        self.table.rekey(node, &old);
        node.set_loc(|l| l.unlinked = true);
        log::debug!("node {} superseded: its lower file is open", node.id.0);
    }
}
