//! `layerfs commit -o lowerdir=...,upperdir=U --to DEST`: an upper's changes as one OCI
//! layer (see `layerfs_image::pack` for the conversion), delivered as a tar, a layer
//! directory, a new image in the store, or an image in an OCI layout.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use layerfs_image::commit::{layer_tar, Compress, LayerTar};
use layerfs_image::deliver::{deliver, rfc3339, Base, Dest, Outcome};
use layerfs_image::pack::{needs_merged, Mode};
use layerfs_image::progress;
use layerfs_image::store::{HistoryEntry, Store};

use super::imagecmd::{
    as_store_owner, lowerdir_option, print_json, private_mounts, Mounted, StoreArgs,
};

/// Where a made layer goes and how it is written (commit and squash).
#[derive(Args, Debug)]
pub struct LayerOutArgs {
    /// tar:FILE (or a plain path), dir:DIR, store:NAME[:TAG], oci:DIR:TAG.
    #[arg(long, value_name = "DEST")]
    pub to: String,
    /// Compression of a tar or OCI layer (default: none for tar, gzip for oci).
    #[arg(long, value_enum)]
    pub compress: Option<Compress>,
    /// Pin every entry's mtime (and the image's creation time) to these Unix seconds.
    #[arg(long, value_name = "SECONDS")]
    pub timestamp: Option<i64>,
}

/// Turn an upper directory into one OCI layer: a tar, a layer directory, a new image in the
/// store, or an image in an OCI layout.
#[derive(Args, Debug)]
pub struct CommitArgs {
    /// lowerdir=TOP:...:BOTTOM,upperdir=U (the mount's options; the lowers are needed only
    /// for renamed directories and metadata-only copies, whose content lies below).
    #[arg(short = 'o', value_name = "OPTIONS", required = true)]
    pub options: Vec<String>,
    /// The image the upper was made on (a store name): its config, history and layers go
    /// into store and OCI outputs; its layers are the lowers if none are given.
    #[arg(long, value_name = "IMAGE")]
    pub from: Option<String>,
    #[command(flatten)]
    pub out: LayerOutArgs,
    /// The history entry's comment (`inspect` shows it beside CREATED BY).
    #[arg(long, short = 'm')]
    pub message: Option<String>,
    /// The history entry's `created_by`: what made the layer (default: "layerfs commit").
    #[arg(long, value_name = "TEXT")]
    pub created_by: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CommitArgs) -> Result<i32> {
    let dest = Dest::parse(&args.out.to)?;
    let (lowers, upper) = layer_options(&args.options)?;
    let Some(upper) = upper else {
        bail!("commit needs -o upperdir=DIR (the layer to commit)");
    };
    let root = args.store.root();
    as_store_owner(|| {
        let store = Store::open(&root)?;
        let base = match &args.from {
            Some(name) => {
                let (_, img) = super::image_source::store_image(name, &root)?;
                Some(Base {
                    layers: img.layers,
                    config: img.config,
                    history: img.history,
                })
            }
            None => None,
        };
        let mut lowers = lowers.clone();
        if lowers.is_empty() {
            if let Some(name) = &args.from {
                let (_, img) = super::image_source::store_image(name, &root)?;
                lowers = store.lowers(&img)?;
            }
        }
        private_mounts()?;
        let mut tar = upper_layer(&store, &upper, &lowers, args.out.timestamp)?;
        let history = HistoryEntry {
            created: Some(rfc3339(args.out.timestamp)),
            created_by: Some(
                args.created_by
                    .clone()
                    .unwrap_or_else(|| "layerfs commit".into()),
            ),
            comment: args.message.clone(),
            empty_layer: false,
        };
        let out = deliver(
            &store,
            &mut tar,
            &dest,
            base,
            history,
            args.out.compress,
            args.out.timestamp,
        )?;
        report(&out, args.json)?;
        Ok(0)
    })
}

/// The layer tar of an upper made on `lowers` (top first): the one conversion `commit` and
/// `build` use. A renamed directory's content lies below: it is read through a mount of the
/// whole stack (a fresh workdir beside the upper; nothing is written through it), so the
/// caller must be in a mount namespace of its own when rootless ([`private_mounts`]).
pub fn upper_layer(
    store: &Store,
    upper: &Path,
    lowers: &[PathBuf],
    timestamp: Option<i64>,
) -> Result<LayerTar> {
    let (work, mnt);
    let mut merged = None;
    let mounted = if needs_merged(upper)? {
        if lowers.is_empty() {
            bail!(
                "{}: renamed directories and metadata-only copies keep content in the lowers; give them with -o lowerdir=...",
                upper.display()
            );
        }
        let parent = upper.parent().unwrap_or(Path::new("."));
        work = tempfile::Builder::new()
            .prefix(".layerfs-commit-work-")
            .tempdir_in(parent)
            .context("creating a workdir beside the upper")?;
        mnt = tempfile::Builder::new()
            .prefix("layerfs-commit-")
            .tempdir()
            .context("creating a temporary mountpoint")?;
        let opts = format!(
            "{},upperdir={},workdir={}",
            lowerdir_option(lowers),
            upper.display(),
            work.path().display()
        );
        let m = Mounted::new(&opts, mnt.path())?;
        merged = Some(mnt.path());
        Some(m)
    } else {
        None
    };
    let pb = progress::bytes("committing");
    let tick = |n: u64| pb.set_position(n);
    let tar = layer_tar(
        upper,
        Mode::Layer,
        timestamp,
        merged,
        lowers,
        &store.root().join("tmp"),
        &tick,
    )?;
    pb.finish_and_clear();
    drop(mounted);
    Ok(tar)
}

/// `lowerdir=` (top first) and `upperdir=` out of `-o` options; workdir and mount flags
/// are accepted and ignored (the same options as the mount that made the upper).
pub fn layer_options(options: &[String]) -> Result<(Vec<PathBuf>, Option<PathBuf>)> {
    let (mut lowers, mut upper) = (Vec::new(), None);
    for item in options.iter().flat_map(|o| o.split(',')) {
        if let Some(v) = item.strip_prefix("lowerdir=") {
            lowers.extend(v.split(':').filter(|p| !p.is_empty()).map(PathBuf::from));
        } else if let Some(v) = item.strip_prefix("upperdir=") {
            upper = Some(PathBuf::from(v));
        }
    }
    Ok((lowers, upper))
}

pub fn report(out: &Outcome, json: bool) -> Result<()> {
    if json {
        return print_json(out);
    }
    println!("{} -> {}", out.diff_id, out.dest);
    if let Some(id) = &out.image_id {
        println!("image {id}");
    }
    if let Some(saved) = out.bytes_saved {
        println!(
            "{saved} bytes ({}) of file content saved against the stacked layers \
             (inspect's reclaimable)",
            layerfs_image::manifest::human(saved.max(0) as u64)
        );
    }
    Ok(())
}
