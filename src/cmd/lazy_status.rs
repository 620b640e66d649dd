//! `layerfs lazy status [TARGET]`: which layers of an image (or of the image a mount shows)
//! are lazy, in which form, and how far each is from whole (`image::lazy::status`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use layerfs_base::sys::mountinfo;
use layerfs_image::lazy::status::{self, LayerStatus};
use layerfs_image::manifest::human;
use layerfs_image::store::{ImageRecord, Store};
use serde::Serialize;

use super::imagecmd::{print_json, StoreArgs};

/// Lazily pulled layers.
#[derive(Args, Debug)]
pub struct LazyArgs {
    #[command(subcommand)]
    pub cmd: LazyCmd,
}

#[derive(Subcommand, Debug)]
pub enum LazyCmd {
    /// Per layer of an image: its form (zstd:chunked, estargz, gzip-whole, zstd-whole,
    /// local), the blob's bytes fetched and the files filled so far, and its state (lazy,
    /// fetching, whole).
    Status(StatusArgs),
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// A mount point of `layerfs mount IMAGE` (the image it shows), or an image of the
    /// store (NAME[:TAG], docker://REF); every image of the store when left out.
    pub target: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct ImageStatus {
    id: String,
    names: Vec<String>,
    layers: Vec<Layer>,
}

#[derive(Serialize)]
struct Layer {
    /// The layer's diff_id.
    digest: String,
    #[serde(flatten)]
    status: LayerStatus,
}

pub fn run(args: LazyArgs) -> Result<i32> {
    let LazyCmd::Status(args) = args.cmd;
    let store = args.store.open()?;
    let images = match &args.target {
        None => store.images()?,
        Some(t) => vec![image_of(&store, t)?],
    };
    let mut out = Vec::with_capacity(images.len());
    for i in images {
        let mut layers = Vec::with_capacity(i.layers.len());
        for l in &i.layers {
            let dir = store.layer_dir(&l.diff_id)?;
            let status = status::of(&dir).with_context(|| format!("layer {}", l.diff_id))?;
            layers.push(Layer {
                digest: l.diff_id.clone(),
                status,
            });
        }
        out.push(ImageStatus {
            id: i.id,
            names: i.names,
            layers,
        });
    }
    if args.json {
        print_json(&out)?;
        return Ok(0);
    }
    for i in &out {
        let (id, names) = super::images::id_and_names(&i.id, &i.names);
        println!("{id}  {names}");
        println!(
            "  {:<12}  {:<12}  {:<8}  {:>21}  {:>15}",
            "LAYER", "FORM", "STATE", "FETCHED", "FILES"
        );
        for l in &i.layers {
            let s = &l.status;
            let bytes = match (s.bytes_fetched, s.bytes_total) {
                (Some(f), Some(t)) => format!("{} / {}", human(f), human(t)),
                (Some(f), None) => human(f),
                _ => "-".into(),
            };
            let files = match (s.files_filled, s.files_total) {
                (Some(f), Some(t)) => format!("{f} / {t}"),
                (Some(f), None) => format!("{f} / ?"),
                _ => "-".into(),
            };
            let short = l.digest.trim_start_matches("sha256:");
            println!(
                "  {:<12}  {:<12}  {:<8}  {bytes:>21}  {files:>15}",
                &short[..12.min(short.len())],
                s.form,
                s.state
            );
        }
    }
    Ok(0)
}

/// The image `target` names: a mount point's source, or a store name or reference.
fn image_of(store: &Store, target: &str) -> Result<ImageRecord> {
    let path = Path::new(target);
    let mut name = target.to_string();
    if path.is_absolute() || path.exists() {
        let mp = std::fs::canonicalize(path).with_context(|| target.to_string())?;
        let info = std::fs::read_to_string("/proc/self/mountinfo")?;
        match mountinfo::mount_source(&info, &mp) {
            Some(src) => name = src,
            None => bail!("{target}: not a mount point"),
        }
    }
    if let Some(r) = store.find(&name)? {
        return Ok(r);
    }
    if name.starts_with("docker://") {
        for r in layerfs_image::registry::reference::candidates(&name)? {
            if let Some(rec) = store.find(&r.name())? {
                return Ok(rec);
            }
        }
    }
    bail!("{target}: no image of the store is named {name} (a mount of lowerdir= paths names no image)")
}
