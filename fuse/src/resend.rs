//! Requests the kernel sends again after the process that read them died (a supervised
//! mount, `supervised.rs`): the dead process may have done one and died before answering.
//! Reading, writing at an offset and setting attributes do the same thing twice; a request
//! that makes or removes a name does not, so one that finds its own work done (the name
//! there, or gone) is answered as if it had done it now. Only resent requests are read so:
//! the same finding on a first send is the caller's error, as always.

use std::ffi::OsStr;

use fuser::{Errno, Request, RESEND_BIT};

use crate::core::{Ctx, Entry, Opened};
use crate::reply::call;
use crate::{Adapter, Core, Op};

/// Whether the kernel sent `req` again (`FUSE_NOTIFY_RESEND`).
pub(crate) fn resent(req: &Request) -> bool {
    req.unique().0 & RESEND_BIT != 0
}

/// A resent request that makes a name and found it there: the name as it is now.
pub(crate) fn made<T>(
    req: &Request,
    r: Result<T, Errno>,
    found: impl FnOnce() -> Result<T, Errno>,
) -> Result<T, Errno> {
    match r {
        Err(e) if e == Errno::EEXIST && resent(req) => found().map_err(|_| e),
        r => r,
    }
}

/// A resent request that removes (or renames away) a name and found it gone: done.
pub(crate) fn removed(req: &Request, r: Result<(), Errno>) -> Result<(), Errno> {
    match r {
        Err(e) if e == Errno::ENOENT && resent(req) => Ok(()),
        r => r,
    }
}

impl<C: Core> Adapter<C> {
    /// A RENAME (`rename`: the core's call) with `flags`: [`removed`]; a `RENAME_EXCHANGE`
    /// the dead daemon did is not done again, which would swap the names back.
    pub(crate) fn renamed(
        &self,
        req: &Request,
        flags: u32,
        rename: impl FnOnce() -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        if flags & libc::RENAME_EXCHANGE == 0 {
            return removed(req, rename());
        }
        let unique = req.unique().0 & !RESEND_BIT;
        if resent(req) && self.core.was_done(unique) {
            return Ok(());
        }
        let r = rename();
        if r.is_ok() {
            self.core.request_done(unique);
        }
        r
    }

    /// Name `name` of `parent`, looked up (for [`made`]).
    pub(crate) fn found(&self, parent: u64, name: &OsStr) -> Result<Entry, Errno> {
        call(Op::Lookup, || self.core.lookup(parent, name))
    }

    /// Name `name` of `parent`, looked up and opened with `flags` (a resent CREATE).
    pub(crate) fn found_open(
        &self,
        parent: u64,
        name: &OsStr,
        flags: i32,
        ctx: Ctx,
    ) -> Result<(Entry, Opened), Errno> {
        let e = self.found(parent, name)?;
        let flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC);
        let o = call(Op::Open, || self.core.open(e.node, flags, false, ctx))?;
        Ok((e, o))
    }
}
