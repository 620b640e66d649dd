//! Pulling: manifest (through an index to this machine's platform, chosen by the same code
//! as for `oci:` layouts), config, then the layer blobs downloaded in parallel into a
//! directory, each digest-checked as it arrives. The image is an ordinary
//! [`source::Image`] whose layers are those files ([`image`]); [`download`] fills them,
//! marking each in [`Ready`] as it arrives, so the importer unpacks a layer while the next
//! ones still download.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use indicatif::{MultiProgress, ProgressBar};

use anyhow::{anyhow, bail, Context, Result};

use super::client::Client;
use super::reference::Reference;
use crate::progress;
use crate::source::oci::{pick_platform, Index, Manifest};
use crate::source::{self, attach_config, BlobRef, Digest, ImageConfig, Location};

/// How many layers download at once.
const PARALLEL: usize = 4;
/// How deep indexes may nest.
const MAX_NESTING: usize = 4;

/// A manifest resolved to one image: its digest, the manifest, the config.
pub struct Resolved {
    pub manifest_digest: Digest,
    pub(crate) manifest: Manifest,
    pub config_digest: Digest,
    pub config: ImageConfig,
}

impl Resolved {
    pub fn layer_count(&self) -> usize {
        self.manifest.layers.len()
    }
}

/// The manifest `reference` names, through indexes to this platform's, and its config.
pub fn resolve(client: &Client, reference: &Reference) -> Result<Resolved> {
    let repo = &reference.repo;
    let (mut bytes, mut media_type, mut digest) =
        client.get_manifest(repo, reference.target_str())?;
    let mut depth = 0;
    loop {
        let probe: serde_json::Value =
            serde_json::from_slice(&bytes).with_context(|| format!("manifest {digest}"))?;
        if probe.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
            bail!("manifest {digest} is Docker schema 1, which layerfs does not read");
        }
        let is_index = media_type.contains("index") || media_type.contains("manifest.list") || {
            probe.get("manifests").is_some() && probe.get("config").is_none()
        };
        if !is_index {
            break;
        }
        depth += 1;
        if depth > MAX_NESTING {
            bail!("indexes nested more than {MAX_NESTING} deep");
        }
        let index: Index =
            serde_json::from_slice(&bytes).with_context(|| format!("parsing index {digest}"))?;
        let chosen = pick_platform(&index.manifests)
            .with_context(|| format!("index {digest}"))?
            .digest()?;
        (bytes, media_type, digest) = client.get_manifest(repo, chosen.as_str())?;
        if digest != chosen {
            bail!("manifest digest mismatch: expected {chosen}, received {digest}");
        }
    }
    let manifest: Manifest =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing manifest {digest}"))?;
    let config_digest = manifest.config.digest()?;
    if manifest.config.size > source::MAX_JSON {
        bail!("config {config_digest} is {} bytes", manifest.config.size);
    }
    let config_bytes = client.fetch_blob_range(repo, &config_digest, 0, manifest.config.size)?;
    let got = Digest::of(sha2::Digest::new_with_prefix(&config_bytes));
    if got != config_digest {
        bail!("config digest mismatch: expected {config_digest}, received {got}");
    }
    let config =
        ImageConfig::parse(&config_bytes).with_context(|| format!("config {config_digest}"))?;
    if !config.diff_ids.is_empty() && config.diff_ids.len() != manifest.layers.len() {
        bail!(
            "the config lists {} layers, the manifest {}",
            config.diff_ids.len(),
            manifest.layers.len()
        );
    }
    Ok(Resolved {
        manifest_digest: digest,
        manifest,
        config_digest,
        config,
    })
}

/// Progress of a pull, per layer: `start(i, size)`, `bytes(i, so_far)`, `done(i)`.
pub trait Progress: Sync {
    fn start(&self, layer: usize, size: u64);
    fn bytes(&self, layer: usize, so_far: u64);
    fn done(&self, layer: usize);
}

/// The image `resolved` describes, its layers' blobs to be downloaded into `dir` (one file
/// per blob, named by its digest) by [`download`].
pub fn image(reference: &Reference, resolved: &Resolved, dir: &Path) -> Result<source::Image> {
    let m = &resolved.manifest;
    let mut layers = Vec::with_capacity(m.layers.len());
    for d in &m.layers {
        let digest = d.digest()?;
        let blob = BlobRef {
            path: dir.join(digest.hex()),
            offset: 0,
            len: d.size,
        };
        layers.push(d.layer(digest, Location::Blob(blob)));
    }
    attach_config(&mut layers, &resolved.config);
    Ok(source::Image {
        name: reference.to_string(),
        layers,
        config: Some(resolved.config.clone()),
        config_digest: Some(resolved.config_digest.clone()),
        manifest_digest: Some(resolved.manifest_digest.clone()),
        limits: Default::default(),
    })
}

/// Which layers of a pull have arrived: the importer waits for each in turn while the
/// others still download.
pub struct Ready {
    slots: Mutex<Vec<Option<Result<(), String>>>>,
    changed: Condvar,
    cancelled: AtomicBool,
}

impl Ready {
    pub fn new(layers: usize) -> Ready {
        Ready {
            slots: Mutex::new(vec![None; layers]),
            changed: Condvar::new(),
            cancelled: AtomicBool::new(false),
        }
    }

    fn set(&self, layer: usize, r: &Result<()>) {
        let mut slots = self.slots.lock().expect("not poisoned");
        slots[layer] = Some(r.as_ref().map(|_| ()).map_err(|e| format!("{e:#}")));
        self.changed.notify_all();
    }

    /// Blocks until layer `layer` is downloaded (or skipped); its download's error if any.
    pub fn wait(&self, layer: usize) -> Result<()> {
        let mut slots = self.slots.lock().expect("not poisoned");
        loop {
            if let Some(r) = &slots[layer] {
                return r.clone().map_err(|e| anyhow!(e));
            }
            slots = self.changed.wait(slots).expect("not poisoned");
        }
    }

    /// No more downloads are started (the importer failed).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }
}

/// Downloads the blobs of `img` (made by [`image`]), [`PARALLEL`] at a time in layer
/// order, except the layers whose diff_id `have` says the store has; each layer is marked
/// in `ready` as it arrives (or fails, or is skipped).
pub fn download(
    client: &Client,
    reference: &Reference,
    img: &source::Image,
    have: &(dyn Fn(&Digest) -> bool + Sync),
    progress: &dyn Progress,
    ready: &Ready,
) {
    let mut wanted = Vec::new();
    for (i, l) in img.layers.iter().enumerate() {
        if l.diff_id.as_ref().is_some_and(have) {
            ready.set(i, &Ok(()));
        } else {
            wanted.push((i, l));
        }
    }
    crate::par::map_with(
        &wanted,
        PARALLEL,
        || (),
        |_, (i, l)| {
            let r = if ready.cancelled.load(Ordering::SeqCst) {
                Err(anyhow!("cancelled"))
            } else {
                let digest = l.digest.as_ref().expect("registry layers have digests");
                let size = l.size.unwrap_or(0);
                let Location::Blob(b) = &l.location else {
                    unreachable!("registry layers are blobs")
                };
                progress.start(*i, size);
                let r = client.fetch_blob(&reference.repo, digest, Some(size), &b.path, &|n| {
                    progress.bytes(*i, n)
                });
                progress.done(*i);
                r
            };
            ready.set(*i, &r);
        },
    );
}

/// One spinner per layer being downloaded (the one progress style, `crate::progress`).
pub struct LayerBars {
    group: MultiProgress,
    bars: Mutex<HashMap<usize, ProgressBar>>,
    count: usize,
}

impl LayerBars {
    pub fn new(count: usize) -> LayerBars {
        LayerBars {
            group: progress::group(),
            bars: Mutex::new(HashMap::new()),
            count,
        }
    }
}

impl Progress for LayerBars {
    fn start(&self, layer: usize, size: u64) {
        let what = format!(
            "layer {}/{} ({})",
            layer + 1,
            self.count,
            crate::manifest::human(size)
        );
        let pb = self.group.add(progress::bytes(&what));
        self.bars.lock().expect("not poisoned").insert(layer, pb);
    }

    fn bytes(&self, layer: usize, so_far: u64) {
        if let Some(pb) = self.bars.lock().expect("not poisoned").get(&layer) {
            pb.set_position(so_far);
        }
    }

    fn done(&self, layer: usize) {
        if let Some(pb) = self.bars.lock().expect("not poisoned").remove(&layer) {
            pb.finish_and_clear();
        }
    }
}

/// A layer to be pulled lazily: its table of contents, read from the registry by range,
/// and the blob it is in.
pub struct LazyPull {
    pub diff_id: Digest,
    pub opened: crate::lazy::Opened,
    pub source: crate::lazy::RegistrySource,
}

/// Layer `layer` of `resolved` as a lazy layer, when its descriptor's annotations give a
/// seekable form's TOC digest (zstd:chunked's checksum, eStargz's `toc.digest`) and the
/// config its diff_id: only the TOC is fetched (a few range requests), checked against
/// that digest. `None` for any other layer (it is downloaded whole): a TOC found by the
/// footer alone is not tied to the manifest, so it is not trusted for a registry's blob.
/// A TOC that cannot be read is logged and the layer downloaded whole too.
pub fn open_lazy(
    client: &std::sync::Arc<Client>,
    reference: &Reference,
    resolved: &Resolved,
    opts: &super::Options,
    layer: usize,
) -> Result<Option<LazyPull>> {
    use crate::lazy::read::{CHECKSUM_KEYS, ESTARGZ_TOC_DIGEST};
    let d = &resolved.manifest.layers[layer];
    let empty = HashMap::new();
    let annotations = d.annotations.as_ref().unwrap_or(&empty);
    let tied = CHECKSUM_KEYS
        .iter()
        .chain(std::iter::once(&ESTARGZ_TOC_DIGEST))
        .any(|k| annotations.contains_key(*k));
    let Some(diff_id) = resolved.config.diff_ids.get(layer).cloned() else {
        return Ok(None);
    };
    if !tied {
        return Ok(None);
    }
    let digest = d.digest()?;
    let source = crate::lazy::RegistrySource::with_client(
        std::sync::Arc::clone(client),
        reference.clone(),
        digest.clone(),
        d.size,
        opts.clone(),
    );
    match crate::lazy::open(&source, annotations) {
        Ok(opened) => Ok(Some(LazyPull {
            diff_id,
            opened,
            source,
        })),
        Err(e) => {
            log::warn!("{reference}: layer {digest}: no lazy pull ({e:#}); downloading it whole");
            Ok(None)
        }
    }
}

/// A layer without a table of contents, to be fetched whole after the pull (a lazy pull's
/// plain gzip, zstd or tar layer): its diff_id, its blob's record, its compression.
pub struct WholePull {
    pub diff_id: Digest,
    pub source: crate::format::lazy::Source,
    pub compression: source::Compression,
}

/// Layer `layer` of `resolved` as a lazy layer arriving whole, when the config gives its
/// diff_id (the store's name for it) and its media type a compression; `None` otherwise
/// (it is downloaded as any pull does). The registry is asked whether it has the blob (a
/// HEAD request), so a pull fails now, not a mount later, for a blob that is not there;
/// its bytes are checked when they are streamed.
pub fn open_whole(
    client: &Client,
    reference: &Reference,
    resolved: &Resolved,
    opts: &super::Options,
    layer: usize,
) -> Result<Option<WholePull>> {
    let d = &resolved.manifest.layers[layer];
    let Some(diff_id) = resolved.config.diff_ids.get(layer).cloned() else {
        return Ok(None);
    };
    let Some(compression) = d
        .media_type
        .as_deref()
        .and_then(source::Compression::from_media_type)
    else {
        return Ok(None);
    };
    let digest = d.digest()?;
    if !client.has_blob(&reference.repo, &digest, false)? {
        bail!("blob {digest}: not in the registry");
    }
    let blob = crate::lazy::RegistrySource::new(reference.clone(), digest, d.size, opts.clone());
    Ok(Some(WholePull {
        diff_id,
        source: blob.record(),
        compression,
    }))
}
