//! Keys of `explore`: dive's bindings where dive has one (Tab, Ctrl+F, Space, Ctrl+Space,
//! Ctrl+A / R / M / U / B, Ctrl+L, PageUp / PageDown, Ctrl+C), plus `w` (which), `p`
//! (preview, as `cat`), `s` (sort by size), `/` (filter), `d` (diff with `--diff B`),
//! `?` (help) and vi's j / k.
//! A terminal sends Ctrl+M as Enter, so Enter toggles modified files as in dive.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use layerfs_image::inspect::merge::Change;

use super::model::{Action, Model, Pane};

/// The help popup (`?`), and the README's key table.
pub const HELP: &[&str] = &[
    "Tab          switch between the layer and file tree panes",
    "Up/Down j/k  move; PageUp/PageDown a page; Home/End first/last",
    "Ctrl+F or /  filter paths (Enter keeps it, Esc clears it)",
    "q, Ctrl+C    quit; ? this help",
    "             in a popup: arrows / pages scroll, any other key closes it",
    "",
    "Layer pane",
    "Ctrl+L       mark the selected layer's changes (default)",
    "Ctrl+A       mark all changes since the base layer (aggregated)",
    "",
    "File tree pane",
    "Space        collapse / expand a directory",
    "Ctrl+Space   collapse / expand every directory",
    "Ctrl+A/R/M/U show / hide added, removed, modified, unmodified",
    "             (Ctrl+M arrives as Enter; a, r, m, u work too)",
    "Ctrl+B       show / hide attributes (mode, owner, size)",
    "s            sort by size (biggest first) / by name",
    "w            which: every layer's copy and what hides it",
    "p            preview the file as the selected layer has it",
    "",
    "d            with --diff B: the two images side by side (d again: back)",
];

/// The action of `key` in the model's current state.
pub fn action(m: &Model, key: KeyEvent) -> Action {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && key.code == KeyCode::Char('c') {
        return Action::Quit;
    }
    if m.popup.is_some() {
        return match key.code {
            KeyCode::Up | KeyCode::Char('k') => Action::Up,
            KeyCode::Down | KeyCode::Char('j') => Action::Down,
            KeyCode::PageUp => Action::PageUp,
            KeyCode::PageDown => Action::PageDown,
            _ => Action::ClosePopup,
        };
    }
    if m.editing_filter {
        return match key.code {
            KeyCode::Enter => Action::FilterDone,
            KeyCode::Esc => Action::FilterClear,
            KeyCode::Backspace => Action::FilterBackspace,
            KeyCode::Char(c) if !ctrl => Action::FilterChar(c),
            _ => Action::Nothing,
        };
    }
    let common = match key.code {
        KeyCode::Char('q') if !ctrl => Action::Quit,
        KeyCode::Tab | KeyCode::BackTab => Action::SwitchPane,
        KeyCode::Char('f') if ctrl => Action::FilterStart,
        KeyCode::Char('/') => Action::FilterStart,
        KeyCode::Esc if !m.filter.is_empty() => Action::FilterClear,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Home | KeyCode::Char('g') => Action::Home,
        KeyCode::End | KeyCode::Char('G') => Action::End,
        KeyCode::Char('?') => Action::Help,
        KeyCode::Char('d') if !ctrl => Action::ToggleDiff,
        _ => Action::Nothing,
    };
    if common != Action::Nothing {
        return common;
    }
    match (m.pane, key.code) {
        (Pane::Layers, KeyCode::Char('a')) if ctrl => Action::CompareAll,
        (Pane::Layers, KeyCode::Char('l')) if ctrl => Action::CompareLayer,
        (Pane::Tree, KeyCode::Char(' ')) if ctrl => Action::ToggleCollapseAll,
        (Pane::Tree, KeyCode::Char('@')) if ctrl => Action::ToggleCollapseAll,
        (Pane::Tree, KeyCode::Char(' ')) => Action::ToggleCollapse,
        (Pane::Tree, KeyCode::Char('a')) => Action::Toggle(Change::Added),
        (Pane::Tree, KeyCode::Char('r')) => Action::Toggle(Change::Deleted),
        (Pane::Tree, KeyCode::Char('m')) | (Pane::Tree, KeyCode::Enter) => {
            Action::Toggle(Change::Modified)
        }
        (Pane::Tree, KeyCode::Char('u')) => Action::ToggleUnmodified,
        (Pane::Tree, KeyCode::Char('b')) if ctrl => Action::ToggleAttributes,
        (Pane::Tree, KeyCode::Char('s')) if !ctrl => Action::SortBySize,
        (Pane::Tree, KeyCode::Char('w')) if !ctrl => Action::Which,
        (Pane::Tree, KeyCode::Char('p') | KeyCode::Char('c')) if !ctrl => Action::Preview,
        _ => Action::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tree::tests::sample;
    use super::*;

    fn key(code: KeyCode, ctrl: bool) -> KeyEvent {
        KeyEvent::new(
            code,
            if ctrl {
                KeyModifiers::CONTROL
            } else {
                KeyModifiers::NONE
            },
        )
    }

    fn model() -> Model {
        Model::new("s".into(), sample(), &super::super::model::tests::report(3))
    }

    #[test]
    fn dives_keys_depend_on_the_pane() {
        let mut m = model();
        let ctrl_a = key(KeyCode::Char('a'), true);
        assert_eq!(action(&m, ctrl_a), Action::CompareAll);
        assert_eq!(
            action(&m, key(KeyCode::Char('l'), true)),
            Action::CompareLayer
        );
        assert_eq!(action(&m, key(KeyCode::Tab, false)), Action::SwitchPane);
        m.pane = Pane::Tree;
        assert_eq!(action(&m, ctrl_a), Action::Toggle(Change::Added));
        assert_eq!(
            action(&m, key(KeyCode::Char('r'), true)),
            Action::Toggle(Change::Deleted)
        );
        assert_eq!(
            action(&m, key(KeyCode::Enter, false)),
            Action::Toggle(Change::Modified)
        );
        assert_eq!(
            action(&m, key(KeyCode::Char('u'), true)),
            Action::ToggleUnmodified
        );
        assert_eq!(
            action(&m, key(KeyCode::Char('b'), true)),
            Action::ToggleAttributes
        );
        assert_eq!(
            action(&m, key(KeyCode::Char(' '), false)),
            Action::ToggleCollapse
        );
        assert_eq!(
            action(&m, key(KeyCode::Char(' '), true)),
            Action::ToggleCollapseAll
        );
        assert_eq!(
            action(&m, key(KeyCode::Char('f'), true)),
            Action::FilterStart
        );
        assert_eq!(action(&m, key(KeyCode::Char('c'), true)), Action::Quit);
    }

    #[test]
    fn typing_goes_to_the_filter_while_it_is_edited() {
        let mut m = model();
        m.editing_filter = true;
        assert_eq!(
            action(&m, key(KeyCode::Char('q'), false)),
            Action::FilterChar('q')
        );
        assert_eq!(action(&m, key(KeyCode::Enter, false)), Action::FilterDone);
        assert_eq!(action(&m, key(KeyCode::Esc, false)), Action::FilterClear);
        assert_eq!(action(&m, key(KeyCode::Char('c'), true)), Action::Quit);
        m.editing_filter = false;
        assert_eq!(action(&m, key(KeyCode::Char('q'), false)), Action::Quit);
    }
}
