//! Image fixtures for the layer-tool tests: layer tars written from directories (OCI
//! `.wh.` form, pax xattrs, hard links), OCI layouts (tar / gzip / zstd), OCI archives,
//! docker archives, and a podman store built with podman itself.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest as _, Sha256};

/// A root whose one large file nobody reads, written at `root`: a static busybox (`sh`,
/// `cat`), `/etc/motd` ("lazy\n"), and `/data/big`, 16 MiB that do not compress. For lazy
/// pulls: a run of `cat /etc/motd` needs a small part of its blob.
pub fn lazy_rootfs(root: &Path) {
    for d in ["bin", "etc", "data", "tmp", "proc", "dev", "sys"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox-static is installed (scripts/setup installs it)");
    for app in ["sh", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
    }
    std::fs::write(root.join("etc/motd"), "lazy\n").unwrap();
    std::fs::write(root.join("data/big"), noise(16 << 20, 1)).unwrap();
}

/// `len` bytes that do not compress, the same for the same `seed` (xorshift64 from
/// `seed` times the golden ratio, made odd).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A layer compression, as the fixtures write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

pub fn sha256(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let mut s = String::from("sha256:");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// An uncompressed tar of the directory `dir` (entries sorted, symlinks not followed,
/// hard links as tar links, xattrs as pax `SCHILY.xattr.` records, `./` prefix-free).
pub fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let mut seen: HashMap<(u64, u64), PathBuf> = HashMap::new();
    fn walk(
        b: &mut tar::Builder<Vec<u8>>,
        root: &Path,
        rel: &Path,
        seen: &mut HashMap<(u64, u64), PathBuf>,
    ) {
        let mut names: Vec<_> = std::fs::read_dir(root.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let r = rel.join(&n);
            let p = root.join(&r);
            let md = std::fs::symlink_metadata(&p).unwrap();
            let xattrs = crate::tree::xattrs(&p);
            let pax: Vec<(String, Vec<u8>)> = xattrs
                .into_iter()
                .filter(|(k, _)| !k.starts_with("trusted.overlay."))
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v))
                .collect();
            if !pax.is_empty() {
                b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                    .unwrap();
            }
            let mut h = tar::Header::new_gnu();
            h.set_metadata(&md);
            h.set_mtime(0);
            let ft = md.file_type();
            if ft.is_file() && md.nlink() > 1 {
                let key = (md.dev(), md.ino());
                if let Some(first) = seen.get(&key) {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, &r, first).unwrap();
                    continue;
                }
                seen.insert(key, r.clone());
            }
            if ft.is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                b.append_link(&mut h, &r, t).unwrap();
            } else if ft.is_file() {
                let data = std::fs::read(&p).unwrap();
                b.append_data(&mut h, &r, data.as_slice()).unwrap();
            } else if ft.is_dir() {
                b.append_data(&mut h, &r, std::io::empty()).unwrap();
                walk(b, root, &r, seen);
            } else {
                h.set_size(0);
                // set_metadata leaves a device's numbers 0 (a whiteout's): keep them.
                if ft.is_char_device() || ft.is_block_device() {
                    let rdev = md.rdev();
                    h.set_device_major(libc::major(rdev)).unwrap();
                    h.set_device_minor(libc::minor(rdev)).unwrap();
                }
                b.append_data(&mut h, &r, std::io::empty()).unwrap();
            }
        }
    }
    walk(&mut b, dir, Path::new(""), &mut seen);
    b.into_inner().unwrap()
}

pub fn compress(tar: &[u8], comp: Comp) -> Vec<u8> {
    match comp {
        Comp::None => tar.to_vec(),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Comp::Zstd => zstd::encode_all(tar, 1).unwrap(),
    }
}

fn media_type(comp: Comp) -> &'static str {
    match comp {
        Comp::None => "application/vnd.oci.image.layer.v1.tar",
        Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

/// The config JSON of an image of `tars` (uncompressed, bottom first) made by `history`.
pub fn config(tars: &[Vec<u8>], history: &[&str]) -> Vec<u8> {
    let diff_ids: Vec<String> = tars.iter().map(|t| sha256(t)).collect();
    let mut hist: Vec<serde_json::Value> = vec![serde_json::json!({
        "created_by": "/bin/sh -c #(nop) ENV A=1", "empty_layer": true
    })];
    hist.extend(
        history
            .iter()
            .map(|h| serde_json::json!({ "created_by": h })),
    );
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/" },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": hist,
    }))
    .unwrap()
}

fn put_blob(dir: &Path, data: &[u8]) -> String {
    let d = sha256(data);
    let p = dir.join("blobs/sha256").join(&d[7..]);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
    d
}

/// Writes an OCI layout of the layers `tars` (bottom first) under `dir`, named `reference`.
pub fn write_oci(dir: &Path, tars: &[Vec<u8>], history: &[&str], comp: Comp, reference: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let cfg = config(tars, history);
    let cfg_d = put_blob(dir, &cfg);
    let layers: Vec<serde_json::Value> = tars
        .iter()
        .map(|t| {
            let blob = compress(t, comp);
            let d = put_blob(dir, &blob);
            serde_json::json!({"mediaType": media_type(comp), "digest": d, "size": blob.len()})
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_d, "size": cfg.len()},
        "layers": layers,
    }))
    .unwrap();
    let md = put_blob(dir, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": reference},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A tar of the directory `dir` (an OCI layout) at `file`.
pub fn tar_layout(dir: &Path, file: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(file).unwrap());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).unwrap();
    b.finish().unwrap();
}

/// A legacy docker-archive (`docker save` before OCI layouts): `ID/layer.tar` members.
pub fn write_docker_archive(file: &Path, tars: &[Vec<u8>], history: &[&str], tag: &str) {
    let mut b = tar::Builder::new(std::fs::File::create(file).unwrap());
    let cfg = config(tars, history);
    let cfg_name = format!("{}.json", &sha256(&cfg)[7..]);
    let mut layer_names = Vec::new();
    for t in tars {
        let name = format!("{}/layer.tar", &sha256(t)[7..]);
        append(&mut b, &name, t);
        layer_names.push(name);
    }
    append(&mut b, &cfg_name, &cfg);
    let manifest =
        serde_json::json!([{ "Config": cfg_name, "RepoTags": [tag], "Layers": layer_names }]);
    append(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    b.finish().unwrap();
}

fn append(b: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data).unwrap();
}

/// A podman with its own store under `base` (graphroot, runroot, containers.conf).
pub struct Podman {
    pub root: PathBuf,
    run: PathBuf,
    conf: PathBuf,
}

impl Podman {
    pub fn new(base: &Path) -> Podman {
        let conf = base.join("containers.conf");
        std::fs::write(
            &conf,
            "[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        Podman {
            root: base.join("graph"),
            run: base.join("run"),
            conf,
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let o = Command::new("podman")
            .env("CONTAINERS_CONF", &self.conf)
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.run)
            .args(["--storage-driver", "overlay"])
            .args(args)
            .output()
            .expect("podman is installed (scripts/test installs it)");
        assert!(
            o.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // The store's layers may carry immutable-looking modes; podman removes its own.
        let _ = Command::new("podman")
            .env("CONTAINERS_CONF", &self.conf)
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.run)
            .args(["--storage-driver", "overlay", "system", "reset", "-f"])
            .output();
    }
}
