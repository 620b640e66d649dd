//! The inode table: node id -> node, for every node the kernel holds a reference to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;

use crate::error::{Error, Result};
use crate::stack::Ino;

/// A node the kernel counts references to.
pub trait Counted {
    fn ino(&self) -> Ino;
    /// Kernel references (lookups not yet forgotten).
    fn lookups(&self) -> &AtomicU64;
}

/// Node id -> node. The root is never removed.
#[derive(Debug)]
pub struct Table<N> {
    nodes: DashMap<Ino, Arc<N>>,
}

impl<N> Default for Table<N> {
    fn default() -> Self {
        Table {
            nodes: DashMap::new(),
        }
    }
}

impl<N: Counted> Table<N> {
    pub fn insert_root(&self, node: N) {
        self.nodes.insert(node.ino(), Arc::new(node));
    }

    pub fn get(&self, ino: Ino) -> Result<Arc<N>> {
        self.nodes
            .get(&ino)
            .map(|n| n.clone())
            .ok_or(Error::StaleInode(ino.0))
    }

    /// The node for `ino`, created by `make` if absent; with `count` the kernel now holds one
    /// more reference. Insertion and counting happen under the map's shard lock, so a
    /// concurrent `forget` cannot drop a node between the two.
    pub fn get_or_insert(&self, ino: Ino, count: bool, make: impl FnOnce() -> N) -> Arc<N> {
        let node = self.nodes.entry(ino).or_insert_with(|| Arc::new(make()));
        if count {
            node.lookups().fetch_add(1, Ordering::Relaxed);
        }
        node.clone()
    }

    /// Counts one more kernel reference to an existing node.
    pub fn count(&self, ino: Ino) {
        if let Some(n) = self.nodes.get(&ino) {
            n.lookups().fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops a node the kernel never heard of (created for a readdirplus entry that did not
    /// fit in the reply).
    pub fn drop_unreferenced(&self, ino: Ino) {
        if ino != Ino::ROOT {
            self.nodes
                .remove_if(&ino, |_, n| n.lookups().load(Ordering::Relaxed) == 0);
        }
    }

    /// The kernel dropped `n` references; the node goes with the last one.
    pub fn forget(&self, ino: Ino, n: u64) {
        if ino == Ino::ROOT {
            return;
        }
        if !self.nodes.contains_key(&ino) {
            log::debug!("forget {} x{n}: unknown", ino.0);
        }
        if let MapEntry::Occupied(e) = self.nodes.entry(ino) {
            let l = e.get().lookups();
            if l.load(Ordering::Relaxed) < n {
                log::debug!(
                    "forget {} x{n}: only {} counted",
                    ino.0,
                    l.load(Ordering::Relaxed)
                );
            }
            let before = l.fetch_sub(n.min(l.load(Ordering::Relaxed)), Ordering::Relaxed);
            if before <= n {
                e.remove();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Every node in the table now (a snapshot, for a refresh that touches them all).
    pub fn snapshot(&self) -> Vec<Arc<N>> {
        self.nodes.iter().map(|e| e.value().clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}
