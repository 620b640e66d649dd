//! Seekable layers against the real tools, offline: layers layerfs writes with
//! `commit --compress zstd:chunked|estargz` are copied by skopeo 1.9 into podman's store and
//! run by podman, showing the committed tree; a zstd:chunked layer skopeo writes
//! (`--dest-compress-format zstd:chunked`) is read by layerfs's TOC reader, every file's
//! chunks equal to the source's bytes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use layerfs_image::lazy::{self, FileSource};
use testkit::podman::Podman;
use testkit::{ok, require_root, run_layerfs, tree};

/// A busybox root with a file over several chunks, a hard link, a symlink and an xattr.
fn rootfs(base: &Path) -> PathBuf {
    let root = base.join("rootfs");
    for d in ["bin", "etc", "data", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox-static is installed (scripts/test installs it)");
    for app in ["sh", "cat", "md5sum"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
    }
    std::fs::write(root.join("etc/motd"), "lazy\n").unwrap();
    let big: Vec<u8> = (0..(3 << 20) + 777u32)
        .map(|i| (i * 7 % 253) as u8)
        .collect();
    std::fs::write(root.join("data/big"), &big).unwrap();
    std::fs::hard_link(root.join("data/big"), root.join("data/big.link")).unwrap();
    std::fs::write(root.join("data/empty"), "").unwrap();
    let x = std::ffi::CString::new(root.join("etc/motd").to_str().unwrap()).unwrap();
    // SAFETY: NUL-terminated path and name; the value's pointer and length agree.
    let r = unsafe {
        libc::lsetxattr(
            x.as_ptr(),
            c"user.lazy".as_ptr(),
            b"yes".as_ptr().cast(),
            3,
            0,
        )
    };
    assert_eq!(r, 0, "user xattr on the test's temp dir");
    root
}

fn manifest_of(oci: &Path, tag: &str) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    serde_json::from_slice(&std::fs::read(oci.join("blobs/sha256").join(&m[7..])).unwrap()).unwrap()
}

fn layer_of(oci: &Path, manifest: &serde_json::Value) -> (PathBuf, HashMap<String, String>) {
    let l = &manifest["layers"][0];
    let blob = oci
        .join("blobs/sha256")
        .join(&l["digest"].as_str().unwrap()[7..]);
    let ann = l["annotations"]
        .as_object()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        })
        .unwrap_or_default();
    (blob, ann)
}

/// Every regular file of `root`, read back from the blob's chunks.
fn assert_blob_has_files(blob: &Path, ann: &HashMap<String, String>, root: &Path, what: &str) {
    let src = FileSource::open(blob).unwrap();
    let opened = lazy::open(&src, ann).unwrap_or_else(|e| panic!("{what}: {e:#}"));
    let mut files = 0;
    for e in &opened.toc.entries {
        if e.kind != lazy::toc::Kind::File {
            continue;
        }
        let mut got = Vec::new();
        for c in &e.chunks {
            got.extend(lazy::fetch_chunk(&src, opened.form, c).unwrap());
        }
        let path = root.join(String::from_utf8_lossy(&e.path).as_ref());
        assert_eq!(
            got,
            std::fs::read(&path).unwrap(),
            "{what}: {}",
            path.display()
        );
        files += 1;
    }
    assert!(files >= 4, "{what}: {files} files in the TOC");
}

#[test]
fn layers_we_write_are_run_by_podman_and_skopeos_are_read_by_us() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("lazy-tools")
        .tempdir()
        .unwrap();
    let base = tmp.path();
    let root = rootfs(base);
    let p = Podman::new(base);
    let oci = base.join("oci");
    let o = format!("upperdir={}", root.display());
    let want = tree::snapshot(&root);
    for (form, media) in [("zstd:chunked", "tar+zstd"), ("estargz", "tar+gzip")] {
        let tag = form.replace(':', "-");
        let dest = format!("oci:{}:{tag}", oci.display());
        ok(
            run_layerfs(&["commit", "-o", &o, "--to", &dest, "--compress", form]),
            "commit",
        );
        let m = manifest_of(&oci, &tag);
        let l = &m["layers"][0];
        assert!(
            l["mediaType"].as_str().unwrap().ends_with(media),
            "{form}: {l}"
        );
        let (blob, ann) = layer_of(&oci, &m);
        assert!(!ann.is_empty(), "{form}: the TOC's annotations");
        assert_blob_has_files(&blob, &ann, &root, form);
        // skopeo checks digests and diff_ids on the way in; podman shows the tree.
        let image = format!("localhost/lazy:{tag}");
        p.skopeo(&["copy", &dest, &format!("containers-storage:{image}")]);
        let out = p.podman(&["run", "--rm", &image, "cat", "/etc/motd"]);
        assert_eq!(out, "lazy\n", "{form}: podman run");
        let mut shown = p.image_tree(&image);
        // eStargz's own TOC member is a file of the layer tar for a tool that is not
        // eStargz-aware (podman 4.3 unpacks it); layerfs hides it in a lazy layer.
        if form == "estargz" {
            assert!(shown.meta.remove(Path::new("stargz.index.json")).is_some());
            shown.ino.remove(Path::new("stargz.index.json"));
        }
        // The root's own mode is podman's mount point's, not the layer's.
        shown
            .meta
            .insert(PathBuf::new(), want.meta[Path::new("")].clone());
        tree::assert_same(&want, &shown, &format!("{form}: podman image mount"));
    }
    // skopeo's own zstd:chunked, from the gzip layout layerfs wrote.
    let gz = format!("oci:{}:gzip", oci.display());
    ok(
        run_layerfs(&["commit", "-o", &o, "--to", &gz]),
        "commit gzip",
    );
    let sk = base.join("skopeo-oci");
    p.skopeo(&[
        "copy",
        "--dest-compress-format",
        "zstd:chunked",
        &gz,
        &format!("oci:{}:zc", sk.display()),
    ]);
    let m = manifest_of(&sk, "zc");
    let (blob, ann) = layer_of(&sk, &m);
    assert!(
        ann.contains_key("io.containers.zstd-chunked.manifest-position")
            || ann.contains_key("io.github.containers.zstd-chunked.manifest-position"),
        "skopeo wrote zstd:chunked: {ann:?}"
    );
    assert_blob_has_files(&blob, &ann, &root, "skopeo's zstd:chunked");
    // And without the annotations, by the footer skopeo wrote.
    assert_blob_has_files(
        &blob,
        &HashMap::new(),
        &root,
        "skopeo's zstd:chunked footer",
    );
}

#[test]
fn an_image_imported_lazily_runs_and_fetches_only_what_it_reads() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("lazy-import")
        .tempdir()
        .unwrap();
    let base = tmp.path();
    let root = rootfs(base);
    let oci = base.join("oci");
    let store = base.join("store");
    let store_s = store.to_str().unwrap();
    let o = format!("upperdir={}", root.display());
    for (form, tag) in [("zstd:chunked", "zc"), ("estargz", "esgz")] {
        let dest = format!("oci:{}:{tag}", oci.display());
        ok(
            run_layerfs(&["commit", "-o", &o, "--to", &dest, "--compress", form]),
            "commit",
        );
        let name = format!("lazy-{tag}");
        ok(
            run_layerfs(&[
                "import", "--lazy", "--store", store_s, "--name", &name, &dest,
            ]),
            "import --lazy",
        );
        let lazy_dirs = || std::fs::read_dir(store.join("lazy")).map_or(0, |d| d.count());
        assert_eq!(lazy_dirs(), 1, "{form}: one lazy layer in the store");
        let done = || {
            let d = std::fs::read_dir(store.join("lazy"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap();
            std::fs::read(d.path().join("done")).unwrap().len() / 4
        };
        assert_eq!(done(), 0);
        let out = std::process::Command::new(testkit::BIN)
            .env("LAYERFS_LAZY_PREFETCH", "0")
            .args(["run", "--store", store_s, &name, "--", "cat", "/etc/motd"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(ok(&out, "run"), "lazy\n", "{form}");
        // busybox (as cat) and the motd; never the 3 MiB file nobody read.
        assert_eq!(done(), 2, "{form}: files fetched by the run");
        let images: serde_json::Value = serde_json::from_str(&ok(
            run_layerfs(&["images", "--store", store_s, "--json"]),
            "images --json",
        ))
        .unwrap();
        let lazy = &images[0]["lazy_layers"];
        assert_eq!(lazy.as_array().map(Vec::len), Some(1), "{form}: {images}");
        // busybox and the motd are in; /data/big (two names, one file) is not.
        assert_eq!(lazy[0]["pending_files"], 1, "{form}: {lazy}");
        // A tool that reads the layer's files (inspect) fills it first, and the layer
        // becomes an ordinary one.
        ok(
            run_layerfs(&["inspect", "--store", store_s, &name]),
            "inspect",
        );
        assert_eq!(lazy_dirs(), 0, "{form}: filled by inspect");
        let out = run_layerfs(&["cat", "--store", store_s, &name, "/data/big"]);
        ok(&out, "cat");
        assert!(
            out.stdout == std::fs::read(root.join("data/big")).unwrap(),
            "{form}: cat shows the source's bytes"
        );
        ok(run_layerfs(&["rmi", "--store", store_s, &name]), "rmi");
        // Imported again lazily and removed while still lazy: the record goes too.
        ok(
            run_layerfs(&[
                "import", "--lazy", "--store", store_s, "--name", &name, &dest,
            ]),
            "import --lazy again",
        );
        assert_eq!(lazy_dirs(), 1);
        ok(
            run_layerfs(&["rmi", "--store", store_s, &name]),
            "rmi while lazy",
        );
        assert_eq!(lazy_dirs(), 0, "{form}: rmi removes the lazy record");
    }
}

#[test]
fn a_lazy_import_that_fails_later_leaves_no_lazy_layer() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("lazy-import-fail")
        .tempdir()
        .unwrap();
    let base = tmp.path();
    let root = rootfs(base);
    let oci = base.join("oci");
    let one = format!("oci:{}:one", oci.display());
    let o = format!("upperdir={}", root.display());
    ok(
        run_layerfs(&["commit", "-o", &o, "--to", &one, "--compress", "estargz"]),
        "commit",
    );
    // A second (gzip) layer on it, whose blob is then damaged: the import fails there,
    // after the first layer was made lazy.
    let u2 = base.join("upper2");
    std::fs::create_dir_all(u2.join("etc")).unwrap();
    std::fs::write(u2.join("etc/two"), "two\n").unwrap();
    let two = format!("oci:{}:two", oci.display());
    let o2 = format!("upperdir={}", u2.display());
    ok(
        run_layerfs(&["commit", "-o", &o2, "--from", &one, "--to", &two]),
        "commit a second layer",
    );
    let raw = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", &two])
        .output()
        .unwrap();
    let m: serde_json::Value = serde_json::from_str(&ok(&raw, "skopeo inspect")).unwrap();
    let top = m["layers"][1]["digest"].as_str().unwrap();
    let blob = oci
        .join("blobs/sha256")
        .join(top.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let store = base.join("store");
    let o = run_layerfs(&["import", "--lazy", "--store", store.to_str().unwrap(), &two]);
    assert!(!o.status.success(), "a damaged blob was imported");
    for sub in ["layers", "lazy", "images"] {
        let left: Vec<_> = std::fs::read_dir(store.join(sub))
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "{sub}/ holds {left:?} after a failed import"
        );
    }
}
