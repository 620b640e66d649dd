//! podman with layerfs as its overlay `mount_program`: the read-only mount podman makes to
//! look into an image (`podman image mount`) is served by layerfs, in podman's exact argv
//! form (`lowerdir=X/diff:X/empty`, cwd = graphroot/overlay). Writable container mounts
//! wait for the writable upper (issue #3).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{mount_type, require_root, BIN};

fn podman(conf: &Path, args: &[&str]) -> Output {
    Command::new("podman")
        .env("CONTAINERS_STORAGE_CONF", conf)
        .args(args)
        .output()
        .expect("podman is installed (scripts/test installs it)")
}

#[test]
fn podman_image_mount_uses_layerfs() {
    if !require_root("podman_image_mount_uses_layerfs") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let base = t.path();
    // A copy of the binary: podman execs it by absolute path.
    let bin = base.join("layerfs");
    std::fs::copy(BIN, &bin).unwrap();
    let conf = base.join("storage.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{g}\"\nrunroot = \"{r}\"\n\
             [storage.options.overlay]\nmount_program = \"{b}\"\n",
            g = base.join("graph").display(),
            r = base.join("run").display(),
            b = bin.display()
        ),
    )
    .unwrap();
    // An image from a tiny rootfs tarball (offline: no registry).
    let rootfs = base.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/motd"), "served by layerfs\n").unwrap();
    let tar = base.join("rootfs.tar");
    assert!(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap()
        .success());
    let o = podman(
        &conf,
        &["import", tar.to_str().unwrap(), "layerfs-test-image"],
    );
    assert!(
        o.status.success(),
        "import: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    let o = podman(&conf, &["image", "mount", "layerfs-test-image"]);
    assert!(
        o.status.success(),
        "image mount: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let merged = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let fstype = mount_type(Path::new(&merged));
    let motd = std::fs::read_to_string(Path::new(&merged).join("etc/motd"));
    let o = podman(&conf, &["image", "unmount", "layerfs-test-image"]);
    assert!(
        o.status.success(),
        "image unmount: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        fstype.as_deref(),
        Some("fuse.layerfs"),
        "podman's mount is not a layerfs mount"
    );
    assert_eq!(motd.unwrap(), "served by layerfs\n");
    assert_eq!(
        mount_type(Path::new(&merged)),
        None,
        "still mounted after podman image unmount"
    );
    let _ = podman(&conf, &["rmi", "-f", "layerfs-test-image"]);
}
