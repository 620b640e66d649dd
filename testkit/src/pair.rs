//! Side by side: the kernel's overlay and layerfs, each over its own copy of the same
//! layers, the same shell steps run on both and their outcomes compared.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Kernel, Layerfs};

/// One side's layers: `lower0` (bottom) ... under `base`, an upper, a workdir, and the
/// uppers stacked later as lowers under `root`.
pub struct Dirs {
    base: PathBuf,
    pub root: PathBuf,
    /// How many lowers are in `base`.
    in_base: usize,
}

impl Dirs {
    pub fn lowers(&self, n: usize) -> Vec<PathBuf> {
        // lowerdir lists the top first.
        (0..n).rev().map(|i| self.lower(i)).collect()
    }
    pub fn lower(&self, i: usize) -> PathBuf {
        let dir = if i < self.in_base {
            &self.base
        } else {
            &self.root
        };
        dir.join(format!("lower{i}"))
    }
    pub fn p(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// A tmpfs mounted for a test; detached in Drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a fresh tmpfs on `dir` (made if missing).
    pub fn mount(dir: &Path) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        sh(&format!("mount -t tmpfs layerfs-test {}", dir.display()));
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is NUL-terminated.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// The kernel and layerfs, each over its own copy of the same layers.
pub struct Pair {
    // Unmounted first (fields drop in order), then the tmpfs, then the files.
    kernel: Option<Kernel>,
    layerfs: Option<Layerfs>,
    _tmpfs: Option<Tmpfs>,
    _t: tempfile::TempDir,
    /// The kernel's layers, then layerfs's.
    pub sides: [Dirs; 2],
    lowers: usize,
    /// More of layerfs's mount options (",io_uring"), and its daemon's environment.
    layerfs_opts: String,
    layerfs_env: Vec<(&'static str, PathBuf)>,
    /// A command layerfs's daemon is started through (`setpriv ...`), if any.
    layerfs_wrapper: Vec<String>,
}

impl Pair {
    /// `fill(lower_index, dir)` writes each of `lowers` lower layers (the same on both
    /// sides); mounted writable with an empty upper.
    pub fn new(lowers: usize, fill: impl Fn(usize, &Path)) -> Pair {
        Self::new_on(lowers, fill, false)
    }

    /// With `tmpfs_upper`, the uppers (and the lowers they become) are on a tmpfs, the
    /// first lowers on the test directory's filesystem: a stack over two filesystems.
    pub fn new_on(lowers: usize, fill: impl Fn(usize, &Path), tmpfs_upper: bool) -> Pair {
        Self::new_with(lowers, fill, tmpfs_upper, "", Vec::new())
    }

    /// `new_on`, layerfs mounted with more options (`opts`, each after a comma) and its
    /// daemon given `env`.
    pub fn new_with(
        lowers: usize,
        fill: impl Fn(usize, &Path),
        tmpfs_upper: bool,
        opts: &str,
        env: Vec<(&'static str, PathBuf)>,
    ) -> Pair {
        let t = tempfile::tempdir().unwrap();
        let tmpfs = tmpfs_upper.then(|| Tmpfs::mount(&t.path().join("tmpfs")));
        let side = |name: &str| {
            let base = t.path().join(name);
            let root = tmpfs.as_ref().map_or(base.clone(), |m| m.0.join(name));
            for d in ["upper", "work", "mnt"] {
                fs::create_dir_all(root.join(d)).unwrap();
            }
            let d = Dirs {
                base,
                root,
                in_base: lowers,
            };
            for i in 0..lowers {
                let l = d.lower(i);
                fs::create_dir_all(&l).unwrap();
                fill(i, &l);
            }
            d
        };
        let sides = [side("k"), side("l")];
        let mut p = Pair {
            kernel: None,
            layerfs: None,
            _tmpfs: tmpfs,
            _t: t,
            sides,
            lowers,
            layerfs_opts: opts.to_string(),
            layerfs_env: env,
            layerfs_wrapper: Vec::new(),
        };
        p.mount();
        p
    }

    pub fn mount(&mut self) {
        let n = self.lowers;
        let [k, l] = &self.sides;
        self.kernel = Some(Kernel::mount_rw_with(
            &k.lowers(n),
            &k.p("upper"),
            &k.p("work"),
            &k.p("mnt"),
            ",redirect_dir=on",
        ));
        let rw = format!(
            "upperdir={},workdir={}{}",
            l.p("upper").display(),
            l.p("work").display(),
            self.layerfs_opts
        );
        let env: Vec<(&str, &Path)> = self
            .layerfs_env
            .iter()
            .map(|(k, v)| (*k, v.as_path()))
            .collect();
        let wrapper: Vec<&str> = self.layerfs_wrapper.iter().map(String::as_str).collect();
        self.layerfs = Some(Layerfs::mount_via(
            &wrapper,
            &l.lowers(n),
            &l.p("mnt"),
            &["-o", &rw],
            &env,
        ));
    }

    /// Mounts both again, layerfs's daemon started through `wrapper` (say `setpriv`
    /// dropping a capability) from now on.
    pub fn wrap_layerfs(&mut self, wrapper: &[&str]) {
        self.layerfs_wrapper = wrapper.iter().map(|w| w.to_string()).collect();
        self.unmount();
        self.mount();
    }

    pub fn unmount(&mut self) {
        self.kernel = None;
        self.layerfs = None;
    }

    /// Unmounts, makes the upper the new top lower layer (an earlier run's upper stacked as
    /// the next layer, as a build does) with a fresh upper, and mounts again.
    pub fn stack_upper(&mut self) {
        self.unmount();
        let n = self.lowers;
        for d in &self.sides {
            fs::rename(d.p("upper"), d.lower(n)).unwrap();
            fs::remove_dir_all(d.p("work")).unwrap();
            fs::create_dir(d.p("upper")).unwrap();
            fs::create_dir(d.p("work")).unwrap();
        }
        self.lowers += 1;
        self.mount();
    }

    /// Runs `cmd` (bash, `$M` = the mount root) on both sides; fails the test when the
    /// outcomes (exit status, output, error message) differ.
    pub fn step(&self, cmd: &str) -> String {
        let [k, l] = self.outcomes(cmd);
        assert_eq!(k, l, "`{cmd}`: kernel (left) and layerfs (right) differ");
        k
    }

    /// Runs `cmd` as [`Self::step`] does; the kernel's outcome and layerfs's, not compared
    /// (where they differ on purpose).
    pub fn outcomes(&self, cmd: &str) -> [String; 2] {
        [0, 1].map(|i| {
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
        })
    }

    /// Runs `cmd` on layerfs only (where it differs from the kernel on purpose); its
    /// output.
    pub fn layerfs_step(&self, cmd: &str) -> String {
        let m = fs::canonicalize(self.sides[1].p("mnt")).unwrap();
        let out = Command::new("bash")
            .args(["-o", "pipefail", "-c", cmd])
            .env("M", &m)
            .output()
            .unwrap();
        assert!(out.status.success(), "`{cmd}` failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn steps(&self, cmds: &[&str]) {
        for c in cmds {
            self.step(c);
        }
    }
}

/// A step's script: prints `same` or `changed` for each of `$FILES` (set before it): its
/// inode number now against the one saved in `$M/../ino.NAME` by [`SAVE_INOS`].
pub const CHECK_INOS: &str = r#"cd "$M" && for f in $FILES; do
  if [ "$(stat -c %i "$f")" = "$(cat "../ino.${f//\//_}")" ]; then echo "$f same"; else echo "$f changed"; fi
done"#;
/// A step's script: saves the inode number of each of `$FILES` for [`CHECK_INOS`].
pub const SAVE_INOS: &str =
    r#"cd "$M" && for f in $FILES; do stat -c %i "$f" > "../ino.${f//\//_}"; done"#;

/// A step's script: prints each of `$FILES` with the first of them that shows the same inode
/// number, and its link count (which names are one file, whatever the numbers are).
pub const INO_CLASSES: &str = r#"cd "$M" && for f in $FILES; do stat -c '%n %i %h' "$f"; done | awk '{ if (!($2 in c)) c[$2] = $1; print $1, c[$2], $3 }'"#;

/// Runs a setup command, which must succeed.
pub fn sh(cmd: &str) {
    let st = Command::new("bash").args(["-c", cmd]).status().unwrap();
    assert!(st.success(), "`{cmd}` failed");
}

pub fn write(dir: &Path, rel: &str, data: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}
