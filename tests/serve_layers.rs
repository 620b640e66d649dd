//! `layerfs serve-layers`: podman's additional layer store served lazily from a real
//! registry (Debian's docker-registry on 127.0.0.1). An image layerfs writes as
//! zstd:chunked is pushed; the store's layout is checked as containers/storage reads it
//! (`info`'s fields, `blob`, unknown names), then podman pulls and runs it through the
//! store: the output is right, podman's layer is the store's (nothing downloaded), and the
//! registry sent a small part of the blob.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use testkit::podman::Podman;
use testkit::registry::Registry;
use testkit::{imagekit, mount_type, ok, require_root, tree, BIN};

/// A `serve-layers` mount, unmounted in Drop.
struct Served {
    dir: PathBuf,
    log: PathBuf,
}

impl Served {
    fn start(dir: &Path, store: &Path, home: &Path) -> Served {
        let log = dir.with_extension("log");
        let out = Command::new(BIN)
            .args(["serve-layers", "--tls-verify=false", "--store"])
            .arg(store)
            .arg(dir)
            // What a read fetches is counted: no background fill.
            .env("LAYERFS_LAZY_PREFETCH", "0")
            .env("LAYERFS_LOG_FILE", &log)
            .env("RUST_LOG", "info")
            .env("HOME", home)
            .env_remove("REGISTRY_AUTH_FILE")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        ok(&out, "layerfs serve-layers");
        // The daemon's parent exits once the mount is live.
        assert_eq!(mount_type(dir).as_deref(), Some("fuse.layerfs"));
        Served {
            dir: dir.to_path_buf(),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new(BIN).arg("umount").arg(&self.dir).status();
    }
}

fn skopeo_json(args: &[&str]) -> serde_json::Value {
    let o = Command::new("skopeo")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    serde_json::from_str(&ok(&o, &format!("skopeo {}", args.join(" ")))).unwrap()
}

#[test]
fn podman_pulls_and_runs_through_serve_layers_fetching_only_what_it_reads() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("layerfs-serve-layers-")
        .tempdir()
        .unwrap();
    let t = |p: &str| tmp.path().join(p);
    std::fs::create_dir(t("home")).unwrap();
    let reg = Registry::start();
    let h = reg.host();
    let root = t("rootfs");
    imagekit::lazy_rootfs(&root);
    // zstd:chunked written and pushed by layerfs.
    let layout = format!("oci:{}:v1", t("oci").display());
    let upper = format!("upperdir={}", root.display());
    let scratch = t("scratch").display().to_string();
    let layerfs = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("HOME", t("home"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    ok(
        &layerfs(&[
            "commit",
            "-o",
            &upper,
            "--to",
            &layout,
            "--compress",
            "zstd:chunked",
            "--store",
            &scratch,
        ]),
        "commit --compress zstd:chunked",
    );
    let name = format!("{h}/serve/zc:v1");
    let docker = format!("docker://{name}");
    ok(
        &layerfs(&[
            "push",
            &layout,
            &docker,
            "--tls-verify=false",
            "--store",
            &scratch,
        ]),
        "push",
    );
    let manifest = skopeo_json(&["inspect", "--raw", "--tls-verify=false", &docker]);
    let digest = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob_size = manifest["layers"][0]["size"].as_u64().unwrap();
    let config = skopeo_json(&["inspect", "--config", "--tls-verify=false", &docker]);
    let diff_id = config["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap()
        .to_string();

    let als = t("als");
    std::fs::create_dir(&als).unwrap();
    let served = Served::start(&als, &t("store"), &t("home"));
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);

    // The layout, as containers/storage reads it: stat of diff, info and blob; info decoded.
    let layer = als.join(b64(&name)).join(&digest);
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layer.join("info")).unwrap()).unwrap();
    assert_eq!(info["compressed-diff-digest"], digest.as_str(), "{info}");
    assert_eq!(info["compressed-size"], blob_size, "{info}");
    assert_eq!(info["diff-digest"], diff_id.as_str(), "{info}");
    assert_eq!(info["compression"], 4, "zstd: {info}");
    assert!(info["diff-size"].as_u64().unwrap() > 16 << 20, "{info}");
    assert_eq!(
        std::fs::metadata(layer.join("blob")).unwrap().len(),
        blob_size
    );
    assert!(std::fs::metadata(layer.join("diff")).unwrap().is_dir());
    // Names that are no layer: not found, as containers/storage takes any failure.
    let missing = |p: PathBuf| {
        let e = std::fs::metadata(&p).expect_err(&p.display().to_string());
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{}", p.display());
    };
    let zero = format!("sha256:{}", "0".repeat(64));
    missing(als.join(b64(&name)).join(&zero).join("diff"));
    missing(als.join("not base64!").join(&digest));
    missing(als.join(b64(&name)).join("not-a-digest"));
    missing(layer.join("use"));
    let toc = reg.bytes_sent(&digest);
    assert!(
        toc > 0 && toc < blob_size / 8,
        "the layer's TOC took {toc} of {blob_size} bytes"
    );

    std::fs::create_dir(t("podman")).unwrap();
    let p = Podman::with_storage_options(
        &t("podman"),
        &format!("additionallayerstores = [\"{}:ref\"]", als.display()),
    );
    let pulled = p
        .cmd("podman")
        .args(["pull", "-q", "--tls-verify=false", &name])
        .output()
        .unwrap();
    ok(&pulled, "podman pull");
    // `use` and the release (rmdir) answered as a counting store answers them.
    let warned = String::from_utf8_lossy(&pulled.stderr);
    assert!(
        !warned.contains("Additional Layer Store"),
        "podman warned: {warned}"
    );
    let out = p.podman(&["run", "--rm", &name, "cat", "/etc/motd"]);
    assert_eq!(out, "lazy\n");
    // podman's layer is the store's: its diff a link to it, no blob of it downloaded.
    let hex = diff_id.strip_prefix("sha256:").unwrap();
    let podman_layer = t("podman/graph/overlay").join(hex);
    assert_eq!(
        std::fs::read_link(podman_layer.join("diff")).unwrap(),
        layer.join("diff")
    );
    let podman_gets: Vec<_> = reg
        .log()
        .lines()
        .filter(|l| l.contains(&digest) && l.contains("containers/"))
        .map(str::to_string)
        .collect();
    assert!(
        podman_gets.is_empty(),
        "podman fetched the blob: {podman_gets:?}"
    );
    let sent = reg.bytes_sent(&digest);
    assert!(
        sent < blob_size / 3,
        "pull and run fetched {sent} bytes of a {blob_size}-byte blob"
    );
    eprintln!("blob {blob_size} bytes; the TOC took {toc}, pull and run {sent} in all");

    // Every entry and byte of the store's diff equals the source (reading it all fills it).
    let mut got = tree::snapshot(&layer.join("diff")).meta;
    let mut want = tree::snapshot(&root).meta;
    got.remove(Path::new(""));
    want.remove(Path::new(""));
    assert_eq!(got.len(), want.len());
    for (path, w) in &want {
        assert!(got.get(path) == Some(w), "{} differs", path.display());
    }
    // `blob` is the registry's blob, byte for byte (what podman reads to push the layer).
    assert!(
        std::fs::read(layer.join("blob")).unwrap()
            == std::fs::read(reg.blob_file(&digest)).unwrap()
    );

    // A layer in no seekable form is not served: podman downloads it as usual.
    let small = t("small");
    std::fs::create_dir_all(small.join("etc")).unwrap();
    std::fs::write(small.join("etc/motd"), "gzip\n").unwrap();
    let gz_layout = format!("oci:{}:gz", t("oci").display());
    let gz_upper = format!("upperdir={}", small.display());
    ok(
        &layerfs(&[
            "commit", "-o", &gz_upper, "--to", &gz_layout, "--store", &scratch,
        ]),
        "commit gzip",
    );
    let gz_name = format!("{h}/serve/gz:v1");
    let gz_docker = format!("docker://{gz_name}");
    ok(
        &layerfs(&[
            "push",
            &gz_layout,
            &gz_docker,
            "--tls-verify=false",
            "--store",
            &scratch,
        ]),
        "push gzip",
    );
    p.podman(&["pull", "-q", "--tls-verify=false", &gz_name]);
    let gz_digest = skopeo_json(&["inspect", "--raw", "--tls-verify=false", &gz_docker])["layers"]
        [0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    missing(als.join(b64(&gz_name)).join(&gz_digest).join("diff"));
    assert!(
        reg.log()
            .lines()
            .any(|l| l.contains(&gz_digest) && l.contains("containers/")),
        "podman downloaded the gzip layer"
    );
    drop(p);
    assert!(
        served.log().contains("lazy layer"),
        "the daemon logged: {}",
        served.log()
    );
}
