//! The merged view of a stack of layer manifests, computed the way kernel overlayfs
//! resolves lookups: layers applied bottom to top; a whiteout deletes a path and all below
//! it; a non-directory replaces whatever was below; an opaque directory hides the lower
//! directory's children; a redirected directory (kernel upper, `redirect_dir=on`) takes its
//! lower content from the redirect path instead of its own; other directories merge.
//!
//! Along the way each layer's effect is recorded (what it added, modified, deleted) and
//! which lower file each later layer hid, for the wasted-bytes accounting.

use std::collections::{BTreeMap, HashMap};

use crate::manifest::{Manifest, Record};
use crate::source::{Kind, RelPath};

/// Where a visible path's entry comes from: layer (bottom = 0) and record index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin {
    pub layer: usize,
    pub idx: usize,
}

/// How a layer changed one path of the merged view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Added,
    Modified,
    Deleted,
}

impl Change {
    pub fn letter(self) -> char {
        match self {
            Change::Added => 'A',
            Change::Modified => 'M',
            Change::Deleted => 'D',
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Modified => "modified",
            Change::Deleted => "deleted",
        }
    }
}

/// Why a file of a lower layer is not in the final view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hidden {
    /// The layer that hid it.
    pub by: usize,
    /// True when it was deleted (whiteout, opaque dir), false when replaced.
    pub deleted: bool,
}

/// One layer's effect on the merged view: path → (change, the entry before, the entry after).
pub type LayerChanges = BTreeMap<RelPath, (Change, Option<Origin>, Option<Origin>)>;

/// The result of merging every layer.
pub struct Merged<'m> {
    pub manifests: &'m [Manifest],
    /// The final view: every visible path and where its entry comes from.
    pub view: BTreeMap<RelPath, Origin>,
    /// Per layer, its changes (paths re-listed without any change are left out).
    pub changes: Vec<LayerChanges>,
    /// Files (by origin) that some later layer hid, first hider only.
    pub hidden: HashMap<Origin, Hidden>,
}

impl<'m> Merged<'m> {
    pub fn record(&self, o: Origin) -> &'m Record {
        &self.manifests[o.layer].records[o.idx]
    }

    /// The final entry of `path`, if visible.
    pub fn lookup(&self, path: &RelPath) -> Option<(Origin, &'m Record)> {
        self.view.get(path).map(|&o| (o, self.record(o)))
    }
}

/// The first key after every path below `p` (paths below `p` are `p/...`, contiguous in
/// byte order between `p/` and `p0`, since `'0'` follows `'/'`).
fn subtree_keys(view: &BTreeMap<RelPath, Origin>, p: &RelPath) -> Vec<RelPath> {
    let mut lo = p.as_bytes().to_vec();
    if !lo.is_empty() {
        lo.push(b'/');
    }
    let lo = RelPath::from_normalised(lo);
    view.range(lo.clone()..)
        .take_while(|(k, _)| k.as_bytes().starts_with(lo.as_bytes()))
        .map(|(k, _)| k.clone())
        .collect()
}

/// A hard link's second name shows the same file as its first: compare them as files.
pub fn shown_kind(k: Kind) -> Kind {
    if k == Kind::HardLink {
        Kind::File
    } else {
        k
    }
}

/// True when two entries show the same thing (times and hard-link naming aside).
pub fn same_entry(a: &Record, b: &Record) -> bool {
    shown_kind(a.kind) == shown_kind(b.kind)
        && a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.size == b.size
        && a.hash == b.hash
        && a.rdev == b.rdev
        && a.xattrs == b.xattrs
        && (a.kind != Kind::Symlink || a.link == b.link)
}

/// Merges the manifests (bottom first).
pub fn merge(manifests: &[Manifest]) -> Merged<'_> {
    let mut view: BTreeMap<RelPath, Origin> = BTreeMap::new();
    let mut changes = Vec::with_capacity(manifests.len());
    let mut hidden: HashMap<Origin, Hidden> = HashMap::new();
    for (li, m) in manifests.iter().enumerate() {
        // The state each touched path had before this layer.
        let mut before: HashMap<RelPath, Option<Origin>> = HashMap::new();
        let hide = |view: &mut BTreeMap<RelPath, Origin>,
                    before: &mut HashMap<RelPath, Option<Origin>>,
                    hidden: &mut HashMap<Origin, Hidden>,
                    key: &RelPath,
                    deleted: bool| {
            if let Some(o) = view.remove(key) {
                before.entry(key.clone()).or_insert(Some(o));
                hidden.entry(o).or_insert(Hidden { by: li, deleted });
            }
        };
        // Redirects read the lower state as it was before this layer.
        let mut moved: HashMap<RelPath, Vec<(RelPath, Origin)>> = HashMap::new();
        for r in &m.records {
            if let (Kind::Dir, Some(from)) = (r.kind, &r.redirect) {
                let list = subtree_keys(&view, from)
                    .into_iter()
                    .map(|k| (k.rebase(from, &r.path), view[&k]))
                    .collect();
                moved.insert(r.path.clone(), list);
            }
        }
        for (idx, r) in m.records.iter().enumerate() {
            let p = &r.path;
            if r.kind == Kind::OpaqueMark {
                continue; // folded into directories by the manifest
            }
            let lower_is_dir = view
                .get(p)
                .is_some_and(|&o| manifests[o.layer].records[o.idx].kind == Kind::Dir);
            let hides_children =
                r.kind != Kind::Dir || r.opaque || r.redirect.is_some() || !lower_is_dir;
            if hides_children {
                for k in subtree_keys(&view, p) {
                    hide(
                        &mut view,
                        &mut before,
                        &mut hidden,
                        &k,
                        r.kind == Kind::Whiteout || r.kind == Kind::Dir,
                    );
                }
            }
            if r.kind == Kind::Whiteout {
                hide(&mut view, &mut before, &mut hidden, p, true);
                continue;
            }
            // A directory merging with a lower directory does not hide it, but its entry
            // (metadata) is what shows.
            match view.get(p).copied() {
                Some(o) => {
                    before.entry(p.clone()).or_insert(Some(o));
                    if r.kind != Kind::Dir || manifests[o.layer].records[o.idx].kind != Kind::Dir {
                        hidden.entry(o).or_insert(Hidden {
                            by: li,
                            deleted: false,
                        });
                    }
                }
                None => {
                    before.entry(p.clone()).or_insert(None);
                }
            }
            view.insert(p.clone(), Origin { layer: li, idx });
            if let Some(list) = moved.remove(p) {
                for (k, o) in list {
                    before.entry(k.clone()).or_insert(view.get(&k).copied());
                    view.insert(k, o);
                }
            }
        }
        let mut lc = LayerChanges::new();
        for (path, was) in before {
            let now = view.get(&path).copied();
            let change = match (was, now) {
                (None, None) => continue,
                (None, Some(_)) => Change::Added,
                (Some(_), None) => Change::Deleted,
                (Some(a), Some(b)) => {
                    let (ra, rb) = (
                        &manifests[a.layer].records[a.idx],
                        &manifests[b.layer].records[b.idx],
                    );
                    if same_entry(ra, rb) {
                        continue;
                    }
                    Change::Modified
                }
            };
            if !path.is_root() {
                lc.insert(path, (change, was, now));
            }
        }
        changes.push(lc);
    }
    Merged {
        manifests,
        view,
        changes,
        hidden,
    }
}
