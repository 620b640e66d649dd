//! Outside conformance suites on a writable mount: pjdfstest (POSIX behaviour, compared with
//! the same run on kernel overlayfs) and fsx (file data exerciser) on a file that starts in
//! a lower layer. Both tools come from the Rust package registry (`cargo install pjdfstest fsx`, done by
//! scripts/test); a missing tool fails the test rather than skipping it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::{require_root, test_user, Kernel, Layerfs};

fn tool(name: &str) -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([home.join(".cargo/bin")]);
    for dir in candidates {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} not found: run `cargo install --locked {name}` (scripts/test does)");
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Runs pjdfstest in `dir`; returns (passed, failed test names with pjdfstest's message).
fn pjdfstest(dir: &Path) -> (usize, BTreeMap<String, String>) {
    let out = Command::new(tool("pjdfstest"))
        .arg("-c")
        .arg(data("pjdfstest.toml"))
        .arg("-p")
        .arg(dir)
        .current_dir(dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut ok = 0;
    let mut failed = BTreeMap::new();
    let mut last_failed: Option<String> = None;
    for line in text.lines() {
        // pjdfstest prints a failure's panic message on the lines after it, tab-indented.
        if let (Some(name), Some(msg)) = (&last_failed, line.strip_prefix('\t')) {
            let m: &mut String = failed.get_mut(name).unwrap();
            m.push_str(msg);
            m.push(' ');
            continue;
        }
        last_failed = None;
        let mut words = line.split_whitespace();
        let (Some(name), Some(verdict), None) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        match verdict {
            "ok" => ok += 1,
            "FAILED" => {
                failed.insert(name.to_string(), String::new());
                last_failed = Some(name.to_string());
            }
            _ => {}
        }
    }
    assert!(
        ok > 200,
        "pjdfstest ran too few tests in {}:\n{text}",
        dir.display()
    );
    (ok, failed)
}

#[test]
fn pjdfstest_passes_what_kernel_overlayfs_passes() {
    if !require_root() {
        return;
    }
    test_user();
    let t = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = ["l", "ku", "kw", "lu", "lw"]
        .iter()
        .map(|d| t.path().join(d))
        .collect();
    for d in &dirs {
        fs::create_dir(d).unwrap();
    }
    let lowers = std::slice::from_ref(&dirs[0]);
    // Mountpoints of equal length: pjdfstest's long-path cases depend on it.
    let (kernel, kernel_failed) = {
        let k = Kernel::mount_rw_with(
            lowers,
            &dirs[1],
            &dirs[2],
            &t.path().join("k"),
            ",redirect_dir=on",
        );
        pjdfstest(&k.mp)
    };
    let (ours, ours_failed) = {
        let m = Layerfs::mount_rw(lowers, &dirs[3], &dirs[4], &t.path().join("m"));
        let r = pjdfstest(&m.mp);
        m.assert_no_errors_logged();
        r
    };
    eprintln!(
        "pjdfstest: layerfs {ours} passed, {} failed; kernel overlayfs {kernel} passed, {} failed",
        ours_failed.len(),
        kernel_failed.len()
    );
    let only_ours: Vec<_> = ours_failed
        .iter()
        .filter(|(name, _)| !kernel_failed.contains_key(*name))
        .collect();
    assert!(only_ours.is_empty(), "fail on layerfs only: {only_ours:?}");
    assert!(ours >= kernel, "layerfs passed {ours}, kernel {kernel}");
}

#[test]
fn fsx_100k_operations_on_a_file_from_a_lower_layer() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (l, u, w) = (t.path().join("l"), t.path().join("u"), t.path().join("w"));
    for d in [&l, &u, &w] {
        fs::create_dir(d).unwrap();
    }
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    fs::write(l.join("f"), &content).unwrap();
    fs::write(l.join("g"), &content).unwrap();
    let m = Layerfs::mount_rw(std::slice::from_ref(&l), &u, &w, &t.path().join("m"));
    let run = |file: &str, ops: &str| {
        let out = Command::new(tool("fsx"))
            .args(["-N", ops, "-S", "20261125", "-f"])
            .arg(data("fsx.toml"))
            .arg("-P")
            .arg(t.path())
            .arg(m.path(file))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("All operations completed A-OK!"),
            "fsx on {file}: {text}"
        );
    };
    run("f", "100000");
    assert_eq!(
        fs::read(l.join("f")).unwrap(),
        content,
        "the lower file is untouched"
    );
    assert!(u.join("f").is_file(), "fsx worked on the upper copy");
    m.assert_no_errors_logged();
}
