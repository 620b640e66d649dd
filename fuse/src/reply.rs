//! The one place a core result becomes a reply: [`call`] runs a core call (panics caught,
//! errnos chosen and logged once), the `reply_*` helpers encode what it returned.

use fuser::{Errno, Generation, INodeNo, ReplyEmpty, ReplyEntry, ReplyXattr, Request};
use log::{debug, error};

use crate::core::{Ctx, Entry, ToErrno};
use crate::op::Op;

/// Runs one call into the core. A panic is caught, logged and answered with EIO, so the
/// worker thread survives a bug; a failure becomes its errno, logged as it deserves. The one
/// place where either is decided.
pub(crate) fn call<T, E: ToErrno>(op: Op, f: impl FnOnce() -> Result<T, E>) -> Result<T, Errno> {
    let op = op.name();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(errno_of(op, &e)),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            error!("{op}: internal error ({msg}); answered EIO");
            Err(Errno::EIO)
        }
    }
}

/// The errno of `e`, logged as it deserves (once, here).
fn errno_of<E: ToErrno>(op: &str, e: &E) -> Errno {
    if e.is_unexpected() {
        error!("{op}: {e}");
    } else {
        debug!("{op}: {e}");
    }
    Errno::from_i32(e.errno())
}

pub(crate) fn reply_xattr(reply: ReplyXattr, data: &[u8], size: u32) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

/// The caller of a request, for the core.
pub(crate) fn ctx(req: &Request) -> Ctx {
    Ctx {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
        umask: 0,
    }
}

pub(crate) fn reply_entry(reply: ReplyEntry, r: Result<Entry, Errno>) {
    match r {
        Ok(e) => reply.entry_node(
            INodeNo(e.node),
            Generation(e.generation),
            &e.ttl,
            &crate::attr::to_fuse(&e.attr),
        ),
        Err(e) => reply.error(e),
    }
}

pub(crate) fn reply_empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}
