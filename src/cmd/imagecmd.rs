//! What the image commands (import, images, rmi, commit, squash) share: the store option,
//! running as the store's owner (rootless: root of a user namespace holding the caller's
//! subordinate ids, as rootless podman stores layers). Progress bars are
//! `layerfs_image::progress`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use layerfs_base::sys;
use layerfs_image::store::Store;

/// `--store DIR`.
#[derive(Args, Debug, Clone, Default)]
pub struct StoreArgs {
    /// The layer store (default: $XDG_DATA_HOME/layerfs, or /var/lib/layerfs as root).
    #[arg(long, value_name = "DIR", global = true)]
    pub store: Option<PathBuf>,
}

impl StoreArgs {
    /// The store's directory; resolved before entering a user namespace (where HOME is the
    /// same but the uid is 0).
    pub fn root(&self) -> PathBuf {
        self.store.clone().unwrap_or_else(Store::default_root)
    }

    pub fn open(&self) -> Result<Store> {
        Store::open(&self.root())
    }
}

/// Runs `f` with the ids the store's files carry: directly as root; otherwise as root of a
/// new user namespace mapping the caller to 0 and its /etc/subuid range to 1.. (what
/// `layerfs run` and rootless podman use), so the layers' owners are kept. Returns `f`'s
/// exit status.
pub fn as_store_owner(f: impl FnOnce() -> Result<i32>) -> Result<i32> {
    if sys::geteuid() == 0 {
        return f();
    }
    let child = |mapped: bool| -> Result<i32> {
        if !mapped {
            anyhow::bail!("could not map the subordinate ids");
        }
        f()
    };
    let (pid, mapped) = super::rootless::fork_mapped("layerfs", 1, child)?;
    let status = sys::waitpid(pid, 0)?.map(|(_, s)| s.status()).unwrap_or(1);
    if let Err(why) = mapped {
        anyhow::bail!(
            "{why}: a rootless store needs the caller's subordinate ids \
             (/etc/subuid, /etc/subgid and newuidmap from the uidmap package)"
        );
    }
    Ok(status)
}

/// Prints `value` as JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// In a user namespace: a mount namespace of our own, so a FUSE mount made for reading
/// lives and dies with it.
pub fn private_mounts() -> Result<()> {
    if sys::geteuid() == 0 && sys::in_user_namespace() {
        sys::unshare(libc::CLONE_NEWNS).context("creating a mount namespace")?;
    }
    Ok(())
}

/// `lowerdir=A:B:...` for layer dirs given top first.
pub fn lowerdir_option(lowers: &[PathBuf]) -> String {
    let joined: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    format!("lowerdir={}", joined.join(":"))
}

/// A layerfs mount made by this binary, unmounted when dropped.
pub struct Mounted<'a>(&'a std::path::Path);

impl<'a> Mounted<'a> {
    pub fn new(options: &str, mp: &'a std::path::Path) -> Result<Mounted<'a>> {
        let exe = std::env::current_exe().context("finding the layerfs binary")?;
        let out = std::process::Command::new(exe)
            .arg("-o")
            .arg(options)
            .arg(mp)
            .stdin(std::process::Stdio::null())
            .output()
            .context("mounting the stack")?;
        if !out.status.success() {
            anyhow::bail!(
                "mounting the stack: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Mounted(mp))
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        if let Err(e) = super::umount::unmount(self.0, true) {
            log::warn!("{e:#}");
        }
    }
}
