//! The lower layers of a mount, seen as one read-only tree: the merged index of any
//! lower directory, found by its path and built once (the lowers never change while
//! mounted), or, with `timeout=`, rebuilt once older than that, and all dropped on a
//! refresh (SIGUSR1), for lowers changed behind the mount's back.

use std::ffi::CString;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::stack::dirindex::{Candidate, DirIndex, Entry, Kind};
use crate::stack::{Ino, Stack};
use crate::sys::Stat;

/// A path relative to the layer roots: `.` for the root, else `a/b/c`.
pub type Rel = Box<[u8]>;

/// The root's relative path.
pub fn root_rel() -> Rel {
    (*b".").into()
}

/// `rel/name`.
pub fn join(rel: &[u8], name: &[u8]) -> Rel {
    if rel == b"." {
        return name.into();
    }
    let mut p = Vec::with_capacity(rel.len() + 1 + name.len());
    p.extend_from_slice(rel);
    p.push(b'/');
    p.extend_from_slice(name);
    p.into()
}

/// Splits `a/b/c` into (`a/b`, `c`) and `c` into (`.`, `c`).
fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b".", rel),
    }
}

/// What the root's index waits for before it is built (see [`LowerTree::set_gate`]).
pub type Gate = Arc<dyn Fn() -> io::Result<()> + Send + Sync>;

/// Lower directory indexes by path, each with the time it was built.
#[derive(Default)]
pub struct LowerTree {
    dirs: DashMap<Rel, (Arc<DirIndex>, Instant)>,
    /// Indexes older than this are read again (`None`: never).
    max_age: Option<Duration>,
    /// A refresh dropped the indexes: the lowers changed behind the mount.
    refreshed: AtomicBool,
    /// Layers that arrive whole: the root's index waits for their trees (`lazy.rs`), or
    /// answers the error this returns.
    gate: OnceLock<Gate>,
}

/// One lower entry: its parent's index and its position there.
pub struct LowerEntry {
    pub parent: Arc<DirIndex>,
    pub i: u32,
}

impl LowerEntry {
    pub fn entry(&self) -> &Entry {
        self.parent.entry(self.i)
    }

    pub fn attr(&self) -> io::Result<Stat> {
        self.parent.attr(self.entry())
    }

    /// The merged inode number the entry shows.
    pub fn ino(&self, stack: &Stack) -> io::Result<Ino> {
        Ok(self.ino_of(stack, &self.attr()?))
    }

    /// The merged inode number of the entry, its `lstat` being `st`.
    pub fn ino_of(&self, stack: &Stack, st: &Stat) -> Ino {
        stack.ino(self.parent.layer_of(self.entry()), st.st_ino)
    }
}

impl LowerTree {
    /// A tree whose indexes are read again once older than `max_age` (`None`: never).
    pub fn new(max_age: Option<Duration>) -> LowerTree {
        LowerTree {
            dirs: DashMap::new(),
            max_age,
            refreshed: AtomicBool::new(false),
            gate: OnceLock::new(),
        }
    }

    /// The root's index (every other one descends from it) is built only once `gate` says
    /// the layers that arrive whole are there.
    pub fn set_gate(&self, gate: Gate) {
        let _ = self.gate.set(gate);
    }

    /// Drops every index: the next use of each directory reads the lowers again.
    pub fn clear(&self) {
        self.refreshed.store(true, Ordering::Relaxed);
        self.dirs.clear();
    }

    /// True when the lowers may have changed behind the mount (`timeout=`, or a refresh).
    pub fn may_change(&self) -> bool {
        self.max_age.is_some() || self.refreshed.load(Ordering::Relaxed)
    }

    fn fresh(&self, built: Instant) -> bool {
        self.max_age.is_none_or(|age| built.elapsed() < age)
    }

    /// The merged index of the lower directory `rel`, or `None` when no lower has a
    /// directory visible there.
    pub fn dir(&self, stack: &Stack, rel: &[u8]) -> io::Result<Option<Arc<DirIndex>>> {
        if let Some(e) = self.dirs.get(rel) {
            if self.fresh(e.1) {
                return Ok(Some(e.0.clone()));
            }
        }
        let built = if rel == b"." {
            if let Some(g) = self.gate.get() {
                g()?;
            }
            // The kernel ignores opaque marks on layer roots.
            DirIndex::build(c".".to_owned(), Candidate::roots(stack)?, false)?
        } else {
            let Some(e) = self.entry(stack, rel)? else {
                return Ok(None);
            };
            if e.entry().kind != Kind::Dir {
                return Ok(None);
            }
            let cands = e.parent.open_child_sources(e.entry())?;
            DirIndex::build(CString::new(rel.to_vec())?, cands, true)?
        };
        let (built, now) = (Arc::new(built), Instant::now());
        let mut e = self
            .dirs
            .entry(rel.into())
            .or_insert_with(|| (built.clone(), now));
        if !self.fresh(e.1) {
            *e = (built, now);
        }
        Ok(Some(e.0.clone()))
    }

    /// True once the lower directory `rel` is indexed (and still fresh).
    pub fn has(&self, rel: &[u8]) -> bool {
        self.dirs.get(rel).is_some_and(|e| self.fresh(e.1))
    }

    /// The lower entry at `rel` (not the root), if one is visible.
    pub fn entry(&self, stack: &Stack, rel: &[u8]) -> io::Result<Option<LowerEntry>> {
        let (parent, name) = split(rel);
        self.child(stack, parent, name)
    }

    /// The entry `name` of lower directory `dir`, if both exist.
    pub fn child(&self, stack: &Stack, dir: &[u8], name: &[u8]) -> io::Result<Option<LowerEntry>> {
        let Some(ix) = self.dir(stack, dir)? else {
            return Ok(None);
        };
        Ok(ix.find(name).map(|i| LowerEntry { parent: ix, i }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(&*join(b".", b"a"), b"a");
        assert_eq!(&*join(b"a/b", b"c"), b"a/b/c");
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b"."[..], &b"c"[..]));
    }
}
