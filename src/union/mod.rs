//! The union core, FUSE-agnostic: [`readonly`] serves a mount without an upper,
//! [`writable`] one with `upperdir=`; [`node`] is the inode table the kernel references,
//! [`handles`] the open file and directory handles.

pub mod handles;
pub mod node;
pub mod readonly;
pub mod writable;

pub use readonly::{access_check, Config, Union};
pub use writable::Overlay;
