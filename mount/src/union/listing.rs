//! What a directory's listing is and how its node keeps it for the readers going through
//! it ([`Listings`]), and the offsets they read from ([`Cursor`]): an offset is the
//! listing's generation (high 32 bits) and a position in it (low 32 bits): 1 after `.`, 2
//! after `..`, `i + 3` after entry `i`. Taking a listing and answering from it is
//! `readdir.rs`; the nodes that keep them are `inode.rs`'s.

use std::collections::VecDeque;
use std::sync::Arc;

use super::lower::Rel;
use crate::error::Result;
use crate::stack::dirindex::{DirIndex, Kind};

/// A directory's listing, taken by a `readdir` from offset 0 and kept on its node for the
/// reads that continue it ([`Listings`]): offsets carry positions in it.
#[derive(Debug)]
pub(super) enum Listing {
    /// A directory with no upper copy: its lower merged index, as it is (`rel`: its path).
    Lower { rel: Rel, ix: Arc<DirIndex> },
    /// Upper entries, then lower ones not hidden by an upper entry or whiteout.
    Merged(Vec<(Box<[u8]>, Kind)>),
}

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
