//! The file tree `explore` shows for one layer: the merged view up to that layer, plus the
//! paths the layer deleted, each marked with its change (added / modified / deleted), built
//! from the layer manifests (never from the tars) by the same merge `inspect` uses.

use std::collections::HashMap;

use layerfs_image::inspect::merge::{self, same_entry, Change, Origin};
use layerfs_image::manifest::{Manifest, Record};
use layerfs_image::source::{Kind, RelPath};

/// What the marks compare, as dive's layer pane offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// The selected layer's own changes (dive's Ctrl+L, the default).
    Layer,
    /// Every change of the layers above the base layer up to the selected one, against the
    /// base layer (dive's Ctrl+A, "aggregated").
    All,
}

/// One path of the tree.
#[derive(Debug, Clone)]
pub struct Node {
    pub path: RelPath,
    pub name: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// A regular file's size; a directory's is the sum of the files below it (deleted ones
    /// only below a deleted directory).
    pub size: u64,
    /// Symlink target or hard link's first name.
    pub link: Option<String>,
    pub mark: Option<Change>,
    /// The layer whose copy the tree shows (for a deleted path: the copy that was deleted).
    pub layer: Option<usize>,
    pub parent: usize,
    /// Sorted by name.
    pub children: Vec<usize>,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
}

/// The tree: `nodes[0]` is the root.
#[derive(Debug, Clone)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

fn node_of(path: RelPath, r: Option<&Record>, layer: Option<usize>, mark: Option<Change>) -> Node {
    let name = String::from_utf8_lossy(path.name()).into_owned();
    Node {
        name,
        kind: r.map_or(Kind::Dir, |r| r.kind),
        mode: r.map_or(0o755, |r| r.mode & 0o7777),
        uid: r.map_or(0, |r| r.uid),
        gid: r.map_or(0, |r| r.gid),
        size: r.map_or(0, |r| if r.kind == Kind::File { r.size } else { 0 }),
        link: r
            .and_then(|r| r.link.as_ref())
            .map(|l| String::from_utf8_lossy(l).into_owned()),
        mark,
        layer,
        path,
        parent: 0,
        children: Vec::new(),
    }
}

impl Tree {
    /// The tree of layer `layer` (bottom = 0) of `manifests`, marked as `compare` says.
    pub fn build(manifests: &[Manifest], layer: usize, compare: Compare) -> Tree {
        let upto = &manifests[..(layer + 1).min(manifests.len())];
        let merged = merge::merge(upto);
        let rec = |o: Origin| &upto[o.layer].records[o.idx];
        // path -> (change, the entry before the change)
        let mut marks: HashMap<&RelPath, (Change, Option<Origin>)> = HashMap::new();
        match compare {
            Compare::All if layer > 0 => {
                // The state before the first layer above the base that touched the path,
                // against the state now.
                let mut first: HashMap<&RelPath, Option<Origin>> = HashMap::new();
                for lc in &merged.changes[1..] {
                    for (p, (_, was, _)) in lc {
                        first.entry(p).or_insert(*was);
                    }
                }
                for (p, was) in first {
                    let now = merged.view.get(p).copied();
                    let c = match (was, now) {
                        (None, None) => continue,
                        (None, Some(_)) => Change::Added,
                        (Some(_), None) => Change::Deleted,
                        (Some(a), Some(b)) if same_entry(rec(a), rec(b)) => continue,
                        (Some(_), Some(_)) => Change::Modified,
                    };
                    marks.insert(p, (c, was));
                }
            }
            _ => {
                if let Some(lc) = merged.changes.last() {
                    for (p, (c, was, _)) in lc {
                        marks.insert(p, (*c, *was));
                    }
                }
            }
        }
        let mut nodes = vec![node_of(RelPath::root(), None, None, None)];
        let mut index: HashMap<RelPath, usize> = HashMap::new();
        index.insert(RelPath::root(), 0);
        fn add(nodes: &mut Vec<Node>, index: &mut HashMap<RelPath, usize>, n: Node) -> usize {
            if let Some(&i) = index.get(&n.path) {
                return i;
            }
            let i = nodes.len();
            index.insert(n.path.clone(), i);
            nodes.push(n);
            i
        }
        for (p, &o) in &merged.view {
            if p.is_root() {
                let mut root = node_of(RelPath::root(), Some(rec(o)), Some(o.layer), None);
                root.parent = 0;
                nodes[0] = root;
                continue;
            }
            let mark = marks.get(p).map(|m| m.0);
            add(
                &mut nodes,
                &mut index,
                node_of(p.clone(), Some(rec(o)), Some(o.layer), mark),
            );
        }
        for (p, (c, was)) in &marks {
            if *c == Change::Deleted {
                let r = was.map(rec);
                add(
                    &mut nodes,
                    &mut index,
                    node_of((*p).clone(), r, was.map(|o| o.layer), Some(Change::Deleted)),
                );
            }
        }
        // Link each node to its parent, creating directories a layer left implicit.
        let mut i = 1;
        while i < nodes.len() {
            let pp = nodes[i].path.parent();
            let parent = match index.get(&pp) {
                Some(&j) => j,
                None => add(&mut nodes, &mut index, node_of(pp, None, None, None)),
            };
            nodes[i].parent = parent;
            nodes[parent].children.push(i);
            i += 1;
        }
        let mut tree = Tree { nodes };
        for i in 0..tree.nodes.len() {
            let mut kids = std::mem::take(&mut tree.nodes[i].children);
            kids.sort_by(|&a, &b| tree.nodes[a].name.cmp(&tree.nodes[b].name));
            tree.nodes[i].children = kids;
        }
        // Directory sizes, children before parents.
        for &i in tree.post_order().iter() {
            let n = &tree.nodes[i];
            if n.kind != Kind::Dir {
                continue;
            }
            let deleted = n.mark == Some(Change::Deleted);
            let sum = n
                .children
                .iter()
                .map(|&c| &tree.nodes[c])
                .filter(|c| deleted || c.mark != Some(Change::Deleted))
                .map(|c| c.size)
                .sum();
            tree.nodes[i].size = sum;
        }
        tree
    }

    /// Every node index, children before their parent.
    pub fn post_order(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack = vec![(0usize, false)];
        while let Some((i, expanded)) = stack.pop() {
            if expanded {
                out.push(i);
                continue;
            }
            stack.push((i, true));
            for &c in &self.nodes[i].children {
                stack.push((c, false));
            }
        }
        out
    }

    /// The index of `path`, if the tree has it.
    #[cfg(test)]
    pub fn find(&self, path: &RelPath) -> Option<usize> {
        self.nodes.iter().position(|n| &n.path == path)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use layerfs_image::manifest::FORMAT_VERSION;
    use layerfs_image::source::Entry;

    /// A record of `path` (a directory when the path ends in `/`, a whiteout when its name
    /// starts with `-`, else a file of `size` bytes whose content hash is `size`).
    pub fn rec(path: &str, size: u64) -> Record {
        let (kind, p) = if let Some(p) = path.strip_suffix('/') {
            (Kind::Dir, p.to_string())
        } else if let Some((dir, name)) = path.rsplit_once("/-") {
            (Kind::Whiteout, format!("{dir}/{name}"))
        } else if let Some(name) = path.strip_prefix('-') {
            (Kind::Whiteout, name.to_string())
        } else {
            (Kind::File, path.to_string())
        };
        let mut h = [0u8; 32];
        h[..8].copy_from_slice(&size.to_le_bytes());
        let mut entry = Entry::new(RelPath::parse(p.as_bytes(), false).unwrap(), kind);
        entry.mode = if kind == Kind::Dir { 0o755 } else { 0o644 };
        entry.size = if kind == Kind::File { size } else { 0 };
        Record {
            entry,
            link_group: None,
            hash: (kind == Kind::File).then_some(layerfs_image::manifest::Hash(h)),
        }
    }

    /// A manifest of `records` (sorted here).
    pub fn manifest(records: Vec<Record>) -> Manifest {
        let mut records = records;
        records.sort_by(|a, b| a.path.cmp(&b.path));
        Manifest {
            version: FORMAT_VERSION,
            layer: "test".into(),
            records,
        }
    }

    /// Three layers: a base, a layer that modifies, adds and deletes, and one that deletes
    /// a directory.
    pub fn sample() -> Vec<Manifest> {
        vec![
            manifest(vec![
                rec("etc/", 0),
                rec("etc/hosts", 10),
                rec("etc/passwd", 20),
                rec("usr/", 0),
                rec("usr/bin/", 0),
                rec("usr/bin/big", 1000),
                rec("usr/bin/small", 5),
            ]),
            manifest(vec![
                rec("etc/", 0),
                rec("etc/hosts", 11),
                rec("etc/-passwd", 0),
                rec("etc/new", 7),
            ]),
            manifest(vec![rec("-usr", 0), rec("tmp/", 0)]),
        ]
    }

    fn marks(t: &Tree) -> Vec<(String, Option<char>)> {
        let mut v: Vec<_> = t.nodes[1..]
            .iter()
            .map(|n| {
                (
                    n.path.to_string()[1..].to_string(),
                    n.mark.map(Change::letter),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_layer_tree_marks_its_own_changes_and_keeps_deleted_paths() {
        let m = sample();
        let t = Tree::build(&m, 1, Compare::Layer);
        assert_eq!(
            marks(&t),
            vec![
                ("etc".into(), None),
                ("etc/hosts".into(), Some('M')),
                ("etc/new".into(), Some('A')),
                ("etc/passwd".into(), Some('D')),
                ("usr".into(), None),
                ("usr/bin".into(), None),
                ("usr/bin/big".into(), None),
                ("usr/bin/small".into(), None),
            ]
        );
        // Sizes: the deleted passwd does not count in etc; the modified hosts is 11.
        let etc = t.find(&RelPath::parse(b"etc", false).unwrap()).unwrap();
        assert_eq!(t.nodes[etc].size, 18);
        assert_eq!(t.nodes[0].size, 18 + 1005);
    }

    #[test]
    fn an_image_without_layers_is_an_empty_tree() {
        let t = Tree::build(&[], 0, Compare::All);
        assert_eq!(t.nodes.len(), 1);
        assert!(t.nodes[0].children.is_empty());
    }

    #[test]
    fn a_deleted_directory_keeps_its_subtree_marked_and_sized() {
        let m = sample();
        let t = Tree::build(&m, 2, Compare::Layer);
        let usr = t.find(&RelPath::parse(b"usr", false).unwrap()).unwrap();
        assert_eq!(t.nodes[usr].mark, Some(Change::Deleted));
        assert_eq!(t.nodes[usr].size, 1005);
        assert_eq!(
            t.nodes[0].size, 18,
            "deleted files are not in the root's size"
        );
        let all = Tree::build(&m, 2, Compare::All);
        let got = marks(&all);
        assert!(got.contains(&("etc/new".into(), Some('A'))), "{got:?}");
        assert!(got.contains(&("usr/bin/big".into(), Some('D'))), "{got:?}");
        assert!(got.contains(&("tmp".into(), Some('A'))), "{got:?}");
        assert!(got.contains(&("etc/hosts".into(), Some('M'))), "{got:?}");
    }
}
