//! A supervised mount's restarted daemon (`-o supervise`, `journal.rs`): node ids and file
//! handles an earlier daemon on the same connection gave the kernel, mapped back to nodes
//! and reopened files on first use.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use super::journal::Recovered;
use super::table::NodeId;
use super::{FileH, Node, Union};
use crate::error::{Error, Result};

impl Union {
    /// Answers the ids and handles in `r` (read from the journal by the daemon that now
    /// serves the connection), and gives new ones only after them.
    pub fn recover_from(&mut self, r: Recovered) {
        self.table.start_after(r.max_node);
        self.files.start_after(r.max_fh);
        self.recovered = Some(r);
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

    /// Handle `fh`, which an earlier daemon gave: its node's file opened again.
    pub(super) fn recover_handle(&self, fh: u64) -> Result<Arc<FileH>> {
        let rec = self.recovered.as_ref().ok_or(Error::BadHandle(fh))?;
        if fh > rec.max_fh {
            return Err(Error::BadHandle(fh));
        }
        let (id, mode) = *rec.handles.get(&fh).ok_or(Error::LostInRestart(fh))?;
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
