//! Image sources: the same layers read from a stack of directories, OCI layouts (tar,
//! gzip, zstd), an OCI archive, a docker archive and podman's store give the same entries;
//! digests are checked while streaming.

mod common;
mod imagekit;

use std::collections::BTreeMap;
use std::path::Path;

use imagekit::{Comp, Podman};
use layerfs_image::source::{self, Image, Kind, OpenOptions};

/// What a layer holds, comparable across sources: path → (kind, mode, owner, size, link,
/// content hash, xattrs). Times are left out (archives zero them).
type Seen = BTreeMap<String, String>;

fn entries(img: &Image) -> Vec<Seen> {
    img.layers
        .iter()
        .map(|l| {
            let mut seen = Seen::new();
            l.walk(true, &mut |e, content| {
                let mut data = Vec::new();
                if let Some(r) = content {
                    r.read_to_end(&mut data)?;
                }
                // Opaque directories: a mark on the directory (xattr) or a marker entry (OCI
                // `.wh..wh..opq`); both mean the same.
                if e.opaque || e.kind == Kind::OpaqueMark {
                    seen.insert(format!("{}#opaque", e.path), String::new());
                }
                if e.path.is_root() || e.kind == Kind::OpaqueMark {
                    return Ok(());
                }
                let xattrs: Vec<String> = e
                    .xattrs
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{}={}",
                            String::from_utf8_lossy(k),
                            String::from_utf8_lossy(v)
                        )
                    })
                    .collect();
                let link = e
                    .link
                    .as_ref()
                    .map(|l| String::from_utf8_lossy(l).into_owned());
                let v = format!(
                    "{:?} {:o} {}:{} {} {:?} {} {:?}",
                    e.kind,
                    e.mode,
                    e.uid,
                    e.gid,
                    e.size,
                    link,
                    blake3::hash(&data),
                    xattrs,
                );
                seen.insert(e.path.to_string(), v);
                Ok(())
            })
            .unwrap();
            seen
        })
        .collect()
}

/// Two layers in OCI form: files, a hard link, a symlink, an xattr, a whiteout, an opaque dir.
fn layer_dirs(base: &Path) -> Vec<std::path::PathBuf> {
    let l0 = base.join("l0");
    let l1 = base.join("l1");
    std::fs::create_dir_all(l0.join("etc/sub")).unwrap();
    std::fs::create_dir_all(l0.join("opq")).unwrap();
    std::fs::write(l0.join("etc/a"), b"alpha").unwrap();
    std::fs::write(l0.join("etc/sub/b"), vec![7u8; 10000]).unwrap();
    std::fs::write(l0.join("opq/gone"), b"x").unwrap();
    std::fs::hard_link(l0.join("etc/a"), l0.join("etc/a2")).unwrap();
    std::os::unix::fs::symlink("../etc/a", l0.join("etc/ln")).unwrap();
    std::fs::create_dir_all(l1.join("etc")).unwrap();
    std::fs::create_dir_all(l1.join("opq")).unwrap();
    std::fs::write(l1.join("etc/.wh.a"), b"").unwrap();
    std::fs::write(l1.join("opq/.wh..wh..opq"), b"").unwrap();
    std::fs::write(l1.join("opq/new"), b"new").unwrap();
    std::fs::write(l1.join("etc/sub/b").with_file_name("b"), b"").ok();
    xattr(&l1.join("opq/new"), "user.k", b"v");
    vec![l0, l1]
}

fn xattr(p: &Path, k: &str, v: &[u8]) {
    let o = std::process::Command::new("setfattr")
        .args(["-n", k, "-v", &String::from_utf8_lossy(v)])
        .arg(p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn open(s: &str) -> Image {
    source::open(s, &OpenOptions::default()).unwrap_or_else(|e| panic!("{s}: {e:#}"))
}

#[test]
fn every_source_kind_yields_the_same_layers() {
    let t = tempfile::tempdir().unwrap();
    let dirs = layer_dirs(t.path());
    let tars: Vec<Vec<u8>> = dirs.iter().map(|d| imagekit::tar_dir(d)).collect();
    let history = ["RUN base", "RUN change"];
    let stack = open(&format!(
        "lowerdir={}:{}",
        dirs[1].display(),
        dirs[0].display()
    ));
    let want = entries(&stack);
    assert!(want[1]["/etc/a"].starts_with("Whiteout"), "{want:?}");
    assert!(want[1].contains_key("/opq#opaque"), "{want:?}");
    assert!(want[0]["/etc/a2"].starts_with("HardLink"), "{want:?}");
    assert!(want[1]["/opq/new"].contains("user.k"), "{want:?}");
    for comp in [Comp::None, Comp::Gzip, Comp::Zstd] {
        let dir = t.path().join(format!("oci-{comp:?}"));
        imagekit::write_oci(&dir, &tars, &history, comp, "v1");
        let img = open(&format!("oci:{}:v1", dir.display()));
        assert_eq!(entries(&img), want, "oci {comp:?}");
        assert_eq!(img.layers[1].created_by.as_deref(), Some("RUN change"));
        let cfg = img.config.as_ref().unwrap();
        assert_eq!(cfg.cmd, vec!["/bin/sh"]);
        assert_eq!(cfg.history.len(), 3);
        assert!(cfg.history[0].empty_layer);
        if comp == Comp::Zstd {
            let file = t.path().join("oci.tar");
            imagekit::tar_layout(&dir, &file);
            let img = open(&format!("oci-archive:{}", file.display()));
            assert_eq!(entries(&img), want, "oci-archive");
        }
    }
    let da = t.path().join("docker.tar");
    imagekit::write_docker_archive(&da, &tars, &history, "localhost/fixture:latest");
    let img = open(&format!("docker-archive:{}:fixture", da.display()));
    assert_eq!(entries(&img), want, "docker-archive");
    assert_eq!(img.layers[0].created_by.as_deref(), Some("RUN base"));
}

#[test]
fn a_corrupt_blob_is_a_digest_error() {
    let t = tempfile::tempdir().unwrap();
    let dirs = layer_dirs(t.path());
    let tars: Vec<Vec<u8>> = dirs.iter().map(|d| imagekit::tar_dir(d)).collect();
    let dir = t.path().join("oci");
    imagekit::write_oci(&dir, &tars, &["a", "b"], Comp::None, "v1");
    let img = open(&format!("oci:{}", dir.display()));
    let blob = match &img.layers[0].location {
        source::Location::Blob(b) => b.path.clone(),
        other => panic!("{other:?}"),
    };
    // Flip one byte of file content (not a header: the tar still parses).
    let mut data = std::fs::read(&blob).unwrap();
    let at = data.windows(5).position(|w| w == b"alpha").unwrap();
    data[at] = b'A';
    std::fs::write(&blob, &data).unwrap();
    let err = img.layers[0].walk(true, &mut |_, _| Ok(())).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("digest mismatch"), "{msg}");
    assert!(msg.contains(img.layers[0].id.as_str()), "{msg}");
}

#[test]
fn podman_store_and_its_saves_match_the_layers() {
    if !common::require_root("podman_store_and_its_saves_match_the_layers") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dirs = layer_dirs(t.path());
    let tars: Vec<Vec<u8>> = dirs.iter().map(|d| imagekit::tar_dir(d)).collect();
    let want = entries(&open(&format!(
        "lowerdir={}:{}",
        dirs[1].display(),
        dirs[0].display()
    )));
    let da = t.path().join("in.tar");
    imagekit::write_docker_archive(
        &da,
        &tars,
        &["RUN base", "RUN change"],
        "localhost/fixture:latest",
    );
    let podman = Podman::new(t.path());
    podman.run(&["load", "-q", "-i", da.to_str().unwrap()]);
    let opts = OpenOptions {
        storage_root: Some(podman.root.clone()),
        ..Default::default()
    };
    let img = source::open("containers-storage:fixture", &opts).unwrap();
    assert_eq!(img.layers.len(), 2);
    assert_eq!(entries(&img), want, "containers-storage");
    assert_eq!(img.layers[1].created_by.as_deref(), Some("RUN change"));
    for (format, transport) in [
        ("docker-archive", "docker-archive"),
        ("oci-archive", "oci-archive"),
    ] {
        let out = t.path().join(format!("{format}.tar"));
        podman.run(&[
            "save",
            "-q",
            "--format",
            format,
            "-o",
            out.to_str().unwrap(),
            "fixture",
        ]);
        let img = open(&format!("{transport}:{}", out.display()));
        assert_eq!(entries(&img), want, "podman save --format {format}");
    }
}

/// A multi-platform layout: index.json names an index whose manifests are per platform; the
/// one for this machine is read. A REF that names nothing lists the names there are.
#[test]
fn nested_indexes_pick_this_platform_and_refs_are_checked() {
    let t = tempfile::tempdir().unwrap();
    let dirs = layer_dirs(t.path());
    let tars: Vec<Vec<u8>> = dirs.iter().map(|d| imagekit::tar_dir(d)).collect();
    let dir = t.path().join("oci");
    imagekit::write_oci(&dir, &tars, &["a", "b"], Comp::Gzip, "v1");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"][0].clone();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    // The other platform's manifest does not exist: reading it would fail.
    let missing = format!("sha256:{}", "0".repeat(64));
    let inner = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": missing, "size": 10,
             "platform": {"os": "linux", "architecture": "s390x"}},
            {"mediaType": manifest["mediaType"], "digest": manifest["digest"], "size": manifest["size"],
             "platform": {"os": "linux", "architecture": arch}},
        ],
    }))
    .unwrap();
    let d = imagekit::sha256(&inner);
    std::fs::write(dir.join("blobs/sha256").join(&d[7..]), &inner).unwrap();
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": inner.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    let img = open(&format!("oci:{}:multi", dir.display()));
    assert_eq!(img.layers.len(), 2);
    let err = source::open(
        &format!("oci:{}:nope", dir.display()),
        &OpenOptions::default(),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("nope") && msg.contains("multi"), "{msg}");
}

fn tool(args: &[&str], cache: &Path) -> std::process::Output {
    std::process::Command::new(common::BIN)
        .args(args)
        .env("LAYERFS_CACHE_DIR", cache)
        .output()
        .unwrap()
}

/// `which`, `cat` and `diff` on a tar image: the provider and what it shadows, a file as one
/// layer has it, and the changes between two images.
#[test]
fn which_cat_and_diff_read_tar_layers() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let dirs = layer_dirs(t.path());
    std::fs::create_dir_all(dirs[1].join("etc/sub")).unwrap();
    std::fs::write(dirs[1].join("etc/sub/b"), b"replaced").unwrap();
    let tars: Vec<Vec<u8>> = dirs.iter().map(|d| imagekit::tar_dir(d)).collect();
    let (old, new) = (t.path().join("old"), t.path().join("new"));
    imagekit::write_oci(&old, &tars[..1], &["base"], Comp::Gzip, "v1");
    imagekit::write_oci(&new, &tars, &["base", "change"], Comp::Zstd, "v1");
    let (old, new) = (
        format!("oci:{}", old.display()),
        format!("oci:{}", new.display()),
    );

    let o = tool(&["which", "--json", &new, "/etc/sub/b"], &cache);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let w: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(w["provided_by"]["layer"], 1);
    assert_eq!(w["provided_by"]["size"], 8);
    assert_eq!(w["shadowed"][0]["layer"], 0);
    assert_eq!(w["shadowed"][0]["size"], 10000);
    let o = tool(&["which", "--json", &new, "/etc/a"], &cache);
    let w: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(w["provided_by"].is_null());
    assert_eq!(w["hidden_by"]["layer"], 1);
    assert_eq!(w["hidden_by"]["how"], "whiteout");

    let o = tool(&["cat", &new, "/etc/sub/b"], &cache);
    assert_eq!(o.stdout, b"replaced");
    let o = tool(&["cat", "--layer", "0", &new, "/etc/sub/b"], &cache);
    assert_eq!(o.stdout, vec![7u8; 10000]);
    // A hard link's second name reads the file it names.
    let o = tool(&["cat", "--layer", "0", &new, "/etc/a2"], &cache);
    assert_eq!(o.stdout, b"alpha");
    let o = tool(&["cat", &new, "/etc/a"], &cache);
    assert_eq!(o.status.code(), Some(1));

    let o = tool(&["diff", "--json", &old, &new], &cache);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let got: Vec<String> = d
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {} {}",
                c["change"].as_str().unwrap(),
                c["path"].as_str().unwrap(),
                c["content_changed"]
            )
        })
        .collect();
    assert!(got.contains(&"D /etc/a null".to_string()), "{got:?}");
    assert!(got.contains(&"C /etc/sub/b true".to_string()), "{got:?}");
    assert!(got.contains(&"A /opq/new null".to_string()), "{got:?}");
    assert!(got.contains(&"D /opq/gone null".to_string()), "{got:?}");
}
