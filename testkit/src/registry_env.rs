//! What the registry tests share (`tests/registry.rs`, `tests/lazy_registry.rs`): layerfs
//! run with a private HOME and registries.conf, skopeo, and the checks of a store a failed
//! pull must leave as it was.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::{ok, BIN};

/// layerfs with a private HOME (no auth files of the host's) and registries.conf.
pub struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// `insecure`: registries marked `insecure = true`; `search`: the unqualified search list.
    pub fn new(insecure: &[String], search: &[String]) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("layerfs-reg-test-")
            .tempdir()
            .unwrap();
        let mut conf = format!(
            "unqualified-search-registries = [{}]\n",
            search
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for h in insecure {
            conf.push_str(&format!(
                "[[registry]]\nlocation = {h:?}\ninsecure = true\n"
            ));
        }
        std::fs::write(dir.path().join("registries.conf"), conf).unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        Env { dir }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn store(&self) -> String {
        self.path("store").display().to_string()
    }

    pub fn layerfs(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("CONTAINERS_REGISTRIES_CONF", self.path("registries.conf"))
            .env("HOME", self.path("home"))
            .env("XDG_RUNTIME_DIR", self.path("home"))
            .env_remove("REGISTRY_AUTH_FILE")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = ok(self.layerfs(args), &format!("layerfs {}", args.join(" ")));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}

/// A command's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `skopeo ARGS`, which must succeed: its stdout.
pub fn skopeo(args: &[&str]) -> String {
    let o = Command::new("skopeo")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("skopeo");
    ok(&o, &format!("skopeo {}", args.join(" ")))
}

/// The layer digests of a manifest in the registry, as skopeo reads it.
pub fn layer_digests(reference: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
    args.extend_from_slice(extra);
    args.push(reference);
    let m: serde_json::Value = serde_json::from_str(&skopeo(&args)).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Nothing of a failed pull in the store: no image, no layer, no kept blob, nothing in tmp.
pub fn assert_store_clean(store: &str) {
    for sub in ["images", "layers", "kept", "tmp"] {
        let d = Path::new(store).join(sub);
        let left: Vec<_> = std::fs::read_dir(&d)
            .map(|r| r.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{} holds {left:?}", d.display());
    }
}
