//! Drawing `explore`'s model with ratatui: the layer list and the image's details (size,
//! waste, efficiency, top wasted files) on the left, the selected layer's tree on the
//! right, key hints at the bottom, and popups (which, preview, help) over them. Nothing
//! here decides anything: the view reads the model, and only keeps the tree's scroll
//! position so the cursor stays on screen.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

use layerfs_image::inspect::merge::Change;
use layerfs_image::inspect::render::kind_mode_string;
use layerfs_image::manifest::human;

use super::model::{Model, Pane};
use super::tree::Compare;

/// The colour of a change mark (dive's: green added, yellow modified, red removed).
pub fn colour(mark: Option<Change>) -> Style {
    match mark {
        Some(Change::Added) => Style::default().fg(Color::Green),
        Some(Change::Modified) => Style::default().fg(Color::Yellow),
        Some(Change::Deleted) => Style::default().fg(Color::Red),
        None => Style::default(),
    }
}

fn pane_block(title: String, focused: bool) -> Block<'static> {
    let style = if focused {
        Style::default()
            .fg(Color::Cyan)
            .add_modifier(Modifier::BOLD)
    } else {
        Style::default()
    };
    Block::default()
        .borders(Borders::ALL)
        .border_style(style)
        .title(Span::styled(title, style))
}

fn selected_style(focused: bool) -> Style {
    if focused {
        Style::default().add_modifier(Modifier::REVERSED)
    } else {
        Style::default().add_modifier(Modifier::UNDERLINED)
    }
}

/// Draws the whole screen.
pub fn draw(f: &mut Frame, m: &mut Model) {
    let [main, status] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(f.area());
    if m.diff.as_ref().is_some_and(|d| d.shown) {
        draw_diff(f, m, main);
        draw_status(f, m, status);
        draw_popup(f, m);
        return;
    }
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(main);
    let layer_rows = (m.layers.len() as u16 + 3).min(left.height / 2).max(4);
    let [layers, details] =
        Layout::vertical([Constraint::Length(layer_rows), Constraint::Min(3)]).areas(left);
    draw_layers(f, m, layers);
    draw_details(f, m, details);
    draw_tree(f, m, right);
    draw_status(f, m, status);
    draw_popup(f, m);
}

fn draw_popup(f: &mut Frame, m: &Model) {
    if let Some(p) = &m.popup {
        let area = centered(f.area(), 80, 70);
        let lines: Vec<Line> = p.lines.iter().map(|l| Line::raw(l.clone())).collect();
        f.render_widget(Clear, area);
        f.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .scroll((m.popup_scroll.min(u16::MAX as usize) as u16, 0))
                .block(pane_block(format!(" {} ", p.title), true)),
            area,
        );
    }
}

/// The two images side by side: each changed path with the entry each image has.
fn draw_diff(f: &mut Frame, m: &mut Model, area: Rect) {
    let Some(d) = m.diff.as_mut() else { return };
    let (added, changed, deleted) = d.counts();
    let title = format!(
        " Diff: {} → {} ({added} added, {changed} changed, {deleted} deleted) ",
        d.a_name, d.b_name
    );
    let block = pane_block(title, true);
    d.page = area.height.saturating_sub(3).max(1) as usize;
    if d.cursor < d.scroll {
        d.scroll = d.cursor;
    } else if d.cursor >= d.scroll + d.page {
        d.scroll = d.cursor + 1 - d.page;
    }
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(inner);
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut l = vec![Line::styled(format!("A: {}", d.a_name), bold)];
    let mut r = vec![Line::styled(format!("B: {}", d.b_name), bold)];
    for (vi, &ri) in d.visible.iter().enumerate().skip(d.scroll).take(d.page) {
        let row = &d.rows[ri];
        let cell = |s: &Option<super::diff::Side>| match s {
            Some(s) => format!("{} {:>10}  {}", s.attrs, s.size, row.path),
            None => String::new(),
        };
        let (ls, rs) = match row.change {
            'A' => (Style::default(), colour(Some(Change::Added))),
            'D' => (colour(Some(Change::Deleted)), Style::default()),
            _ => (
                colour(Some(Change::Modified)),
                colour(Some(Change::Modified)),
            ),
        };
        let sel = if vi == d.cursor {
            selected_style(true)
        } else {
            Style::default()
        };
        let what = if row.what.is_empty() {
            String::new()
        } else {
            format!("  ({})", row.what)
        };
        l.push(Line::styled(
            format!("{} {}", row.change, cell(&row.a)),
            ls.patch(sel),
        ));
        r.push(Line::styled(
            format!("{}{what}", cell(&row.b)),
            rs.patch(sel),
        ));
    }
    if d.visible.is_empty() {
        l.push(Line::raw("(no differences match)"));
    }
    f.render_widget(Paragraph::new(l), left);
    f.render_widget(Paragraph::new(r), right);
}

fn centered(r: Rect, w_pct: u16, h_pct: u16) -> Rect {
    let w = r.width * w_pct / 100;
    let h = r.height * h_pct / 100;
    Rect::new(r.x + (r.width - w) / 2, r.y + (r.height - h) / 2, w, h)
}

fn draw_layers(f: &mut Frame, m: &Model, area: Rect) {
    let focused = m.pane == Pane::Layers;
    let mode = match m.compare {
        Compare::Layer => "layer changes",
        Compare::All => "aggregated changes",
    };
    let block = pane_block(format!(" Layers ({mode}) "), focused);
    let height = area.height.saturating_sub(3) as usize;
    let first = (m.layer + 1).saturating_sub(height.max(1));
    let mut lines = vec![Line::styled(
        format!("{:>3} {:>10}  {:>13}  Command", "#", "Size", "+A ~M -D"),
        Style::default().add_modifier(Modifier::BOLD),
    )];
    for (i, l) in m.layers.iter().enumerate().skip(first).take(height) {
        let counts = format!("+{} ~{} -{}", l.added, l.modified, l.deleted);
        let text = format!("{i:>3} {:>10}  {counts:>13}  {}", human(l.bytes), l.command);
        let style = if i == m.layer {
            selected_style(focused)
        } else {
            Style::default()
        };
        lines.push(Line::styled(text, style));
    }
    f.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_details(f: &mut Frame, m: &Model, area: Rect) {
    let (image, _merged, wasted, eff) = m.totals;
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut lines = vec![
        Line::from(vec![
            Span::styled("Image: ", bold),
            Span::raw(m.name.clone()),
        ]),
        Line::from(vec![
            Span::styled("Total image size: ", bold),
            Span::raw(human(image)),
        ]),
        Line::from(vec![
            Span::styled("Potential wasted space: ", bold),
            Span::raw(human(wasted)),
        ]),
        Line::from(vec![
            Span::styled("Image efficiency score: ", bold),
            Span::raw(format!("{:.1} %", eff * 100.0)),
        ]),
    ];
    if let Some(l) = m.layers.get(m.layer) {
        lines.push(Line::from(vec![
            Span::styled("Layer: ", bold),
            Span::raw(format!("{} ({} wasted later)", l.id, human(l.wasted))),
        ]));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        format!("{:>5} {:>12}  Path", "Count", "Total Space"),
        bold,
    ));
    // Paths keep their end (the file name) when the pane is too narrow.
    let room = (area.width as usize).saturating_sub(2 + 20);
    for w in m.wasted.iter().take(area.height as usize) {
        lines.push(Line::raw(format!(
            "{:>5} {:>12}  {}",
            w.count,
            human(w.bytes),
            tail(&w.path, room)
        )));
    }
    f.render_widget(
        Paragraph::new(lines).block(pane_block(" Image details ".into(), false)),
        area,
    );
}

/// `s`, or `…` and its last `width - 1` characters.
pub fn tail(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        return s.to_string();
    }
    let keep = width.saturating_sub(1);
    let mut out = String::from("…");
    out.extend(s.chars().skip(n - keep));
    out
}

fn draw_tree(f: &mut Frame, m: &mut Model, area: Rect) {
    let focused = m.pane == Pane::Tree;
    let what = match m.compare {
        Compare::Layer => "Current layer contents",
        Compare::All => "Aggregated contents",
    };
    let sort = if m.by_size { ", by size" } else { "" };
    let block = pane_block(format!(" {what} (layer {}{sort}) ", m.layer), focused);
    // Borders and the header line.
    m.page = area.height.saturating_sub(3).max(1) as usize;
    if m.cursor < m.scroll {
        m.scroll = m.cursor;
    } else if m.cursor >= m.scroll + m.page {
        m.scroll = m.cursor + 1 - m.page;
    }
    let header = if m.attributes {
        format!(
            "{:<10} {:>11} {:>10}  Filetree",
            "Permission", "UID:GID", "Size"
        )
    } else {
        "Filetree".to_string()
    };
    let mut lines = vec![Line::styled(
        header,
        Style::default().add_modifier(Modifier::BOLD),
    )];
    for (ri, row) in m.rows.iter().enumerate().skip(m.scroll).take(m.page) {
        let n = &m.tree.nodes[row.node];
        let mut name = n.name.clone();
        if n.is_dir() {
            name.push('/');
            if m.is_collapsed(&n.path) {
                name.insert_str(0, "⊕ ");
            }
        }
        if let Some(l) = &n.link {
            name.push_str(" → ");
            name.push_str(l);
        }
        let text = if m.attributes {
            format!(
                "{} {:>11} {:>10}  {}{}",
                kind_mode_string(n.kind, n.mode),
                format!("{}:{}", n.uid, n.gid),
                human(n.size),
                row.prefix,
                name
            )
        } else {
            format!("{}{}", row.prefix, name)
        };
        let mut style = colour(n.mark);
        if ri == m.cursor {
            style = style.patch(selected_style(focused));
        }
        lines.push(Line::styled(text, style));
    }
    if m.rows.is_empty() {
        lines.push(Line::raw("(nothing matches the toggles and the filter)"));
    }
    f.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_status(f: &mut Frame, m: &Model, area: Rect) {
    let key = Style::default()
        .fg(Color::Black)
        .bg(Color::Gray)
        .add_modifier(Modifier::BOLD);
    let off = Style::default().add_modifier(Modifier::DIM | Modifier::CROSSED_OUT);
    let mut spans: Vec<Span> = Vec::new();
    let mut hint = |k: &str, what: &str, on: bool| {
        spans.push(Span::styled(format!(" {k} "), key));
        spans.push(Span::styled(
            format!(" {what} "),
            if on { Style::default() } else { off },
        ));
    };
    if m.editing_filter || !m.filter.is_empty() {
        let cursor = if m.editing_filter { "█" } else { "" };
        let line = Line::from(vec![
            Span::styled(" Path filter: ", key),
            Span::raw(format!(" {}{cursor}", m.filter)),
            Span::styled(
                "  (Enter keeps, Esc clears)",
                Style::default().add_modifier(Modifier::DIM),
            ),
        ]);
        f.render_widget(Paragraph::new(line), area);
        return;
    }
    hint("^C", "Quit", true);
    if m.diff.as_ref().is_some_and(|d| d.shown) {
        hint("d", "Back to the layers", true);
        hint("^F", "Filter", true);
        hint("?", "Help", true);
        f.render_widget(Paragraph::new(Line::from(spans)), area);
        return;
    }
    hint("Tab", "Switch", true);
    hint("^F", "Filter", true);
    if m.diff.is_some() {
        hint("d", "Diff", true);
    }
    match m.pane {
        Pane::Layers => {
            hint("^L", "Layer changes", m.compare == Compare::Layer);
            hint("^A", "Aggregated", m.compare == Compare::All);
        }
        Pane::Tree => {
            let h = m.hidden;
            hint("Space", "Collapse", true);
            hint("^A", "Added", !h.added);
            hint("^R", "Removed", !h.removed);
            hint("^M", "Modified", !h.modified);
            hint("^U", "Unmodified", !h.unmodified);
            hint("^B", "Attributes", m.attributes);
            hint("s", "Size", m.by_size);
            hint("w", "Which", true);
            hint("p", "Preview", true);
        }
    }
    hint("?", "Help", true);
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

#[cfg(test)]
mod tests {
    use super::super::model::Action;
    use super::super::tree::tests::sample;
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn model() -> Model {
        let mut report = super::super::model::tests::report(3);
        report.totals.image_bytes = 2048;
        report.totals.reclaimable_bytes = 1024;
        report.totals.efficiency = 0.5;
        Model::new("sample:latest".into(), sample(), &report)
    }

    /// The screen as text lines, and the buffer for styles.
    fn render(m: &mut Model) -> (Vec<String>, ratatui::buffer::Buffer) {
        let mut t = Terminal::new(TestBackend::new(120, 30)).unwrap();
        t.draw(|f| draw(f, m)).unwrap();
        let buf = t.backend().buffer().clone();
        let lines = (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect();
        (lines, buf)
    }

    fn find(lines: &[String], text: &str) -> Option<(usize, usize)> {
        lines
            .iter()
            .enumerate()
            .find_map(|(y, l)| l.find(text).map(|bx| (l[..bx].chars().count(), y)))
    }

    #[test]
    fn the_screen_shows_details_the_tree_with_colours_and_hints() {
        let mut m = model();
        m.apply(Action::Down);
        let (lines, buf) = render(&mut m);
        let screen = lines.join("\n");
        assert!(
            screen.contains("Image efficiency score: 50.0 %"),
            "{screen}"
        );
        assert!(
            screen.contains("Potential wasted space: 1.0 KiB"),
            "{screen}"
        );
        assert!(
            screen.contains("Current layer contents (layer 1)"),
            "{screen}"
        );
        assert!(screen.contains("^A  Aggregated"), "{screen}");
        // The tree: attributes, the tree glyphs and marks by colour.
        let (x, y) = find(&lines, "├── new").expect(&screen);
        assert_eq!(buf[(x as u16 + 4, y as u16)].fg, Color::Green);
        assert!(lines[y].contains("-rw-r--r--"), "{}", lines[y]);
        assert!(lines[y].contains("0:0"), "{}", lines[y]);
        let (x, y) = find(&lines, "└── passwd").expect(&screen);
        assert_eq!(buf[(x as u16 + 4, y as u16)].fg, Color::Red);
        let (x, y) = find(&lines, "├── hosts").expect(&screen);
        assert_eq!(buf[(x as u16 + 4, y as u16)].fg, Color::Yellow);
        // Ctrl+B hides the attributes; Space collapses etc (shown with ⊕).
        m.apply(Action::SwitchPane);
        m.apply(Action::ToggleAttributes);
        m.apply(Action::ToggleCollapse);
        let (lines, _) = render(&mut m);
        let screen = lines.join("\n");
        assert!(!screen.contains("-rw-r--r--"), "{screen}");
        assert!(screen.contains("├── ⊕ etc/"), "{screen}");
        assert!(!screen.contains("passwd"), "{screen}");
        assert!(screen.contains(" ^U  Unmodified"), "{screen}");
    }

    #[test]
    fn long_paths_keep_their_end() {
        assert_eq!(tail("/usr/share/locale", 8), "…/locale");
        assert_eq!(tail("/etc", 8), "/etc");
    }

    #[test]
    fn the_filter_line_and_a_popup_are_drawn() {
        let mut m = model();
        m.apply(Action::FilterStart);
        m.apply(Action::FilterChar('b'));
        let (lines, _) = render(&mut m);
        assert!(lines[29].contains("Path filter:  b█"), "{}", lines[29]);
        m.apply(Action::FilterDone);
        m.apply(Action::Help);
        let (lines, _) = render(&mut m);
        let screen = lines.join("\n");
        assert!(screen.contains(" Keys "), "{screen}");
        assert!(screen.contains("w            which"), "{screen}");
    }

    #[test]
    fn the_diff_shows_both_images_side_by_side() {
        let mut m = model();
        let ms = sample();
        let (a, b) = (
            layerfs_image::inspect::merge::merge(&ms[..1]),
            layerfs_image::inspect::merge::merge(&ms[..2]),
        );
        m.diff = Some(super::super::diff::DiffModel::new(
            "old".into(),
            "new".into(),
            &a,
            &b,
        ));
        m.apply(Action::ToggleDiff);
        let (lines, buf) = render(&mut m);
        let screen = lines.join("\n");
        assert!(
            screen.contains("Diff: old → new (1 added, 1 changed, 1 deleted)"),
            "{screen}"
        );
        let (_, y) = find(&lines, "C -rw-r--r--").expect(&screen);
        // Both sides of the changed file on one line, its sizes on each side.
        assert!(lines[y].matches("/etc/hosts").count() == 2, "{}", lines[y]);
        assert!(
            lines[y].contains("10 B") && lines[y].contains("11 B"),
            "{}",
            lines[y]
        );
        assert!(lines[y].contains("(content)"), "{}", lines[y]);
        let (x, y) = find(&lines, "D -rw-r--r--").expect(&screen);
        assert_eq!(buf[(x as u16, y as u16)].fg, Color::Red);
        assert!(screen.contains(" d  Back to the layers"), "{screen}");
        m.apply(Action::ToggleDiff);
        let (lines, _) = render(&mut m);
        assert!(lines.join("\n").contains("Image details"));
    }

    #[test]
    fn the_tree_scrolls_to_keep_the_cursor_visible() {
        let mut m = model();
        m.apply(Action::Down);
        m.apply(Action::SwitchPane);
        let mut t = Terminal::new(TestBackend::new(100, 8)).unwrap();
        t.draw(|f| draw(f, &mut m)).unwrap();
        assert_eq!(m.page, 4);
        m.apply(Action::End);
        t.draw(|f| draw(f, &mut m)).unwrap();
        assert_eq!(m.scroll, m.rows.len() - 4);
        let buf = t.backend().buffer().clone();
        let text: String = (0..buf.area.height)
            .flat_map(|y| (0..buf.area.width).map(move |x| (x, y)))
            .map(|p| buf[p].symbol().to_string())
            .collect();
        assert!(text.contains("small"), "{text}");
    }
}
