//! Images and layers as files: reading image sources (OCI layouts, archives, podman's
//! store), layer manifests, the shared layer store, commit and squash. Used by the layer
//! tools only; the mount daemon never calls into it.

pub mod cat;
pub mod commit;
pub mod containerfile;
pub mod diff;
pub mod inspect;
pub mod kept;
pub mod lazy;
pub mod manifest;
pub mod oci_write;
pub mod pack;
pub mod progress;
pub mod source;
pub mod store;
pub mod tarread;
pub mod unpack;
pub mod verify;
pub mod which;
