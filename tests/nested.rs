//! Overlays stacked on a layerfs mount, side by side with the same stack on the kernel's
//! overlay: the overlay's own xattrs pass through escaped one level (the kernel's "Nesting
//! overlayfs mounts"), and a kernel overlay uses a layerfs mount as its lower and upper.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::pair::{sh, write, Pair};
use testkit::tree::{assert_same, snapshot, Tree};
use testkit::{require_root, Kernel, Layerfs};

/// The escaped overlay xattrs (`*.overlay.overlay.*`) in a layer or an upper, as stored.
fn escaped_in(dir: &Path) -> String {
    let out = Command::new("getfattr")
        .args(["-R", "-d", "-m", r"^trusted\.overlay\.overlay\.", "."])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "getfattr in {}: {out:?}",
        dir.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `trusted.overlay.overlay.X` in a layer shows as `trusted.overlay.X`; setting or removing
/// `trusted.overlay.X` through the mount acts on `trusted.overlay.overlay.X` in the upper,
/// after a copy-up that keeps the escaped names; an escaped opaque mark hides nothing.
/// Before, every `trusted.overlay.*` name was hidden and refused (EOPNOTSUPP).
#[test]
fn overlay_xattrs_pass_through_escaped_one_level_as_the_kernel_nests_them() {
    if !require_root() {
        return;
    }
    let mut p = Pair::new(2, |i, d| {
        if i == 0 {
            write(d, "d/below", "b\n");
        } else {
            write(d, "f", "f\n");
            write(d, "d/top", "t\n");
            let at = |rel: &str| d.join(rel).display().to_string();
            for (name, value, rel) in [
                ("trusted.overlay.overlay.opaque", "y", "d"),
                ("trusted.overlay.overlay.redirect", "/x", "d"),
                ("trusted.overlay.overlay.metacopy", "", "f"),
                ("trusted.overlay.overlay.overlay.deep", "2", "f"),
                ("trusted.overlay.origin", "private", "f"),
                ("trusted.other", "1", "f"),
            ] {
                sh(&format!("setfattr -n {name} -v '{value}' {}", at(rel)));
            }
        }
    });
    p.steps(&[
        r#"cd "$M"; ls d; getfattr -d -m - d f"#,
        r#"cd "$M"; getfattr -n trusted.overlay.opaque d; getfattr -n trusted.overlay.overlay.deep f"#,
        r#"cd "$M"; getfattr -n trusted.overlay.origin f"#,
        r#"cd "$M"; getfattr -n trusted.overlay.overlay.overlay.deep f"#,
        r#"cd "$M"; setfattr -n trusted.overlay.whiteout -v y f; stat -c '%F %s' f"#,
        r#"cd "$M"; setfattr -n trusted.overlay.opaque -v y d; ls d"#,
        r#"cd "$M"; setfattr -n trusted.overlay.overlay.z -v 3 f; getfattr -d -m - f"#,
        r#"cd "$M"; setfattr -x trusted.overlay.metacopy f; getfattr -d -m - f"#,
        r#"cd "$M"; setfattr -x trusted.overlay.metacopy f"#,
        r#"cd "$M"; setfattr -n trusted.overlay. -v 1 f"#,
        r#"cd "$M"; getfattr -n trusted.overlay. f"#,
        // A device 0:0 made by a process (not of mode 0, as an overlay makes its whiteouts)
        // is refused as on the kernel.
        r#"cd "$M"; mknod -m 640 w c 0 0"#,
        r#"cd "$M"; touch new; setfattr -n trusted.overlay.redirect -v /f new; cat new; getfattr -d -m - new"#,
    ]);
    let [k, l] = [0, 1].map(|i| escaped_in(&p.sides[i].p("upper")));
    assert_eq!(
        k, l,
        "the uppers' escaped xattrs: kernel (left), layerfs (right)"
    );
    assert!(k.contains("trusted.overlay.overlay.whiteout"), "{k}");
    // layerfs only (the kernel's overlay refuses the device): a nested overlay's whiteout
    // stays one when that overlay marks its directory opaque.
    p.layerfs_step(
        r#"cd "$M"; mkdir nd; mknod -m 000 nd/w c 0 0; setfattr -n trusted.overlay.opaque -v y nd"#,
    );
    // Mounted again: nothing the kernel cached from before answers.
    p.unmount();
    p.mount();
    let out = p.layerfs_step(
        r#"cd "$M"; stat -c %F nd/w; getfattr -n trusted.overlay.opaque --only-values nd"#,
    );
    assert_eq!(out, "character special file\ny");
}

/// The steps a nested overlay takes: a new file, a lower file deleted (a whiteout in its
/// upper), a lower directory removed and made again (opaque), one renamed (a redirect), a
/// lower file written (copy-up) and one linked, an upper file made and removed, xattrs.
const NESTED_STEPS: &str = r#"set -e; cd "$O"
echo new > n; rm f; rm -r dd; mkdir dd; echo x > dd/y
mv d d2; echo more >> d2/g; ln keep/k keep/k2; setfattr -n user.u -v 1 keep/k
touch t; rm t; mkdir e; rmdir e; mv keep/k2 k3; rm keep/gone
ls -a . d2 dd keep; cat d2/g k3 keep/k; getfattr -d -m user keep/k"#;

/// The layers under the nested overlay: its lower `l` (and empty `u`, `w` for its upper).
fn nested_base(d: &Path) {
    write(d, "l/f", "f\n");
    write(d, "l/d/g", "g\n");
    write(d, "l/dd/h", "h\n");
    write(d, "l/keep/k", "k\n");
    write(d, "l/keep/gone", "z\n");
    for e in ["u", "w"] {
        fs::create_dir_all(d.join(e)).unwrap();
    }
}

/// Runs `NESTED_STEPS` on the overlay at `o`; its output.
fn nested_steps(o: &Path) -> String {
    run_in(o, NESTED_STEPS)
}

/// What an overlay's upper shows, with what cannot match across two stacks taken out: the
/// origin records (file handles; the kernel writes none over a lower on FUSE, whose
/// filesystem has a null uuid), the uuid's value (random), the link counts of whiteouts
/// (the kernel shares one inode among them where it can link); and apart, the directories
/// marked `trusted.overlay.opaque=x`: a layerfs mount shows that mark on a directory holding
/// nested whiteouts (the kernel's overlay ignores it on an upper), a plain upper has none.
fn upper_tree(dir: &Path) -> (Tree, Vec<PathBuf>) {
    let mut t = snapshot(dir);
    let mut marked = Vec::new();
    for (path, m) in t.meta.iter_mut() {
        m.xattrs.remove("trusted.overlay.origin");
        if let Some(v) = m.xattrs.get_mut("trusted.overlay.uuid") {
            v.clear();
        }
        if m.xattrs.get("trusted.overlay.opaque").map(Vec::as_slice) == Some(b"x") {
            m.xattrs.remove("trusted.overlay.opaque");
            marked.push(path.clone());
        }
        if m.mode & libc::S_IFMT == libc::S_IFCHR {
            m.nlink = None;
        }
    }
    t.ino.clear();
    (t, marked)
}

/// Kernel overlayfs with its lower and upper on a layerfs mount (`lowerdir=M/l,
/// upperdir=M/u, workdir=M/w`), against the same overlay with its lower on a kernel overlay
/// (the kernel takes no overlay as an upper: its upper is a plain directory there): the
/// same steps give the same outputs and merged trees; the upper as layerfs shows it is the
/// plain upper of the kernel's stack (whiteouts as devices 0:0, opaque and redirect marks);
/// the upper layerfs wrote, mounted by the kernel under the same nested overlay, reads the
/// same (escaped marks, whiteouts in the kernel's alternative form); and so does the stack
/// mounted again. Before, the mount failed: "upper fs does not support RENAME_WHITEOUT",
/// "failed to set xattr on upper", "upper fs missing required features".
#[test]
fn a_kernel_overlay_stacks_on_a_layerfs_mount_as_on_a_kernel_one() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let p = |rel: &str| t.path().join(rel);
    for side in ["k", "l"] {
        nested_base(&p(&format!("{side}/base")));
        for d in ["iu", "iw", "ou", "ow"] {
            fs::create_dir_all(p(&format!("{side}/{d}"))).unwrap();
        }
    }
    let outer = |lower: &Path, upper: &Path, work: &Path, mp: &Path| {
        Kernel::mount_rw_with(&[lower.to_path_buf()], upper, work, mp, ",redirect_dir=on")
    };
    let (kernel_out, kernel_tree, kernel_upper) = {
        let inner = Kernel::mount_rw(&[p("k/base")], &p("k/iu"), &p("k/iw"), &p("k/m"));
        let o = outer(&inner.mp.join("l"), &p("k/ou"), &p("k/ow"), &p("k/o"));
        let out = nested_steps(&o.mp);
        (out, snapshot(&o.mp), upper_tree(&p("k/ou")))
    };
    // Mounted again, then a step that makes entries over the nested overlay's whiteouts.
    let kernel_again = {
        let inner = Kernel::mount_rw(&[p("k/base")], &p("k/iu"), &p("k/iw"), &p("k/m"));
        let o = outer(&inner.mp.join("l"), &p("k/ou"), &p("k/ow"), &p("k/o"));
        let again = snapshot(&o.mp);
        let out = run_in(&o.mp, AGAIN_STEPS);
        (again, out, snapshot(&o.mp))
    };
    let mount_layerfs = || Layerfs::mount_rw(&[p("l/base")], &p("l/iu"), &p("l/iw"), &p("l/m"));
    {
        let inner = mount_layerfs();
        let o = outer(
            &inner.path("l"),
            &inner.path("u"),
            &inner.path("w"),
            &p("l/o"),
        );
        assert_eq!(nested_steps(&o.mp), kernel_out, "the steps' output");
        assert_same(&kernel_tree, &snapshot(&o.mp), "the nested overlay");
        drop(o);
        let (upper, marked) = upper_tree(&inner.path("u"));
        assert_same(&kernel_upper.0, &upper, "its upper");
        // The directories the nested overlay made whiteouts in (`rm f`, `rm keep/gone`)
        // show the mark on layerfs only.
        assert_eq!(
            (kernel_upper.1.as_slice(), marked.as_slice()),
            (&[][..], &[PathBuf::new(), PathBuf::from("keep")][..]),
            "directories marked opaque=x: kernel (left), layerfs (right)"
        );
        inner.assert_no_errors_logged();
    }
    {
        // The upper layerfs wrote, read by the kernel under the same nested overlay.
        let inner = Kernel::mount(&[p("l/iu"), p("l/base")], &p("l/k"));
        let lowers = [inner.mp.join("u"), inner.mp.join("l")];
        let o = Kernel::mount(&lowers, &p("l/ko"));
        // Inode numbers aside: a read-only stack shows the hard links of its layers as
        // one inode, which the writable one (the upper's copy of a lower file and its
        // new link) does not.
        let mut read = snapshot(&o.mp);
        read.ino.clear();
        let expected = Tree {
            meta: kernel_tree.meta.clone(),
            ..Tree::default()
        };
        assert_same(&expected, &read, "layerfs's upper read by the kernel");
    }
    // Mounted again with layerfs's upper stacked as its top lower (a build's next step):
    // the nested whiteouts are now in a lower layer, and making entries over them copies
    // them up.
    for d in ["iu2", "iw2"] {
        fs::create_dir_all(p(&format!("l/{d}"))).unwrap();
    }
    let lowers = [p("l/iu"), p("l/base")];
    let inner = Layerfs::mount_rw(&lowers, &p("l/iu2"), &p("l/iw2"), &p("l/m"));
    let o = outer(
        &inner.path("l"),
        &inner.path("u"),
        &inner.path("w"),
        &p("l/o"),
    );
    let (again, out, after) = kernel_again;
    assert_same(&again, &snapshot(&o.mp), "the nested overlay mounted again");
    assert_eq!(run_in(&o.mp, AGAIN_STEPS), out, "the steps' output, again");
    assert_same(&after, &snapshot(&o.mp), "the nested overlay, again");
    // What the nested overlay swapped out of its upper was cleaned up, on both (a copy
    // of a lower nested whiteout made as the union's own whiteout could not be removed).
    drop(o);
    let work = |w: &Path| snapshot(&w.join("work")).meta.len();
    assert_eq!(work(&p("l/iu2/w")), work(&p("k/ow")), "its workdir");
    inner.assert_no_errors_logged();
}

/// Entries made where the steps above left whiteouts (`f`, `d`, `keep/gone`) and one
/// deleted again.
const AGAIN_STEPS: &str = r#"set -e; cd "$O"
echo again > f; mkdir d; echo in > d/i; touch keep/gone; rm keep/gone; ls -a . d keep"#;

/// Runs bash `cmd` with `$O` = `o`; its output.
fn run_in(o: &Path, cmd: &str) -> String {
    let out = Command::new("bash")
        .args(["-c", cmd])
        .env("O", o)
        .output()
        .unwrap();
    assert!(out.status.success(), "`{cmd}` on {}: {out:?}", o.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A lower nested whiteout copied up (its owner changed through the mount) is a full
/// copy-up: its other xattrs kept, its parent's times put back, and its inode number the
/// same after a remount (the origin record). Before, it was made anew as a nested
/// whiteout: the xattr lost, the parent's mtime moved, the number changed.
#[test]
fn a_lower_nested_whiteout_copied_up_keeps_its_xattrs_number_and_parents_times() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let p = |rel: &str| t.path().join(rel);
    write(&p("l"), "s/wh", "");
    for (name, value, rel) in [
        ("trusted.overlay.overlay.whiteout", "y", "s/wh"),
        ("trusted.k", "v", "s/wh"),
        ("trusted.overlay.overlay.opaque", "x", "s"),
    ] {
        sh(&format!(
            "setfattr -n {name} -v {value} {}",
            p("l").join(rel).display()
        ));
    }
    sh(&format!("touch -d @1000000000 {}", p("l/s").display()));
    for d in ["u", "w"] {
        fs::create_dir_all(p(d)).unwrap();
    }
    let mount = || Layerfs::mount_rw(&[p("l")], &p("u"), &p("w"), &p("m"));
    let stat = r#"cd "$O"; stat -c '%F %i %u' s/wh; stat -c %Y s; getfattr -n trusted.k --only-values s/wh"#;
    let m = mount();
    let before = run_in(&m.mp, stat);
    run_in(&m.mp, r#"chown -h 1 "$O/s/wh""#);
    let after = run_in(&m.mp, stat);
    m.assert_no_errors_logged();
    drop(m);
    let again = run_in(&mount().mp, stat);
    let owned = before.replacen(" 0\n", " 1\n", 1);
    assert_eq!([&after, &again], [&owned, &owned], "before: {before}");
}
