//! The union: every filesystem operation, over the layer stack, with no FUSE in sight.
//!
//! This is the read path of a read-only mount (no upper layer): lookups go through each
//! directory's merged index, attributes and xattrs are read once and cached (the layers
//! cannot change under a read-only mount), files are read through fds opened relative to
//! their layer directory, never through a path that could cross a symlink.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use layerfs_fuse::{Core, DirEntry, Entry, Opened};

use crate::error::{Error, Result};
use crate::format;
use crate::idmap::Ids;
use crate::stack::dirindex::{self, Candidate, DirIndex, Kind, Xattrs};
use crate::stack::prefetch::Prefetcher;
use crate::stack::{Ino, Stack};
use crate::sys::{self, Stat};
use crate::union::handles::Handles;
use crate::union::node::{Node, NodeKind, Place, Table};

/// How ids and caching are presented; everything that is not the layers themselves.
#[derive(Debug, Clone)]
pub struct Config {
    /// How on-disk ids are shown and callers' ids stored (`uidmapping=`, squash options).
    pub ids: Ids,
    /// How long the kernel may cache entries and attributes. Lower layers are immutable,
    /// so a read-only mount can afford a long time.
    pub ttl: Duration,
}

impl Config {
    /// The attributes the merged view shows for a real `st` with merged number `ino`.
    pub fn present(&self, mut st: Stat, ino: Ino) -> Stat {
        st.st_ino = ino.0;
        (st.st_uid, st.st_gid) = self.ids.show(st.st_uid, st.st_gid);
        st
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ids: Ids::default(),
            ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// A mounted (or mountable) union of read-only layers.
pub struct Union {
    stack: Stack,
    cfg: Config,
    table: Table,
    files: Handles<Arc<OwnedFd>>,
    dirs: Handles<Arc<DirIndex>>,
    root_attr: Stat,
    root_xattrs: OnceLock<Arc<Xattrs>>,
    /// Started on first use, so its threads are born in the daemon, after the fork.
    prefetch: OnceLock<Prefetcher>,
}

impl Union {
    pub fn new(stack: Stack, cfg: Config) -> std::io::Result<Union> {
        let top = stack
            .layers()
            .first()
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let root_attr = sys::fstat(top.root.as_fd())?;
        // Keep at most half the fd limit as directory fds; the rest reopen on use.
        if let Ok(limit) = sys::nofile_limit() {
            dirindex::set_fd_budget((limit / 2) as usize);
        }
        let table = Table::default();
        table.insert_root(Node::new(Ino::ROOT, None, true));
        Ok(Union {
            stack,
            cfg,
            table,
            files: Handles::default(),
            dirs: Handles::default(),
            root_attr,
            root_xattrs: OnceLock::new(),
            prefetch: OnceLock::new(),
        })
    }

    /// Number of nodes the kernel currently references (plus the root).
    pub fn node_count(&self) -> usize {
        self.table.len()
    }

    fn node(&self, ino: u64) -> Result<Arc<Node>> {
        self.table.get(Ino(ino))
    }

    /// The merged index of directory `node`, built on first use.
    fn index<'a>(&self, node: &'a Node) -> Result<&'a Arc<DirIndex>> {
        if node.place.is_some() {
            return node.placed_index();
        }
        node.index(|| match &node.place {
            // The root merges every layer; the kernel ignores opaque marks on layer roots.
            None => Ok((c".".to_owned(), Candidate::roots(&self.stack)?, false)),
            Some(_) => unreachable!("placed nodes are indexed by Node::placed_index"),
        })
    }

    fn present(&self, st: Stat, ino: Ino) -> Stat {
        self.cfg.present(st, ino)
    }

    fn entry_of(&self, st: Stat) -> Entry {
        Entry {
            attr: st,
            ttl: self.cfg.ttl,
        }
    }

    fn attr_of(&self, node: &Node) -> Result<Stat> {
        let st = match &node.place {
            None => self.root_attr,
            Some(p) => p.parent.attr(p.entry()).map_err(Error::io("lstat"))?,
        };
        Ok(self.present(st, node.ino))
    }

    /// The node and presented attributes for entry `i` of `ix`; `count` records a kernel
    /// reference.
    fn child(
        &self,
        parent_ino: Ino,
        ix: &Arc<DirIndex>,
        i: u32,
        count: bool,
    ) -> Result<(Arc<Node>, Stat)> {
        let e = ix.entry(i);
        let st = ix.attr(e).map_err(Error::io("lstat"))?;
        let ino = self.stack.ino(ix.layer_of(e), st.st_ino);
        let node = self.table.get_or_insert(ino, count, || {
            Node::new(
                ino,
                Some(Place {
                    parent: ix.clone(),
                    parent_ino,
                    entry: i,
                }),
                e.kind == Kind::Dir,
            )
        });
        Ok((node, self.present(st, ino)))
    }

    fn xattrs_of(&self, node: &Node) -> Result<Arc<Xattrs>> {
        match &node.place {
            Some(p) => p.parent.xattrs(p.entry()).map_err(Error::io("listxattr")),
            None => {
                if let Some(x) = self.root_xattrs.get() {
                    return Ok(x.clone());
                }
                let top = &self.stack.layers()[0];
                let x = Arc::new(
                    dirindex::read_xattrs(top.root.as_fd(), b"").map_err(Error::io("listxattr"))?,
                );
                Ok(self.root_xattrs.get_or_init(|| x).clone())
            }
        }
    }

    /// Opens the real file behind node `ino`, read-only, without following a symlink.
    fn open_file(&self, ino: u64) -> Result<OwnedFd> {
        let n = self.node(ino)?;
        if matches!(n.kind, NodeKind::Dir { .. }) {
            return Err(Error::IsDir);
        }
        let p = n.place.as_ref().ok_or(Error::Invalid)?;
        let e = p.entry();
        let name = sys::cstr(&e.name).map_err(Error::io("open"))?;
        p.parent
            .with_dir_of(e, |d| sys::openat(d, &name, libc::O_RDONLY))
            .map_err(Error::io("openat"))
    }

    /// The fd for I/O on `ino`: the open handle's, or (handle-less, `fh == 0`) a fresh one.
    fn file_fd(&self, ino: u64, fh: u64) -> Result<Arc<OwnedFd>> {
        match fh {
            0 => Ok(Arc::new(self.open_file(ino)?)),
            _ => self.files.get(fh).ok_or(Error::BadHandle(fh)),
        }
    }

    /// The ino shown for `..` of a directory node (the root is its own parent).
    fn parent_ino(&self, node: &Node) -> u64 {
        node.place.as_ref().map_or(Ino::ROOT, |p| p.parent_ino).0
    }
}

impl layerfs_fuse::ToErrno for Error {
    fn errno(&self) -> i32 {
        Error::errno(self)
    }
    fn is_unexpected(&self) -> bool {
        Error::is_unexpected(self)
    }
}

impl Core for Union {
    type Error = Error;

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<Entry> {
        if !sys::is_component(name) {
            return Err(Error::Invalid);
        }
        let p = self.node(parent)?;
        let ix = self.index(&p)?;
        let i = ix.find(name.as_bytes()).ok_or(Error::NotFound)?;
        let (_, st) = self.child(p.ino, ix, i, true)?;
        Ok(self.entry_of(st))
    }

    fn negative_ttl(&self) -> Option<Duration> {
        Some(self.cfg.ttl)
    }

    fn forget(&self, ino: u64, nlookup: u64) {
        self.table.forget(Ino(ino), nlookup);
    }

    fn getattr(&self, ino: u64) -> Result<Entry> {
        let n = self.node(ino)?;
        Ok(self.entry_of(self.attr_of(&n)?))
    }

    fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let n = self.node(ino)?;
        let p = n.place.as_ref().ok_or(Error::Invalid)?;
        let e = p.entry();
        if e.kind != Kind::Symlink {
            return Err(Error::Invalid);
        }
        let name = sys::cstr(&e.name).map_err(Error::io("readlink"))?;
        p.parent
            .with_dir_of(e, |d| sys::readlinkat(d, &name))
            .map_err(Error::io("readlinkat"))
    }

    fn open(&self, ino: u64, flags: i32) -> Result<Opened> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(Error::ReadOnly);
        }
        let fd = Arc::new(self.open_file(ino)?);
        let fh = self.files.insert(fd.clone());
        Ok(Opened {
            fh,
            keep_cache: true,
            backing: Some(fd),
        })
    }

    fn files_immutable(&self) -> bool {
        // No upper layer: file contents never change.
        true
    }

    fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let fd = self.file_fd(ino, fh)?;
        let mut buf = vec![0u8; size as usize];
        let n = sys::pread_full(fd.as_fd(), &mut buf, offset).map_err(Error::io("pread"))?;
        buf.truncate(n);
        Ok(buf)
    }

    fn release(&self, _ino: u64, fh: u64) {
        self.files.remove(fh);
    }

    fn lseek(&self, ino: u64, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        let fd = self.file_fd(ino, fh)?;
        sys::lseek(fd.as_fd(), offset, whence).map_err(Error::io("lseek"))
    }

    fn opendir(&self, ino: u64) -> Result<Opened> {
        let n = self.node(ino)?;
        let ix = self.index(&n)?.clone();
        Ok(Opened {
            fh: self.dirs.insert(ix),
            keep_cache: true,
            backing: None,
        })
    }

    fn readdir(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> Result<()> {
        // Offsets: 1 after ".", 2 after "..", i + 3 after entries[i] of the handle's snapshot
        // (or, handle-less, of the directory's index, which never changes).
        let node = self.node(ino)?;
        let ix = match fh {
            0 => self.index(&node)?.clone(),
            _ => self.dirs.get(fh).ok_or(Error::BadHandle(fh))?,
        };
        let dir_entry = |st: Stat| Some(self.entry_of(st));
        if offset == 0 {
            let st = self.attr_of(&node)?;
            let e = DirEntry {
                ino,
                next_offset: 1,
                mode: libc::S_IFDIR,
                name: b".",
                entry: dir_entry(st),
            };
            if add(e) {
                return Ok(());
            }
        }
        if offset <= 1 {
            let st = self.attr_of(&node)?;
            let up = self.parent_ino(&node);
            let e = DirEntry {
                ino: up,
                next_offset: 2,
                mode: libc::S_IFDIR,
                name: b"..",
                entry: dir_entry(st),
            };
            if add(e) {
                return Ok(());
            }
        }
        let start = offset.saturating_sub(2) as usize;
        if plus {
            ix.prefetch_attrs(start);
        }
        for (i, e) in ix.entries.iter().enumerate().skip(start) {
            let next_offset = i as u64 + 3;
            let mode = e.kind.mode_bits();
            if plus {
                let (child, st) = match self.child(node.ino, &ix, i as u32, false) {
                    Ok(c) => c,
                    // Vanished from its layer since the index was built: leave it out.
                    Err(err) if err.errno() == libc::ENOENT => continue,
                    Err(err) => return Err(err),
                };
                if e.kind == Kind::Dir && !child.has_index() {
                    // A tree walk will descend here next: index it in the background.
                    self.prefetch
                        .get_or_init(Prefetcher::start)
                        .hint(child.clone());
                }
                let d = DirEntry {
                    ino: child.ino.0,
                    next_offset,
                    mode,
                    name: &e.name,
                    entry: Some(self.entry_of(st)),
                };
                if add(d) {
                    // Did not fit: the kernel never saw it, so it must not linger here.
                    self.table.drop_unreferenced(child.ino);
                    return Ok(());
                }
                self.table.count(child.ino);
            } else {
                let ino = self.stack.ino(ix.layer_of(e), e.real_ino).0;
                if add(DirEntry {
                    ino,
                    next_offset,
                    mode,
                    name: &e.name,
                    entry: None,
                }) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn dirs_immutable(&self) -> bool {
        // No upper layer: nothing can change a listing.
        true
    }

    fn releasedir(&self, _ino: u64, fh: u64) {
        self.dirs.remove(fh);
    }

    fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>> {
        if format::is_private_xattr(name.as_bytes()) {
            return Err(Error::NoAttr);
        }
        let n = self.node(ino)?;
        let x = self.xattrs_of(&n)?;
        let v = x.get(name.as_bytes()).ok_or(Error::NoAttr)?;
        Ok(self.cfg.ids.show_xattr(name.as_bytes(), v).into_owned())
    }

    fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        let n = self.node(ino)?;
        Ok(self.xattrs_of(&n)?.list())
    }

    fn statfs(&self, _ino: u64) -> Result<libc::statvfs> {
        let top = &self.stack.layers()[0];
        sys::fstatvfs(top.root.as_fd()).map_err(Error::io("fstatvfs"))
    }

    fn access(&self, ino: u64, mask: i32, uid: u32, gid: u32) -> Result<()> {
        let n = self.node(ino)?;
        let st = self.attr_of(&n)?;
        access_check(&st, mask, uid, gid, true)
    }

    fn mutation_error(&self) -> Error {
        Error::ReadOnly
    }
}

/// `access(2)`: on a read-only mount writes to files and directories are EROFS; the rest is
/// the classic owner/group/other check (root passes, but needs an x bit to execute).
pub fn access_check(st: &Stat, mask: i32, uid: u32, gid: u32, read_only: bool) -> Result<()> {
    let kind = Kind::from_mode(st.st_mode);
    if read_only && mask & libc::W_OK != 0 && matches!(kind, Kind::File | Kind::Dir | Kind::Symlink)
    {
        return Err(Error::ReadOnly);
    }
    let want = (mask & 0o7) as u32;
    if want == 0 {
        return Ok(());
    }
    let denied = || Error::Io {
        op: "access",
        source: std::io::Error::from_raw_os_error(libc::EACCES),
    };
    if uid == 0 {
        let any_x = st.st_mode & 0o111 != 0;
        return if want & (libc::X_OK as u32) != 0 && kind != Kind::Dir && !any_x {
            Err(denied())
        } else {
            Ok(())
        };
    }
    let bits = if uid == st.st_uid {
        (st.st_mode >> 6) & 7
    } else if gid == st.st_gid {
        (st.st_mode >> 3) & 7
    } else {
        st.st_mode & 7
    };
    if bits & want == want {
        Ok(())
    } else {
        Err(denied())
    }
}
