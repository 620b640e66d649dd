//! `layerfs images`: the images of the store.

use anyhow::Result;
use clap::Args;

use layerfs::image::manifest::human;

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
        print_json(&images)?;
        return Ok(0);
    }
    // The names last, so a long one never pushes the other columns out of line.
    println!("{:<12}  {:>6}  {:>10}  NAMES", "ID", "LAYERS", "SIZE");
    for i in &images {
        let size: u64 = i.layers.iter().map(|l| l.size).sum();
        let id = i.id.trim_start_matches("sha256:");
        let names = if i.names.is_empty() {
            "<none>".to_string()
        } else {
            i.names.join(", ")
        };
        println!(
            "{:<12}  {:>6}  {:>10}  {names}",
            &id[..12.min(id.len())],
            i.layers.len(),
            human(size)
        );
    }
    Ok(0)
}
