//! A supervised mount's restarted daemon (`-o supervise`, `journal.rs`): node ids and file
//! handles an earlier daemon on the same connection gave the kernel, mapped back to nodes
//! and reopened files on first use.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use layerfs_base::sys;

use super::inode::Loc;
use super::journal::Recovered;
use super::table::{Key, NodeId};
use super::{FileH, Node, Union};
use crate::error::{Error, Result};
use crate::upper::copyup::ORPHAN_PREFIX;

/// Node ids up to this many bits go in a supervised mount's handle numbers.
const NODE_BITS: u32 = 40;
/// A journaled handle's mark.
const JOURNALED: u64 = 1 << 63;
/// How many handles between two high-water marks in the journal.
const SEQ_STEP: u64 = 4096;

/// The workdir name of node `id`'s orphan.
fn orphan_name(id: NodeId) -> std::ffi::CString {
    std::ffi::CString::new(format!("{ORPHAN_PREFIX}{}", id.0)).expect("no NUL")
}

impl Union {
    /// Answers the ids and handles in `r` (read from the journal by the daemon that now
    /// serves the connection), and gives new ones only after them.
    pub fn recover_from(&mut self, r: Recovered) {
        self.table.start_after(r.max_node);
        // Sequence numbers above any an earlier daemon gave (its high-water mark).
        self.files.start_after(r.max_fh.max(r.handle_seq));
        self.recovered = Some(r);
        self.sweep_orphans();
    }

    /// Removes the workdir's orphans but those the journal says the kernel still holds
    /// (all of them on a fresh mount: left by a supervised mount that ended with its
    /// supervisor killed).
    pub fn sweep_orphans(&self) {
        let Ok(work) = self.work() else {
            return;
        };
        let keep = self.recovered.as_ref().map(|r| &r.orphans);
        let Ok(entries) = sys::read_dir(work) else {
            return;
        };
        for e in entries {
            let Some(id) = e
                .name
                .strip_prefix(ORPHAN_PREFIX.as_bytes())
                .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
                .map(NodeId)
            else {
                continue;
            };
            if keep.is_some_and(|k| k.contains(&id)) {
                self.orphans.insert(id, ());
            } else if let Err(e) = sys::unlinkat(work, &orphan_name(id), 0) {
                log::warn!("removing the orphan of node {}: {e}", id.0);
            }
        }
    }

    /// On a supervised mount, upper file `node` (open as `fd`) is about to lose its last
    /// name while the kernel holds it: linked in the workdir meanwhile, so that a daemon
    /// started after this one dies still reaches it.
    pub(super) fn orphan(&self, node: &Node, fd: BorrowedFd<'_>) -> Result<()> {
        let Some(j) = super::journal::current() else {
            return Ok(());
        };
        match sys::link_fd(fd, self.work()?, &orphan_name(node.id)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(Error::io("link the orphan")(e)),
        }
        j.orphan(node.id);
        self.orphans.insert(node.id, ());
        Ok(())
    }

    /// Node `id`'s orphan goes once the kernel forgot the node.
    pub(super) fn forget_orphan(&self, id: NodeId) {
        if self.orphans.is_empty() || self.table.has(id) {
            return;
        }
        if self.orphans.remove(&id).is_some() {
            if let Ok(work) = self.work() {
                let _ = sys::unlinkat(work, &orphan_name(id), 0);
            }
        }
    }

    /// Node `id` of a lower file removed while held: the file at lower path `rel` (the
    /// lowers never change), with no name in the tree.
    fn recover_lower_orphan(&self, id: NodeId, rel: &[u8]) -> Result<Arc<Node>> {
        let le = self
            .lowers
            .entry(&self.stack, rel)
            .map_err(Error::io("lower lookup"))?
            .ok_or(Error::LostInRestart(id.0))?;
        let st = le.attr().map_err(Error::io("lstat"))?;
        let ino = self.stack.ino(le.parent.layer_of(le.entry()), st.st_ino);
        let root = self.table.get(NodeId::ROOT)?;
        let loc = Loc {
            parent: Some(root),
            name: le.entry().name.clone(),
            upper: false,
            lower: Some(rel.into()),
            unlinked: true,
        };
        let fmt = st.st_mode & libc::S_IFMT;
        Ok(self.table.insert_as(id, Key::Gone(id), || {
            Node::new(id, Key::Gone(id), ino, fmt, loc)
        }))
    }

    /// Orphan `id` again (the journal recorded it): the file reached through its workdir
    /// link; it has no name in the tree.
    fn recover_orphan(&self, id: NodeId) -> Result<Arc<Node>> {
        let fd = sys::openat(
            self.work()?,
            &orphan_name(id),
            libc::O_PATH | libc::O_NOFOLLOW,
        )
        .map_err(|_| Error::LostInRestart(id.0))?;
        let st = sys::fstat(fd.as_fd()).map_err(Error::io("fstat"))?;
        let root = self.table.get(NodeId::ROOT)?;
        let loc = Loc {
            parent: Some(root),
            name: orphan_name(id).to_bytes().into(),
            upper: true,
            lower: None,
            unlinked: true,
        };
        let ino = self.stack.upper_ino(st.st_ino);
        let fmt = st.st_mode & libc::S_IFMT;
        let node = self.table.insert_as(id, Key::Gone(id), || {
            let n = Node::new(id, Key::Gone(id), ino, fmt, loc);
            let _ = n.detached.set(fd);
            n
        });
        self.orphans.insert(id, ());
        Ok(node)
    }

    /// The id an earlier daemon gave name `name` of directory `dir`, if this daemon has not
    /// mapped it back yet.
    pub(super) fn recovered_id(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        let rec = self.recovered.as_ref()?;
        let id = *rec.by_place.get(&(dir, name.into()))?;
        (!self.table.has(id)
            && rec
                .nodes
                .get(&id)
                .is_some_and(|p| p.0 == dir && &*p.1 == name))
        .then_some(id)
    }

    /// Node `id`, which an earlier daemon gave: its name resolved again in its directory
    /// (itself mapped back first). An id given before the restart whose name was removed
    /// (the kernel may still write back the pages of a removed file, or hold it open) is
    /// lost; an id never given is stale.
    pub(super) fn recover_node(&self, id: NodeId) -> Result<Arc<Node>> {
        let stale = Error::LostInRestart(id.0);
        let rec = self.recovered.as_ref().ok_or(Error::StaleInode(id.0))?;
        if id.0 > rec.max_node {
            return Err(Error::StaleInode(id.0));
        }
        if rec.orphans.contains(&id) && !rec.nodes.contains_key(&id) {
            return self.recover_orphan(id);
        }
        if let Some(rel) = rec.lower_orphans.get(&id) {
            return self.recover_lower_orphan(id, rel);
        }
        let (parent, name) = rec.nodes.get(&id).ok_or(Error::LostInRestart(id.0))?;
        if *parent == id {
            return Err(stale);
        }
        let dir = self.node(parent.0)?;
        let dloc = dir.loc();
        let r = self.resolve(&dir, &dloc, name)?.ok_or(stale)?;
        let (node, _, _) = self.insert_child_as(&dir, name, r, false, Some(id));
        log::debug!(
            "node {} mapped back to {:?}",
            id.0,
            String::from_utf8_lossy(name)
        );
        Ok(node)
    }

    /// A new handle of node `id` on a supervised mount: its number says the node and the
    /// access mode (node id in bits 0-39, read-write in bit 40, a sequence number above),
    /// so nothing is journaled per open; the journal only keeps a high-water mark of the
    /// sequence numbers, every [`SEQ_STEP`], so the next daemon starts above any given
    /// (numbers wrap after 2^22 opens: one open 4 million opens old could share its number
    /// with a new one of the same node and mode, which reaches the same file).
    /// A node id beyond 40 bits takes a journaled handle (bit 63 set).
    pub(super) fn journaled_handle(
        &self,
        j: &super::journal::Journal,
        h: Arc<FileH>,
        id: NodeId,
        upper: bool,
    ) -> u64 {
        let mode = if upper { libc::O_RDWR } else { libc::O_RDONLY };
        if id.0 >= 1 << NODE_BITS {
            let (fh, _) = self.files.insert_numbered(h, |seq| seq | JOURNALED);
            j.open_handle(fh, id, mode);
            return fh;
        }
        let number = |seq: u64| (seq % (1 << 22)) << 41 | u64::from(upper) << NODE_BITS | id.0;
        let (fh, seq) = self.files.insert_numbered(h, number);
        // Journaled before the number is handed out: the next daemon never gives it to
        // another open.
        if seq >= self.handle_mark.load(Ordering::Relaxed) {
            j.handle_seq(seq + SEQ_STEP);
            self.handle_mark
                .fetch_max(seq + SEQ_STEP, Ordering::Relaxed);
        }
        fh
    }

    /// Handle `fh` was released.
    pub(super) fn released(&self, fh: u64) {
        if let Some(j) = super::journal::current() {
            if fh & JOURNALED != 0 {
                j.close_handle(fh);
            }
        }
    }

    /// Handle `fh`, which an earlier daemon gave: its node's file opened again.
    pub(super) fn recover_handle(&self, fh: u64) -> Result<Arc<FileH>> {
        let rec = self.recovered.as_ref().ok_or(Error::BadHandle(fh))?;
        let (id, mode) = if fh & JOURNALED != 0 {
            *rec.handles.get(&fh).ok_or(Error::LostInRestart(fh))?
        } else {
            let id = NodeId(fh & ((1 << NODE_BITS) - 1));
            let rw = fh & (1 << NODE_BITS) != 0;
            (id, if rw { libc::O_RDWR } else { libc::O_RDONLY })
        };
        let node = self.node(id.0)?;
        // No namespace lock: the caller may hold it.
        let r = self.open_real(&node, mode)?;
        let upper = node.loc().upper && !r.data_below;
        let h = Arc::new(FileH {
            node,
            fd: RwLock::new(Arc::new(r.fd)),
            upper: AtomicBool::new(upper),
            exec: false,
            lower_backed: false,
        });
        Ok(self.files.insert_at(fh, h))
    }
}
