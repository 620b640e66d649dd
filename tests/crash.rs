//! Crash safety: the daemon is killed with SIGKILL during a storm of copy-ups and creates;
//! after a remount every file shows its old or its new content (never a torn copy), and no
//! workdir temporary is visible or left behind.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{eventually, require_root, Layerfs};

const FILES: usize = 24;
const SIZE: usize = 2 << 20;

fn old_content(i: usize) -> Vec<u8> {
    (0..SIZE).map(|j| (i * 31 + j / 4096) as u8).collect()
}

fn new_file_content(i: usize) -> Vec<u8> {
    vec![i as u8 ^ 0x5a; 256 << 10]
}

/// Appends one byte to every lower file (each a copy-up) and creates new files, until told
/// to stop or the mount dies.
fn storm(root: &Path, stop: &AtomicBool) {
    for i in 0..FILES {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let append = fs::OpenOptions::new()
            .append(true)
            .open(root.join(format!("f{i}")))
            .and_then(|mut f| f.write_all(b"+"));
        let create = fs::File::create(root.join(format!("n{i}")))
            .and_then(|mut f| f.write_all(&new_file_content(i)));
        if append.is_err() || create.is_err() {
            return; // the daemon is gone
        }
    }
}

#[test]
fn kill_9_during_copy_ups_leaves_old_or_new_never_torn() {
    if !require_root("kill_9_during_copy_ups_leaves_old_or_new_never_torn") {
        return;
    }
    for (round, kill_after) in [2usize, 9, 17].into_iter().enumerate() {
        let t = tempfile::tempdir().unwrap();
        let (l, u, w) = (t.path().join("l"), t.path().join("u"), t.path().join("w"));
        for d in [&l, &u, &w] {
            fs::create_dir(d).unwrap();
        }
        for i in 0..FILES {
            fs::write(l.join(format!("f{i}")), old_content(i)).unwrap();
        }
        let lowers = std::slice::from_ref(&l);
        let mp = t.path().join("m");
        {
            let mut m = Layerfs::mount_rw(lowers, &u, &w, &mp);
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                let root = m.mp.clone();
                let stop = &stop;
                s.spawn(move || storm(&root, stop));
                // Kill once the storm is well under way, while a copy is being built.
                eventually("a copy-up in flight", || {
                    fs::read_dir(&u).map_or(0, |d| d.count()) >= kill_after
                        && fs::read_dir(&w).map_or(0, |d| d.count()) > 0
                });
                m.kill();
                stop.store(true, Ordering::Relaxed);
            });
        }
        let interrupted = fs::read_dir(&w).unwrap().count();
        assert!(interrupted > 0, "round {round}: no copy was cut short");
        let m = Layerfs::mount_rw(lowers, &u, &w, &mp);
        let mut copied = 0;
        for i in 0..FILES {
            let got = fs::read(m.path(&format!("f{i}"))).unwrap();
            let old = old_content(i);
            let mut new = old.clone();
            new.push(b'+');
            assert!(
                got == old || got == new,
                "round {round}: f{i} torn: {} bytes",
                got.len()
            );
            copied += usize::from(u.join(format!("f{i}")).exists());
            match fs::read(m.path(&format!("n{i}"))) {
                Ok(d) => assert!(
                    d.is_empty() || d == new_file_content(i),
                    "round {round}: n{i} has {} bytes",
                    d.len()
                ),
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
            }
        }
        assert!(copied >= 1, "round {round}: the storm copied nothing up");
        let names: Vec<String> = fs::read_dir(&m.mp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with('#')),
            "debris in view: {names:?}"
        );
        let work: Vec<_> = fs::read_dir(&w)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            work.is_empty(),
            "round {round}: workdir not cleared at mount: {work:?}"
        );
    }
}
