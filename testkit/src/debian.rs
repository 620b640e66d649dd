//! A Debian base for end-to-end tests: `debootstrap --variant=minbase bookworm`, made once
//! and cached in /var/tmp (`LAYERFS_TEST_CACHE`); needs the Debian mirror named in the
//! host's apt sources (or the default one).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn cache_dir() -> PathBuf {
    let d = PathBuf::from(
        std::env::var_os("LAYERFS_TEST_CACHE").unwrap_or("/var/tmp/layerfs-test-cache".into()),
    );
    std::fs::create_dir_all(&d).unwrap();
    world_traversable(&d);
    d
}

pub fn world_traversable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The first Debian mirror in the host's apt sources (`LAYERFS_DEBIAN_MIRROR` overrides it).
pub fn mirror() -> String {
    if let Ok(m) = std::env::var("LAYERFS_DEBIAN_MIRROR") {
        return m;
    }
    let mut text = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            text += &std::fs::read_to_string(e.path()).unwrap_or_default();
        }
    }
    text.split_whitespace()
        .find(|w| w.starts_with("http") && w.trim_end_matches('/').ends_with("/debian"))
        .expect("no Debian mirror in /etc/apt/sources.list*: set LAYERFS_DEBIAN_MIRROR")
        .to_string()
}

/// `debootstrap --variant=minbase bookworm`, once; owned by host root like any image
/// unpacked by root.
pub fn debian_base() -> PathBuf {
    let base = cache_dir().join("bookworm-minbase");
    let done = cache_dir().join("bookworm-minbase.done");
    if done.exists() {
        return base;
    }
    let _ = std::fs::remove_dir_all(&base);
    let m = mirror();
    eprintln!(
        "debootstrap --variant=minbase bookworm {} {m} (once, cached)",
        base.display()
    );
    let o = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&base)
        .arg(&m)
        .stdin(Stdio::null())
        .output()
        .expect("debootstrap is installed (scripts/test installs it)");
    assert!(
        o.status.success(),
        "debootstrap failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(&done, "").unwrap();
    base
}

/// The Debian base as an OCI image layout (made once by root from the cached debootstrap,
/// cached beside it): what a user would pull.
pub fn debian_oci() -> PathBuf {
    // "-2": written since layers carry holes as zeros (an older cache has GNU sparse
    // members, which podman refuses, and an unchanged base now leaves as this very blob).
    let dir = cache_dir().join("bookworm-minbase-oci-2");
    let done = cache_dir().join("bookworm-minbase-oci-2.done");
    if done.exists() {
        return dir;
    }
    let base = debian_base();
    let _ = std::fs::remove_dir_all(&dir);
    let scratch = tempfile::tempdir().unwrap();
    let o = super::run_layerfs(&[
        "commit",
        "-o",
        &format!("upperdir={}", base.display()),
        "--to",
        &format!("oci:{}:bookworm", dir.display()),
        "--compress",
        "zstd",
        "--store",
        scratch.path().to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "writing the base as an OCI image: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(&done, "").unwrap();
    dir
}

/// layerfs as `uid:gid` (rootless), HOME in `home` (so the store is the user's default).
pub fn as_user(uid: u32, gid: u32, home: &Path, args: &[&str]) -> Output {
    let bin = home.join("layerfs");
    if !bin.exists() {
        std::fs::copy(super::BIN, &bin).unwrap();
    }
    Command::new("setpriv")
        .args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
        .arg("--init-groups")
        .arg("env")
        .arg(format!("HOME={}", home.display()))
        .arg("XDG_DATA_HOME=")
        .arg(&bin)
        .args(args)
        .current_dir(home)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}
