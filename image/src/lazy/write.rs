//! Writing a layer tar as a seekable blob: zstd:chunked or eStargz.
//!
//! The tar is read twice (it is a file): once by the one tar reader for its members (where
//! each regular file's data starts, its metadata), then copied into the blob in pieces,
//! each piece a compressed frame (zstd) or member (gzip) of its own: the bytes between two
//! files' data (headers, padding) one piece, each file's data in chunks of [`CHUNK`] bytes,
//! one piece a chunk, so every chunk can be fetched and decompressed alone. Then the TOC,
//! in the form's place (see `read.rs`). Decompressed, a zstd:chunked blob is the tar byte
//! for byte (same diff_id); an eStargz blob is the tar with its TOC member
//! (`stargz.index.json`) before the end-of-archive blocks, as eStargz defines it, so its
//! diff_id differs from the tar's and is returned.
//!
//! Chunks are cut at fixed sizes, not at containers/storage's rolling checksum: the format
//! allows any cut, and dedup across layers by chunk is not what layerfs fetches by.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use super::read::{
    CHECKSUM_KEYS, ESTARGZ_TOC_DIGEST, ESTARGZ_UNCOMPRESSED_SIZE, POSITION_KEYS, SKIPPABLE_MAGIC,
    ZSTD_CHUNKED_MAGIC_OLD,
};
use super::toc::{Form, ESTARGZ_TOC_NAME};
use crate::commit::HashWriter;
use crate::tarread::TarReader;

/// The size of a file chunk: a read of one byte fetches at most this much (compressed).
pub const CHUNK: u64 = 1 << 20;
const ZSTD_LEVEL: i32 = 3;

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    /// `sha256:` and size of the blob.
    pub digest: String,
    pub size: u64,
    /// `sha256:` of the decompressed blob (the config's diff_id for this layer).
    pub diff_id: String,
    /// The manifest descriptor's annotations that make the blob seekable to readers.
    pub annotations: BTreeMap<String, String>,
}

/// One member of the tar, as the TOC records it.
struct Member {
    entry: crate::tarread::Entry,
    data_at: u64,
    /// Bytes of data stored after the header (a file's size; 0 for others).
    stored: u64,
}

fn toc_type(e: &crate::tarread::Entry) -> Result<&'static str> {
    use tar::EntryType as T;
    Ok(match e.kind {
        T::Regular | T::Continuous => "reg",
        T::Directory => "dir",
        T::Symlink => "symlink",
        T::Link => "hardlink",
        T::Char => "char",
        T::Block => "block",
        T::Fifo => "fifo",
        other => bail!(
            "{}: tar member type {other:?} cannot go into a seekable layer",
            String::from_utf8_lossy(&e.path)
        ),
    })
}

fn rfc3339(secs: i64, nsec: i64) -> String {
    jiff::Timestamp::new(secs, nsec.clamp(0, 999_999_999) as i32)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// The TOC entry of a member (without its chunk fields).
fn toc_entry(m: &Member) -> Result<Map<String, Value>> {
    let e = &m.entry;
    let mut o = Map::new();
    o.insert("type".into(), json!(toc_type(e)?));
    // JSON strings are UTF-8: a name that is not cannot be recorded faithfully.
    let utf8 = |b: &[u8]| {
        std::str::from_utf8(b).map(str::to_owned).map_err(|_| {
            anyhow::anyhow!(
                "{}: a name that is not UTF-8 cannot go into a seekable layer's TOC",
                String::from_utf8_lossy(&e.path)
            )
        })
    };
    o.insert("name".into(), json!(utf8(&e.path)?));
    if let Some(l) = &e.link {
        o.insert("linkName".into(), json!(utf8(l)?));
    }
    o.insert("mode".into(), json!(e.mode & 0o7777));
    o.insert("uid".into(), json!(e.uid));
    o.insert("gid".into(), json!(e.gid));
    o.insert("modtime".into(), json!(rfc3339(e.mtime, e.mtime_nsec)));
    if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
        o.insert(
            "devMajor".into(),
            json!(e.header.device_major()?.unwrap_or(0)),
        );
        o.insert(
            "devMinor".into(),
            json!(e.header.device_minor()?.unwrap_or(0)),
        );
    }
    if !e.xattrs.is_empty() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let x: Map<String, Value> = e
            .xattrs
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    json!(b64.encode(v)),
                )
            })
            .collect();
        o.insert("xattrs".into(), Value::Object(x));
    }
    Ok(o)
}

/// Compresses pieces of the uncompressed stream, one frame or member each, hashing the
/// uncompressed bytes (the diff_id) and counting the compressed ones.
struct Out<W: Write> {
    form: Form,
    hw: HashWriter<W>,
    diff: Sha256,
}

impl<W: Write> Out<W> {
    /// `n` bytes of `r` as one frame or member; returns where it starts and ends.
    fn piece(
        &mut self,
        r: &mut impl Read,
        n: u64,
        hashes: &mut [&mut Sha256],
    ) -> Result<(u64, u64)> {
        let start = self.hw.count;
        let mut buf = vec![0u8; n.min(CHUNK) as usize];
        let mut left = n;
        let diff = &mut self.diff;
        let mut seen = |b: &[u8]| {
            diff.update(b);
            for h in hashes.iter_mut() {
                h.update(b);
            }
        };
        match self.form {
            Form::ZstdChunked => {
                let mut z = zstd::Encoder::new(&mut self.hw, ZSTD_LEVEL)?;
                copy_n(r, &mut buf, &mut left, &mut |b| {
                    seen(b);
                    z.write_all(b)
                })?;
                z.finish()?;
            }
            Form::Estargz => {
                let mut gz = flate2::GzBuilder::new()
                    .mtime(0)
                    .write(&mut self.hw, flate2::Compression::default());
                copy_n(r, &mut buf, &mut left, &mut |b| {
                    seen(b);
                    gz.write_all(b)
                })?;
                gz.finish()?;
            }
        }
        Ok((start, self.hw.count))
    }
}

fn copy_n(
    r: &mut impl Read,
    buf: &mut [u8],
    left: &mut u64,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<()> {
    while *left > 0 {
        let want = (*left).min(buf.len() as u64) as usize;
        r.read_exact(&mut buf[..want])
            .context("the layer tar ended early")?;
        sink(&buf[..want])?;
        *left -= want as u64;
    }
    Ok(())
}

/// Writes the tar `tar` (read from its start) as a `form` blob to `out`.
pub fn write(tar: &mut File, form: Form, out: impl Write) -> Result<Written> {
    tar.rewind()?;
    let total = tar.metadata()?.len();
    let mut members = Vec::new();
    let mut reader = TarReader::new_seekable(BufReader::new(&mut *tar));
    let mut end_of_members = 0u64;
    while let Some(entry) = reader.next_entry().context("reading the layer tar")? {
        if entry.kind == tar::EntryType::GNUSparse {
            bail!(
                "{}: a sparse tar member cannot go into a seekable layer",
                String::from_utf8_lossy(&entry.path)
            );
        }
        let data_at = reader.data_offset();
        let stored = if toc_type(&entry)? == "reg" {
            entry.size
        } else {
            0
        };
        end_of_members = data_at + stored.div_ceil(512) * 512;
        members.push(Member {
            entry,
            data_at,
            stored,
        });
    }
    drop(reader);
    if end_of_members > total {
        bail!("the layer tar is cut short");
    }
    tar.seek(SeekFrom::Start(0))?;
    let mut r = BufReader::with_capacity(1 << 20, &mut *tar);
    let mut o = Out {
        form,
        hw: HashWriter::new(out),
        diff: Sha256::new(),
    };
    let mut entries = Vec::new();
    let mut pos = 0u64;
    for m in &members {
        let mut e = toc_entry(m)?;
        if m.stored == 0 {
            if m.entry.kind == tar::EntryType::Regular {
                e.insert("size".into(), json!(0));
            }
            entries.push(Value::Object(e));
            continue;
        }
        // Everything since the last file's data (headers, padding): one piece.
        o.piece(&mut r, m.data_at - pos, &mut [])?;
        let mut file_hash = Sha256::new();
        let mut chunks = Vec::new();
        let mut at = 0u64;
        while at < m.stored {
            let n = (m.stored - at).min(CHUNK);
            let mut h = Sha256::new();
            let (start, end) = o.piece(&mut r, n, &mut [&mut h, &mut file_hash])?;
            let d: [u8; 32] = h.finalize().into();
            chunks.push((at, n, start, end, d));
            at += n;
        }
        pos = m.data_at + m.stored;
        let digest = format!("sha256:{:x}", file_hash.finalize());
        let multi = chunks.len() > 1;
        for (i, &(at, n, start, _, d)) in chunks.iter().enumerate() {
            let mut c = if i == 0 {
                let mut c = e.clone();
                c.insert("size".into(), json!(m.stored));
                c.insert("digest".into(), json!(digest));
                c
            } else {
                let mut c = Map::new();
                c.insert("type".into(), json!("chunk"));
                c.insert("name".into(), e["name"].clone());
                c
            };
            c.insert("offset".into(), json!(start));
            if at > 0 {
                c.insert("chunkOffset".into(), json!(at));
            }
            if form == Form::ZstdChunked && i == 0 {
                c.insert("endOffset".into(), json!(chunks[chunks.len() - 1].3));
            }
            if multi || form == Form::Estargz {
                c.insert("chunkSize".into(), json!(n));
                c.insert("chunkDigest".into(), json!(format!("sha256:{}", hex(&d))));
            }
            entries.push(Value::Object(c));
        }
    }
    let mut annotations = BTreeMap::new();
    match form {
        Form::ZstdChunked => {
            o.piece(&mut r, total - pos, &mut [])?;
            let toc = serde_json::to_vec(&json!({"version": 1, "entries": entries}))?;
            let compressed = zstd::bulk::compress(&toc, ZSTD_LEVEL)?;
            let offset = o.hw.count + 8;
            skippable(&mut o.hw, &compressed)?;
            let mut footer = Vec::with_capacity(40);
            for v in [offset, compressed.len() as u64, toc.len() as u64, 1] {
                footer.extend_from_slice(&v.to_le_bytes());
            }
            footer.extend_from_slice(ZSTD_CHUNKED_MAGIC_OLD);
            skippable(&mut o.hw, &footer)?;
            let pos_value = format!("{offset}:{}:{}:1", compressed.len(), toc.len());
            // The keys containers/storage 1.43 (skopeo 1.9, podman 4.3) reads; later
            // versions read `io.github.containers.*` with a tar-split beside, which this
            // blob has not: they pull it whole, as a plain zstd layer.
            annotations.insert(POSITION_KEYS[0].to_string(), pos_value);
            annotations.insert(
                CHECKSUM_KEYS[0].to_string(),
                format!("sha256:{:x}", Sha256::digest(&compressed)),
            );
        }
        Form::Estargz => {
            o.piece(&mut r, end_of_members - pos, &mut [])?;
            let toc = serde_json::to_vec_pretty(&json!({"version": 1, "entries": entries}))?;
            let toc_off = o.hw.count;
            let mut member = Vec::new();
            let mut h = tar::Header::new_ustar();
            h.set_path(ESTARGZ_TOC_NAME)?;
            h.set_size(toc.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mtime(0);
            h.set_cksum();
            member.extend_from_slice(h.as_bytes());
            member.extend_from_slice(&toc);
            member.resize(member.len().div_ceil(512) * 512 + 1024, 0);
            o.piece(&mut &member[..], member.len() as u64, &mut [])?;
            o.hw.write_all(&estargz_footer(toc_off))?;
            annotations.insert(
                ESTARGZ_TOC_DIGEST.to_string(),
                format!("sha256:{:x}", Sha256::digest(&toc)),
            );
            annotations.insert(
                ESTARGZ_UNCOMPRESSED_SIZE.to_string(),
                (end_of_members + member.len() as u64).to_string(),
            );
        }
    }
    o.hw.flush()?;
    let diff_id = format!("sha256:{:x}", o.diff.finalize());
    let (digest, size, _) = o.hw.finish();
    Ok(Written {
        digest,
        size,
        diff_id,
        annotations,
    })
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn skippable(w: &mut impl Write, data: &[u8]) -> Result<()> {
    w.write_all(&SKIPPABLE_MAGIC)?;
    w.write_all(&(u32::try_from(data.len())?).to_le_bytes())?;
    w.write_all(data)?;
    Ok(())
}

/// eStargz's footer: an empty gzip member whose extra field names the TOC's offset.
pub fn estargz_footer(toc_off: u64) -> Vec<u8> {
    let mut b = vec![0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 255];
    b.extend_from_slice(&26u16.to_le_bytes());
    b.extend_from_slice(b"SG");
    b.extend_from_slice(&22u16.to_le_bytes());
    b.extend_from_slice(format!("{toc_off:016x}STARGZ").as_bytes());
    b.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    b.extend_from_slice(&[0; 8]);
    b
}
