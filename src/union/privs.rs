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
//! A write arrives marked when its caller lacks `CAP_FSETID`; a truncation (`SETATTR` with
//! a size, an `O_TRUNC` open) and the kernel's own attribute change before other changes of
//! data (an empty `SETATTR`: fallocate, copy_file_range, a write through the page cache or
//! a backing file) do not carry it through our FUSE library, so the calling thread is
//! asked, through `/proc`, and only when the file has a set-id bit to lose.

use std::os::fd::BorrowedFd;

use layerfs_fuse::Inval;
use log::debug;

use super::Union;
use crate::error::{Error, Result};
use crate::sys::{self, Creds, Stat};

/// Who changes a file, as far as its set-id bits are concerned.
#[derive(Debug, Clone, Copy)]
pub(super) struct Changer {
    /// The calling thread (the request's pid; 0 when the kernel could not name it).
    pub tid: u32,
    /// The kernel said the caller lacks `CAP_FSETID` (a marked write).
    pub lacks_fsetid: bool,
}

impl Changer {
    pub fn thread(tid: u32) -> Changer {
        Changer {
            tid,
            lacks_fsetid: false,
        }
    }

    /// The caller's credentials; `None` when it cannot be asked (gone, or in a pid
    /// namespace we cannot see), which counts as no capability and no group: keeping a
    /// set-id bit over data its owner did not write is the failure that matters.
    fn creds(self) -> Option<Creds> {
        let c = sys::thread_creds(self.tid);
        if c.is_none() {
            debug!(
                "credentials of thread {}: unknown; set-id bits go",
                self.tid
            );
        }
        c
    }
}

/// Set-group-id lost by a change (`setattr_should_drop_sgid`): with group execute always,
/// else when the caller is neither in the file's group `gid` nor `capable`.
fn sgid_lost(mode: u32, gid: u32, creds: Option<&Creds>, capable: bool) -> u32 {
    let kept = mode & libc::S_IXGRP == 0 && (capable || creds.is_some_and(|c| c.in_group(gid)));
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
    if mode & libc::S_IFMT != libc::S_IFREG || mode & (libc::S_ISUID | libc::S_ISGID) == 0 {
        return None;
    }
    let creds = by.creds();
    if !by.lacks_fsetid && creds.as_ref().is_some_and(|c| c.capable(sys::CAP_FSETID)) {
        return None;
    }
    let bits = (mode & libc::S_ISUID) | sgid_lost(mode, st.st_gid, creds.as_ref(), false);
    (bits != 0).then_some(mode & 0o7777 & !bits)
}

/// The mode a chown(-1, -1) by `by` leaves a non-directory with attributes `st`; `None`
/// when no bit goes. Refused (EPERM) when bits would go and the caller may not chmod.
pub(super) fn mode_after_chown(st: &Stat, by: Changer) -> Result<Option<u32>> {
    let mode = st.st_mode;
    if mode & libc::S_IFMT == libc::S_IFDIR || mode & (libc::S_ISUID | libc::S_ISGID) == 0 {
        return Ok(None);
    }
    let creds = by.creds();
    let capable = creds.as_ref().is_some_and(|c| c.capable(sys::CAP_FSETID));
    let bits = (mode & libc::S_ISUID) | sgid_lost(mode, st.st_gid, creds.as_ref(), capable);
    if bits == 0 {
        return Ok(None);
    }
    let owner = creds
        .as_ref()
        .is_some_and(|c| c.fsuid == st.st_uid || c.capable(sys::CAP_FOWNER));
    if !owner {
        return Err(Error::NotOwner);
    }
    Ok(Some(mode & 0o7777 & !bits))
}

impl Union {
    /// Before `by` changes the data of the file open at `fd` (node `ino`): drops the set-id
    /// bits the change takes away, and tells the kernel its cached mode is stale.
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
        // SAFETY: a stat is plain data; all zeroes is a valid value.
        let mut st: Stat = unsafe { std::mem::zeroed() };
        (st.st_mode, st.st_uid, st.st_gid) = (libc::S_IFREG | mode, uid, gid);
        st
    }

    /// A caller that cannot be asked: no capability, no group.
    const NOBODY: Changer = Changer {
        tid: 0,
        lacks_fsetid: true,
    };

    #[test]
    fn a_write_drops_set_group_id_with_group_execute_or_outside_the_group() {
        assert_eq!(mode_after_write(&st(0o6755, 0, 0), NOBODY), Some(0o755));
        assert_eq!(mode_after_write(&st(0o6745, 0, 0), NOBODY), Some(0o745));
        assert_eq!(mode_after_write(&st(0o4745, 0, 0), NOBODY), Some(0o745));
        assert_eq!(mode_after_write(&st(0o0777, 0, 0), NOBODY), None);
        let mut dir = st(0o6755, 0, 0);
        dir.st_mode = libc::S_IFDIR | 0o6755;
        assert_eq!(mode_after_write(&dir, NOBODY), None);
    }

    #[test]
    fn set_group_id_without_group_execute_stays_for_a_member() {
        let me = Creds {
            fsgid: 7,
            groups: vec![9],
            ..Creds::default()
        };
        assert_eq!(sgid_lost(0o2745, 7, Some(&me), false), 0);
        assert_eq!(sgid_lost(0o2745, 9, Some(&me), false), 0);
        assert_eq!(sgid_lost(0o2745, 8, Some(&me), false), libc::S_ISGID);
        assert_eq!(sgid_lost(0o2745, 8, Some(&me), true), 0);
        assert_eq!(sgid_lost(0o2755, 7, Some(&me), true), libc::S_ISGID);
    }

    #[test]
    fn chown_to_nothing_needs_the_owner_to_drop_bits() {
        assert!(matches!(
            mode_after_chown(&st(0o4755, 0, 0), NOBODY),
            Err(Error::NotOwner)
        ));
        assert!(matches!(
            mode_after_chown(&st(0o755, 0, 0), NOBODY),
            Ok(None)
        ));
    }
}
