//! Image sources: every kind of image or layer stack the layer tools read, opened the same
//! way and seen the same way.
//!
//! # Source strings (skopeo's transport names where they exist)
//! - `oci:DIR[:REF]`: an OCI image layout (`index.json`, `blobs/sha256/`, nested indexes;
//!   REF matches `org.opencontainers.image.ref.name`);
//! - `oci-archive:FILE[:REF]`: a tar of such a layout, read in place;
//! - `docker-archive:FILE[:REF]`: what `docker save` / `podman save` write (`manifest.json`,
//!   a config, layer tars; legacy or OCI-layout-in-tar), REF matching a `RepoTags` entry;
//! - `containers-storage:IMAGE`: podman's store read directly (no podman run), IMAGE a
//!   name, `name:tag`, or an id (prefix); the store root from [`OpenOptions::storage_root`],
//!   else `/var/lib/containers/storage` as root, `$XDG_DATA_HOME/containers/storage`
//!   (`~/.local/share/...`) otherwise;
//! - a layer stack in mount syntax, `lowerdir=TOP:...:BOTTOM[,upperdir=U]` (as after `-o`):
//!   directories with every whiteout form the mount reads, an upper with redirects.
//!
//! An image of layerfs's own store (`store:NAME`, or a bare NAME) is opened by
//! [`layerstore::open`]; the command line decides which strings name one
//! (`src/cmd/image_source.rs`).
//!
//! # API
//! ```no_run
//! # use layerfs_image::source::{self, OpenOptions, Kind};
//! # fn main() -> anyhow::Result<()> {
//! let img = source::open("oci:/tmp/layout:latest", &OpenOptions::default())?;
//! for layer in &img.layers {            // bottom first
//!     println!("{} {:?}", layer.id, layer.created_by);
//!     layer.walk(true, &mut |entry, content| {
//!         // entry: path, kind (whiteouts and opaque marks decoded), mode, owner, size,
//!         // xattrs, link; content: the file's bytes when asked for and a regular file.
//!         if let (Kind::File, Some(r)) = (entry.kind, content) {
//!             std::io::copy(r, &mut std::io::sink())?;
//!         }
//!         Ok(())
//!     })?;
//! }
//! # Ok(()) }
//! ```
//! - [`open`] / [`Spec::parse`] + [`Spec::open`] give an [`Image`]: its [`Layer`]s bottom
//!   first and, for real images, its [`ImageConfig`] (env, cmd, entrypoint, workdir, user,
//!   history with `created_by` / `empty_layer`; each layer carries its own `created_by`).
//! - [`Layer::walk`] streams the layer's entries ([`Entry`]); the same for every source
//!   kind, with the same safety checks. Layers are hostile input: see [`walk`].
//! - [`Layer::open_tar`] gives a blob layer's uncompressed tar stream (gzip / zstd / none by
//!   media type and magic), for importers that want the tar itself. Digests are checked
//!   while streaming: the blob's sha256 against the layer digest, the uncompressed sha256
//!   against the diff_id; a mismatch is an error at the end of the stream, so a consumer
//!   must read the stream to its end (the walkers do) before trusting what it saw.
//! - [`Layer::open_file`] opens one file of a directory layer (random access, no walk).
//!
//! Nothing is unpacked to disk; memory is bounded by the walkers' bookkeeping.

mod archive;
pub mod blob;
pub mod entry;
pub mod layerstore;
pub(crate) mod oci;
mod storage;
pub mod walk;

use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use blob::{BlobRef, Compression, Digest};
pub use entry::{Entry, Kind, RelPath, Stamp};
pub use walk::{Limits, Visit};

use crate::options::MountOptions;
use crate::sys;

/// Where a source string points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    Oci {
        dir: PathBuf,
        reference: Option<String>,
    },
    OciArchive {
        file: PathBuf,
        reference: Option<String>,
    },
    DockerArchive {
        file: PathBuf,
        reference: Option<String>,
    },
    Storage {
        image: String,
    },
    /// Layer directories, bottom first, the upper (if any) last.
    Stack {
        lowers: Vec<PathBuf>,
        upper: Option<PathBuf>,
    },
}

/// Options for opening a source.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// podman's graphroot for `containers-storage:` (default: root's or the user's).
    pub storage_root: Option<PathBuf>,
    pub limits: Limits,
    /// `import --lazy`: a zstd:chunked or eStargz layer blob in a local file becomes a lazy
    /// store layer (its tree now, file contents on first read) instead of being unpacked.
    pub lazy: bool,
}

impl Spec {
    /// Parses a source string (see the module doc).
    pub fn parse(s: &str) -> Result<Spec> {
        let (kind, rest) = s.split_once(':').unwrap_or(("", s));
        Ok(match kind {
            "oci" => {
                let (dir, reference) = split_ref(rest);
                Spec::Oci { dir, reference }
            }
            "oci-archive" => {
                let (file, reference) = split_ref(rest);
                Spec::OciArchive { file, reference }
            }
            "docker-archive" => {
                let (file, reference) = split_ref(rest);
                Spec::DockerArchive { file, reference }
            }
            "containers-storage" => {
                if rest.is_empty() {
                    bail!("containers-storage: needs an image name or id");
                }
                Spec::Storage {
                    image: rest.to_string(),
                }
            }
            _ if s.contains("lowerdir=") => {
                let opts =
                    MountOptions::parse_layers(&[s]).with_context(|| format!("source {s:?}"))?;
                Spec::stack(opts)
            }
            _ => bail!(
                "unknown source {s:?}: expected oci:DIR[:REF], oci-archive:FILE[:REF], \
                 docker-archive:FILE[:REF], containers-storage:IMAGE or lowerdir=TOP:...:BOTTOM"
            ),
        })
    }

    /// The stack a mount's options describe.
    pub fn stack(opts: MountOptions) -> Spec {
        let mut lowers = opts.lowers;
        lowers.reverse();
        Spec::Stack {
            lowers,
            upper: opts.upper,
        }
    }

    pub fn open(&self, opts: &OpenOptions) -> Result<Image> {
        match self {
            Spec::Oci { dir, reference } => oci::open_dir(dir, reference.as_deref()),
            Spec::OciArchive { file, reference } => oci::open_archive(file, reference.as_deref()),
            Spec::DockerArchive { file, reference } => {
                archive::open_docker(file, reference.as_deref())
            }
            Spec::Storage { image } => storage::open(image, opts.storage_root.as_deref()),
            Spec::Stack { lowers, upper } => open_stack(lowers, upper.as_deref()),
        }
        .map(|mut img| {
            img.limits = opts.limits;
            img
        })
    }
}

/// `PATH[:REF]`: the path wins when it exists as written (paths may contain colons).
fn split_ref(rest: &str) -> (PathBuf, Option<String>) {
    if Path::new(rest).exists() {
        return (PathBuf::from(rest), None);
    }
    match rest.rsplit_once(':') {
        Some((p, r)) if !r.contains('/') && !r.is_empty() => {
            (PathBuf::from(p), Some(r.to_string()))
        }
        _ => (PathBuf::from(rest), None),
    }
}

/// Parses and opens a source string.
pub fn open(spec: &str, opts: &OpenOptions) -> Result<Image> {
    Spec::parse(spec)?.open(opts)
}

/// An opened image: layers bottom first, and the config when the source has one.
#[derive(Debug)]
pub struct Image {
    /// The source as the user named it (for messages).
    pub name: String,
    pub layers: Vec<Layer>,
    pub config: Option<ImageConfig>,
    /// The config blob's digest (the image id podman shows), when known.
    pub config_digest: Option<Digest>,
    /// The manifest's digest, when known.
    pub manifest_digest: Option<Digest>,
    pub limits: Limits,
}

/// One layer of an image.
#[derive(Debug, Clone)]
pub struct Layer {
    /// How tools name the layer: the blob digest, the diff_id, or the directory.
    pub id: String,
    /// The blob's digest (compressed bytes), when the source has blobs.
    pub digest: Option<Digest>,
    /// The uncompressed tar's digest (`rootfs.diff_ids`), when known.
    pub diff_id: Option<Digest>,
    pub media_type: Option<String>,
    /// The compression the media type announces (the bytes decide at open).
    pub compression: Option<Compression>,
    /// Bytes of the blob (compressed), or of the directory's files.
    pub size: Option<u64>,
    /// The history entry that made the layer (`created_by`), when the config has one.
    pub created_by: Option<String>,
    /// That history entry's comment (`commit -m`), when it has one.
    pub comment: Option<String>,
    pub location: Location,
}

/// Where a layer's content is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A tar blob (possibly compressed).
    Blob(BlobRef),
    /// A layer directory (a mount stack's layer, podman's `overlay/<id>/diff`).
    Dir(PathBuf),
}

impl Layer {
    /// A layer directory known only by its path (`id`): no digests, size or history.
    pub fn of_dir(id: String, dir: &Path) -> Layer {
        Layer {
            id,
            digest: None,
            diff_id: None,
            media_type: None,
            compression: None,
            size: None,
            created_by: None,
            comment: None,
            location: Location::Dir(dir.to_path_buf()),
        }
    }

    /// Streams the layer's entries into `visit` (see [`walk`]); with `want_content`,
    /// regular files come with their bytes.
    pub fn walk(&self, want_content: bool, visit: &mut Visit<'_>) -> Result<()> {
        self.walk_with(want_content, Limits::default(), visit)
    }

    pub fn walk_with(
        &self,
        want_content: bool,
        limits: Limits,
        visit: &mut Visit<'_>,
    ) -> Result<()> {
        match &self.location {
            Location::Blob(_) => {
                let mut tar = self.open_tar()?;
                walk::walk_tar(&mut tar, want_content, limits, visit)
            }
            Location::Dir(dir) => {
                let fd = sys::open_host_dir(dir)
                    .with_context(|| format!("opening layer {}", dir.display()))?;
                walk::walk_dir(fd, want_content, limits, visit)
            }
        }
        .with_context(|| format!("layer {}", self.id))
    }

    /// The uncompressed tar stream of a blob layer, digests checked as it streams.
    pub fn open_tar(&self) -> Result<Box<dyn Read + Send>> {
        match &self.location {
            Location::Blob(b) => {
                let (r, _) = b.open_tar(
                    self.digest.as_ref(),
                    self.compression,
                    self.diff_id.as_ref(),
                )?;
                Ok(r)
            }
            Location::Dir(d) => bail!("layer {} is a directory, not a tar", d.display()),
        }
    }

    /// Opens the regular file `path` of a directory layer without following symlinks;
    /// `None` for blob layers (walk them instead).
    pub fn open_file(&self, path: &RelPath) -> Result<Option<std::fs::File>> {
        let Location::Dir(dir) = &self.location else {
            return Ok(None);
        };
        let root =
            sys::open_host_dir(dir).with_context(|| format!("opening layer {}", dir.display()))?;
        let fd = sys::open_beneath(root.as_fd(), &sys::cstr(path.as_bytes())?, libc::O_RDONLY)
            .with_context(|| format!("opening {path} in {}", dir.display()))?;
        Ok(Some(std::fs::File::from(fd)))
    }

    /// The layer directory, for directory layers.
    pub fn dir(&self) -> Option<&Path> {
        match &self.location {
            Location::Dir(d) => Some(d),
            Location::Blob(_) => None,
        }
    }
}

/// The parts of an image config the tools show (OCI / docker config JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// `Labels`.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `ExposedPorts`' keys (`80/tcp`).
    pub exposed_ports: Vec<String>,
    pub history: Vec<History>,
    pub diff_ids: Vec<Digest>,
}

/// One step of an image's history.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct History {
    pub created: Option<String>,
    pub created_by: Option<String>,
    pub comment: Option<String>,
    /// True when the step made no layer (ENV, CMD, ...).
    pub empty_layer: bool,
}

/// The JSON as written by image builders (field names as in the OCI image spec).
#[derive(Deserialize, Default)]
struct RawConfig {
    #[serde(default)]
    config: Option<RawRunConfig>,
    #[serde(default)]
    rootfs: Option<RawRootfs>,
    #[serde(default)]
    history: Option<Vec<RawHistory>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawRunConfig {
    env: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    labels: Option<std::collections::BTreeMap<String, String>>,
    exposed_ports: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct RawHistory {
    created: Option<String>,
    created_by: Option<String>,
    comment: Option<String>,
    #[serde(default)]
    empty_layer: bool,
}

impl ImageConfig {
    /// Parses a config blob.
    pub fn parse(json: &[u8]) -> Result<ImageConfig> {
        let raw: RawConfig = serde_json::from_slice(json).context("parsing the image config")?;
        let run = raw.config.unwrap_or_default();
        Ok(ImageConfig {
            env: run.env.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
            entrypoint: run.entrypoint.unwrap_or_default(),
            working_dir: run.working_dir.unwrap_or_default(),
            user: run.user.unwrap_or_default(),
            labels: run.labels.unwrap_or_default(),
            exposed_ports: run.exposed_ports.unwrap_or_default().into_keys().collect(),
            history: raw
                .history
                .unwrap_or_default()
                .into_iter()
                .map(|h| History {
                    created: h.created,
                    created_by: h.created_by,
                    comment: h.comment,
                    empty_layer: h.empty_layer,
                })
                .collect(),
            diff_ids: raw
                .rootfs
                .map(|r| {
                    r.diff_ids
                        .iter()
                        .map(|d| Digest::parse(d))
                        .collect::<Result<Vec<_>>>()
                })
                .transpose()?
                .unwrap_or_default(),
        })
    }

    /// The history entries that made layers, in layer order (bottom first).
    pub fn layer_history(&self) -> impl Iterator<Item = &History> {
        self.history.iter().filter(|h| !h.empty_layer)
    }
}

/// Fills each layer's `created_by` (and missing diff_ids) from the config.
pub(crate) fn attach_config(layers: &mut [Layer], config: &ImageConfig) {
    for (layer, h) in layers.iter_mut().zip(config.layer_history()) {
        layer.created_by = h.created_by.clone();
        layer.comment = h.comment.clone();
    }
    if config.diff_ids.len() == layers.len() {
        for (layer, d) in layers.iter_mut().zip(&config.diff_ids) {
            layer.diff_id.get_or_insert_with(|| d.clone());
        }
    }
}

/// Largest JSON document (index, manifest, config) read from a source.
pub const MAX_JSON: u64 = 16 << 20;

/// Reads at most [`MAX_JSON`] bytes, refusing more.
pub fn read_json_bytes(mut r: impl Read, what: &str) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    (&mut r)
        .take(MAX_JSON + 1)
        .read_to_end(&mut v)
        .with_context(|| format!("reading {what}"))?;
    if v.len() as u64 > MAX_JSON {
        bail!("{what} is larger than {} MiB", MAX_JSON >> 20);
    }
    Ok(v)
}

fn open_stack(lowers: &[PathBuf], upper: Option<&Path>) -> Result<Image> {
    if lowers.is_empty() {
        bail!("a stack needs at least one lowerdir");
    }
    let mut layers = Vec::new();
    for dir in lowers.iter().map(PathBuf::as_path).chain(upper) {
        let meta = std::fs::metadata(dir).with_context(|| format!("layer {}", dir.display()))?;
        if !meta.is_dir() {
            bail!("layer {}: not a directory", dir.display());
        }
        layers.push(Layer::of_dir(dir.display().to_string(), dir));
    }
    let mut name = String::from("lowerdir=");
    name.push_str(
        &lowers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
    );
    if let Some(u) = upper {
        name.push_str(&format!(",upperdir={}", u.display()));
    }
    Ok(Image {
        name,
        layers,
        config: None,
        config_digest: None,
        manifest_digest: None,
        limits: Limits::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            Spec::parse("oci:/nonexistent/x:v1").unwrap(),
            Spec::Oci {
                dir: "/nonexistent/x".into(),
                reference: Some("v1".into())
            }
        );
        assert_eq!(
            Spec::parse("docker-archive:/nonexistent/a.tar").unwrap(),
            Spec::DockerArchive {
                file: "/nonexistent/a.tar".into(),
                reference: None
            }
        );
        assert_eq!(
            Spec::parse("lowerdir=/t:/b,upperdir=/u").unwrap(),
            Spec::Stack {
                lowers: vec!["/b".into(), "/t".into()],
                upper: Some("/u".into())
            }
        );
        assert!(Spec::parse("/some/dir").is_err());
    }

    #[test]
    fn config_history() {
        let json = br#"{"config":{"Env":["A=1"],"Cmd":["sh"],"WorkingDir":"/w"},
            "rootfs":{"type":"layers","diff_ids":[]},
            "history":[{"created_by":"a"},{"created_by":"ENV","empty_layer":true},{"created_by":"b"}]}"#;
        let c = ImageConfig::parse(json).unwrap();
        assert_eq!(c.env, vec!["A=1"]);
        assert_eq!(c.working_dir, "/w");
        let made: Vec<_> = c
            .layer_history()
            .map(|h| h.created_by.clone().unwrap())
            .collect();
        assert_eq!(made, vec!["a", "b"]);
    }
}
