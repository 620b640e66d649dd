//! Listing a directory: `.` and `..` come from the node; the entries from a listing
//! (`listing.rs`) kept on the directory's node, taken at each `readdir` from offset 0 and
//! continued by the later ones (directories have no handles: the kernel caches listings
//! itself and asks from offset 0 again only when its copy is gone or the directory
//! changed). What a directory lists: its lower index, or its upper entries and the lower
//! ones they do not hide ([`Union::list`]).

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::sync::Arc;

use layerfs_fuse::DirEntry;

use super::inode::{Loc, Node};
use super::listing::{Cursor, Listing};
use super::Union;
use crate::error::{Error, Result};
use crate::format;
use crate::stack::dirindex::{DirIndex, Kind};
use crate::sys;

/// Receives entries until it answers true (the reply is full).
type Add<'a> = dyn FnMut(DirEntry<'_>) -> bool + 'a;

impl Union {
    /// The entries of directory `node`: its lower index if it has no upper copy, else upper
    /// entries, then lower ones not hidden by an upper entry or whiteout.
    pub(super) fn list(&self, node: &Node) -> Result<Listing> {
        let loc = node.loc();
        if !loc.upper {
            if let Some(rel) = loc.lower {
                let ix = self.lowers.dir(&self.stack, &rel);
                if let Some(ix) = ix.map_err(Error::io("lower directory"))? {
                    return Ok(Listing::Lower { rel, ix });
                }
            }
            return Ok(Listing::Merged(Vec::new()));
        }
        let mut out = Vec::new();
        let mut seen: HashSet<Box<[u8]>> = HashSet::new();
        {
            let fd = self.upper_dir(node)?;
            // A private fd: getdents moves the offset of the fd it reads.
            let d = sys::open_subdir(fd.as_fd(), c".").map_err(Error::io("open upper"))?;
            // Regular files are whiteouts (or nested ones) only in a directory so marked.
            let marks = format::dir_marks(d.as_fd()).map_err(Error::io("listxattr"))?;
            let xattr_whiteouts = marks.xattr_whiteouts || marks.nested_whiteouts;
            for ent in sys::read_dir(d.as_fd()).map_err(Error::io("getdents"))? {
                if let Some(hidden) = ent.name.strip_prefix(format::OCI_PREFIX) {
                    // OCI markers never show; `.wh.X` hides X below (not an upper X).
                    if ent.name.as_ref() != format::OCI_OPAQUE {
                        seen.insert(hidden.into());
                    }
                    continue;
                }
                let kind = match Kind::from_dtype(ent.d_type) {
                    Some(k) if k != Kind::CharDev && !(xattr_whiteouts && k == Kind::File) => k,
                    _ => {
                        let name = sys::cstr(&ent.name).map_err(Error::io("name"))?;
                        match sys::lstatat(d.as_fd(), &name) {
                            Ok(st) => {
                                match Self::upper_entry_with(d.as_fd(), &marks, &ent.name, &st)? {
                                    format::UpperEntry::Whiteout => {
                                        seen.insert(ent.name);
                                        continue;
                                    }
                                    what => Kind::from_mode(Self::shown_as(what, st).st_mode),
                                }
                            }
                            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                            Err(e) => return Err(Error::io("lstat")(e)),
                        }
                    }
                };
                seen.insert(ent.name.clone());
                out.push((ent.name, kind));
            }
        }
        if let Some(rel) = &loc.lower {
            if let Some(ix) = self
                .lowers
                .dir(&self.stack, rel)
                .map_err(Error::io("lower directory"))?
            {
                for e in &ix.entries {
                    if !seen.contains(&e.name) {
                        out.push((e.name.clone(), e.kind));
                    }
                }
            }
        }
        Ok(Listing::Merged(out))
    }

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
