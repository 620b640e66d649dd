//! The image tools against podman and skopeo, offline: an image podman made is imported
//! (as an OCI layout from `skopeo copy` and as a `podman save` docker-archive) and mounts
//! to the tree `podman image mount` shows; a change made in `layerfs run IMAGE` and
//! committed with `commit --to oci:` is accepted by `skopeo copy` into podman's store, and
//! `podman run` of it shows the change. An image in podman's own store, with a layer that
//! deletes, replaces a directory and adds, is imported from `containers-storage:` and mounts
//! to the same tree.

use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::podman::Podman;
use testkit::{ok, require_root, run_layerfs, tree, BIN};

/// A busybox root with the entry kinds a base image has.
fn rootfs(base: &Path) -> PathBuf {
    let root = base.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "root", "var/old"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox-static is installed (scripts/test installs it)");
    for app in ["sh", "cat", "ls", "rm", "mkdir", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
    }
    std::fs::write(root.join("etc/motd"), "base\n").unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(root.join("var/old/file"), "to be removed\n").unwrap();
    std::fs::write(root.join("var/old/other"), "also removed\n").unwrap();
    std::fs::hard_link(root.join("etc/motd"), root.join("etc/motd.link")).unwrap();
    root
}

/// [`rootfs`] as a tarball for `podman import`.
fn rootfs_tar(base: &Path) -> PathBuf {
    let root = rootfs(base);
    let tar = base.join("rootfs.tar");
    ok(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .output()
            .unwrap(),
        "tar",
    );
    tar
}

/// Snapshots compare trees up to the merged root's own metadata, which is the mount's.
fn same(expected: &tree::Tree, actual: &tree::Tree, what: &str) {
    let mut a = tree::Tree {
        meta: actual.meta.clone(),
        ino: actual.ino.clone(),
        phantoms: actual.phantoms.clone(),
    };
    a.meta
        .insert(PathBuf::new(), expected.meta[Path::new("")].clone());
    tree::assert_same(expected, &a, what);
}

#[test]
fn podman_images_in_and_out() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let base = t.path();
    let p = Podman::new(base);
    let store = base.join("store");
    let store = store.to_str().unwrap();
    let tar = rootfs_tar(base);
    p.podman(&[
        "import",
        "--change",
        "ENV IMAGE_VAR=from-image",
        "--change",
        "CMD [\"/bin/cat\", \"/etc/motd\"]",
        tar.to_str().unwrap(),
        "localhost/base:1",
    ]);

    // In: an OCI layout written by skopeo, imported and mounted by store name.
    let oci = base.join("oci");
    let oci_ref = format!("oci:{}:base", oci.display());
    p.skopeo(&["copy", "containers-storage:localhost/base:1", &oci_ref]);
    ok(
        run_layerfs(&["import", &oci_ref, "--name", "base", "--store", store]),
        "import oci",
    );
    let podman_base = p.image_tree("localhost/base:1");
    let mp = base.join("mnt");
    std::fs::create_dir(&mp).unwrap();
    ok(
        run_layerfs(&["mount", "base", mp.to_str().unwrap(), "--store", store]),
        "mount base",
    );
    let ours = tree::snapshot(&mp);
    ok(run_layerfs(&["umount", mp.to_str().unwrap()]), "umount");
    same(&podman_base, &ours, "oci import vs podman image mount");

    // The image config applies: CMD and ENV, with the flags overriding.
    let out = ok(
        run_layerfs(&["run", "--store", store, "base"]),
        "run base (its CMD)",
    );
    assert_eq!(out, "base\n");
    let out = ok(
        run_layerfs(&[
            "run",
            "--store",
            store,
            "-e",
            "X=1",
            "base",
            "--",
            "sh",
            "-c",
            "echo $IMAGE_VAR $X",
        ]),
        "run base with a command",
    );
    assert_eq!(out, "from-image 1\n");

    // Out: a change made in a run, committed on top of the base as an OCI image.
    let (upper, work) = (base.join("upper"), base.join("work"));
    std::fs::create_dir(&upper).unwrap();
    std::fs::create_dir(&work).unwrap();
    let rw = format!("upperdir={},workdir={}", upper.display(), work.display());
    ok(
        run_layerfs(&[
            "run", "--store", store, "-o", &rw, "base", "--", "sh", "-c",
            "echo changed > /etc/motd && rm -r /var/old && mkdir -p /var/old && echo new > /var/old/new",
        ]),
        "run to change",
    );
    // A file with holes (all-zero blocks are holes once imported or copied up): written
    // with its zeros, as containers/storage refuses GNU sparse members.
    let holes = upper.join("etc/holes");
    let f = std::fs::File::create(&holes).unwrap();
    f.set_len(1 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"in the middle", 512 << 10).unwrap();
    drop(f);
    let md5 = ok(
        Command::new("md5sum").arg(&holes).output().unwrap(),
        "md5sum",
    );
    let md5 = md5.split_whitespace().next().unwrap().to_string();
    // Into the layout the base came from: its layer blob is referenced, not written again.
    let out_ref = format!("oci:{}:v2", oci.display());
    let blobs_before = std::fs::read_dir(oci.join("blobs/sha256")).unwrap().count();
    let o = format!("upperdir={}", upper.display());
    let json = ok(
        run_layerfs(&[
            "commit",
            "-o",
            &o,
            "--from",
            "base",
            "--to",
            &out_ref,
            "--message",
            "motd changed",
            "--json",
            "--store",
            store,
        ]),
        "commit --to oci",
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let manifest_digest = v["manifest_digest"].as_str().unwrap();
    let blob = |d: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(oci.join("blobs/sha256").join(&d[7..])).unwrap())
            .unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    let base_digest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "base")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let (manifest, base_manifest) = (blob(manifest_digest), blob(&base_digest));
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 2);
    assert_eq!(
        manifest["layers"][0]["digest"],
        base_manifest["layers"][0]["digest"]
    );
    // New blobs: the layer, the config and the manifest only.
    assert_eq!(
        std::fs::read_dir(oci.join("blobs/sha256")).unwrap().count(),
        blobs_before + 3
    );
    p.skopeo(&["copy", &out_ref, "containers-storage:localhost/changed:v2"]);
    let out = p.podman(&["run", "--rm", "localhost/changed:v2"]);
    assert_eq!(out, "changed\n", "podman run shows the committed change");
    let out = p.podman(&["run", "--rm", "localhost/changed:v2", "ls", "/var/old"]);
    assert_eq!(
        out, "new\n",
        "the opaque directory hides the base's files in podman"
    );
    let out = p.podman(&[
        "run",
        "--rm",
        "localhost/changed:v2",
        "/bin/busybox",
        "md5sum",
        "/etc/holes",
    ]);
    assert_eq!(out.split_whitespace().next(), Some(md5.as_str()), "{out}");
    let history = p.podman(&[
        "history",
        "--format",
        "{{.Comment}}",
        "localhost/changed:v2",
    ]);
    assert!(history.contains("motd changed"), "history: {history}");

    // In again: `podman save` as a docker-archive, imported, mounts as podman shows it.
    let archive = base.join("changed.tar");
    p.podman(&[
        "save",
        "--format",
        "docker-archive",
        "-o",
        archive.to_str().unwrap(),
        "localhost/changed:v2",
    ]);
    ok(
        run_layerfs(&[
            "import",
            &format!("docker-archive:{}", archive.display()),
            "--name",
            "changed",
            "--store",
            store,
        ]),
        "import docker-archive",
    );
    let podman_changed = p.image_tree("localhost/changed:v2");
    ok(
        run_layerfs(&["mount", "changed", mp.to_str().unwrap(), "--store", store]),
        "mount changed",
    );
    let ours = tree::snapshot(&mp);
    ok(run_layerfs(&["umount", mp.to_str().unwrap()]), "umount");
    same(
        &podman_changed,
        &ours,
        "docker-archive import vs podman image mount",
    );
    assert_eq!(
        std::fs::read_to_string(upper.join("etc/motd")).unwrap(),
        "changed\n"
    );

    // squash: one layer, the same tree, fewer bytes than the two layers.
    let sq = base.join("squashed.tar");
    let json = ok(
        run_layerfs(&[
            "squash",
            "changed",
            "--to",
            sq.to_str().unwrap(),
            "--json",
            "--store",
            store,
        ]),
        "squash",
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["bytes_saved"].as_i64().unwrap() > 0, "{json}");
    let _ = BIN;
}

#[test]
fn containers_storage_import_mounts_as_podman_does() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let base = t.path();
    let p = Podman::new(base);
    let store = base.join("store");
    let store = store.to_str().unwrap();
    let tar = rootfs_tar(base);
    p.podman(&["import", tar.to_str().unwrap(), "localhost/base:1"]);
    // A second layer, made by podman itself: a file deleted (a whiteout), a directory
    // removed and made again (opaque), a file changed and one added.
    p.podman(&[
        "run",
        "--name",
        "changer",
        "localhost/base:1",
        "sh",
        "-c",
        "rm /etc/motd.link && rm -r /var/old && mkdir /var/old && echo new > /var/old/new \
         && echo changed > /etc/motd && echo added > /etc/added",
    ]);
    p.podman(&["commit", "changer", "localhost/two:1"]);
    p.podman(&["rm", "changer"]);

    let graph = base.join("graph");
    let json = ok(
        run_layerfs(&[
            "import",
            "containers-storage:localhost/two:1",
            "--storage-root",
            graph.to_str().unwrap(),
            "--name",
            "two",
            "--json",
            "--store",
            store,
        ]),
        "import containers-storage",
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["layers"].as_array().unwrap().len(), 2, "{json}");

    let podman_two = p.image_tree("localhost/two:1");
    let mp = base.join("mnt");
    std::fs::create_dir(&mp).unwrap();
    ok(
        run_layerfs(&["mount", "two", mp.to_str().unwrap(), "--store", store]),
        "mount two",
    );
    let ours = tree::snapshot(&mp);
    let added = std::fs::read_to_string(mp.join("etc/added"));
    let old: Result<Vec<_>, _> = std::fs::read_dir(mp.join("var/old"))
        .unwrap()
        .map(|e| e.map(|e| e.file_name()))
        .collect();
    let link_gone = !mp.join("etc/motd.link").exists();
    ok(run_layerfs(&["umount", mp.to_str().unwrap()]), "umount");
    same(
        &podman_two,
        &ours,
        "containers-storage import vs podman image mount",
    );
    // The comparison is only as good as podman's view: the change is there in ours.
    assert_eq!(added.unwrap(), "added\n");
    assert_eq!(old.unwrap(), vec![std::ffi::OsString::from("new")]);
    assert!(link_gone, "the deleted hard link is gone");
}
