//! `xattr_permissions=1|2`: owners and modes kept in an override_stat xattr, as
//! containers/storage's `force_mask` stores them (see `format::override_stat`). With it
//! on, what a caller sets with chown, chmod or as the owner of a new file goes into the
//! xattr, and the file on disk keeps its mask and the daemon's owner; what the mount shows
//! is the xattr's owner and mode wherever a layer has one (a store's layers carry it on
//! every file), the file's own elsewhere.

use super::inode::Node;
use super::Union;
use crate::error::{Error, Result};
use std::borrow::Cow;

use crate::format::{Override, XattrRefused, OVERRIDE_XATTRS};
use crate::stack::dirindex::Xattrs;
use crate::sys::{self, Stat};

/// The override a file's xattrs carry, the most trusted name first.
fn find(x: &Xattrs) -> Option<Override> {
    OVERRIDE_XATTRS
        .iter()
        .find_map(|name| Override::parse(x.get(name.to_bytes())?))
}

/// True for the file types an override applies to (user xattrs exist only on these).
pub(super) fn takes_override(mode: u32) -> bool {
    matches!(mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFDIR)
}

impl Union {
    /// True when owners and modes are kept in override xattrs (`xattr_permissions=`).
    pub(super) fn overrides(&self) -> bool {
        self.cfg.overrides.is_some()
    }

    /// The name kept in the layers for `shown`, an xattr name given through the mount
    /// (`format::xattr_stored`: an overlay name escaped one level for a nested overlay).
    /// Refused: the union's own names, an empty overlay name (EINVAL, as the kernel), and
    /// with overrides on, the override xattrs (a caller could forge an owner with them).
    pub(super) fn stored_xattr<'a>(&self, shown: &'a [u8]) -> Result<Cow<'a, [u8]>> {
        if self.overrides() && crate::format::is_override_xattr(shown) {
            return Err(Error::PrivateXattr);
        }
        crate::format::xattr_stored(shown).map_err(|e| match e {
            XattrRefused::Private => Error::PrivateXattr,
            XattrRefused::Empty => Error::Invalid,
        })
    }

    /// How the layers' xattr name `stored` shows through the mount; `None`: never shown
    /// (the union's marks, override xattrs with overrides on).
    pub(super) fn shown_xattr<'a>(&self, stored: &'a [u8]) -> Option<Cow<'a, [u8]>> {
        if self.overrides() && crate::format::is_override_xattr(stored) {
            return None;
        }
        crate::format::xattr_shown(stored)
    }

    /// `st` (real, of `node`) with the owner and mode of its override xattr, if it has one.
    pub(super) fn overridden(&self, node: &Node, mut st: Stat) -> Stat {
        if !self.overrides() || !takes_override(st.st_mode) {
            return st;
        }
        match self.xattrs_of(node) {
            Ok(x) => {
                if let Some(o) = find(&x) {
                    st.st_uid = o.uid;
                    st.st_gid = o.gid;
                    st.st_mode = (st.st_mode & libc::S_IFMT) | o.mode;
                }
            }
            Err(e) => log::debug!("override of node {}: {e}", node.id.0),
        }
        st
    }

    /// A chown (ids as stored; `u32::MAX`: unchanged) and/or chmod of `node`, which is in
    /// the upper, kept in its override xattr. Other override names it carries go, so the
    /// one written is the one read back.
    pub(super) fn set_override(
        &self,
        node: &Node,
        uid: u32,
        gid: u32,
        mode: Option<u32>,
    ) -> Result<()> {
        let ns = self
            .cfg
            .overrides
            .ok_or(Error::Bug("no override namespace"))?;
        let cur = self.overridden(node, self.real_attr(node)?);
        let o = Override {
            uid: if uid == u32::MAX { cur.st_uid } else { uid },
            gid: if gid == u32::MAX { cur.st_gid } else { gid },
            mode: mode.unwrap_or(cur.st_mode) & 0o7777,
        };
        self.with_place(node, |d, n| {
            for other in OVERRIDE_XATTRS.iter().filter(|x| **x != ns.name()) {
                match sys::removexattr_at(d, n, other) {
                    Err(e) if !matches!(e.raw_os_error(), Some(libc::ENODATA | libc::EPERM)) => {
                        return Err(e)
                    }
                    _ => {}
                }
            }
            sys::setxattr_at(d, n, ns.name(), &o.encode(), 0)
        })
    }

    /// The owner and mode of a new entry `name` of upper directory `dir`, kept in its
    /// override xattr; the entry on disk stays the daemon's, with its mode opened to
    /// `0755` as fuse-overlayfs does (the daemon can always read it).
    pub(super) fn override_new(
        &self,
        dir: std::os::fd::BorrowedFd<'_>,
        name: &std::ffi::CStr,
        owner: (u32, u32),
        mode: u32,
    ) -> std::io::Result<()> {
        let Some(ns) = self.cfg.overrides else {
            return Ok(());
        };
        let o = Override {
            uid: owner.0,
            gid: owner.1,
            mode: mode & 0o7777,
        };
        sys::setxattr_at(dir, name.to_bytes(), ns.name(), &o.encode(), 0)?;
        sys::chmodat(dir, name, (mode | 0o755) & 0o7777)
    }
}
