//! An overlay stacked on the mount (a kernel overlay whose lower and upper are directories
//! of this mount): its whiteouts, devices 0:0 it makes with `mknod`, `RENAME_WHITEOUT` or
//! a link or rename of one, are kept as nested whiteouts (`format::nested`) and shown as
//! devices 0:0 again. Its xattrs pass escaped (`attrs.rs`, `fs.rs`).

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use super::inode::Node;
use super::Union;
use crate::error::{Error, Result};
use crate::format;
use crate::sys::{self, Stat};

impl Union {
    /// `st`, the `lstat` of `name` in upper directory `dir`, as the mount shows it: a
    /// nested whiteout as a device 0:0. Costs syscalls only for empty regular files.
    pub(super) fn shown_upper(&self, dir: BorrowedFd<'_>, name: &[u8], st: Stat) -> Result<Stat> {
        Ok(Self::shown_as(self.upper_entry(dir, name, &st)?, st))
    }

    /// What upper entry `name` of `dir` (`lstat`: `st`) is (`format::upper_entry`).
    pub(super) fn upper_entry(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        st: &Stat,
    ) -> Result<format::UpperEntry> {
        format::upper_entry(dir, name, st).map_err(Error::io("whiteout"))
    }

    /// [`Self::upper_entry`] in a directory whose marks are known (a listing).
    pub(super) fn upper_entry_with(
        dir: BorrowedFd<'_>,
        marks: &format::DirMarks,
        name: &[u8],
        st: &Stat,
    ) -> Result<format::UpperEntry> {
        format::upper_entry_with(dir, marks, name, st).map_err(Error::io("whiteout"))
    }

    /// `st` of an upper entry that is `what`, as the mount shows it.
    pub(super) fn shown_as(what: format::UpperEntry, st: Stat) -> Stat {
        match what {
            format::UpperEntry::Nested => format::show_nested_whiteout(st),
            _ => st,
        }
    }

    /// True when `node` shows as a nested whiteout (a node shown as a device 0:0, in the
    /// upper or a lower layer: the union's own whiteouts are never nodes).
    pub(super) fn is_nested(&self, node: &Node) -> bool {
        !node.is_dir
            && self
                .real_attr(node)
                .is_ok_and(|st| format::is_whiteout_device(st.st_mode, st.st_rdev))
    }

    /// Marks the upper copy of directory `dir` as holding nested whiteouts, before one
    /// lands there.
    pub(super) fn mark_nested(&self, dir: &Arc<Node>) -> Result<()> {
        let up = self.nested_upper()?;
        let pfd = self.ensure_upper_dir(dir)?;
        format::mark_holds_nested(pfd.as_fd(), up.ns).map_err(Error::io("setxattr"))
    }

    /// Whether directory `node`, about to have xattr `stored` set, holds nested whiteouts
    /// the set would unmark: the escaped opaque mark given another value than `x` (a
    /// nested overlay marking its directory opaque). Then [`Self::keep_nested_mark`] after.
    pub(super) fn unmarks_nested(&self, node: &Node, stored: &[u8]) -> Result<bool> {
        if !node.is_dir || !format::is_nested_opaque_xattr(stored) || !node.loc().upper {
            return Ok(false);
        }
        let fd = self.upper_dir(node)?;
        let marks = format::dir_marks(fd.as_fd()).map_err(Error::io("listxattr"))?;
        Ok(marks.nested_whiteouts)
    }

    /// Marks directory `node` again as holding nested whiteouts (the escaped `whiteouts`
    /// marker beside another escaped opaque value).
    pub(super) fn keep_nested_mark(&self, node: &Node) -> Result<()> {
        let fd = self.upper_dir(node)?;
        format::mark_holds_nested(fd.as_fd(), self.nested_upper()?.ns)
            .map_err(Error::io("setxattr"))
    }

    /// The upper, when it can keep nested whiteouts (it takes xattrs); else the kernel's
    /// answer to a whiteout made through an overlay: EPERM.
    pub(super) fn nested_upper(&self) -> Result<&crate::upper::Upper> {
        match self.upper()? {
            up if up.xattrs => Ok(up),
            _ => Err(Error::NotPermitted(
                "mknod of a whiteout on an upper without xattrs",
            )),
        }
    }

    /// `RENAME_WHITEOUT`'s whiteout, made before the rename: one built in the workdir,
    /// then directory `d1` marked as holding nested whiteouts; its workdir name.
    pub(super) fn nested_whiteout_in_work(&self, d1: &Arc<Node>) -> Result<CString> {
        let up = self.nested_upper()?;
        let (work, tmp) = (self.work()?, up.work.temp_name());
        format::write_nested_whiteout(work, &tmp, 0, up.ns).map_err(Error::io("whiteout"))?;
        if let Err(e) = self.mark_nested(d1) {
            let _ = sys::unlinkat(work, &tmp, 0);
            return Err(e);
        }
        Ok(tmp)
    }

    /// `RENAME_WHITEOUT`'s second half, after the source `n1` of `d1` is renamed away:
    /// the nested whiteout `tmp` moved from the workdir to the old name (over the union's
    /// own whiteout left there when a lower entry of that name would show again). A
    /// rename over a name just freed or into one that exists: nothing to allocate.
    pub(super) fn nested_whiteout_into(&self, tmp: &CStr, d1: &Arc<Node>, n1: &[u8]) -> Result<()> {
        let pfd = self.upper_dir(d1)?;
        let work = self.work()?;
        let c1 = super::ops::cname(n1)?;
        sys::renameat2(work, tmp, pfd.as_fd(), &c1, 0).map_err(|e| {
            let _ = sys::unlinkat(work, tmp, 0);
            Error::io("rename whiteout")(e)
        })
    }
}
