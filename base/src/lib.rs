//! What the mount (`layerfs-mount`) and the image tools (`layerfs-image`) share, so neither
//! depends on the other: [`sys`] holds the only raw syscalls; [`format`] is the one module
//! that knows the on-disk marks (whiteouts, opaque dirs, redirects, origins, OCI `.wh.`);
//! [`options`] parses the overlayfs option syntax (a mount's `-o`, and the tools'
//! `lowerdir=` sources); [`idmap`] maps ids; [`par`] is the one parallel map; [`verity`]
//! reads and writes the layers' blake3 hash lists.

pub mod format;
#[doc(hidden)]
pub mod fuzz;
pub mod idmap;
pub mod options;
pub mod par;
// The one module allowed `unsafe` (the workspace denies it): each block says why it is sound.
#[allow(unsafe_code)]
pub mod sys;
pub mod verity;

pub use options::MountOptions;
