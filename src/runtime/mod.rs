//! `layerfs run`: the pieces that run inside the container's namespaces. The orchestration
//! (mount, namespaces, waiting, cleanup) is in the binary's `cmd::run`.

pub mod init;
pub mod rootfs;
