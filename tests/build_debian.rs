//! The seeds' story with `layerfs build` on the Debian base: `RUN dd ... 50M` and `RUN rm`
//! as two steps leave the 50 MB in the image as reclaimable waste (inspect says so); the
//! same commands joined in one RUN give an image 50 MB smaller with none; `df` counts the
//! base the images share once.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest as _, Sha256};

use testkit::debian::debian_base;
use testkit::podman::Podman;
use testkit::{require_root, BIN};

fn layerfs(store: &Path, args: &[&str]) -> String {
    let o = Command::new(BIN)
        .arg(args[0])
        .arg("--store")
        .arg(store)
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "layerfs {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

const MIB50: u64 = 50 << 20;

/// Every path below `root` (the root itself left out) with its kind and mode, owner, size
/// (not for directories), and the sha256 of its content or link target: times aside.
fn tree(root: &Path) -> BTreeMap<PathBuf, (u32, u32, u32, u64, String)> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, (u32, u32, u32, u64, String)>) {
        let p = root.join(rel);
        let md = std::fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let digest = if ft.is_file() {
            let mut h = Sha256::new();
            std::io::copy(&mut std::fs::File::open(&p).unwrap(), &mut h).unwrap();
            format!("{:x}", h.finalize())
        } else if ft.is_symlink() {
            std::fs::read_link(&p).unwrap().display().to_string()
        } else {
            String::new()
        };
        let size = if ft.is_dir() { 0 } else { md.size() };
        if !rel.as_os_str().is_empty() {
            out.insert(
                rel.to_path_buf(),
                (md.mode(), md.uid(), md.gid(), size, digest),
            );
        }
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                walk(root, &rel.join(e.unwrap().file_name()), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

#[test]
fn separate_run_steps_keep_50mb_of_waste_that_one_joined_run_does_not() {
    if !require_root() {
        return;
    }
    let base = debian_base();
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let lower = format!("lowerdir={}", base.display());
    layerfs(&store, &["import", &lower, "--name", "debian"]);
    let build = |name: &str, file: &str| {
        let ctx = t.path().join(name);
        std::fs::create_dir(&ctx).unwrap();
        std::fs::write(ctx.join("Containerfile"), file).unwrap();
        layerfs(&store, &["build", "-t", name, ctx.to_str().unwrap()])
    };
    build(
        "separate",
        "FROM debian\nRUN dd if=/dev/zero of=/50M.file bs=1M count=50\nRUN rm -rf /50M.file\n",
    );
    build(
        "joined",
        "FROM debian\nRUN dd if=/dev/zero of=/50M.file bs=1M count=50 && rm -rf /50M.file\n",
    );
    let images = json(&layerfs(&store, &["images", "--json"]));
    let image = |name: &str| {
        let full = format!("{name}:latest");
        images
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["names"].as_array().unwrap().iter().any(|n| n == &full))
            .unwrap()
            .clone()
    };
    // inspect of each image's layer stack (top first, as the store keeps them).
    let inspect = |name: &str| {
        let dirs: Vec<String> = image(name)["layers"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .map(|l| {
                let hex = l["diff_id"].as_str().unwrap().trim_start_matches("sha256:");
                store.join("layers").join(hex).display().to_string()
            })
            .collect();
        let o = format!("lowerdir={}", dirs.join(":"));
        json(&layerfs(&store, &["inspect", "-o", &o, "--json"]))
    };
    let (sep, joined) = (inspect("separate"), inspect("joined"));
    let waste = |r: &serde_json::Value| r["totals"]["reclaimable_bytes"].as_u64().unwrap();
    assert_eq!(waste(&sep), MIB50, "the 50 MB hidden by the rm layer");
    assert_eq!(sep["wasted"][0]["path"], "/50M.file");
    assert_eq!(waste(&joined), 0);
    let size = |r: &serde_json::Value| r["totals"]["image_bytes"].as_u64().unwrap();
    assert_eq!(size(&sep) - size(&joined), MIB50);
    // The history names the line that made each layer.
    let made: Vec<String> = image("separate")["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["empty_layer"] != true)
        .filter_map(|h| h["created_by"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        made,
        [
            "RUN dd if=/dev/zero of=/50M.file bs=1M count=50",
            "RUN rm -rf /50M.file"
        ]
    );
    // df: the base once, each image with its own layers as its unique size.
    let df = json(&layerfs(&store, &["df", "--json"]));
    let row = |name: &str| {
        let id = image(name)["id"].clone();
        df["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .unwrap()
            .clone()
    };
    let base_size = row("debian")["size"].as_u64().unwrap();
    assert!(base_size > 100_000_000, "{base_size}");
    for name in ["separate", "joined"] {
        assert_eq!(
            row(name)["shared_size"].as_u64().unwrap(),
            base_size,
            "{name}"
        );
    }
    let unique = |n: &str| row(n)["unique_size"].as_u64().unwrap();
    assert!(unique("separate") > MIB50 && unique("joined") < 1 << 20);
    assert_eq!(
        df["total"].as_u64().unwrap(),
        base_size + unique("separate") + unique("joined")
    );
    assert_eq!(
        df["without_sharing"].as_u64().unwrap(),
        3 * base_size + unique("separate") + unique("joined")
    );

    // podman build (kernel overlay driver, a throwaway store, the same base as a tar) of
    // the same Containerfile gives the same merged tree, file by file, times aside.
    let pod = t.path().join("podman");
    std::fs::create_dir(&pod).unwrap();
    let pod = Podman::new(&pod);
    let podman = |args: &[&str]| pod.podman(args);
    let tar = t.path().join("base.tar");
    let ok = Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "-C"])
        .arg(&base)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    podman(&["import", tar.to_str().unwrap(), "debian"]);
    let ctx = t.path().join("separate");
    podman(&[
        "build",
        "--pull=never",
        "--network",
        "host",
        "-t",
        "separate",
        ctx.to_str().unwrap(),
    ]);
    let merged = podman(&["image", "mount", "separate"]);
    let theirs = tree(Path::new(merged.trim()));
    podman(&["image", "unmount", "--all"]);
    let mp = t.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    layerfs(&store, &["mount", "separate", mp.to_str().unwrap()]);
    let ours = tree(&mp);
    let _ = Command::new(BIN).arg("umount").arg(&mp).status();
    let differ: Vec<_> = theirs
        .iter()
        .filter(|(p, m)| ours.get(*p) != Some(m))
        .map(|(p, _)| p)
        .chain(ours.keys().filter(|p| !theirs.contains_key(*p)))
        .take(10)
        .collect();
    let show: Vec<_> = differ
        .iter()
        .map(|p| (p, theirs.get(*p), ours.get(*p)))
        .collect();
    assert!(
        differ.is_empty(),
        "layerfs build and podman build differ (path, podman's, ours): {show:?}"
    );
    assert!(ours.len() > 5000, "{} paths", ours.len());
}
