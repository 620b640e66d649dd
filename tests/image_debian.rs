//! The seeds' flow, rootless, end to end: a Debian base image imported into a user's store,
//! `apt-get install hello` in a `layerfs run` of it, that run's upper committed as a new
//! image of the store, `hello` run from the new image, and the two images sharing the
//! base layer's directory on disk.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use testkit::debian::{as_user, cache_dir, debian_oci, world_traversable};
use testkit::{require_root, run_layerfs, show};

#[test]
fn rootless_import_run_commit_run() {
    if !require_root() {
        return;
    }
    let _fuse = testkit::DevFuseOpen::new();
    let (uid, gid) = testkit::test_user();
    let oci = debian_oci();
    let home = tempfile::Builder::new()
        .prefix("layerfs-image-debian-")
        .tempdir_in(cache_dir())
        .unwrap();
    world_traversable(home.path());
    std::os::unix::fs::chown(home.path(), Some(uid), Some(gid)).unwrap();
    let run = |args: &[&str], what: &str| -> String {
        let o = as_user(uid, gid, home.path(), args);
        assert!(o.status.success(), "{what}: {}", show(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };

    run(
        &[
            "import",
            &format!("oci:{}:bookworm", oci.display()),
            "--name",
            "debian",
        ],
        "import",
    );
    let store = home.path().join(".local/share/layerfs");
    // Stored as rootless podman stores layers: image root is the user, others subordinate.
    let base_layers: Vec<PathBuf> = std::fs::read_dir(store.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(base_layers.len(), 1);
    assert_eq!(
        std::fs::metadata(base_layers[0].join("usr/bin"))
            .unwrap()
            .uid(),
        uid
    );
    // Group shadow (42) lands in the subordinate range; set-id bits survive the chown.
    let shadow = std::fs::metadata(base_layers[0].join("etc/shadow")).unwrap();
    assert!(
        shadow.gid() > 65535,
        "group shadow in the subordinate range: {}",
        shadow.gid()
    );
    let chkpwd = std::fs::metadata(base_layers[0].join("usr/sbin/unix_chkpwd")).unwrap();
    assert_eq!(chkpwd.gid(), shadow.gid());
    assert_eq!(chkpwd.mode() & 0o7777, 0o2755);

    let (upper, work) = (home.path().join("upper"), home.path().join("work"));
    for d in [&upper, &work] {
        std::fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(uid), Some(gid)).unwrap();
    }
    let rw = format!("upperdir={},workdir={}", upper.display(), work.display());
    run(
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
            "apt-get update -q && apt-get install -y -q --no-install-recommends hello",
        ],
        "apt-get install in layerfs run",
    );
    run(
        &[
            "commit",
            "-o",
            &format!("upperdir={}", upper.display()),
            "--from",
            "debian",
            "--to",
            "store:debian-hello",
            "--message",
            "apt-get install hello",
        ],
        "commit into the store",
    );
    let out = run(
        &[
            "run",
            "debian-hello",
            "--",
            "sh",
            "-c",
            "hello && dpkg -s hello | grep Status",
        ],
        "hello from the new image",
    );
    assert_eq!(out, "Hello, world!\nStatus: install ok installed\n");
    let out = run(
        &[
            "run",
            "debian",
            "--",
            "sh",
            "-c",
            "command -v hello || echo none",
        ],
        "base",
    );
    assert_eq!(out, "none\n", "the base image is unchanged");

    // Two images, two layers on disk: the base layer directory is shared.
    let list: serde_json::Value =
        serde_json::from_str(&run(&["images", "--json"], "images")).unwrap();
    let images = list.as_array().unwrap();
    assert_eq!(images.len(), 2);
    let layers = |name: &str| -> Vec<String> {
        let i = images
            .iter()
            .find(|i| i["names"].as_array().unwrap().iter().any(|n| n == name))
            .unwrap_or_else(|| panic!("{name} in {list}"));
        i["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["diff_id"].as_str().unwrap().to_string())
            .collect()
    };
    let (base, derived) = (layers("debian:latest"), layers("debian-hello:latest"));
    assert_eq!(derived.len(), 2);
    assert_eq!(
        derived[0], base[0],
        "the new image is based on the same layer"
    );
    assert_eq!(std::fs::read_dir(store.join("layers")).unwrap().count(), 2);

    // The inspection tools read the store's layers (kernel form) as a stack.
    let lowerdir = format!(
        "lowerdir={}:{}",
        store.join("layers").join(&derived[1][7..]).display(),
        store.join("layers").join(&base[0][7..]).display()
    );
    let o = run_layerfs(&["inspect", "-o", &lowerdir, "--json", "--no-cache"]);
    assert!(o.status.success(), "inspect: {}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["layers"].as_array().unwrap().len(), 2);
    assert!(
        v["layers"][1]["added"].as_u64().unwrap() > 0,
        "hello's files: {v}"
    );
    let o = run_layerfs(&["which", "-o", &lowerdir, "/usr/bin/hello"]);
    assert!(o.status.success(), "which: {}", show(&o));

    // rmi of the new image frees its own layer only.
    run(&["rmi", "debian-hello"], "rmi");
    assert_eq!(std::fs::read_dir(store.join("layers")).unwrap().count(), 1);
    assert!(base_layers[0].join("usr/bin").is_dir());
    run(&["rmi", "debian"], "rmi base");
    assert_eq!(std::fs::read_dir(store.join("layers")).unwrap().count(), 0);
}
