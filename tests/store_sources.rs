//! Store images as SOURCE in every command (`inspect`, `which`, `cat`, `diff`, `squash`,
//! `mount`, `run`, `commit --from`): a bare name and `store:NAME`, the store given by
//! `--store` (root) or the user's default (rootless, where the layers hold files of
//! subordinate ids in 0700 directories); an unknown name names the store's images.

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use testkit::{require_root, run_layerfs, show, BIN};

/// A two-layer OCI layout: the base has `etc/hostname`, a file `gone`, `dev/null` (char
/// 1:3), and `secret/` (0700, owned by uid 42) holding `key` (0600, uid 42); the top
/// deletes `gone` and changes `etc/hostname`.
fn fixture(dir: &Path) -> String {
    let base = dir.join("base");
    std::fs::create_dir_all(base.join("etc")).unwrap();
    std::fs::create_dir_all(base.join("secret")).unwrap();
    std::fs::write(base.join("etc/hostname"), "base\n").unwrap();
    std::fs::write(base.join("gone"), "old\n").unwrap();
    std::fs::write(base.join("secret/key"), "k\n").unwrap();
    std::fs::create_dir_all(base.join("dev")).unwrap();
    let null = std::ffi::CString::new(base.join("dev/null").to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path; a plain syscall.
    let made = unsafe { libc::mknod(null.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(made, 0, "mknod dev/null");
    std::fs::create_dir_all(base.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", base.join("bin/busybox")).unwrap();
    for (p, mode) in [("secret", 0o700), ("secret/key", 0o600)] {
        let p = base.join(p);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        chown(&p, Some(42), Some(42)).unwrap();
    }
    let top = dir.join("top");
    std::fs::create_dir_all(top.join("etc")).unwrap();
    std::fs::write(top.join("etc/hostname"), "top\n").unwrap();
    std::fs::write(top.join(".wh.gone"), "").unwrap();
    let tars = vec![
        testkit::imagekit::tar_dir(&base),
        testkit::imagekit::tar_dir(&top),
    ];
    let layout = dir.join("oci");
    testkit::imagekit::write_oci(
        &layout,
        &tars,
        &["BASE", "TOP"],
        testkit::imagekit::Comp::Gzip,
        "t",
    );
    format!("oci:{}:t", layout.display())
}

/// Runs every reading tool on `name` (and `store:NAME`) with `layerfs` as given by `run`,
/// against the same image read from `src` directly, which `diff` finds `src_to_store` from.
fn every_tool(run: &dyn Fn(&[&str]) -> Output, name: &str, src: &str, src_to_store: &str) {
    let ok = |args: &[&str]| -> String {
        let o = run(args);
        assert!(o.status.success(), "{args:?}: {}", show(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let prefixed = format!("store:{name}");
    let direct = ok(&["inspect", "--json", src]);
    let direct: serde_json::Value = serde_json::from_str(&direct).unwrap();
    for n in [name, prefixed.as_str()] {
        let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", "--json", n])).unwrap();
        // (Entries may differ: a rootless store lacks the device node.)
        for k in ["image_bytes", "merged_bytes", "reclaimable_bytes", "layers"] {
            assert_eq!(v["totals"][k], direct["totals"][k], "inspect {n}: {k}");
        }
        assert_eq!(v["layers"].as_array().unwrap().len(), 2);
        let w = ok(&["which", n, "/etc/hostname"]);
        assert!(w.starts_with("/etc/hostname: layer 1 "), "{w}");
        assert!(w.contains("shadows layer 0"), "{w}");
        // A subordinate id's file in a 0700 directory.
        assert_eq!(ok(&["cat", n, "/secret/key"]), "k\n");
        assert_eq!(ok(&["cat", "--layer", "0", n, "/etc/hostname"]), "base\n");
        // The store's copy is the source's image.
        assert_eq!(ok(&["diff", src, n]), src_to_store, "diff {src} {n}");
        assert_eq!(ok(&["diff", n, n]), "");
    }
    let unknown = run(&["inspect", "demp"]);
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success());
    assert!(
        err.contains("did you mean demo:latest?") && err.lines().count() == 1,
        "{err}"
    );
    let unknown = run(&["which", "store:nothing-like-it", "/x"]);
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("(it has ") && err.contains("demo:latest"),
        "{err}"
    );
}

#[test]
fn store_names_in_every_tool_as_root() {
    if !require_root() {
        return;
    }
    let t = tempfile::Builder::new()
        .prefix("layerfs-i17b-store-")
        .tempdir()
        .unwrap();
    let src = fixture(t.path());
    let store = t.path().join("store");
    let s = store.to_str().unwrap().to_string();
    let o = run_layerfs(&["import", &src, "--name", "demo", "--store", &s]);
    assert!(o.status.success(), "import: {}", show(&o));
    let with_store = |args: &[&str]| {
        // After the subcommand, before any `-- CMD`.
        let mut v: Vec<&str> = vec![args[0], "--store", &s];
        v.extend(&args[1..]);
        run_layerfs(&v)
    };
    // Root stores the device node: nothing differs.
    every_tool(&with_store, "demo", &src, "");
    // --store is honoured: another store does not have it.
    let o = run_layerfs(&["inspect", "demo", "--store", "/nonexistent-layerfs-i17b"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has none"),
        "{}",
        show(&o)
    );

    // import of a store image only names it (as `podman tag`): one image, both names.
    let o = with_store(&["import", "store:demo", "--name", "again"]);
    assert!(o.status.success(), "import store:demo: {}", show(&o));
    let o = with_store(&["images", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    let names = v[0]["names"].to_string();
    assert!(
        names.contains("again:latest") && names.contains("demo:latest"),
        "{names}"
    );
    let o = with_store(&["which", "again", "/etc/hostname"]);
    assert!(o.status.success(), "{}", show(&o));

    // The commands that need layer directories take both forms too.
    let tar = t.path().join("squashed.tar");
    let o = with_store(&[
        "squash",
        "store:demo",
        "--to",
        &format!("tar:{}", tar.display()),
    ]);
    assert!(o.status.success(), "squash: {}", show(&o));
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&tar).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n.ends_with("secret/key")), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("gone")), "{names:?}");
    let o = with_store(&[
        "run",
        "store:demo",
        "--",
        "/bin/busybox",
        "cat",
        "/etc/hostname",
    ]);
    assert!(o.status.success(), "run: {}", show(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "top\n");
    let mp = t.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let o = with_store(&["mount", "store:demo", mp.to_str().unwrap()]);
    assert!(o.status.success(), "mount: {}", show(&o));
    let read = std::fs::read_to_string(mp.join("etc/hostname"));
    let _ = run_layerfs(&["umount", mp.to_str().unwrap()]);
    assert_eq!(read.unwrap(), "top\n");
}

#[test]
fn store_names_in_every_tool_rootless() {
    if !require_root() {
        return;
    }
    let (uid, gid) = testkit::test_user();
    let home = tempfile::Builder::new()
        .prefix("layerfs-i17b-rootless-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = fixture(&home.path().join("fixture"));
    chown(home.path(), Some(uid), Some(gid)).unwrap();
    let bin = home.path().join("layerfs");
    std::fs::copy(BIN, &bin).unwrap();
    let as_user = |args: &[&str]| -> Output {
        Command::new("setpriv")
            .args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
            .arg("--init-groups")
            .arg("env")
            .arg(format!("HOME={}", home.path().display()))
            .args(["XDG_DATA_HOME=", "XDG_CACHE_HOME="])
            .arg(&bin)
            .args(args)
            .current_dir(home.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = as_user(&["import", &src, "--name", "demo"]);
    assert!(o.status.success(), "import: {}", show(&o));
    // The device node a user namespace cannot make: one warning line naming it.
    let err = String::from_utf8_lossy(&o.stderr);
    let warned: Vec<&str> = err.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warned.len(), 1, "{err}");
    assert!(
        warned[0].contains("/dev/null: device node 1:3 not imported"),
        "{err}"
    );
    // Stored as rootless podman stores it: the 0700 directory belongs to a subordinate id,
    // which the user cannot enter.
    let layers = home.path().join(".local/share/layerfs/layers");
    let secret = std::fs::read_dir(&layers)
        .unwrap()
        .map(|e| e.unwrap().path().join("secret"))
        .find(|p| p.exists())
        .unwrap();
    let meta = std::fs::metadata(&secret).unwrap();
    assert!(std::os::unix::fs::MetadataExt::uid(&meta) > 65535);
    let o = Command::new("setpriv")
        .args([
            "--reuid",
            &uid.to_string(),
            "--regid",
            &gid.to_string(),
            "--clear-groups",
        ])
        .arg("cat")
        .arg(secret.join("key"))
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "the user reads it directly: {}",
        show(&o)
    );
    // diff says why /dev/null is missing from the store's copy: no layer deleted it.
    every_tool(
        &as_user,
        "demo",
        &src,
        "D /dev/null  chardev  (a device node the rootless import could not create in the \
         store)\n",
    );
    let tar = home.path().join("squashed.tar");
    let o = as_user(&["squash", "demo", "--to", &format!("tar:{}", tar.display())]);
    assert!(o.status.success(), "squash: {}", show(&o));
}
