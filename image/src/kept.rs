//! Kept blobs: the blob a layer came in as, kept in the store beside the layer's directory,
//! so that an unchanged layer is exported as the very bytes it was imported from (the same
//! blob digest and diff_id, nothing compressed again). The on-disk form is
//! [`crate::format::kept`]; why a blob and not a tar-split record: docs/ARCHITECTURE.md,
//! "Kept blobs".
//!
//! A kept blob is staged in the store's `tmp/` while its layer is unpacked from it,
//! sealed with the stamp of the unpacked directory, and moved into place with the layer.
//! On the way out it is used only while the directory's stamp is unchanged and its bytes
//! match their digest; otherwise the caller packs the layer from its files as before.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::commit::{compress, Compress, HashWriter};
use super::oci_write::{Descriptor, LayerDesc, Layout};
use super::source::blob::{compression_of, decompress, Compression, Digest, Verify};
use crate::format::kept::{Encoding, Record, TreeStamp, BLOB, RECORD, VERSION};
use crate::sys;

/// A kept blob being staged (removed when dropped unless published).
pub struct Staged {
    dir: Option<PathBuf>,
    record: Record,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}

/// Writes the blob `raw` (as the source holds it; `hint` is its media type's compression)
/// into a new directory of `tmp`. A compressed blob is kept as it is, an uncompressed tar
/// zstd-encoded. Reads `raw` to its end (where a digest-checking reader checks).
pub fn stage(tmp: &Path, raw: impl Read, hint: Option<Compression>) -> Result<Staged> {
    let dir = tempfile::Builder::new()
        .prefix(&super::store::Store::tmp_prefix("kept"))
        .tempdir_in(tmp)
        .context("creating a staging directory in the store")?
        .keep();
    let mut staged = Staged {
        dir: Some(dir.clone()),
        record: Record {
            version: VERSION,
            diff_id: String::new(),
            digest: String::new(),
            media_type: String::new(),
            size: 0,
            encoding: Encoding::Verbatim,
            tree: String::new(),
        },
    };
    let mut raw = BufReader::with_capacity(256 * 1024, raw);
    let comp = compression_of(&mut raw, hint)?;
    let file = BufWriter::new(File::create(dir.join(BLOB)).context("creating the kept blob")?);
    let (digest, size) = if comp == Compression::None {
        // Hashed as the tar it is, stored compressed.
        let mut z = zstd::Encoder::new(file, 3)?;
        let mut hw = HashWriter::new(&mut z);
        io::copy(&mut raw, &mut hw).context("keeping the layer blob")?;
        let (d, n, _) = hw.finish();
        z.finish()?.flush()?;
        staged.record.encoding = Encoding::Zstd;
        (d, n)
    } else {
        let mut hw = HashWriter::new(file);
        io::copy(&mut raw, &mut hw).context("keeping the layer blob")?;
        hw.flush()?;
        let (d, n, _) = hw.finish();
        (d, n)
    };
    staged.record.digest = digest;
    staged.record.size = size;
    staged.record.media_type = Compress::from(comp).media_type().to_string();
    Ok(staged)
}

/// Keeps the blob in `file` (on `tmp`'s filesystem, its bytes checked against `digest` by
/// the caller as it wrote them) by moving it into a new directory of `tmp`; an uncompressed
/// tar is zstd-encoded as [`stage`] does.
pub fn stage_file(
    tmp: &Path,
    file: &Path,
    digest: &Digest,
    hint: Option<Compression>,
) -> Result<Staged> {
    let open = || File::open(file).with_context(|| format!("opening {}", file.display()));
    let comp = compression_of(&mut BufReader::new(open()?), hint)?;
    if comp == Compression::None {
        return stage(tmp, Verify::new(open()?, digest.clone(), "blob"), hint);
    }
    let size = open()?.metadata()?.len();
    let dir = tempfile::Builder::new()
        .prefix("kept-")
        .tempdir_in(tmp)
        .context("creating a staging directory in the store")?
        .keep();
    let staged = Staged {
        dir: Some(dir.clone()),
        record: Record {
            version: VERSION,
            diff_id: String::new(),
            digest: digest.to_string(),
            media_type: Compress::from(comp).media_type().to_string(),
            size,
            encoding: Encoding::Verbatim,
            tree: String::new(),
        },
    };
    std::fs::rename(file, dir.join(BLOB))
        .with_context(|| format!("moving {} into the store", file.display()))?;
    Ok(staged)
}

impl Staged {
    /// The uncompressed tar of the staged blob.
    pub fn tar(&self) -> Result<Box<dyn Read + Send>> {
        let dir = self.dir.as_ref().expect("staged until published");
        open_tar(&dir.join(BLOB), self.record.encoding)
    }

    /// Records that the blob's tar is `diff_id` and was unpacked into `layer_dir` (stamped
    /// now, before anything else can touch it), and writes the record.
    pub fn seal(&mut self, diff_id: &str, layer_dir: &Path) -> Result<()> {
        if self.record.encoding == Encoding::Zstd && self.record.digest != diff_id {
            bail!("kept tar {} is not the layer {diff_id}", self.record.digest);
        }
        self.record.diff_id = diff_id.to_string();
        self.record.tree = tree_stamp(layer_dir)?;
        let dir = self.dir.as_ref().expect("staged until published");
        std::fs::write(dir.join(RECORD), serde_json::to_vec_pretty(&self.record)?)
            .context("writing the kept blob's record")?;
        Ok(())
    }

    /// Moves the kept blob to `dst` (replacing a leftover there).
    pub fn publish(mut self, dst: &Path) -> Result<()> {
        let src = self.dir.take().expect("staged until published");
        if dst.exists() {
            std::fs::remove_dir_all(dst).with_context(|| format!("removing {}", dst.display()))?;
        }
        std::fs::rename(&src, dst)
            .with_context(|| format!("moving a kept blob to {}", dst.display()))
    }
}

/// A layer's kept blob, found valid for its directory.
pub struct Kept {
    dir: PathBuf,
    pub record: Record,
}

/// The kept blob in `kept_dir` for the layer `diff_id` unpacked at `layer_dir`, if there is
/// one and the directory is unchanged since it was sealed.
pub fn find(kept_dir: &Path, layer_dir: &Path, diff_id: &str) -> Result<Option<Kept>> {
    let text = match std::fs::read(kept_dir.join(RECORD)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log::debug!("layer {diff_id}: no kept blob, packing it from its files");
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", kept_dir.display())),
    };
    let record: Record = match serde_json::from_slice(&text) {
        Ok(r) => r,
        Err(e) => {
            log::warn!(
                "layer {diff_id}: unreadable kept record in {} ({e}); packing it from its files",
                kept_dir.display()
            );
            return Ok(None);
        }
    };
    if record.version != VERSION || record.diff_id != diff_id {
        log::warn!(
            "layer {diff_id}: the kept record in {} is for another version or layer; packing it from its files",
            kept_dir.display()
        );
        return Ok(None);
    }
    if tree_stamp(layer_dir)? != record.tree {
        log::warn!(
            "layer {diff_id}: its files in {} changed since it was imported; packing it from \
             them instead of exporting the blob it came in as",
            layer_dir.display()
        );
        return Ok(None);
    }
    Ok(Some(Kept {
        dir: kept_dir.to_path_buf(),
        record,
    }))
}

impl Kept {
    /// Writes the layer into `layout`: a compressed blob exactly as it came in (whatever
    /// `how` says: an unchanged layer is never compressed again), an uncompressed one
    /// compressed `how`. The bytes are checked against their digest on the way; a mismatch
    /// is an error and nothing is stored in the layout.
    pub fn write_to(&self, layout: &Layout, how: Compress) -> Result<LayerDesc> {
        let path = self.dir.join(BLOB);
        let mut compressed = None;
        let (media_type, (digest, size)) = match self.record.encoding {
            Encoding::Verbatim => {
                let raw =
                    File::open(&path).with_context(|| format!("opening {}", path.display()))?;
                let want = Digest::parse(&self.record.digest)?;
                let mut r = Verify::new(raw, want, "kept blob");
                let written = layout.write_blob(|w| Ok(io::copy(&mut r, w).map(drop)?))?;
                (self.record.media_type.clone(), written)
            }
            Encoding::Zstd => {
                let tar = self.tar()?;
                let written = layout.write_blob(|w| {
                    compressed = Some(compress(tar, how, w)?);
                    Ok(())
                })?;
                (how.media_type().to_string(), written)
            }
        };
        if self.record.encoding == Encoding::Verbatim && digest != self.record.digest {
            bail!("kept blob digest {digest}, recorded {}", self.record.digest);
        }
        let mut compressed = compressed.unwrap_or_default();
        if self.record.encoding == Encoding::Verbatim {
            // A zstd:chunked or eStargz blob keeps the annotations that make it seekable.
            if let Some(a) = crate::lazy::read::annotations_of_file(&path) {
                compressed.annotations = a;
            }
        }
        Ok(LayerDesc {
            blob: Descriptor {
                media_type,
                digest,
                size,
                annotations: compressed.descriptor_annotations(),
            },
            diff_id: compressed
                .diff_id
                .unwrap_or_else(|| self.record.diff_id.clone()),
        })
    }

    /// The uncompressed tar, checked against the diff_id as it streams.
    pub fn tar(&self) -> Result<Box<dyn Read + Send>> {
        let plain = open_tar(&self.dir.join(BLOB), self.record.encoding)?;
        let want = Digest::parse(&self.record.diff_id)?;
        Ok(Box::new(Verify::new(plain, want, "kept layer (diff_id)")))
    }
}

fn open_tar(blob: &Path, encoding: Encoding) -> Result<Box<dyn Read + Send>> {
    let f = File::open(blob).with_context(|| format!("opening {}", blob.display()))?;
    Ok(match encoding {
        Encoding::Verbatim => decompress(f, None)?.0,
        Encoding::Zstd => Box::new(zstd::stream::read::Decoder::new(f)?),
    })
}

/// The [`TreeStamp`] of the layer directory at `root`: walked with fd-relative calls that
/// never follow a symlink, nothing but metadata read.
pub fn tree_stamp(root: &Path) -> Result<String> {
    fn walk(dir: BorrowedFd<'_>, prefix: &[u8], stamp: &mut TreeStamp) -> Result<()> {
        let mut ents = sys::read_dir(dir)?;
        ents.sort_by(|a, b| a.name.cmp(&b.name));
        for ent in ents {
            let mut path = prefix.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&ent.name);
            let cname = sys::cstr(&ent.name)?;
            let st = sys::lstatat(dir, &cname)?;
            stamp.add(&path, &st);
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                let sub = sys::open_subdir(dir, &cname)?;
                walk(sub.as_fd(), &path, stamp)?;
            }
        }
        Ok(())
    }
    let fd = sys::open_host_dir(root).with_context(|| format!("opening {}", root.display()))?;
    let mut stamp = TreeStamp::default();
    walk(fd.as_fd(), b"", &mut stamp).with_context(|| format!("stamping {}", root.display()))?;
    Ok(stamp.hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    fn sha(b: &[u8]) -> String {
        format!("sha256:{:x}", Sha256::digest(b))
    }

    /// A one-file tar and its gzip.
    fn blobs() -> (Vec<u8>, Vec<u8>) {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "f", &b"hello"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&tar).unwrap();
        (tar.clone(), gz.finish().unwrap())
    }

    #[test]
    fn a_kept_blob_goes_out_unchanged_until_its_layer_changes() {
        let t = tempfile::tempdir().unwrap();
        let (tar, gz) = blobs();
        let layer = t.path().join("layer");
        std::fs::create_dir(&layer).unwrap();
        std::fs::write(layer.join("f"), "hello").unwrap();
        let mut k = stage(t.path(), &gz[..], Some(Compression::Gzip)).unwrap();
        let mut plain = Vec::new();
        k.tar().unwrap().read_to_end(&mut plain).unwrap();
        assert_eq!(plain, tar);
        k.seal(&sha(&tar), &layer).unwrap();
        let kept = t.path().join("kept");
        k.publish(&kept).unwrap();

        let layout = Layout::create(&t.path().join("oci")).unwrap();
        let found = find(&kept, &layer, &sha(&tar)).unwrap().expect("valid");
        // Asked for zstd, given the gzip it came as: never compressed again.
        let desc = found.write_to(&layout, Compress::Zstd).unwrap();
        assert_eq!(desc.blob.digest, sha(&gz));
        assert_eq!(desc.blob.media_type, Compress::Gzip.media_type());
        assert_eq!(desc.diff_id, sha(&tar));
        // Another layer's name, or a changed file: not used.
        assert!(find(&kept, &layer, &sha(b"other")).unwrap().is_none());
        std::fs::write(layer.join("g"), "new").unwrap();
        assert!(find(&kept, &layer, &sha(&tar)).unwrap().is_none());
        std::fs::remove_file(layer.join("g")).unwrap();
        assert!(find(&kept, &layer, &sha(&tar)).unwrap().is_some());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(layer.join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(find(&kept, &layer, &sha(&tar)).unwrap().is_none());
    }

    #[test]
    fn a_corrupt_kept_blob_stores_nothing() {
        let t = tempfile::tempdir().unwrap();
        let (tar, gz) = blobs();
        let layer = t.path().join("layer");
        std::fs::create_dir(&layer).unwrap();
        let mut k = stage(t.path(), &gz[..], None).unwrap();
        k.seal(&sha(&tar), &layer).unwrap();
        let kept = t.path().join("kept");
        k.publish(&kept).unwrap();
        let mut bytes = std::fs::read(kept.join(BLOB)).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 1;
        std::fs::write(kept.join(BLOB), bytes).unwrap();
        let layout = Layout::create(&t.path().join("oci")).unwrap();
        let found = find(&kept, &layer, &sha(&tar))
            .unwrap()
            .expect("stamp unchanged");
        assert!(found.write_to(&layout, Compress::Gzip).is_err());
        assert!(!layout.has_blob(&sha(&gz)));
        let stored = std::fs::read_dir(t.path().join("oci/blobs/sha256")).unwrap();
        assert_eq!(stored.count(), 0, "nothing left in the layout");
    }

    #[test]
    fn an_uncompressed_tar_is_kept_encoded_and_must_be_its_layer() {
        let t = tempfile::tempdir().unwrap();
        let (tar, _) = blobs();
        let layer = t.path().join("layer");
        std::fs::create_dir(&layer).unwrap();
        let mut k = stage(t.path(), &tar[..], None).unwrap();
        assert_eq!(k.record.encoding, Encoding::Zstd);
        assert_eq!(k.record.digest, sha(&tar));
        assert!(k.seal(&sha(b"another layer"), &layer).is_err());
        k.seal(&sha(&tar), &layer).unwrap();
        let kept = t.path().join("kept");
        k.publish(&kept).unwrap();
        let layout = Layout::create(&t.path().join("oci")).unwrap();
        let found = find(&kept, &layer, &sha(&tar)).unwrap().unwrap();
        let desc = found.write_to(&layout, Compress::None).unwrap();
        assert_eq!(desc.blob.digest, sha(&tar), "the tar itself");
    }
}
