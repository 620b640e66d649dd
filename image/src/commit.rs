//! A directory tree (an upper, a store layer, a merged view) as one layer tar, and that tar
//! compressed: the common part of `commit` and `squash`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};

use super::lazy::Form;
use super::pack::{Mode, PackStats, Packer};
use super::source::Compression;

/// Layer compression.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compress {
    None,
    #[default]
    Gzip,
    Zstd,
    /// zstd with a table of contents, each file in frames of its own (containers/storage's
    /// partial pulls; layerfs reads it lazily).
    #[value(name = "zstd:chunked")]
    #[serde(rename = "zstd:chunked")]
    ZstdChunked,
    /// gzip with a table of contents, each file in members of its own (stargz-snapshotter's
    /// lazy pulls; layerfs reads it lazily).
    Estargz,
}

impl From<Compression> for Compress {
    fn from(c: Compression) -> Compress {
        match c {
            Compression::None => Compress::None,
            Compression::Gzip => Compress::Gzip,
            Compression::Zstd => Compress::Zstd,
        }
    }
}

impl Compress {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compress::None => "application/vnd.oci.image.layer.v1.tar",
            Compress::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compress::Zstd | Compress::ZstdChunked => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compress::Estargz => "application/vnd.oci.image.layer.v1.tar+gzip",
        }
    }

    /// The seekable form this compression writes, if it is one.
    pub fn seekable(self) -> Option<Form> {
        match self {
            Compress::ZstdChunked => Some(Form::ZstdChunked),
            Compress::Estargz => Some(Form::Estargz),
            _ => None,
        }
    }
}

/// A compressed layer blob.
#[derive(Debug, Clone, Default)]
pub struct Compressed {
    /// `sha256:` and size of the blob.
    pub digest: String,
    pub size: u64,
    /// Set when the blob decompresses to other bytes than the tar it was made from
    /// (eStargz adds its TOC member to the tar): the layer's diff_id is then this one.
    pub diff_id: Option<String>,
    /// Annotations its manifest descriptor must carry (a seekable form's TOC position and
    /// digest).
    pub annotations: BTreeMap<String, String>,
}

impl Compressed {
    /// The annotations as a descriptor holds them (none: `None`).
    pub fn descriptor_annotations(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        (!self.annotations.is_empty()).then(|| {
            self.annotations
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect()
        })
    }
}

/// Counts and hashes what is written through it.
pub struct HashWriter<W> {
    inner: W,
    hash: Sha256,
    pub count: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hash: Sha256::new(),
            count: 0,
        }
    }

    /// `sha256:<hex>`, the byte count and the writer.
    pub fn finish(self) -> (String, u64, W) {
        (
            format!("sha256:{:x}", self.hash.finalize()),
            self.count,
            self.inner,
        )
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// An uncompressed layer tar in a temporary file.
pub struct LayerTar {
    pub file: File,
    /// `sha256:` of the uncompressed tar (the config's diff_id).
    pub diff_id: String,
    pub size: u64,
    pub stats: PackStats,
}

impl LayerTar {
    /// The tar from its start.
    pub fn reader(&mut self) -> Result<&mut File> {
        self.file.rewind()?;
        Ok(&mut self.file)
    }

    /// Writes the tar compressed to `out`.
    pub fn compress_to(&mut self, how: Compress, out: impl Write) -> Result<Compressed> {
        if let Some(form) = how.seekable() {
            return seekable(&mut self.file, form, out);
        }
        compress(self.reader()?, how, out)
    }
}

fn seekable(tar: &mut File, form: Form, out: impl Write) -> Result<Compressed> {
    let w = crate::lazy::write::write(tar, form, out)?;
    Ok(Compressed {
        digest: w.digest,
        size: w.size,
        diff_id: Some(w.diff_id),
        annotations: w.annotations,
    })
}

/// Writes the uncompressed tar `src` compressed `how` to `out` (a seekable form reads the
/// tar twice, from a temporary copy).
pub fn compress(mut src: impl Read, how: Compress, out: impl Write) -> Result<Compressed> {
    if let Some(form) = how.seekable() {
        let mut f = tempfile::tempfile().context("a temporary copy of the layer tar")?;
        io::copy(&mut src, &mut f)?;
        return seekable(&mut f, form, out);
    }
    let mut hw = HashWriter::new(out);
    match how {
        Compress::None => {
            io::copy(&mut src, &mut hw)?;
        }
        Compress::Gzip => {
            // Fixed header fields (no name, no time): the same tar gives the same blob.
            let mut gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(&mut hw, flate2::Compression::default());
            io::copy(&mut src, &mut gz)?;
            gz.finish()?;
        }
        Compress::Zstd => {
            let mut z = zstd::Encoder::new(&mut hw, 3)?;
            io::copy(&mut src, &mut z)?;
            z.finish()?;
        }
        Compress::ZstdChunked | Compress::Estargz => bail!("seekable forms are written above"),
    }
    hw.flush()?;
    let (digest, size, _) = hw.finish();
    Ok(Compressed {
        digest,
        size,
        ..Compressed::default()
    })
}

/// Writes the tree `root` as a layer tar into a temporary file in `tmp_dir`.
pub fn layer_tar(
    root: &Path,
    mode: Mode,
    timestamp: Option<i64>,
    merged: Option<&Path>,
    lowers: &[std::path::PathBuf],
    tmp_dir: &Path,
    progress: &dyn Fn(u64),
) -> Result<LayerTar> {
    if !root.is_dir() {
        bail!("{}: not a directory", root.display());
    }
    let file = tempfile::tempfile_in(tmp_dir)
        .with_context(|| format!("creating a temporary file in {}", tmp_dir.display()))?;
    let hw = HashWriter::new(BufWriter::new(file));
    let mut packer = Packer::new(hw, mode, timestamp)
        .with_merged(merged)
        .with_lowers(lowers)
        .with_progress(progress);
    packer
        .add_tree(root)
        .with_context(|| format!("archiving {}", root.display()))?;
    let stats = packer.stats;
    let hw = packer.finish()?;
    let (diff_id, size, buf) = hw.finish();
    let mut file = buf.into_inner().map_err(|e| e.into_error())?;
    file.flush()?;
    Ok(LayerTar {
        file,
        diff_id,
        size,
        stats,
    })
}
