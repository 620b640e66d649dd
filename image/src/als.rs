//! podman's *additional layer store* (containers/storage's contract, as stargz-store serves
//! it), without the filesystem: what `layerfs serve-layers` answers for
//! `DIR/<base64(image reference)>/<layer blob digest>/{diff,info,blob,use}`.
//!
//! The contract, from containers/storage 1.43 (podman 4.3; `drivers/overlay/overlay.go`,
//! `getAdditionalLayerPath`, `store.go`, `LookupAdditionalLayer`) and containers/image 5.23
//! (`storage_dest.go`, `tryReusingBlobAsPending`), checked with podman here:
//! - podman asks for a layer by the image reference it pulls (`HOST/REPO:TAG` as
//!   containers/image spells a docker reference, base64 with padding) and the layer's
//!   *blob* digest (the manifest's, compressed); it `stat`s `diff`, `info` and `blob`, and
//!   any failure means "not here" (it then downloads the layer as usual);
//! - `info` is decoded as containers/storage's `Layer` JSON: `compressed-diff-digest`,
//!   `compressed-size`, `diff-digest` (the config's diff_id, which names the layer in the
//!   store: it must be right), `diff-size`, `compression` (its `archive.Compression`: 2
//!   gzip, 4 zstd);
//! - `diff` is the layer's tree, which the layer in podman's store becomes a symlink to;
//! - `blob` is read only when podman exports the layer (push, save);
//! - creating `use` says a layer is used and removing the layer directory (`rmdir`) that it
//!   is no longer; a store that counts them answers both with ENOENT.
//!
//! A layer is served when its descriptor annotates a zstd:chunked or eStargz TOC: it is made
//! a lazy store layer from that TOC as `pull --lazy` makes it ([`registry::pull::open_lazy`],
//! [`Store::add_lazy`]), its files fetched on first open by the mount's lazy hook.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use base64::Engine;

use crate::lazy::{Form, RangeSource, RegistrySource};
use crate::registry::{self, pull, Client, Options, Reference};
use crate::store::Store;

/// `archive.Compression` of containers/storage, as `info`'s `compression` gives it.
const COMPRESSION_GZIP: u8 = 2;
const COMPRESSION_ZSTD: u8 = 4;

/// What containers/storage decodes from `info` (the fields of its `Layer` it uses).
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Info {
    #[serde(rename = "compressed-diff-digest")]
    pub compressed_digest: String,
    #[serde(rename = "compressed-size")]
    pub compressed_size: u64,
    #[serde(rename = "diff-digest")]
    pub diff_digest: String,
    /// The uncompressed tar's size as the TOC gives it (its files' bytes and a header
    /// block each): the real tar is not known without reading the whole blob.
    #[serde(rename = "diff-size")]
    pub diff_size: u64,
    pub compression: u8,
}

/// A layer served: its store directory (lazy until filled), `info` and its blob.
pub struct Layer {
    /// The store layer (`STORE/layers/<hex of diff_id>`).
    pub dir: PathBuf,
    pub diff_id: String,
    /// `info`'s bytes.
    pub info: Vec<u8>,
    /// The blob's size, as its descriptor gives it (`info`'s `compressed-size`).
    blob_size: u64,
    /// The blob, on the connection its image was resolved with (credentials included).
    blob: Arc<RegistrySource>,
}

impl Layer {
    /// The blob on this store's connection, where the lazy layer's files come from when
    /// the layer was made from it (a lazy record keeps no credentials, so a source made
    /// from it would have none).
    pub fn blob(&self) -> &Arc<RegistrySource> {
        &self.blob
    }

    /// The blob's size (`blob`'s).
    pub fn blob_size(&self) -> u64 {
        self.blob_size
    }

    /// Up to `len` bytes of the blob at `offset` (fewer at its end), from the registry.
    pub fn read_blob(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let size = self.blob_size();
        let len = len.min(size.saturating_sub(offset));
        if len == 0 {
            return Ok(Vec::new());
        }
        self.blob.read_range(offset, len)
    }
}

/// An image reference resolved to its manifest and config.
struct Image {
    client: Arc<Client>,
    resolved: pull::Resolved,
    /// When the registry was asked.
    at: Instant,
}

/// How long a resolved image answers a digest its manifest lacks without asking the
/// registry again: podman stats a layer's `diff`, `info` and `blob` in a row, and each miss
/// would resolve the tag anew.
const MISS_FRESH: Duration = Duration::from_secs(5);

/// A layer of an image: the image's `HOST/REPO:TAG` and the layer's blob digest.
type Key = (String, String);

/// The layers of images in registries, served as an additional layer store.
pub struct LayerStore {
    store: Store,
    opts: Options,
    images: Mutex<HashMap<String, Arc<Image>>>,
    /// Per reference: held while it is resolved (parallel lookups of a new image's layers
    /// resolve it once).
    resolving: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    layers: Mutex<HashMap<Key, Arc<Layer>>>,
    /// Layers not served (not in the image, no TOC), and when that was found: asked again
    /// only after [`MISS_FRESH`] (podman stats three names of each layer it looks for).
    misses: Mutex<HashMap<Key, Instant>>,
    /// Per layer: held while it is made (two lookups of one layer make it once; other
    /// layers are made meanwhile, as podman asks for an image's layers in parallel).
    making: Mutex<HashMap<Key, Arc<Mutex<()>>>>,
    /// The layers served, by diff_id, pinned in the store for as long as this process
    /// serves them: they are in no image record, and an `rmi` of an image sharing one
    /// would remove it under podman (whose layer links to it).
    pins: Mutex<HashMap<String, crate::store::Pin>>,
}

/// The image reference a directory name of the store's top level stands for
/// (`base64(HOST/REPO:TAG)`); `None` for any other name.
pub fn reference_of(name: &[u8]) -> Option<Reference> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(name)
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    Reference::parse_qualified(&s).ok()
}

/// The directory name of image `reference` (`HOST/REPO:TAG`) in the store's top level.
pub fn dir_name(reference: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(reference)
}

impl LayerStore {
    pub fn new(store: Store, opts: Options) -> LayerStore {
        LayerStore {
            store,
            opts,
            images: Mutex::new(HashMap::new()),
            resolving: Mutex::new(HashMap::new()),
            layers: Mutex::new(HashMap::new()),
            making: Mutex::new(HashMap::new()),
            misses: Mutex::new(HashMap::new()),
            pins: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Layer `digest` (a blob digest) of image `reference`: made a lazy store layer on first
    /// use; `None` when the image has no such layer or the layer is not seekable (no TOC
    /// digest in its descriptor). A registry that cannot be reached is an error.
    pub fn layer(&self, reference: &Reference, digest: &str) -> Result<Option<Arc<Layer>>> {
        let key = (reference.name(), digest.to_string());
        let known = || -> Option<Option<Arc<Layer>>> {
            if let Some(l) = lock(&self.layers).get(&key) {
                return Some(Some(Arc::clone(l)));
            }
            let missed = lock(&self.misses).get(&key).copied();
            missed.filter(|t| t.elapsed() < MISS_FRESH).map(|_| None)
        };
        if let Some(l) = known() {
            return Ok(l);
        }
        let gate = Arc::clone(lock(&self.making).entry(key.clone()).or_default());
        let _one = lock(&gate);
        if let Some(l) = known() {
            return Ok(l);
        }
        let made = self.make(reference, digest)?;
        match &made {
            Some(l) => {
                lock(&self.layers).insert(key.clone(), Arc::clone(l));
                lock(&self.misses).remove(&key);
            }
            None => {
                lock(&self.misses).insert(key, Instant::now());
            }
        }
        Ok(made)
    }

    /// [`LayerStore::layer`] asking the registry (under the layer's gate).
    fn make(&self, reference: &Reference, digest: &str) -> Result<Option<Arc<Layer>>> {
        // A tag may have moved since the image was resolved: a digest its manifest lacks
        // asks the registry again, once, unless it was asked a moment ago.
        let mut found = None;
        for max_age in [None, Some(MISS_FRESH)] {
            let image = self.image(reference, max_age)?;
            let index = image
                .resolved
                .manifest
                .layers
                .iter()
                .position(|d| d.digest == digest);
            if let Some(i) = index {
                found = Some((image, i));
                break;
            }
        }
        let Some((image, i)) = found else {
            log::info!("{reference}: no layer {digest}");
            return Ok(None);
        };
        let what = format!("{reference}: layer {digest}");
        let Some(l) = pull::open_lazy(&image.client, reference, &image.resolved, &self.opts, i)
            .with_context(|| what.clone())?
        else {
            log::info!("{what}: no TOC in its descriptor; not served (podman downloads it)");
            return Ok(None);
        };
        let diff_id = l.diff_id.to_string();
        // Pinned before it is looked for: a removal either ran before or leaves it.
        if !lock(&self.pins).contains_key(&diff_id) {
            let pin = self.store.pin(&diff_id).with_context(|| what.clone())?;
            lock(&self.pins).insert(diff_id.clone(), pin);
        }
        if !self.store.has_layer(&diff_id) {
            let unpack = crate::unpack::Options::for_this_process();
            self.store
                .add_lazy(&diff_id, &l.opened, l.source.record(), &unpack)
                .with_context(|| what.clone())?;
            let (bytes, requests) = l.source.counts();
            log::info!(
                "{what}: lazy layer {diff_id} ({} entries; its TOC took {bytes} bytes in {requests} requests)",
                l.opened.toc.entries.len()
            );
        }
        let info = Info {
            compressed_digest: digest.to_string(),
            compressed_size: l.source.size()?,
            diff_digest: diff_id.clone(),
            diff_size: tar_size(&l.opened.toc),
            compression: match l.opened.form {
                Form::ZstdChunked => COMPRESSION_ZSTD,
                Form::Estargz => COMPRESSION_GZIP,
            },
        };
        let layer = Arc::new(Layer {
            dir: self.store.layer_dir(&diff_id)?,
            diff_id,
            blob_size: info.compressed_size,
            info: serde_json::to_vec(&info)?,
            blob: Arc::new(l.source),
        });
        Ok(Some(layer))
    }

    /// `reference` resolved: the one resolved before when it is no older than `max_age`
    /// (any age: `None`), else asked again. One lookup per reference asks at a time; the
    /// others wait for its answer.
    fn image(&self, reference: &Reference, max_age: Option<Duration>) -> Result<Arc<Image>> {
        let name = reference.name();
        let cached = || {
            lock(&self.images)
                .get(&name)
                .filter(|i| max_age.is_none_or(|m| i.at.elapsed() < m))
                .map(Arc::clone)
        };
        if let Some(i) = cached() {
            return Ok(i);
        }
        let gate = Arc::clone(lock(&self.resolving).entry(name.clone()).or_default());
        let _one = lock(&gate);
        if let Some(i) = cached() {
            return Ok(i);
        }
        let at = Instant::now();
        let client = Arc::new(registry::connect(reference, &self.opts)?);
        let resolved = pull::resolve(&client, reference).with_context(|| reference.to_string())?;
        let image = Arc::new(Image {
            client,
            resolved,
            at,
        });
        lock(&self.images).insert(name, Arc::clone(&image));
        Ok(image)
    }
}

/// The tar's size as a TOC gives it: a header block per entry, each file's bytes in whole
/// blocks, the two closing blocks.
fn tar_size(toc: &crate::lazy::Toc) -> u64 {
    // Saturating: the sizes come from an untrusted TOC.
    toc.entries.iter().fold(1024u64, |n, e| {
        n.saturating_add(512)
            .saturating_add(e.size.div_ceil(512).saturating_mul(512))
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_are_base64_of_the_reference() {
        let name = dir_name("127.0.0.1:5000/app/x:v1");
        assert_eq!(name, "MTI3LjAuMC4xOjUwMDAvYXBwL3g6djE=");
        let r = reference_of(name.as_bytes()).unwrap();
        assert_eq!(r.name(), "127.0.0.1:5000/app/x:v1");
        assert!(reference_of(b"not base64!").is_none());
        // An unqualified name is not what containers/image sends.
        assert!(reference_of(dir_name("app:v1").as_bytes()).is_none());
    }

    #[test]
    fn info_has_the_field_names_containers_storage_decodes() {
        let info = Info {
            compressed_digest: "sha256:aa".into(),
            compressed_size: 10,
            diff_digest: "sha256:bb".into(),
            diff_size: 20,
            compression: COMPRESSION_ZSTD,
        };
        let v: serde_json::Value = serde_json::to_value(&info).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"compressed-diff-digest": "sha256:aa", "compressed-size": 10,
                "diff-digest": "sha256:bb", "diff-size": 20, "compression": 4})
        );
    }
}
