//! `layerfs serve-layers`: podman's additional layer store served lazily from a real
//! registry (Debian's docker-registry on 127.0.0.1). An image layerfs writes as
//! zstd:chunked is pushed; the store's layout is checked as containers/storage reads it
//! (`info`'s fields, `blob`, unknown names), then podman pulls and runs it through the
//! store: the output is right, podman's layer is the store's (nothing downloaded), and the
//! registry sent a small part of the blob. The registry wants basic auth: serve-layers
//! fetches files with the `--creds` it was given (a lazy record keeps none).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use testkit::podman::Podman;
use testkit::registry::Registry;
use testkit::{imagekit, mount_type, ok, require_root, tree, BIN};

/// A `serve-layers` mount, unmounted in Drop.
struct Served {
    dir: PathBuf,
    log: PathBuf,
}

impl Served {
    fn start(dir: &Path, store: &Path, home: &Path) -> Served {
        let log = dir.with_extension("log");
        let out = Command::new(BIN)
            .args([
                "serve-layers",
                "--tls-verify=false",
                "--creds",
                CREDS,
                "--store",
            ])
            .arg(store)
            .arg(dir)
            // What a read fetches is counted: no background fill.
            .env("LAYERFS_LAZY_PREFETCH", "0")
            .env("LAYERFS_LOG_FILE", &log)
            .env("RUST_LOG", "info")
            .env("HOME", home)
            .env_remove("REGISTRY_AUTH_FILE")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        ok(&out, "layerfs serve-layers");
        // The daemon's parent exits once the mount is live.
        assert_eq!(mount_type(dir).as_deref(), Some("fuse.layerfs"));
        Served {
            dir: dir.to_path_buf(),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new(BIN).arg("umount").arg(&self.dir).status();
    }
}

/// The registry's only user.
const USER: (&str, &str) = ("serve", "layers");
const CREDS: &str = "serve:layers";

fn skopeo_json(args: &[&str]) -> serde_json::Value {
    let o = Command::new("skopeo")
        .args(args)
        .args(["--creds", CREDS])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    serde_json::from_str(&ok(&o, &format!("skopeo {}", args.join(" ")))).unwrap()
}

/// The test's set-up: a registry, a home, layerfs's commands.
struct Env {
    tmp: tempfile::TempDir,
    reg: Registry,
}

impl Env {
    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn layerfs(&self, args: &[&str]) -> String {
        let o = Command::new(BIN)
            .args(args)
            .env("HOME", self.path("home"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        ok(&o, &format!("layerfs {}", args.join(" ")))
    }

    /// `root` committed as a `form` layer (on top of the image tagged `from` in the same
    /// layout) and pushed by layerfs as `serve/TAG:v1`; its name (`HOST/serve/TAG:v1`),
    /// and its top layer's blob digest and size, and diff_id.
    fn push(
        &self,
        root: &Path,
        form: &str,
        tag: &str,
        from: Option<&str>,
    ) -> (String, String, u64, String) {
        let layout = format!("oci:{}:{tag}", self.path("oci").display());
        let upper = format!("upperdir={}", root.display());
        let scratch = self.path("scratch").display().to_string();
        let name = format!("{}/serve/{tag}:v1", self.reg.host());
        let docker = format!("docker://{name}");
        let mut commit = vec!["commit", "-o", &upper, "--to", &layout, "--store", &scratch];
        if form != "gzip" {
            commit.extend(["--compress", form]);
        }
        let base = from.map(|f| format!("oci:{}:{f}", self.path("oci").display()));
        if let Some(b) = &base {
            commit.extend(["--from", b]);
        }
        self.layerfs(&commit);
        self.layerfs(&[
            "push",
            &layout,
            &docker,
            "--tls-verify=false",
            "--creds",
            CREDS,
            "--store",
            &scratch,
        ]);
        let manifest = skopeo_json(&["inspect", "--raw", "--tls-verify=false", &docker]);
        let top = manifest["layers"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        let digest = top["digest"].as_str().unwrap().to_string();
        let size = top["size"].as_u64().unwrap();
        let config = skopeo_json(&["inspect", "--config", "--tls-verify=false", &docker]);
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        let diff_id = diff_ids.last().unwrap().as_str().unwrap().to_string();
        (name, digest, size, diff_id)
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `p` does not exist (ENOENT: containers/storage takes any failure as "not here").
fn missing(p: &Path) {
    let e = std::fs::metadata(p).expect_err(&p.display().to_string());
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{}", p.display());
}

#[test]
fn podman_pulls_and_runs_through_serve_layers_fetching_only_what_it_reads() {
    if !require_root() {
        return;
    }
    let env = Env {
        tmp: tempfile::Builder::new()
            .prefix("layerfs-serve-layers-")
            .tempdir()
            .unwrap(),
        reg: Registry::start_with(Some(USER), None),
    };
    std::fs::create_dir(env.path("home")).unwrap();
    let als = env.path("als");
    std::fs::create_dir(&als).unwrap();
    let served = Served::start(&als, &env.path("store"), &env.path("home"));
    std::fs::create_dir(env.path("podman")).unwrap();
    let p = Podman::with_storage_options(
        &env.path("podman"),
        &format!("additionallayerstores = [\"{}:ref\"]", als.display()),
    );
    let mut diff_ids = Vec::new();
    // zstd:chunked and eStargz, written and pushed by layerfs (the motd tells them apart,
    // so each is a layer of its own).
    for (form, tag, compression) in [("zstd:chunked", "zc", 4), ("estargz", "esgz", 2)] {
        let root = env.path(&format!("rootfs-{tag}"));
        imagekit::lazy_rootfs(&root);
        std::fs::write(root.join("etc/motd"), format!("{form}\n")).unwrap();
        let (name, digest, blob_size, diff_id) = env.push(&root, form, tag, None);
        diff_ids.push(diff_id.clone());

        // The layout, as containers/storage reads it: stat of diff, info and blob; info
        // decoded.
        let layer = als.join(b64(&name)).join(&digest);
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layer.join("info")).unwrap()).unwrap();
        assert_eq!(info["compressed-diff-digest"], digest.as_str(), "{info}");
        assert_eq!(info["compressed-size"], blob_size, "{info}");
        assert_eq!(info["diff-digest"], diff_id.as_str(), "{info}");
        assert_eq!(info["compression"], compression, "{form}: {info}");
        assert!(info["diff-size"].as_u64().unwrap() > 16 << 20, "{info}");
        assert_eq!(
            std::fs::metadata(layer.join("blob")).unwrap().len(),
            blob_size
        );
        assert!(std::fs::metadata(layer.join("diff")).unwrap().is_dir());
        missing(&layer.join("use"));
        let toc = env.reg.bytes_sent(&digest);
        assert!(
            toc > 0 && toc < blob_size / 8,
            "{form}: the layer's TOC took {toc} of {blob_size} bytes"
        );

        let pulled = p
            .cmd("podman")
            .args(["pull", "-q", "--tls-verify=false", "--creds", CREDS, &name])
            .output()
            .unwrap();
        ok(&pulled, "podman pull");
        // `use` and the release (rmdir) answered as a counting store answers them.
        let warned = String::from_utf8_lossy(&pulled.stderr);
        assert!(
            !warned.contains("Additional Layer Store"),
            "podman warned: {warned}"
        );
        // The daemon heard the use notice of this layer.
        let used = format!("layer {diff_id} used (");
        assert!(served.log().contains(&used), "{form}: {}", served.log());
        let out = p.podman(&["run", "--rm", &name, "cat", "/etc/motd"]);
        assert_eq!(out, format!("{form}\n"));
        // podman's layer is the store's: its diff a link to it, no blob of it downloaded.
        let hex = diff_id.strip_prefix("sha256:").unwrap();
        let podman_layer = env.path("podman/graph/overlay").join(hex);
        assert_eq!(
            std::fs::read_link(podman_layer.join("diff")).unwrap(),
            layer.join("diff")
        );
        let podman_gets: Vec<_> = env
            .reg
            .log()
            .lines()
            .filter(|l| l.contains(&digest) && l.contains("containers/"))
            .map(str::to_string)
            .collect();
        assert!(
            podman_gets.is_empty(),
            "podman fetched the blob: {podman_gets:?}"
        );
        let sent = env.reg.bytes_sent(&digest);
        assert!(
            sent < blob_size / 3,
            "{form}: pull and run fetched {sent} bytes of a {blob_size}-byte blob"
        );
        eprintln!("{form}: blob {blob_size} bytes; the TOC took {toc}, pull and run {sent} in all");

        // Every entry and byte of the store's diff equals the source (reading it all fills
        // it), and `blob` is the registry's blob (what podman reads to push the layer).
        let mut got = tree::snapshot(&layer.join("diff")).meta;
        let mut want = tree::snapshot(&root).meta;
        got.remove(Path::new(""));
        want.remove(Path::new(""));
        assert_eq!(got.len(), want.len(), "{form}");
        for (path, w) in &want {
            assert!(
                got.get(path) == Some(w),
                "{form}: {} differs",
                path.display()
            );
        }
        assert!(
            std::fs::read(layer.join("blob")).unwrap()
                == std::fs::read(env.reg.blob_file(&digest)).unwrap(),
            "{form}: blob differs"
        );
    }

    // layerfs as podman's mount program (a layerfs mount whose lowers are served diffs).
    std::fs::create_dir(env.path("podman-mp")).unwrap();
    let mp = Podman::with_storage_options(
        &env.path("podman-mp"),
        &format!(
            "additionallayerstores = [\"{}:ref\"]\n[storage.options.overlay]\n\
             mount_program = \"{}\"",
            als.display(),
            BIN.path().display()
        ),
    );
    let zc = format!("{}/serve/zc:v1", env.reg.host());
    mp.podman(&["pull", "-q", "--tls-verify=false", "--creds", CREDS, &zc]);
    let out = mp.podman(&["run", "--rm", &zc, "cat", "/etc/motd"]);
    assert_eq!(out, "zstd:chunked\n");
    drop(mp);

    // The served layer is in no image record of the store: an image of layerfs's own that
    // shares it (pulled into the same store, then removed) leaves it in place while it is
    // served (podman's layer is a link to it).
    let store = env.path("store").display().to_string();
    let pull = [
        "pull",
        "--tls-verify=false",
        "--creds",
        CREDS,
        "--store",
        &store,
        &zc,
    ];
    env.layerfs(&pull);
    env.layerfs(&["rmi", "--store", &store, &zc]);
    let hex = diff_ids[0].strip_prefix("sha256:").unwrap();
    assert!(
        env.path("store/layers").join(hex).join("etc/motd").exists(),
        "rmi removed the served layer {hex}"
    );
    let out = p.podman(&["run", "--rm", &zc, "cat", "/etc/motd"]);
    assert_eq!(out, "zstd:chunked\n", "the served layer outlives an rmi");

    // Names that are no layer.
    let name = format!("{}/serve/zc:v1", env.reg.host());
    let zero = format!("sha256:{}", "0".repeat(64));
    // A digest the image lacks asks the registry again (a tag may have moved), but not on
    // every lookup: three misses in a row resolve the tag at most once.
    let resolves = || env.reg.log().matches("/v2/serve/zc/manifests/v1 ").count();
    let before = resolves();
    for _ in 0..3 {
        missing(&als.join(b64(&name)).join(&zero).join("diff"));
    }
    let asked = resolves() - before;
    assert!(asked <= 1, "three misses resolved the tag {asked} times");
    missing(&als.join("not base64!").join(&zero));
    missing(&als.join(b64(&name)).join("not-a-digest"));
    // An image on a registry that cannot be reached: EIO at once (logged), not a hang,
    // and not "not here".
    let gone = als.join(b64("127.0.0.1:1/serve/gone:v1")).join(&zero);
    let e = std::fs::metadata(&gone).expect_err("a layer of an unreachable registry");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{}: {e}", gone.display());
    // Only root looks under DIR (a lookup makes the daemon reach the registry it names).
    std::fs::set_permissions(
        env.tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let stat_as_nobody = |p: &Path| {
        Command::new("stat")
            .arg(p)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    // DIR itself is reachable (the denial below is DIR's own mode, not the temp dir's).
    ok(stat_as_nobody(&als), "stat DIR as nobody");
    let nobody = stat_as_nobody(&als.join(b64(&name)));
    assert!(
        !nobody.status.success(),
        "nobody looked under {}",
        als.display()
    );
    let said = String::from_utf8_lossy(&nobody.stderr);
    assert!(said.contains("Permission denied"), "{said}");
    // A layer in no seekable form is not served: podman downloads it as usual.
    let small = env.path("small");
    for d in ["bin", "etc"] {
        std::fs::create_dir_all(small.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", small.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", small.join("bin/cat")).unwrap();
    std::fs::write(small.join("etc/motd"), "gzip\n").unwrap();
    let (gz_name, gz_digest, _, _) = env.push(&small, "gzip", "gz", None);
    // podman's three stats of it (diff, info, blob) look at its descriptor once.
    for f in ["diff", "info", "blob"] {
        missing(&als.join(b64(&gz_name)).join(&gz_digest).join(f));
    }
    let looked = served
        .log()
        .lines()
        .filter(|l| l.contains(&gz_digest) && l.contains("not served"))
        .count();
    assert_eq!(looked, 1, "{}", served.log());
    p.podman(&[
        "pull",
        "-q",
        "--tls-verify=false",
        "--creds",
        CREDS,
        &gz_name,
    ]);
    assert!(
        env.reg
            .log()
            .lines()
            .any(|l| l.contains(&gz_digest) && l.contains("containers/")),
        "podman downloaded the gzip layer"
    );
    // Both in one image: a zstd:chunked layer on that gzip base is served, on top of the
    // base podman has.
    let top = env.path("top");
    std::fs::create_dir_all(top.join("etc")).unwrap();
    std::fs::write(top.join("etc/top"), "top\n").unwrap();
    let (two, two_digest, _, two_diff_id) = env.push(&top, "zstd:chunked", "two", Some("gz"));
    // Listing a layer directory names `diff` without opening its union (which would start
    // the layer's background fill).
    let mut names: Vec<String> = std::fs::read_dir(als.join(b64(&two)).join(&two_digest))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["blob", "diff", "info"]);
    let opened = format!("serving {two_diff_id}");
    assert!(
        !served.log().contains(&opened),
        "a listing opened the layer"
    );
    p.podman(&["pull", "-q", "--tls-verify=false", "--creds", CREDS, &two]);
    let out = p.podman(&["run", "--rm", &two, "cat", "/etc/motd", "/etc/top"]);
    assert_eq!(out, "gzip\ntop\n");
    assert!(served.log().contains(&opened), "{}", served.log());
    let layers: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.path("podman/graph/overlay-layers/layers.json")).unwrap(),
    )
    .unwrap();
    let top_layer = layers
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["compressed-diff-digest"] == two_digest.as_str())
        .expect("the top layer in podman's store");
    assert!(top_layer["parent"].is_string(), "{top_layer}");
    let top_id = top_layer["id"].as_str().unwrap();
    assert_eq!(
        std::fs::read_link(env.path("podman/graph/overlay").join(top_id).join("diff")).unwrap(),
        als.join(b64(&two)).join(&two_digest).join("diff")
    );
    drop(p);
    assert!(
        served.log().contains("lazy layer"),
        "the daemon logged: {}",
        served.log()
    );
}
