//! The HTTP side of the OCI distribution protocol: one [`Client`] per registry host, with
//! its scheme (HTTPS, or plain HTTP when allowed), its authentication (basic, or bearer
//! tokens per scope) and retries (429 and 5xx answers and dropped connections, with
//! exponential backoff and `Retry-After`; a blob download resumes where it stopped with a
//! `Range` request). Redirects (to blob storage) are followed by the HTTP crate, without
//! the `Authorization` header.
//!
//! Why ureq: a blocking client is what the image tools need (they are synchronous and
//! parallelise with threads, `par::map_with`); ureq is well kept, small, speaks rustls
//! (no OpenSSL to link) and brings no async runtime.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest as _, Sha256};
use ureq::http::{self, Response};
use ureq::tls::{Certificate, ClientCert, PemItem, RootCerts, TlsConfig};
use ureq::Body;

use super::auth::{self, Challenge, Credentials};
use super::reference::RegistriesConf;
use crate::source::Digest;

/// The manifest media types a pull accepts.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// How many times a request is retried after a 429, a 5xx or a dropped connection.
const RETRIES: u32 = 4;
/// The first backoff; doubled on each retry.
const BACKOFF: Duration = Duration::from_millis(200);

/// How to reach a registry: credentials and TLS, as skopeo's flags say.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--creds USER:PASS`.
    pub creds: Option<Credentials>,
    /// `--authfile FILE` (instead of the default auth files).
    pub authfile: Option<PathBuf>,
    /// `--tls-verify`: `Some(false)` allows plain HTTP and untrusted certificates; `None`
    /// leaves it to registries.conf (`insecure = true`), else verified HTTPS.
    pub tls_verify: Option<bool>,
    /// `--cert-dir DIR`: `*.crt` CA certificates, `*.cert` + `*.key` a client certificate
    /// (default `/etc/containers/certs.d/HOST`, then `/etc/docker/certs.d/HOST`).
    pub cert_dir: Option<PathBuf>,
    /// Not how to connect, but how to pull: `docker://` sources the store lacks are pulled
    /// lazily (`--lazy-pull`; `pull --lazy`).
    pub lazy: bool,
}

/// A connection to one registry host.
pub struct Client {
    agent: ureq::Agent,
    /// `https://HOST` or `http://HOST`.
    base: String,
    host: String,
    creds: Option<Credentials>,
    /// Where credentials were looked for (for a 401's message).
    looked: String,
    challenge: Option<Challenge>,
    tokens: Mutex<HashMap<String, String>>,
}

/// What a request sends.
pub enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// A file, sent whole (reopened for each retry).
    File(&'a Path),
}

impl Client {
    /// Connects to `host` (for the repository `repo`, whose credentials are looked up):
    /// `GET /v2/` over HTTPS (or plain HTTP when TLS checks are off and HTTPS fails) to learn
    /// how the registry authenticates.
    pub fn connect(host: &str, repo: &str, opts: &Options) -> Result<Client> {
        let conf = RegistriesConf::load()?;
        let insecure = match opts.tls_verify {
            Some(v) => !v,
            None => conf.is_insecure(host, repo),
        };
        let files = match &opts.authfile {
            Some(f) => vec![f.clone()],
            None => auth::default_auth_files(),
        };
        let creds = match &opts.creds {
            Some(c) => Some(c.clone()),
            None => auth::lookup(&files, host, repo)?,
        };
        let looked = match &creds {
            Some(c) => format!("user {} from {}", c.user, c.from),
            None => format!(
                "none (no --creds; no entry for {host} in {})",
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let tls = tls_config(host, opts.cert_dir.as_deref(), insecure)?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .user_agent(concat!("layerfs/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .max_idle_connections_per_host(16)
            .build()
            .into();
        let mut client = Client {
            agent,
            base: format!("https://{host}"),
            host: host.to_string(),
            creds,
            looked,
            challenge: None,
            tokens: Mutex::new(HashMap::new()),
        };
        let ping = match client.agent.get(format!("{}/v2/", client.base)).call() {
            Ok(r) => r,
            Err(e) if insecure => {
                log::debug!("{host}: HTTPS failed ({e}); trying plain HTTP");
                client.base = format!("http://{host}");
                client
                    .agent
                    .get(format!("{}/v2/", client.base))
                    .call()
                    .with_context(|| format!("{host}: no registry answers (HTTPS: {e})"))?
            }
            Err(e) => {
                return Err(anyhow!(e)).with_context(|| {
                    format!("{host}: no registry answers over HTTPS (--tls-verify=false allows plain HTTP and untrusted certificates)")
                })
            }
        };
        match ping.status().as_u16() {
            200 => {}
            401 => {
                client.challenge = ping
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .and_then(Challenge::parse);
                if client.challenge.is_none() {
                    bail!("{host}: 401 without a challenge layerfs understands (Basic or Bearer)");
                }
            }
            s => bail!("{host}: GET /v2/ answered {s}: not an OCI distribution registry"),
        }
        Ok(client)
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The `Authorization` value for `scopes` (`repository:NAME:pull[,push]`), fetching a
    /// token when the registry wants bearer tokens.
    fn authorization(&self, scopes: &[String]) -> Result<Option<String>> {
        let (realm, service) = match &self.challenge {
            None => return Ok(None),
            Some(Challenge::Basic) => return Ok(self.creds.as_ref().map(Credentials::basic)),
            Some(Challenge::Bearer { realm, service, .. }) => (realm, service),
        };
        let key = scopes.join(" ");
        if let Some(t) = self.tokens.lock().expect("not poisoned").get(&key) {
            return Ok(Some(format!("Bearer {t}")));
        }
        let mut req = self.agent.get(realm.as_str());
        if let Some(s) = service {
            req = req.query("service", s);
        }
        for s in scopes {
            req = req.query("scope", s);
        }
        if let Some(c) = &self.creds {
            req = req.header("Authorization", c.basic());
        }
        let mut resp = req
            .call()
            .with_context(|| format!("fetching a token from {realm}"))?;
        match resp.status().as_u16() {
            200 => {}
            401 | 403 => bail!(
                "{} from the token server {realm}; credentials tried: {}",
                resp.status(),
                self.looked
            ),
            _ => bail!("token server {realm}: {}", error_text(&mut resp)),
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&read_small(&mut resp)?)
            .with_context(|| format!("token server {realm}: parsing its answer"))?;
        let token = t
            .token
            .or(t.access_token)
            .with_context(|| format!("token server {realm}: no token in its answer"))?;
        self.tokens
            .lock()
            .expect("not poisoned")
            .insert(key, token.clone());
        Ok(Some(format!("Bearer {token}")))
    }

    /// Sends a request (`path` under the host, or an absolute URL), retrying 429s, 5xx and
    /// dropped connections with backoff; a 401 gets one fresh token, then is an error that
    /// names the credentials tried. Other statuses are the caller's to judge.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        scopes: &[String],
        headers: &[(&str, &str)],
        payload: Payload<'_>,
    ) -> Result<Response<Body>> {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut fresh_token = false;
        let mut attempt = 0;
        loop {
            let mut b = http::Request::builder().method(method).uri(&url);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            // Credentials go to the registry only, never to a host an upload's Location
            // names (blob storage).
            if url.starts_with(&format!("{}/", self.base)) {
                if let Some(a) = self.authorization(scopes)? {
                    b = b.header("Authorization", a);
                }
            }
            let res = match payload {
                Payload::Empty => self.agent.run(b.body(())?),
                Payload::Bytes(bytes) => self.agent.run(b.body(bytes)?),
                Payload::File(p) => {
                    let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
                    self.agent.run(b.body(f)?)
                }
            };
            match res {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if status == 401 {
                        if !fresh_token && matches!(self.challenge, Some(Challenge::Bearer { .. }))
                        {
                            // An expired token: fetch another once.
                            fresh_token = true;
                            self.tokens
                                .lock()
                                .expect("not poisoned")
                                .remove(&scopes.join(" "));
                            continue;
                        }
                        bail!(
                            "401 Unauthorized for {method} {url}; credentials tried: {}",
                            self.looked
                        );
                    }
                    if (status == 429 || status >= 500) && attempt < RETRIES {
                        let wait = retry_after(&resp).unwrap_or(BACKOFF * 2u32.pow(attempt));
                        log::info!("{method} {url}: {status}; retrying in {wait:?}");
                        std::thread::sleep(wait);
                        attempt += 1;
                        continue;
                    }
                    return Ok(resp);
                }
                Err(e) if transient(&e) && attempt < RETRIES => {
                    let wait = BACKOFF * 2u32.pow(attempt);
                    log::info!("{method} {url}: {e}; retrying in {wait:?}");
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err(e) => {
                    let tries = if attempt > 0 {
                        format!(" ({} attempts)", attempt + 1)
                    } else {
                        String::new()
                    };
                    return Err(anyhow!(e)).with_context(|| format!("{method} {url}{tries}"));
                }
            }
        }
    }

    fn pull_scope(repo: &str) -> Vec<String> {
        vec![format!("repository:{repo}:pull")]
    }

    fn push_scope(repo: &str) -> Vec<String> {
        vec![format!("repository:{repo}:pull,push")]
    }

    /// The manifest (or index) `target` (a tag or a digest) of `repo`: its bytes, media
    /// type and digest (checked when `target` is a digest).
    pub fn get_manifest(&self, repo: &str, target: &str) -> Result<(Vec<u8>, String, Digest)> {
        let mut resp = self.send(
            "GET",
            &format!("/v2/{repo}/manifests/{target}"),
            &Self::pull_scope(repo),
            &[("Accept", ACCEPT)],
            Payload::Empty,
        )?;
        if resp.status() != 200 {
            bail!("manifest {target} of {repo}: {}", error_text(&mut resp));
        }
        let media_type = header(&resp, "content-type").unwrap_or_default();
        let bytes = read_small(&mut resp)?;
        let digest = Digest::of(Sha256::new_with_prefix(&bytes));
        if target.starts_with("sha256:") && digest.as_str() != target {
            bail!("manifest digest mismatch: asked for {target}, received {digest}");
        }
        Ok((bytes, media_type, digest))
    }

    /// Whether `repo` has the blob `digest` (`HEAD`).
    pub fn has_blob(&self, repo: &str, digest: &Digest, push: bool) -> Result<bool> {
        let scope = if push {
            Self::push_scope(repo)
        } else {
            Self::pull_scope(repo)
        };
        let resp = self.send(
            "HEAD",
            &format!("/v2/{repo}/blobs/{digest}"),
            &scope,
            &[],
            Payload::Empty,
        )?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            s => bail!("HEAD blob {digest}: {s}"),
        }
    }

    /// Downloads the blob `digest` of `repo` into `dst`, hashing it as it arrives; a dropped
    /// connection resumes with a `Range` request from the bytes already written (up to
    /// [`RETRIES`] times in a row without progress). `progress` gets the bytes written so far.
    /// The file is removed on any error; a digest mismatch names both digests.
    pub fn fetch_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: Option<u64>,
        dst: &Path,
        progress: &dyn Fn(u64),
    ) -> Result<()> {
        let res = self.fetch_blob_inner(repo, digest, size, dst, progress);
        if res.is_err() {
            let _ = std::fs::remove_file(dst);
        }
        res.with_context(|| format!("blob {digest}"))
    }

    fn fetch_blob_inner(
        &self,
        repo: &str,
        digest: &Digest,
        size: Option<u64>,
        dst: &Path,
        progress: &dyn Fn(u64),
    ) -> Result<()> {
        let mut file = File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
        let mut hash = Sha256::new();
        let mut have = 0u64;
        let mut stalls = 0;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let mut resp = self.get_blob_from(repo, digest, have)?;
            match resp.status().as_u16() {
                200 if have > 0 => {
                    // No ranges here: start again.
                    log::info!("blob {digest}: the registry ignored the range; restarting");
                    file.set_len(0)?;
                    file.seek(SeekFrom::Start(0))?;
                    hash = Sha256::new();
                    have = 0;
                }
                200 => {}
                206 if have > 0 => {
                    let start = header(&resp, "content-range")
                        .and_then(|v| range_start(&v))
                        .context("a 206 answer without a Content-Range")?;
                    if start != have {
                        bail!("asked for bytes from {have}, the registry sent from {start}");
                    }
                }
                _ => bail!("{}", error_text(&mut resp)),
            }
            let mut body = resp.into_body().into_reader();
            let before = have;
            let dropped = loop {
                match body.read(&mut buf) {
                    Ok(0) => break None,
                    Ok(n) => {
                        file.write_all(&buf[..n])
                            .with_context(|| format!("writing {}", dst.display()))?;
                        hash.update(&buf[..n]);
                        have += n as u64;
                        progress(have);
                        if size.is_some_and(|s| have > s) {
                            bail!(
                                "the registry sent more than the {} bytes announced",
                                size.unwrap_or(0)
                            );
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Some(e),
                }
            };
            let Some(e) = dropped else { break };
            stalls = if have > before { 0 } else { stalls + 1 };
            if stalls > RETRIES {
                bail!("the connection dropped at byte {have} and did not come back: {e}");
            }
            log::info!("blob {digest}: the connection dropped at byte {have} ({e}); resuming");
            std::thread::sleep(BACKOFF * 2u32.pow(stalls));
        }
        file.flush()?;
        if let Some(s) = size.filter(|s| *s != have) {
            bail!("received {have} bytes, the manifest says {s}");
        }
        let got = Digest::of(hash);
        if got != *digest {
            bail!("digest mismatch: expected {digest}, received {got}");
        }
        Ok(())
    }

    /// `len` bytes of the blob `digest` of `repo` from `offset` (a `Range` request; the
    /// bytes are not checked against the digest, which covers the whole blob). For readers
    /// of parts of a layer (a lazily pulled layer's table of contents or one file).
    pub fn fetch_blob_range(
        &self,
        repo: &str,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let range = format!("bytes={offset}-{}", offset + len - 1);
        let mut resp = self.send(
            "GET",
            &format!("/v2/{repo}/blobs/{digest}"),
            &Self::pull_scope(repo),
            &[("Range", &range)],
            Payload::Empty,
        )?;
        let skip = match resp.status().as_u16() {
            206 => {
                let start = header(&resp, "content-range").and_then(|v| range_start(&v));
                if start != Some(offset) {
                    bail!("blob {digest}: asked for bytes from {offset}, got {start:?}");
                }
                0
            }
            // A registry without ranges sends the whole blob.
            200 => offset,
            _ => bail!("blob {digest} range {range}: {}", error_text(&mut resp)),
        };
        let mut r = resp.into_body().into_reader();
        std::io::copy(&mut (&mut r).take(skip), &mut std::io::sink())?;
        let mut out = Vec::with_capacity(len as usize);
        (&mut r)
            .take(len)
            .read_to_end(&mut out)
            .with_context(|| format!("blob {digest} range {range}"))?;
        if out.len() as u64 != len {
            bail!(
                "blob {digest}: range {range} ended after {} bytes",
                out.len()
            );
        }
        Ok(out)
    }

    /// A GET of blob `digest` of `repo` from byte `offset` on (a `Range` asked when the
    /// offset is not 0; the registry may still answer with the whole blob).
    fn get_blob_from(&self, repo: &str, digest: &Digest, offset: u64) -> Result<Response<Body>> {
        let range = format!("bytes={offset}-");
        let headers: &[(&str, &str)] = if offset > 0 {
            &[("Range", range.as_str())]
        } else {
            &[]
        };
        self.send(
            "GET",
            &format!("/v2/{repo}/blobs/{digest}"),
            &Self::pull_scope(repo),
            headers,
            Payload::Empty,
        )
    }

    /// The blob `digest` of `repo` from byte `offset` to its end, as a stream of one
    /// request (with `Range` when `offset` is not 0); the bytes are not checked here. For a
    /// reader that takes a blob in order without keeping it (a lazy layer arriving whole),
    /// which resumes from where it stopped by asking again.
    pub fn blob_stream(
        &self,
        repo: &str,
        digest: &Digest,
        offset: u64,
    ) -> Result<Box<dyn Read + Send>> {
        let mut resp = self.get_blob_from(repo, digest, offset)?;
        let skip = match resp.status().as_u16() {
            200 => offset, // a registry without ranges: the whole blob
            206 => {
                let start = header(&resp, "content-range").and_then(|v| range_start(&v));
                if start != Some(offset) {
                    bail!("blob {digest}: asked for bytes from {offset}, got {start:?}");
                }
                0
            }
            _ => bail!(
                "blob {digest} from byte {offset}: {}",
                error_text(&mut resp)
            ),
        };
        let mut r = resp.into_body().into_reader();
        std::io::copy(&mut (&mut r).take(skip), &mut std::io::sink())?;
        Ok(Box::new(r))
    }

    /// Mounts the blob `digest` from `from` (another repository of this registry) into
    /// `repo`; `Ok(true)` when the registry did, `Ok(false)` when it did not (then upload).
    pub fn mount_blob(&self, repo: &str, digest: &Digest, from: &str) -> Result<bool> {
        let mut scopes = Self::push_scope(repo);
        scopes.push(format!("repository:{from}:pull"));
        let mut resp = self.send(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"),
            &scopes,
            &[("Content-Length", "0")],
            Payload::Empty,
        )?;
        match resp.status().as_u16() {
            201 => Ok(true),
            // The registry opened an upload instead: left to expire, the blob goes up
            // through a fresh one.
            202 => Ok(false),
            _ => bail!(
                "mounting blob {digest} from {from}: {}",
                error_text(&mut resp)
            ),
        }
    }

    /// Uploads the file `path` as the blob `digest` of `repo` (POST, then one PUT).
    pub fn upload_blob(&self, repo: &str, digest: &Digest, path: &Path) -> Result<()> {
        let scopes = Self::push_scope(repo);
        let mut resp = self.send(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &scopes,
            &[("Content-Length", "0")],
            Payload::Empty,
        )?;
        if resp.status() != 202 {
            bail!("starting the upload of {digest}: {}", error_text(&mut resp));
        }
        let loc = header(&resp, "location").context("an upload without a Location")?;
        let sep = if loc.contains('?') { '&' } else { '?' };
        let url = format!("{}{sep}digest={digest}", self.absolute(&loc));
        let mut resp = self.send(
            "PUT",
            &url,
            &scopes,
            &[("Content-Type", "application/octet-stream")],
            Payload::File(path),
        )?;
        if resp.status() != 201 {
            bail!("uploading {digest}: {}", error_text(&mut resp));
        }
        Ok(())
    }

    /// Puts the manifest `bytes` (of `media_type`) as `target` (a tag or its digest) of
    /// `repo`; returns the digest the registry gives it.
    pub fn put_manifest(
        &self,
        repo: &str,
        target: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest> {
        let mut resp = self.send(
            "PUT",
            &format!("/v2/{repo}/manifests/{target}"),
            &Self::push_scope(repo),
            &[("Content-Type", media_type)],
            Payload::Bytes(bytes),
        )?;
        if resp.status() != 201 {
            bail!("putting the manifest: {}", error_text(&mut resp));
        }
        let ours = Digest::of(Sha256::new_with_prefix(bytes));
        if let Some(theirs) = header(&resp, "docker-content-digest") {
            if theirs != ours.as_str() {
                bail!("the registry stored the manifest as {theirs}, its digest is {ours}");
            }
        }
        Ok(ours)
    }

    fn absolute(&self, loc: &str) -> String {
        if loc.starts_with("http://") || loc.starts_with("https://") {
            loc.to_string()
        } else {
            format!("{}{loc}", self.base)
        }
    }
}

/// The TLS set-up for `host`: verification off when insecure; else the CA certificates
/// (`*.crt`) and client certificate (`*.cert` + `*.key`) of the cert dir, if any.
fn tls_config(host: &str, cert_dir: Option<&Path>, insecure: bool) -> Result<TlsConfig> {
    let mut b = TlsConfig::builder().disable_verification(insecure);
    let dir = match cert_dir {
        Some(d) => Some(d.to_path_buf()),
        None => ["/etc/containers/certs.d", "/etc/docker/certs.d"]
            .iter()
            .map(|d| Path::new(d).join(host))
            .find(|d| d.is_dir()),
    };
    let Some(dir) = dir else {
        return Ok(b.build());
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading the cert dir {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let ext = |p: &Path, e: &str| p.extension().is_some_and(|x| x == e);
    let pem = |p: &Path| -> Result<Vec<PemItem<'static>>> {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        ureq::tls::parse_pem(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing {}", p.display()))
    };
    let mut roots: Vec<Certificate<'static>> = Vec::new();
    for p in entries.iter().filter(|p| ext(p, "crt")) {
        roots.extend(pem(p)?.into_iter().filter_map(|i| match i {
            PemItem::Certificate(c) => Some(c),
            _ => None,
        }));
    }
    if !roots.is_empty() {
        b = b.root_certs(RootCerts::new_with_certs(&roots));
    }
    for cert in entries.iter().filter(|p| ext(p, "cert")) {
        let key = cert.with_extension("key");
        let chain: Vec<Certificate<'static>> = pem(cert)?
            .into_iter()
            .filter_map(|i| match i {
                PemItem::Certificate(c) => Some(c),
                _ => None,
            })
            .collect();
        let key = pem(&key)?
            .into_iter()
            .find_map(|i| match i {
                PemItem::PrivateKey(k) => Some(k),
                _ => None,
            })
            .with_context(|| format!("{}: no private key", key.display()))?;
        b = b.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(b.build())
}

fn transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::Timeout(_)
    )
}

fn retry_after(resp: &Response<Body>) -> Option<Duration> {
    let secs: u64 = header(resp, "retry-after")?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(30)))
}

fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `bytes START-END/TOTAL` → START.
pub(super) fn range_start(v: &str) -> Option<u64> {
    v.trim()
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// A JSON answer (at most [`crate::source::MAX_JSON`] bytes).
fn read_small(resp: &mut Response<Body>) -> Result<Vec<u8>> {
    crate::source::read_json_bytes(resp.body_mut().as_reader(), "the registry's answer")
}

/// A failed answer as one line: the status and the registry's error codes and messages
/// (`{"errors":[{"code":..,"message":..}]}`).
pub(super) fn error_text(resp: &mut Response<Body>) -> String {
    let status = resp.status();
    let mut body = Vec::new();
    let _ = resp
        .body_mut()
        .as_reader()
        .take(64 * 1024)
        .read_to_end(&mut body);
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Error>,
    }
    #[derive(serde::Deserialize)]
    struct Error {
        code: Option<String>,
        message: Option<String>,
    }
    let detail = serde_json::from_slice::<Errors>(&body)
        .ok()
        .map(|e| {
            e.errors
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e.code.as_deref().unwrap_or(""),
                        e.message.as_deref().unwrap_or("")
                    )
                    .trim()
                    .to_string()
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|s| !s.is_empty());
    match detail {
        Some(d) => format!("{status} ({d})"),
        None => status.to_string(),
    }
}
