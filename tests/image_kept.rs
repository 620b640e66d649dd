//! Layer digests survive import → export: a layer the store did not change leaves as the
//! very blob it came in as (kept beside the layer), a changed one is packed from its files
//! again (with a warning), and `rmi` removes what was kept. The blob here is written by GNU
//! tar and gzip, which layerfs's own packer would never reproduce byte for byte.

use std::path::Path;
use std::process::Command;

use testkit::{ok, require_root, run_layerfs, sha};

/// An OCI layout at `dir` (tag `t`) with one gzip layer made by GNU tar and gzip from
/// `tree`; returns (blob digest, diff_id).
fn gnu_layout(dir: &Path, tree: &Path) -> (String, String) {
    let tar = dir.with_extension("tar");
    ok(
        Command::new("tar")
            .arg("-C")
            .arg(tree)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .output()
            .unwrap(),
        "tar",
    );
    let plain = std::fs::read(&tar).unwrap();
    ok(
        Command::new("gzip").arg("-n9").arg(&tar).output().unwrap(),
        "gzip",
    );
    let blob = std::fs::read(tar.with_extension("tar.gz")).unwrap();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| -> String {
        let d = sha(b);
        std::fs::write(blobs.join(&d[7..]), b).unwrap();
        d
    };
    let (digest, diff_id) = (put(&blob), sha(&plain));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}}))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest, "size": blob.len()}]}))
    .unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": put(&manifest), "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "t"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    (digest, diff_id)
}

/// The (blob digest, diff_id) of the bottom layer of the image tagged `tag` in `layout`.
fn bottom_layer(layout: &Path, tag: &str) -> (String, String) {
    let read = |d: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(&d[7..])).unwrap())
            .unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    let manifest = read(m["digest"].as_str().unwrap());
    let config = read(manifest["config"]["digest"].as_str().unwrap());
    (
        manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string(),
        config["rootfs"]["diff_ids"][0]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

#[test]
fn unchanged_layers_leave_as_they_came_and_changed_ones_are_packed_again() {
    if !require_root() {
        return;
    }
    let t = tempfile::Builder::new()
        .prefix("layerfs-i17a-kept-")
        .tempdir()
        .unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/motd"), "base\n").unwrap();
    let f = std::fs::File::create(tree.join("etc/holes")).unwrap();
    f.set_len(1 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"x", 300 << 10).unwrap();
    let src = t.path().join("src");
    let (digest, diff_id) = gnu_layout(&src, &tree);
    let store = t.path().join("store");
    let store = store.to_str().unwrap();
    ok(
        run_layerfs(&[
            "import",
            &format!("oci:{}:t", src.display()),
            "--name",
            "base",
            "--store",
            store,
        ]),
        "import",
    );
    let upper = t.path().join("upper");
    std::fs::create_dir(&upper).unwrap();
    std::fs::write(upper.join("new"), "new\n").unwrap();
    let export = |to: &Path| -> std::process::Output {
        run_layerfs(&[
            "commit",
            "-o",
            &format!("upperdir={}", upper.display()),
            "--from",
            "base",
            "--to",
            &format!("oci:{}:v", to.display()),
            "--store",
            store,
        ])
    };

    // Unchanged: the source's blob, byte for byte, and its diff_id.
    let out = t.path().join("out");
    ok(export(&out), "export");
    assert_eq!(bottom_layer(&out, "v"), (digest.clone(), diff_id.clone()));
    assert_eq!(
        std::fs::read(out.join("blobs/sha256").join(&digest[7..])).unwrap(),
        std::fs::read(src.join("blobs/sha256").join(&digest[7..])).unwrap()
    );

    // Changed behind the store's back: packed from the files, with a warning.
    let layer = Path::new(store).join("layers").join(&diff_id[7..]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        layer.join("etc/motd"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let out2 = t.path().join("out2");
    let o = export(&out2);
    ok(&o, "export of a changed layer");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("changed since it was imported"), "{err}");
    let (d2, id2) = bottom_layer(&out2, "v");
    assert_ne!(d2, digest);
    assert_ne!(id2, diff_id);

    // rmi takes the kept blob with the layer, and one whose layer never landed (a crash
    // between the two renames of an import).
    let kept = Path::new(store).join("kept").join(&diff_id[7..]);
    assert!(kept.join("blob").exists());
    let orphan = Path::new(store).join("kept").join("ab".repeat(32));
    std::fs::create_dir(&orphan).unwrap();
    std::fs::write(orphan.join("blob"), "x").unwrap();
    ok(run_layerfs(&["rmi", "base", "--store", store]), "rmi");
    assert!(!kept.exists(), "kept blob left behind");
    assert!(!orphan.exists(), "orphan kept blob left behind");
    assert!(!layer.exists());
}
