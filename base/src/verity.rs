//! Layer hash lists: the blake3 of every regular file of a store layer, recorded when the
//! layer is imported (`STORE/hashes/<hex>.blake3` for the layer `STORE/layers/<hex>`), checked by
//! `layerfs verify` and, file by file on first open, by a mount with `-o verify`
//! (`layerfs_mount::verifier`).
//!
//! Kept apart from `image::manifest` on purpose: a mount reads the list with std and blake3
//! only, never the image tools' code (bincode, serde, the tar reader) at start-up.
//!
//! Format (docs/LAYER-TOOLS.md): the magic `LFSB3L1\n`, then one record per file, sorted by
//! path: the path's length (u32, little endian), the path (relative to the layer root, no
//! leading `/`, as the manifests write it), the 32-byte hash. Hard links have a record
//! per name.

use std::collections::HashMap;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use crate::sys;

const MAGIC: &[u8; 8] = b"LFSB3L1\n";
/// The file name's suffix, after the layer directory's own name.
pub const SUFFIX: &str = ".blake3";
/// The store's directory of hash lists, beside `layers/`.
pub const DIR: &str = "hashes";
/// Largest path a record may carry (PATH_MAX).
const MAX_PATH: usize = 4096;
/// Largest list read back (a corrupt file must not allocate without bound).
const MAX_BYTES: u64 = 1 << 30;

/// A blake3 hash.
pub type Hash = [u8; 32];

/// One layer's list: path -> hash.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HashList {
    files: HashMap<Box<[u8]>, Hash>,
}

impl HashList {
    /// Where the list of the layer directory `dir` (`STORE/layers/<hex>`) is:
    /// `STORE/hashes/<hex>.blake3`.
    pub fn path_for(dir: &Path) -> PathBuf {
        let mut name = dir.file_name().unwrap_or_default().to_owned();
        name.push(SUFFIX);
        let store = dir
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("/"));
        store.join(DIR).join(name)
    }

    pub fn insert(&mut self, path: &[u8], hash: Hash) {
        self.files.insert(path.into(), hash);
    }

    pub fn get(&self, path: &[u8]) -> Option<&Hash> {
        self.files.get(path)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The records, sorted by path.
    pub fn sorted(&self) -> Vec<(&[u8], &Hash)> {
        let mut v: Vec<_> = self.files.iter().map(|(p, h)| (&**p, h)).collect();
        v.sort();
        v
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for (p, h) in self.sorted() {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
            out.extend_from_slice(p);
            out.extend_from_slice(h);
        }
        out
    }

    pub fn decode(b: &[u8]) -> io::Result<HashList> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let mut rest = b
            .strip_prefix(MAGIC)
            .ok_or_else(|| bad("not a hash list"))?;
        let mut list = HashList::default();
        while !rest.is_empty() {
            let (len, r) = rest.split_at_checked(4).ok_or_else(|| bad("truncated"))?;
            let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
            if len == 0 || len > MAX_PATH {
                return Err(bad("a record's path length is out of range"));
            }
            let (path, r) = r.split_at_checked(len).ok_or_else(|| bad("truncated"))?;
            let (hash, r) = r.split_at_checked(32).ok_or_else(|| bad("truncated"))?;
            list.insert(path, hash.try_into().expect("32 bytes"));
            rest = r;
        }
        Ok(list)
    }

    /// The list of layer directory `dir`; `None` when it has none.
    pub fn load(dir: &Path) -> io::Result<Option<HashList>> {
        let p = Self::path_for(dir);
        let f = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut b = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(f, MAX_BYTES + 1), &mut b)?;
        if b.len() as u64 > MAX_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "too large"));
        }
        Self::decode(&b)
            .map(Some)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
    }

    /// Writes the list of layer directory `dir` (to a temporary name, synced, renamed).
    pub fn store(&self, dir: &Path) -> io::Result<()> {
        let p = Self::path_for(dir);
        let mut tmp = p.clone().into_os_string();
        tmp.push(".tmp");
        let f = std::fs::File::create(&tmp)?;
        io::Write::write_all(&mut &f, &self.encode())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p)
    }
}

/// The blake3 of an open file's content, read with `pread` from offset 0.
pub fn hash_fd(fd: BorrowedFd<'_>) -> io::Result<Hash> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut off = 0u64;
    loop {
        let n = sys::pread_full(fd, &mut buf, off)?;
        if n == 0 {
            return Ok(*h.finalize().as_bytes());
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let mut l = HashList::default();
        l.insert(b"etc/hostname", [1; 32]);
        l.insert(b"a", [2; 32]);
        let b = l.encode();
        assert_eq!(HashList::decode(&b).unwrap(), l);
        assert!(HashList::decode(&b[..b.len() - 1]).is_err());
        assert!(HashList::decode(b"LFSB3L1\n\0\0\0\0").is_err());
        assert!(HashList::decode(b"other").is_err());
    }
}
