//! `layerfs serve-layers [--tls-verify=false] DIR`: podman's *additional layer store* on
//! DIR, as stargz-store serves it: with `additionallayerstores = ["DIR:ref"]` in
//! storage.conf, podman finds the layers of the images it pulls under
//! `DIR/<base64(ref)>/<blob digest>/` and uses their `diff` instead of downloading them.
//! Seekable layers (zstd:chunked, eStargz) are lazy store layers, their files fetched by
//! range from the registry when first opened (docs/ARCHITECTURE.md, "podman's additional
//! layer store"). The contract is `image::als`; the filesystem `tree.rs`.

mod tree;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use layerfs_base::sys;
use layerfs_image::als::LayerStore;

use super::imagecmd::StoreArgs;
use super::pull::RegistryArgs;

/// Serve podman's additional layer store on DIR.
#[derive(Args, Debug)]
pub struct ServeLayersArgs {
    /// The directory to mount the store on (storage.conf: additionallayerstores = ["DIR:ref"]).
    pub dir: PathBuf,
    /// Stay in the foreground.
    #[arg(short = 'f', long)]
    pub foreground: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(mut args: ServeLayersArgs) -> Result<()> {
    // The daemon works from `/`: paths given relative to here are made absolute first.
    for p in [
        &mut args.store.store,
        &mut args.registry.authfile,
        &mut args.registry.cert_dir,
    ]
    .into_iter()
    .flatten()
    {
        *p = std::path::absolute(&*p).with_context(|| format!("{}", p.display()))?;
    }
    if sys::geteuid() != 0 {
        bail!(
            "serve-layers needs root: podman's store (rootful) reads the layers it serves, \
             with their owners"
        );
    }
    let dir = super::mount::check_mountpoint(&args.dir)?;
    let store = args.store.open()?;
    let opts = args.registry.options()?;
    let fs = tree::LayerStoreFs::new(LayerStore::new(store, opts))?;
    // Single-threaded so far: nothing has spawned a thread before this fork.
    super::mount::daemonize("the daemon", args.foreground, |report| {
        super::mount::serve_core(fs, dir, "layerfs-layers", report)
    })
}
