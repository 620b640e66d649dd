//! Lazy pulls from a real registry (Debian's docker-registry on 127.0.0.1, started per
//! test): zstd:chunked and eStargz layers made lazy from their tables of contents (a run
//! fetches only what it reads), plain gzip and zstd layers streamed whole under the mount
//! (nothing fetched by the pull, the mount's first lookup waits for them); a tampered
//! blob, a registry stopped mid-read or down and back, `layerfs lazy status`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use testkit::registry::{kill, Proxy, Registry};
use testkit::registry_env::{assert_store_clean, layer_digests, skopeo, stderr, Env};
use testkit::{ok, require_root, BIN};

/// The lazy test image's root (`imagekit::lazy_rootfs`) in the env's directory.
fn lazy_rootfs(env: &Env) -> PathBuf {
    let root = env.path("lazy-rootfs");
    testkit::imagekit::lazy_rootfs(&root);
    root
}

/// The one lazy layer of `store` (its directory under `layers/`), if there is one.
fn the_lazy_layer(store: &str) -> Option<PathBuf> {
    let e = std::fs::read_dir(Path::new(store).join("lazy"))
        .ok()?
        .next()?
        .unwrap();
    Some(Path::new(store).join("layers").join(e.file_name()))
}

#[test]
fn a_lazy_pull_fetches_the_toc_and_a_run_only_what_it_reads() {
    if !require_root() {
        return;
    }
    let reg = Registry::start();
    let h = reg.host();
    let env = Env::new(std::slice::from_ref(&h), &[]);
    let root = lazy_rootfs(&env);
    let upper = format!("upperdir={}", root.display());
    let scratch = env.path("scratch-store").display().to_string();
    // skopeo's zstd:chunked, from a gzip layout layerfs writes.
    let gz = format!("oci:{}:gz", env.path("oci").display());
    ok(
        env.layerfs(&["commit", "-o", &upper, "--to", &gz, "--store", &scratch]),
        "commit gzip",
    );
    let zc = format!("docker://{h}/lazy/zc:v1");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-compress-format",
        "zstd:chunked",
        &gz,
        &zc,
    ]);
    // layerfs's eStargz, pushed by layerfs.
    let esgz_oci = format!("oci:{}:esgz", env.path("oci").display());
    ok(
        env.layerfs(&[
            "commit",
            "-o",
            &upper,
            "--to",
            &esgz_oci,
            "--compress",
            "estargz",
            "--store",
            &scratch,
        ]),
        "commit --compress estargz",
    );
    let esgz = format!("docker://{h}/lazy/esgz:v1");
    ok(
        env.layerfs(&[
            "push",
            &esgz_oci,
            &esgz,
            "--tls-verify=false",
            "--store",
            &scratch,
        ]),
        "push estargz",
    );
    let no_prefetch = [("LAYERFS_LAZY_PREFETCH", Path::new("0"))];
    for (form, reference) in [("zstd:chunked", &zc), ("estargz", &esgz)] {
        let digest = layer_digests(reference, &[]).remove(0);
        let blob_size = std::fs::metadata(reg.blob_file(&digest)).unwrap().len();
        let store = env.path(&format!("store-{}", form.replace(':', "-")));
        let store = store.to_str().unwrap();
        let pulled = env.json(&[
            "pull",
            "--lazy",
            "--tls-verify=false",
            "--store",
            store,
            "--json",
            reference,
        ]);
        assert_eq!(pulled["layers"][0]["lazy"], true, "{form}: {pulled}");
        assert_eq!(pulled["layers"][0]["reused"], false, "{form}: {pulled}");
        // The tar's size as the TOC gives it: at least the files' bytes.
        assert!(
            pulled["layers"][0]["size"].as_u64().unwrap() > 16 << 20,
            "{form}: {pulled}"
        );
        let toc_bytes = reg.bytes_sent(&digest);
        assert!(
            toc_bytes > 0 && toc_bytes < blob_size / 8,
            "{form}: the pull fetched {toc_bytes} of {blob_size} bytes"
        );
        let layer = the_lazy_layer(store).expect("a lazy layer in the store");
        let name = format!(
            "{h}/lazy/{}:v1",
            if form == "estargz" { "esgz" } else { "zc" }
        );
        let out = Command::new(BIN)
            .envs(no_prefetch)
            .env("CONTAINERS_REGISTRIES_CONF", env.path("registries.conf"))
            .env("HOME", env.path("home"))
            .args(["run", "--store", store, &name, "--", "cat", "/etc/motd"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(ok(&out, "run"), "lazy\n", "{form}");
        let sent = reg.bytes_sent(&digest);
        assert!(
            sent < blob_size / 3,
            "{form}: the run fetched {sent} bytes of a {blob_size}-byte blob"
        );
        assert!(the_lazy_layer(store).is_some(), "{form}: still lazy");
        // inspect reads every file of the layer: it fills it, and it is ordinary now.
        ok(
            env.layerfs(&["inspect", "--store", store, &name]),
            "inspect",
        );
        assert!(the_lazy_layer(store).is_none(), "{form}: filled by inspect");
        // The whole tree and every byte equal the source's (the root's own entry aside).
        let mut got = testkit::tree::snapshot(&layer).meta;
        let mut want = testkit::tree::snapshot(&root).meta;
        got.remove(Path::new(""));
        want.remove(Path::new(""));
        assert_eq!(got.len(), want.len(), "{form}");
        for (p, w) in &want {
            assert!(got.get(p) == Some(w), "{form}: {} differs", p.display());
        }
        eprintln!("{form}: blob {blob_size} bytes; the TOC took {toc_bytes}, the run {sent}");
    }
    // A two-layer image: the eStargz layer, a plain gzip one on it.
    let u2 = env.path("upper2");
    std::fs::create_dir_all(u2.join("etc")).unwrap();
    std::fs::write(u2.join("etc/two"), "two\n").unwrap();
    // Into the layout that has the eStargz blob: referenced, still seekable.
    let two_oci = format!("oci:{}:two", env.path("oci").display());
    let u2o = format!("upperdir={}", u2.display());
    ok(
        env.layerfs(&[
            "commit", "-o", &u2o, "--from", &esgz_oci, "--to", &two_oci, "--store", &scratch,
        ]),
        "commit a second layer",
    );
    let m: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", "--raw", &two_oci])).unwrap();
    assert!(
        m["layers"][0]["annotations"]["containerd.io/snapshot/stargz/toc.digest"].is_string(),
        "{m}"
    );
    let two = format!("docker://{h}/lazy/two:v1");
    ok(
        env.layerfs(&[
            "push",
            &two_oci,
            &two,
            "--tls-verify=false",
            "--store",
            &scratch,
        ]),
        "push two layers",
    );
    let top = layer_digests(&two, &[]).remove(1);
    let file = reg.blob_file(&top);
    let good = std::fs::read(&file).unwrap();
    let mut bytes = good.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    // The second layer (plain gzip) is lazy too, arriving whole: the pull fetches none of
    // it, and its tampered bytes are refused when a mount streams them: EIO, never a tree.
    let store = env.path("store-tampered");
    let store = store.to_str().unwrap();
    let pulled = env.json(&["pull", "--lazy", "--store", store, "--json", &two]);
    assert_eq!(pulled["layers"][1]["lazy"], true, "{pulled}");
    let st = lazy_status(&env, store, &two);
    assert_eq!(st[1]["form"], "gzip-whole", "{st:?}");
    let tampered = Path::new(store).join("layers").join(
        pulled["layers"][1]["diff_id"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    let conf = env.path("registries.conf");
    let m = testkit::Layerfs::mount_with_env(
        std::slice::from_ref(&tampered),
        &env.path("mnt-tampered"),
        &[],
        &[("CONTAINERS_REGISTRIES_CONF", &conf)],
    );
    let err = std::fs::metadata(m.path("etc/two")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // Logged with the reference and the blob (a flipped byte breaks the gzip stream or
    // the tar before the digests are compared at its end).
    testkit::eventually("the daemon logs the refused blob", || {
        m.errors_logged()
            .iter()
            .any(|l| l.contains("/lazy/two:v1") && l.contains(&top))
    });
    drop(m);
    std::fs::write(&file, &good).unwrap();
    // Served right, the two kinds in one stack: the eStargz layer's files fetched when
    // read, the gzip one streamed whole before the first lookup.
    let store = env.path("store-mixed");
    let store = store.to_str().unwrap();
    let o = Command::new(BIN)
        .envs(no_prefetch)
        .env("CONTAINERS_REGISTRIES_CONF", env.path("registries.conf"))
        .env("HOME", env.path("home"))
        .args([
            "run",
            "--lazy",
            "--store",
            store,
            &two,
            "--",
            "cat",
            "/etc/two",
            "/etc/motd",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(ok(&o, "run --lazy of two kinds"), "two\nlazy\n");
    let st = lazy_status(&env, store, &two);
    assert_eq!(st[0]["form"], "estargz", "{st:?}");
    assert_eq!(st[1]["form"], "local", "{st:?}");
    // A lazy pull that fails after making a lazy layer (its second layer's blob is gone
    // from the registry) leaves nothing in the store.
    std::fs::remove_file(&file).unwrap();
    let store = env.path("store-fail");
    let store = store.to_str().unwrap();
    let o = env.layerfs(&[
        "pull",
        "--lazy",
        "--tls-verify=false",
        "--store",
        store,
        &two,
    ]);
    assert!(!o.status.success(), "a missing blob was accepted");
    assert!(stderr(&o).contains("not in the registry"), "{}", stderr(&o));
    assert_store_clean(store);
    assert!(
        the_lazy_layer(store).is_none(),
        "the lazy layer of a failed pull stays"
    );
    // `run --lazy docker://REF` pulls lazily itself (the registry is insecure in
    // registries.conf, which the mount daemon reads too).
    let store = env.path("store-eio");
    let store = store.to_str().unwrap();
    let out = Command::new(BIN)
        .envs(no_prefetch)
        .env("CONTAINERS_REGISTRIES_CONF", env.path("registries.conf"))
        .env("HOME", env.path("home"))
        .args([
            "run",
            "--lazy",
            "--store",
            store,
            &zc,
            "--",
            "cat",
            "/etc/motd",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(ok(&out, "run --lazy"), "lazy\n");
    let layer = the_lazy_layer(store).expect("run --lazy made a lazy layer");
    // The registry stops mid-read: a file not fetched yet answers EIO, one fetched is served.
    // A daemon started later reopens the registry from the layer's record (the registry
    // being insecure through registries.conf, as for the run).
    let conf = env.path("registries.conf");
    let m = testkit::Layerfs::mount_with_env(
        std::slice::from_ref(&layer),
        &env.path("mnt"),
        &[],
        &[no_prefetch[0], ("CONTAINERS_REGISTRIES_CONF", &conf)],
    );
    assert_eq!(std::fs::read(m.path("etc/motd")).unwrap(), b"lazy\n");
    // A chunk the registry serves corrupted (a byte in the middle of the blob, inside the
    // 16 MiB file) is refused: EIO, never the bad bytes.
    let zc_blob = reg.blob_file(&layer_digests(&zc, &[]).remove(0));
    let good = std::fs::read(&zc_blob).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&zc_blob, &bad).unwrap();
    let err = std::fs::read(m.path("data/big")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // The daemon's stderr is read by another thread: its line may come after the EIO.
    testkit::eventually("the daemon logs the refused chunk of data/big", || {
        m.errors_logged()
            .iter()
            .any(|l| l.contains("data/big") && !l.contains("no registry answers"))
    });
    // Served right again, the file reads as the source's: the bad chunk was never kept.
    std::fs::write(&zc_blob, &good).unwrap();
    assert!(
        std::fs::read(m.path("data/big")).unwrap() == std::fs::read(root.join("data/big")).unwrap(),
        "data/big after the corrupted fetch"
    );
    drop(m);
    // Another lazy copy with data/big not fetched, for the registry's end.
    let store = env.path("store-eio2");
    let store = store.to_str().unwrap();
    ok(
        env.layerfs(&["pull", "--lazy", "--store", store, &zc]),
        "pull --lazy through registries.conf",
    );
    let layer = the_lazy_layer(store).unwrap();
    let m = testkit::Layerfs::mount_with_env(
        std::slice::from_ref(&layer),
        &env.path("mnt"),
        &[],
        &[no_prefetch[0], ("CONTAINERS_REGISTRIES_CONF", &conf)],
    );
    assert_eq!(std::fs::read(m.path("etc/motd")).unwrap(), b"lazy\n");
    kill(reg.pid());
    let started = std::time::Instant::now();
    let err = std::fs::read(m.path("data/big")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(started.elapsed().as_secs() < 15, "bounded retries");
    eprintln!("EIO after {:?} with the registry gone", started.elapsed());
    assert_eq!(std::fs::read(m.path("etc/motd")).unwrap(), b"lazy\n");
}

/// `layerfs lazy status --json TARGET`: the first image's layers.
fn lazy_status(env: &Env, store: &str, target: &str) -> Vec<serde_json::Value> {
    let v = env.json(&["lazy", "status", "--json", "--store", store, target]);
    v[0]["layers"].as_array().unwrap().clone()
}

#[test]
fn plain_gzip_and_zstd_layers_arrive_whole_under_a_lazy_mount() {
    if !require_root() {
        return;
    }
    let reg = Registry::start();
    let h = reg.host();
    // For the end: a connection that has carried 3 MiB (within the stream's first range)
    // is cut and the registry killed.
    let pid = reg.pid();
    let proxy = Proxy::start(reg.port, 3 << 20, move || kill(pid));
    let env = Env::new(&[h.clone(), proxy.host()], &[]);
    let conf = env.path("registries.conf");
    let root = lazy_rootfs(&env);
    let upper = format!("upperdir={}", root.display());
    let want = testkit::tree::snapshot(&root).meta;
    for (form, compress) in [("gzip-whole", "gzip"), ("zstd-whole", "zstd")] {
        let scratch = env
            .path(&format!("scratch-{compress}"))
            .display()
            .to_string();
        let oci = format!("oci:{}:{compress}", env.path("oci").display());
        ok(
            env.layerfs(&[
                "commit",
                "-o",
                &upper,
                "--to",
                &oci,
                "--compress",
                compress,
                "--store",
                &scratch,
            ]),
            "commit",
        );
        let reference = format!("docker://{h}/whole/{compress}:v1");
        ok(
            env.layerfs(&[
                "push",
                &oci,
                &reference,
                "--tls-verify=false",
                "--store",
                &scratch,
            ]),
            "push",
        );
        let digest = layer_digests(&reference, &[]).remove(0);
        let blob_size = std::fs::metadata(reg.blob_file(&digest)).unwrap().len();
        let store = env.path(&format!("store-{compress}"));
        let store = store.to_str().unwrap();
        let pulled = env.json(&["pull", "--lazy", "--store", store, "--json", &reference]);
        assert_eq!(pulled["layers"][0]["lazy"], true, "{form}: {pulled}");
        assert_eq!(
            reg.bytes_sent(&digest),
            0,
            "{form}: the pull fetched the blob: {}",
            reg.log()
        );
        let st = lazy_status(&env, store, &reference);
        assert_eq!(st[0]["form"], form, "{st:?}");
        assert_eq!(st[0]["state"], "lazy", "{st:?}");
        assert_eq!(st[0]["bytes_fetched"], 0, "{st:?}");
        assert_eq!(st[0]["bytes_total"], blob_size, "{st:?}");
        let images = env.json(&["images", "--json", "--store", store]);
        assert_eq!(images[0]["lazy_layers"][0]["form"], form, "{images}");
        // The mount comes up at once; its first lookup waits for the stream to pass.
        let mp = env.path(&format!("mnt-{compress}"));
        std::fs::create_dir(&mp).unwrap();
        let mps = mp.to_str().unwrap();
        ok(
            env.layerfs(&["mount", "--lazy", "--store", store, &reference, mps]),
            "mount --lazy",
        );
        let got = testkit::tree::snapshot(&mp);
        let by_mount = lazy_status(&env, store, mps);
        ok(env.layerfs(&["umount", mps]), "umount");
        let mut got = got.meta;
        let mut want = want.clone();
        got.remove(Path::new(""));
        want.remove(Path::new(""));
        assert_eq!(got.len(), want.len(), "{form}");
        for (p, w) in &want {
            assert!(got.get(p) == Some(w), "{form}: {} differs", p.display());
        }
        assert_eq!(by_mount[0]["state"], "whole", "{form}: {by_mount:?}");
        assert_eq!(by_mount[0]["form"], "local", "{form}: {by_mount:?}");
        // Fetched once, whole; the layer is an ordinary one (no record, a hash list).
        assert_eq!(reg.bytes_sent(&digest), blob_size, "{form}");
        assert!(the_lazy_layer(store).is_none(), "{form}: still lazy");
        ok(env.layerfs(&["verify", "--store", store]), "verify");
        // The blob is kept as it came, as a full pull keeps it: a push sends the same one.
        let again = format!("docker://{h}/whole/{compress}-again:v1");
        ok(
            env.layerfs(&["push", &reference, &again, "--store", store]),
            "push",
        );
        assert_eq!(
            layer_digests(&again, &[]),
            std::slice::from_ref(&digest),
            "{form}"
        );
        // `run --lazy docker://REF` pulls and mounts the same way.
        let store = env.path(&format!("store-run-{compress}"));
        let store = store.to_str().unwrap();
        let o = env.layerfs(&[
            "run",
            "--lazy",
            "--store",
            store,
            &reference,
            "--",
            "cat",
            "/etc/motd",
        ]);
        assert_eq!(ok(&o, "run --lazy"), "lazy\n", "{form}");
        assert!(
            the_lazy_layer(store).is_none(),
            "{form}: still lazy after run"
        );
    }
    // The registry goes away 3 MiB into the stream: lookups answer EIO within the bounded
    // retry, again and again, never a hang, and the mount stays up.
    let via = format!("docker://{}/whole/gzip:v1", proxy.host());
    let store = env.path("store-cut");
    let store = store.to_str().unwrap();
    ok(
        env.layerfs(&["pull", "--lazy", "--store", store, &via]),
        "pull --lazy through the proxy",
    );
    let layer = the_lazy_layer(store).expect("a lazy layer");
    let m = testkit::Layerfs::mount_with_env(
        std::slice::from_ref(&layer),
        &env.path("mnt-cut"),
        &[],
        &[("CONTAINERS_REGISTRIES_CONF", &conf)],
    );
    let started = std::time::Instant::now();
    let err = std::fs::metadata(m.path("etc/motd")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(proxy.did_cut(), "the stream was not cut");
    assert!(started.elapsed().as_secs() < 15, "bounded retries");
    eprintln!("EIO after {:?} with the registry gone", started.elapsed());
    let again = std::time::Instant::now();
    let err = std::fs::read_dir(m.path("")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        again.elapsed().as_secs() < 2,
        "a failed stream answers at once"
    );
    assert!(testkit::mount_type(&env.path("mnt-cut")).is_some_and(|t| t.starts_with("fuse")));
    testkit::eventually("the daemon logs the reference", || {
        m.errors_logged().iter().any(|l| l.contains(&proxy.host()))
    });
    let st = lazy_status(&env, store, &via);
    assert_eq!(st[0]["form"], "gzip-whole", "{st:?}");
    assert_eq!(st[0]["state"], "fetching", "{st:?}");
    drop(m);
    // A registry that is down when the mount starts and comes back: EIO meanwhile, then the
    // stream goes on and the mount shows the layer, every byte.
    let mut reg = reg;
    reg.start_again();
    let reference = format!("docker://{h}/whole/zstd:v1");
    let store = env.path("store-back");
    let store = store.to_str().unwrap();
    ok(
        env.layerfs(&["pull", "--lazy", "--store", store, &reference]),
        "pull --lazy",
    );
    let layer = the_lazy_layer(store).expect("a lazy layer");
    reg.stop();
    let m = testkit::Layerfs::mount_with_env(
        std::slice::from_ref(&layer),
        &env.path("mnt-back"),
        &[],
        &[("CONTAINERS_REGISTRIES_CONF", &conf)],
    );
    let err = std::fs::metadata(m.path("etc/motd")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    reg.start_again();
    testkit::eventually("the layer once the registry is back", || {
        std::fs::metadata(m.path("etc/motd")).is_ok()
    });
    let mut got = testkit::tree::snapshot(&m.path("")).meta;
    got.remove(Path::new(""));
    let mut want = want;
    want.remove(Path::new(""));
    assert_eq!(got, want);
    assert!(the_lazy_layer(store).is_none(), "still lazy");
}
