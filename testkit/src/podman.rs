//! podman and skopeo on a private store (graphroot, runroot and engine state in a test's
//! temp dir, never the host's default store), with the runtime settings this host needs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::tree;

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// podman and skopeo on a private store (graphroot/runroot in the test's temp dir), with
/// the runtime settings this host needs (see CONTRACTS.md §4).
pub struct Podman {
    storage: PathBuf,
    containers: PathBuf,
}

impl Podman {
    pub fn new(base: &Path) -> Podman {
        Self::with_storage_options(base, "")
    }

    /// With `options` (TOML lines) under storage.conf's `[storage.options]`.
    pub fn with_storage_options(base: &Path, options: &str) -> Podman {
        let storage = base.join("storage.conf");
        std::fs::write(
            &storage,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n\
                 [storage.options]\n{options}\n",
                base.join("graph").display(),
                base.join("run").display()
            ),
        )
        .unwrap();
        let containers = base.join("containers.conf");
        // The engine's tmp_dir (exit codes, locks) is private too: the tests in this file
        // run at once, and one's `system reset` must not touch another's containers.
        std::fs::write(
            &containers,
            format!(
                "[containers]\nnetns = \"host\"\n\
                 default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
                 [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\ntmp_dir = \"{}\"\n",
                base.join("libpod").display()
            ),
        )
        .unwrap();
        Podman {
            storage,
            containers,
        }
    }

    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.env("CONTAINERS_STORAGE_CONF", &self.storage)
            .env("CONTAINERS_CONF", &self.containers)
            .stdin(Stdio::null());
        c
    }

    pub fn podman(&self, args: &[&str]) -> String {
        ok(
            self.cmd("podman").args(args).output().unwrap(),
            &format!("podman {}", args.join(" ")),
        )
    }

    pub fn skopeo(&self, args: &[&str]) -> String {
        ok(
            self.cmd("skopeo").args(args).output().unwrap(),
            &format!("skopeo {}", args.join(" ")),
        )
    }

    /// What `podman image mount` shows for `image`.
    pub fn image_tree(&self, image: &str) -> tree::Tree {
        let mp = self.podman(&["image", "mount", image]);
        let t = tree::snapshot(Path::new(mp.trim()));
        self.podman(&["image", "unmount", image]);
        t
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .cmd("podman")
            .args(["system", "reset", "--force"])
            .output();
    }
}
