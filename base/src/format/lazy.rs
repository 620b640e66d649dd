//! What the store keeps beside a lazy layer while some of its files have no content yet
//! (docs/ARCHITECTURE.md, "Lazy layers"):
//!
//! ```text
//! STORE/layers/<hex>/          the layer's tree; pending files are placeholders (holes)
//! STORE/lazy/<hex>/record      this JSON: where the blob is, its form, the pending files
//!                              and the chunks of the blob that hold each one's content
//! STORE/lazy/<hex>/done        the indexes (u32, little endian) of files filled since,
//!                              appended once a file's bytes are written and synced
//! ```
//!
//! When every file is done the directory `lazy/<hex>` is removed and the layer is an
//! ordinary store layer. The mount finds a layer's lazy directory by the layer's path
//! ([`dir_for`]), so a stack given as `lowerdir=` paths needs nothing else.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bumped whenever the record's meaning changes; a record of another version is refused.
pub const VERSION: u32 = 1;
pub const RECORD: &str = "record";
pub const DONE: &str = "done";

/// `STORE/lazy/<name>` for the layer directory `STORE/layers/<name>`; `None` for a
/// directory that is not a store layer.
pub fn dir_for(layer_dir: &Path) -> Option<PathBuf> {
    let name = layer_dir.file_name()?;
    let layers = layer_dir.parent()?;
    if layers.file_name()? != "layers" {
        return None;
    }
    Some(layers.parent()?.join("lazy").join(name))
}

/// Where the blob's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A local file holding the blob.
    File { path: PathBuf },
    /// A registry's blob, fetched by range: the image's reference (`docker://HOST/REPO...`;
    /// its host and repository are what is reached), the blob's digest and size, and how to
    /// reconnect (the pull's `--tls-verify`, `--cert-dir`, `--authfile`; credentials given
    /// with `--creds` are never written here, so a mount of a registry that needs them reads
    /// them from an auth file).
    Registry {
        reference: String,
        digest: String,
        #[serde(default)]
        size: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls_verify: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cert_dir: Option<PathBuf>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        authfile: Option<PathBuf>,
    },
}

/// One chunk of a pending file: `[blob_offset, blob_end)` of the blob, decompressed,
/// `inner_offset` bytes skipped, gives `size` bytes whose sha256 is `digest` (hex; empty
/// for a chunk of zeros, which is left a hole).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub file_offset: u64,
    pub size: u64,
    pub blob_offset: u64,
    pub blob_end: u64,
    #[serde(default)]
    pub inner_offset: u64,
    #[serde(default)]
    pub digest: String,
}

/// A regular file whose content is fetched lazily.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct File {
    /// Relative to the layer's root.
    pub path: String,
    /// Its other names (hard links in the layer).
    #[serde(default)]
    pub links: Vec<String>,
    pub size: u64,
    pub chunks: Vec<Chunk>,
    /// Fetched first by the background prefetch (eStargz's landmark).
    #[serde(default)]
    pub landmark: bool,
}

/// The record of a lazy layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    /// `zstd:chunked` or `estargz`.
    pub form: String,
    pub source: Source,
    /// The TOC's digest as the form's annotation names it.
    pub toc_digest: String,
    pub files: Vec<File>,
}
