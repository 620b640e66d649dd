//! `layerfs images`: the images of the store.

use anyhow::Result;
use clap::Args;

use layerfs_image::manifest::human;

use super::imagecmd::{print_json, StoreArgs};

/// List the images of the layer store.
#[derive(Args, Debug)]
pub struct ImagesArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ImagesArgs) -> Result<i32> {
    let store = args.store.open()?;
    let images = store.images()?;
    if args.json {
        // Each image as its record, with the layers still lazy (files not fetched yet).
        let mut out = Vec::with_capacity(images.len());
        for i in &images {
            let mut v = serde_json::to_value(i)?;
            let mut lazy = Vec::new();
            for l in &i.layers {
                let dir = store.layer_dir(&l.diff_id)?;
                if let Some(n) = layerfs_image::lazy::layer::pending_files(&dir)? {
                    // A layer arriving whole has no files listed until it is in (0 here):
                    // its form says so (`layerfs lazy status` says how far it is).
                    let form = layerfs_image::lazy::status::of(&dir)?.form;
                    lazy.push(serde_json::json!({
                        "diff_id": l.diff_id,
                        "form": form,
                        "pending_files": n,
                    }));
                }
            }
            v["lazy_layers"] = serde_json::Value::Array(lazy);
            out.push(v);
        }
        print_json(&out)?;
        return Ok(0);
    }
    // The names last, so a long one never pushes the other columns out of line.
    println!("{:<12}  {:>6}  {:>10}  NAMES", "ID", "LAYERS", "SIZE");
    for i in &images {
        let size: u64 = i.layers.iter().map(|l| l.size).sum();
        let (id, names) = id_and_names(&i.id, &i.names);
        println!(
            "{id:<12}  {:>6}  {:>10}  {names}",
            i.layers.len(),
            human(size)
        );
    }
    Ok(0)
}

/// An image's short id (12 hex digits) and its names for a table's last column
/// (`<none>` for an image without one): `images` and `df` print them alike.
pub(crate) fn id_and_names<'a>(id: &'a str, names: &[String]) -> (&'a str, String) {
    let id = id.trim_start_matches("sha256:");
    let names = if names.is_empty() {
        "<none>".to_string()
    } else {
        names.join(", ")
    };
    (&id[..12.min(id.len())], names)
}
