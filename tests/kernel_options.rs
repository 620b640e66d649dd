//! The options kernel overlayfs has too, side by side with `mount -t overlay` on copies
//! of the same directories: `redirect_dir=` and `metacopy=` (each reading the other's
//! upper).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use testkit::side::{sh, view, write};
use testkit::{require_root, Layerfs};

/// Renames through a writable mount with `redirect_dir=` `extra`: a directory with lower
/// content, a new directory, a lower file; each rename's errno (0: done).
fn renames(kernel: bool, base: &Path, extra: &str) -> Vec<i32> {
    write(&base.join("lower/d/f"), "f\n");
    write(&base.join("lower/g"), "g\n");
    let (u, w, mp) = (base.join("upper"), base.join("work"), base.join("m"));
    for d in [&u, &w] {
        std::fs::create_dir_all(d).unwrap();
    }
    let lower = [base.join("lower")];
    let (_k, _l, mp) = if kernel {
        let k = testkit::Kernel::mount_rw_with(&lower, &u, &w, &mp, extra);
        let mp = k.mp.clone();
        (Some(k), None, mp)
    } else {
        let o = format!("upperdir={},workdir={}{extra}", u.display(), w.display());
        let l = Layerfs::mount_with(&lower, &mp, &["-o", &o]);
        let mp = l.mp.clone();
        (None, Some(l), mp)
    };
    std::fs::create_dir(mp.join("n")).unwrap();
    [("d", "d2"), ("n", "n2"), ("g", "g2")]
        .iter()
        .map(|(a, b)| match std::fs::rename(mp.join(a), mp.join(b)) {
            Ok(()) => 0,
            Err(e) => e.raw_os_error().unwrap(),
        })
        .collect()
}

#[test]
fn redirect_dir_off_refuses_renaming_lower_directories_as_the_kernel() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    for (i, extra) in [
        ",redirect_dir=on",
        ",redirect_dir=off",
        ",redirect_dir=follow",
    ]
    .iter()
    .enumerate()
    {
        let k = renames(true, &t.path().join(format!("k{i}")), extra);
        let l = renames(false, &t.path().join(format!("l{i}")), extra);
        assert_eq!(l, k, "layerfs (left), kernel (right), -o ...{extra}");
    }
    let off = renames(false, &t.path().join("off"), ",redirect_dir=off");
    assert_eq!(off, [libc::EXDEV, 0, 0]);
}

/// Metadata changes to lower files on a mount with `extra`, by the kernel or layerfs:
/// chmod of `f`, chown of `g`, a user xattr on `h`, then an append to `h`.
fn metacopy_steps(mp: &Path) {
    std::fs::set_permissions(mp.join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(mp.join("g"), Some(5), Some(6)).unwrap();
    assert!(sh(&format!(
        "setfattr -n user.x -v 1 {}",
        mp.join("h").display()
    ))
    .status
    .success());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(mp.join("h"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"more\n").unwrap();
}

/// Lowers for the metacopy tests: three files of 64 KiB.
fn metacopy_lowers(b: &Path) -> [PathBuf; 1] {
    for n in ["f", "g", "h"] {
        write(&b.join("lower").join(n), &n.repeat(65536));
    }
    [b.join("lower")]
}

/// A writable mount of `lower` by the kernel or layerfs with `extra`.
enum Either {
    K(testkit::Kernel),
    L(Layerfs),
}

impl Either {
    fn mount(kernel: bool, lower: &[PathBuf], b: &Path, mp: &str, extra: &str) -> Either {
        let (u, w) = (b.join("upper"), b.join("work"));
        for d in [&u, &w] {
            std::fs::create_dir_all(d).unwrap();
        }
        if kernel {
            Either::K(testkit::Kernel::mount_rw_with(
                lower,
                &u,
                &w,
                &b.join(mp),
                extra,
            ))
        } else {
            let o = format!("upperdir={},workdir={}{extra}", u.display(), w.display());
            Either::L(Layerfs::mount_with(lower, &b.join(mp), &["-o", &o]))
        }
    }

    fn mp(&self) -> &Path {
        match self {
            Either::K(k) => &k.mp,
            Either::L(l) => &l.mp,
        }
    }
}

/// `metacopy=on` as the kernel: a metadata change copies metadata only (the upper file a
/// hole marked `trusted.overlay.metacopy`), data on the first write; each reads the
/// other's upper, and the merged views agree.
#[test]
fn metacopy_on_copies_metadata_only_as_the_kernel() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mut views = Vec::new();
    let mut stored = Vec::new();
    for (writer, reader) in [(true, false), (false, true), (false, false)] {
        let b = t.path().join(format!("{writer}-{reader}"));
        let lower = metacopy_lowers(&b);
        let m = Either::mount(writer, &lower, &b, "w", ",metacopy=on");
        metacopy_steps(m.mp());
        let seen = view(m.mp());
        drop(m);
        // Data in the upper: only the file written to (h), not the chmod-ed or chown-ed.
        let up = b.join("upper");
        let blocks: Vec<u64> = ["f", "g", "h"]
            .iter()
            .map(|n| std::fs::metadata(up.join(n)).unwrap().blocks() * 512)
            .collect();
        stored.push((blocks[0] < 65536, blocks[1] < 65536, blocks[2] >= 65536));
        let marks = sh(&format!(
            "getfattr -n trusted.overlay.metacopy {} {}",
            up.join("f").display(),
            up.join("g").display()
        ));
        assert!(
            marks.status.success(),
            "{writer}: f and g are metadata-only copies"
        );
        let r = Either::mount(reader, &lower, &b, "r", ",metacopy=on");
        assert_eq!(
            view(r.mp()),
            seen,
            "writer kernel {writer}, reader kernel {reader}"
        );
        views.push(seen);
    }
    assert_eq!(views[1], views[0], "layerfs (left), kernel (right)");
    assert_eq!(views[2], views[0], "layerfs (left), kernel (right)");
    assert!(
        stored.iter().all(|s| *s == (true, true, true)),
        "{stored:?}"
    );
}

/// Without `metacopy=on` layerfs copies whole files, and still reads an upper the kernel
/// wrote with it.
#[test]
fn a_kernel_metacopy_upper_reads_without_the_option() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let b = t.path();
    let lower = metacopy_lowers(b);
    let k = Either::mount(true, &lower, b, "k", ",metacopy=on");
    std::fs::set_permissions(k.mp().join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let want = view(k.mp());
    drop(k);
    let l = Either::mount(false, &lower, b, "l", "");
    assert_eq!(view(l.mp()), want);
    std::fs::set_permissions(l.mp().join("g"), std::fs::Permissions::from_mode(0o600)).unwrap();
    drop(l);
    let g = std::fs::metadata(b.join("upper/g")).unwrap();
    assert!(g.blocks() * 512 >= 65536, "metacopy=off copies the data");
}
