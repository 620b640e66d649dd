//! The image story end to end, as a new user walks it (issue 17's "Done when"), root and
//! rootless: a debootstrap'd Debian base as an OCI image → `layerfs import` → `apt-get
//! install hello` in a `layerfs run` of it → `commit` into the store → `inspect` →
//! `squash` → export (`commit --from` the base `--to oci:`) → `skopeo copy` into a podman
//! store and `podman run` of both results. The unchanged base layer leaves with the blob
//! digest and diff_id it came in with (rootless too, where the store keeps shifted ids on
//! disk).
//!
//! The two legs run at once (each has its own store and run; podman's private store is
//! shared and used one leg at a time): the time goes to apt-get and to unpacking, packing
//! and compressing the ~120 MB base, which the legs overlap.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use testkit::debian::{as_user, cache_dir, debian_oci, world_traversable};
use testkit::podman::Podman;
use testkit::{require_root, run_layerfs, show};

fn json(layout: &Path, digest: &str) -> serde_json::Value {
    let p = layout.join("blobs/sha256").join(&digest[7..]);
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

/// (blob digest, diff_id) of each layer of the image tagged `tag` in the OCI layout.
fn layers(layout: &Path, tag: &str) -> Vec<(String, String)> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("{tag} in {index}"));
    let manifest = json(layout, m["digest"].as_str().unwrap());
    let config = json(layout, manifest["config"]["digest"].as_str().unwrap());
    let blobs = manifest["layers"].as_array().unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(blobs.len(), diff_ids.len());
    blobs
        .iter()
        .zip(diff_ids)
        .map(|(b, d)| {
            (
                b["digest"].as_str().unwrap().to_string(),
                d.as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The first regular file under `dir` (a layer) with holes, relative, and its md5.
fn sparse_file(dir: &Path) -> Option<(String, String)> {
    use std::os::unix::fs::MetadataExt;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let m = e.metadata().ok()?;
        if m.is_dir() {
            if let Some((rel, md5)) = sparse_file(&e.path()) {
                let name = e.file_name().to_string_lossy().into_owned();
                return Some((format!("{name}/{rel}"), md5));
            }
        } else if m.is_file() && m.blocks() * 512 < m.size() && m.size() > 0 {
            let o = std::process::Command::new("md5sum")
                .arg(e.path())
                .output()
                .ok()?;
            let md5 = String::from_utf8_lossy(&o.stdout);
            let md5 = md5.split_whitespace().next()?.to_string();
            return Some((e.file_name().to_string_lossy().into_owned(), md5));
        }
    }
    None
}

/// One walk of the story, as root or as the test user.
struct Leg {
    name: &'static str,
    /// The user it runs as (None: root).
    user: Option<(u32, u32)>,
    dir: PathBuf,
}

impl Leg {
    fn new(name: &'static str, user: Option<(u32, u32)>) -> Leg {
        let dir = tempfile::Builder::new()
            .prefix(&format!("layerfs-story-{name}-"))
            .tempdir_in(cache_dir())
            .unwrap()
            .keep();
        world_traversable(&dir);
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        Leg { name, user, dir }
    }

    fn store(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// `layerfs ARGS --store STORE` as the leg's user; the output, checked.
    fn layerfs(&self, args: &[&str], what: &str) -> String {
        let store = self.store();
        // Right after the subcommand: what follows `--` is the container's command.
        let mut all = vec![args[0], "--store", store.to_str().unwrap()];
        all.extend(&args[1..]);
        let t = Instant::now();
        let o = match self.user {
            None => run_layerfs(&all),
            Some((uid, gid)) => as_user(uid, gid, &self.dir, &all),
        };
        eprintln!("[{}] {what}: {:.1} s", self.name, t.elapsed().as_secs_f64());
        assert!(o.status.success(), "[{}] {what}: {}", self.name, show(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn mkdir(&self, name: &str) -> PathBuf {
        let d = self.dir.join(name);
        std::fs::create_dir(&d).unwrap();
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(&d, Some(uid), Some(gid)).unwrap();
        }
        d
    }
}

impl Drop for Leg {
    fn drop(&mut self) {
        // Rootless layers hold subordinate ids: root removes them.
        let t = Instant::now();
        let _ = std::fs::remove_dir_all(&self.dir);
        eprintln!(
            "[{}] clean-up: {:.1} s",
            self.name,
            t.elapsed().as_secs_f64()
        );
    }
}

/// The story for one leg; `base` is the source image, `podman` the shared consumer.
fn story(leg: &Leg, base: &Path, podman: &Mutex<Podman>) {
    let source = layers(base, "bookworm");
    assert_eq!(source.len(), 1);
    let (src_blob, src_diff_id) = source[0].clone();

    let out = leg.layerfs(
        &[
            "import",
            &format!("oci:{}:bookworm", base.display()),
            "--name",
            "debian",
            "--json",
        ],
        "import",
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["layers"][0]["diff_id"], src_diff_id.as_str(), "{v}");

    let (upper, work) = (leg.mkdir("upper"), leg.mkdir("work"));
    let rw = format!("upperdir={},workdir={}", upper.display(), work.display());
    leg.layerfs(
        &[
            "run",
            "-o",
            &rw,
            "-e",
            "DEBIAN_FRONTEND=noninteractive",
            "debian",
            "--",
            "sh",
            "-c",
            // As a Dockerfile would: no package lists or .debs left in the layer.
            "apt-get update -q && apt-get install -y -q --no-install-recommends hello \
             && apt-get clean && rm -rf /var/lib/apt/lists/*",
        ],
        "run apt-get install hello",
    );
    let committed = format!("upperdir={}", upper.display());
    leg.layerfs(
        &[
            "commit",
            "-o",
            &committed,
            "--from",
            "debian",
            "--to",
            "store:debian-hello",
            "-m",
            "apt-get install hello",
        ],
        "commit into the store",
    );
    let out = leg.layerfs(&["run", "debian-hello", "--", "hello"], "run the new image");
    assert_eq!(out, "Hello, world!\n");

    let images: serde_json::Value =
        serde_json::from_str(&leg.layerfs(&["images", "--json"], "images")).unwrap();
    let hello = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i["names"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "debian-hello:latest")
        })
        .unwrap_or_else(|| panic!("debian-hello in {images}"));
    let ids: Vec<&str> = hello["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["diff_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], src_diff_id, "the new image is on the imported base");
    let layer_dir = |d: &str| leg.store().join("layers").join(&d[7..]);
    // inspect takes the store name, rootless too (it reads the layers as root of the
    // store owner's user namespace).
    let o = leg.layerfs(
        &["inspect", "debian-hello", "--json", "--no-cache"],
        "inspect",
    );
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v["layers"].as_array().unwrap().len(), 2);
    assert!(
        v["layers"][1]["added"].as_u64().unwrap() > 0,
        "hello's files: {v}"
    );

    // Export: the base and the new layer as an OCI image; the unchanged base leaves as the
    // blob it came in as.
    let out_dir = leg.mkdir("out");
    let oci = |tag: &str| format!("oci:{}:{tag}", out_dir.display());
    leg.layerfs(
        &[
            "commit",
            "-o",
            &committed,
            "--from",
            "debian",
            "--to",
            &oci("hello"),
            "--compress",
            "zstd",
        ],
        "export (commit --to oci:)",
    );
    let exported = layers(&out_dir, "hello");
    assert_eq!(exported.len(), 2);
    assert_eq!(
        exported[0],
        (src_blob.clone(), src_diff_id.clone()),
        "[{}] the unchanged base layer keeps its blob digest and diff_id",
        leg.name
    );
    assert_eq!(exported[1].1, ids[1], "the new layer is the stored one");

    leg.layerfs(
        // zstd: a fraction of gzip's time on the ~120 MB squashed layer.
        &[
            "squash",
            "debian-hello",
            "--to",
            &oci("squashed"),
            "--compress",
            "zstd",
        ],
        "squash",
    );
    assert_eq!(layers(&out_dir, "squashed").len(), 1);

    // The store keeps all-zero blocks as holes: a base file that has some went through
    // squash's packer.
    let (holed, md5) = sparse_file(&layer_dir(ids[0])).expect("a file with holes in the base");
    eprintln!("[{}] a file with holes: /{holed}", leg.name);

    // podman takes both (holes written as zeros, no GNU sparse member) and runs them.
    let p = podman.lock().unwrap();
    for tag in ["hello", "squashed"] {
        let name = format!("localhost/story-{}:{tag}", leg.name);
        let t = Instant::now();
        p.skopeo(&["copy", &oci(tag), &format!("containers-storage:{name}")]);
        let out = p.podman(&["run", "--rm", &name, "hello"]);
        eprintln!(
            "[{}] skopeo copy + podman run {tag}: {:.1} s",
            leg.name,
            t.elapsed().as_secs_f64()
        );
        assert_eq!(out, "Hello, world!\n", "podman run {name}");
    }
    let squashed = format!("localhost/story-{}:squashed", leg.name);
    let out = p.podman(&["run", "--rm", &squashed, "md5sum", &format!("/{holed}")]);
    assert_eq!(
        out.split_whitespace().next(),
        Some(md5.as_str()),
        "{holed}: {out}"
    );
    let podman_base = p.podman(&[
        "image",
        "inspect",
        "--format",
        "{{index .RootFS.Layers 0}}",
        &format!("localhost/story-{}:hello", leg.name),
    ]);
    assert_eq!(
        podman_base.trim(),
        src_diff_id,
        "podman sees the same base layer"
    );
}

#[test]
fn debian_import_run_commit_inspect_squash_export_podman_run() {
    if !require_root() {
        return;
    }
    let t0 = Instant::now();
    let _fuse = testkit::DevFuseOpen::new();
    let base = debian_oci();
    let scratch = tempfile::Builder::new()
        .prefix("layerfs-story-podman-")
        .tempdir()
        .unwrap();
    let podman = Mutex::new(Podman::new(scratch.path()));
    let user = testkit::test_user();
    // Each leg in its own thread, from set-up to clean-up (removing a store of ~300 MB
    // takes seconds under load: the legs overlap that too).
    std::thread::scope(|s| {
        let a = s.spawn(|| story(&Leg::new("root", None), &base, &podman));
        let b = s.spawn(|| story(&Leg::new("rootless", Some(user)), &base, &podman));
        let (a, b) = (a.join(), b.join());
        if let Err(e) = a.and(b) {
            std::panic::resume_unwind(e);
        }
    });
    eprintln!(
        "story, root and rootless: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
