//! With no fd budget left, indexes keep no directory fds and reopen each directory beneath
//! its layer root for every use: the results must be the same, and no fd is kept.
//! (Its own test binary: the budget is process-wide.)

use std::ffi::OsStr;

use layerfs_fuse::Core;
use layerfs_mount::stack::dirindex;
use layerfs_mount::{Config, Stack, Union};

/// The caller of opens (a root thread; read-only mounts never ask).
const CALLER: layerfs_fuse::Ctx = layerfs_fuse::Ctx {
    uid: 0,
    gid: 0,
    pid: 0,
    umask: 0,
};

#[test]
fn exhausted_budget_reopens_directories_and_keeps_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (top, bottom) = (t.path().join("top"), t.path().join("bottom"));
    for l in [&top, &bottom] {
        std::fs::create_dir_all(l.join("a/b")).unwrap();
    }
    std::fs::write(top.join("a/b/f"), "top").unwrap();
    std::fs::write(bottom.join("a/b/g"), "bottom").unwrap();
    std::os::unix::fs::symlink("f", bottom.join("a/b/link")).unwrap();
    let u = Union::new(
        Stack::open(&[top, bottom]).unwrap(),
        None,
        Config::default(),
        false,
    )
    .unwrap();
    dirindex::set_fd_budget(0);

    let look = |p: u64, n: &str| u.lookup(p, OsStr::new(n)).unwrap().node;
    let b = look(look(1, "a"), "b");
    for (name, want) in [("f", "top"), ("g", "bottom")] {
        let ino = look(b, name);
        let o = u.open(ino, libc::O_RDONLY, false, CALLER).unwrap();
        assert_eq!(u.read(ino, o.fh, 0, 100).unwrap(), want.as_bytes());
        u.release(ino, o.fh);
    }
    assert_eq!(u.readlink(look(b, "link")).unwrap(), b"f");
    assert_eq!(dirindex::fds_kept(), 0);
}
