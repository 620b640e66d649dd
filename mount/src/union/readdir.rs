//! Listing a directory: `.` and `..` come from the node; the entries from a listing
//! (`listing.rs`) kept on the directory's node, taken at each `readdir` from offset 0 and
//! continued by the later ones (directories have no handles: the kernel caches listings
//! itself and asks from offset 0 again only when its copy is gone or the directory
//! changed).

use std::sync::Arc;

use layerfs_fuse::DirEntry;

use super::inode::{Loc, Node};
use super::listing::Cursor;
use super::Union;
use crate::error::Result;
use crate::stack::dirindex::{DirIndex, Kind};

/// Receives entries until it answers true (the reply is full).
type Add<'a> = dyn FnMut(DirEntry<'_>) -> bool + 'a;

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
