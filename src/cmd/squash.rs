//! `layerfs squash SOURCE --to DEST`: the merged view of an image (or a stack) as one layer:
//! no whiteouts, no bytes that a higher layer hides, hard links kept.
//!
//! The merged view is read through a read-only layerfs mount of the stack, so the squashed
//! layer is by construction what the stack shows (rootless: inside the user and mount
//! namespaces of the store owner).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use layerfs_image::commit::layer_tar;
use layerfs_image::pack::Mode;
use layerfs_image::progress;
use layerfs_image::source::{walk, Kind, Limits};
use layerfs_image::store::{HistoryEntry, RunConfig, Store};

use super::commit::{report, LayerOutArgs};
use super::imagecmd::{as_store_owner, lowerdir_option, private_mounts, Mounted, StoreArgs};
use layerfs_image::deliver::{deliver, rfc3339, Base, Dest};

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
    // The stack: top first.
    let (lowers, config): (Vec<PathBuf>, RunConfig) = if args.source.contains("lowerdir=") {
        let (lowers, _) = super::commit::layer_options(std::slice::from_ref(&args.source))?;
        (lowers, RunConfig::default())
    } else {
        let (store, record) = super::image_source::store_image(&args.source, &root)?;
        (store.lowers(&record)?, record.config)
    };
    if lowers.is_empty() {
        bail!("{}: no layers", args.source);
    }
    as_store_owner(|| {
        let store = Store::open(&root)?;
        private_mounts()?;
        let stacked = lowers
            .iter()
            .map(|l| content_bytes(l))
            .sum::<Result<u64>>()?;
        let mnt = tempfile::Builder::new()
            .prefix("layerfs-squash-")
            .tempdir()
            .context("creating a temporary mountpoint")?;
        let mounted = Mounted::new(&lowerdir_option(&lowers), mnt.path())?;
        let pb = progress::bytes("squashing");
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
        // File content, as inspect counts it: what the layers store less what the squashed
        // layer stores is exactly inspect's "reclaimable" (never negative: the squashed
        // layer's files are a subset of the stack's).
        out.bytes_saved = Some(stacked.saturating_sub(tar.stats.bytes) as i64);
        report(&out, args.json)?;
        Ok(0)
    })
}

/// The file content a layer directory stores, each hard-linked file once: inspect's "bytes
/// added" of the layer (tar headers and padding are not content).
fn content_bytes(dir: &Path) -> Result<u64> {
    let fd = layerfs_base::sys::open_host_dir(dir)
        .with_context(|| format!("layer {}", dir.display()))?;
    let mut total = 0;
    walk::walk_dir(fd, false, Limits::default(), &mut |e, _| {
        if e.kind == Kind::File {
            total += e.size;
        }
        Ok(())
    })
    .with_context(|| format!("layer {}", dir.display()))?;
    Ok(total)
}
