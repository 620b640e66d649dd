//! `layerfs explore` in a real terminal: tmux runs it on a small OCI image, send-keys drives
//! it, capture-pane is checked (polled until the screen shows what is expected, never
//! slept on). Also the completion scripts and man pages the package installs.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use testkit::imagekit::Comp;
use testkit::BIN;

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
        static N: AtomicUsize = AtomicUsize::new(0);
        let t = Tmux {
            socket: format!(
                "layerfs-explore-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ),
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

    /// Polls the screen until it shows every text of `all` and none of `none`.
    fn shows(&self, what: &str, all: &[&str], none: &[&str]) -> String {
        self.wait(what, |s| {
            all.iter().all(|t| s.contains(t)) && !none.iter().any(|t| s.contains(t))
        })
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

    /// Waits for the program to exit and checks that it exited with status 0 (not killed by
    /// a signal); a program that never exits fails with its screen.
    fn exited_ok(&self) {
        let pid = self.format("#{pane_pid}");
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = self.exit(&pid) {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "explore did not exit; the screen:\n{}",
                self.screen(false)
            );
            std::thread::yield_now();
        };
        assert_eq!(
            status,
            "status 0",
            "how explore ended; the screen:\n{}",
            self.screen(false)
        );
    }

    /// How the pane's program `pid` ended (`status N` or `signal N`), once it has. tmux
    /// marks the pane dead when the pty closes and records the status when it reaps the
    /// child, which under load it was once seen not to do for 15 s: the child then waits
    /// as a zombie, whose wait status /proc shows (`exit_code`, the last field of `stat`).
    fn exit(&self, pid: &str) -> Option<String> {
        if self.format("#{pane_dead}") != "1" {
            return None;
        }
        let (status, signal) = (
            self.format("#{pane_dead_status}"),
            self.format("#{pane_dead_signal}"),
        );
        if !signal.is_empty() {
            return Some(format!("signal {signal}"));
        }
        if !status.is_empty() {
            return Some(format!("status {status}"));
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The fields after the command's name (which may hold spaces) in parentheses.
        let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
        if fields.first() != Some(&"Z") {
            return None;
        }
        let code: i32 = fields.last()?.trim().parse().ok()?;
        Some(if code & 0x7f == 0 {
            format!("status {}", (code >> 8) & 0xff)
        } else {
            format!("signal {}", code & 0x7f)
        })
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
    let tars: Vec<Vec<u8>> = l.iter().map(|d| testkit::imagekit::tar_dir(d)).collect();
    let oci = base.join("oci");
    testkit::imagekit::write_oci(
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
    // The whole first screen (ratatui draws row by row: wait for everything checked).
    tmux.shows(
        "the first screen",
        &[
            "Current layer contents (layer 0)",
            "ADD rootfs /",
            "RUN rm -rf /usr",
            "Image efficiency score: 0.0 %",
            // The 200 kB file is wasted (deleted by layer 2): it tops the wasted list.
            "195.3 KiB  /usr/bin/big",
            "?  Help",
        ],
        &[],
    );

    // Layer 1: its changes marked, A/M/D counts in the layer list.
    tmux.keys(&["Down"]);
    tmux.shows(
        "layer 1",
        &[
            "(layer 1)",
            "+1 ~1 -1  RUN edit-etc",
            "├── hosts",
            "├── new",
            "└── passwd",
            "└── big",
        ],
        &[],
    );
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

    // Ctrl+A: every change since the base layer (the same here at layer 1); Ctrl+L: back.
    tmux.keys(&["C-a"]);
    tmux.shows(
        "aggregated",
        &["Aggregated contents (layer 1)", "aggregated changes"],
        &[],
    );
    tmux.keys(&["C-l"]);
    tmux.shows("layer changes", &["Current layer contents (layer 1)"], &[]);

    // Tab to the tree, Ctrl+U hides unmodified files: /usr goes, /etc stays.
    tmux.keys(&["Tab", "C-u"]);
    tmux.shows("unmodified hidden", &["├── new", "Unmodified"], &["── big"]);

    // which of /etc/hosts: layer 1 provides it, it shadows layer 0's.
    tmux.keys(&["Down", "w"]);
    tmux.shows(
        "which popup",
        &["which /etc/hosts", "/etc/hosts: layer 1", "shadows layer 0"],
        &[],
    );
    // (A key right after Escape would read as Alt+key: wait for the Escape to land.)
    tmux.keys(&["Escape"]);
    tmux.shows("popup closed", &[], &["which /etc/hosts"]);

    // Preview: the file as layer 1 has it (read from the gzip blob).
    tmux.keys(&["p"]);
    tmux.shows(
        "preview",
        &["as layer 1 has it", "127.0.0.2 changed-by-layer-1"],
        &[],
    );
    tmux.keys(&["Escape"]);
    tmux.shows("preview closed", &[], &["as layer 1 has it"]);

    // Ctrl+F filter: only the paths matching, and their ancestors.
    tmux.keys(&["C-f", "n", "e", "w", "Enter"]);
    tmux.shows(
        "filter",
        &["Path filter:  new", "└── etc/", "    └── new"],
        &["── hosts"],
    );

    // Space collapses /etc (cursor back on it), q quits with status 0.
    tmux.keys(&["Escape"]);
    tmux.shows("filter cleared", &["^F  Filter"], &["Path filter"]);
    tmux.keys(&["Home", "Space"]);
    tmux.shows("collapsed", &["⊕ etc/"], &["── new"]);
    // Ctrl+Space: with something collapsed, expands everything; Ctrl+B hides attributes.
    tmux.keys(&["C-Space"]);
    tmux.shows("expanded", &["── new"], &["⊕ etc/"]);
    tmux.keys(&["C-b"]);
    tmux.shows(
        "no attributes",
        &["└── etc/"],
        &["Permission", "-rw-r--r--"],
    );
    tmux.keys(&["q"]);
    tmux.exited_ok();
}

#[test]
fn explore_with_diff_shows_two_images_side_by_side() {
    let t = tempfile::tempdir().unwrap();
    let new = fixture(t.path());
    // The same image without its last layer (RUN rm -rf /usr).
    let tars: Vec<Vec<u8>> = (0..2)
        .map(|i| testkit::imagekit::tar_dir(&t.path().join(format!("l{i}"))))
        .collect();
    let old = t.path().join("old");
    testkit::imagekit::write_oci(
        &old,
        &tars,
        &["ADD rootfs /", "RUN edit-etc"],
        Comp::Zstd,
        "v0",
    );
    let tmux = Tmux::start(&format!(
        "{BIN} explore --no-cache oci:{}:v0 --diff oci:{}:v1",
        old.display(),
        new.display()
    ));
    tmux.shows(
        "the first screen",
        &["Image efficiency score", " d  Diff"],
        &[],
    );
    tmux.keys(&["d"]);
    let s = tmux.shows(
        "the diff",
        &[
            "(1 added, 0 changed, 3 deleted)",
            "/usr/bin/big",
            "/tmp",
            "Back to the layers",
        ],
        &[],
    );
    let big = s.lines().find(|l| l.contains("/usr/bin/big")).expect(&s);
    assert!(
        big.contains("D -rw-r--r--") && big.contains("195.3 KiB"),
        "{big}"
    );
    assert!(
        s.lines()
            .any(|l| l.contains("drwxr-xr-x") && l.contains("/tmp")),
        "{s}"
    );
    tmux.keys(&["d"]);
    tmux.wait("back to the layers", |s| s.contains("Image details"));
    tmux.keys(&["C-c"]);
    tmux.exited_ok();
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
