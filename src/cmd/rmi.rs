//! `layerfs rmi IMAGE`: remove an image and every layer no other image uses.

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::imagecmd::{as_store_owner, print_json, StoreArgs};

/// Remove an image from the store, and the layers no other image uses.
#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Image names (NAME[:TAG]) or ids (a prefix of 6 or more hex digits).
    #[arg(required = true)]
    pub images: Vec<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Removed {
    id: String,
    names: Vec<String>,
    layers_removed: Vec<String>,
}

pub fn run(args: RmiArgs) -> Result<i32> {
    let root = args.store.root();
    // Rootless layers hold files of the subordinate ids: removed from the user namespace.
    as_store_owner(|| {
        let store = layerfs_image::store::Store::open(&root)?;
        let mut out = Vec::new();
        for name in &args.images {
            let (image, layers) = store.remove(name)?;
            if !args.json {
                println!(
                    "removed {} ({}), {} layer(s) freed",
                    name,
                    image.id,
                    layers.len()
                );
            }
            out.push(Removed {
                id: image.id,
                names: image.names,
                layers_removed: layers,
            });
        }
        if args.json {
            print_json(&out)?;
        }
        Ok(0)
    })
}
