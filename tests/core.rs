//! Core tests: the union driven directly through its `Core` interface, no FUSE, no mount,
//! no root needed.

use std::ffi::OsStr;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use layerfs_fuse::{Core, DirEntry};
use layerfs_mount::{Config, Stack, Union};

/// The caller of opens (a root thread; read-only mounts never ask).
const CALLER: layerfs_fuse::Ctx = layerfs_fuse::Ctx {
    uid: 0,
    gid: 0,
    pid: 0,
    umask: 0,
};

const ROOT: u64 = 1;

fn union(layers: &[PathBuf]) -> Union {
    Union::new(Stack::open(layers).unwrap(), None, Config::default(), false).unwrap()
}

fn layers(base: &Path, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let d = base.join(format!("l{i}"));
            std::fs::create_dir_all(&d).unwrap();
            d
        })
        .collect()
}

/// A name looked up: the node id the core gave it and the attributes it shows.
struct Found {
    node: u64,
    st: libc::stat,
}

impl std::ops::Deref for Found {
    type Target = libc::stat;
    fn deref(&self) -> &libc::stat {
        &self.st
    }
}

impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} (ino {})", self.node, self.st.st_ino)
    }
}

impl PartialEq for Found {
    fn eq(&self, o: &Found) -> bool {
        self.node == o.node
    }
}

fn lookup(u: &Union, parent: u64, name: &str) -> Result<Found, i32> {
    u.lookup(parent, OsStr::new(name))
        .map(|e| Found {
            node: e.node,
            st: e.attr,
        })
        .map_err(|e| e.errno())
}

fn read_all(u: &Union, ino: u64) -> Vec<u8> {
    let o = u.open(ino, libc::O_RDONLY, false, CALLER).unwrap();
    let d = u.read(ino, o.fh, 0, 1 << 20).unwrap();
    u.release(ino, o.fh);
    d
}

/// Lists a directory in chunks of `chunk` entries, resuming from the last offset each time,
/// as the kernel does when its buffer fills.
fn list(u: &Union, ino: u64, chunk: usize, plus: bool) -> Vec<String> {
    let mut names = Vec::new();
    let mut offset = 0;
    loop {
        let mut got = 0;
        u.readdir(ino, offset, plus, &mut |d: DirEntry<'_>| {
            if got == chunk {
                return true;
            }
            got += 1;
            offset = d.next_offset;
            names.push(String::from_utf8(d.name.to_vec()).unwrap());
            false
        })
        .unwrap();
        if got == 0 {
            break;
        }
    }
    names
}

fn mknod_whiteout(p: &Path) -> bool {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is NUL-terminated.
    unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) == 0 }
}

#[test]
fn upper_layer_wins_and_directories_merge() {
    let t = tempfile::tempdir().unwrap();
    let l = layers(t.path(), 3);
    std::fs::write(l[0].join("f"), "top").unwrap();
    std::fs::write(l[2].join("f"), "bottom").unwrap();
    for d in &l {
        std::fs::create_dir(d.join("d")).unwrap();
    }
    std::fs::write(l[0].join("d/a"), "a").unwrap();
    std::fs::write(l[1].join("d/b"), "b").unwrap();
    std::fs::write(l[2].join("d/c"), "c").unwrap();
    // A non-directory in the middle layer cuts the merge of "e" below it.
    std::fs::create_dir(l[0].join("e")).unwrap();
    std::fs::write(l[1].join("e"), "file").unwrap();
    std::fs::create_dir(l[2].join("e")).unwrap();
    std::fs::write(l[2].join("e/hidden"), "x").unwrap();

    let u = union(&l);
    let f = lookup(&u, ROOT, "f").unwrap();
    assert_eq!(read_all(&u, f.node), b"top");
    let d = lookup(&u, ROOT, "d").unwrap();
    let mut names = list(&u, d.node, 100, false);
    names.sort();
    assert_eq!(names, [".", "..", "a", "b", "c"]);
    let e = lookup(&u, ROOT, "e").unwrap();
    assert_eq!(list(&u, e.node, 100, false), [".", ".."]);
    assert_eq!(lookup(&u, e.node, "hidden"), Err(libc::ENOENT));
}

#[test]
fn whiteouts_in_every_form_and_opaque_dirs() {
    let t = tempfile::tempdir().unwrap();
    let l = layers(t.path(), 2);
    for n in ["oci", "dev", "kept", "op"] {
        std::fs::write(l[1].join(n), n)
            .unwrap_or_else(|_| std::fs::create_dir(l[1].join(n)).unwrap());
    }
    std::fs::remove_file(l[1].join("op")).unwrap();
    std::fs::create_dir(l[1].join("op")).unwrap();
    std::fs::write(l[1].join("op/below"), "x").unwrap();
    std::fs::create_dir(l[0].join("op")).unwrap();
    std::fs::write(l[0].join("op/.wh..wh..opq"), "").unwrap();
    std::fs::write(l[0].join("op/mine"), "m").unwrap();
    std::fs::write(l[0].join(".wh.oci"), "").unwrap();
    // An OCI whiteout never hides a sibling of its own layer.
    std::fs::write(l[0].join("kept"), "top kept").unwrap();
    std::fs::write(l[0].join(".wh.kept"), "").unwrap();
    let dev_ok = mknod_whiteout(&l[0].join("dev"));

    let u = union(&l);
    assert_eq!(lookup(&u, ROOT, "oci"), Err(libc::ENOENT));
    assert_eq!(lookup(&u, ROOT, ".wh.oci"), Err(libc::ENOENT));
    if dev_ok {
        assert_eq!(lookup(&u, ROOT, "dev"), Err(libc::ENOENT));
    }
    let kept = lookup(&u, ROOT, "kept").unwrap();
    assert_eq!(read_all(&u, kept.node), b"top kept");
    let op = lookup(&u, ROOT, "op").unwrap();
    assert_eq!(list(&u, op.node, 100, false), [".", "..", "mine"]);
    let root = list(&u, ROOT, 100, false);
    assert!(!root.iter().any(|n| n.starts_with(".wh.")), "{root:?}");
    assert!(!root.contains(&"oci".to_string()));
}

#[test]
fn readdir_resumes_at_every_offset_without_repeats() {
    let t = tempfile::tempdir().unwrap();
    let l = layers(t.path(), 2);
    for i in 0..300 {
        std::fs::write(l[i % 2].join(format!("n{i}")), "").unwrap();
        if i % 3 == 0 {
            std::fs::write(l[1].join(format!("n{i}")), "dup").unwrap();
        }
    }
    let u = union(&l);
    let whole = list(&u, ROOT, usize::MAX, false);
    for chunk in [1, 7, 64] {
        assert_eq!(list(&u, ROOT, chunk, false), whole, "chunk {chunk}");
        assert_eq!(list(&u, ROOT, chunk, true), whole, "plus, chunk {chunk}");
    }
    assert_eq!(whole.len(), 302);
}

#[test]
fn readdirplus_counts_lookups_and_forget_drops_nodes() {
    let t = tempfile::tempdir().unwrap();
    let l = layers(t.path(), 1);
    for i in 0..10 {
        std::fs::write(l[0].join(format!("f{i}")), "").unwrap();
    }
    let u = union(&l);
    assert_eq!(u.node_count(), 1);
    list(&u, ROOT, usize::MAX, true);
    assert_eq!(u.node_count(), 11);
    let f = lookup(&u, ROOT, "f3").unwrap();
    u.forget(f.node, 1);
    assert_eq!(u.node_count(), 11, "one reference is left from readdirplus");
    u.forget(f.node, 1);
    assert_eq!(u.node_count(), 10);
    assert_eq!(
        u.getattr(f.node).map_err(|e| e.errno()).err(),
        Some(libc::ESTALE)
    );
}

#[test]
fn readdirplus_entries_that_do_not_fit_leave_no_node_behind() {
    let t = tempfile::tempdir().unwrap();
    let l = layers(t.path(), 1);
    for i in 0..10 {
        std::fs::write(l[0].join(format!("f{i}")), "").unwrap();
    }
    let u = union(&l);
    // One reply with room for 4 entries (".", "..", two files) and a reader that stops.
    let mut taken = 0;
    u.readdir(ROOT, 0, true, &mut |_| {
        if taken == 4 {
            return true;
        }
        taken += 1;
        false
    })
    .unwrap();
    assert_eq!(
        u.node_count(),
        3,
        "the root and the two files handed out, nothing else"
    );
}

#[test]
fn inode_numbers_share_for_hard_links_and_survive_a_new_instance() {
    let t = tempfile::tempdir().unwrap();
    let l = layers(t.path(), 2);
    std::fs::write(l[1].join("a"), "x").unwrap();
    std::fs::hard_link(l[1].join("a"), l[1].join("b")).unwrap();
    std::fs::write(l[0].join("c"), "y").unwrap();
    let u1 = union(&l);
    let (a, b, c) = (
        lookup(&u1, ROOT, "a").unwrap(),
        lookup(&u1, ROOT, "b").unwrap(),
        lookup(&u1, ROOT, "c").unwrap(),
    );
    assert_eq!(a.st_ino, b.st_ino);
    assert_ne!(a.st_ino, c.st_ino);
    let u2 = union(&l);
    assert_eq!(lookup(&u2, ROOT, "a").unwrap().st_ino, a.st_ino);
    assert_eq!(lookup(&u2, ROOT, "c").unwrap().st_ino, c.st_ino);
}

#[test]
fn private_xattrs_never_show() {
    let t = tempfile::tempdir().unwrap();
    let l = layers(t.path(), 1);
    let f = l[0].join("f");
    std::fs::write(&f, "").unwrap();
    let set = |name: &str| {
        let p = std::ffi::CString::new(f.as_os_str().as_encoded_bytes()).unwrap();
        let n = std::ffi::CString::new(name).unwrap();
        // SAFETY: NUL-terminated strings, a one-byte value.
        unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), b"y".as_ptr().cast(), 1, 0) == 0 }
    };
    assert!(set("user.visible"));
    assert!(set("user.overlay.opaque"));
    let u = union(&l);
    let st = lookup(&u, ROOT, "f").unwrap();
    assert_eq!(u.listxattr(st.node).unwrap(), b"user.visible\0");
    assert_eq!(
        u.getxattr(st.node, OsStr::new("user.visible")).unwrap(),
        b"y"
    );
    assert_eq!(
        u.getxattr(st.node, OsStr::new("user.overlay.opaque"))
            .map_err(|e| e.errno())
            .err(),
        Some(libc::ENODATA)
    );
}

#[test]
fn the_mount_root_shows_the_top_layer_root_xattrs() {
    let t = tempfile::tempdir().unwrap();
    let l = layers(t.path(), 2);
    let p = std::ffi::CString::new(l[0].as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(
        // SAFETY: NUL-terminated strings, a two-byte value.
        unsafe {
            libc::setxattr(
                p.as_ptr(),
                c"user.root".as_ptr(),
                b"ok".as_ptr().cast(),
                2,
                0,
            )
        },
        0
    );
    let u = union(&l);
    assert_eq!(u.listxattr(ROOT).unwrap(), b"user.root\0");
    assert_eq!(u.getxattr(ROOT, OsStr::new("user.root")).unwrap(), b"ok");
}

#[test]
fn read_only_mount_refuses_writes() {
    let t = tempfile::tempdir().unwrap();
    let l = layers(t.path(), 1);
    std::fs::write(l[0].join("f"), "x").unwrap();
    let u = union(&l);
    let st = lookup(&u, ROOT, "f").unwrap();
    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
        assert_eq!(
            u.open(st.node, flags, false, CALLER)
                .map(|_| ())
                .map_err(|e| e.errno()),
            Err(libc::EROFS)
        );
    }
    assert_eq!(u.mutation_error().errno(), libc::EROFS);
}

#[test]
fn symlinks_in_layers_are_never_followed() {
    let t = tempfile::tempdir().unwrap();
    let l = layers(t.path(), 2);
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "SECRET").unwrap();
    symlink(&outside, l[0].join("abs")).unwrap();
    symlink("../outside", l[0].join("rel")).unwrap();
    symlink("../outside/secret", l[0].join("file")).unwrap();
    // A symlink in a lower layer under a real directory above: no merge through it.
    std::fs::create_dir(l[0].join("d")).unwrap();
    symlink("../outside", l[1].join("d")).unwrap();

    let u = union(&l);
    for name in ["abs", "rel", "file"] {
        let st = lookup(&u, ROOT, name).unwrap();
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFLNK);
        // Looking below a symlink or opening it must fail, not reach the target.
        assert_eq!(lookup(&u, st.node, "secret"), Err(libc::ENOTDIR));
        assert_eq!(
            u.open(st.node, libc::O_RDONLY, false, CALLER)
                .map(|_| ())
                .map_err(|e| e.errno()),
            Err(libc::ELOOP)
        );
        let listed = u.readdir(st.node, 0, false, &mut |_| false);
        assert_eq!(listed.map_err(|e| e.errno()), Err(libc::ENOTDIR));
    }
    assert_eq!(
        u.readlink(lookup(&u, ROOT, "rel").unwrap().node).unwrap(),
        b"../outside"
    );
    let d = lookup(&u, ROOT, "d").unwrap();
    assert_eq!(list(&u, d.node, 100, false), [".", ".."]);
    assert_eq!(lookup(&u, d.node, "secret"), Err(libc::ENOENT));
    assert_eq!(lookup(&u, ROOT, ".."), Err(libc::EINVAL));
    assert_eq!(lookup(&u, ROOT, "a/b"), Err(libc::EINVAL));
}

#[test]
fn a_directory_swapped_for_a_symlink_after_mount_is_not_followed() {
    let t = tempfile::tempdir().unwrap();
    let l = layers(t.path(), 1);
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "SECRET").unwrap();
    std::fs::create_dir(l[0].join("d")).unwrap();
    let u = union(&l);
    // The root is indexed ("d" is a directory), then the layer is changed under us.
    let d = lookup(&u, ROOT, "d").unwrap();
    std::fs::remove_dir(l[0].join("d")).unwrap();
    symlink(&outside, l[0].join("d")).unwrap();
    match lookup(&u, d.node, "secret") {
        Err(e) => assert!(e == libc::ELOOP || e == libc::ENOTDIR, "errno {e}"),
        Ok(_) => panic!("followed a symlink inside a layer"),
    }
}

#[test]
fn many_layers_index_once() {
    let t = tempfile::tempdir().unwrap();
    let l = layers(t.path(), 128);
    for (i, d) in l.iter().enumerate() {
        std::fs::create_dir(d.join("usr")).unwrap();
        std::fs::write(d.join(format!("usr/f{i}")), format!("{i}")).unwrap();
    }
    let u = union(&l);
    let usr = lookup(&u, ROOT, "usr").unwrap();
    for i in (0..128).step_by(17) {
        let st = lookup(&u, usr.node, &format!("f{i}")).unwrap();
        assert_eq!(read_all(&u, st.node), format!("{i}").as_bytes());
    }
    assert_eq!(list(&u, usr.node, usize::MAX, false).len(), 130);
}

/// A writable union over `lowers`, with its upper and workdir under `base`. Trusted
/// xattrs: root only (`None` otherwise, after saying so, or failing under
/// `LAYERFS_NO_SKIP`).
fn rw_union(test: &str, base: &Path, lowers: &[PathBuf]) -> Option<Union> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("LAYERFS_NO_SKIP").is_none(),
            "{test}: needs root"
        );
        eprintln!("SKIP {test}: needs root (trusted xattrs in the upper)");
        return None;
    }
    let (up, work) = (base.join("upper"), base.join("work"));
    std::fs::create_dir_all(&up).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let upper =
        layerfs_mount::upper::open(&up, &work, layerfs_base::format::MarkNs::Trusted).unwrap();
    let dev = std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(&up).unwrap());
    let stack = Stack::open_with_upper(lowers, Some(dev)).unwrap();
    Some(Union::new(stack, Some(upper), Config::default(), true).unwrap())
}

/// Up to `n` entries from `offset` on, with the offset to continue from.
fn read_from(u: &Union, ino: u64, offset: u64, n: usize) -> (Vec<String>, u64) {
    let (mut names, mut next) = (Vec::new(), offset);
    u.readdir(ino, offset, false, &mut |d: DirEntry<'_>| {
        if names.len() == n {
            return true;
        }
        next = d.next_offset;
        names.push(String::from_utf8(d.name.to_vec()).unwrap());
        false
    })
    .unwrap();
    (names, next)
}

fn ctx() -> layerfs_fuse::Ctx {
    layerfs_fuse::Ctx {
        uid: 0,
        gid: 0,
        pid: 0,
        umask: 0,
    }
}

/// Directories have no handles: a read from a later offset continues the listing the
/// read from offset 0 took, even when the directory changed and another reader started
/// over in between (no unchanged name repeated or skipped), a read from 0 takes the
/// directory as it is now, and a read from a later offset with nothing taken yet (a
/// `seekdir` in a new process) starts from the position in a listing taken then.
#[test]
fn listings_without_handles_continue_by_position_and_restart_at_offset_zero() {
    let t = tempfile::tempdir().unwrap();
    let l = layers(t.path(), 1);
    std::fs::create_dir(l[0].join("d")).unwrap();
    for i in 0..40 {
        std::fs::write(l[0].join(format!("d/f{i:02}")), "").unwrap();
    }
    let Some(u) = rw_union("listings_without_handles", t.path(), &l) else {
        return;
    };
    let d = lookup(&u, ROOT, "d").unwrap().node;
    let (first, at) = read_from(&u, d, 0, 12);
    let (read, unread) = (first[5].clone(), "f39".to_string());
    assert!(!first.contains(&unread));
    // Changes in between: a copy-up of the directory, a new name, two removed names
    // already read and one not yet read (positions after them move by one).
    u.mknod(d, OsStr::new("new"), libc::S_IFREG | 0o644, 0, ctx())
        .unwrap();
    u.unlink(d, OsStr::new(&read)).unwrap();
    u.unlink(d, OsStr::new(&first[6])).unwrap();
    u.unlink(d, OsStr::new(&unread)).unwrap();
    // Another reader starts over in between (after the change: a new listing).
    let (other, _) = read_from(&u, d, 0, 5);
    assert_eq!(other.len(), 5);
    let (rest, _) = read_from(&u, d, at, usize::MAX);
    let mut all: Vec<String> = first.iter().chain(&rest).cloned().collect();
    all.sort();
    let want: Vec<String> = [".", ".."]
        .into_iter()
        .map(String::from)
        .chain((0..39).map(|i| format!("f{i:02}")))
        .collect();
    assert_eq!(all, want, "continued in the listing taken at offset 0");
    // From offset 0: the directory as it is now.
    let (now, _) = read_from(&u, d, 0, usize::MAX);
    assert!(now.contains(&"new".to_string()) && !now.contains(&read));
    assert_eq!(now.len(), 2 + 38);
    // A second union over the same layers (a new mount): a read from a later offset with
    // no listing taken starts there, in a listing taken now.
    all = now.clone();
    drop(u);
    let u = rw_union("listings_without_handles", t.path(), &l).unwrap();
    let d = lookup(&u, ROOT, "d").unwrap().node;
    let (tail, _) = read_from(&u, d, 20, usize::MAX);
    assert_eq!(tail, all[20..], "resumed at position 20 in a fresh listing");
}
