//! The state of `explore`, with no terminal: which layer and row are selected, what is
//! collapsed, hidden or filtered, and the popups. Keys become [`Action`]s (keys.rs), the
//! model applies them, the view (view.rs) only draws it; so every behaviour is unit-tested
//! here without a terminal.

use std::collections::{BTreeMap, HashSet};

use layerfs_image::inspect::merge::{self, Change};
use layerfs_image::inspect::Report;
use layerfs_image::manifest::Manifest;
use layerfs_image::source::RelPath;
use layerfs_image::which;

use super::diff::DiffModel;
use super::tree::{Compare, Tree};

/// The focused pane (Tab switches, as in dive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Layers,
    Tree,
}

/// One row of the layer pane.
#[derive(Debug, Clone)]
pub struct LayerRow {
    pub id: String,
    /// The history's `created_by`, else the layer id.
    pub command: String,
    pub bytes: u64,
    pub added: usize,
    pub modified: usize,
    pub deleted: usize,
    pub wasted: u64,
}

/// One line of the wasted-files table: a path, how many hidden copies, their bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waste {
    pub path: String,
    pub count: usize,
    pub bytes: u64,
}

/// What the user asked for, whatever the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Quit,
    SwitchPane,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    CompareLayer,
    CompareAll,
    ToggleCollapse,
    ToggleCollapseAll,
    Toggle(Change),
    ToggleUnmodified,
    ToggleAttributes,
    SortBySize,
    FilterStart,
    FilterChar(char),
    FilterBackspace,
    FilterDone,
    FilterClear,
    Which,
    Preview,
    Help,
    /// Show / hide the side-by-side diff (`--diff B`).
    ToggleDiff,
    ClosePopup,
    Nothing,
}

/// Work the model cannot do by itself (it reads no layer content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Quit,
    /// Read `path` as layer `layer` stores it and call [`Model::show_preview`].
    Preview {
        layer: usize,
        path: RelPath,
    },
}

/// A text box over the panes (Esc closes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Popup {
    pub title: String,
    pub lines: Vec<String>,
}

/// A visible row of the tree pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub node: usize,
    /// `├── ` / `└── ` / `│   ` prefix.
    pub prefix: String,
}

/// Which change classes the tree hides (dive's Ctrl+A / R / M / U toggles).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hidden {
    pub added: bool,
    pub removed: bool,
    pub modified: bool,
    pub unmodified: bool,
}

impl Hidden {
    fn hides(&self, mark: Option<Change>) -> bool {
        match mark {
            Some(Change::Added) => self.added,
            Some(Change::Deleted) => self.removed,
            Some(Change::Modified) => self.modified,
            None => self.unmodified,
        }
    }
}

pub struct Model {
    pub name: String,
    pub layers: Vec<LayerRow>,
    /// (image bytes, merged bytes, reclaimable bytes, efficiency 0..1)
    pub totals: (u64, u64, u64, f64),
    pub wasted: Vec<Waste>,
    manifests: Vec<Manifest>,
    pub layer: usize,
    pub pane: Pane,
    pub compare: Compare,
    pub hidden: Hidden,
    pub attributes: bool,
    pub by_size: bool,
    pub filter: String,
    pub editing_filter: bool,
    collapsed: HashSet<RelPath>,
    pub tree: Tree,
    pub rows: Vec<Row>,
    /// Selected row of the tree pane.
    pub cursor: usize,
    /// First tree row drawn (kept by the view so the cursor stays on screen).
    pub scroll: usize,
    /// Tree rows a page holds (set by the view from the terminal's size).
    pub page: usize,
    pub popup: Option<Popup>,
    /// Lines of the popup scrolled past (arrows and pages scroll a popup).
    pub popup_scroll: usize,
    /// The comparison with a second image (`--diff B`).
    pub diff: Option<DiffModel>,
    /// The tree is not the selected layer's and comparison's yet.
    stale: bool,
    /// Trees built so far.
    pub builds: usize,
    /// The layer and comparison `tree` is of.
    built: (usize, Compare),
    /// Trees shown before, most recent last (going back to a layer is instant).
    recent: Vec<((usize, Compare), Tree)>,
}

/// Trees kept besides the one shown.
const RECENT_TREES: usize = 3;

impl Model {
    /// A model of the image `name`: its layers' manifests (bottom first) and `inspect`'s
    /// report on them (layer rows, totals, wasted files).
    pub fn new(name: String, manifests: Vec<Manifest>, report: &Report) -> Model {
        let layers = report
            .layers
            .iter()
            .map(|l| LayerRow {
                id: l.id.clone(),
                command: l
                    .created_by
                    .clone()
                    .unwrap_or_else(|| l.id.clone())
                    .replace('\n', " "),
                bytes: l.bytes_added,
                added: l.added,
                modified: l.modified,
                deleted: l.deleted,
                wasted: l.bytes_wasted,
            })
            .collect();
        let mut by_path: BTreeMap<&str, Waste> = BTreeMap::new();
        for w in &report.wasted {
            let e = by_path.entry(&w.path).or_insert_with(|| Waste {
                path: w.path.clone(),
                count: 0,
                bytes: 0,
            });
            e.count += 1;
            e.bytes += w.size;
        }
        let mut wasted: Vec<Waste> = by_path.into_values().collect();
        wasted.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.path.cmp(&b.path)));
        let t = &report.totals;
        let mut m = Model {
            name,
            layers,
            totals: (
                t.image_bytes,
                t.merged_bytes,
                t.reclaimable_bytes,
                t.efficiency,
            ),
            wasted,
            tree: Tree::build(&manifests, 0, Compare::Layer),
            manifests,
            layer: 0,
            pane: Pane::Layers,
            compare: Compare::Layer,
            hidden: Hidden::default(),
            attributes: true,
            by_size: false,
            filter: String::new(),
            editing_filter: false,
            collapsed: HashSet::new(),
            rows: Vec::new(),
            cursor: 0,
            scroll: 0,
            page: 20,
            popup: None,
            popup_scroll: 0,
            diff: None,
            stale: false,
            builds: 1,
            built: (0, Compare::Layer),
            recent: Vec::new(),
        };
        m.refresh_rows();
        m
    }

    /// The layers' manifests, bottom first.
    pub fn manifests(&self) -> &[Manifest] {
        &self.manifests
    }

    /// The node under the cursor.
    pub fn selected(&self) -> Option<&super::tree::Node> {
        self.rows.get(self.cursor).map(|r| &self.tree.nodes[r.node])
    }

    pub fn is_collapsed(&self, path: &RelPath) -> bool {
        self.collapsed.contains(path)
    }

    /// Applies `a` and brings the tree up to date; what the caller must do next, if anything.
    #[cfg(test)]
    pub fn apply(&mut self, a: Action) -> Option<Request> {
        let r = self.act(a);
        self.settle();
        r
    }

    /// Applies `a`, leaving a layer change's tree to [`Model::settle`]: the event loop acts
    /// on every key already typed (a held Down arrow) and rebuilds the tree once.
    pub fn act(&mut self, a: Action) -> Option<Request> {
        let moves_layer = self.pane == Pane::Layers
            && matches!(
                a,
                Action::Up
                    | Action::Down
                    | Action::PageUp
                    | Action::PageDown
                    | Action::Home
                    | Action::End
                    | Action::CompareAll
                    | Action::CompareLayer
            );
        if !moves_layer {
            self.settle();
        }
        if self.popup.is_some() {
            let page = self.page.max(1);
            let s = &mut self.popup_scroll;
            match a {
                Action::Quit => return Some(Request::Quit),
                Action::Nothing => {}
                Action::Up => *s = s.saturating_sub(1),
                Action::Down => *s += 1,
                Action::PageUp => *s = s.saturating_sub(page),
                Action::PageDown => *s += page,
                _ => {
                    self.popup = None;
                    self.popup_scroll = 0;
                }
            }
            return None;
        }
        if self.diff.as_ref().is_some_and(|d| d.shown) {
            return self.apply_in_diff(a);
        }
        match a {
            Action::Quit => return Some(Request::Quit),
            Action::ToggleDiff => match &mut self.diff {
                Some(d) => d.shown = true,
                None => {
                    self.popup = Some(Popup {
                        title: "diff".into(),
                        lines: vec!["start with --diff B to compare with another image".into()],
                    })
                }
            },
            Action::SwitchPane => {
                self.pane = match self.pane {
                    Pane::Layers => Pane::Tree,
                    Pane::Tree => Pane::Layers,
                }
            }
            Action::Up => self.step(-1),
            Action::Down => self.step(1),
            Action::PageUp => self.step(-(self.page.max(1) as isize)),
            Action::PageDown => self.step(self.page.max(1) as isize),
            Action::Home => self.step(isize::MIN / 2),
            Action::End => self.step(isize::MAX / 2),
            Action::CompareLayer => self.set_compare(Compare::Layer),
            Action::CompareAll => self.set_compare(Compare::All),
            Action::ToggleCollapse => {
                if let Some(n) = self.selected().filter(|n| n.is_dir()) {
                    let p = n.path.clone();
                    if !self.collapsed.remove(&p) {
                        self.collapsed.insert(p);
                    }
                    self.refresh_rows();
                }
            }
            Action::ToggleCollapseAll => {
                if self.collapsed.is_empty() {
                    self.collapsed = self
                        .tree
                        .nodes
                        .iter()
                        .skip(1)
                        .filter(|n| n.is_dir())
                        .map(|n| n.path.clone())
                        .collect();
                } else {
                    self.collapsed.clear();
                }
                self.refresh_rows();
            }
            Action::Toggle(c) => {
                let h = &mut self.hidden;
                let flag = match c {
                    Change::Added => &mut h.added,
                    Change::Deleted => &mut h.removed,
                    Change::Modified => &mut h.modified,
                };
                *flag = !*flag;
                self.refresh_rows();
            }
            Action::ToggleUnmodified => {
                self.hidden.unmodified = !self.hidden.unmodified;
                self.refresh_rows();
            }
            Action::ToggleAttributes => self.attributes = !self.attributes,
            Action::SortBySize => {
                self.by_size = !self.by_size;
                self.refresh_rows();
            }
            Action::FilterStart
            | Action::FilterChar(_)
            | Action::FilterBackspace
            | Action::FilterDone
            | Action::FilterClear => self.apply_filter(a),
            Action::Which => self.popup = self.which(),
            Action::Preview => {
                let n = self.selected()?;
                if n.is_dir() {
                    return None;
                }
                let (mark, layer, path) = (n.mark, n.layer, n.path.clone());
                return match (mark, layer) {
                    (Some(Change::Deleted), _) | (_, None) => {
                        self.popup = Some(Popup {
                            title: path.to_string(),
                            lines: vec![format!("deleted in layer {}", self.layer)],
                        });
                        None
                    }
                    (_, Some(layer)) => Some(Request::Preview { layer, path }),
                };
            }
            Action::Help => self.help(),
            Action::ClosePopup | Action::Nothing => {}
        }
        None
    }

    fn help(&mut self) {
        self.popup = Some(Popup {
            title: "Keys".into(),
            lines: super::keys::HELP.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// The path filter's editing (it applies to the tree and to the diff).
    fn apply_filter(&mut self, a: Action) {
        match a {
            Action::FilterStart => self.editing_filter = true,
            Action::FilterChar(c) => self.filter.push(c),
            Action::FilterBackspace => {
                self.filter.pop();
            }
            Action::FilterDone => {
                self.editing_filter = false;
                return;
            }
            Action::FilterClear => {
                self.editing_filter = false;
                self.filter.clear();
            }
            _ => return,
        }
        self.refresh_rows();
    }

    /// Actions while the side-by-side diff is shown.
    fn apply_in_diff(&mut self, a: Action) -> Option<Request> {
        let d = self.diff.as_mut()?;
        let page = d.page.max(1) as isize;
        match a {
            Action::Quit => return Some(Request::Quit),
            Action::Up => d.step(-1),
            Action::Down => d.step(1),
            Action::PageUp => d.step(-page),
            Action::PageDown => d.step(page),
            Action::Home => d.step(isize::MIN / 2),
            Action::End => d.step(isize::MAX / 2),
            Action::ToggleDiff | Action::SwitchPane => d.shown = false,
            Action::Help => self.help(),
            other => self.apply_filter(other),
        }
        None
    }

    /// Shows the result of a [`Request::Preview`]: the first bytes of the file (a hex
    /// summary when binary), `total` its size.
    pub fn show_preview(&mut self, layer: usize, path: &RelPath, head: &[u8], total: u64) {
        let mut lines: Vec<String> = Vec::new();
        if head.contains(&0) {
            lines.push(format!("binary file, {total} bytes; first bytes:"));
            for chunk in head.chunks(16).take(16) {
                let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
                lines.push(hex.join(" "));
            }
        } else {
            let text = String::from_utf8_lossy(head);
            lines.extend(text.lines().map(|l| l.replace('\t', "    ")));
            if (head.len() as u64) < total {
                lines.push(format!("… ({} of {total} bytes shown)", head.len()));
            }
        }
        self.popup = Some(Popup {
            title: format!("{path} as layer {layer} has it"),
            lines,
        });
    }

    /// Shows an error in a popup (a failed preview).
    pub fn show_error(&mut self, title: String, e: &anyhow::Error) {
        self.popup = Some(Popup {
            title,
            lines: vec![super::super::one_line(e)],
        });
    }

    /// `which` of the selected path over the whole image.
    fn which(&self) -> Option<Popup> {
        let n = self.selected()?;
        let merged = merge::merge(&self.manifests);
        let ids: Vec<String> = self.layers.iter().map(|l| l.id.clone()).collect();
        let lines = match which::which(&merged, &n.path, false)
            .and_then(|w| super::super::which::text(&w, &ids, &self.name))
        {
            Ok(t) => t.lines().map(str::to_string).collect(),
            Err(e) => vec![super::super::one_line(&e)],
        };
        Some(Popup {
            title: format!("which {}", n.path),
            lines,
        })
    }

    fn step(&mut self, by: isize) {
        match self.pane {
            Pane::Layers => {
                let last = self.layers.len().saturating_sub(1) as isize;
                let to = (self.layer as isize).saturating_add(by).clamp(0, last) as usize;
                if to != self.layer {
                    self.layer = to;
                    self.stale = true;
                }
            }
            Pane::Tree => {
                let last = self.rows.len().saturating_sub(1) as isize;
                self.cursor = (self.cursor as isize).saturating_add(by).clamp(0, last) as usize;
            }
        }
    }

    fn set_compare(&mut self, c: Compare) {
        if self.compare != c {
            self.compare = c;
            self.stale = true;
        }
    }

    /// Builds the tree of the selected layer and comparison if they changed since it was
    /// built; the cursor stays on its path.
    pub fn settle(&mut self) {
        if !self.stale {
            return;
        }
        self.stale = false;
        let want = (self.layer, self.compare);
        let tree = match self.recent.iter().position(|(k, _)| *k == want) {
            Some(i) => self.recent.remove(i).1,
            None => {
                self.builds += 1;
                Tree::build(&self.manifests, self.layer, self.compare)
            }
        };
        let old = std::mem::replace(&mut self.tree, tree);
        self.recent.push((self.built, old));
        if self.recent.len() > RECENT_TREES {
            self.recent.remove(0);
        }
        self.built = want;
        self.refresh_rows();
    }

    /// True when node `i` passes the change toggles and the path filter by itself.
    fn passes(&self, i: usize) -> bool {
        let n = &self.tree.nodes[i];
        !self.hidden.hides(n.mark)
            && (self.filter.is_empty() || n.path.to_string().contains(&self.filter))
    }

    /// Recomputes the visible rows: a node shows when it passes, or when something below
    /// it does (its ancestors give the context); collapsed directories hide their children.
    pub fn refresh_rows(&mut self) {
        if let Some(d) = &mut self.diff {
            d.filter(&self.filter);
        }
        let keep = self.selected().map(|n| n.path.clone());
        let mut shown = vec![false; self.tree.nodes.len()];
        for i in self.tree.post_order() {
            let n = &self.tree.nodes[i];
            shown[i] = self.passes(i) || n.children.iter().any(|&c| shown[c]);
        }
        let mut rows = Vec::new();
        // (node, prefix of its children)
        let mut stack: Vec<(usize, String)> = Vec::new();
        let kids = |i: usize| -> Vec<usize> {
            let mut k: Vec<usize> = self.tree.nodes[i]
                .children
                .iter()
                .copied()
                .filter(|&c| shown[c])
                .collect();
            if self.by_size {
                k.sort_by(|&a, &b| self.tree.nodes[b].size.cmp(&self.tree.nodes[a].size));
            }
            k
        };
        let top = kids(0);
        for (j, &c) in top.iter().enumerate().rev() {
            stack.push((
                c,
                if j + 1 == top.len() {
                    "└── "
                } else {
                    "├── "
                }
                .to_string(),
            ));
        }
        while let Some((i, prefix)) = stack.pop() {
            let n = &self.tree.nodes[i];
            rows.push(Row {
                node: i,
                prefix: prefix.clone(),
            });
            if !n.is_dir() || self.collapsed.contains(&n.path) {
                continue;
            }
            let base: String = prefix.replace("├── ", "│   ").replace("└── ", "    ");
            let k = kids(i);
            for (j, &c) in k.iter().enumerate().rev() {
                let tail = if j + 1 == k.len() {
                    "└── "
                } else {
                    "├── "
                };
                stack.push((c, format!("{base}{tail}")));
            }
        }
        self.rows = rows;
        self.cursor = keep
            .and_then(|p| {
                self.rows
                    .iter()
                    .position(|r| self.tree.nodes[r.node].path == p)
            })
            .unwrap_or(self.cursor)
            .min(self.rows.len().saturating_sub(1));
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
pub(crate) mod tests;
