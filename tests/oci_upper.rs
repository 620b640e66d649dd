//! OCI markers in the upper: containers-storage applies a layer's deletions to its `diff/`
//! as `.wh.NAME` files and `.wh..wh..opq` (ApplyDiff) and then mounts that `diff/` as the
//! upper. The mount must show the same view as when those markers sit in a lower layer,
//! never show a marker, and write only the kernel's forms.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::{require_root, tree, Layerfs};

/// Lower: a, b, c, d/f, d2/x, e/y, e/keep. The layer above, in OCI form: deletes a, makes d
/// opaque with a new g, replaces the directory d2 (`.wh.d2` beside a new d2/z), deletes e/y,
/// replaces b (`.wh.b` beside a new b: a marker never hides its own layer's sibling).
fn layers(base: &Path) -> (PathBuf, PathBuf) {
    let (l, m) = (base.join("lower"), base.join("layer"));
    for d in ["d", "d2", "e"] {
        fs::create_dir_all(l.join(d)).unwrap();
    }
    for (p, c) in [
        ("a", "a"),
        ("b", "old b"),
        ("c", "c"),
        ("d/f", "f"),
        ("d2/x", "x"),
        ("e/y", "y"),
        ("e/keep", "keep"),
    ] {
        fs::write(l.join(p), c).unwrap();
    }
    for d in ["d", "d2", "e"] {
        fs::create_dir_all(m.join(d)).unwrap();
    }
    for (p, c) in [
        (".wh.a", ""),
        (".wh.b", ""),
        ("b", "new b"),
        ("d/.wh..wh..opq", ""),
        ("d/g", "g"),
        (".wh.d2", ""),
        ("d2/z", "z"),
        ("e/.wh.y", ""),
    ] {
        fs::write(m.join(p), c).unwrap();
    }
    (l, m)
}

fn copy_tree(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {}", from.display());
}

fn names(root: &Path) -> Vec<String> {
    let t = tree::snapshot(root);
    t.meta
        .keys()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

#[test]
fn oci_markers_in_the_upper_show_the_same_view_as_in_a_lower() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (l, m) = layers(t.path());
    let expected = {
        let ro = Layerfs::mount(&[m.clone(), l.clone()], &t.path().join("ro"));
        tree::snapshot(&ro.mp)
    };
    assert_eq!(
        names_of(&expected),
        ["b", "c", "d", "d/g", "d2", "d2/z", "e", "e/keep"],
        "the layer's markers read from a lower"
    );
    let (u, w) = (t.path().join("upper"), t.path().join("work"));
    copy_tree(&m, &u);
    fs::create_dir(&w).unwrap();
    let rw = Layerfs::mount_rw(std::slice::from_ref(&l), &u, &w, &t.path().join("rw"));
    tree::assert_same(
        &expected,
        &tree::snapshot(&rw.mp),
        "markers in the upper vs the same markers in a lower",
    );
    assert_eq!(fs::read_to_string(rw.path("b")).unwrap(), "new b");
    for hidden in [
        ".wh.a",
        "a",
        "d/f",
        "d/.wh..wh..opq",
        "d2/x",
        "e/y",
        "e/.wh.y",
    ] {
        assert!(
            fs::symlink_metadata(rw.path(hidden)).is_err(),
            "{hidden} shows"
        );
    }
    rw.assert_no_errors_logged();
}

fn names_of(t: &tree::Tree) -> Vec<String> {
    t.meta
        .keys()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

fn is_kernel_whiteout(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

#[test]
fn writes_over_oci_markers_in_the_upper_leave_the_kernel_form() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (l, m) = layers(t.path());
    let (u, w) = (t.path().join("upper"), t.path().join("work"));
    copy_tree(&m, &u);
    fs::create_dir(&w).unwrap();
    {
        let rw = Layerfs::mount_rw(std::slice::from_ref(&l), &u, &w, &t.path().join("rw"));
        // A new file where `.wh.a` hides the lower a: the new one, not the lower's.
        fs::write(rw.path("a"), "new a").unwrap();
        assert_eq!(fs::read_to_string(rw.path("a")).unwrap(), "new a");
        // A new directory where `.wh.y` hides e/y: empty, nothing merged from below.
        fs::create_dir(rw.path("e/y")).unwrap();
        assert!(fs::read_dir(rw.path("e/y")).unwrap().next().is_none());
        // Removing a name the marker already hides below, and one it does not.
        fs::remove_file(rw.path("b")).unwrap();
        assert!(fs::symlink_metadata(rw.path("b")).is_err());
        fs::remove_file(rw.path("c")).unwrap();
        // `.wh.*` names are the format's: not created, not found.
        for p in [".wh.new", "d/.wh..wh..opq"] {
            let e = fs::write(rw.path(p), "").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "create {p}");
        }
        let e = fs::create_dir(rw.path(".wh.dir")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        let e = fs::rename(rw.path("d/g"), rw.path(".wh.x")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        assert_eq!(
            names(&rw.mp),
            ["a", "d", "d/g", "d2", "d2/z", "e", "e/keep", "e/y"]
        );
        rw.assert_no_errors_logged();
    }
    // The converted names are in the kernel's form: no marker left for them.
    assert!(!u.join(".wh.a").exists() && u.join("a").is_file());
    assert!(!u.join("e/.wh.y").exists() && u.join("e/y").is_dir());
    assert!(is_kernel_whiteout(&u.join("c")));
    // Remounting the upper shows the same again.
    let rw = Layerfs::mount_rw(&[l], &u, &w, &t.path().join("rw2"));
    assert_eq!(
        names(&rw.mp),
        ["a", "d", "d/g", "d2", "d2/z", "e", "e/keep", "e/y"]
    );
}

#[test]
fn every_opaque_form_is_honoured_in_the_upper() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (l, u, w) = (t.path().join("l"), t.path().join("u"), t.path().join("w"));
    let forms = [
        "trusted.overlay.opaque",
        "user.overlay.opaque",
        "user.fuseoverlayfs.opaque",
    ];
    for (i, _) in forms.iter().enumerate() {
        fs::create_dir_all(l.join(format!("o{i}"))).unwrap();
        fs::write(l.join(format!("o{i}/below")), "").unwrap();
        fs::create_dir_all(u.join(format!("o{i}"))).unwrap();
        fs::write(u.join(format!("o{i}/above")), "").unwrap();
    }
    fs::create_dir(&w).unwrap();
    for (i, x) in forms.iter().enumerate() {
        let ok = Command::new("setfattr")
            .args(["-n", x, "-v", "y"])
            .arg(u.join(format!("o{i}")))
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    let rw = Layerfs::mount_rw(&[l], &u, &w, &t.path().join("m"));
    assert_eq!(
        names(&rw.mp),
        ["o0", "o0/above", "o1", "o1/above", "o2", "o2/above"]
    );
}
