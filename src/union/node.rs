//! The inode table: what the kernel holds a reference to, and where each node lives.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;

use crate::error::{Error, Result};
use crate::stack::dirindex::{Candidate, DirIndex, Entry};
use crate::stack::Ino;

/// Where a node's data lives: entry `entry` of its parent's merged index.
#[derive(Debug)]
pub struct Place {
    pub parent: Arc<DirIndex>,
    /// The parent directory's node id (for `..` in listings).
    pub parent_ino: Ino,
    pub entry: u32,
}

impl Place {
    pub fn entry(&self) -> &Entry {
        self.parent.entry(self.entry)
    }
}

/// What kind of node this is. Only directories have an index of children.
#[derive(Debug)]
pub enum NodeKind {
    /// A merged directory; its index is built on first use.
    Dir { index: OnceLock<Arc<DirIndex>> },
    /// Anything else (file, symlink, device, fifo, socket).
    Leaf,
}

#[derive(Debug)]
pub struct Node {
    pub ino: Ino,
    /// `None` only for the root.
    pub place: Option<Place>,
    pub kind: NodeKind,
    /// Kernel references (lookups not yet forgotten).
    lookups: AtomicU64,
}

impl Node {
    pub fn new(ino: Ino, place: Option<Place>, is_dir: bool) -> Node {
        Node {
            ino,
            place,
            kind: if is_dir {
                NodeKind::Dir {
                    index: OnceLock::new(),
                }
            } else {
                NodeKind::Leaf
            },
            lookups: AtomicU64::new(0),
        }
    }

    /// The merged index of a directory node, built on first use from `sources` (called only
    /// then; it opens the directory in every contributing layer).
    pub fn index(
        &self,
        sources: impl FnOnce() -> std::io::Result<(std::ffi::CString, Vec<Candidate>, bool)>,
    ) -> Result<&Arc<DirIndex>> {
        let NodeKind::Dir { index } = &self.kind else {
            return Err(Error::NotDir);
        };
        if let Some(ix) = index.get() {
            return Ok(ix);
        }
        let (rel, srcs, honour_opaque) = sources().map_err(Error::io("open layer directory"))?;
        let built =
            DirIndex::build(rel, srcs, honour_opaque).map_err(Error::io("read layer directory"))?;
        // Two threads may build at once; one wins and the other's work is dropped.
        Ok(index.get_or_init(|| Arc::new(built)))
    }
}

impl Node {
    /// The index of a directory below the root, built from its parent's index if needed.
    pub fn placed_index(&self) -> Result<&Arc<DirIndex>> {
        let place = self.place.as_ref().ok_or(Error::Invalid)?;
        self.index(|| {
            let e = place.entry();
            Ok((
                place.parent.child_rel(e)?,
                place.parent.open_child_sources(e)?,
                true,
            ))
        })
    }

    /// True once a directory's index exists (always false for leaves).
    pub fn has_index(&self) -> bool {
        matches!(&self.kind, NodeKind::Dir { index } if index.get().is_some())
    }
}

/// A node the kernel counts references to.
pub trait Counted {
    fn ino(&self) -> Ino;
    /// Kernel references (lookups not yet forgotten).
    fn lookups(&self) -> &AtomicU64;
}

impl Counted for Node {
    fn ino(&self) -> Ino {
        self.ino
    }
    fn lookups(&self) -> &AtomicU64 {
        &self.lookups
    }
}

/// Node id -> node. The root is never removed.
#[derive(Debug)]
pub struct Table<N = Node> {
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

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}
