//! The table of contents of a seekable layer blob (zstd:chunked or eStargz), read into one
//! model: every entry of the layer with its metadata, and for each regular file the chunks
//! its content is stored in (where in the blob, how big, which digest).
//!
//! Both forms write the same JSON shape (eStargz's `TOCEntry` is CRFS's, and zstd:chunked's
//! `FileMetadata` extends it): `{"version":1,"entries":[...]}`, each entry with `type`
//! (`dir`, `reg`, `symlink`, `hardlink`, `char`, `block`, `fifo`, or `chunk` for a regular
//! file's second and later chunks), `name`, `linkName`, `mode`, `uid`, `gid`, `modtime`
//! (RFC 3339), `devMajor`/`devMinor`, `xattrs` (name -> base64), `digest` (of the whole
//! content), `offset` (where the content's first compressed frame starts),
//! `endOffset` (zstd:chunked: where the last one ends), `chunkOffset`, `chunkSize`,
//! `chunkDigest`, `chunkType` (zstd:chunked: `zeros` for a chunk of zeros) and
//! `innerOffset` (eStargz: where in the decompressed member the chunk starts).
//!
//! The input is untrusted: its size and entry count are bounded, names are cleaned as
//! extraction cleans them (absolute names, `..` and NULs refuse the TOC), chunks must tile
//! their file exactly and lie inside the blob; nothing here panics on any input.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::unpack::{clean_path, Limits};

/// The largest TOC read, compressed or not (containers/storage allows 50 MiB).
pub const MAX_TOC: u64 = 64 << 20;
/// The most entries one TOC may have.
pub const MAX_ENTRIES: usize = 2_000_000;
/// The most bytes of one xattr value.
const MAX_XATTR: usize = 64 << 10;

/// Names of eStargz's own members: its TOC and the prefetch landmarks. They are not files
/// of the layer (stargz-snapshotter hides them too).
pub const ESTARGZ_TOC_NAME: &str = "stargz.index.json";
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";

/// The seekable forms of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// zstd frames, each file's chunks frames of their own; the TOC in a skippable frame.
    #[serde(rename = "zstd:chunked")]
    ZstdChunked,
    /// gzip members, each file's chunks members of their own; the TOC a tar member.
    Estargz,
}

impl Form {
    pub fn name(self) -> &'static str {
        match self {
            Form::ZstdChunked => "zstd:chunked",
            Form::Estargz => "estargz",
        }
    }
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink(Vec<u8>),
    /// A hard link to another path of the layer (cleaned, relative).
    Hardlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// One chunk of a regular file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Where in the file it goes, and how many bytes.
    pub file_offset: u64,
    pub size: u64,
    /// The compressed bytes to fetch: `[blob_offset, blob_end)`, decompressed, skipping
    /// `inner_offset` bytes, give the chunk.
    pub blob_offset: u64,
    pub blob_end: u64,
    pub inner_offset: u64,
    /// sha256 of the chunk's bytes; `None` only for a zeros chunk.
    pub digest: Option<[u8; 32]>,
    /// zstd:chunked's `zeros` chunk: all zeros, nothing to fetch (a hole).
    pub zeros: bool,
}

/// One entry of the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Cleaned, relative, components joined by `/`; empty for the root.
    pub path: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Regular files: the content's size and chunks (in file order, tiling it).
    pub size: u64,
    pub chunks: Vec<Chunk>,
    /// eStargz: the file comes before the prefetch landmark (fetch it first).
    pub landmark: bool,
}

/// A parsed table of contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Toc {
    pub entries: Vec<Entry>,
}

/// One JSON entry, as both forms write it (unknown fields ignored).
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawEntry {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    #[serde(rename = "linkName")]
    link_name: String,
    mode: i64,
    size: i64,
    uid: i64,
    gid: i64,
    modtime: Option<String>,
    #[serde(rename = "devMajor")]
    dev_major: i64,
    #[serde(rename = "devMinor")]
    dev_minor: i64,
    xattrs: Option<HashMap<String, String>>,
    digest: String,
    offset: i64,
    #[serde(rename = "endOffset")]
    end_offset: i64,
    #[serde(rename = "innerOffset")]
    inner_offset: i64,
    #[serde(rename = "chunkOffset")]
    chunk_offset: i64,
    #[serde(rename = "chunkSize")]
    chunk_size: i64,
    #[serde(rename = "chunkDigest")]
    chunk_digest: String,
    #[serde(rename = "chunkType")]
    chunk_type: String,
}

#[derive(Deserialize)]
struct RawToc {
    version: i64,
    entries: Vec<RawEntry>,
}

/// `sha256:<64 hex>` as bytes.
pub fn parse_sha256(s: &str) -> Result<[u8; 32]> {
    let hex = s
        .strip_prefix("sha256:")
        .ok_or_else(|| anyhow!("digest {s:.80}: not sha256"))?;
    if hex.len() != 64 {
        bail!("digest {s:.80}: not 64 hex digits");
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("x"), 16)
            .map_err(|_| anyhow!("digest {s:.80}: not hex"))?;
    }
    Ok(out)
}

fn nonneg(v: i64, what: &str, name: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| anyhow!("{name}: negative {what}"))
}

fn clean(raw: &str) -> Result<Vec<u8>> {
    let comps = clean_path(raw.as_bytes(), &Limits::default())?;
    Ok(comps.join(&b'/'))
}

/// RFC 3339 to seconds and nanoseconds since the epoch (jiff: Go writes local offsets).
fn parse_time(s: &str) -> Result<(i64, u32)> {
    let t: jiff::Timestamp = s.parse().with_context(|| format!("time {s:.40}"))?;
    Ok((t.as_second(), t.subsec_nanosecond().max(0) as u32))
}

fn base64_decode(s: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| anyhow!("xattr value not base64: {e}"))
}

/// A regular file being assembled from its `reg` entry and the `chunk` entries after it.
struct Open {
    idx: usize,
    end_offset: u64,
    digest: Option<[u8; 32]>,
    raw_chunks: Vec<RawChunk>,
}

struct RawChunk {
    file_offset: u64,
    size: u64,
    blob_offset: u64,
    inner_offset: u64,
    digest: Option<[u8; 32]>,
    zeros: bool,
}

impl Toc {
    /// Parses the TOC JSON of a blob of `form`. `data_end` is where the blob's file data
    /// ends (the TOC's own offset): every chunk must lie before it.
    pub fn parse(json: &[u8], form: Form, data_end: u64) -> Result<Toc> {
        if json.len() as u64 > MAX_TOC {
            bail!("table of contents larger than {MAX_TOC} bytes");
        }
        let raw: RawToc = serde_json::from_slice(json).context("table of contents JSON")?;
        if raw.version != 1 {
            bail!(
                "table of contents version {} (only 1 is known)",
                raw.version
            );
        }
        if raw.entries.len() > MAX_ENTRIES {
            bail!("table of contents with more than {MAX_ENTRIES} entries");
        }
        let mut toc = Toc::default();
        let mut open: Option<Open> = None;
        // eStargz: what comes before `.prefetch.landmark` is fetched first.
        let mut before_landmark = Vec::new();
        // Where eStargz's own members start (they end the chunk before them).
        let mut hidden_starts = Vec::new();
        for e in &raw.entries {
            let name = e.name.as_str();
            if e.kind == "chunk" {
                let o = open
                    .as_mut()
                    .ok_or_else(|| anyhow!("{name:.80}: a chunk with no file before it"))?;
                if clean(name)? != toc.entries[o.idx].path {
                    bail!("{name:.80}: a chunk of another file than the one before it");
                }
                o.raw_chunks.push(raw_chunk(e)?);
                continue;
            }
            if let Some(o) = open.take() {
                finish(&mut toc, o, form)?;
            }
            let path = clean(name)?;
            if form == Form::Estargz {
                let name = std::str::from_utf8(&path).unwrap_or("");
                if [ESTARGZ_TOC_NAME, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK].contains(&name) {
                    hidden_starts.push(nonneg(e.offset, "offset", name)?);
                }
                match name {
                    ESTARGZ_TOC_NAME | NO_PREFETCH_LANDMARK => continue,
                    PREFETCH_LANDMARK => {
                        for &i in &before_landmark {
                            let entry: &mut Entry = &mut toc.entries[i];
                            entry.landmark = true;
                        }
                        continue;
                    }
                    _ => {}
                }
            }
            let (mtime, mtime_nsec) = match e.modtime.as_deref() {
                Some(s) if !s.is_empty() => parse_time(s)?,
                _ => (0, 0),
            };
            let dev = |v: i64| u32::try_from(v).map_err(|_| anyhow!("{name:.80}: device number"));
            let kind = match e.kind.as_str() {
                "dir" => Kind::Dir,
                "reg" => Kind::File,
                "symlink" => Kind::Symlink(e.link_name.as_bytes().to_vec()),
                "hardlink" => Kind::Hardlink(clean(&e.link_name)?),
                "char" => Kind::Char(dev(e.dev_major)?, dev(e.dev_minor)?),
                "block" => Kind::Block(dev(e.dev_major)?, dev(e.dev_minor)?),
                "fifo" => Kind::Fifo,
                other => bail!("{name:.80}: unknown entry type {other:.20}"),
            };
            if matches!(&kind, Kind::Symlink(t) if t.is_empty() || t.contains(&0)) {
                bail!("{name:.80}: symlink without a usable target");
            }
            let mut xattrs = Vec::new();
            for (k, v) in e.xattrs.iter().flatten() {
                let v = base64_decode(v)?;
                if v.len() > MAX_XATTR || k.is_empty() || k.contains('\0') {
                    bail!("{name:.80}: xattr {k:.40} refused");
                }
                xattrs.push((k.as_bytes().to_vec(), v));
            }
            xattrs.sort();
            let id = |v: i64, what| {
                u32::try_from(v).map_err(|_| anyhow!("{name:.80}: {what} out of range"))
            };
            let idx = toc.entries.len();
            toc.entries.push(Entry {
                path,
                kind: kind.clone(),
                mode: (e.mode & 0o7777) as u32,
                uid: id(e.uid, "uid")?,
                gid: id(e.gid, "gid")?,
                mtime,
                mtime_nsec,
                xattrs,
                size: 0,
                chunks: Vec::new(),
                landmark: false,
            });
            if kind == Kind::File {
                let size = nonneg(e.size, "size", name)?;
                toc.entries[idx].size = size;
                if size > 0 {
                    before_landmark.push(idx);
                    let digest = match e.digest.as_str() {
                        "" => None,
                        d => Some(parse_sha256(d)?),
                    };
                    open = Some(Open {
                        idx,
                        end_offset: nonneg(e.end_offset, "endOffset", name)?,
                        digest,
                        raw_chunks: vec![raw_chunk(e)?],
                    });
                }
            }
        }
        if let Some(o) = open.take() {
            finish(&mut toc, o, form)?;
        }
        // Where each chunk's compressed bytes end: zstd:chunked says for the file's last
        // chunk (`endOffset`) and the next chunk's start for the others; eStargz only by
        // the next member's start, or the TOC's.
        let mut starts: Vec<u64> = toc
            .entries
            .iter()
            .flat_map(|e| e.chunks.iter().map(|c| c.blob_offset))
            .collect();
        starts.extend(hidden_starts.into_iter().filter(|&o| o > 0));
        starts.push(data_end);
        starts.sort_unstable();
        starts.dedup();
        for e in &mut toc.entries {
            for c in &mut e.chunks {
                if c.zeros {
                    continue;
                }
                if c.blob_end == 0 {
                    let i = starts.partition_point(|&s| s <= c.blob_offset);
                    c.blob_end = *starts
                        .get(i)
                        .ok_or_else(|| anyhow!("chunk at {} after the data", c.blob_offset))?;
                }
                if c.blob_offset >= c.blob_end || c.blob_end > data_end {
                    bail!(
                        "{}: chunk bytes {}..{} outside the blob's data (..{data_end})",
                        String::from_utf8_lossy(&e.path),
                        c.blob_offset,
                        c.blob_end
                    );
                }
            }
        }
        Ok(toc)
    }
}

fn raw_chunk(e: &RawEntry) -> Result<RawChunk> {
    let name = e.name.as_str();
    Ok(RawChunk {
        file_offset: nonneg(e.chunk_offset, "chunkOffset", name)?,
        size: nonneg(e.chunk_size, "chunkSize", name)?,
        blob_offset: nonneg(e.offset, "offset", name)?,
        inner_offset: nonneg(e.inner_offset, "innerOffset", name)?,
        digest: match e.chunk_digest.as_str() {
            "" => None,
            d => Some(parse_sha256(d)?),
        },
        zeros: e.chunk_type == "zeros",
    })
}

/// Turns a file's raw chunks into chunks that tile it, with digests and ends.
fn finish(toc: &mut Toc, o: Open, form: Form) -> Result<()> {
    let entry = &mut toc.entries[o.idx];
    let shown = String::from_utf8_lossy(&entry.path).into_owned();
    let size = entry.size;
    let single = o.raw_chunks.len() == 1;
    let n = o.raw_chunks.len();
    let mut at = 0u64;
    let mut chunks = Vec::with_capacity(n);
    for (i, r) in o.raw_chunks.iter().enumerate() {
        if r.file_offset != at {
            bail!(
                "{shown}: chunk at {} where {at} was expected",
                r.file_offset
            );
        }
        // A chunk size of 0 means "to the end of the file".
        let csize = if r.size == 0 { size - at } else { r.size };
        if csize == 0 || csize > size - at {
            bail!("{shown}: chunk of {csize} bytes at {at} in a file of {size}");
        }
        let digest = match (r.digest, single, r.zeros) {
            (Some(d), _, _) => Some(d),
            (None, true, false) => Some(o.digest.ok_or_else(|| anyhow!("{shown}: no digest"))?),
            (None, _, true) => None,
            (None, false, false) => bail!("{shown}: a chunk without a digest"),
        };
        // zstd:chunked knows where the file's last frame ends; the others end where the
        // next chunk starts (filled in by the caller's sweep over every chunk start).
        let blob_end = match form {
            Form::ZstdChunked if i + 1 == n => o.end_offset,
            Form::ZstdChunked => o.raw_chunks[i + 1].blob_offset,
            Form::Estargz => 0,
        };
        chunks.push(Chunk {
            file_offset: at,
            size: csize,
            blob_offset: r.blob_offset,
            blob_end,
            inner_offset: r.inner_offset,
            digest,
            zeros: r.zeros,
        });
        at += csize;
    }
    if at != size {
        bail!("{shown}: chunks cover {at} of {size} bytes");
    }
    entry.chunks = chunks;
    Ok(())
}
