//! What the layer store keeps beside a layer so that an unchanged layer leaves as the very
//! blob it came in as (docs/ARCHITECTURE.md, "Kept blobs"):
//!
//! ```text
//! STORE/kept/<hex of diff_id>/blob     the source's blob, byte for byte (a compressed one),
//!                                      or an uncompressed tar encoded with zstd (local only)
//! STORE/kept/<hex of diff_id>/record   this JSON: what the blob is, and the stamp of the
//!                                      layer directory it was unpacked to
//! ```
//!
//! The record is trusted only while the layer directory's [`TreeStamp`] (every entry's
//! name, inode, size, mode, mtime and ctime) is the one taken right after unpacking: any
//! change made through the filesystem changes a ctime, so a changed layer falls back to
//! being packed from its files.

use serde::{Deserialize, Serialize};

/// Bumped whenever the record's meaning changes; a record of another version is ignored.
pub const VERSION: u32 = 1;
/// File names inside a kept directory.
pub const BLOB: &str = "blob";
pub const RECORD: &str = "record";

/// How the blob file holds the layer's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The blob as the source had it (gzip or zstd): copied out unchanged.
    Verbatim,
    /// An uncompressed tar, stored zstd-compressed to save disk; decoded on the way out.
    Zstd,
}

/// The record of a kept blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    /// `sha256:` of the uncompressed tar (the layer's name in the store).
    pub diff_id: String,
    /// The blob as an OCI descriptor names it (for an uncompressed layer: the tar itself).
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub encoding: Encoding,
    /// [`TreeStamp`] of the layer directory, hex.
    pub tree: String,
}

/// A digest of a layer directory's metadata, fed entry by entry in name order (depth
/// first); the root's own attributes are left out (moving the layer into place changes
/// its ctime).
pub struct TreeStamp(blake3::Hasher);

impl Default for TreeStamp {
    fn default() -> Self {
        TreeStamp(blake3::Hasher::new())
    }
}

impl TreeStamp {
    /// One entry: its path from the layer root and its attributes.
    pub fn add(&mut self, path: &[u8], st: &crate::sys::Stat) {
        let h = &mut self.0;
        h.update(&(path.len() as u64).to_le_bytes());
        h.update(path);
        for v in [
            st.st_ino,
            st.st_size as u64,
            u64::from(st.st_mode),
            st.st_mtime as u64,
            st.st_mtime_nsec as u64,
            st.st_ctime as u64,
            st.st_ctime_nsec as u64,
        ] {
            h.update(&v.to_le_bytes());
        }
    }

    pub fn hex(&self) -> String {
        self.0.finalize().to_hex().to_string()
    }
}
