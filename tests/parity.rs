//! Kernel parity, side by side: the same shell steps on kernel overlayfs (`redirect_dir=on`)
//! and on layerfs over copies of the same layers, every step's outcome compared. Each test
//! here is a reduced case where layerfs once differed.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{require_root, Kernel, Layerfs};

/// One side's layers: `lower0` (bottom) ..., an upper and a workdir, under `root`.
struct Dirs {
    root: PathBuf,
}

impl Dirs {
    fn lowers(&self, n: usize) -> Vec<PathBuf> {
        // lowerdir lists the top first.
        (0..n)
            .rev()
            .map(|i| self.root.join(format!("lower{i}")))
            .collect()
    }
    fn p(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// The kernel and layerfs, each over its own copy of the same layers.
struct Pair {
    _t: tempfile::TempDir,
    /// The kernel's layers, then layerfs's.
    sides: [Dirs; 2],
    kernel: Option<Kernel>,
    layerfs: Option<Layerfs>,
    lowers: usize,
}

impl Pair {
    /// `fill(lower_index, dir)` writes each of `lowers` lower layers (the same on both
    /// sides); mounted writable with an empty upper.
    fn new(lowers: usize, fill: impl Fn(usize, &Path)) -> Pair {
        let t = tempfile::tempdir().unwrap();
        let side = |name: &str| {
            let root = t.path().join(name);
            for d in ["upper", "work", "mnt"] {
                fs::create_dir_all(root.join(d)).unwrap();
            }
            for i in 0..lowers {
                let l = root.join(format!("lower{i}"));
                fs::create_dir_all(&l).unwrap();
                fill(i, &l);
            }
            Dirs { root }
        };
        let sides = [side("k"), side("l")];
        let mut p = Pair {
            _t: t,
            sides,
            kernel: None,
            layerfs: None,
            lowers,
        };
        p.mount();
        p
    }

    fn mount(&mut self) {
        let n = self.lowers;
        let [k, l] = &self.sides;
        self.kernel = Some(Kernel::mount_rw_with(
            &k.lowers(n),
            &k.p("upper"),
            &k.p("work"),
            &k.p("mnt"),
            ",redirect_dir=on",
        ));
        self.layerfs = Some(Layerfs::mount_rw(
            &l.lowers(n),
            &l.p("upper"),
            &l.p("work"),
            &l.p("mnt"),
        ));
    }

    fn unmount(&mut self) {
        self.kernel = None;
        self.layerfs = None;
    }

    /// Unmounts, makes the upper the new top lower layer (an earlier run's upper stacked as
    /// the next layer, as a build does) with a fresh upper, and mounts again.
    fn stack_upper(&mut self) {
        self.unmount();
        let n = self.lowers;
        for d in &self.sides {
            fs::rename(d.p("upper"), d.p(&format!("lower{n}"))).unwrap();
            fs::remove_dir_all(d.p("work")).unwrap();
            fs::create_dir(d.p("upper")).unwrap();
            fs::create_dir(d.p("work")).unwrap();
        }
        self.lowers += 1;
        self.mount();
    }

    /// Runs `cmd` (bash, `$M` = the mount root) on both sides; fails the test when the
    /// outcomes (exit status, output, error message) differ.
    fn step(&self, cmd: &str) -> String {
        let [k, l] = [0, 1].map(|i| {
            let m = self.sides[i].p("mnt");
            let m = fs::canonicalize(m).unwrap();
            let out = Command::new("bash")
                .args(["-o", "pipefail", "-c", cmd])
                .env("M", &m)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            let text = text.replace(m.to_str().unwrap(), "$M");
            format!("{} {}", out.status.code().unwrap_or(-1), text.trim())
        });
        assert_eq!(k, l, "`{cmd}`: kernel (left) and layerfs (right) differ");
        k
    }

    fn steps(&self, cmds: &[&str]) {
        for c in cmds {
            self.step(c);
        }
    }
}

/// Runs a setup command, which must succeed.
fn sh(cmd: &str) {
    let st = Command::new("bash").args(["-c", cmd]).status().unwrap();
    assert!(st.success(), "`{cmd}` failed");
}

fn write(dir: &Path, rel: &str, data: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// Was `../shared/repros/hardlink-removed-name.sh`: after `ln X Y; unlink Y`, xattr calls
/// and opens of X went to the removed name Y (ENOENT, EPERM over the whiteout there, or the
/// other file once Y was created again, e.g. a `security.capability` on the wrong binary).
#[test]
fn operations_on_a_file_act_on_a_name_it_still_has_after_a_link_is_removed() {
    if !require_root("operations_on_a_file_act_on_a_name_it_still_has") {
        return;
    }
    let p = Pair::new(1, |_, d| {
        write(d, "etc/passwd", "root:x:0:0::/root:/bin/sh\n");
        write(d, "etc/hostname", "box\n");
        for f in ["etc/passwd", "etc/hostname"] {
            sh(&format!("setfattr -n user.k1 -v 1 {}", d.join(f).display()));
        }
    });
    p.steps(&[
        r#"ln "$M/etc/passwd" "$M/etc/p2""#,
        r#"unlink "$M/etc/p2""#,
        r#"setfattr -n user.k0 -v 0x76 "$M/etc/passwd""#,
        r#"setfattr -x user.k1 "$M/etc/passwd""#,
        r#"getfattr --absolute-names -d -m user "$M/etc/passwd""#,
        r#"chown 1000:1000 "$M/etc/passwd""#,
        r#"cat "$M/etc/passwd""#,
        r#"truncate -s 3 "$M/etc/passwd"; cat "$M/etc/passwd""#,
        r#"ln "$M/etc/hostname" "$M/etc/h2""#,
        r#"unlink "$M/etc/h2""#,
        r#"touch "$M/etc/h2""#,
        r#"setfattr -n user.k2 -v 0x85 "$M/etc/hostname""#,
        r#"getfattr --absolute-names -d -m user "$M/etc/h2" "$M/etc/hostname""#,
        // The first name removed, the link kept: the file lives on under the link.
        r#"ln "$M/etc/hostname" "$M/etc/h3"; unlink "$M/etc/hostname""#,
        r#"setfattr -n user.k3 -v 3 "$M/etc/h3"; echo more >> "$M/etc/h3""#,
        r#"touch "$M/etc/hostname"; getfattr --absolute-names -d -m user "$M/etc/hostname""#,
        r#"cat "$M/etc/h3"; getfattr --absolute-names -d -m user "$M/etc/h3""#,
        // A renamed link, then the other name removed.
        r#"ln "$M/etc/h3" "$M/etc/h4"; mv "$M/etc/h4" "$M/h5"; unlink "$M/etc/h3""#,
        r#"setfattr -n user.k4 -v 4 "$M/h5"; getfattr --absolute-names -d -m user "$M/h5""#,
        r#"stat -c '%h %s' "$M/h5""#,
    ]);
}

/// `touch x; ln x y; rm x; ln y x` at once (no pause): no stale entry or attribute of the
/// removed name may refuse the link.
#[test]
fn a_name_removed_from_a_hard_linked_file_can_be_linked_again_at_once() {
    if !require_root("a_name_removed_from_a_hard_linked_file_can_be_linked_again") {
        return;
    }
    let p = Pair::new(1, |_, d| write(d, "lower-file", "l\n"));
    p.steps(&[
        r#"cd "$M"; touch x; ln x y; rm x; ln y x; stat -c '%h %s' x y"#,
        r#"cd "$M"; ln lower-file l2; rm lower-file; ln l2 lower-file; cat lower-file"#,
        r#"cd "$M"; stat -c %h lower-file l2"#,
        r#"cd "$M"; mkdir d; ln x d/x; rm x; ln d/x x; rm d/x; ln x d/x; ls d"#,
    ]);
}

/// The merged tree, one line per entry: path, type, and a file's content.
const TREE: &str =
    r#"cd "$M" && find . -printf '%p %y\n' | sort && find . -type f | sort | xargs -r cat"#;

/// A directory renamed on a writable mount, its upper then stacked as a lower (a build's
/// next step): the redirect in that lower must be followed, as the kernel does, or the
/// directory shows empty.
#[test]
fn directories_renamed_in_an_earlier_upper_keep_their_contents_when_it_is_stacked() {
    if !require_root("directories_renamed_in_an_earlier_upper_keep_their_contents") {
        return;
    }
    let mut p = Pair::new(1, |_, d| {
        write(d, "a/dir100/a", "A\n");
        write(d, "a/dir100/sub/b", "B\n");
        write(d, "a/same/c", "C\n");
        fs::create_dir_all(d.join("a/empty100")).unwrap();
    });
    p.steps(&[
        r#"mv "$M/a/dir100" "$M/a/empty100/x""#,
        r#"mv "$M/a/same" "$M/a/same2""#,
        r#"echo new > "$M/a/empty100/x/n""#,
    ]);
    p.stack_upper();
    p.steps(&[
        TREE,
        r#"cat "$M/a/empty100/x/a" "$M/a/same2/c""#,
        // Renamed again on top of the redirected lower, then stacked once more.
        r#"mv "$M/a/empty100/x/sub" "$M/top"; mv "$M/a/same2" "$M/a/same3""#,
        TREE,
    ]);
    p.stack_upper();
    p.step(TREE);
}

/// Redirects written by hand in lower layers (relative, absolute, chained through two
/// layers, one through a whited-out path, one into an opaque directory), read as the kernel
/// reads them.
#[test]
fn redirects_in_lower_layers_are_followed_as_the_kernel_follows_them() {
    if !require_root("redirects_in_lower_layers_are_followed") {
        return;
    }
    let p = Pair::new(3, |i, d| match i {
        0 => {
            write(d, "src/f", "0\n");
            write(d, "deep/er/g", "0g\n");
            write(d, "op/h", "0h\n");
            write(d, "gone/i", "0i\n");
        }
        1 => {
            // Relative: "rel" is what "src" was; "src" is whited out.
            fs::create_dir_all(d.join("rel")).unwrap();
            write(d, "rel/f1", "1\n");
            sh(&format!(
                "setfattr -n trusted.overlay.redirect -v src {0}/rel && mknod {0}/src c 0 0",
                d.display()
            ));
            // Absolute, two levels down.
            fs::create_dir_all(d.join("moved")).unwrap();
            sh(&format!(
                "setfattr -n trusted.overlay.redirect -v /deep/er {0}/moved && \
                 mkdir {0}/deep && mknod {0}/deep/er c 0 0",
                d.display()
            ));
            // Opaque beats the redirect.
            fs::create_dir_all(d.join("op2")).unwrap();
            sh(&format!(
                "setfattr -n trusted.overlay.redirect -v /op {0}/op2 && \
                 setfattr -n trusted.overlay.opaque -v y {0}/op2",
                d.display()
            ));
            // Through a whiteout in this very layer: nothing below shows.
            sh(&format!("mknod {}/gone c 0 0", d.display()));
        }
        _ => {
            // Chained: top "chain" was layer 1's "moved" (itself "/deep/er" below).
            fs::create_dir_all(d.join("chain")).unwrap();
            sh(&format!(
                "setfattr -n trusted.overlay.redirect -v /moved {0}/chain && mknod {0}/moved c 0 0",
                d.display()
            ));
            fs::create_dir_all(d.join("g2")).unwrap();
            sh(&format!(
                "setfattr -n trusted.overlay.redirect -v /gone {}/g2",
                d.display()
            ));
        }
    });
    p.steps(&[
        TREE,
        r#"ls "$M/rel" "$M/chain" "$M/op2" "$M/g2""#,
        r#"mv "$M/chain" "$M/rel/c2"; ls "$M/rel/c2""#,
        TREE,
    ]);
}
