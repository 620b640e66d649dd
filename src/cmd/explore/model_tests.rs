//! Unit tests of the explore model (no terminal): selection, collapse, toggles, filter,
//! sorting, which and preview, on a three-layer sample.

use super::super::tree::tests::sample;
use super::*;
use layerfs_image::inspect::{LayerReport, Totals, WastedPath};

/// A report of `n` layers (`layer{i}`, made by `RUN step {i}`) with three wasted files.
pub fn report(n: usize) -> Report {
    Report {
        schema: "test",
        source: "sample".into(),
        layers: (0..n)
            .map(|i| LayerReport {
                index: i,
                id: format!("layer{i}"),
                digest: None,
                diff_id: None,
                media_type: None,
                blob_size: None,
                created_by: Some(format!("RUN step {i}")),
                comment: None,
                entries: 0,
                added: i,
                modified: 0,
                deleted: 0,
                bytes_added: 0,
                bytes_wasted: 0,
                files_wasted: 0,
                duplicate_files: 0,
                duplicate_bytes: 0,
            })
            .collect(),
        totals: Totals {
            layers: n,
            image_bytes: 0,
            merged_bytes: 0,
            merged_entries: 0,
            reclaimable_bytes: 0,
            reclaimable_percent: 0.0,
            efficiency: 1.0,
            duplicate_bytes: 0,
        },
        wasted: vec![
            WastedPath {
                path: "a".into(),
                layer: 0,
                size: 5,
                hidden_by: 1,
                how: "deleted",
            },
            WastedPath {
                path: "b".into(),
                layer: 0,
                size: 7,
                hidden_by: 1,
                how: "deleted",
            },
            WastedPath {
                path: "a".into(),
                layer: 1,
                size: 5,
                hidden_by: 2,
                how: "overwritten",
            },
        ],
        duplicates: vec![],
    }
}

fn model() -> Model {
    Model::new("sample".into(), sample(), &report(3))
}

fn paths(m: &Model) -> Vec<String> {
    m.rows
        .iter()
        .map(|r| {
            let n = &m.tree.nodes[r.node];
            format!(
                "{}{}",
                &n.path.to_string()[1..],
                n.mark.map_or(String::new(), |c| format!(" {}", c.letter()))
            )
        })
        .collect()
}

#[test]
fn wasted_files_are_grouped_by_path_biggest_first() {
    let m = model();
    assert_eq!(
        m.wasted,
        vec![
            Waste {
                path: "a".into(),
                count: 2,
                bytes: 10
            },
            Waste {
                path: "b".into(),
                count: 1,
                bytes: 7
            },
        ]
    );
}

#[test]
fn selecting_a_layer_shows_its_tree_with_marks() {
    let mut m = model();
    assert_eq!(paths(&m)[0], "etc A");
    m.apply(Action::Down);
    assert_eq!(m.layer, 1);
    assert_eq!(
        paths(&m),
        vec![
            "etc",
            "etc/hosts M",
            "etc/new A",
            "etc/passwd D",
            "usr",
            "usr/bin",
            "usr/bin/big",
            "usr/bin/small"
        ]
    );
    m.apply(Action::End);
    assert_eq!(m.layer, 2);
    m.apply(Action::Up);
    m.apply(Action::Home);
    assert_eq!(m.layer, 0);
}

#[test]
fn tree_cursor_collapse_and_collapse_all() {
    let mut m = model();
    m.apply(Action::Down);
    m.apply(Action::SwitchPane);
    assert_eq!(m.pane, Pane::Tree);
    m.apply(Action::Down);
    assert_eq!(&m.selected().unwrap().path.to_string()[1..], "etc/hosts");
    m.apply(Action::Up);
    m.apply(Action::ToggleCollapse);
    assert_eq!(
        paths(&m),
        vec!["etc", "usr", "usr/bin", "usr/bin/big", "usr/bin/small"]
    );
    m.apply(Action::ToggleCollapse);
    assert_eq!(m.rows.len(), 8);
    m.apply(Action::ToggleCollapseAll);
    assert_eq!(paths(&m), vec!["etc", "usr"]);
    m.apply(Action::ToggleCollapseAll);
    assert_eq!(m.rows.len(), 8);
    // Collapsing a file does nothing.
    m.apply(Action::End);
    m.apply(Action::ToggleCollapse);
    assert_eq!(m.rows.len(), 8);
    assert_eq!(
        &m.selected().unwrap().path.to_string()[1..],
        "usr/bin/small"
    );
}

#[test]
fn change_toggles_keep_the_ancestors_of_what_shows() {
    let mut m = model();
    m.apply(Action::Down);
    m.apply(Action::ToggleUnmodified);
    assert_eq!(
        paths(&m),
        vec!["etc", "etc/hosts M", "etc/new A", "etc/passwd D"]
    );
    m.apply(Action::Toggle(Change::Added));
    m.apply(Action::Toggle(Change::Deleted));
    assert_eq!(paths(&m), vec!["etc", "etc/hosts M"]);
    m.apply(Action::Toggle(Change::Modified));
    assert!(m.rows.is_empty());
    assert!(m.selected().is_none());
    m.apply(Action::ToggleUnmodified);
    assert_eq!(m.rows.len(), 5, "{:?}", paths(&m));
}

#[test]
fn the_path_filter_keeps_matches_and_their_ancestors() {
    let mut m = model();
    m.apply(Action::Down);
    m.apply(Action::FilterStart);
    assert!(m.editing_filter);
    for c in "bi".chars() {
        m.apply(Action::FilterChar(c));
    }
    assert_eq!(
        paths(&m),
        vec!["usr", "usr/bin", "usr/bin/big", "usr/bin/small"]
    );
    m.apply(Action::FilterChar('g'));
    assert_eq!(paths(&m), vec!["usr", "usr/bin", "usr/bin/big"]);
    m.apply(Action::FilterBackspace);
    m.apply(Action::FilterDone);
    assert!(!m.editing_filter);
    assert_eq!(m.filter, "bi");
    m.apply(Action::FilterClear);
    assert_eq!(m.rows.len(), 8);
}

#[test]
fn sort_by_size_puts_big_subtrees_first_and_the_cursor_follows_its_path() {
    let mut m = model();
    m.apply(Action::Down);
    m.apply(Action::SwitchPane);
    m.apply(Action::Down);
    m.apply(Action::SortBySize);
    assert_eq!(
        paths(&m),
        vec![
            "usr",
            "usr/bin",
            "usr/bin/big",
            "usr/bin/small",
            "etc",
            "etc/passwd D",
            "etc/hosts M",
            "etc/new A"
        ]
    );
    assert_eq!(&m.selected().unwrap().path.to_string()[1..], "etc/hosts");
}

#[test]
fn which_and_preview_of_the_selected_path() {
    let mut m = model();
    m.apply(Action::Down);
    m.apply(Action::SwitchPane);
    m.apply(Action::Down);
    m.apply(Action::Which);
    let p = m.popup.clone().unwrap();
    assert_eq!(p.title, "which /etc/hosts");
    assert!(
        p.lines[0].starts_with("/etc/hosts: layer 1 (layer1): file"),
        "{:?}",
        p.lines
    );
    assert!(
        p.lines[1].contains("shadows layer 0 (layer0)"),
        "{:?}",
        p.lines
    );
    // Arrows scroll a popup; any other key closes it and does nothing else.
    m.apply(Action::Down);
    m.apply(Action::PageDown);
    assert_eq!(m.popup_scroll, 1 + m.page);
    m.apply(Action::Up);
    assert_eq!(m.popup_scroll, m.page);
    assert!(m.popup.is_some());
    m.apply(Action::ToggleCollapse);
    assert!(m.popup.is_none());
    assert_eq!(m.popup_scroll, 0);
    assert_eq!(&m.selected().unwrap().path.to_string()[1..], "etc/hosts");
    assert_eq!(
        m.apply(Action::Preview),
        Some(Request::Preview {
            layer: 1,
            path: RelPath::parse(b"etc/hosts", false).unwrap()
        })
    );
    m.show_preview(
        1,
        &RelPath::parse(b"etc/hosts", false).unwrap(),
        b"127.0.0.1 x\n",
        40,
    );
    let p = m.popup.clone().unwrap();
    assert_eq!(p.lines, vec!["127.0.0.1 x", "… (12 of 40 bytes shown)"]);
    m.apply(Action::ClosePopup);
    // A deleted path has nothing to preview.
    m.apply(Action::End);
    m.apply(Action::Up);
    m.apply(Action::Up);
    m.apply(Action::Up);
    m.apply(Action::Up);
    assert_eq!(&m.selected().unwrap().path.to_string()[1..], "etc/passwd");
    assert_eq!(m.apply(Action::Preview), None);
    assert_eq!(m.popup.as_ref().unwrap().lines, vec!["deleted in layer 1"]);
    m.apply(Action::ClosePopup);
    m.apply(Action::Which);
    let p = m.popup.clone().unwrap();
    assert!(p.lines[0].contains("deleted by layer 1"), "{:?}", p.lines);
}

#[test]
fn compare_all_marks_against_the_base_layer() {
    let mut m = model();
    m.apply(Action::End);
    m.apply(Action::CompareAll);
    let p = paths(&m);
    assert!(p.contains(&"etc/new A".to_string()), "{p:?}");
    assert!(p.contains(&"usr/bin/big D".to_string()), "{p:?}");
    m.apply(Action::CompareLayer);
    let p = paths(&m);
    assert!(p.contains(&"etc/new".to_string()), "{p:?}");
}

#[test]
fn keys_go_to_the_diff_while_it_is_shown() {
    let mut m = model();
    // Without --diff, d says how to get one.
    m.apply(Action::ToggleDiff);
    assert!(m.popup.take().unwrap().lines[0].contains("--diff B"));
    let ms = sample();
    let (a, b) = (merge::merge(&ms[..1]), merge::merge(&ms[..2]));
    m.diff = Some(DiffModel::new("a".into(), "b".into(), &a, &b));
    m.apply(Action::ToggleDiff);
    m.apply(Action::Down);
    m.apply(Action::Down);
    assert_eq!(m.layer, 0, "the layer list did not move");
    assert_eq!(m.diff.as_ref().unwrap().cursor, 2);
    m.apply(Action::FilterStart);
    m.apply(Action::FilterChar('n'));
    m.apply(Action::FilterChar('e'));
    m.apply(Action::FilterChar('w'));
    assert_eq!(m.diff.as_ref().unwrap().visible, vec![1]);
    m.apply(Action::FilterClear);
    assert_eq!(m.apply(Action::Quit), Some(Request::Quit));
    m.apply(Action::SwitchPane);
    assert!(!m.diff.as_ref().unwrap().shown);
    assert_eq!(m.pane, Pane::Layers);
}

#[test]
fn layer_moves_typed_ahead_build_one_tree() {
    let mut m = model();
    assert_eq!(m.builds, 1);
    m.act(Action::Down);
    m.act(Action::Down);
    m.act(Action::Up);
    assert_eq!(m.builds, 1, "no tree built while keys are pending");
    m.settle();
    assert_eq!((m.layer, m.builds), (1, 2));
    assert!(paths(&m).contains(&"etc/new A".to_string()));
    // An action that needs the tree settles it first.
    m.act(Action::Down);
    m.act(Action::SwitchPane);
    assert_eq!(m.builds, 3);
    assert!(paths(&m).contains(&"usr D".to_string()), "{:?}", paths(&m));
    // Back to layers seen recently: their trees are kept, none is built.
    m.apply(Action::SwitchPane);
    m.apply(Action::Up);
    m.apply(Action::Up);
    assert_eq!((m.layer, m.builds), (0, 3));
    assert_eq!(paths(&m)[0], "etc A");
    m.apply(Action::CompareAll);
    m.apply(Action::End);
    assert_eq!(
        m.builds, 5,
        "layer 2 aggregated is new, and layer 0 aggregated"
    );
    assert!(paths(&m).contains(&"usr/bin/big D".to_string()));
}
