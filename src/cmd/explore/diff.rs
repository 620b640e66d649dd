//! `explore A --diff B`: the two images side by side, path by path, as `layerfs diff`
//! compares them (A added, C changed, D deleted; the same [`diff::diff`]), each side with its
//! entry's mode, owner and size. `d` shows and hides it; the path filter applies.

use layerfs_image::diff;
use layerfs_image::inspect::merge::Merged;
use layerfs_image::inspect::render::kind_mode_string;
use layerfs_image::manifest::{human, Record};
use layerfs_image::source::RelPath;

/// One side of a row: what that image has at the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    pub attrs: String,
    pub size: String,
}

fn side(r: &Record) -> Side {
    Side {
        attrs: format!(
            "{} {:>9}",
            kind_mode_string(r.kind, r.mode),
            format!("{}:{}", r.uid, r.gid)
        ),
        size: if r.kind == layerfs_image::source::Kind::File {
            human(r.size)
        } else {
            String::new()
        },
    }
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffRow {
    pub path: String,
    /// `A`, `C` or `D`.
    pub change: char,
    /// For `C`: `content` or `metadata`.
    pub what: &'static str,
    pub a: Option<Side>,
    pub b: Option<Side>,
}

/// The comparison, and where the user is in it.
#[derive(Debug, Clone)]
pub struct DiffModel {
    pub a_name: String,
    pub b_name: String,
    pub rows: Vec<DiffRow>,
    /// Indexes of `rows` the filter lets through.
    pub visible: Vec<usize>,
    pub cursor: usize,
    pub scroll: usize,
    pub page: usize,
    pub shown: bool,
}

impl DiffModel {
    /// The rows of `a` against `b` (merged views).
    pub fn new(a_name: String, b_name: String, a: &Merged<'_>, b: &Merged<'_>) -> DiffModel {
        let rows: Vec<DiffRow> = diff::diff(a, b)
            .into_iter()
            .map(|e| {
                let p = RelPath::parse(e.path.as_bytes(), true).unwrap_or_else(|_| RelPath::root());
                DiffRow {
                    change: e.change,
                    what: match e.content_changed {
                        Some(true) => "content",
                        Some(false) => "metadata",
                        None => "",
                    },
                    a: a.lookup(&p).map(|(_, r)| side(r)),
                    b: b.lookup(&p).map(|(_, r)| side(r)),
                    path: e.path,
                }
            })
            .collect();
        let visible = (0..rows.len()).collect();
        DiffModel {
            a_name,
            b_name,
            rows,
            visible,
            cursor: 0,
            scroll: 0,
            page: 20,
            shown: false,
        }
    }

    /// Applies the path filter (a substring, as the tree's).
    pub fn filter(&mut self, f: &str) {
        self.visible = self
            .rows
            .iter()
            .enumerate()
            .filter(|(_, r)| f.is_empty() || r.path.contains(f))
            .map(|(i, _)| i)
            .collect();
        self.cursor = self.cursor.min(self.visible.len().saturating_sub(1));
    }

    pub fn step(&mut self, by: isize) {
        let last = self.visible.len().saturating_sub(1) as isize;
        self.cursor = (self.cursor as isize).saturating_add(by).clamp(0, last) as usize;
    }

    /// Counts of (added, changed, deleted) rows.
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |c| self.rows.iter().filter(|r| r.change == c).count();
        (n('A'), n('C'), n('D'))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tree::tests::sample;
    use super::*;
    use layerfs_image::inspect::merge::merge;

    #[test]
    fn rows_pair_both_sides_and_the_filter_narrows_them() {
        let m = sample();
        let (a, b) = (merge(&m[..1]), merge(&m[..2]));
        let mut d = DiffModel::new("a".into(), "b".into(), &a, &b);
        let got: Vec<(char, &str)> = d.rows.iter().map(|r| (r.change, r.path.as_str())).collect();
        assert_eq!(
            got,
            vec![('C', "/etc/hosts"), ('A', "/etc/new"), ('D', "/etc/passwd")]
        );
        let hosts = &d.rows[0];
        assert_eq!(hosts.what, "content");
        assert_eq!(hosts.a.as_ref().unwrap().size, "10 B");
        assert_eq!(hosts.b.as_ref().unwrap().size, "11 B");
        assert!(hosts.a.as_ref().unwrap().attrs.starts_with("-rw-r--r--"));
        assert!(d.rows[1].a.is_none() && d.rows[1].b.is_some());
        assert!(d.rows[2].a.is_some() && d.rows[2].b.is_none());
        assert_eq!(d.counts(), (1, 1, 1));
        d.step(5);
        assert_eq!(d.cursor, 2);
        d.filter("new");
        assert_eq!(d.visible, vec![1]);
        assert_eq!(d.cursor, 0);
        d.filter("");
        assert_eq!(d.visible.len(), 3);
    }
}
