//! A lazy layer's blob in a registry: the [`RangeSource`] over
//! [`Client::fetch_blob_range`]. The connection is made on the first read (and made again
//! after a failed one), so a mount of a layer whose files are all fetched already never
//! needs the registry, and a registry that comes back is reached again.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;

use super::range::{RangeSource, MAX_RANGE};
use crate::format::lazy::Source;
use crate::registry::{self, Client, Options, Reference};
use crate::source::Digest;

/// The blob `digest` of `reference`'s repository, read by range requests.
pub struct RegistrySource {
    reference: Reference,
    digest: Digest,
    size: u64,
    opts: Options,
    client: Mutex<Option<Arc<Client>>>,
    read: AtomicU64,
    requests: AtomicU64,
}

impl RegistrySource {
    pub fn new(reference: Reference, digest: Digest, size: u64, opts: Options) -> RegistrySource {
        RegistrySource {
            reference,
            digest,
            size,
            opts,
            client: Mutex::new(None),
            read: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }

    /// With a client already connected (a pull, which has one).
    pub fn with_client(
        client: Arc<Client>,
        reference: Reference,
        digest: Digest,
        size: u64,
        opts: Options,
    ) -> RegistrySource {
        let s = Self::new(reference, digest, size, opts);
        *s.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(client);
        s
    }

    /// The source a lazy record's `Source::Registry` names.
    pub fn from_record(source: &Source) -> anyhow::Result<Option<RegistrySource>> {
        let Source::Registry {
            reference,
            digest,
            size,
            tls_verify,
            cert_dir,
            authfile,
        } = source
        else {
            return Ok(None);
        };
        let r = Reference::parse_qualified(reference)?;
        let d = Digest::parse(digest).with_context(|| format!("{reference}: blob {digest}"))?;
        let opts = Options {
            creds: None,
            authfile: authfile.clone(),
            tls_verify: *tls_verify,
            cert_dir: cert_dir.clone(),
            lazy: false,
        };
        Ok(Some(Self::new(r, d, *size, opts)))
    }

    /// The record naming this blob (credentials are not kept; see `Source::Registry`).
    pub fn record(&self) -> Source {
        Source::Registry {
            reference: self.reference.to_string(),
            digest: self.digest.to_string(),
            size: self.size,
            tls_verify: self.opts.tls_verify,
            cert_dir: self.opts.cert_dir.clone(),
            authfile: self.opts.authfile.clone(),
        }
    }

    /// Bytes and ranges fetched so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.read.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
        )
    }

    fn client(&self) -> io::Result<Arc<Client>> {
        let mut c = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = &*c {
            return Ok(Arc::clone(c));
        }
        let got = Arc::new(
            registry::connect(&self.reference, &self.opts)
                .map_err(|e| io::Error::other(format!("{e:#}")))?,
        );
        *c = Some(Arc::clone(&got));
        Ok(got)
    }
}

impl RangeSource for RegistrySource {
    fn read_range(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        if len > MAX_RANGE {
            return Err(io::Error::other(format!(
                "a range of {len} bytes (at most {MAX_RANGE})"
            )));
        }
        let client = self.client()?;
        match client.fetch_blob_range(&self.reference.repo, &self.digest, offset, len) {
            Ok(b) => {
                self.read.fetch_add(len, Ordering::Relaxed);
                self.requests.fetch_add(1, Ordering::Relaxed);
                Ok(b)
            }
            Err(e) => {
                // The next read connects again (a registry restarted, a token expired).
                *self.client.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Err(io::Error::other(format!("{e:#}")))
            }
        }
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }

    fn stream_from(&self, offset: u64) -> io::Result<Box<dyn io::Read + Send + '_>> {
        let client = self.client()?;
        match client.blob_stream(&self.reference.repo, &self.digest, offset) {
            Ok(r) => {
                self.requests.fetch_add(1, Ordering::Relaxed);
                Ok(Box::new(Counted {
                    inner: r,
                    read: &self.read,
                }))
            }
            Err(e) => {
                *self.client.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Err(io::Error::other(format!("{e:#}")))
            }
        }
    }

    fn describe(&self) -> String {
        format!("{} blob {}", self.reference, self.digest)
    }
}

/// Counts the bytes read through it.
struct Counted<'a> {
    inner: Box<dyn io::Read + Send>,
    read: &'a AtomicU64,
}

impl io::Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
