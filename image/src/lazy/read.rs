//! Finding and reading the table of contents of a zstd:chunked or eStargz blob, and
//! fetching one chunk of a file checked against its digest.
//!
//! zstd:chunked (containers/storage, pkg/chunked): the TOC is zstd-compressed JSON in a
//! zstd skippable frame (magic `50 2a 4d 18`, a little-endian u32 length) after the
//! layer's frames; where it is comes from the manifest annotation
//! `io.containers.zstd-chunked.manifest-position` (`io.github.containers.` since
//! containers/storage 1.45) = `offset:length:uncompressed:type` (type 1), with the sha256
//! of the compressed TOC in `...manifest-checksum`; without them, from the footer, a last
//! skippable frame of 40 bytes (offset, length, uncompressed length, type as u64 LE, then
//! `GnUlInUx`, what skopeo 1.9 writes) or 64 bytes (the tar-split's three fields added,
//! magic `GNUlInUx`).
//!
//! eStargz (stargz-snapshotter, estargz/): gzip members; the TOC is a tar member
//! `stargz.index.json` in a gzip member of its own, and the blob ends with a 51-byte
//! footer, an empty gzip member whose extra field (subfield `SG`) holds
//! `%016x` of the TOC member's offset and `STARGZ` (47 bytes and no subfield header in
//! the older stargz). The TOC JSON's sha256 is the manifest annotation
//! `containerd.io/snapshot/stargz/toc.digest`.

use std::collections::HashMap;
use std::io::Read;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest as _, Sha256};

use super::range::RangeSource;
use super::toc::{Chunk, Form, Toc, MAX_TOC};

pub const SKIPPABLE_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];
/// The footer magic as containers/storage before 1.49 wrote it, and after.
pub const ZSTD_CHUNKED_MAGIC_OLD: &[u8; 8] = b"GnUlInUx";
pub const ZSTD_CHUNKED_MAGIC: &[u8; 8] = b"GNUlInUx";
pub const POSITION_KEYS: [&str; 2] = [
    "io.containers.zstd-chunked.manifest-position",
    "io.github.containers.zstd-chunked.manifest-position",
];
pub const CHECKSUM_KEYS: [&str; 2] = [
    "io.containers.zstd-chunked.manifest-checksum",
    "io.github.containers.zstd-chunked.manifest-checksum",
];
pub const ESTARGZ_TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";
pub const ESTARGZ_UNCOMPRESSED_SIZE: &str = "io.containers.estargz.uncompressed-size";
pub const ESTARGZ_FOOTER: usize = 51;
const ESTARGZ_LEGACY_FOOTER: usize = 47;

/// A blob's table of contents, read and checked.
#[derive(Debug, Clone)]
pub struct Opened {
    pub form: Form,
    pub toc: Toc,
    /// `sha256:` of what the form's annotation names (zstd:chunked: the compressed TOC;
    /// eStargz: the TOC JSON).
    pub toc_digest: String,
    /// Where the file data ends (the TOC's start).
    pub data_end: u64,
}

fn sha256_hex(b: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(b))
}

/// Reads the TOC of the blob behind `src`, in the form the annotations (of the blob's
/// manifest descriptor; may be empty) or its footer say. A digest an annotation gives
/// must match.
pub fn open(src: &dyn RangeSource, annotations: &HashMap<String, String>) -> Result<Opened> {
    let size = src.size()?;
    let has = |keys: &[&str]| keys.iter().find_map(|k| annotations.get(*k));
    if let Some(pos) = has(&POSITION_KEYS) {
        let f = parse_position(pos)?;
        return zstd_chunked(src, size, f, has(&CHECKSUM_KEYS).map(String::as_str));
    }
    let tail_len = size.min(72);
    let tail = src
        .read_range(size - tail_len, tail_len)
        .context("reading the blob's footer")?;
    if let Some(f) = zstd_footer(&tail) {
        return zstd_chunked(src, size, f, has(&CHECKSUM_KEYS).map(String::as_str));
    }
    if let Some((toc_off, footer)) = estargz_footer(&tail) {
        return estargz(
            src,
            size,
            toc_off,
            footer,
            annotations.get(ESTARGZ_TOC_DIGEST).map(String::as_str),
        );
    }
    bail!(
        "{}: neither a zstd:chunked nor an eStargz blob (no table of contents)",
        src.describe()
    )
}

/// The descriptor annotations a seekable blob is pushed with (those `lazy::write` gives
/// it), found again from the blob's footer and checked by reading its TOC: for a blob kept
/// as it came and sent on verbatim, whose manifest annotations are otherwise lost. `None`
/// for a blob in no seekable form. (eStargz's uncompressed size is left out: it takes
/// reading the whole blob, and readers do without it.)
pub fn annotations_of(src: &dyn RangeSource) -> Option<std::collections::BTreeMap<String, String>> {
    let size = src.size().ok()?;
    let tail_len = size.min(72);
    let tail = src.read_range(size - tail_len, tail_len).ok()?;
    let opened = open(src, &HashMap::new()).ok()?;
    let mut a = std::collections::BTreeMap::new();
    if let Some(p) = zstd_footer(&tail) {
        a.insert(
            POSITION_KEYS[0].to_string(),
            format!("{}:{}:{}:1", p.offset, p.length, p.uncompressed),
        );
        a.insert(CHECKSUM_KEYS[0].to_string(), opened.toc_digest);
    } else {
        a.insert(ESTARGZ_TOC_DIGEST.to_string(), opened.toc_digest);
    }
    Some(a)
}

/// [`annotations_of`] the blob file `path` (`None` too when it cannot be read).
pub fn annotations_of_file(
    path: &std::path::Path,
) -> Option<std::collections::BTreeMap<String, String>> {
    annotations_of(&super::FileSource::open(path).ok()?)
}

/// The TOC's place in a zstd:chunked blob: offset, compressed and uncompressed length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub length: u64,
    pub uncompressed: u64,
}

/// `offset:length:uncompressed:type` (type 1, the CRFS TOC).
pub fn parse_position(s: &str) -> Result<Position> {
    let v: Vec<u64> = s
        .split(':')
        .map(|p| p.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow!("manifest-position {s:.80}: not four numbers"))?;
    match v[..] {
        [offset, length, uncompressed, 1] => Ok(Position {
            offset,
            length,
            uncompressed,
        }),
        [_, _, _, t] => bail!("manifest-position: TOC type {t} (only 1 is known)"),
        _ => bail!("manifest-position {s:.80}: not four numbers"),
    }
}

/// The footer at the end of `tail` (the blob's last bytes), either size.
pub fn zstd_footer(tail: &[u8]) -> Option<Position> {
    for (len, magic) in [(64usize, ZSTD_CHUNKED_MAGIC), (40, ZSTD_CHUNKED_MAGIC_OLD)] {
        let Some(start) = tail.len().checked_sub(len + 8) else {
            continue;
        };
        let frame = &tail[start..];
        let data = &frame[8..];
        let le = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&data[8 * i..8 * i + 8]);
            u64::from_le_bytes(b)
        };
        let magic_ok = data[len - 8..].eq_ignore_ascii_case(magic);
        if frame[..4] == SKIPPABLE_MAGIC
            && frame[4..8] == (len as u32).to_le_bytes()
            && magic_ok
            && le(3) == 1
        {
            return Some(Position {
                offset: le(0),
                length: le(1),
                uncompressed: le(2),
            });
        }
    }
    None
}

fn zstd_chunked(
    src: &dyn RangeSource,
    size: u64,
    p: Position,
    checksum: Option<&str>,
) -> Result<Opened> {
    if p.length > MAX_TOC || p.uncompressed > MAX_TOC {
        bail!(
            "zstd:chunked TOC of {} bytes: too big",
            p.uncompressed.max(p.length)
        );
    }
    let end = p.offset.checked_add(p.length).filter(|&e| e <= size);
    if end.is_none() || p.offset < 8 {
        bail!(
            "zstd:chunked TOC at {}+{} outside the blob ({size})",
            p.offset,
            p.length
        );
    }
    let compressed = src
        .read_range(p.offset, p.length)
        .context("reading the TOC")?;
    let toc_digest = sha256_hex(&compressed);
    if let Some(want) = checksum {
        if want != toc_digest {
            bail!("zstd:chunked TOC digest {toc_digest}, the manifest says {want:.80}");
        }
    }
    let json = decompress_bounded(
        zstd::stream::read::Decoder::new(&compressed[..])?,
        p.uncompressed,
    )
    .context("decompressing the zstd:chunked TOC")?;
    // The TOC's skippable frame header is 8 bytes before it; data ends there.
    let data_end = p.offset - 8;
    let toc = Toc::parse(&json, Form::ZstdChunked, data_end)?;
    Ok(Opened {
        form: Form::ZstdChunked,
        toc,
        toc_digest,
        data_end,
    })
}

/// The TOC offset an eStargz footer at the end of `tail` gives, and the footer's size.
pub fn estargz_footer(tail: &[u8]) -> Option<(u64, usize)> {
    let parse = |sub: &[u8]| -> Option<u64> {
        let (hex, magic) = sub.split_at(16);
        if magic != b"STARGZ" {
            return None;
        }
        u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    };
    if let Some(f) = tail.get(tail.len().checked_sub(ESTARGZ_FOOTER)?..) {
        if f[..4] == [0x1f, 0x8b, 8, 4] && f[10..12] == [26, 0] && f[12..16] == *b"SG\x16\x00" {
            if let Some(off) = parse(&f[16..38]) {
                return Some((off, ESTARGZ_FOOTER));
            }
        }
    }
    let f = tail.get(tail.len().checked_sub(ESTARGZ_LEGACY_FOOTER)?..)?;
    if f[..4] == [0x1f, 0x8b, 8, 4] && f[10..12] == [22, 0] {
        return parse(&f[12..34]).map(|o| (o, ESTARGZ_LEGACY_FOOTER));
    }
    None
}

fn estargz(
    src: &dyn RangeSource,
    size: u64,
    toc_off: u64,
    footer: usize,
    want: Option<&str>,
) -> Result<Opened> {
    let end = size - footer as u64;
    if toc_off >= end {
        bail!("eStargz TOC offset {toc_off} outside the blob ({size})");
    }
    if end - toc_off > MAX_TOC {
        bail!("eStargz TOC of {} bytes: too big", end - toc_off);
    }
    let member = src
        .read_range(toc_off, end - toc_off)
        .context("reading the TOC")?;
    let mut gz = flate2::read::GzDecoder::new(&member[..]);
    let mut header = [0u8; 512];
    gz.read_exact(&mut header)
        .context("eStargz TOC: no tar header")?;
    let h = tar::Header::from_byte_slice(&header);
    let name = h.path_bytes();
    if name.as_ref() != super::toc::ESTARGZ_TOC_NAME.as_bytes() {
        bail!(
            "eStargz TOC member named {:.80}",
            String::from_utf8_lossy(&name)
        );
    }
    let len = h.size().context("eStargz TOC member size")?;
    if len > MAX_TOC {
        bail!("eStargz TOC of {len} bytes: too big");
    }
    let json = decompress_bounded(gz, len).context("decompressing the eStargz TOC")?;
    let toc_digest = sha256_hex(&json);
    if let Some(want) = want {
        if want != toc_digest {
            bail!("eStargz TOC digest {toc_digest}, the manifest says {want:.80}");
        }
    }
    let toc = Toc::parse(&json, Form::Estargz, toc_off)?;
    Ok(Opened {
        form: Form::Estargz,
        toc,
        toc_digest,
        data_end: toc_off,
    })
}

/// Exactly `len` bytes of `r`.
fn decompress_bounded(r: impl Read, len: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(len).read_to_end(&mut out)?;
    if out.len() as u64 != len {
        bail!("{} bytes where {len} were announced", out.len());
    }
    Ok(out)
}

/// The bytes of chunk `c`, fetched from `src` and decompressed, checked against the
/// chunk's digest: bytes that do not match are never returned.
pub fn fetch_chunk(src: &dyn RangeSource, form: Form, c: &Chunk) -> Result<Vec<u8>> {
    if c.zeros {
        return Ok(vec![0u8; usize::try_from(c.size)?]);
    }
    let raw = src.read_range(c.blob_offset, c.blob_end - c.blob_offset)?;
    decode_chunk(&raw, form, c)
}

/// A chunk's compressed bytes `raw` decompressed and checked.
pub fn decode_chunk(raw: &[u8], form: Form, c: &Chunk) -> Result<Vec<u8>> {
    let want = c.inner_offset + c.size;
    let all = match form {
        Form::ZstdChunked => decompress_bounded(zstd::stream::read::Decoder::new(raw)?, want),
        Form::Estargz => decompress_bounded(flate2::read::MultiGzDecoder::new(raw), want),
    }?;
    let data = all[c.inner_offset as usize..].to_vec();
    let got: [u8; 32] = Sha256::digest(&data).into();
    match c.digest {
        Some(d) if d == got => Ok(data),
        Some(_) => Err(anyhow!(
            "chunk at {}+{} (blob bytes {}..{}): digest mismatch",
            c.file_offset,
            c.size,
            c.blob_offset,
            c.blob_end
        )),
        None => bail!("chunk without a digest"),
    }
}
