//! The command line as a user meets it: a mistyped subcommand, a bare `layerfs`, the
//! fuse-overlayfs form `layerfs -o ... MNT` that podman uses, and `images`' table.

use std::path::Path;

use testkit::{require_root, run_layerfs, Layerfs};

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
    if !require_root() {
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
    let tar = testkit::imagekit::tar_dir(&src);
    testkit::imagekit::write_oci(dir, &[tar], &["ADD"], testkit::imagekit::Comp::None, "t");
    format!("oci:{}:t", dir.display())
}

#[test]
fn images_one_row_per_image_with_its_names_in_inspect_s_units() {
    if !require_root() {
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
    assert!(row_a.contains(a.as_str()), "both names on one row: {row_a}");
    // 3 MiB of file data: the tar is a little larger, shown in inspect's binary units.
    assert!(row_a.contains(" MiB"), "{row_a}");
    assert!(!out.contains(" MB") && !out.contains(" kB"), "{out}");
    let row_b = lines.iter().find(|l| l.contains("short:latest")).unwrap();
    assert!(row_b.contains(" KiB"), "{row_b}");
    // --store before the subcommand, as podman takes --root.
    let o = run_layerfs(&["--store", store, "which", "short", "/small"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = run_layerfs(&[&format!("--store={store}"), "images"]);
    assert_eq!(text(&o.stdout), out);
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

/// `layerfs inspect ARGS` run in `dir` (where a `.dive-ci` may lie), caching nothing.
fn inspect_in(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(testkit::BIN)
        .arg("inspect")
        .arg("--no-cache")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn ci_rules_are_range_checked_read_from_dive_ci_and_exit_as_dive() {
    let t = tempfile::tempdir().unwrap();
    // A base, a layer adding 1 MiB, a layer deleting it: 1 MiB wasted, all of what the
    // layers above the base added (dive's "user" bytes).
    let l: Vec<_> = (0..3).map(|i| t.path().join(format!("l{i}"))).collect();
    for d in &l {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(l[0].join("keep"), vec![b'k'; 4096]).unwrap();
    std::fs::write(l[1].join("big"), vec![b'b'; 1 << 20]).unwrap();
    std::fs::write(l[2].join(".wh.big"), "").unwrap();
    let src = format!(
        "lowerdir={}:{}:{}",
        l[2].display(),
        l[1].display(),
        l[0].display()
    );
    let code = |o: &std::process::Output| o.status.code();
    let err = |o: &std::process::Output| text(&o.stderr);
    // Out of range: refused before reading anything, exit 2, as clap's usage errors.
    for bad in [
        &["--min-efficiency", "1.5"][..],
        &["--max-user-wasted", "-0.5"],
        &["--max-wasted-percent", "150"],
        &["--max-wasted-bytes", "lots"],
    ] {
        let mut args = vec!["--ci"];
        args.extend(bad);
        args.push(&src);
        let o = inspect_in(t.path(), &args);
        assert_eq!(code(&o), Some(2), "{bad:?}: {}", err(&o));
        assert!(o.stdout.is_empty(), "{bad:?}");
    }
    // dive's .dive-ci, read from the current directory.
    let dive_ci = t.path().join(".dive-ci");
    let write = |s: &str| std::fs::write(&dive_ci, s).unwrap();
    write(
        "rules:\n  # If the efficiency is measured below X%, mark as failed.\n  \
         lowestEfficiency: 0.9\n  highestWastedBytes: disabled\n  \
         highestUserWastedPercent: disabled\n",
    );
    let o = inspect_in(t.path(), &["--ci", &src]);
    assert_eq!(code(&o), Some(1), "{}", err(&o));
    assert!(err(&o).contains("min-efficiency"), "{}", err(&o));
    write("rules:\n  lowestEfficiency: disabled\n  highestUserWastedPercent: 0.5\n");
    let o = inspect_in(t.path(), &["--ci", &src]);
    assert_eq!(code(&o), Some(1), "{}", err(&o));
    assert!(err(&o).contains("highestUserWastedPercent"), "{}", err(&o));
    write("rules:\n  lowestEfficiency: disabled\n  highestWastedBytes: 2MB\n");
    let o = inspect_in(t.path(), &["--ci", &src]);
    assert_eq!(code(&o), Some(0), "{}", err(&o));
    // Flags win over the file.
    let o = inspect_in(t.path(), &["--ci", "--max-wasted-bytes", "1KiB", &src]);
    assert_eq!(code(&o), Some(1), "{}", err(&o));
    // A bad file is bad input: exit 2, one line naming the file and the key.
    for bad in [
        "rules:\n  lowestEfficiency: 2\n",
        "rules:\n  lowestEfficency: 0.9\n",
        "rules: [\n",
    ] {
        write(bad);
        let o = inspect_in(t.path(), &["--ci", &src]);
        assert_eq!(code(&o), Some(2), "{bad}: {}", err(&o));
        assert!(err(&o).contains(".dive-ci"), "{}", err(&o));
        assert_eq!(err(&o).trim().lines().count(), 1, "{}", err(&o));
        // Outside CI mode the file is not read (as dive).
        let o = inspect_in(t.path(), &[&src]);
        assert_eq!(code(&o), Some(0), "{bad}: {}", err(&o));
    }
    std::fs::remove_file(&dive_ci).unwrap();
    // An image that cannot be read stops the check: 2, not a rule's 1.
    let o = inspect_in(
        t.path(),
        &["--ci", "--min-efficiency", "0.5", "oci:/nonexistent-i17b"],
    );
    assert_eq!(code(&o), Some(2), "{}", err(&o));
}

/// squash's "bytes saved" is inspect's "reclaimable": file content, not tar bytes; one
/// layer squashed saves nothing (not "-512 bytes").
#[test]
fn squash_saves_what_inspect_calls_reclaimable() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (l0, l1) = (t.path().join("l0"), t.path().join("l1"));
    std::fs::create_dir_all(l0.join("d")).unwrap();
    std::fs::create_dir_all(&l1).unwrap();
    std::fs::write(l0.join("a"), vec![b'a'; 100_000]).unwrap();
    std::fs::write(l0.join("b"), vec![b'b'; 5_000]).unwrap();
    std::fs::hard_link(l0.join("b"), l0.join("h")).unwrap();
    std::fs::write(l0.join("d/f"), vec![b'f'; 3_000]).unwrap();
    std::fs::write(l0.join("small"), "x").unwrap();
    // Overwrite a, delete b (its content stays visible as h), delete d.
    std::fs::write(l1.join("a"), vec![b'A'; 200]).unwrap();
    std::fs::write(l1.join(".wh.b"), "").unwrap();
    std::fs::write(l1.join(".wh.d"), "").unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        let o = run_layerfs(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let stacks = [
        (
            format!("lowerdir={}:{}", l1.display(), l0.display()),
            103_000,
        ),
        (format!("lowerdir={}", l0.display()), 0),
    ];
    for (i, (stack, want)) in stacks.iter().enumerate() {
        let reclaimable = json(&["inspect", "--json", "--no-cache", stack])["totals"]
            ["reclaimable_bytes"]
            .as_u64()
            .unwrap();
        assert_eq!(reclaimable, *want, "{stack}");
        let out = t.path().join(format!("sq{i}.tar"));
        let v = json(&[
            "squash",
            stack,
            "--json",
            "--store",
            t.path().join("store").to_str().unwrap(),
            "--to",
            &format!("tar:{}", out.display()),
        ]);
        assert_eq!(
            v["bytes_saved"].as_i64(),
            Some(*want as i64),
            "{stack}: {v}"
        );
    }
}
