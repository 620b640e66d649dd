//! `layerfs import SOURCE`: an image's layers unpacked into the store (each once, shared by
//! every image that has it), its config and layer list kept under its names.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use layerfs_image::import::import;
use layerfs_image::source::OpenOptions;
use layerfs_image::store::{normalize_name, Store};
use serde::Serialize;

use super::image_source::Named;
use super::imagecmd::{as_store_owner, print_json, StoreArgs};

/// Import an image into the layer store.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF],
    /// containers-storage:IMAGE, docker://HOST/REPO[:TAG] or lowerdir=TOP:...:BOTTOM; a
    /// store image (store:NAME or NAME) is only given the --name names.
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
    /// How to reach the registry of a docker:// SOURCE (pulled into the store, then named).
    #[command(flatten)]
    pub registry: super::pull::RegistryArgs,
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
    let named = super::image_source::resolve(&args.source, &root, &args.registry.options()?)?;
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
                    lazy: args.registry.lazy,
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
