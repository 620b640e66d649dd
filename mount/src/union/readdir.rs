//! Listing a directory: `.` and `..` come from the node; the entries from a [`Listing`]
//! kept on the directory's node ([`Listings`]), taken at each `readdir` from offset 0 and
//! continued by the later ones (directories have no handles: the kernel caches listings
//! itself and asks from offset 0 again only when its copy is gone or the directory
//! changed). An offset is the listing's generation (high 32 bits) and a position in it
//! (low 32 bits): 1 after `.`, 2 after `..`, `i + 3` after entry `i`.

use std::collections::VecDeque;
use std::sync::Arc;

use layerfs_fuse::DirEntry;

use super::{Listing, Node, Union};
use crate::error::Result;
use crate::stack::dirindex::{DirIndex, Kind};
use crate::union::inode::Loc;

/// Receives entries until it answers true (the reply is full).
type Add<'a> = dyn FnMut(DirEntry<'_>) -> bool + 'a;

/// How many listings of one directory are kept for readers still going through them.
const KEPT: usize = 3;

/// The listings of one directory that readers may still be going through, newest last,
/// each with its generation. Readers are told apart by the generation in their offsets, so
/// one halfway through a listing goes on in it even after the directory changed and
/// another reader started over (as with the kernel's overlayfs, which keeps a listing per
/// open directory).
#[derive(Debug, Default)]
pub(super) struct Listings {
    kept: VecDeque<(u32, Arc<Listing>)>,
    last: u32,
}

impl Listings {
    /// The listing a read from `offset` goes through, with its generation: a new one (from
    /// `take`) at offset 0; else the one the offset came from if still kept, else the
    /// newest (the offset's position in it: three restarts later, or a `seekdir` in a
    /// process on a new mount), else a new one.
    pub(super) fn at(
        &mut self,
        offset: u64,
        take: impl FnOnce() -> Result<Listing>,
    ) -> Result<(u32, Arc<Listing>)> {
        if offset != 0 {
            let gen = (offset >> 32) as u32;
            let found = self.kept.iter().find(|(g, _)| *g == gen);
            if let Some((g, l)) = found.or(self.kept.back()) {
                return Ok((*g, l.clone()));
            }
        }
        let l = Arc::new(take()?);
        // Generations stay below 2^31: offsets stay positive as the kernel's `loff_t`.
        self.last = self.last % 0x7fff_ffff + 1;
        if self.kept.len() == KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back((self.last, l.clone()));
        Ok((self.last, l))
    }
}

/// Where a read starts in a listing (`start`: the first entry's index) and the generation
/// its offsets carry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cursor {
    pub gen: u32,
    pub start: usize,
}

impl Cursor {
    /// The cursor of a read from `offset` in generation `gen`, and its position.
    pub(super) fn new(gen: u32, offset: u64) -> (Cursor, u64) {
        let pos = offset & 0xffff_ffff;
        let start = pos.saturating_sub(2) as usize;
        (Cursor { gen, start }, pos)
    }

    /// The offset after position `pos` (1 after `.`, 2 after `..`, `i + 3` after entry i).
    pub(super) fn offset(&self, pos: u64) -> u64 {
        (u64::from(self.gen) << 32) | pos
    }
}

impl Listing {
    pub(super) fn is_empty(&self) -> bool {
        match self {
            Listing::Lower { ix, .. } => ix.entries.is_empty(),
            Listing::Merged(v) => v.is_empty(),
        }
    }
}

impl Union {
    /// Entries from `start` of the lower index `ix` of `dir`, a directory with no upper
    /// copy: each entry is what its name resolves to, so nothing is looked up again.
    pub(super) fn readdir_lower(
        &self,
        dir: &Arc<Node>,
        rel: &[u8],
        ix: &DirIndex,
        at: Cursor,
        plus: bool,
        add: &mut Add<'_>,
    ) -> Result<()> {
        if plus {
            // Batched cold `lstat`s, in parallel, ahead of the loop below.
            ix.prefetch_attrs(at.start);
        }
        for (i, e) in ix.entries.iter().enumerate().skip(at.start) {
            let next_offset = at.offset(i as u64 + 3);
            let mode = e.kind.mode_bits();
            if !plus {
                let ino = self.stack.ino(ix.layer_of(e), e.real_ino).0;
                let d = DirEntry {
                    ino,
                    next_offset,
                    mode,
                    name: &e.name,
                    entry: None,
                };
                if add(d) {
                    return Ok(());
                }
                continue;
            }
            // Counted from the moment the node is found (a FORGET racing with this reply
            // must not drop it), and given back if it does not fit.
            let (child, st) = match self.lower_child(dir, rel, ix, i as u32, true) {
                Ok(c) => c,
                // Vanished from its layer since the index was built: leave it out.
                Err(err) if err.errno() == libc::ENOENT => continue,
                Err(err) => return Err(err),
            };
            if e.kind == Kind::Dir {
                // A tree walk will descend here next: index it in the background.
                self.prefetch_lower(super::join(rel, &e.name));
            }
            let full = add(DirEntry {
                ino: child.ino().0,
                next_offset,
                mode,
                name: &e.name,
                entry: Some(self.entry_of(&child, st)),
            });
            if full {
                self.table.forget(child.id, 1);
                return Ok(());
            }
        }
        Ok(())
    }

    /// Entries from `start` of `names`, each resolved now (the directory has an upper
    /// copy, which may have changed since the listing was taken); gone ones are left out.
    pub(super) fn readdir_resolving<'n>(
        &self,
        dir: &Arc<Node>,
        dloc: &Loc,
        names: impl Iterator<Item = (&'n Box<[u8]>, Kind)>,
        at: Cursor,
        plus: bool,
        add: &mut Add<'_>,
    ) -> Result<()> {
        for (i, (name, kind)) in names.enumerate().skip(at.start) {
            // A readdirplus entry counts as a lookup from the moment the node is found (a
            // FORGET racing with this reply must not drop it), and is given back if it
            // does not fit.
            let Some((child, st)) = self.child(dir, dloc, name, plus)? else {
                continue;
            };
            let full = add(DirEntry {
                ino: child.ino().0,
                next_offset: at.offset(i as u64 + 3),
                mode: kind.mode_bits(),
                name,
                entry: plus.then(|| self.entry_of(&child, st)),
            });
            if plus && full {
                self.table.forget(child.id, 1);
            } else if !plus {
                self.table.drop_unreferenced(child.id);
            }
            if full {
                return Ok(());
            }
        }
        Ok(())
    }
}
