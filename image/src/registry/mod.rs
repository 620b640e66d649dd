//! Images from and to registries: the OCI distribution protocol (Docker's registry API v2),
//! with skopeo's reference spelling `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`.
//!
//! - [`reference`]: parsing references; unqualified names through registries.conf.
//! - [`auth`]: credentials (`--creds`, `--authfile`, podman's and docker's auth files) and
//!   `WWW-Authenticate` challenges (basic, bearer tokens).
//! - [`client`]: one [`Client`] per registry: manifests, blobs (streamed to disk,
//!   digest-checked as they arrive, resumed with `Range` after a dropped connection),
//!   [`Client::fetch_blob_range`] for a part of a blob, uploads, retries with backoff.
//! - [`pull`]: a reference resolved to this platform's manifest and config, its layers
//!   downloaded in parallel into a directory as an ordinary `source::Image` (the store
//!   imports it as it imports any source, each layer as soon as it is in).
//! - [`push`]: an image of an OCI layout sent to a registry (`HEAD` first, cross-repository
//!   mounts, uploads, the manifest last).
//!
//! ```no_run
//! # use layerfs_image::registry::{Client, Options, Reference};
//! # fn main() -> anyhow::Result<()> {
//! let r = Reference::parse("docker://127.0.0.1:5000/app:v1")?;
//! let c = Client::connect(&r.host, &r.repo, &Options { tls_verify: Some(false), ..Default::default() })?;
//! let (manifest, media_type, digest) = c.get_manifest(&r.repo, r.target_str())?;
//! # let layer = digest.clone();
//! let first_kib = c.fetch_blob_range(&r.repo, &layer, 0, 1024)?;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod client;
pub mod pull;
pub mod push;
pub mod reference;
#[cfg(test)]
mod tests;

pub use auth::Credentials;
pub use client::{Client, Options};
pub use reference::{Reference, Target, PREFIX};

/// A client for `reference`'s registry.
pub fn connect(reference: &Reference, opts: &Options) -> anyhow::Result<Client> {
    use anyhow::Context;
    Client::connect(&reference.host, &reference.repo, opts).with_context(|| reference.to_string())
}
