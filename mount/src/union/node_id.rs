//! The kernel's name for a node, apart from the table that hands them out, so the journal
//! of a supervised mount (which records them) and the table (which tells the journal what
//! it forgets) do not import each other.

/// The kernel's name for a node (its FUSE node id); the root's is 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(pub u64);

impl NodeId {
    pub const ROOT: NodeId = NodeId(1);
}
