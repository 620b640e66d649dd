//! The lower layers of a mount, seen as one read-only tree: the merged index of any
//! lower directory, found by its path and built once (the lowers never change while mounted).

use std::ffi::CString;
use std::io;
use std::sync::Arc;

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

/// Lower directory indexes by path.
#[derive(Debug, Default)]
pub struct LowerTree {
    dirs: DashMap<Rel, Arc<DirIndex>>,
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
        let st = self.attr()?;
        Ok(stack.ino(self.parent.layer_of(self.entry()), st.st_ino))
    }
}

impl LowerTree {
    /// The merged index of the lower directory `rel`, or `None` when no lower has a
    /// directory visible there.
    pub fn dir(&self, stack: &Stack, rel: &[u8]) -> io::Result<Option<Arc<DirIndex>>> {
        if let Some(ix) = self.dirs.get(rel) {
            return Ok(Some(ix.clone()));
        }
        let built = if rel == b"." {
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
        Ok(Some(
            self.dirs
                .entry(rel.into())
                .or_insert_with(|| Arc::new(built))
                .clone(),
        ))
    }

    /// True once the lower directory `rel` is indexed.
    pub fn has(&self, rel: &[u8]) -> bool {
        self.dirs.contains_key(rel)
    }

    /// The lower entry at `rel` (not the root), if one is visible.
    pub fn entry(&self, stack: &Stack, rel: &[u8]) -> io::Result<Option<LowerEntry>> {
        let (parent, name) = split(rel);
        let Some(ix) = self.dir(stack, parent)? else {
            return Ok(None);
        };
        Ok(ix.find(name).map(|i| LowerEntry { parent: ix, i }))
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
