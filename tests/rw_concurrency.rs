//! Concurrency on a writable mount: threads doing random operations on shared paths and on
//! their own files at once. Nothing may fail with EIO, the daemon must survive, each
//! thread's own file ends with exactly what it wrote, and afterwards the upper means the
//! same thing to kernel overlayfs as the mount showed.

use std::fs;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use testkit::ops::{self, Outcome};
use testkit::{require_root, tree, Kernel, Layerfs};

const THREADS: usize = 4;
const OPS: usize = 400;

#[test]
fn threads_doing_random_operations_on_shared_and_own_files() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (l, u, w) = (t.path().join("l"), t.path().join("u"), t.path().join("w"));
    for d in [&l, &u, &w] {
        fs::create_dir(d).unwrap();
    }
    fs::create_dir_all(l.join("dir/dir")).unwrap();
    for name in ["a", "b", "dir/a", "dir/c", "dir/dir/b"] {
        fs::write(l.join(name), name.as_bytes()).unwrap();
    }
    for i in 0..THREADS {
        fs::write(l.join(format!("own{i}")), b"start\n").unwrap();
    }
    let lowers = std::slice::from_ref(&l);
    let shown = {
        let m = Layerfs::mount_rw(lowers, &u, &w, &t.path().join("m"));
        std::thread::scope(|s| {
            for i in 0..THREADS {
                let root = m.mp.clone();
                s.spawn(move || {
                    let seed = [i as u8 + 1; 32];
                    let mut runner = TestRunner::new_with_rng(
                        Config::default(),
                        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
                    );
                    let own = root.join(format!("own{i}"));
                    for n in 0..OPS {
                        let op = ops::op().new_tree(&mut runner).unwrap().current();
                        let out = ops::apply(&root, &op);
                        assert_ne!(out, Outcome::Errno(libc::EIO), "thread {i}: {op:?}");
                        // Interleaved: one line to this thread's own file.
                        use std::io::Write;
                        let mut f = fs::OpenOptions::new().append(true).open(&own).unwrap();
                        writeln!(f, "{n}").unwrap();
                    }
                });
            }
        });
        for i in 0..THREADS {
            let text = fs::read_to_string(m.path(&format!("own{i}"))).unwrap();
            let want: String = std::iter::once("start".to_string())
                .chain((0..OPS).map(|n| n.to_string()))
                .map(|l| l + "\n")
                .collect();
            assert_eq!(text, want, "own{i}");
        }
        m.assert_no_errors_logged();
        tree::snapshot(&m.mp)
    };
    fs::create_dir(t.path().join("kw")).unwrap();
    let k = Kernel::mount_rw_with(
        lowers,
        &u,
        &t.path().join("kw"),
        &t.path().join("k"),
        ",redirect_dir=on",
    );
    let mut kernel = tree::snapshot(&k.mp);
    kernel.phantoms.clear();
    tree::assert_same(
        &kernel,
        &shown,
        "kernel on the upper vs what layerfs showed",
    );
}
