//! Attribute changes of a writable mount: setattr (mode, owner, size, times) and xattrs,
//! each on the node's own inode once it is in the upper (copied up first), with the set-id
//! bits a change of owner or data drops (`privs.rs`).

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use layerfs_fuse::{Entry, SetAttr, SetTime};

use super::inode::Node;
use super::ops::cname;
use super::privs::{mode_after_chown, mode_after_write, Changer};
use super::Union;
use crate::error::{Error, Result};
use crate::sys;

fn timespec(t: Option<SetTime>) -> libc::timespec {
    let nsec = match t {
        None => libc::UTIME_OMIT,
        Some(SetTime::Now) => libc::UTIME_NOW,
        Some(SetTime::At(t)) => {
            let (s, n) = match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
                Err(e) => {
                    let d = e.duration();
                    let (s, n) = (-(d.as_secs() as i64), d.subsec_nanos() as i64);
                    if n == 0 {
                        (s, 0)
                    } else {
                        (s - 1, 1_000_000_000 - n)
                    }
                }
            };
            return libc::timespec {
                tv_sec: s,
                tv_nsec: n,
            };
        }
    };
    libc::timespec {
        tv_sec: 0,
        tv_nsec: nsec,
    }
}

impl Union {
    /// An fd on the node's own inode for attribute changes: the upper root, a detached
    /// entry (its `O_PATH` fd: opening it could block on a fifo, fail on a symlink or
    /// socket, or open a device), or `None` (use its name in the upper parent).
    fn attr_fd(&self, node: &Node) -> Result<Option<OwnedFd>> {
        if let Some(fd) = node.detached.get() {
            return fd.try_clone().map(Some).map_err(Error::io("dup"));
        }
        if node.loc().parent.is_none() {
            let fd = sys::open_subdir(self.upper()?.fd.as_fd(), c".").map_err(Error::io("open"))?;
            return Ok(Some(fd));
        }
        Ok(None)
    }

    /// Changes attributes; `by` asked (a marked truncation, or the kernel's empty change
    /// before other data changes, takes set-id bits away: see `privs`).
    pub(super) fn setattr(&self, ino: u64, set: &SetAttr, by: Changer) -> Result<Entry> {
        let _g = self.exclusive();
        let node = self.node(ino)?;
        match set.size {
            Some(size) => {
                self.copy_up(&node, size != 0)?;
                self.fill_metacopy(&node, size != 0)?;
            }
            None => self.copy_up_meta(&node)?,
        }
        let own_fd = self.attr_fd(&node)?;
        let loc = node.loc();
        let pfd = match &loc.parent {
            Some(p) if own_fd.is_none() => Some(self.upper_dir(p)?),
            _ => None,
        };
        let c = cname(&loc.name)?;
        if let Some(size) = set.size {
            let handle = set
                .fh
                .and_then(|fh| self.files.get(fh))
                .filter(|h| h.upper.load(std::sync::atomic::Ordering::Acquire));
            let fd = match (handle, &own_fd, &pfd) {
                (Some(h), _, _) => h.fd.read().unwrap_or_else(|p| p.into_inner()).clone(),
                (None, Some(fd), _) => Arc::new(
                    sys::reopen(fd.as_fd(), libc::O_WRONLY | libc::O_NONBLOCK)
                        .map_err(Error::io("reopen"))?,
                ),
                (None, None, Some(p)) => Arc::new(
                    sys::openat(p.as_fd(), &c, libc::O_WRONLY | libc::O_NONBLOCK)
                        .map_err(Error::io("open"))?,
                ),
                (None, None, None) => return Err(Error::Invalid),
            };
            self.drop_setid(ino, fd.as_fd(), by)?;
            sys::ftruncate(fd.as_fd(), size).map_err(Error::io("truncate"))?;
        }
        // Nothing to change: the change time alone is a chown(-1, -1); nothing at all, the
        // kernel's own call before a change of data it does not mark (fallocate,
        // copy_file_range, a cached or backing-file write). Either may take set-id bits
        // away. (Without the writeback cache a chown(-1, -1) has no change time either and
        // counts as the latter.)
        let empty = set.mode.is_none()
            && set.uid.is_none()
            && set.gid.is_none()
            && set.size.is_none()
            && set.atime.is_none()
            && set.mtime.is_none();
        let mode = match set.mode {
            None if empty && set.ctime => mode_after_chown(&self.attr_of(&node)?, by)?,
            // The kernel sends it only when it found bits the caller's change drops.
            None if empty => {
                mode_after_write(&self.attr_of(&node)?, Changer { marked: true, ..by })
            }
            m => m,
        };
        let chown = set.uid.is_some() || set.gid.is_some();
        let uid = set.uid.map_or(u32::MAX, |u| self.cfg.ids.store_uid(u));
        let gid = set.gid.map_or(u32::MAX, |g| self.cfg.ids.store_gid(g));
        let overridden =
            self.overrides() && super::overrides::takes_override(self.real_attr(&node)?.st_mode);
        if overridden && (chown || mode.is_some()) {
            // The owner and mode go to the override xattr; the file keeps its own.
            self.set_override(&node, uid, gid, mode)?;
        } else if chown {
            let r = match (&own_fd, &pfd) {
                (Some(fd), _) => sys::fchown(fd.as_fd(), uid, gid),
                (None, Some(p)) => sys::lchownat(p.as_fd(), &c, uid, gid),
                _ => Ok(()),
            };
            match r {
                // Squashed owners show the same whatever is stored: a chown the upper
                // refuses (an id it cannot hold) succeeds, as with fuse-overlayfs.
                Err(e) if self.cfg.ids.squashes() => {
                    log::debug!("chown {:?} not stored (owners are squashed): {e}", loc.name)
                }
                r => r.map_err(Error::io("chown"))?,
            }
        }
        if let Some(mode) = mode.filter(|_| !overridden) {
            match (&own_fd, &pfd) {
                (Some(fd), _) => sys::fchmod(fd.as_fd(), mode & 0o7777),
                (None, Some(p)) => sys::chmodat(p.as_fd(), &c, mode & 0o7777),
                _ => Ok(()),
            }
            .map_err(Error::io("chmod"))?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let (a, m) = (timespec(set.atime), timespec(set.mtime));
            match (&own_fd, &pfd) {
                (Some(fd), _) => sys::futimens(fd.as_fd(), a, m),
                (None, Some(p)) => sys::lutimesat(p.as_fd(), &c, a, m),
                _ => Ok(()),
            }
            .map_err(Error::io("utimens"))?;
        }
        Ok(self.entry_of(&node, self.attr_of(&node)?))
    }

    /// Drops the set-gid bit of `ino` (in the upper, where an ACL change just put it), as the
    /// kernel's `posix_acl_update_mode` does for a caller outside the file's group.
    pub(super) fn drop_set_gid(&self, ino: u64) -> Result<()> {
        let _g = self.exclusive();
        let node = self.node(ino)?;
        self.with_place(&node, |d, n| {
            let c = sys::cstr(if n.is_empty() { b"." } else { n })?;
            let st = sys::lstatat(d, &c)?;
            if st.st_mode & libc::S_ISGID == 0 {
                return Ok(());
            }
            sys::chmodat(d, &c, st.st_mode & 0o7777 & !libc::S_ISGID)
        })
        // The kernel drops the file's attributes after a SETXATTR itself.
    }

    /// `setxattr` (`value: Some`) or `removexattr` (`None`); copies up first. Removing a
    /// name the entry does not have fails without a copy-up, as with the kernel.
    pub(super) fn set_xattr(
        &self,
        ino: u64,
        name: &OsStr,
        value: Option<(&[u8], i32)>,
    ) -> Result<()> {
        let name = self.stored_xattr(name.as_bytes())?;
        let xname = cname(&name)?;
        let _g = self.exclusive();
        let node = self.node(ino)?;
        if value.is_none() && !node.loc().upper {
            self.with_place(&node, |d, n| sys::getxattr_at(d, n, &xname))
                .map_err(|e| {
                    if e.errno() == libc::ENODATA {
                        Error::NoAttr
                    } else {
                        e
                    }
                })?;
        }
        self.copy_up_meta(&node)?;
        let unmarks = value.is_some() && self.unmarks_nested(&node, &name)?;
        let value = value.map(|(v, flags)| (self.cfg.ids.store_xattr(&name, v), flags));
        let r = self.with_place(&node, |d, n| match &value {
            Some((v, flags)) => sys::setxattr_at(d, n, &xname, v, *flags),
            None => sys::removexattr_at(d, n, &xname),
        });
        r.map_err(|e| {
            if e.errno() == libc::ENODATA {
                Error::NoAttr
            } else {
                e
            }
        })?;
        if unmarks {
            // The nested whiteouts in it stay whiteouts (`nested.rs`).
            self.keep_nested_mark(&node)?;
        }
        Ok(())
    }
}
