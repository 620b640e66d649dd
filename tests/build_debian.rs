//! The seeds' story with `layerfs build` on the Debian base: `RUN dd ... 50M` and `RUN rm`
//! as two steps leave the 50 MB in the image as reclaimable waste (inspect says so); the
//! same commands joined in one RUN give an image 50 MB smaller with none; `df` counts the
//! base the images share once.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::debian::debian_base;
use common::{require_root, BIN};

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

#[test]
fn separate_run_steps_keep_50mb_of_waste_that_one_joined_run_does_not() {
    if !require_root("separate_run_steps_keep_50mb_of_waste_that_one_joined_run_does_not") {
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
}
