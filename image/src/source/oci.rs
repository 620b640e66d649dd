//! OCI image layouts (`oci:DIR[:REF]`) and tars of them (`oci-archive:FILE[:REF]`):
//! `index.json` → (nested indexes, by platform) → manifest → config + layer blobs.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use super::archive::{DirFiles, Files, TarFiles};
use super::blob::{Compression, Digest};
use super::{attach_config, Image, ImageConfig, Layer, Limits, Location};
use crate::oci_write::go_arch;

/// The annotation that names an image in a layout.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// How deep indexes may nest before the layout is called absurd.
const MAX_NESTING: usize = 4;

#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub media_type: Option<String>,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub annotations: Option<HashMap<String, String>>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Deserialize, Clone, Debug)]
pub(crate) struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

impl Descriptor {
    fn ref_name(&self) -> Option<&str> {
        self.annotations.as_ref()?.get(REF_NAME).map(String::as_str)
    }

    pub(crate) fn is_index(&self) -> bool {
        matches!(
            self.media_type.as_deref(),
            Some(
                "application/vnd.oci.image.index.v1+json"
                    | "application/vnd.docker.distribution.manifest.list.v2+json"
            )
        )
    }

    pub(crate) fn digest(&self) -> Result<Digest> {
        Digest::parse(&self.digest)
    }

    /// The layer this manifest entry names (`digest`, its parsed digest), its blob at
    /// `location`: the one reading of a layer descriptor, for layouts and registries alike.
    pub(crate) fn layer(&self, digest: Digest, location: Location) -> Layer {
        let media_type = self.media_type.clone();
        Layer {
            id: digest.to_string(),
            compression: media_type.as_deref().and_then(Compression::from_media_type),
            digest: Some(digest),
            diff_id: None,
            media_type,
            size: Some(self.size),
            created_by: None,
            comment: None,
            location,
        }
    }
}

pub(super) fn open_dir(dir: &Path, reference: Option<&str>) -> Result<Image> {
    let files = DirFiles {
        root: dir.to_path_buf(),
    };
    open_layout(&files, reference, format!("oci:{}", dir.display()))
}

pub(super) fn open_archive(file: &Path, reference: Option<&str>) -> Result<Image> {
    let files = TarFiles::open(file)?;
    open_layout(&files, reference, format!("oci-archive:{}", file.display()))
}

fn open_layout(files: &dyn Files, reference: Option<&str>, name: String) -> Result<Image> {
    let where_ = files.describe();
    let index: Index = serde_json::from_slice(&files.json("index.json", None)?)
        .with_context(|| format!("{where_}: parsing index.json"))?;
    let top = &index.manifests;
    let chosen = match reference {
        Some(r) => top
            .iter()
            .find(|d| d.ref_name() == Some(r))
            .ok_or_else(|| anyhow!("{where_}: no image named {r:?} (names: {})", names(top)))?,
        None => match top.as_slice() {
            [one] => one,
            [] => bail!("{where_}: index.json lists no image"),
            _ => bail!(
                "{where_}: holds {} images; name one of: {}",
                top.len(),
                names(top)
            ),
        },
    };
    let mut desc = chosen.clone();
    let mut depth = 0;
    let manifest_json = loop {
        let digest = desc.digest()?;
        let json = files.json(&blob_name(&digest), Some(&digest))?;
        let nested = desc.is_index() || {
            // Media types are optional in old layouts: an index has `manifests`, no `config`.
            let probe: serde_json::Value =
                serde_json::from_slice(&json).with_context(|| format!("{where_}: {digest}"))?;
            probe.get("manifests").is_some() && probe.get("config").is_none()
        };
        if !nested {
            break json;
        }
        depth += 1;
        if depth > MAX_NESTING {
            bail!("{where_}: indexes nested more than {MAX_NESTING} deep");
        }
        let inner: Index = serde_json::from_slice(&json)
            .with_context(|| format!("{where_}: parsing index {digest}"))?;
        desc = pick_platform(&inner.manifests)
            .with_context(|| format!("{where_}: index {digest}"))?
            .clone();
    };
    let manifest_digest = desc.digest()?;
    let manifest: Manifest = serde_json::from_slice(&manifest_json)
        .with_context(|| format!("{where_}: parsing manifest {manifest_digest}"))?;
    let config_digest = manifest.config.digest()?;
    let config = ImageConfig::parse(&files.json(&blob_name(&config_digest), Some(&config_digest))?)
        .with_context(|| format!("{where_}: config {config_digest}"))?;
    if !config.diff_ids.is_empty() && config.diff_ids.len() != manifest.layers.len() {
        bail!(
            "{where_}: the config lists {} layers, the manifest {}",
            config.diff_ids.len(),
            manifest.layers.len()
        );
    }
    let mut layers = Vec::new();
    for d in &manifest.layers {
        let digest = d.digest()?;
        let blob = files.blob(&blob_name(&digest))?;
        if blob.len != d.size {
            bail!(
                "{where_}: layer {digest} is {} bytes, the manifest says {}",
                blob.len,
                d.size
            );
        }
        layers.push(d.layer(digest, Location::Blob(blob)));
    }
    attach_config(&mut layers, &config);
    Ok(Image {
        name,
        layers,
        config: Some(config),
        config_digest: Some(config_digest),
        manifest_digest: Some(manifest_digest),
        limits: Limits::default(),
    })
}

/// Parses `json` as each of the documents of a layout (for the fuzz targets): an index
/// (and the manifest its platforms choose), a manifest, every digest they name.
pub(crate) fn parse_documents(json: &[u8]) {
    if let Ok(index) = serde_json::from_slice::<Index>(json) {
        let _ = names(&index.manifests);
        if let Ok(d) = pick_platform(&index.manifests) {
            let _ = (d.is_index(), d.digest());
        }
        for d in &index.manifests {
            let _ = (d.ref_name(), d.digest().map(|d| blob_name(&d)));
        }
    }
    if let Ok(m) = serde_json::from_slice::<Manifest>(json) {
        for d in std::iter::once(&m.config).chain(&m.layers) {
            let _ = d.digest().map(|d| blob_name(&d));
            let _ = d
                .media_type
                .as_deref()
                .and_then(Compression::from_media_type);
        }
    }
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn names(ds: &[Descriptor]) -> String {
    let v: Vec<&str> = ds.iter().filter_map(Descriptor::ref_name).collect();
    if v.is_empty() {
        "(none named)".into()
    } else {
        v.join(", ")
    }
}

/// The manifest for this machine in a multi-platform index (or the only one): the one
/// platform choice, for layouts and registries alike.
pub(crate) fn pick_platform(ms: &[Descriptor]) -> Result<&Descriptor> {
    if let [one] = ms {
        return Ok(one);
    }
    ms.iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == go_arch())
        })
        .ok_or_else(|| anyhow!("no manifest for linux/{} among {}", go_arch(), ms.len()))
}
