//! Images from and to a real registry (Debian's docker-registry on 127.0.0.1, started per
//! test): skopeo pushes an image the test builds, layerfs pulls, mounts, commits and pushes,
//! skopeo and podman read what layerfs pushed; a tampered blob, a dropped connection, a
//! registry killed mid-pull, and basic auth. Lazy pulls: tests/lazy_registry.rs.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use testkit::podman::Podman;
use testkit::registry::{auth_file, kill, test_certs, Proxy, Registry};
use testkit::registry_env::{assert_store_clean, layer_digests, skopeo, stderr, Env};
use testkit::{ok, require_root, BIN};

/// A busybox root in an OCI layout (`oci:DIR:base`, one gzip layer of about 1 MB), made
/// with layerfs commit.
fn base_layout(env: &Env) -> String {
    let root = env.path("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "dev", "sys"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox-static is installed (scripts/setup installs it)");
    for app in ["sh", "cat", "ls"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
    }
    std::fs::write(root.join("etc/motd"), "base\n").unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    let oci = format!("oci:{}:base", env.path("oci").display());
    let upper = format!("upperdir={}", root.display());
    let scratch = env.path("scratch-store").display().to_string();
    ok(
        env.layerfs(&["commit", "-o", &upper, "--to", &oci, "--store", &scratch]),
        "commit the base layout",
    );
    oci
}

#[test]
fn pull_mount_commit_push_and_podman_reads_it() {
    if !require_root() {
        return;
    }
    let reg = Registry::start();
    let h = reg.host();
    let env = Env::new(std::slice::from_ref(&h), std::slice::from_ref(&h));
    let store = env.store();
    let oci = base_layout(&env);
    let base = format!("docker://{h}/test/base:1");
    skopeo(&["copy", "--dest-tls-verify=false", &oci, &base]);
    let zstd = format!("docker://{h}/test/zstd:1");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-compress-format",
        "zstd:chunked",
        &oci,
        &zstd,
    ]);
    let base_layers = layer_digests(&base, &[]);
    assert_eq!(base_layers.len(), 1);

    // Pull: the layer keeps the registry's digest; a second pull (an unqualified name,
    // through registries.conf's search list) downloads nothing.
    let pulled = env.json(&["pull", &base, "--store", &store, "--json"]);
    assert_eq!(pulled["layers"][0]["digest"], base_layers[0].as_str());
    assert_eq!(pulled["layers"][0]["reused"], false);
    let again = env.json(&["pull", "test/base:1", "--store", &store, "--json"]);
    assert_eq!(again["layers"][0]["reused"], true);
    assert_eq!(again["id"], pulled["id"]);

    // docker:// as a SOURCE: inspect a zstd:chunked image (pulled on first use) and mount
    // the base straight from the reference.
    let o = env.layerfs(&["inspect", &zstd, "--store", &store, "--json"]);
    ok(&o, "inspect docker:// (zstd:chunked)");
    let mp = env.path("mnt");
    std::fs::create_dir(&mp).unwrap();
    let mps = mp.to_str().unwrap();
    ok(
        env.layerfs(&["mount", &base, mps, "--store", &store]),
        "mount docker://",
    );
    let motd = std::fs::read_to_string(mp.join("etc/motd"));
    ok(env.layerfs(&["umount", mps]), "umount");
    assert_eq!(motd.unwrap(), "base\n");

    // Every SOURCE command reads it: cat, and run (through registries.conf's insecure
    // entry, as mount did).
    let o = env.layerfs(&["cat", &base, "/etc/motd", "--store", &store]);
    assert_eq!(ok(&o, "cat docker://"), "base\n");
    let o = env.layerfs(&["run", "--store", &store, &base, "--", "cat", "/etc/motd"]);
    assert_eq!(ok(&o, "run docker://"), "base\n");

    // Commit a change on top of it straight to the registry.
    let upper = env.path("upper");
    std::fs::create_dir_all(upper.join("etc")).unwrap();
    std::fs::write(upper.join("etc/motd"), "changed\n").unwrap();
    std::fs::write(upper.join("new"), "new file\n").unwrap();
    let app = format!("docker://{h}/test/app:2");
    let up = format!("upperdir={}", upper.display());
    let committed = env.json(&[
        "commit", "-o", &up, "--from", &base, "--to", &app, "--store", &store, "--json",
    ]);
    assert_eq!(committed["dest"], app.as_str());
    let app_layers = layer_digests(&app, &[]);
    assert_eq!(app_layers.len(), 2);
    assert_eq!(
        app_layers[0], base_layers[0],
        "the unchanged layer keeps its digest"
    );

    // podman pulls and runs what layerfs pushed.
    std::fs::create_dir(env.path("podman")).unwrap();
    let p = Podman::new(&env.path("podman"));
    let app_name = format!("{h}/test/app:2");
    p.podman(&["pull", "-q", "--tls-verify=false", &app_name]);
    let out = p.podman(&["run", "--rm", &app_name, "cat", "/etc/motd", "/new"]);
    assert_eq!(out, "changed\nnew file\n");

    // Push to another repository: the layer is mounted from the one it came from; pushed
    // again, everything is there already.
    let other = format!("docker://{h}/other/base:1");
    let name = format!("{h}/test/base:1");
    let pushed = env.json(&["push", &name, &other, "--store", &store, "--json"]);
    assert_eq!(pushed["layers"][0]["digest"], base_layers[0].as_str());
    assert_eq!(pushed["layers"][0]["fate"], "mounted", "{pushed}");
    let pushed = env.json(&["push", &name, &other, "--store", &store, "--json"]);
    assert_eq!(pushed["layers"][0]["fate"], "present", "{pushed}");
    assert_eq!(pushed["config"]["fate"], "present", "{pushed}");
    assert_eq!(layer_digests(&other, &[]), base_layers);
}

#[test]
fn tampered_blob_is_refused_and_nothing_imported() {
    if !require_root() {
        return;
    }
    let reg = Registry::start();
    let h = reg.host();
    let env = Env::new(&[], &[]);
    let oci = base_layout(&env);
    let base = format!("docker://{h}/test/base:1");
    skopeo(&["copy", "--dest-tls-verify=false", &oci, &base]);
    let layer = layer_digests(&base, &[]).remove(0);
    let file = reg.blob_file(&layer);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();

    let store = env.store();
    // No search list in registries.conf: an unqualified name is refused, saying so.
    let o = env.layerfs(&["pull", "test/base:1", "--store", &store]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("an unqualified name, and no registries.conf"),
        "{}",
        stderr(&o)
    );

    let o = env.layerfs(&["pull", &base, "--tls-verify=false", "--store", &store]);
    assert!(!o.status.success(), "a tampered blob was accepted");
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&base), "{err}");
    assert!(
        err.contains(&format!(
            "digest mismatch: expected {layer}, received sha256:"
        )),
        "{err}"
    );
    assert_store_clean(&store);
}

#[test]
fn dropped_connection_resumes_and_killed_pulls_leave_the_store_clean() {
    if !require_root() {
        return;
    }
    let reg = Registry::start();
    let h = reg.host();
    let env = Env::new(&[], &[]);
    let oci = base_layout(&env);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &oci,
        &format!("docker://{h}/test/base:1"),
    ]);

    // The connection drops 200 kB into the layer: the pull resumes from there with a range.
    let proxy = Proxy::start(reg.port, 200_000, || {});
    let via = format!("docker://{}/test/base:1", proxy.host());
    let store = env.store();
    ok(
        env.layerfs(&["pull", &via, "--tls-verify=false", "--store", &store]),
        "pull through a dropped connection",
    );
    assert!(proxy.did_cut() && proxy.saw_range(), "no resumed download");

    // layerfs itself is killed 200 kB into the layer: nothing published, and what the pull
    // had downloaded is swept by the next pull.
    let victim = Arc::new(AtomicU32::new(0));
    let v = victim.clone();
    let proxy = Proxy::start(reg.port, 200_000, move || kill(v.load(Ordering::SeqCst)));
    let via = format!("docker://{}/test/base:1", proxy.host());
    let store3 = env.path("store3").display().to_string();
    let mut child = Command::new(BIN)
        .args(["pull", &via, "--tls-verify=false", "--store", &store3])
        .env("HOME", env.path("home"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    victim.store(child.id(), Ordering::SeqCst);
    assert!(!child.wait().unwrap().success());
    assert!(proxy.did_cut());
    for sub in ["images", "layers"] {
        let d = Path::new(&store3).join(sub);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "{}", d.display());
    }
    let direct = format!("docker://{h}/test/base:1");
    ok(
        env.layerfs(&["pull", &direct, "--tls-verify=false", "--store", &store3]),
        "pull after a killed pull",
    );
    let tmp = std::fs::read_dir(Path::new(&store3).join("tmp")).unwrap();
    let left: Vec<_> = tmp.map(|e| e.unwrap().file_name()).collect();
    assert!(
        left.iter()
            .all(|n| !n.to_string_lossy().starts_with("pull-")),
        "{left:?}"
    );

    // The registry is killed 200 kB into the layer: one line naming the reference and
    // the cause, and the store as it was.
    let pid = reg.pid();
    let proxy = Proxy::start(reg.port, 200_000, move || kill(pid));
    let via = format!("docker://{}/test/base:1", proxy.host());
    let store = env.path("store2").display().to_string();
    let o = env.layerfs(&["pull", &via, "--tls-verify=false", "--store", &store]);
    assert!(!o.status.success());
    assert!(proxy.did_cut());
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&via) && err.contains("blob sha256:"), "{err}");
    assert_store_clean(&store);

    // With the registry gone, a SOURCE it named is the store's copy, with a warning.
    let o = env.layerfs(&["cat", &direct, "/etc/motd", "--store", &store3]);
    assert_eq!(ok(&o, "cat docker:// with the registry gone"), "base\n");
    assert!(
        stderr(&o).contains("using the store's copy"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn basic_auth_401_without_credentials_success_with_them() {
    if !require_root() {
        return;
    }
    let reg = Registry::start_with(Some(("alice", "s3cret")), None);
    let h = reg.host();
    let env = Env::new(std::slice::from_ref(&h), &[]);
    let oci = base_layout(&env);
    let base = format!("docker://{h}/test/base:1");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:s3cret",
        &oci,
        &base,
    ]);
    let store = env.store();

    let o = env.layerfs(&["pull", &base, "--store", &store]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains(&base) && err.contains("401"), "{err}");
    assert!(err.contains("credentials tried: none"), "{err}");
    let o = env.layerfs(&["pull", &base, "--creds", "alice:wrong", "--store", &store]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("user alice from --creds"),
        "{}",
        stderr(&o)
    );
    assert_store_clean(&store);

    let auth = auth_file(&env.path("home"), &h, "alice", "s3cret");
    let authfile = auth.to_str().unwrap();
    ok(
        env.layerfs(&["pull", &base, "--authfile", authfile, "--store", &store]),
        "pull with --authfile",
    );
    // The default place podman keeps credentials (${XDG_RUNTIME_DIR}/containers/auth.json).
    std::fs::create_dir_all(env.path("home/containers")).unwrap();
    std::fs::copy(&auth, env.path("home/containers/auth.json")).unwrap();
    let name = format!("{h}/test/base:1");
    let other = format!("docker://{h}/other/base:1");
    let pushed = env.json(&["push", &name, &other, "--store", &store, "--json"]);
    assert_eq!(pushed["reference"], other.as_str());
    let creds = ["--creds", "alice:s3cret"];
    assert_eq!(layer_digests(&other, &creds), layer_digests(&base, &creds));
}

#[test]
fn https_with_a_cert_dir_or_without_verification() {
    if !require_root() {
        return;
    }
    let env = Env::new(&[], &[]);
    let (certs, cert, key) = test_certs(&env.path(""));
    let reg = Registry::start_with(None, Some((&cert, &key)));
    let h = reg.host();
    let oci = base_layout(&env);
    let base = format!("docker://{h}/test/base:1");
    let cert_dir = certs.to_str().unwrap();
    skopeo(&["copy", "--dest-cert-dir", cert_dir, &oci, &base]);

    // An unknown CA: refused, saying how to allow it.
    let store = env.store();
    let o = env.layerfs(&["pull", &base, "--store", &store]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&base) && err.contains("--tls-verify=false"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // The CA from --cert-dir; or no verification.
    ok(
        env.layerfs(&["pull", &base, "--cert-dir", cert_dir, "--store", &store]),
        "pull with --cert-dir",
    );
    let store2 = env.path("store2").display().to_string();
    ok(
        env.layerfs(&["pull", &base, "--tls-verify=false", "--store", &store2]),
        "pull with --tls-verify=false",
    );
}
