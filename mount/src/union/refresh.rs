//! Reading the lowers again now: for lowers changed behind the mount's back (outside
//! containers, the common case). `timeout=SECONDS` bounds how stale the view can get; a
//! refresh (the daemon's SIGUSR1) makes every change show at once: the lower indexes are
//! dropped, and the kernel is told to forget every entry and attribute it holds, so the
//! next access asks the core, which reads the lowers again.

use std::sync::Arc;

use layerfs_fuse::{Inval, Invalidate};

use super::inode::Node;
use super::lower::LowerTree;
use super::table::Table;
use super::Union;

/// A handle that refreshes a mount's view of its lowers; cheap, and usable from any
/// thread (the signal thread holds one while the workers serve the union).
pub struct Refresh {
    lowers: Arc<LowerTree>,
    table: Arc<Table<Node>>,
    invalidate: Invalidate,
}

impl Refresh {
    /// Drops the lower indexes and everything the kernel cached. Never call it from inside
    /// a request: dropping an entry takes a lock the kernel may hold while it waits.
    pub fn run(&self) {
        self.lowers.clear();
        let nodes = self.table.snapshot();
        for n in &nodes {
            let loc = n.loc();
            if let Some(p) = &loc.parent {
                self.invalidate.send(Inval::Entry(p.id.0, loc.name.clone()));
            }
        }
        for n in &nodes {
            self.invalidate.send(Inval::Inode(n.id.0));
        }
        log::info!(
            "refreshed: lower indexes dropped, {} nodes invalidated",
            nodes.len()
        );
    }
}

impl Union {
    /// A handle to refresh this union's view of its lowers from another thread.
    pub fn refresher(&self) -> Refresh {
        Refresh {
            lowers: self.lowers.clone(),
            table: self.table.clone(),
            invalidate: self.invalidate.clone(),
        }
    }
}
