//! `layerfs df [--json]`: what the store holds and what its images share, as
//! `podman system df -v` shows it. A layer's size is its uncompressed tar's (what the image
//! record keeps, podman's measure too); a layer used by two images or more is *shared*, and
//! counted once in the store's total; an image's *unique* size is its layers no other image
//! uses (what `rmi` would free).

use std::collections::HashMap;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::imagecmd::{print_json, StoreArgs};
use layerfs_image::manifest::human;

/// Show the store's size and, per image, its size, shared size and unique size.
#[derive(Args, Debug)]
pub struct DfArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct ImageUsage {
    pub id: String,
    pub names: Vec<String>,
    pub layers: usize,
    pub size: u64,
    pub shared_size: u64,
    pub unique_size: u64,
}

#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Every distinct layer once.
    pub total: u64,
    /// The same sum if no layer were shared (each image counted in full).
    pub without_sharing: u64,
    pub layers: usize,
    pub images: Vec<ImageUsage>,
}

/// The accounting, from the image records alone.
pub fn usage(images: &[layerfs_image::store::ImageRecord]) -> Usage {
    // How many images use each layer (an image listing a layer twice counts once).
    let mut users: HashMap<&str, (usize, u64)> = HashMap::new();
    for i in images {
        let mut seen = std::collections::HashSet::new();
        for l in &i.layers {
            if seen.insert(l.diff_id.as_str()) {
                users.entry(&l.diff_id).or_insert((0, l.size)).0 += 1;
            }
        }
    }
    let out = images
        .iter()
        .map(|i| {
            let mut seen = std::collections::HashSet::new();
            let (mut size, mut shared) = (0, 0);
            for l in i.layers.iter().filter(|l| seen.insert(l.diff_id.as_str())) {
                size += l.size;
                if users[l.diff_id.as_str()].0 > 1 {
                    shared += l.size;
                }
            }
            ImageUsage {
                id: i.id.clone(),
                names: i.names.clone(),
                layers: i.layers.len(),
                size,
                shared_size: shared,
                unique_size: size - shared,
            }
        })
        .collect::<Vec<_>>();
    Usage {
        total: users.values().map(|(_, s)| s).sum(),
        without_sharing: out.iter().map(|i| i.size).sum(),
        layers: users.len(),
        images: out,
    }
}

pub fn run(args: DfArgs) -> Result<i32> {
    let store = args.store.open()?;
    let u = usage(&store.images()?);
    if args.json {
        print_json(&u)?;
        return Ok(0);
    }
    // Names last, so a long one never pushes the other columns out of line (as `images`).
    println!(
        "{:<12}  {:>10}  {:>11}  {:>11}  NAMES",
        "ID", "SIZE", "SHARED SIZE", "UNIQUE SIZE"
    );
    for i in &u.images {
        let (id, names) = super::images::id_and_names(&i.id, &i.names);
        println!(
            "{id:<12}  {:>10}  {:>11}  {:>11}  {names}",
            human(i.size),
            human(i.shared_size),
            human(i.unique_size)
        );
    }
    println!();
    println!(
        "total {} in {} layers ({} if nothing were shared)",
        human(u.total),
        u.layers,
        human(u.without_sharing)
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use layerfs_image::store::ImageRecord;

    /// An image record as the store reads one (fields the test does not care about take
    /// their serde defaults).
    fn img(id: &str, layers: &[(&str, u64)]) -> ImageRecord {
        let layers: Vec<_> = layers
            .iter()
            .map(|(d, s)| serde_json::json!({"diff_id": d, "size": s}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "id": id, "names": [format!("{id}:latest")], "layers": layers, "config": {}
        }))
        .unwrap()
    }

    #[test]
    fn a_shared_base_counts_once() {
        // The seeds' three images on one 200 MB base: 200 + 20 + 100, not 720.
        let base = ("base", 200);
        let u = usage(&[
            img("a", &[base]),
            img("b", &[base, ("b1", 20)]),
            img("c", &[base, ("c1", 100)]),
        ]);
        assert_eq!(u.total, 320);
        assert_eq!(u.without_sharing, 720);
        assert_eq!(u.layers, 3);
        let b = &u.images[1];
        assert_eq!((b.size, b.shared_size, b.unique_size), (220, 200, 20));
        let a = &u.images[0];
        assert_eq!((a.size, a.shared_size, a.unique_size), (200, 200, 0));
    }
}
