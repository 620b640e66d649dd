//! Xattr values holding newlines (and `=`, NUL) through layer tars, end to end: PAX
//! records are length-prefixed, so such a value must survive our writer, GNU tar's and
//! bsdtar's, and every reader (ours: import, inspect, commit and squash into a directory;
//! theirs: GNU tar and bsdtar extracting our commit).

use std::path::Path;
use std::process::Command;

use testkit::spec::setxattr;
use testkit::{ok, require_root, run_layerfs, tree};

const VALUE: &[u8] = b"line one\nline two\n13 path=evil\n=\0end\n";

/// A tree whose files carry newline xattrs, one under a name too long for a plain header.
fn source_tree(dir: &Path) -> String {
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(120));
    std::fs::create_dir_all(dir.join(&long).parent().unwrap()).unwrap();
    std::fs::write(dir.join("file"), "data").unwrap();
    std::fs::write(dir.join(&long), "long").unwrap();
    setxattr(&dir.join("file"), "user.nl", VALUE);
    setxattr(&dir.join("file"), "user.plain", b"plain");
    // A PAX keyword ends at its first '=': GNU tar and bsdtar escape it (and '%').
    setxattr(&dir.join("file"), "user.a=b 50%", b"eq");
    setxattr(&dir.join(&long), "user.nl", b"\n");
    long
}

/// The xattrs the test set, as found under `root`.
fn check(root: &Path, long: &str, what: &str) {
    let x = tree::xattrs(&root.join("file"));
    assert_eq!(
        x.get("user.nl").map(Vec::as_slice),
        Some(VALUE),
        "{what}: file"
    );
    assert_eq!(
        x.get("user.plain").map(Vec::as_slice),
        Some(&b"plain"[..]),
        "{what}"
    );
    // bsdtar writes such a name in a LIBARCHIVE.xattr record too, and reads only that one
    // unescaped: from our SCHILY.xattr record alone it keeps "user.a%3Db 50%25".
    if what != "bsdtar reading our tar" {
        assert_eq!(
            x.get("user.a=b 50%").map(Vec::as_slice),
            Some(&b"eq"[..]),
            "{what}: a name with = and %"
        );
    }
    assert_eq!(std::fs::read_to_string(root.join("file")).unwrap(), "data");
    let x = tree::xattrs(&root.join(long));
    assert_eq!(
        x.get("user.nl").map(Vec::as_slice),
        Some(&b"\n"[..]),
        "{what}: long"
    );
    assert_eq!(std::fs::read_to_string(root.join(long)).unwrap(), "long");
}

#[test]
fn newline_xattrs_round_trip_through_layer_tars() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    let long = source_tree(&src);
    let store = t.path().join("store");
    let store_s = store.to_str().unwrap();

    // Our writer: commit the tree (as an upper) to a tar; GNU tar reads it back.
    let ours = t.path().join("ours.tar");
    ok(
        run_layerfs(&[
            "commit",
            "-o",
            &format!("upperdir={}", src.display()),
            "--to",
            ours.to_str().unwrap(),
        ]),
        "commit --to tar",
    );
    // GNU tar and bsdtar (libarchive) read it.
    for (tool, args) in [
        ("tar", &["--xattrs", "--xattrs-include=*", "-xpf"][..]),
        ("bsdtar", &["--xattrs", "-xpf"][..]),
    ] {
        let x = t.path().join(format!("{tool}-x"));
        std::fs::create_dir(&x).unwrap();
        let o = Command::new(tool)
            .args(args)
            .arg(&ours)
            .arg("-C")
            .arg(&x)
            .output()
            .unwrap();
        ok(&o, &format!("{tool} -x of our tar"));
        check(&x, &long, &format!("{tool} reading our tar"));
    }

    // Their writers (POSIX format: xattrs as SCHILY.xattr records; bsdtar adds base64
    // LIBARCHIVE.xattr ones).
    let gnu = t.path().join("gnu.tar");
    let bsd = t.path().join("bsd.tar");
    for (tool, args, out) in [
        (
            "tar",
            &["--xattrs", "--xattrs-include=*", "--format=posix", "-cf"][..],
            &gnu,
        ),
        ("bsdtar", &["--xattrs", "--format=pax", "-cf"][..], &bsd),
    ] {
        let o = Command::new(tool)
            .args(args)
            .arg(out)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .output()
            .unwrap();
        ok(&o, &format!("{tool} -c"));
    }

    for (name, tar) in [("ours", &ours), ("gnu", &gnu), ("bsd", &bsd)] {
        let layout = t.path().join(format!("oci-{name}"));
        let bytes = std::fs::read(tar).unwrap();
        testkit::imagekit::write_oci(
            &layout,
            &[bytes],
            &["ADD"],
            testkit::imagekit::Comp::Gzip,
            "v1",
        );
        let source = format!("oci:{}:v1", layout.display());
        let inspect = ok(
            run_layerfs(&["inspect", "--json", "--no-cache", &source]),
            &format!("inspect {name}"),
        );
        let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        assert_eq!(v["layers"].as_array().unwrap().len(), 1, "{name}: {v}");

        ok(
            run_layerfs(&["import", &source, "--name", name, "--store", store_s]),
            &format!("import {name}"),
        );
        let layers: Vec<_> = std::fs::read_dir(store.join("layers"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("file").exists())
            .collect();
        for l in &layers {
            check(l, &long, &format!("imported {name}"));
        }

        // Commit of the imported layer into a directory (packs a tar, then reads it).
        let out = t.path().join(format!("dir-{name}"));
        ok(
            run_layerfs(&[
                "commit",
                "-o",
                &format!("upperdir={}", layers[0].display()),
                "--to",
                &format!("dir:{}", out.display()),
            ]),
            &format!("commit --to dir: {name}"),
        );
        check(&out, &long, &format!("commit --to dir: of {name}"));

        let sq = t.path().join(format!("squash-{name}"));
        ok(
            run_layerfs(&[
                "squash",
                name,
                "--to",
                &format!("dir:{}", sq.display()),
                "--store",
                store_s,
            ]),
            &format!("squash {name}"),
        );
        check(&sq, &long, &format!("squash --to dir: of {name}"));
    }
}

/// Overlay xattrs in a layer tar, escaped for a nested overlay or not, are dropped on
/// import, and so on a commit of a directory that carries them: a tar cannot bring a nested
/// overlay's whiteout (a mount would show it as a device 0:0) or opaque mark. Before, the
/// escaped ones (`trusted.overlay.overlay.*`) were kept.
#[test]
fn overlay_xattrs_escaped_or_not_never_pass_through_layer_tars() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/wh"), "").unwrap();
    setxattr(&src.join("d/wh"), "trusted.overlay.overlay.whiteout", b"y");
    setxattr(&src.join("d/wh"), "user.keep", b"k");
    setxattr(&src.join("d"), "trusted.overlay.overlay.opaque", b"x");
    setxattr(&src.join("d"), "trusted.overlay.opaque", b"y");
    let store = t.path().join("store");
    let tar = t.path().join("gnu.tar");
    let o = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--format=posix", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .output()
        .unwrap();
    ok(&o, "tar -c");
    let layout = t.path().join("oci");
    let bytes = std::fs::read(&tar).unwrap();
    testkit::imagekit::write_oci(
        &layout,
        &[bytes],
        &["ADD"],
        testkit::imagekit::Comp::Gzip,
        "v1",
    );
    let source = format!("oci:{}:v1", layout.display());
    ok(
        run_layerfs(&[
            "import",
            &source,
            "--name",
            "n",
            "--store",
            store.to_str().unwrap(),
        ]),
        "import",
    );
    let layer = std::fs::read_dir(store.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("d/wh").exists())
        .expect("the imported layer");
    let committed = t.path().join("committed");
    ok(
        run_layerfs(&[
            "commit",
            "-o",
            &format!("upperdir={}", src.display()),
            "--to",
            &format!("dir:{}", committed.display()),
        ]),
        "commit --to dir:",
    );
    // The committed directory is opaque: the upper's own mark (`trusted.overlay.opaque=y`),
    // packed as an OCI opaque marker and written back in the kernel's form.
    for (what, root, d) in [
        ("imported", &layer, &[][..]),
        ("committed", &committed, &["trusted.overlay.opaque"][..]),
    ] {
        let names =
            |rel: &str| -> Vec<String> { tree::xattrs(&root.join(rel)).into_keys().collect() };
        assert_eq!(names("d/wh"), ["user.keep"], "{what}: d/wh");
        assert_eq!(names("d"), d, "{what}: d");
    }
}
