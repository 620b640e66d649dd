//! Blobs: digests, digest-checking readers and decompression.
//!
//! A layer blob is read as `file[offset..offset+len]` (a file of an OCI layout, or a
//! member of an archive tar), its sha256 checked while it streams, then decompressed
//! (gzip / zstd / none, by media type and magic bytes) and, when the image config gives
//! one, the uncompressed stream's sha256 checked against the layer's diff_id. A mismatch
//! surfaces as an `InvalidData` read error at the end of the stream naming both digests.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A content digest, `sha256:` and 64 lowercase hex digits (the only algorithm the
/// images we read use; others are refused when parsed).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest> {
        let Some(hex) = s.strip_prefix("sha256:") else {
            bail!("unsupported digest {s:?} (only sha256 is supported)");
        };
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            bail!("malformed digest {s:?}");
        }
        Ok(Digest(s.to_string()))
    }

    /// The 64 hex digits (safe as a file name: checked by [`Digest::parse`]).
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn of(hash: Sha256) -> Digest {
        let bytes = hash.finalize();
        let mut s = String::with_capacity(71);
        s.push_str("sha256:");
        for b in bytes {
            s.push_str(&format!("{b:02x}"));
        }
        Digest(s)
    }

    /// The first 12 hex digits, as `podman images` shows ids.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

impl TryFrom<String> for Digest {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Digest> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Passes bytes through while hashing them; at end of stream compares with `expected` and
/// turns a mismatch into an `InvalidData` error.
pub struct Verify<R> {
    inner: R,
    hash: Sha256,
    expected: Digest,
    what: &'static str,
    done: bool,
}

impl<R: Read> Verify<R> {
    pub fn new(inner: R, expected: Digest, what: &'static str) -> Verify<R> {
        Verify {
            inner,
            hash: Sha256::new(),
            expected,
            what,
            done: false,
        }
    }
}

impl<R: Read> Read for Verify<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.done = true;
            let got = Digest::of(std::mem::take(&mut self.hash));
            if got != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} digest mismatch: expected {}, read {}",
                        self.what, self.expected, got
                    ),
                ));
            }
            return Ok(0);
        }
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From a layer media type (`...tar+gzip`, `...tar.gzip`, `...tar+zstd`, docker's
    /// `...rootfs.diff.tar.gzip`); `None` when the type says nothing.
    pub fn from_media_type(mt: &str) -> Option<Compression> {
        if mt.ends_with("+gzip") || mt.ends_with(".gzip") {
            Some(Compression::Gzip)
        } else if mt.ends_with("+zstd") || mt.ends_with(".zstd") {
            Some(Compression::Zstd)
        } else if mt.ends_with(".tar") || mt.ends_with("tar") {
            Some(Compression::None)
        } else {
            None
        }
    }

    /// From the first bytes of a blob.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// Where a blob's bytes are: `len` bytes at `offset` of the host file `path` (a layout's
/// blob file, or a member of an archive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
}

impl BlobRef {
    /// The raw (possibly compressed) bytes, checked against `digest` when given.
    pub fn open_raw(&self, digest: Option<&Digest>) -> Result<Box<dyn Read + Send>> {
        let mut f =
            File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        f.seek(SeekFrom::Start(self.offset))?;
        let raw = f.take(self.len);
        Ok(match digest {
            Some(d) => Box::new(Verify::new(raw, d.clone(), "blob")),
            None => Box::new(raw),
        })
    }

    /// The uncompressed tar stream: blob digest checked on the raw bytes, compression from
    /// `hint` (the media type) or else sniffed, diff_id checked on the uncompressed bytes.
    pub fn open_tar(
        &self,
        digest: Option<&Digest>,
        hint: Option<Compression>,
        diff_id: Option<&Digest>,
    ) -> Result<(Box<dyn Read + Send>, Compression)> {
        let (plain, comp) = decompress(self.open_raw(digest)?, hint)?;
        Ok(match diff_id {
            Some(d) => (
                Box::new(Verify::new(
                    plain,
                    d.clone(),
                    "uncompressed layer (diff_id)",
                )),
                comp,
            ),
            None => (plain, comp),
        })
    }
}

/// A blob's raw bytes in, and how they are compressed: from `hint` (the media type) and
/// the magic bytes.
pub fn compression_of(
    raw: &mut BufReader<impl Read>,
    hint: Option<Compression>,
) -> Result<Compression> {
    let head = raw.fill_buf().context("reading the blob")?;
    let sniffed = Compression::sniff(head);
    // The magic bytes win over a media type that disagrees (seen with mislabelled
    // layers); an uncompressed tar has no magic at offset 0, so trust it only when
    // the bytes do not look compressed.
    Ok(match (hint, sniffed) {
        (_, Compression::Gzip | Compression::Zstd) => sniffed,
        (Some(h), Compression::None) if h != Compression::None => {
            bail!("layer says it is {} but is not", h.name())
        }
        _ => Compression::None,
    })
}

/// A blob's raw bytes as the uncompressed tar, with the compression found.
pub fn decompress(
    raw: impl Read + Send + 'static,
    hint: Option<Compression>,
) -> Result<(Box<dyn Read + Send>, Compression)> {
    let mut raw = BufReader::with_capacity(256 * 1024, raw);
    let comp = compression_of(&mut raw, hint)?;
    let plain: Box<dyn Read + Send> = match comp {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(raw)?),
    };
    Ok((plain, comp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_reports_mismatch_at_end() {
        let good = Digest::parse(
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        )
        .unwrap();
        let mut out = Vec::new();
        Verify::new(&b"hello"[..], good.clone(), "blob")
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"hello");
        let err = Verify::new(&b"hellO"[..], good, "blob")
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("digest mismatch"), "{err}");
    }

    #[test]
    fn digests_are_checked() {
        assert!(Digest::parse("sha512:00").is_err());
        assert!(Digest::parse("sha256:../../etc/passwd").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
    }

    #[test]
    fn compression_by_type_and_magic() {
        let oci = "application/vnd.oci.image.layer.v1.tar+zstd";
        assert_eq!(Compression::from_media_type(oci), Some(Compression::Zstd));
        let docker = "application/vnd.docker.image.rootfs.diff.tar.gzip";
        assert_eq!(
            Compression::from_media_type(docker),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
    }
}
