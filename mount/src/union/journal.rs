//! The journal of a supervised mount (`-o supervise`): what each node id and file handle
//! the kernel holds stands for, kept in a file the supervisor holds open (a memfd), so that
//! a daemon started on the same connection after the last one died answers them.
//!
//! A node id is recorded as (directory node id, name) when the node is made and again
//! whenever the name it acts through changes (rename, a hard link's name removed), and
//! unrecorded when the kernel forgets it or its last name goes; a handle as (node id, access
//! mode) from open to release. The next daemon reads the journal and maps an id it does not
//! know back to a node on first use, resolving the name in its directory (itself mapped back
//! the same way, up to the root), and reopens a handle by its node. Ids and handle numbers
//! go on from the highest recorded, so none is ever given twice on one connection.
//!
//! Records are appended; each is written before the journal's length in the header says
//! it is there, so a daemon killed between the two leaves a record that was never answered
//! to the kernel and is not read. A record is written before the reply that hands its id or
//! handle to the kernel. The journal is one per process (one daemon serves one mount).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, OnceLock};

use super::node_id::NodeId;

const MAGIC: &[u8; 8] = b"LFSJRN01";
const HEADER: u64 = 16;

const BIND: u8 = 1;
const UNBIND: u8 = 2;
const OPEN: u8 = 3;
const CLOSE: u8 = 4;
const BLOB: u8 = 5;
const DONE: u8 = 6;
const ORPHAN: u8 = 7;
const FORGOT: u8 = 8;
const LOWER: u8 = 9;
const SEQ: u8 = 10;

/// What an earlier daemon recorded.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Node id -> (directory node id, name).
    pub nodes: HashMap<NodeId, (NodeId, Box<[u8]>)>,
    /// Handle -> (node id, access mode).
    pub handles: HashMap<u64, (NodeId, i32)>,
    /// The highest node id and journaled handle ever recorded.
    pub max_node: u64,
    pub max_fh: u64,
    /// Handle sequence numbers given are below this (`recover.rs`).
    pub handle_seq: u64,
    /// The session's opening bytes (the adapter's business).
    pub blob: Option<Vec<u8>>,
    /// Requests recorded done (their answers may not have reached the kernel).
    pub done: std::collections::HashSet<u64>,
    /// Nodes whose file lost its last name while the kernel held them, kept linked in the
    /// workdir (`#layerfs-orphan-ID`) until forgotten.
    pub orphans: std::collections::HashSet<NodeId>,
    /// Nodes of lower files whose last name was removed while the kernel held them: the
    /// file's path in the lowers (which never change).
    pub lower_orphans: HashMap<NodeId, Box<[u8]>>,
    /// (directory node id, name) -> node id: [`Recovered::nodes`] the other way round.
    pub by_place: HashMap<(NodeId, Box<[u8]>), NodeId>,
}

/// The journal file and its length.
#[derive(Debug)]
pub struct Journal {
    file: File,
    end: Mutex<u64>,
}

static CURRENT: OnceLock<Journal> = OnceLock::new();

/// The journal of this process, if it serves a supervised mount.
pub(crate) fn current() -> Option<&'static Journal> {
    CURRENT.get()
}

/// Makes `file` this process's journal: a new one when empty, else what it holds is read
/// back. Fails if the process has one already or the file is not a journal.
pub fn install(file: File) -> std::io::Result<Recovered> {
    let (journal, recovered) = Journal::open(file)?;
    CURRENT
        .set(journal)
        .map_err(|_| std::io::Error::other("a journal is installed already"))?;
    Ok(recovered)
}

impl Journal {
    fn open(file: File) -> std::io::Result<(Journal, Recovered)> {
        let len = file.metadata()?.len();
        if len == 0 {
            file.write_all_at(MAGIC, 0)?;
            file.write_all_at(&HEADER.to_le_bytes(), 8)?;
            let j = Journal {
                file,
                end: Mutex::new(HEADER),
            };
            return Ok((j, Recovered::default()));
        }
        let mut head = [0u8; HEADER as usize];
        file.read_exact_at(&mut head, 0)?;
        if &head[..8] != MAGIC {
            return Err(std::io::Error::other("not a layerfs journal"));
        }
        let end = u64::from_le_bytes(head[8..].try_into().unwrap_or_default()).min(len);
        let mut body = vec![0u8; end.saturating_sub(HEADER) as usize];
        file.read_exact_at(&mut body, HEADER)?;
        let recovered = Recovered::read(&body);
        let j = Journal {
            file,
            end: Mutex::new(end),
        };
        Ok((j, recovered))
    }

    fn append(&self, tag: u8, a: u64, b: u64, bytes: &[u8]) {
        let mut rec = Vec::with_capacity(21 + bytes.len());
        rec.push(tag);
        rec.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        rec.extend_from_slice(&a.to_le_bytes());
        rec.extend_from_slice(&b.to_le_bytes());
        rec.extend_from_slice(bytes);
        let mut end = self.end.lock().unwrap_or_else(|p| p.into_inner());
        let at = *end;
        let r = self.file.write_all_at(&rec, at).and_then(|()| {
            self.file
                .write_all_at(&(at + rec.len() as u64).to_le_bytes(), 8)
        });
        match r {
            Ok(()) => *end = at + rec.len() as u64,
            // The mount goes on; only a restart would miss this record.
            Err(e) => log::warn!("journal: {e}: a restarted daemon will not know this record"),
        }
    }

    /// Node `id` is name `name` of directory `parent`.
    pub(crate) fn bind(&self, id: NodeId, parent: NodeId, name: &[u8]) {
        self.append(BIND, id.0, parent.0, name);
    }

    /// Node `id` has no name any more, or the kernel forgot it.
    pub(crate) fn unbind(&self, id: NodeId) {
        self.append(UNBIND, id.0, 0, &[]);
    }

    /// Node `id`, a lower file at lower path `rel`, lost its last name.
    pub(crate) fn lower_orphan(&self, id: NodeId, rel: &[u8]) {
        self.append(LOWER, id.0, 0, rel);
    }

    /// Node `id` lost its last name and is kept in the workdir as an orphan.
    pub(crate) fn orphan(&self, id: NodeId) {
        self.append(ORPHAN, id.0, 0, &[]);
    }

    /// The kernel forgot node `id` (its orphan, if any, is gone too).
    pub(crate) fn forgot(&self, id: NodeId) {
        self.append(FORGOT, id.0, 0, &[]);
    }

    /// Handle `fh` is open on node `id` with access mode `mode`.
    pub(crate) fn open_handle(&self, fh: u64, id: NodeId, mode: i32) {
        self.append(
            OPEN,
            fh,
            (u64::from(mode as u32) << 32) | (id.0 & 0xffff_ffff),
            &[],
        );
        // Node ids beyond 32 bits: a second record keeps the whole id.
        if id.0 > 0xffff_ffff {
            self.append(OPEN, fh | 1 << 63, id.0, &[]);
        }
    }

    /// Handle sequence numbers up to `seq` may be given from now on.
    pub(crate) fn handle_seq(&self, seq: u64) {
        self.append(SEQ, seq, 0, &[]);
    }

    pub(crate) fn close_handle(&self, fh: u64) {
        self.append(CLOSE, fh, 0, &[]);
    }

    /// Request `unique` is done ([`Recovered::done`]).
    pub(crate) fn done(&self, unique: u64) {
        self.append(DONE, unique, 0, &[]);
    }

    /// Keeps `bytes` for the next daemon ([`Recovered::blob`]).
    pub fn keep_blob(&self, bytes: &[u8]) {
        self.append(BLOB, 0, 0, bytes);
    }
}

/// Keeps `bytes` in this process's journal, if it has one.
pub fn keep_blob(bytes: &[u8]) {
    if let Some(j) = current() {
        j.keep_blob(bytes);
    }
}

impl Recovered {
    fn read(mut body: &[u8]) -> Recovered {
        let mut r = Recovered::default();
        while body.len() >= 21 {
            let tag = body[0];
            let n = u32::from_le_bytes(body[1..5].try_into().unwrap_or_default()) as usize;
            let a = u64::from_le_bytes(body[5..13].try_into().unwrap_or_default());
            let b = u64::from_le_bytes(body[13..21].try_into().unwrap_or_default());
            let Some(bytes) = body.get(21..21 + n) else {
                break;
            };
            match tag {
                BIND => {
                    r.max_node = r.max_node.max(a);
                    r.lower_orphans.remove(&NodeId(a));
                    r.nodes.insert(NodeId(a), (NodeId(b), bytes.into()));
                }
                LOWER => {
                    r.nodes.remove(&NodeId(a));
                    r.lower_orphans.insert(NodeId(a), bytes.into());
                }
                UNBIND => {
                    r.max_node = r.max_node.max(a);
                    r.nodes.remove(&NodeId(a));
                }
                OPEN if a & 1 << 63 != 0 => {
                    if let Some(h) = r.handles.get_mut(&(a & !(1 << 63))) {
                        h.0 = NodeId(b);
                    }
                }
                OPEN => {
                    r.max_fh = r.max_fh.max(a);
                    r.handles
                        .insert(a, (NodeId(b & 0xffff_ffff), (b >> 32) as u32 as i32));
                }
                CLOSE => {
                    r.handles.remove(&a);
                }
                BLOB => r.blob = Some(bytes.to_vec()),
                SEQ => r.handle_seq = r.handle_seq.max(a),
                DONE => {
                    r.done.insert(a);
                }
                ORPHAN => {
                    r.orphans.insert(NodeId(a));
                }
                FORGOT => {
                    r.max_node = r.max_node.max(a);
                    r.nodes.remove(&NodeId(a));
                    r.orphans.remove(&NodeId(a));
                    r.lower_orphans.remove(&NodeId(a));
                }
                _ => break,
            }
            body = &body[21 + n..];
        }
        r.by_place = r.nodes.iter().map(|(id, p)| (p.clone(), *id)).collect();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_reads_back_what_was_recorded_and_not_what_was_undone() {
        let t = tempfile::tempfile().unwrap();
        let (j, r) = Journal::open(t.try_clone().unwrap()).unwrap();
        assert!(r.nodes.is_empty());
        j.bind(NodeId(2), NodeId(1), b"a");
        j.bind(NodeId(3), NodeId(2), b"b");
        j.bind(NodeId(3), NodeId(1), b"c");
        j.bind(NodeId(4), NodeId(1), b"d");
        j.unbind(NodeId(4));
        j.open_handle(7, NodeId(3), libc::O_RDWR);
        j.open_handle(8, NodeId(1 << 40), libc::O_RDONLY);
        j.open_handle(9, NodeId(2), libc::O_RDONLY);
        j.close_handle(9);
        j.keep_blob(b"init");
        j.done(12);
        j.orphan(NodeId(5));
        j.orphan(NodeId(6));
        j.forgot(NodeId(6));
        j.handle_seq(8192);
        j.bind(NodeId(7), NodeId(1), b"x");
        j.lower_orphan(NodeId(7), b"d/x");
        let (_, r) = Journal::open(t).unwrap();
        assert_eq!(r.nodes.len(), 2);
        assert_eq!(r.nodes[&NodeId(3)], (NodeId(1), b"c"[..].into()));
        assert_eq!(r.by_place[&(NodeId(1), b"c"[..].into())], NodeId(3));
        assert_eq!(r.handles[&7], (NodeId(3), libc::O_RDWR));
        assert_eq!(r.handles[&8], (NodeId(1 << 40), libc::O_RDONLY));
        assert!(!r.handles.contains_key(&9));
        assert_eq!(r.max_fh, 9);
        assert_eq!(r.blob.as_deref(), Some(&b"init"[..]));
        assert!(r.done.contains(&12) && r.done.len() == 1);
        assert_eq!(r.orphans.iter().collect::<Vec<_>>(), [&NodeId(5)]);
        assert_eq!(r.max_node, 7);
        assert_eq!(r.handle_seq, 8192);
        assert_eq!(&*r.lower_orphans[&NodeId(7)], b"d/x");
        assert!(!r.nodes.contains_key(&NodeId(7)));
    }
}
