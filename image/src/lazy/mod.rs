//! Seekable layer blobs (zstd:chunked, eStargz) and lazy layers: a layer whose tree is made
//! at once from its blob's table of contents, each regular file a placeholder of its full
//! size, its content fetched by byte range, checked against the TOC's digests and written
//! in on first open (the mount's `LazyContent` hook) or by a background
//! prefetch (docs/ARCHITECTURE.md, "Lazy layers").

pub mod layer;
pub mod range;
pub mod read;
pub mod remote;
pub mod status;
pub mod toc;
pub mod whole;
pub mod write;

pub use layer::{materialize, LazyLayer};
pub use range::{FileSource, RangeSource};
pub use read::{fetch_chunk, open, Opened};
pub use remote::RegistrySource;
pub use toc::{Form, Toc};
pub use whole::WholeLayer;

#[cfg(test)]
pub mod tests;
