//! Helpers for side-by-side runs against other FUSE programs (fuse-overlayfs, bindfs),
//! which daemonize, and a plain merged-view summary to compare them with.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{mount_type, wait_mount};

/// A mount made by a program that daemonizes (fuse-overlayfs, bindfs); unmounted in Drop.
pub struct Daemonized(pub PathBuf);

impl Drop for Daemonized {
    fn drop(&mut self) {
        for _ in 0..100 {
            let ok = Command::new("umount")
                .arg(&self.0)
                .stderr(Stdio::null())
                .status();
            if ok.is_ok_and(|s| s.success()) || mount_type(&self.0).is_none() {
                return;
            }
            // Busy for a moment while the daemon above it exits.
            std::thread::yield_now();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Runs `prog ARGS... MP` (a daemonizing FUSE program) and waits for the mount.
pub fn daemonized(prog: &str, args: &[&str], mp: &Path) -> Daemonized {
    std::fs::create_dir_all(mp).unwrap();
    let out = Command::new(prog)
        .args(args)
        .arg(mp)
        .output()
        .unwrap_or_else(|e| panic!("{prog} is installed (scripts/test installs it): {e}"));
    assert!(
        out.status.success(),
        "{prog}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_mount(mp, |t| t.is_some_and(|t| t.starts_with("fuse")), || true);
    Daemonized(mp.to_path_buf())
}

pub fn fuse_overlayfs(opts: &str, mp: &Path) -> Daemonized {
    daemonized("fuse-overlayfs", &["-o", opts], mp)
}

/// What a merged view shows: per path, type and mode, owner, and a file's content.
pub fn view(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            // A name listed but gone (a view changing under the walk) shows as such.
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                out.insert(rel, "listed, not found".into());
                continue;
            };
            let content = match std::fs::read(&p) {
                Ok(c) if m.is_file() => String::from_utf8_lossy(&c).into_owned(),
                Ok(_) => String::new(),
                Err(e) => e.to_string(),
            };
            if m.is_dir() {
                todo.push(p.clone());
            }
            let v = format!("{:o} {}:{} {content:?}", m.mode(), m.uid(), m.gid());
            out.insert(rel, v);
        }
    }
    out
}

pub fn sh(script: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(script).output().unwrap()
}

pub fn write(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}
