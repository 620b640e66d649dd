//! `layerfs import SOURCE`: an image's layers unpacked into the store (each once, shared by
//! every image that has it), its config and layer list kept under its names.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use layerfs_image::commit::{layer_tar, Compress};
use layerfs_image::pack::Mode;
use layerfs_image::progress;
use layerfs_image::source::{self, Compression, Location, OpenOptions};
use layerfs_image::store::{
    normalize_name, record_id, BlobRecord, HistoryEntry, ImageRecord, LayerRecord, RunConfig, Store,
};
use layerfs_image::unpack;
use serde::Serialize;

use super::image_source::Named;
use super::imagecmd::{as_store_owner, print_json, StoreArgs};

/// Import an image into the layer store.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF],
    /// containers-storage:IMAGE or lowerdir=TOP:...:BOTTOM; a store image (store:NAME or
    /// NAME) is only given the --name names.
    pub source: String,
    /// Name the image NAME[:TAG] in the store (it is always findable by SOURCE too).
    #[arg(long)]
    pub name: Vec<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// podman's store root for containers-storage: (default: /var/lib/containers/storage as
    /// root, ~/.local/share/containers/storage otherwise).
    #[arg(long, value_name = "DIR")]
    pub storage_root: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Imported<'a> {
    id: &'a str,
    names: &'a [String],
    layers: Vec<ImportedLayer>,
}

#[derive(Serialize)]
struct ImportedLayer {
    diff_id: String,
    size: u64,
    /// Already in the store (shared with another image).
    reused: bool,
}

pub fn run(args: ImportArgs) -> Result<i32> {
    let root = args.store.root();
    // A store image already is imported: `import store:NAME --name NEW` (or a bare NAME)
    // only gives it the new names.
    let named = super::image_source::resolve(&args.source, &root)?;
    as_store_owner(|| {
        let store = Store::open(&root)?;
        let (record, reused) = match &named {
            Named::Store { record, .. } => {
                let mut record = (**record).clone();
                for n in args.name.iter().map(|n| normalize_name(n)) {
                    if !record.names.contains(&n) {
                        record.names.push(n);
                    }
                }
                store.publish(Vec::new(), &record)?;
                let reused = vec![true; record.layers.len()];
                (record, reused)
            }
            Named::Source(_) => {
                let mut names = args.name.clone();
                names.push(args.source.clone());
                let opts = OpenOptions {
                    storage_root: args.storage_root.clone(),
                    ..OpenOptions::default()
                };
                import(&store, &args.source, &names, &opts)?
            }
        };
        if args.json {
            print_json(&Imported {
                id: &record.id,
                names: &record.names,
                layers: record
                    .layers
                    .iter()
                    .zip(reused)
                    .map(|(l, reused)| ImportedLayer {
                        diff_id: l.diff_id.clone(),
                        size: l.size,
                        reused,
                    })
                    .collect(),
            })?;
        } else {
            let shared = reused.iter().filter(|r| **r).count();
            println!(
                "{} ({} layers, {shared} already in the store) as {}",
                record.id,
                record.layers.len(),
                record.names.join(", ")
            );
        }
        Ok(0)
    })
}

/// Imports `source` into `store` under `names`; returns the record and, per layer, whether
/// the store already had it. Nothing is published unless every layer unpacked and matched
/// its digest.
pub fn import(
    store: &Store,
    source: &str,
    names: &[String],
    open: &OpenOptions,
) -> Result<(ImageRecord, Vec<bool>)> {
    let img = source::open(source, open)?;
    let opts = unpack::Options::for_this_process();
    let mut staged = Vec::new();
    let mut layers = Vec::new();
    let mut reused = Vec::new();
    for (i, layer) in img.layers.iter().enumerate() {
        let what = format!("layer {}/{}", i + 1, img.layers.len());
        let known = layer.diff_id.as_ref().map(|d| d.as_str().to_string());
        if let Some(d) = known.as_deref().filter(|d| store.has_layer(d)) {
            // Sizes of shared layers come from the image that brought them.
            let known = store
                .images()?
                .into_iter()
                .flat_map(|i| i.layers.into_iter())
                .find(|l| l.diff_id == d);
            layers.push(LayerRecord {
                diff_id: d.to_string(),
                size: known.as_ref().map_or(0, |l| l.size),
                skipped_devices: known
                    .as_ref()
                    .map(|l| l.skipped_devices.clone())
                    .unwrap_or_default(),
                blob: blob_record(layer).or(known.and_then(|l| l.blob)),
            });
            reused.push(true);
            continue;
        }
        let pb = progress::bytes(&what);
        let s = match &layer.location {
            // The blob is kept as it came (digest checked), and unpacked from that copy.
            Location::Blob(b) => {
                let raw = pb.wrap_read(b.open_raw(layer.digest.as_ref())?);
                store.stage_blob(raw, layer.compression, known.as_deref(), &opts)
            }
            // A directory layer (a stack, podman's store): written as a tar first, so it
            // gets a diff_id and the same checks as any layer.
            Location::Dir(dir) => {
                let mut t = layer_tar(
                    dir,
                    Mode::Layer,
                    None,
                    None,
                    &[],
                    &store.root().join("tmp"),
                    &|n| pb.set_position(n),
                )?;
                store.stage_blob(t.reader()?, Some(Compression::None), None, &opts)
            }
        }
        .with_context(|| format!("{source}: {what} ({})", layer.id))?;
        pb.finish_and_clear();
        layers.push(LayerRecord {
            diff_id: s.diff_id.clone(),
            size: s.size,
            blob: blob_record(layer),
            skipped_devices: s.stats.skipped_devices.clone(),
        });
        staged.push(s);
        reused.push(false);
    }
    let cfg = img.config.clone().unwrap_or_default();
    let config = RunConfig {
        env: cfg.env,
        cmd: cfg.cmd,
        entrypoint: cfg.entrypoint,
        working_dir: cfg.working_dir,
        user: cfg.user,
        labels: cfg.labels,
        exposed_ports: cfg.exposed_ports,
    };
    let history: Vec<HistoryEntry> = cfg
        .history
        .into_iter()
        .map(|h| HistoryEntry {
            created: h.created,
            created_by: h.created_by,
            comment: h.comment,
            empty_layer: h.empty_layer,
        })
        .collect();
    let id = match &img.config_digest {
        Some(d) => d.as_str().to_string(),
        None => record_id(&layers, &config, &history),
    };
    let mut all_names: Vec<String> = names.iter().map(|n| normalize_name(n)).collect();
    all_names.dedup();
    // A re-import keeps the names the image already had.
    if let Some(old) = store.images()?.into_iter().find(|i| i.id == id) {
        for n in old.names {
            if !all_names.contains(&n) {
                all_names.push(n);
            }
        }
    }
    let record = ImageRecord {
        id,
        names: all_names,
        layers,
        config,
        history,
        created: None,
        source: source.to_string(),
    };
    store.publish(staged, &record)?;
    Ok((record, reused))
}

/// The blob a layer came from, with its OCI media type (from the compression: a docker
/// archive's media types name the same bytes).
fn blob_record(layer: &source::Layer) -> Option<BlobRecord> {
    let (Location::Blob(_), Some(digest), Some(size)) =
        (&layer.location, &layer.digest, layer.size)
    else {
        return None;
    };
    let compress = Compress::from(layer.compression?);
    Some(BlobRecord {
        digest: digest.as_str().to_string(),
        media_type: compress.media_type().to_string(),
        size,
    })
}
