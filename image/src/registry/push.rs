//! Pushing: an image of an OCI layout (as `commit --to oci:` writes it, the unchanged
//! layers as the blobs they came in as) sent to a registry. Each blob is asked for first
//! (`HEAD`) and skipped when the repository has it; else mounted from the repository the
//! image came from when that is on the same registry; else uploaded. The manifest goes
//! last, so the tag never names a manifest whose blobs are missing.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::client::Client;
use super::reference::{Reference, Target};
use crate::source::oci::Manifest;
use crate::source::Digest;

/// What happened to each blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobFate {
    /// The repository had it.
    Present,
    /// Mounted from another repository of the registry.
    Mounted,
    Uploaded,
}

/// One blob of a push.
#[derive(Debug, Clone, Serialize)]
pub struct PushedBlob {
    pub digest: String,
    pub size: u64,
    pub fate: BlobFate,
}

/// The result of a push.
#[derive(Debug, Clone, Serialize)]
pub struct Pushed {
    pub reference: String,
    pub manifest_digest: String,
    pub config: PushedBlob,
    pub layers: Vec<PushedBlob>,
}

/// Pushes the manifest `manifest` (a digest of the layout at `layout`, with its media
/// type) and every blob it names to `dest`. `mount_from` is a repository of the same
/// registry that may hold the blobs already. `progress(done, total)` counts blobs.
pub fn push_layout(
    client: &Client,
    layout: &Path,
    manifest: &Digest,
    media_type: &str,
    dest: &Reference,
    mount_from: Option<&str>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Pushed> {
    let blob_path = |d: &Digest| layout.join("blobs/sha256").join(d.hex());
    let bytes = std::fs::read(blob_path(manifest))
        .with_context(|| format!("reading manifest {manifest} of {}", layout.display()))?;
    let parsed: Manifest =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing manifest {manifest}"))?;
    let mut blobs = Vec::new();
    for d in parsed.layers.iter().chain(std::iter::once(&parsed.config)) {
        blobs.push((d.digest()?, d.size));
    }
    let total = blobs.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let repo = dest.repo.as_str();
    let from = mount_from.filter(|f| *f != repo);
    let fates = crate::par::map_with(
        &blobs,
        4,
        || (),
        |_, (digest, size)| {
            let fate = (|| {
                if client.has_blob(repo, digest, true)? {
                    return Ok(BlobFate::Present);
                }
                if let Some(from) = from {
                    if client.mount_blob(repo, digest, from)? {
                        return Ok(BlobFate::Mounted);
                    }
                }
                let path = blob_path(digest);
                let len = std::fs::metadata(&path)
                    .with_context(|| format!("blob {digest}: {}", path.display()))?
                    .len();
                if len != *size {
                    bail!("blob {digest} is {len} bytes in the layout, the manifest says {size}");
                }
                client.upload_blob(repo, digest, &path)?;
                Ok(BlobFate::Uploaded)
            })()
            .with_context(|| format!("blob {digest}"));
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress(n, total);
            fate
        },
    );
    let mut pushed = Vec::with_capacity(total);
    for ((digest, size), fate) in blobs.iter().zip(fates) {
        pushed.push(PushedBlob {
            digest: digest.to_string(),
            size: *size,
            fate: fate?,
        });
    }
    let target = match &dest.target {
        Target::Tag(t) => t.clone(),
        Target::Digest(d) => {
            if d != manifest {
                bail!("{dest}: the manifest to push is {manifest}, not {d}");
            }
            d.to_string()
        }
    };
    let digest = client.put_manifest(repo, &target, media_type, &bytes)?;
    let config = pushed.pop().expect("the config is last");
    Ok(Pushed {
        reference: dest.to_string(),
        manifest_digest: digest.to_string(),
        config,
        layers: pushed,
    })
}
