//! layerfs's union core: a layer stack with kernel overlayfs semantics, FUSE-agnostic (see
//! docs/ARCHITECTURE.md). [`stack`] opens the layers, numbers inodes and builds each
//! directory's merged index; [`union`] answers every filesystem operation; [`upper`] checks
//! `upperdir`/`workdir` and copies up; [`verifier`] checks lower files against their hash
//! lists (`-o verify`). The syscalls, the on-disk marks and the option syntax come from
//! `layerfs-base`; this crate never depends on the image tools.

pub mod error;
pub mod stack;
pub mod union;
pub mod upper;
pub mod verifier;

// The shared vocabulary, under the names the core has always used for it.
use layerfs_base::{format, idmap, par, sys};

pub use error::{Error, Result};
pub use layerfs_base::MountOptions;
pub use stack::{Ino, LayerIdx, Stack};
pub use union::{Config, Union};
