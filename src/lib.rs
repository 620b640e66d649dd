//! layerfs: a userspace union filesystem with kernel overlayfs semantics.
//!
//! The crate is the FUSE-agnostic core (see docs/ARCHITECTURE.md):
//! [`options`] parses the overlayfs option syntax, [`layer`] opens the stack and numbers
//! inodes, [`whiteout`] knows every whiteout/opaque form, [`dirindex`] builds a directory's
//! merged view, [`node`] tracks what the kernel references, [`union`] implements every
//! operation of a read-only mount, [`rw`] those of a writable one (with [`upper`] and
//! [`copyup`]), and [`sys`] holds the only raw syscalls.

pub mod copyup;
pub mod dirindex;
pub mod error;
pub mod handles;
pub mod layer;
pub mod mountinfo;
pub mod node;
pub mod options;
pub mod par;
pub mod prefetch;
pub mod runtime;
pub mod rw;
pub mod sys;
pub mod union;
pub mod upper;
pub mod whiteout;

pub use error::{Error, Result};
pub use layer::{Ino, LayerIdx, Stack};
pub use options::MountOptions;
pub use rw::Overlay;
pub use union::{Config, Union};
