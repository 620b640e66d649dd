//! Images and layers as files: reading image sources (OCI layouts, archives, podman's
//! store), layer manifests, the shared layer store, commit and squash. Used by the layer
//! tools only; the mount daemon never links it. What it shares with the mount (syscalls,
//! on-disk marks, the option syntax, the parallel map, hash lists) is `layerfs-base`.

// The shared vocabulary, under the names the code has always used for it.
use layerfs_base::{format, options, par, sys, verity};

pub mod als;
pub mod cat;
pub mod commit;
pub mod containerfile;
pub mod deliver;
pub mod diff;
#[doc(hidden)]
pub mod fuzz;
pub mod import;
pub mod inspect;
pub mod kept;
pub mod lazy;
pub mod manifest;
pub mod oci_write;
pub mod pack;
pub mod progress;
pub mod registry;
pub mod source;
pub mod store;
pub mod tarread;
pub mod unpack;
pub mod verify;
pub mod which;
