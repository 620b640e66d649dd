//! `layerfs push IMAGE docker://REF`: a store image sent to a registry. It is written as an
//! OCI image in the store's `tmp/` (the layers as the blobs they came in as while their
//! files are unchanged, so they keep their digests: the code of `commit --to oci:`), then
//! pushed: each blob asked for first and skipped when the registry has it, mounted from the
//! repository the image was pulled from when that is on the same registry, else uploaded;
//! the manifest last.

use anyhow::{Context, Result};
use clap::Args;
use layerfs_image::commit::Compress;
use layerfs_image::oci_write::Layout;
use layerfs_image::registry::{push, Reference};

use super::imagecmd::{as_store_owner, print_json, StoreArgs};
use super::pull::RegistryArgs;
use layerfs_image::deliver::{aligned_history, export_layers, push_layout, rfc3339};

/// Push a store image to a registry.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// The store image (NAME[:TAG], an id, or any SOURCE, imported first).
    pub image: String,
    /// docker://HOST[:PORT]/REPO[:TAG].
    pub dest: String,
    /// Compression of layers that have no blob of their own to send (default gzip).
    #[arg(long, value_enum)]
    pub compress: Option<Compress>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: PushArgs) -> Result<i32> {
    let root = args.store.root();
    let dest = Reference::parse(&args.dest)?;
    let opts = args.registry.options()?;
    let (_, record) = super::image_source::store_image_with(&args.image, &root, &opts)?;
    as_store_owner(|| {
        let store = args.store.open()?;
        let tmp = tempfile::Builder::new()
            .prefix("push-")
            .tempdir_in(store.root().join("tmp"))
            .context("creating a directory in the store")?;
        let dir = tmp.path().join("oci");
        let layout = Layout::create(&dir)?;
        let how = args.compress.unwrap_or(Compress::Gzip);
        let layers = export_layers(&store, &layout, &record.layers, how, None)?;
        let history = aligned_history(record.layers.len(), record.history.clone());
        // The image's own time (its newest history entry's), so pushing it again makes the
        // same config and manifest.
        let created = record
            .created
            .clone()
            .or_else(|| record.history.iter().rev().find_map(|h| h.created.clone()))
            .unwrap_or_else(|| rfc3339(Some(0)));
        let (manifest, _) =
            layout.write_image("latest", &record.config, &history, &created, &layers)?;
        let pushed = push_layout(
            &dir,
            &manifest.digest,
            &dest,
            &opts,
            Some(record.source.as_str()),
        )?;
        if args.json {
            print_json(&pushed)?;
        } else {
            let count = |f: push::BlobFate| {
                pushed
                    .layers
                    .iter()
                    .chain([&pushed.config])
                    .filter(|b| b.fate == f)
                    .count()
            };
            println!(
                "{} -> {} ({} blobs uploaded, {} mounted, {} already there)",
                pushed.manifest_digest,
                pushed.reference,
                count(push::BlobFate::Uploaded),
                count(push::BlobFate::Mounted),
                count(push::BlobFate::Present)
            );
        }
        Ok(0)
    })
}
