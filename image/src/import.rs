//! An image's layers unpacked into the store (each once, shared by every image that has
//! it), its config and layer list kept under its names (`layerfs import`, and every command
//! that opens a source by importing it first).

use anyhow::{Context, Result};

use crate::commit::{layer_tar, Compress};
use crate::pack::Mode;
use crate::progress;
use crate::source::{self, Compression, Location, OpenOptions};
use crate::store::{
    normalize_name, record_id, BlobRecord, HistoryEntry, ImageRecord, LayerRecord, RunConfig, Store,
};
use crate::unpack;

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
    import_image(store, &img, source, names, None, open.lazy)
}

/// Imports the opened image `img` (named `source` in messages and in the record) into
/// `store` under `names`, as [`import`] does (`lazy`: its `--lazy`). With `downloaded`, the layers' blob files are
/// downloads still arriving, checked against their digests as they were written, in the
/// store's `tmp/`: `downloaded(i)` waits for layer `i`'s, and the file is moved into the
/// store rather than copied.
pub fn import_image(
    store: &Store,
    img: &source::Image,
    source: &str,
    names: &[String],
    downloaded: Option<&dyn Fn(usize) -> Result<()>>,
    lazy: bool,
) -> Result<(ImageRecord, Vec<bool>)> {
    // The layers this import made lazy go again if a later step fails (unless an image
    // uses them), as a failed import leaves the store as it was.
    let mut made_lazy = Vec::new();
    let r = import_layers(store, img, source, names, downloaded, lazy, &mut made_lazy);
    if r.is_err() && !made_lazy.is_empty() {
        if let Err(u) = store.remove_unused_layers(&made_lazy) {
            log::warn!("{source}: removing the lazy layers of a failed import: {u:#}");
        }
    }
    r
}

fn import_layers(
    store: &Store,
    img: &source::Image,
    source: &str,
    names: &[String],
    downloaded: Option<&dyn Fn(usize) -> Result<()>>,
    lazy: bool,
    made_lazy: &mut Vec<String>,
) -> Result<(ImageRecord, Vec<bool>)> {
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
            // A layer no image has yet: made lazily (a lazy pull) just before.
            let size = match &known {
                Some(l) => l.size,
                None => crate::lazy::layer::estimated_size(&store.layer_dir(d)?)?.unwrap_or(0),
            };
            layers.push(LayerRecord {
                diff_id: d.to_string(),
                size,
                skipped_devices: known
                    .as_ref()
                    .map(|l| l.skipped_devices.clone())
                    .unwrap_or_default(),
                blob: blob_record(layer).or(known.and_then(|l| l.blob)),
            });
            reused.push(true);
            continue;
        }
        if let Some(wait) = downloaded {
            wait(i).with_context(|| format!("{source}: {what} ({})", layer.id))?;
        }
        if lazy {
            if let Some(rec) = lazy_layer(store, layer, known.as_deref(), &opts)
                .with_context(|| format!("{source}: {what} ({})", layer.id))?
            {
                made_lazy.push(rec.diff_id.clone());
                layers.push(rec);
                reused.push(false);
                continue;
            }
        }
        let pb = progress::bytes(&what);
        let s = match &layer.location {
            Location::Blob(b) if downloaded.is_some() => {
                let digest = layer
                    .digest
                    .as_ref()
                    .context("a download without a digest")?;
                store.stage_blob_file(&b.path, digest, layer.compression, known.as_deref(), &opts)
            }
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

/// With `--lazy`: a layer whose blob is a whole local file in a seekable form becomes a lazy
/// store layer; `None` for any other layer (unpacked as usual). The blob is checked against
/// its digest in full first: a local read, and what ties the TOC (found by the blob's
/// footer) to the manifest. The layer is named by the config's diff_id, which is not
/// recomputed (that would take decompressing the whole blob, what a lazy layer avoids).
fn lazy_layer(
    store: &Store,
    layer: &source::Layer,
    diff_id: Option<&str>,
    opts: &unpack::Options,
) -> Result<Option<LayerRecord>> {
    let (Location::Blob(b), Some(diff_id)) = (&layer.location, diff_id) else {
        return Ok(None);
    };
    let src = crate::lazy::FileSource::open(&b.path)?;
    if b.offset != 0 || crate::lazy::RangeSource::size(&src)? != b.len {
        return Ok(None); // a blob inside an archive
    }
    let Ok(opened) = crate::lazy::open(&src, &Default::default()) else {
        return Ok(None); // not seekable: unpacked whole
    };
    std::io::copy(
        &mut b.open_raw(layer.digest.as_ref())?,
        &mut std::io::sink(),
    )
    .context("checking the blob's digest")?;
    let path = std::fs::canonicalize(&b.path)?;
    store.add_lazy(
        diff_id,
        &opened,
        crate::format::lazy::Source::File { path },
        opts,
    )?;
    let size = crate::lazy::layer::estimated_size(&store.layer_dir(diff_id)?)?.unwrap_or(0);
    Ok(Some(LayerRecord {
        diff_id: diff_id.to_string(),
        size,
        blob: blob_record(layer),
        skipped_devices: Vec::new(),
    }))
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
