//! Reading a layer tar: the one reader of tar metadata for every layer consumer (the
//! unpacker and the source walker). Headers are decoded with the `tar` crate's [`Header`];
//! the stream itself (extension members, long names, sparse maps) is read here, because
//! the crate splits PAX records at newlines (an xattr value holding one made a layer
//! unreadable, and a value could forge a `path` or `size` record) and reads extension
//! members of any size into memory.
//!
//! Handled: PAX local headers (`x`: `path`, `linkpath`, `size`, `uid`, `gid`, `mtime`,
//! `SCHILY.xattr.*`, see [`pax`]), PAX global headers (`g`: checked and skipped, as before),
//! GNU long names and long link names (`L`, `K`), and old-GNU sparse files (`S`, read back
//! with their holes as zeros). Every extension member is bounded by [`MAX_EXTENSION`].

pub mod pax;

use std::io::{self, Read, Seek, SeekFrom};

use anyhow::{anyhow, bail, Context, Result};
use tar::{EntryType, GnuExtSparseHeader, GnuSparseHeader, Header};

use pax::Pax;

const BLOCK: u64 = 512;

/// The largest extension member (PAX header, GNU long name) read into memory.
pub const MAX_EXTENSION: u64 = 1 << 20;

/// The largest sparse map, in extension blocks (21 segments each).
const MAX_SPARSE_BLOCKS: u64 = 1 << 16;

/// One member of the archive with its extensions applied.
pub struct Entry {
    /// The member's own header (its size field may be the stored size of a sparse file, or
    /// stale when PAX says otherwise: use the fields below).
    pub header: Header,
    pub kind: EntryType,
    pub path: Vec<u8>,
    /// Symlink target or hard link target.
    pub link: Option<Vec<u8>>,
    /// The file's size (a sparse file's full size, holes included).
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    /// PAX `SCHILY.xattr.*` records, in archive order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A layer tar read member by member.
pub struct TarReader<R> {
    r: R,
    /// Bytes of the stream consumed so far (for error messages).
    pos: u64,
    /// The current member's stored data not read yet, and the padding after it.
    left: u64,
    pad: u64,
    /// The current member's sparse map (offset, length) and where its reader stands.
    sparse: Option<Sparse>,
    members: u64,
    done: bool,
    /// Where the current member's data starts in the stream.
    data_at: u64,
    /// Passes over `n` bytes, returning how many there were.
    skip: fn(&mut R, u64) -> io::Result<u64>,
}

struct Sparse {
    map: Vec<(u64, u64)>,
    /// The next segment, the logical position, the logical size.
    idx: usize,
    at: u64,
    size: u64,
}

impl<R: Read> TarReader<R> {
    pub fn new(r: R) -> TarReader<R> {
        TarReader {
            r,
            pos: 0,
            left: 0,
            pad: 0,
            sparse: None,
            members: 0,
            done: false,
            data_at: 0,
            skip: |r, n| io::copy(&mut r.take(n), &mut io::sink()),
        }
    }

    /// Where the current member's data starts in the stream (a sparse member's stored
    /// data; a plain member's data is `size` bytes from there).
    pub fn data_offset(&self) -> u64 {
        self.data_at
    }

    /// The stream, positioned after the end-of-archive block (or wherever reading stopped).
    pub fn into_inner(self) -> R {
        self.r
    }
}

impl<R: Read + Seek> TarReader<R> {
    /// A reader of a file read in place: data not read is seeked over (a member cut short
    /// at the end of the file is then not noticed here, but by whoever reads its data).
    pub fn new_seekable(r: R) -> TarReader<R> {
        TarReader {
            skip: |r, n| {
                let n_i64 = i64::try_from(n).map_err(io::Error::other)?;
                r.seek(SeekFrom::Current(n_i64))?;
                Ok(n)
            },
            ..TarReader::new(r)
        }
    }
}

impl<R: Read> TarReader<R> {
    /// The next member, or `None` at the end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        if self.done {
            return Ok(None);
        }
        self.skip_rest()?;
        let mut local: Option<Pax> = None;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            let at = self.pos;
            let Some(header) = self.header()? else {
                if local.is_some() || long_name.is_some() || long_link.is_some() {
                    bail!("the archive ends after an extension header, without its member");
                }
                self.done = true;
                return Ok(None);
            };
            self.members += 1;
            let kind = header.entry_type();
            let stored = header
                .entry_size()
                .with_context(|| format!("member at byte {at}: size field"))?;
            let what = || {
                format!(
                    "{} header {:?} at byte {at}",
                    describe(kind),
                    String::from_utf8_lossy(&header.path_bytes())
                )
            };
            match kind {
                EntryType::XHeader | EntryType::XGlobalHeader => {
                    let data = self.extension(stored).with_context(what)?;
                    let p = match Pax::parse(&data) {
                        Ok(p) => p,
                        Err(e) => {
                            // Name the member it describes when the next header reads.
                            let next = match self.header() {
                                Ok(Some(h)) => format!(
                                    " (describing {:?})",
                                    String::from_utf8_lossy(&h.path_bytes())
                                ),
                                _ => String::new(),
                            };
                            return Err(e.context(format!("{}{next}", what())));
                        }
                    };
                    // A global header describes the archive, not a member: checked, not kept.
                    if kind == EntryType::XHeader {
                        if local.is_some() {
                            bail!("{}: a second PAX header for one member", what());
                        }
                        local = Some(p);
                    }
                }
                EntryType::GNULongName | EntryType::GNULongLink => {
                    let mut data = self.extension(stored).with_context(what)?;
                    if let Some(nul) = data.iter().position(|&b| b == 0) {
                        data.truncate(nul);
                    }
                    let slot = if kind == EntryType::GNULongName {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    if slot.replace(data).is_some() {
                        bail!("{}: a second long name for one member", what());
                    }
                }
                _ => {
                    let pax = local.unwrap_or_default();
                    return self
                        .member(header, pax, long_name, long_link, stored)
                        .map(Some)
                        .with_context(|| {
                            format!(
                                "member at byte {at} (the archive's member {})",
                                self.members
                            )
                        });
                }
            }
        }
    }

    /// Applies the extensions to a member's header and sets up its data.
    fn member(
        &mut self,
        header: Header,
        pax: Pax,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        stored: u64,
    ) -> Result<Entry> {
        let kind = header.entry_type();
        // PAX, which POSIX says overrides the header, wins over a GNU long name.
        let path = pax
            .path
            .or(long_name)
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let link = pax
            .linkpath
            .or(long_link)
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        let stored = pax.size.unwrap_or(stored);
        let old = header.as_old();
        let (mtime, mtime_nsec) = match pax.mtime {
            Some(t) => t,
            None => (field(header.mtime(), &old.mtime, "mtime")? as i64, 0),
        };
        let uid = match pax.uid {
            Some(u) => u,
            None => field(header.uid(), &old.uid, "uid")?,
        };
        let gid = match pax.gid {
            Some(g) => g,
            None => field(header.gid(), &old.gid, "gid")?,
        };
        let mode = field(header.mode().map(u64::from), &old.mode, "mode")? as u32;
        let mut size = stored;
        if kind == EntryType::GNUSparse {
            let s = self.sparse_map(&header, stored)?;
            size = s.size;
            self.sparse = Some(s);
        }
        self.left = stored;
        self.pad = padding(stored);
        self.data_at = self.pos;
        Ok(Entry {
            header,
            kind,
            path,
            link,
            size,
            mode,
            uid,
            gid,
            mtime,
            mtime_nsec,
            xattrs: pax.xattrs,
        })
    }

    /// The current member's data (a sparse file's holes read as zeros).
    pub fn data(&mut self) -> Data<'_, R> {
        Data(self)
    }

    /// The next header block, `None` at the end of the archive (a zero block or the end of
    /// the stream where a header would start).
    fn header(&mut self) -> Result<Option<Header>> {
        let mut header = Header::new_old();
        let n = read_full(&mut self.r, header.as_mut_bytes())
            .with_context(|| format!("reading a tar header at byte {}", self.pos))?;
        self.pos += n as u64;
        if n == 0 {
            return Ok(None);
        }
        if n < BLOCK as usize {
            bail!(
                "the archive ends inside a header at byte {}",
                self.pos - n as u64
            );
        }
        // One pass over the block (this runs for every member): the sum of its bytes with the
        // checksum field counted as spaces; an all-zero block ends the archive.
        let b = header.as_bytes();
        let mut sum = 0u32;
        for &x in b[..148].iter().chain(&b[156..]) {
            sum += u32::from(x);
        }
        if sum == 0 && b[148..156].iter().all(|&x| x == 0) {
            return Ok(None);
        }
        sum += 8 * u32::from(b' ');
        let want = header.cksum().ok();
        if want != Some(sum) {
            bail!("bad tar header checksum at byte {}", self.pos - BLOCK);
        }
        Ok(Some(header))
    }

    /// The data of an extension member, bounded.
    fn extension(&mut self, size: u64) -> Result<Vec<u8>> {
        if size > MAX_EXTENSION {
            bail!("{size} bytes, more than the {MAX_EXTENSION} accepted");
        }
        let mut data = vec![0; size as usize];
        let n = read_full(&mut self.r, &mut data)?;
        self.pos += n as u64;
        if n < data.len() {
            bail!("the archive ends inside it");
        }
        self.left = 0;
        self.pad = padding(size);
        self.skip_rest()?;
        Ok(data)
    }

    /// An old-GNU sparse map: four segments in the header, 21 per extension block after it.
    fn sparse_map(&mut self, header: &Header, stored: u64) -> Result<Sparse> {
        let gnu = header
            .as_gnu()
            .ok_or_else(|| anyhow!("a sparse member without a GNU header"))?;
        let size = gnu.real_size().context("sparse real size field")?;
        let mut map = Vec::new();
        let mut add = |s: &GnuSparseHeader| -> Result<()> {
            if s.is_empty() {
                return Ok(());
            }
            let (off, len) = (s.offset()?, s.length()?);
            if off.checked_add(len).is_none_or(|end| end > size) {
                bail!("a sparse segment past the file's size {size}");
            }
            if let Some(&(o, l)) = map.last() {
                if off < o + l {
                    bail!("sparse segments out of order or overlapping");
                }
            }
            map.push((off, len));
            Ok(())
        };
        for s in &gnu.sparse {
            add(s)?;
        }
        let mut more = gnu.is_extended();
        let mut blocks = 0;
        while more {
            blocks += 1;
            if blocks > MAX_SPARSE_BLOCKS {
                bail!("a sparse map of more than {MAX_SPARSE_BLOCKS} blocks");
            }
            let mut ext = GnuExtSparseHeader::new();
            let n = read_full(&mut self.r, ext.as_mut_bytes())?;
            self.pos += n as u64;
            if n < BLOCK as usize {
                bail!("the archive ends inside a sparse map");
            }
            for s in ext.sparse() {
                add(s)?;
            }
            more = ext.is_extended();
        }
        let data: u64 = map.iter().map(|s| s.1).sum();
        if data != stored {
            bail!("the sparse map holds {data} bytes, the member {stored}");
        }
        Ok(Sparse {
            map,
            idx: 0,
            at: 0,
            size,
        })
    }

    /// Skips what is left of the current member's data and padding.
    fn skip_rest(&mut self) -> Result<()> {
        self.sparse = None;
        let want = self.left + self.pad;
        if want > 0 {
            let n = (self.skip)(&mut self.r, want).context("reading the layer tar")?;
            self.pos += n;
            if n < want {
                bail!(
                    "the archive ends inside a member's data at byte {}",
                    self.pos
                );
            }
        }
        (self.left, self.pad) = (0, 0);
        Ok(())
    }

    fn read_stored(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (buf.len() as u64).min(self.left) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside a member's data",
            ));
        }
        self.left -= n as u64;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The data of the current member.
pub struct Data<'a, R>(&'a mut TarReader<R>);

impl<R: Read> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = &mut *self.0;
        let Some(s) = t.sparse.as_mut() else {
            return t.read_stored(buf);
        };
        // Skip segments fully read.
        while s.idx < s.map.len() && s.at >= s.map[s.idx].0 + s.map[s.idx].1 {
            s.idx += 1;
        }
        let (zeros_until, in_data) = match s.map.get(s.idx) {
            Some(&(off, len)) if s.at >= off => (0, off + len - s.at),
            Some(&(off, _)) => (off, 0),
            None => (s.size, 0),
        };
        if in_data > 0 {
            let want = (buf.len() as u64).min(in_data) as usize;
            let n = t.read_stored(&mut buf[..want])?;
            let s = t.sparse.as_mut().expect("checked above");
            s.at += n as u64;
            return Ok(n);
        }
        let n = (buf.len() as u64).min(zeros_until - s.at) as usize;
        buf[..n].fill(0);
        s.at += n as u64;
        Ok(n)
    }
}

/// A numeric header field; one left all NULs (some writers leave unused fields so) is 0.
fn field(v: io::Result<u64>, raw: &[u8], name: &str) -> Result<u64> {
    match v {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|&b| b == 0) => Ok(0),
        Err(e) => Err(e).with_context(|| format!("the {name} field")),
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// Reads until `buf` is full or the stream ends; the count read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn describe(kind: EntryType) -> &'static str {
    match kind {
        EntryType::XHeader => "PAX",
        EntryType::XGlobalHeader => "PAX global",
        EntryType::GNULongName => "GNU long name",
        EntryType::GNULongLink => "GNU long link",
        _ => "tar",
    }
}

#[cfg(test)]
mod tests;
