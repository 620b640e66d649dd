//! `layerfs squash SOURCE --to DEST`: the merged view of an image (or a stack) as one layer:
//! no whiteouts, no bytes that a higher layer hides, hard links kept.
//!
//! The merged view is read through a read-only layerfs mount of the stack, so the squashed
//! layer is by construction what the stack shows (rootless: inside the user and mount
//! namespaces of the store owner).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use layerfs::image::commit::{layer_tar, HashWriter};
use layerfs::image::pack::{Mode, Packer};
use layerfs::image::store::{HistoryEntry, RunConfig, Store};

use super::commit::{deliver, report, rfc3339, Base, Dest, LayerOutArgs};
use super::imagecmd::{
    as_store_owner, lowerdir_option, private_mounts, progress, Mounted, StoreArgs,
};

/// Squash an image or a stack into one layer (tar, layer dir, store image, OCI image).
#[derive(Args, Debug)]
pub struct SquashArgs {
    /// A store image (NAME[:TAG] or id), an import SOURCE, or lowerdir=TOP:...:BOTTOM.
    pub source: String,
    #[command(flatten)]
    pub out: LayerOutArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: SquashArgs) -> Result<i32> {
    let dest = Dest::parse(&args.out.to)?;
    let root = args.store.root();
    // The stack: top first, with the stacked size when the store knows it.
    let (lowers, config, stacked): (Vec<PathBuf>, RunConfig, Option<u64>) =
        if args.source.contains("lowerdir=") {
            let (lowers, _) = super::commit::layer_options(std::slice::from_ref(&args.source))?;
            (lowers, RunConfig::default(), None)
        } else {
            let (store, record) = super::image_source::store_image(&args.source, &root)?;
            let size = record.layers.iter().map(|l| l.size).sum();
            (store.lowers(&record)?, record.config, Some(size))
        };
    if lowers.is_empty() {
        bail!("{}: no layers", args.source);
    }
    as_store_owner(|| {
        let store = Store::open(&root)?;
        private_mounts()?;
        let stacked = match stacked {
            Some(s) => s,
            None => stacked_size(&lowers)?,
        };
        let mnt = tempfile::Builder::new()
            .prefix("layerfs-squash-")
            .tempdir()
            .context("creating a temporary mountpoint")?;
        let mounted = Mounted::new(&lowerdir_option(&lowers), mnt.path())?;
        let pb = progress("squashing");
        let mut tar = layer_tar(
            mnt.path(),
            Mode::Tree,
            args.out.timestamp,
            None,
            &[],
            &store.root().join("tmp"),
            &|n| pb.set_position(n),
        );
        pb.finish_and_clear();
        drop(mounted);
        let tar = tar.as_mut().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let history = HistoryEntry {
            created: Some(rfc3339(args.out.timestamp)),
            created_by: Some(format!("layerfs squash {}", args.source)),
            comment: None,
            empty_layer: false,
        };
        let base = Base {
            layers: Vec::new(),
            config: config.clone(),
            history: Vec::new(),
        };
        let mut out = deliver(
            &store,
            tar,
            &dest,
            Some(base),
            history,
            args.out.compress,
            args.out.timestamp,
        )?;
        out.bytes_saved = Some(stacked as i64 - tar.size as i64);
        report(&out, args.json)?;
        Ok(0)
    })
}

/// The bytes of the layers as tars (what the stacked image ships).
fn stacked_size(lowers: &[PathBuf]) -> Result<u64> {
    let mut total = 0;
    for l in lowers {
        let mut p = Packer::new(HashWriter::new(std::io::sink()), Mode::Layer, None);
        p.add_tree(l)?;
        total += p.finish()?.count;
    }
    Ok(total)
}
