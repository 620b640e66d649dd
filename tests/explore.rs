//! `layerfs explore` in a real terminal: tmux runs it on a small OCI image, send-keys drives
//! it, capture-pane is checked (polled until the screen shows what is expected, never
//! slept on). Also the completion scripts and man pages the package installs.

mod common;
mod imagekit;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{eventually, BIN};
use imagekit::Comp;

/// A tmux server of our own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"])
            .env("TERM", "xterm-256color")
            .env("LANG", "C.UTF-8");
        c
    }

    /// Runs `cmd` in a detached 120x36 session; the pane stays after the program exits so
    /// its exit status can be read.
    fn start(cmd: &str) -> Tmux {
        let t = Tmux {
            socket: format!("layerfs-explore-test-{}", std::process::id()),
        };
        let o = t
            .tmux()
            .args(["new-session", "-d", "-s", "t", "-x", "120", "-y", "36", cmd])
            .args([";", "set-option", "-t", "t", "remain-on-exit", "on"])
            .output()
            .expect("run tmux");
        assert!(
            o.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        t
    }

    fn keys(&self, keys: &[&str]) {
        let o = self
            .tmux()
            .args(["send-keys", "-t", "t"])
            .args(keys)
            .output()
            .unwrap();
        assert!(o.status.success(), "send-keys {keys:?}");
    }

    /// The screen; with `colours`, with its escape sequences (capture-pane -e).
    fn screen(&self, colours: bool) -> String {
        let mut c = self.tmux();
        c.args(["capture-pane", "-p", "-t", "t"]);
        if colours {
            c.arg("-e");
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    }

    /// Polls the screen until `ok` holds for it (15 s at most); the screen it held on.
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.screen(false);
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out: {what}; the screen:\n{s}"
            );
            std::thread::yield_now();
        }
    }

    fn format(&self, f: &str) -> String {
        let o = self
            .tmux()
            .args(["display-message", "-p", "-t", "t", f])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}

/// Three layers: a base (etc, a 200 kB usr/bin/big), one that changes /etc (hosts
/// modified, new added, passwd deleted), one that deletes /usr.
fn fixture(base: &Path) -> std::path::PathBuf {
    let l: Vec<_> = (0..3).map(|i| base.join(format!("l{i}"))).collect();
    for d in ["l0/etc", "l0/usr/bin", "l1/etc", "l2/tmp"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    std::fs::write(l[0].join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(l[0].join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(l[0].join("usr/bin/big"), vec![7u8; 200_000]).unwrap();
    std::fs::write(l[1].join("etc/hosts"), "127.0.0.2 changed-by-layer-1\n").unwrap();
    std::fs::write(l[1].join("etc/new"), "hello\n").unwrap();
    std::fs::write(l[1].join("etc/.wh.passwd"), "").unwrap();
    std::fs::write(l[2].join(".wh.usr"), "").unwrap();
    let tars: Vec<Vec<u8>> = l.iter().map(|d| imagekit::tar_dir(d)).collect();
    let oci = base.join("oci");
    imagekit::write_oci(
        &oci,
        &tars,
        &["ADD rootfs /", "RUN edit-etc", "RUN rm -rf /usr"],
        Comp::Gzip,
        "v1",
    );
    oci
}

#[test]
fn explore_in_tmux_walks_layers_toggles_filters_and_shows_which_and_a_preview() {
    let t = tempfile::tempdir().unwrap();
    let oci = fixture(t.path());
    let tmux = Tmux::start(&format!(
        "{BIN} explore --no-cache oci:{}:v1",
        oci.display()
    ));
    let s = tmux.wait("the first screen", |s| {
        s.contains("Image efficiency score") && s.contains("RUN rm -rf /usr")
    });
    assert!(s.contains("Current layer contents (layer 0)"), "{s}");
    assert!(s.contains("ADD rootfs /"), "{s}");
    // The 200 kB file is wasted (deleted by layer 2): it tops the wasted list.
    assert!(s.contains("195.3 KiB  /usr/bin/big"), "{s}");

    // Layer 1: its changes marked, A/M/D counts in the layer list.
    tmux.keys(&["Down"]);
    let s = tmux.wait("layer 1", |s| s.contains("(layer 1)"));
    assert!(s.contains("+1 ~1 -1  RUN edit-etc"), "{s}");
    for name in ["├── hosts", "├── new", "└── passwd", "└── big"] {
        assert!(s.contains(name), "{name}: {s}");
    }
    // Colours: added green, modified yellow, deleted red (colour 2, 3, 1: tmux writes
    // them as 256-colour indexes).
    let colours = tmux.screen(true);
    for (name, code) in [
        ("new", "[38;5;2m"),
        ("hosts", "[38;5;3m"),
        ("passwd", "[38;5;1m"),
    ] {
        let line = colours
            .lines()
            .find(|l| l.contains(&format!("── {name}")))
            .unwrap();
        assert!(line.contains(code), "{name} not coloured {code}: {line:?}");
    }

    // Tab to the tree, Ctrl+U hides unmodified files: /usr goes, /etc stays.
    tmux.keys(&["Tab", "C-u"]);
    let s = tmux.wait("unmodified hidden", |s| !s.contains("── big"));
    assert!(s.contains("├── new"), "{s}");

    // which of /etc/hosts: layer 1 provides it, it shadows layer 0's.
    tmux.keys(&["Down", "w"]);
    let s = tmux.wait("which popup", |s| s.contains("which /etc/hosts"));
    assert!(s.contains("/etc/hosts: layer 1"), "{s}");
    assert!(s.contains("shadows layer 0"), "{s}");
    tmux.keys(&["Escape"]);
    tmux.wait("popup closed", |s| !s.contains("which /etc/hosts"));

    // Preview: the file as layer 1 has it (read from the gzip blob).
    tmux.keys(&["p"]);
    let s = tmux.wait("preview", |s| s.contains("as layer 1 has it"));
    assert!(s.contains("127.0.0.2 changed-by-layer-1"), "{s}");
    tmux.keys(&["Escape"]);

    // Ctrl+F filter: only the paths matching, and their ancestors.
    tmux.keys(&["C-f", "n", "e", "w", "Enter"]);
    let s = tmux.wait("filter", |s| {
        s.contains("Path filter:  new") && !s.contains("── hosts")
    });
    assert!(s.contains("└── new"), "{s}");

    // Space collapses /etc (cursor back on it), q quits with status 0.
    // (A key right after Escape would read as Alt+key: wait for the Escape to land.)
    tmux.keys(&["Escape"]);
    tmux.wait("filter cleared", |s| !s.contains("Path filter"));
    tmux.keys(&["Home", "Space"]);
    tmux.wait("collapsed", |s| s.contains("⊕ etc/"));
    tmux.keys(&["q"]);
    eventually("explore exits", || tmux.format("#{pane_dead}") == "1");
    assert_eq!(tmux.format("#{pane_dead_status}"), "0");
}

#[test]
fn explore_without_a_terminal_says_so() {
    let t = tempfile::tempdir().unwrap();
    let oci = fixture(t.path());
    let o = Command::new(BIN)
        .args(["explore", "--no-cache"])
        .arg(format!("oci:{}:v1", oci.display()))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("explore needs a terminal"), "{err}");
}

#[test]
fn completions_and_man_pages_cover_every_subcommand() {
    for (shell, marker) in [
        ("bash", "_layerfs()"),
        ("zsh", "#compdef layerfs"),
        ("fish", "complete -c layerfs"),
    ] {
        let o = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(o.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains(marker), "{shell}: {marker}");
        assert!(text.contains("explore"), "{shell}: no explore");
    }
    let t = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .arg("man-pages")
        .arg(t.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    // Every subcommand --help lists has a page; the hidden one has none.
    let subs: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|&s| s != "help")
        .collect();
    assert!(subs.contains(&"explore") && subs.len() > 10, "{subs:?}");
    for s in &subs {
        let page = t.path().join(format!("layerfs-{s}.1"));
        let text = std::fs::read_to_string(&page).unwrap_or_else(|_| panic!("{s}"));
        assert!(text.contains(&format!(".TH layerfs-{s}")), "{s}");
    }
    assert!(t.path().join("layerfs.1").exists());
    assert!(!t.path().join("layerfs-man-pages.1").exists());
}
