//! layerfs: a userspace union filesystem with kernel overlayfs semantics.
//!
//! The crate is the FUSE-agnostic core (see docs/ARCHITECTURE.md), one folder a concern:
//! [`options`] parses the overlayfs option syntax; [`format`] is the one module that knows
//! the on-disk marks (whiteouts, opaque dirs, redirects, origins, OCI `.wh.`); [`stack`]
//! opens the layers, numbers inodes and builds each directory's merged index; [`union`]
//! answers every filesystem operation; [`upper`] checks `upperdir`/`workdir` and copies up;
//! [`runtime`] builds a container's root; [`sys`] holds the only raw syscalls.

// `unsafe` lives in `sys` alone, each block with a `// SAFETY:` line saying why it is sound.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod error;
pub mod format;
#[doc(hidden)]
pub mod fuzz;
pub mod idmap;
pub mod image;
pub mod options;
pub mod runtime;
pub mod stack;
#[allow(unsafe_code)]
pub mod sys;
pub mod union;
pub mod upper;
pub mod verity;

pub use error::{Error, Result};
pub use options::MountOptions;
pub use stack::{Ino, LayerIdx, Stack};
pub use union::{Config, Union};
