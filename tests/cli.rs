//! The command line as a user meets it: a mistyped subcommand, a bare `layerfs`, the
//! fuse-overlayfs form `layerfs -o ... MNT` that podman uses, and `images`' table.

mod common;
mod imagekit;

use std::path::Path;

use common::{require_root, run_layerfs, Layerfs};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_mistyped_subcommand_gets_clap_s_error_and_a_suggestion() {
    let o = run_layerfs(&["inpsect", "x"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("unrecognized subcommand 'inpsect'"), "{err}");
    assert!(err.contains("'inspect'"), "no suggestion: {err}");
    assert!(!err.contains("bad mount options"), "{err}");
    // One word alone, too.
    let o = run_layerfs(&["imagse"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("'images'"), "{err}");
}

#[test]
fn bare_layerfs_prints_usage_and_exits_2() {
    let o = run_layerfs(&[]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("Usage:"), "{err}");
    assert!(err.contains("-o lowerdir="), "{err}");
    assert!(!err.contains("no mountpoint"), "{err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn mount_option_errors_are_still_mount_errors() {
    // Flags of the mount without -o: the mount's own error, not a subcommand error.
    let o = run_layerfs(&["-f", "/nonexistent-layerfs-i17b"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("lowerdir"), "{err}");
}

#[test]
fn the_fuse_overlayfs_form_still_mounts() {
    if !require_root("the_fuse_overlayfs_form_still_mounts") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (low, mp) = (t.path().join("low"), t.path().join("mnt"));
    std::fs::create_dir_all(&low).unwrap();
    std::fs::create_dir_all(&mp).unwrap();
    std::fs::write(low.join("f"), "x").unwrap();
    // Layerfs::mount calls `layerfs -o lowerdir=... MNT`, as podman does.
    let m = Layerfs::mount(std::slice::from_ref(&low), &mp);
    assert_eq!(std::fs::read_to_string(m.path("f")).unwrap(), "x");
}

/// An OCI layout `dir` with one layer holding `files` of the given sizes.
fn image(dir: &Path, files: &[(&str, usize)]) -> String {
    let src = dir.with_extension("src");
    std::fs::create_dir_all(&src).unwrap();
    for (name, size) in files {
        std::fs::write(src.join(name), vec![b'x'; *size]).unwrap();
    }
    let tar = imagekit::tar_dir(&src);
    imagekit::write_oci(dir, &[tar], &["ADD"], imagekit::Comp::None, "t");
    format!("oci:{}:t", dir.display())
}

#[test]
fn images_one_row_per_image_with_its_names_in_inspect_s_units() {
    if !require_root("images_one_row_per_image_with_its_names_in_inspect_s_units") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let store = store.to_str().unwrap();
    let long = "registry.example.invalid/a/very/long/repository/name/for/an/image:with-a-long-tag";
    let a = image(&t.path().join("a"), &[("big", 3 << 20)]);
    let b = image(&t.path().join("b"), &[("small", 1000)]);
    for (src, name) in [(&a, long), (&b, "short")] {
        let o = run_layerfs(&["import", src, "--name", name, "--store", store]);
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let o = run_layerfs(&["images", "--store", store]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "a header and one row per image:\n{out}");
    // Every row's columns start where the header's do, long names or not: the names come
    // last.
    let header = lines[0];
    for col in ["ID", "LAYERS", "SIZE", "NAMES"] {
        let end = header.find(col).unwrap() + col.len();
        let names = col == "NAMES";
        for row in &lines[1..] {
            // Left-aligned NAMES start under the header; the numbers end under theirs.
            let at = if names { end - col.len() } else { end - 1 };
            let b = row.as_bytes();
            assert!(
                b.len() > at && b[at] != b' ' && (!names || b[at - 1] == b' '),
                "column {col} moved in {row:?}:\n{out}"
            );
        }
    }
    let row_a = lines.iter().find(|l| l.contains(long)).expect("long name");
    assert!(
        row_a.contains(&format!("{a}")),
        "both names on one row: {row_a}"
    );
    // 3 MiB of file data: the tar is a little larger, shown in inspect's binary units.
    assert!(row_a.contains(" MiB"), "{row_a}");
    assert!(!out.contains(" MB") && !out.contains(" kB"), "{out}");
    let row_b = lines.iter().find(|l| l.contains("short:latest")).unwrap();
    assert!(row_b.contains(" KiB"), "{row_b}");
    // inspect says the same units.
    let o = run_layerfs(&["inspect", &a]);
    assert!(text(&o.stdout).contains("3.0 MiB"), "{}", text(&o.stdout));
    // --json keeps its meaning: one object per image with its names.
    let o = run_layerfs(&["images", "--json", "--store", store]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["names"].as_array().unwrap().iter())
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        names.contains(&long) && names.contains(&"short:latest"),
        "{names:?}"
    );
}
