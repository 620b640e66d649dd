//! The inode table: node id -> node, for every node the kernel holds a reference to, and
//! what makes two names one node ([`Key`]).
//!
//! Node ids are the core's own, apart from the inode numbers the mount shows (`st_ino`):
//! the kernel keeps one inode per node id, so two names showing one number can still be
//! two inodes, as on the kernel's overlay (the names of a lower hard link, each of which
//! a copy-up breaks away from the others). Ids come from a counter and are never reused
//! within a mount, so a stale id can never reach a newer node (the generation the kernel
//! is given with each id is therefore always 0).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::error::{Error, Result};
use crate::stack::Ino;

/// The kernel's name for a node (its FUSE node id); the root's is 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(pub u64);

impl NodeId {
    pub const ROOT: NodeId = NodeId(1);
}

/// What makes two names the same node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// Every name showing this inode number (directories, files with one link, upper
    /// files and their hard links).
    Ino(Ino),
    /// One name (directory node id, name) of a lower non-directory with several links:
    /// each is its own inode, as on the kernel's overlay without `index=on`, so copying one
    /// up leaves the others showing the lower file.
    Name(Ino, NodeId, Box<[u8]>),
    /// None: a node whose name moved to a new node, reached by its id only.
    Gone(NodeId),
}

/// A node the kernel counts references to.
pub trait Counted {
    fn id(&self) -> NodeId;
    /// The key it is found by now.
    fn key(&self) -> Key;
    /// Kernel references (lookups not yet forgotten).
    fn lookups(&self) -> &AtomicU64;
}

/// Node id -> node, and key -> node id. The root is never removed.
#[derive(Debug)]
pub struct Table<N> {
    nodes: DashMap<NodeId, Arc<N>>,
    keys: DashMap<Key, NodeId>,
    next: AtomicU64,
}

impl<N> Default for Table<N> {
    fn default() -> Self {
        Table {
            nodes: DashMap::new(),
            keys: DashMap::new(),
            next: AtomicU64::new(NodeId::ROOT.0 + 1),
        }
    }
}

impl<N: Counted> Table<N> {
    pub fn insert_root(&self, node: N) {
        self.keys.insert(node.key(), node.id());
        self.nodes.insert(node.id(), Arc::new(node));
    }

    pub fn get(&self, id: NodeId) -> Result<Arc<N>> {
        self.nodes
            .get(&id)
            .map(|n| n.clone())
            .ok_or(Error::StaleInode(id.0))
    }

    /// The node found by `key`, created by `make` (given its new id) if absent; with
    /// `count` the kernel now holds one more reference. The key's entry is locked
    /// throughout, and counting happens under the node's shard lock, so a concurrent
    /// `forget` can neither drop a node between the two nor make two nodes for one key.
    pub fn get_or_insert(&self, key: Key, count: bool, make: impl FnOnce(NodeId) -> N) -> Arc<N> {
        let mut slot = self.keys.entry(key).or_insert(NodeId(0));
        if let Some(n) = self.nodes.get(&*slot) {
            if count {
                n.lookups().fetch_add(1, Ordering::Relaxed);
            }
            return n.clone();
        }
        let id = NodeId(self.next.fetch_add(1, Ordering::Relaxed));
        let node = Arc::new(make(id));
        if count {
            node.lookups().fetch_add(1, Ordering::Relaxed);
        }
        self.nodes.insert(id, node.clone());
        *slot = id;
        node
    }

    /// `node` is found by `key` from now on (a copy-up gave it another number).
    pub fn rekey(&self, node: &N, old: &Key) {
        let id = node.id();
        self.keys.remove_if(old, |_, v| *v == id);
        self.keys.insert(node.key(), id);
    }

    /// Counts one more kernel reference to an existing node.
    pub fn count(&self, id: NodeId) {
        if let Some(n) = self.nodes.get(&id) {
            n.lookups().fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Removes node `id`'s key, unless it already leads to a newer node.
    fn unkey(&self, id: NodeId, node: &N) {
        self.keys.remove_if(&node.key(), |_, v| *v == id);
    }

    /// Drops a node the kernel never heard of (created for a readdirplus entry that did not
    /// fit in the reply).
    pub fn drop_unreferenced(&self, id: NodeId) {
        if id == NodeId::ROOT {
            return;
        }
        let gone = self
            .nodes
            .remove_if(&id, |_, n| n.lookups().load(Ordering::Relaxed) == 0);
        if let Some((_, n)) = gone {
            self.unkey(id, &n);
        }
    }

    /// The kernel dropped `n` references; the node goes with the last one.
    pub fn forget(&self, id: NodeId, n: u64) {
        if id == NodeId::ROOT {
            return;
        }
        let gone = self.nodes.remove_if(&id, |_, node| {
            let l = node.lookups();
            let had = l.load(Ordering::Relaxed);
            if had < n {
                log::debug!("forget {} x{n}: only {had} counted", id.0);
            }
            l.fetch_sub(n.min(had), Ordering::Relaxed) <= n
        });
        match gone {
            Some((_, node)) => self.unkey(id, &node),
            None if !self.nodes.contains_key(&id) => log::debug!("forget {} x{n}: unknown", id.0),
            None => {}
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
