//! `layerfs images`: the images of the store.

use anyhow::Result;
use clap::Args;

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
    println!("{:<40} {:<14} {:>6} {:>12}", "NAME", "ID", "LAYERS", "SIZE");
    for i in &images {
        let size: u64 = i.layers.iter().map(|l| l.size).sum();
        let id = i.id.trim_start_matches("sha256:");
        let names = if i.names.is_empty() {
            vec!["<none>".to_string()]
        } else {
            i.names.clone()
        };
        for n in names {
            println!(
                "{:<40} {:<14} {:>6} {:>12}",
                n,
                &id[..12.min(id.len())],
                i.layers.len(),
                human(size)
            );
        }
    }
    Ok(0)
}

/// 1.5 MB style sizes (decimal units, as podman shows them).
pub fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}
