//! Nodes of the merged tree: where each one lives now (it can move, be copied up or be
//! removed while the kernel still holds it).
//!
//! A file with several hard links is one node with several names. The node acts through one
//! of them ([`Node::loc`]) and knows the others it has seen, so that removing or renaming
//! one name never leaves it acting on a name that is gone, or that a new file now holds.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use super::lower::Rel;
use super::readdir::Listings;
use crate::stack::Ino;
use crate::union::table::{Counted, Key, NodeId};

/// Where a node is in the merged tree.
#[derive(Debug, Clone)]
pub struct Loc {
    /// `None` only for the root.
    pub parent: Option<Arc<Node>>,
    pub name: Box<[u8]>,
    /// The upper layer has this entry (created there or copied up).
    pub upper: bool,
    /// The lower object behind it: for a directory, the lower directory merged under it
    /// (`None`: pure upper or opaque); otherwise the lower file it shows or was copied from.
    pub lower: Option<Rel>,
    /// Removed from the tree while the kernel still references it.
    pub unlinked: bool,
}

impl Loc {
    /// True when this is name `name` of directory `dir`.
    pub fn is(&self, dir: &Arc<Node>, name: &[u8]) -> bool {
        self.name.as_ref() == name && self.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, dir))
    }

    fn same_place(&self, o: &Loc) -> bool {
        o.parent.as_ref().is_some_and(|p| self.is(p, &o.name))
    }
}

#[derive(Debug)]
pub struct Node {
    /// The kernel's name for it (see `table.rs`).
    pub id: NodeId,
    /// What finds it in the table.
    key: Mutex<Key>,
    /// The inode number it shows (a copy-up can change it).
    ino: AtomicU64,
    pub is_dir: bool,
    /// The file type (`S_IFMT` bits) it was created with.
    pub fmt: u32,
    pub loc: RwLock<Loc>,
    /// Other names (hard links) known to show this node, besides `loc`.
    others: Mutex<Vec<Loc>>,
    lookups: AtomicU64,
    /// Directories: the upper copy, opened once it exists (an fd follows renames).
    pub upper_dir: OnceLock<Arc<OwnedFd>>,
    /// Upper non-directories removed while still referenced: an `O_PATH` fd to the inode.
    pub detached: OnceLock<OwnedFd>,
    /// Open handles the kernel took to execute this file (see `FileH::exec`).
    pub execs: AtomicU32,
    /// Open handles the kernel reads the lower file through directly (passthrough), which
    /// bind this node to the lower file (see `Union::supersede`).
    pub lower_opens: AtomicU32,
    /// Directories: the listings readers are going through (directories have no
    /// handles).
    pub(super) listings: Mutex<Listings>,
}

impl Node {
    pub fn new(id: NodeId, key: Key, ino: Ino, fmt: u32, loc: Loc) -> Node {
        Node {
            id,
            key: Mutex::new(key),
            ino: AtomicU64::new(ino.0),
            is_dir: fmt == libc::S_IFDIR,
            fmt,
            loc: RwLock::new(loc),
            others: Mutex::new(Vec::new()),
            lookups: AtomicU64::new(0),
            upper_dir: OnceLock::new(),
            detached: OnceLock::new(),
            execs: AtomicU32::new(0),
            lower_opens: AtomicU32::new(0),
            listings: Mutex::default(),
        }
    }

    /// The inode number it shows.
    pub fn ino(&self) -> Ino {
        Ino(self.ino.load(Ordering::Relaxed))
    }

    /// It shows `ino` from now on, and is found by `key`; returns the key it had.
    pub fn renumber(&self, ino: Ino, key: Key) -> Key {
        self.ino.store(ino.0, Ordering::Relaxed);
        std::mem::replace(&mut self.key.lock().unwrap_or_else(|p| p.into_inner()), key)
    }

    /// A snapshot of the location.
    pub fn loc(&self) -> Loc {
        self.loc.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_loc(&self, f: impl FnOnce(&mut Loc)) {
        f(&mut self.loc.write().unwrap_or_else(|p| p.into_inner()));
    }

    fn others(&self) -> std::sync::MutexGuard<'_, Vec<Loc>> {
        self.others.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that name `at` (just resolved) shows this node. The node keeps acting through
    /// its current name while that one is in the tree; `at` is remembered as another name.
    /// A removed node takes `at` as its name again. A lower name of a copied-up file's
    /// origin is not the copy (the copy-up broke that link, as on the kernel).
    pub fn seen_at(&self, at: Loc) {
        let mut l = self.loc.write().unwrap_or_else(|p| p.into_inner());
        if l.unlinked || self.is_dir || l.same_place(&at) {
            self.others().retain(|o| !o.same_place(&at));
            *l = at;
            return;
        }
        if l.upper && !at.upper {
            return;
        }
        let mut others = self.others();
        match others.iter_mut().find(|o| o.same_place(&at)) {
            Some(o) => *o = at,
            None => others.push(at),
        }
    }

    /// True when name `name` of `dir` is the only name of this node it knows.
    pub fn only_name(&self, dir: &Arc<Node>, name: &[u8]) -> bool {
        let others = self.others();
        others.iter().all(|o| o.is(dir, name)) && self.loc().is(dir, name)
    }

    /// Name `name` of `dir` left the tree: the node acts through another name it has, or is
    /// removed when it has none.
    pub fn forget_name(&self, dir: &Arc<Node>, name: &[u8]) {
        let mut l = self.loc.write().unwrap_or_else(|p| p.into_inner());
        let mut others = self.others();
        others.retain(|o| !o.is(dir, name));
        if l.is(dir, name) {
            match others.pop() {
                Some(o) => *l = o,
                None => l.unlinked = true,
            }
        }
    }

    /// Makes name `name` of `dir` (if the node has it) the one it acts through.
    pub fn focus(&self, dir: &Arc<Node>, name: &[u8]) {
        let mut l = self.loc.write().unwrap_or_else(|p| p.into_inner());
        let mut others = self.others();
        if let Some(o) = others.iter_mut().find(|o| o.is(dir, name)) {
            std::mem::swap(&mut *l, o);
        }
    }

    /// Name `from` became `to` (renamed in the upper).
    pub fn renamed(&self, from: (&Arc<Node>, &[u8]), to: (&Arc<Node>, &[u8])) {
        let mut l = self.loc.write().unwrap_or_else(|p| p.into_inner());
        let mut others = self.others();
        let moved = std::iter::once(&mut *l)
            .chain(others.iter_mut())
            .find(|o| o.is(from.0, from.1));
        if let Some(m) = moved {
            m.parent = Some(to.0.clone());
            m.name = to.1.into();
            m.upper = true;
            m.unlinked = false;
        }
    }
}

impl Counted for Node {
    fn id(&self) -> NodeId {
        self.id
    }
    fn key(&self) -> Key {
        self.key.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn lookups(&self) -> &AtomicU64 {
        &self.lookups
    }
}
