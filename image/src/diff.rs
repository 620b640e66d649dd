//! `diff`: two merged views compared path by path, as `podman diff` reports (A added,
//! C changed, D deleted), with sizes and whether the content or only metadata changed.

use serde::Serialize;

use super::inspect::merge::{same_entry, shown_kind, Merged};
use super::manifest::Record;
use super::source::Kind;

#[derive(Debug, Clone, Serialize)]
pub struct DiffEntry {
    pub path: String,
    /// `A`, `C` or `D`.
    pub change: char,
    pub kind: &'static str,
    /// File size in A and in B (regular files only).
    pub size_a: Option<u64>,
    pub size_b: Option<u64>,
    /// For `C`: true when the content (or kind, or symlink target) changed, false when
    /// only metadata did (mode, owner, xattrs).
    pub content_changed: Option<bool>,
    /// Why the change is not what it seems (a device node a rootless import could not
    /// store), set by the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

fn size(r: &Record) -> Option<u64> {
    (r.kind == Kind::File || r.kind == Kind::HardLink).then_some(r.size)
}

/// True when what a reader gets from the entry differs (not only its metadata).
fn content_differs(a: &Record, b: &Record) -> bool {
    shown_kind(a.kind) != shown_kind(b.kind)
        || a.hash != b.hash
        || a.size != b.size
        || (a.kind == Kind::Symlink && a.link != b.link)
        || a.rdev != b.rdev
}

/// Compares the merged views `a` and `b` (the root excluded); sorted by path.
pub fn diff(a: &Merged<'_>, b: &Merged<'_>) -> Vec<DiffEntry> {
    let mut out = Vec::new();
    let mut ia = a.view.iter().peekable();
    let mut ib = b.view.iter().peekable();
    loop {
        let step = match (ia.peek(), ib.peek()) {
            (None, None) => break,
            (Some((pa, _)), Some((pb, _))) => pa.cmp(pb),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
        };
        let entry = match step {
            std::cmp::Ordering::Less => {
                let (p, &o) = ia.next().expect("peeked");
                let r = a.record(o);
                (
                    p,
                    DiffEntry {
                        path: p.to_string(),
                        change: 'D',
                        kind: r.kind.name(),
                        size_a: size(r),
                        size_b: None,
                        content_changed: None,
                        note: None,
                    },
                )
            }
            std::cmp::Ordering::Greater => {
                let (p, &o) = ib.next().expect("peeked");
                let r = b.record(o);
                (
                    p,
                    DiffEntry {
                        path: p.to_string(),
                        change: 'A',
                        kind: r.kind.name(),
                        size_a: None,
                        size_b: size(r),
                        content_changed: None,
                        note: None,
                    },
                )
            }
            std::cmp::Ordering::Equal => {
                let (p, &oa) = ia.next().expect("peeked");
                let (_, &ob) = ib.next().expect("peeked");
                let (ra, rb) = (a.record(oa), b.record(ob));
                if same_entry(ra, rb) {
                    continue;
                }
                (
                    p,
                    DiffEntry {
                        path: p.to_string(),
                        change: 'C',
                        kind: rb.kind.name(),
                        size_a: size(ra),
                        size_b: size(rb),
                        content_changed: Some(content_differs(ra, rb)),
                        note: None,
                    },
                )
            }
        };
        if !entry.0.is_root() {
            out.push(entry.1);
        }
    }
    out
}
