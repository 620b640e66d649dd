//! Several threads walking, listing and reading one mount at once must each see exactly
//! the tree a single walker sees (worker threads, background indexing and parallel layer
//! reads all run concurrently here). Also: a malicious layer seen through a real mount.

use std::os::unix::fs::symlink;

use proptest::strategy::{Strategy, ValueTree};
use testkit::spec::{self, Form};
use testkit::tree;
use testkit::{require_root, Layerfs};

#[test]
fn concurrent_walkers_see_the_same_tree() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut layers = Vec::new();
    // A wide stack: several generated stacks side by side under distinct top-level dirs,
    // plus 20 layers so directories are read in parallel.
    for k in 0..20 {
        let d = t.path().join(format!("layer{k}"));
        std::fs::create_dir_all(&d).unwrap();
        layers.push(d);
    }
    for k in 0..6 {
        let stack = spec::stack().new_tree(&mut runner).unwrap().current();
        let written = spec::write_stack(&t.path().join(format!("gen{k}")), &stack, Form::Oci);
        for (i, l) in written.iter().enumerate() {
            std::fs::rename(l, layers[i * 3 + k % 3].join(format!("g{k}"))).unwrap();
        }
    }
    for (i, l) in layers.iter().enumerate() {
        std::fs::create_dir_all(l.join("shared")).unwrap();
        for j in 0..50 {
            std::fs::write(l.join(format!("shared/f{i}-{j}")), format!("{i}-{j}")).unwrap();
        }
    }
    let expected = {
        let m = Layerfs::mount(&layers, &t.path().join("m1"));
        tree::snapshot(&m.mp)
    };
    // A fresh mount, cold, hammered by 8 walkers at once.
    let m = Layerfs::mount(&layers, &t.path().join("m2"));
    let snaps: Vec<tree::Tree> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8).map(|_| s.spawn(|| tree::snapshot(&m.mp))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, snap) in snaps.iter().enumerate() {
        tree::assert_same(&expected, snap, &format!("walker {i}"));
    }
}

#[test]
fn malicious_layer_through_a_mount_never_exposes_host_files() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "HOST-SECRET").unwrap();
    let (top, low) = (t.path().join("top"), t.path().join("low"));
    std::fs::create_dir_all(top.join("dir")).unwrap();
    std::fs::create_dir_all(&low).unwrap();
    symlink("/", top.join("root")).unwrap();
    symlink("../outside", top.join("up")).unwrap();
    symlink(outside.join("secret"), top.join("abs-secret")).unwrap();
    symlink("../outside", low.join("dir")).unwrap(); // under a real dir above: no merge
    std::fs::write(top.join("dir/own"), "mine").unwrap();
    let m = Layerfs::mount(&[top, low], &t.path().join("mnt"));
    let snap = tree::snapshot(&m.mp);
    // The walk does not follow symlinks; nothing it read may contain the host's data.
    for (p, meta) in &snap.meta {
        if let Some(c) = &meta.content {
            assert!(
                !String::from_utf8_lossy(c).contains("HOST-SECRET"),
                "{} exposes host data",
                p.display()
            );
        }
    }
    let names: Vec<_> = std::fs::read_dir(m.path("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("own")]);
    for link in ["root", "up", "abs-secret"] {
        let md = std::fs::symlink_metadata(m.path(link)).unwrap();
        assert!(md.file_type().is_symlink(), "{link} must stay a symlink");
    }
    assert_eq!(
        std::fs::read_link(m.path("up")).unwrap(),
        std::path::Path::new("../outside")
    );
}
