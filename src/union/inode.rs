//! Nodes of the merged tree: where each one lives now (it can move, be copied up or be
//! removed while the kernel still holds it).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, OnceLock, RwLock};

use super::lower::Rel;
use crate::stack::Ino;
use crate::union::table::Counted;

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

#[derive(Debug)]
pub struct Node {
    pub ino: Ino,
    pub is_dir: bool,
    /// The file type (`S_IFMT` bits) it was created with.
    pub fmt: u32,
    pub loc: RwLock<Loc>,
    lookups: AtomicU64,
    /// Directories: the upper copy, opened once it exists (an fd follows renames).
    pub upper_dir: OnceLock<Arc<OwnedFd>>,
    /// Upper non-directories removed while still referenced: an `O_PATH` fd to the inode.
    pub detached: OnceLock<OwnedFd>,
    /// Open handles the kernel took to execute this file (see `FileH::exec`).
    pub execs: AtomicU32,
}

impl Node {
    pub fn new(ino: Ino, fmt: u32, loc: Loc) -> Node {
        Node {
            ino,
            is_dir: fmt == libc::S_IFDIR,
            fmt,
            loc: RwLock::new(loc),
            lookups: AtomicU64::new(0),
            upper_dir: OnceLock::new(),
            detached: OnceLock::new(),
            execs: AtomicU32::new(0),
        }
    }

    /// A snapshot of the location.
    pub fn loc(&self) -> Loc {
        self.loc.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_loc(&self, f: impl FnOnce(&mut Loc)) {
        f(&mut self.loc.write().unwrap_or_else(|p| p.into_inner()));
    }
}

impl Counted for Node {
    fn ino(&self) -> Ino {
        self.ino
    }
    fn lookups(&self) -> &AtomicU64 {
        &self.lookups
    }
}
