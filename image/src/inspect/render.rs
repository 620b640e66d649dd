//! Human output of `inspect`: the layer table, the totals, and a layer's changes as a tree.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::merge::{Change, Merged};
use super::Report;
use crate::manifest::{human, Record};
use crate::source::{Kind, RelPath};

/// `drwxr-xr-x`-style mode of a record.
pub fn mode_string(r: &Record) -> String {
    kind_mode_string(r.kind, r.mode)
}

/// `drwxr-xr-x`-style string of a kind and mode bits.
pub fn kind_mode_string(kind: Kind, m: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(kind.letter());
    for (shift, special, sch) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (m >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, m & special != 0) {
            (true, true) => sch,
            (false, true) => sch.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

fn ellipsis(s: &str, n: usize) -> String {
    let one_line = s.replace('\n', " ");
    let one_line = one_line.trim();
    if one_line.chars().count() <= n {
        one_line.to_string()
    } else {
        let mut t: String = one_line.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The CREATED BY column: the history's `created_by`, then its comment after `#`.
fn created_by(l: &super::LayerReport) -> String {
    let by = l.created_by.as_deref().unwrap_or("-");
    match l.comment.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => format!("{by}  # {c}"),
        None => by.to_string(),
    }
}

/// The layer table and totals.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", r.source);
    let _ = writeln!(
        out,
        "{:>3}  {:<19}  {:>7}  {:>6}  {:>6}  {:>6}  {:>10}  {:>10}  {:>10}  CREATED BY",
        "#", "LAYER", "ENTRIES", "ADDED", "MODIF", "DELET", "SIZE", "WASTED", "DUPLICATE"
    );
    for l in &r.layers {
        let id = match l.digest.as_ref().or(l.diff_id.as_ref()) {
            Some(d) => d.trim_start_matches("sha256:").chars().take(19).collect(),
            None => {
                let n = l.id.chars().count();
                if n > 19 {
                    format!("…{}", l.id.chars().skip(n - 18).collect::<String>())
                } else {
                    l.id.clone()
                }
            }
        };
        let _ = writeln!(
            out,
            "{:>3}  {:<19}  {:>7}  {:>6}  {:>6}  {:>6}  {:>10}  {:>10}  {:>10}  {}",
            l.index,
            id,
            l.entries,
            l.added,
            l.modified,
            l.deleted,
            human(l.bytes_added),
            human(l.bytes_wasted),
            human(l.duplicate_bytes),
            ellipsis(&created_by(l), 60)
        );
    }
    let t = &r.totals;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "image size    {:>12}  ({} bytes of file content in {} layers)",
        human(t.image_bytes),
        t.image_bytes,
        t.layers
    );
    let _ = writeln!(
        out,
        "merged size   {:>12}  ({} entries)",
        human(t.merged_bytes),
        t.merged_entries
    );
    let _ = writeln!(
        out,
        "reclaimable   {:>12}  ({:.1}% of the image; hidden by later layers)",
        human(t.reclaimable_bytes),
        t.reclaimable_percent
    );
    let _ = writeln!(
        out,
        "efficiency    {:>12.4}  (merged / image)",
        t.efficiency
    );
    let _ = writeln!(
        out,
        "duplicates    {:>12}  (same content stored in several layers)",
        human(t.duplicate_bytes)
    );
    if !r.wasted.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "largest wasted files:");
        let _ = writeln!(
            out,
            "{:>10}  {:>5}  {:<18}  PATH",
            "SIZE", "LAYER", "HIDDEN"
        );
        for w in &r.wasted {
            let _ = writeln!(
                out,
                "{:>10}  {:>5}  {:<18}  {}",
                human(w.size),
                w.layer,
                format!("{} in {}", w.how, w.hidden_by),
                w.path
            );
        }
    }
    out
}

/// How `tree` selects and orders a layer's changes.
#[derive(Debug, Clone, Default)]
pub struct TreeOptions {
    /// Only this kind of change.
    pub only: Option<Change>,
    /// Largest subtrees first instead of names.
    pub by_size: bool,
    /// Only paths under one of these (image paths); empty = all.
    pub under: Vec<RelPath>,
}

#[derive(Default)]
struct Node {
    /// The change at this path and its printed metadata; `None` for context directories.
    change: Option<(Change, String)>,
    size: u64,
    children: BTreeMap<Vec<u8>, Node>,
}

/// A layer's changes as a tree with A/M/D marks and sizes (like dive's file pane).
pub fn tree(merged: &Merged<'_>, layer: usize, opts: &TreeOptions) -> String {
    let mut root = Node::default();
    let changes = &merged.changes[layer];
    for (path, &(change, was, now)) in changes {
        if opts.only.is_some_and(|o| o != change) {
            continue;
        }
        if !opts.under.is_empty() && !opts.under.iter().any(|u| path.starts_with(u)) {
            continue;
        }
        let rec = now.or(was).map(|o| merged.record(o));
        let size = rec.filter(|r| r.kind == Kind::File).map_or(0, |r| r.size);
        let mut node = &mut root;
        node.size += size;
        for comp in path.as_bytes().split(|&b| b == b'/') {
            node = node.children.entry(comp.to_vec()).or_default();
            node.size += size;
        }
        node.change = Some((change, rec.map(line_of).unwrap_or_default()));
    }
    let mut out = String::new();
    print_node(&root, 0, opts.by_size, &mut out);
    out
}

fn line_of(r: &Record) -> String {
    let size = if r.kind == Kind::File {
        human(r.size)
    } else {
        String::new()
    };
    format!("{} {:>5}:{:<5} {:>10}", mode_string(r), r.uid, r.gid, size)
}

fn print_node(n: &Node, depth: usize, by_size: bool, out: &mut String) {
    let mut kids: Vec<(&Vec<u8>, &Node)> = n.children.iter().collect();
    if by_size {
        kids.sort_by(|a, b| b.1.size.cmp(&a.1.size).then(a.0.cmp(b.0)));
    }
    for (name, child) in kids {
        let (mark, info) = match &child.change {
            Some((c, info)) => (c.letter(), info.clone()),
            None => (
                ' ',
                format!("{:>10} {:>11} {:>10}", "", "", human(child.size)),
            ),
        };
        let _ = writeln!(
            out,
            "{mark} {info}  {}{}",
            "  ".repeat(depth),
            String::from_utf8_lossy(name)
        );
        print_node(child, depth + 1, by_size, out);
    }
}
