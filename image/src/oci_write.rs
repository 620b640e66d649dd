//! Writing an image into an OCI image layout: blobs, a config, a manifest, and the tag in
//! `index.json` (other tags of the layout are kept).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::commit::HashWriter;
use super::store::{digest_hex, HistoryEntry, RunConfig};

pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An OCI content descriptor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, Value>>,
}

/// A layer of the image being written: its blob descriptor and its diff_id.
#[derive(Debug, Clone)]
pub struct LayerDesc {
    pub blob: Descriptor,
    pub diff_id: String,
}

/// An OCI layout directory.
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Opens (creating if needed) the layout at `dir`.
    pub fn create(dir: &Path) -> Result<Layout> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))
            .with_context(|| format!("creating the OCI layout {}", dir.display()))?;
        let marker = dir.join("oci-layout");
        if !marker.exists() {
            std::fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(Layout {
            dir: dir.to_path_buf(),
        })
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.dir.join("blobs/sha256").join(digest_hex(digest)?))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.exists())
    }

    /// Writes a blob with `write` (into a temporary file, renamed to its digest); returns
    /// its digest and size.
    pub fn write_blob(
        &self,
        write: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<(String, u64)> {
        let tmp = tempfile::NamedTempFile::new_in(self.dir.join("blobs/sha256"))?;
        let mut hw = HashWriter::new(std::io::BufWriter::new(tmp.reopen()?));
        write(&mut hw)?;
        hw.flush()?;
        let (digest, size, _) = hw.finish();
        // Readable by all, as other tools write layouts (a temp file is created 0600).
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        tmp.persist(self.blob_path(&digest)?)
            .context("storing a blob")?;
        Ok((digest, size))
    }

    /// Copies a blob from `r`.
    pub fn copy_blob(&self, mut r: impl Read) -> Result<(String, u64)> {
        self.write_blob(|w| {
            std::io::copy(&mut r, w)?;
            Ok(())
        })
    }

    fn json_blob(&self, v: &Value) -> Result<(String, u64)> {
        let bytes = serde_json::to_vec(v)?;
        self.write_blob(|w| Ok(w.write_all(&bytes)?))
    }

    /// Writes config and manifest for `layers` (bottom first) and tags the manifest `tag`;
    /// returns the manifest's descriptor and the config's digest.
    pub fn write_image(
        &self,
        tag: &str,
        run: &RunConfig,
        history: &[HistoryEntry],
        created: &str,
        layers: &[LayerDesc],
    ) -> Result<(Descriptor, String)> {
        let opt_list = |v: &Vec<String>| {
            if v.is_empty() {
                Value::Null
            } else {
                json!(v)
            }
        };
        let mut cfg = serde_json::Map::new();
        cfg.insert("Env".into(), opt_list(&run.env));
        cfg.insert("Cmd".into(), opt_list(&run.cmd));
        cfg.insert("Entrypoint".into(), opt_list(&run.entrypoint));
        if !run.working_dir.is_empty() {
            cfg.insert("WorkingDir".into(), json!(run.working_dir));
        }
        if !run.user.is_empty() {
            cfg.insert("User".into(), json!(run.user));
        }
        if !run.labels.is_empty() {
            cfg.insert("Labels".into(), json!(run.labels));
        }
        if !run.exposed_ports.is_empty() {
            // The OCI form: a set, each port mapping to an empty object.
            let ports: serde_json::Map<String, Value> = run
                .exposed_ports
                .iter()
                .map(|p| (p.clone(), json!({})))
                .collect();
            cfg.insert("ExposedPorts".into(), Value::Object(ports));
        }
        cfg.retain(|_, v| !v.is_null());
        let config = json!({
            "created": created,
            "architecture": go_arch(),
            "os": "linux",
            "config": cfg,
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
            },
            "history": history,
        });
        let (config_digest, config_size) = self.json_blob(&config)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config_size},
            "layers": layers.iter().map(|l| &l.blob).collect::<Vec<_>>(),
        });
        let (mdigest, msize) = self.json_blob(&manifest)?;
        let mut annotations = serde_json::Map::new();
        annotations.insert(REF_NAME.into(), json!(tag));
        let desc = Descriptor {
            media_type: MANIFEST_TYPE.into(),
            digest: mdigest,
            size: msize,
            annotations: Some(annotations),
        };
        self.tag(&desc, tag)?;
        Ok((desc, config_digest))
    }

    /// Points `tag` at `desc` in index.json (replacing the tag's previous manifest).
    fn tag(&self, desc: &Descriptor, tag: &str) -> Result<()> {
        let path = self.dir.join("index.json");
        let mut index: Value = match std::fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice(&b).with_context(|| format!("parsing {}", path.display()))?
            }
            Err(_) => json!({"schemaVersion": 2, "manifests": []}),
        };
        let manifests = index["manifests"]
            .as_array_mut()
            .context("index.json without a manifests list")?;
        manifests.retain(|m| m["annotations"][REF_NAME].as_str() != Some(tag));
        manifests.push(serde_json::to_value(desc)?);
        index["mediaType"] = json!("application/vnd.oci.image.index.v1+json");
        let tmp = path.with_extension("json.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&index)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }
}

/// The architecture as Go (and so the OCI spec) names it: what the configs this writes say,
/// and what `source::oci` picks out of a multi-platform index. The one copy.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}
