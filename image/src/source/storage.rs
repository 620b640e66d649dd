//! `containers-storage:IMAGE`: podman's store read directly, without running podman.
//!
//! The overlay driver's layout: `overlay-images/images.json` (id, names, top layer),
//! `overlay-images/<id>/=<base64 key>` (big data: the config under `sha256:<id>`),
//! `overlay-layers/layers.json` (id, parent, diff digests and sizes) and each layer's files
//! in `overlay/<id>/diff` (kernel whiteouts, opaque xattrs: read by the directory walker).
//! Ids from the JSON are checked to be 64 hex digits before they become path components.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use super::blob::Digest;
use super::{attach_config, read_json_bytes, Image, ImageConfig, Layer, Limits, Location};
use crate::sys;

#[derive(Deserialize)]
struct StoredImage {
    id: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    layer: Option<String>,
}

#[derive(Deserialize)]
struct StoredLayer {
    id: String,
    #[serde(default)]
    parent: Option<String>,
    #[serde(rename = "diff-digest", default)]
    diff_digest: Option<String>,
    #[serde(rename = "compressed-diff-digest", default)]
    compressed_digest: Option<String>,
    #[serde(rename = "diff-size", default)]
    diff_size: Option<u64>,
}

/// The graphroot podman uses by default for this user.
pub fn default_root() -> PathBuf {
    if sys::geteuid() == 0 {
        return PathBuf::from("/var/lib/containers/storage");
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            Path::new(&home).join(".local/share")
        });
    data.join("containers/storage")
}

fn check_id(id: &str) -> Result<&str> {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        bail!("malformed id {id:?} in the store")
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let bytes = read_json_bytes(f, &path.display().to_string())?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Standard base64 (with padding), as containers-storage names big-data files.
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn matches(img: &StoredImage, want: &str) -> bool {
    let want_id = want.strip_prefix("sha256:").unwrap_or(want);
    (want_id.len() >= 3 && img.id.starts_with(want_id))
        || img
            .names
            .iter()
            .any(|n| super::archive::tag_matches(n, want))
}

pub(super) fn open(want: &str, root: Option<&Path>) -> Result<Image> {
    let root = root.map(Path::to_path_buf).unwrap_or_else(default_root);
    let images: Vec<StoredImage> = read_json(&root.join("overlay-images/images.json"))
        .with_context(|| format!("reading podman's store at {}", root.display()))?;
    let found: Vec<&StoredImage> = images.iter().filter(|i| matches(i, want)).collect();
    let img = match found.as_slice() {
        [one] => *one,
        [] => bail!(
            "containers-storage: no image {want:?} in {}",
            root.display()
        ),
        many => bail!(
            "containers-storage: {want:?} is ambiguous in {} ({} images)",
            root.display(),
            many.len()
        ),
    };
    let id = check_id(&img.id)?;
    let config_key = format!("sha256:{id}");
    let config_path = root
        .join("overlay-images")
        .join(id)
        .join(format!("={}", base64(config_key.as_bytes())));
    let config_digest = Digest::parse(&config_key)?;
    let config = match std::fs::File::open(&config_path) {
        Ok(f) => {
            let raw = read_json_bytes(
                super::blob::Verify::new(f, config_digest.clone(), "config"),
                "the config",
            )?;
            Some(ImageConfig::parse(&raw).with_context(|| format!("{}", config_path.display()))?)
        }
        // An image imported from a tar without a config is still a stack of layers.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("opening {}", config_path.display())),
    };
    let stored: Vec<StoredLayer> = read_json(&root.join("overlay-layers/layers.json"))?;
    let mut chain = Vec::new();
    let mut next = img.layer.clone();
    while let Some(lid) = next {
        if chain.len() > 1000 {
            bail!("containers-storage: layer chain of {id} is longer than 1000 (a loop?)");
        }
        let l = stored
            .iter()
            .find(|l| l.id == lid)
            .ok_or_else(|| anyhow!("containers-storage: layer {lid} of image {id} is missing"))?;
        chain.push(l);
        next = l.parent.clone();
    }
    chain.reverse();
    let mut layers = Vec::new();
    for l in chain {
        let lid = check_id(&l.id)?;
        let diff = root.join("overlay").join(lid).join("diff");
        let diff_id = l.diff_digest.as_deref().map(Digest::parse).transpose()?;
        layers.push(Layer {
            id: diff_id
                .as_ref()
                .map(Digest::to_string)
                .unwrap_or_else(|| lid.to_string()),
            digest: l
                .compressed_digest
                .as_deref()
                .map(Digest::parse)
                .transpose()?,
            diff_id,
            media_type: None,
            compression: None,
            size: l.diff_size,
            created_by: None,
            comment: None,
            location: Location::Dir(diff),
        });
    }
    if let Some(c) = &config {
        attach_config(&mut layers, c);
    }
    Ok(Image {
        name: format!("containers-storage:{want}"),
        layers,
        config,
        config_digest: Some(config_digest),
        manifest_digest: img.digest.as_deref().map(Digest::parse).transpose()?,
        limits: Limits::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_the_store_names_files() {
        assert_eq!(base64(b"manifest"), "bWFuaWZlc3Q=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }
}
