//! The set-id bits a change to a file takes away, decided here. The kernel leaves that to
//! us (`FUSE_HANDLE_KILLPRIV_V2`, which spares every write a round trip), and the upper
//! filesystem cannot do it for us: our own writes and truncations hold `CAP_FSETID`, so it
//! keeps the bits (it does drop `security.capability`, and on a chown the set-id bits, as
//! it would for any root).
//!
//! The rules are the VFS's. Writing or truncating a regular file drops set-user-id, and
//! set-group-id when the group may execute it or the caller is not in the file's group,
//! unless the caller holds `CAP_FSETID` (`setattr_should_drop_suidgid`). A chown(-1, -1)
//! drops set-user-id whoever asks, set-group-id as before, and needs the owner for that.
//!
//! Whether the caller holds `CAP_FSETID` is the kernel's to say, in its own namespace: it
//! marks a write (`FUSE_WRITE_KILL_SUIDGID`), a truncation (`FATTR_KILL_SUIDGID`) and an
//! `O_TRUNC` open (`FUSE_OPEN_KILL_SUIDGID`) by a caller without it, and sends its own empty
//! `SETATTR` before other changes of data (fallocate, copy_file_range, a write through the
//! page cache or a backing file) only when it found bits the caller's change must drop. An
//! unmarked change keeps the bits. Group membership is judged by the caller's fsgid (the
//! request's gid): supplementary groups do not reach us (docs/SEMANTICS.md).

use std::os::fd::BorrowedFd;

use layerfs_fuse::{Ctx, Inval};

use super::Union;
use crate::error::{Error, Result};
use crate::sys::{self, Stat};

/// Who changes a file, as far as its set-id bits are concerned.
#[derive(Debug, Clone, Copy)]
pub(super) struct Changer {
    /// The caller's fsuid and fsgid, as the mount shows ids.
    pub uid: u32,
    pub gid: u32,
    /// The kernel marked the change: the caller lacks `CAP_FSETID` (or, for its empty
    /// `SETATTR`, found bits to drop).
    pub marked: bool,
}

impl Changer {
    /// The caller of `ctx`; `marked` as the kernel said.
    pub fn new(ctx: Ctx, marked: bool) -> Changer {
        Changer {
            uid: ctx.uid,
            gid: ctx.gid,
            marked,
        }
    }

    /// Root of the mount's user namespace: taken to hold `CAP_FOWNER` and `CAP_FSETID` where
    /// the kernel does not say (a chown(-1, -1)).
    fn root(self) -> bool {
        self.uid == 0
    }
}

/// Set-group-id lost by a change (`setattr_should_drop_sgid`): with group execute always,
/// else when the caller (fsgid `by_gid`) is neither in the file's group `gid` nor `capable`.
fn sgid_lost(mode: u32, gid: u32, by_gid: u32, capable: bool) -> u32 {
    let kept = mode & libc::S_IXGRP == 0 && (capable || by_gid == gid);
    if mode & libc::S_ISGID == 0 || kept {
        0
    } else {
        libc::S_ISGID
    }
}

/// The mode a change of data by `by` leaves a file with attributes `st` (ids as the kernel
/// shows them); `None` when no bit goes.
pub(super) fn mode_after_write(st: &Stat, by: Changer) -> Option<u32> {
    let mode = st.st_mode;
    if !by.marked
        || mode & libc::S_IFMT != libc::S_IFREG
        || mode & (libc::S_ISUID | libc::S_ISGID) == 0
    {
        return None;
    }
    let bits = (mode & libc::S_ISUID) | sgid_lost(mode, st.st_gid, by.gid, false);
    (bits != 0).then_some(mode & 0o7777 & !bits)
}

/// The mode a chown(-1, -1) by `by` leaves a non-directory with attributes `st`; `None`
/// when no bit goes. Refused (EPERM) when bits would go and the caller may not chmod.
pub(super) fn mode_after_chown(st: &Stat, by: Changer) -> Result<Option<u32>> {
    let mode = st.st_mode;
    if mode & libc::S_IFMT == libc::S_IFDIR || mode & (libc::S_ISUID | libc::S_ISGID) == 0 {
        return Ok(None);
    }
    let bits = (mode & libc::S_ISUID) | sgid_lost(mode, st.st_gid, by.gid, by.root());
    if bits == 0 {
        return Ok(None);
    }
    if by.uid != st.st_uid && !by.root() {
        return Err(Error::NotOwner);
    }
    Ok(Some(mode & 0o7777 & !bits))
}

impl Union {
    /// Before `by` changes the data of the file open at `fd` (node id `ino`): drops the
    /// set-id bits the change takes away, and tells the kernel its cached mode is stale.
    pub(super) fn drop_setid(&self, ino: u64, fd: BorrowedFd<'_>, by: Changer) -> Result<()> {
        let st = sys::fstat(fd).map_err(Error::io("fstat"))?;
        if st.st_mode & (libc::S_ISUID | libc::S_ISGID) == 0 {
            return Ok(());
        }
        let shown = self.cfg.present(st, super::Ino(ino));
        if let Some(mode) = mode_after_write(&shown, by) {
            sys::fchmod(fd, mode).map_err(Error::io("chmod"))?;
            self.invalidate.send(Inval::Attr(ino));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(mode: u32, uid: u32, gid: u32) -> Stat {
        let mut st: Stat = crate::sys::zeroed_stat();
        (st.st_mode, st.st_uid, st.st_gid) = (libc::S_IFREG | mode, uid, gid);
        st
    }

    /// A caller the kernel marked, in group 7.
    const MARKED: Changer = Changer {
        uid: 1000,
        gid: 7,
        marked: true,
    };

    #[test]
    fn a_marked_write_drops_set_group_id_with_group_execute_or_outside_the_group() {
        assert_eq!(mode_after_write(&st(0o6755, 0, 0), MARKED), Some(0o755));
        assert_eq!(mode_after_write(&st(0o6745, 0, 0), MARKED), Some(0o745));
        assert_eq!(mode_after_write(&st(0o6745, 0, 7), MARKED), Some(0o2745));
        assert_eq!(mode_after_write(&st(0o4745, 0, 0), MARKED), Some(0o745));
        assert_eq!(mode_after_write(&st(0o0777, 0, 0), MARKED), None);
        let mut dir = st(0o6755, 0, 0);
        dir.st_mode = libc::S_IFDIR | 0o6755;
        assert_eq!(mode_after_write(&dir, MARKED), None);
    }

    #[test]
    fn an_unmarked_write_keeps_every_bit() {
        let by = Changer {
            marked: false,
            ..MARKED
        };
        assert_eq!(mode_after_write(&st(0o6755, 0, 0), by), None);
    }

    #[test]
    fn set_group_id_without_group_execute_stays_for_a_member() {
        assert_eq!(sgid_lost(0o2745, 7, 7, false), 0);
        assert_eq!(sgid_lost(0o2745, 8, 7, false), libc::S_ISGID);
        assert_eq!(sgid_lost(0o2745, 8, 7, true), 0);
        assert_eq!(sgid_lost(0o2755, 7, 7, true), libc::S_ISGID);
    }

    #[test]
    fn chown_to_nothing_needs_the_owner_to_drop_bits() {
        assert!(matches!(
            mode_after_chown(&st(0o4755, 0, 0), MARKED),
            Err(Error::NotOwner)
        ));
        assert!(matches!(
            mode_after_chown(&st(0o4755, 1000, 0), MARKED),
            Ok(Some(0o755))
        ));
        assert!(matches!(
            mode_after_chown(&st(0o755, 0, 0), MARKED),
            Ok(None)
        ));
    }
}
