//! Image sources: the same layers read from a stack of directories, OCI layouts (tar,
//! gzip, zstd), an OCI archive, a docker archive and podman's store give the same entries;
//! digests are checked while streaming.

mod common;
mod imagekit;

use std::collections::BTreeMap;
use std::path::Path;

use imagekit::{Comp, Podman};
use layerfs::image::source::{self, Image, Kind, OpenOptions};

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
