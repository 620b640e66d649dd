//! `layerfs verify` and `-o verify`: a byte flipped in a stored layer is named by `verify`
//! (human and JSON), and a `-o verify` mount of the store's layers answers EIO for that file
//! (never its bytes: not through passthrough, the cache, or a copy-up), logging the layer
//! and the path, while the layer's other files read as before.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use testkit::{ok, require_root, run_layerfs, sha, Layerfs};

fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// An OCI layout tagged `t` with these uncompressed layers (bottom first).
fn layout(dir: &Path, layers: &[Vec<u8>]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| -> String {
        let d = sha(b);
        std::fs::write(blobs.join(&d[7..]), b).unwrap();
        d
    };
    let descs: Vec<_> = layers
        .iter()
        .map(|l| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": put(l), "size": l.len()}))
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| sha(l)).collect::<Vec<_>>()}}))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(&config), "size": config.len()},
        "layers": descs}))
    .unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(&manifest),
        "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "t"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

#[test]
fn a_flipped_byte_is_reported_by_verify_and_refused_by_a_verify_mount() {
    if !require_root() {
        return;
    }
    let t = tempfile::Builder::new()
        .prefix("i24-verify")
        .tempdir()
        .unwrap();
    let base = layer(&[("etc/ok", b"fine\n"), ("etc/data", &[7u8; 70_000])]);
    let top = layer(&[("etc/top", b"top layer\n")]);
    let oci = t.path().join("oci");
    layout(&oci, &[base.clone(), top.clone()]);
    let store = t.path().join("store");
    let s = store.to_str().unwrap();
    let cache = t.path().join("cache");
    std::env::set_var("LAYERFS_CACHE_DIR", &cache);
    ok(
        run_layerfs(&["import", &format!("oci:{}:t", oci.display()), "--store", s]),
        "import",
    );
    let out = ok(
        run_layerfs(&["verify", "--store", s]),
        "verify of a sound store",
    );
    assert!(out.contains("2 layer(s) verified"), "{out}");
    ok(
        run_layerfs(&["verify", &format!("oci:{}:t", oci.display())]),
        "verify of the layout",
    );

    let layers = store.join("layers");
    let base_dir = layers.join(&sha(&base)[7..]);
    let top_dir = layers.join(&sha(&top)[7..]);
    let lowers: Vec<PathBuf> = vec![top_dir.clone(), base_dir.clone()];
    let mp = t.path().join("mnt");

    // A -o verify mount of the sound layers serves every file.
    {
        let m = Layerfs::mount_with(&lowers, &mp, &["-o", "verify"]);
        assert_eq!(
            std::fs::read(m.path("etc/data")).unwrap(),
            vec![7u8; 70_000]
        );
        m.assert_no_errors_logged();
    }

    // One byte flipped in place (same size).
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(base_dir.join("etc/data"))
        .unwrap();
    f.write_all_at(&[8], 65_536).unwrap();
    drop(f);

    let o = run_layerfs(&["verify", "--store", s]);
    let human = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{human}");
    assert!(human.contains("modified  /etc/data"), "{human}");
    assert!(human.contains("1 of 2 layer(s) FAILED"), "{human}");
    let o = run_layerfs(&["verify", "--store", s, "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let bad: Vec<_> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["status"] != "ok")
        .collect();
    assert_eq!(bad.len(), 1, "{v}");
    assert_eq!(bad[0]["layer"], sha(&base));
    assert_eq!(
        bad[0]["problems"],
        serde_json::json!([{"path": "/etc/data", "problem": "modified"}])
    );

    // Read-only mounts, with the kernel reading the lower file itself (passthrough) and
    // through the daemon (cached): EIO, never the bytes; the other files still read.
    for file_io in ["passthrough", "cached"] {
        let m = Layerfs::mount_with(&lowers, &mp, &["-o", "verify", "--file-io", file_io]);
        let e = std::fs::read(m.path("etc/data"))
            .map(|d| d.len())
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{file_io}: {e}");
        assert_eq!(std::fs::read(m.path("etc/ok")).unwrap(), b"fine\n");
        assert_eq!(std::fs::read(m.path("etc/top")).unwrap(), b"top layer\n");
        // The log names the layer and the path (its reader thread may lag the reply).
        let layer = base_dir.display().to_string();
        testkit::eventually(
            &format!("{file_io}: a log line naming {layer} and etc/data"),
            || {
                m.errors_logged()
                    .iter()
                    .any(|l| l.contains(&layer) && l.contains("etc/data"))
            },
        );
    }
    // A writable mount: no copy-up of the corrupt file, nothing in the upper.
    {
        let upper = t.path().join("upper");
        let work = t.path().join("work");
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let rw = format!(
            "verify,upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        let m = Layerfs::mount_with(&lowers, &mp, &["-o", &rw]);
        let e = std::fs::OpenOptions::new()
            .append(true)
            .open(m.path("etc/data"))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
        assert!(!upper.join("etc/data").exists());
        std::fs::write(m.path("etc/new"), b"n").unwrap();
        assert_eq!(std::fs::read(m.path("etc/ok")).unwrap(), b"fine\n");
    }
    // A layer without a hash list cannot be verified: the mount is refused, naming it.
    let plain = t.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let o = run_layerfs(&[
        "-o",
        &format!("verify,lowerdir={}", plain.display()),
        mp.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("no hash list"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // A file removed from a stored layer and one added: named missing and added.
    std::fs::remove_file(top_dir.join("etc/top")).unwrap();
    std::fs::write(top_dir.join("etc/extra"), b"x").unwrap();
    let o = run_layerfs(&["verify", "--store", s, "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let top_report = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["layer"] == sha(&top))
        .unwrap()
        .clone();
    assert_eq!(
        top_report["problems"],
        serde_json::json!([{"path": "/etc/extra", "problem": "added"},
                           {"path": "/etc/top", "problem": "missing"}])
    );
    // A directory without a hash list has nothing to be checked against: not a failure.
    let o = run_layerfs(&["verify", "-o", &format!("lowerdir={}", plain.display())]);
    let human = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && human.contains("unverifiable"),
        "{human}"
    );

    // A flipped byte in an OCI blob: its digest no longer matches.
    let blob = oci.join("blobs/sha256").join(&sha(&base)[7..]);
    let f = std::fs::OpenOptions::new().write(true).open(&blob).unwrap();
    f.write_all_at(b"X", 600).unwrap();
    drop(f);
    let o = run_layerfs(&["verify", &format!("oci:{}:t", oci.display())]);
    let human = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{human}");
    assert!(
        human.contains("ERROR") && human.contains("digest"),
        "{human}"
    );
}
