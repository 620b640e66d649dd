//! The one progress style of the image tools, for bars (a known count of items) and
//! spinners (a running count of bytes) alike: `⠙ WHAT COUNT NOTE ELAPSED` on stderr, ticking
//! on its own. On anything but a terminal the indicator is hidden: it draws nothing, so
//! pipes, logs and tests see no escape codes.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A spinner counting bytes (set with `set_position`, `inc` or `wrap_read`), with the rate.
pub fn bytes(what: &str) -> ProgressBar {
    styled(ProgressBar::new_spinner, what, "{bytes} ({bytes_per_sec})")
}

/// A bar counting `len` items (advanced with `inc`); `set_message` adds a note.
pub fn items(what: &str, len: u64) -> ProgressBar {
    styled(|| ProgressBar::new(len), what, "{pos}/{len}")
}

fn styled(make: impl FnOnce() -> ProgressBar, what: &str, counter: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = make();
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {{prefix}} {counter} {{msg}} {{elapsed}}"
        ))
        .expect("a valid template"),
    );
    pb.set_prefix(what.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

#[cfg(test)]
mod tests {
    #[test]
    fn hidden_off_a_terminal() {
        // cargo test captures stderr through a pipe unless run from a terminal with
        // --nocapture; only then is the bar drawn.
        use std::io::IsTerminal;
        let tty = std::io::stderr().is_terminal();
        assert_eq!(super::bytes("x").is_hidden(), !tty);
        assert_eq!(super::items("x", 3).is_hidden(), !tty);
    }
}
