//! The layer store: unpacked layers shared by every image that has them.
//!
//! ```text
//! STORE/layers/<hex of diff_id>/   a layer, unpacked, in the kernel's format (a lowerdir)
//! STORE/kept/<hex of diff_id>/      the blob the layer came in as ([`super::kept`])
//! STORE/hashes/<hex>.blake3        its hash list: blake3 per file (`crate::verity`)
//! STORE/images/<hex of id>.json    an image: names, layer diff_ids bottom first, run config
//! STORE/tmp/                       layers being unpacked (same filesystem: renamed in place),
//!                                  each entry named `KIND-PID-...` after the process using it
//! STORE/pins/<hex>.<PID>           a layer process PID serves outside any image (podman's
//!                                  additional layer store): no `rmi` removes it while PID lives
//! STORE/lock                       flock, held while layers or images change
//! ```
//!
//! A layer is unpacked into `tmp/`, its uncompressed bytes hashed on the way; only when the
//! whole stream was read and its digest matched is it renamed to `layers/<hex>`, and only
//! when every layer of an image is there is the image's record written (atomically, by
//! rename). A failure anywhere leaves the store as it was: staged layers are removed when
//! dropped. The blob a layer was unpacked from is kept beside it (staged, moved into place
//! and removed with it), so an unchanged layer leaves as it came in. A process killed midway
//! leaves its `tmp/` entries (and at most a `images/*.json.tmp`): the next store operation
//! removes them ([`Store::sweep`]): an entry whose process is gone is garbage.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::kept;
use super::source::{Compression, Digest};
use super::unpack;
use crate::sys;
use crate::verity::HashList;

/// What `run` takes from an image config (OCI `config` object).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunConfig {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub user: String,
    /// `LABEL`s (`Labels`); left out of the record when empty, so older ids stay.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `EXPOSE`d ports, `80/tcp` style (`ExposedPorts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed_ports: Vec<String>,
}

/// One step of the image's history (as in the OCI config).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HistoryEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// A layer of an image record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// Bytes of the uncompressed tar.
    pub size: u64,
    /// The compressed blob the layer was imported from, if any: an OCI layout holding it
    /// can reference it instead of a new copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobRecord>,
    /// Device nodes of the layer that a rootless import could not create (`/dev/null`):
    /// absent from the layer directory, though the layer has them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_devices: Vec<String>,
}

/// A layer blob as an OCI descriptor names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlobRecord {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// An image in the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// `sha256:<hex>`: the config digest for imported images, else a digest of the record.
    pub id: String,
    pub names: Vec<String>,
    /// Bottom first.
    pub layers: Vec<LayerRecord>,
    pub config: RunConfig,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    #[serde(default)]
    pub created: Option<String>,
    /// Where it came from (the import source, or `commit`).
    #[serde(default)]
    pub source: String,
}

/// A layer unpacked into the store's `tmp/`, removed when dropped unless published.
pub struct Staged {
    path: Option<PathBuf>,
    /// The blake3 of every file as unpacked (`crate::verity`), published beside the layer.
    hashes: crate::verity::HashList,
    pub diff_id: String,
    pub size: u64,
    pub stats: unpack::Stats,
    /// The blob it was unpacked from, sealed with the unpacked directory's stamp.
    kept: Option<kept::Staged>,
}

impl Staged {
    /// Where the layer is unpacked until published (a lowerdir for later build steps).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            if let Err(e) = remove_tree(&p) {
                log::warn!("removing {}: {e:#}", p.display());
            }
        }
    }
}

/// Removes a directory tree without following symlinks.
pub fn remove_tree(p: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
        bail!("refusing to remove {}", p.display());
    };
    let dir = sys::open_host_dir(parent)?;
    use std::os::unix::ffi::OsStrExt;
    match unpack::remove_entry(dir.as_fd(), name.as_bytes()) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => Ok(r?),
    }
}

/// Hashes (and counts) what is read through it.
pub struct Hashing<R> {
    inner: R,
    hash: Sha256,
    pub count: u64,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            count: 0,
        }
    }

    /// Reads the rest of the stream (a tar's trailing padding counts too) and returns the
    /// `sha256:` digest of everything.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((format!("sha256:{:x}", self.hash.finalize()), self.count))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// The hex part of `sha256:<hex>`, checked (it names a directory).
pub fn digest_hex(d: &str) -> Result<&str> {
    match d.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(h),
        _ => bail!("{d:?} is not a sha256 digest"),
    }
}

/// The store.
pub struct Store {
    root: PathBuf,
}

/// The held store lock.
pub struct Lock(#[allow(dead_code)] std::fs::File);

/// A layer's pin ([`Store::pin`]), removed when dropped.
#[derive(Debug)]
pub struct Pin(PathBuf);

impl Drop for Pin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Store {
    /// `$XDG_DATA_HOME/layerfs` (or `~/.local/share/layerfs`), `/var/lib/layerfs` as root.
    pub fn default_root() -> PathBuf {
        if sys::geteuid() == 0 && !sys::in_user_namespace() {
            return PathBuf::from("/var/lib/layerfs");
        }
        match std::env::var_os("XDG_DATA_HOME") {
            Some(d) if !d.is_empty() => PathBuf::from(d).join("layerfs"),
            _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into()))
                .join(".local/share/layerfs"),
        }
    }

    /// Opens (or makes) the store at `root`, removing what killed processes left in it.
    pub fn open(root: &Path) -> Result<Store> {
        for sub in [
            "layers",
            "kept",
            "images",
            "tmp",
            "pins",
            crate::verity::DIR,
        ] {
            std::fs::create_dir_all(root.join(sub))
                .with_context(|| format!("creating the store {}", root.display()))?;
        }
        let store = Store {
            root: root.to_path_buf(),
        };
        store.sweep(None)?;
        Ok(store)
    }

    /// The prefix of a `tmp/` entry of this process: `KIND-PID-`.
    pub fn tmp_prefix(kind: &str) -> String {
        format!("{kind}-{}-", std::process::id())
    }

    /// Removes what processes that died (killed, or their machine) left: `tmp/` entries
    /// (`KIND-PID-...`) whose process is gone, and image records half written
    /// (`images/*.json.tmp`, written under the lock this takes). An entry with mounts
    /// below it (a build's) has them detached by `unmount` first, or is left when there is
    /// none. A process in another pid namespace looks gone: the store is not shared across
    /// pid namespaces.
    pub fn sweep(&self, unmount: Option<&dyn Fn(&Path)>) -> Result<()> {
        let _lock = self.lock()?;
        let tmp = self.root.join("tmp");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for e in std::fs::read_dir(&tmp).with_context(|| format!("reading {}", tmp.display()))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.split('-').nth(1).and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let dir = e.path();
            let mut mounts: Vec<PathBuf> = mountinfo
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .map(PathBuf::from)
                .filter(|m| m.starts_with(&dir))
                .collect();
            if !mounts.is_empty() {
                let Some(unmount) = unmount else {
                    log::warn!("{}: left by process {pid}, mounts below it", dir.display());
                    continue;
                };
                mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
                for m in mounts {
                    unmount(&m);
                }
            }
            log::info!("removing {}, left by process {pid}", dir.display());
            let r = match e.file_type()?.is_dir() {
                true => remove_tree(&dir),
                false => std::fs::remove_file(&dir).map_err(Into::into),
            };
            if let Err(e) = r {
                log::warn!("removing {}: {e:#}", dir.display());
            }
        }
        for e in std::fs::read_dir(self.root.join("images"))? {
            let p = e?.path();
            if p.to_string_lossy().ends_with(".json.tmp") {
                log::info!("removing {}, a record half written", p.display());
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the store's lock (blocking while another layerfs changes it).
    pub fn lock(&self) -> Result<Lock> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("lock"))
            .with_context(|| format!("opening {}/lock", self.root.display()))?;
        sys::flock(f.as_fd(), libc::LOCK_EX).context("locking the store")?;
        Ok(Lock(f))
    }

    /// Pins layer `diff_id` for as long as this process lives or the pin is kept: no image
    /// removal removes it meanwhile (a layer served outside any image record). Taken under
    /// the store's lock, so a removal running now either ran before (and the caller finds
    /// the layer gone) or sees the pin.
    pub fn pin(&self, diff_id: &str) -> Result<Pin> {
        let _lock = self.lock()?;
        let path =
            self.root
                .join("pins")
                .join(format!("{}.{}", digest_hex(diff_id)?, std::process::id()));
        std::fs::write(&path, b"").with_context(|| format!("creating {}", path.display()))?;
        Ok(Pin(path))
    }

    /// The hex digests of the layers pinned by live processes (under the lock); removes the
    /// pins of processes that are gone.
    fn pinned_locked(&self) -> Result<std::collections::HashSet<String>> {
        let dir = self.root.join("pins");
        let mut out = std::collections::HashSet::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            // A store made before pins were.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        for e in entries {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((hex, pid)) = name.rsplit_once('.') else {
                continue;
            };
            let alive = pid
                .parse::<u32>()
                .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if alive {
                out.insert(hex.to_string());
            } else {
                log::info!("removing the pin {name}, its process is gone");
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(out)
    }

    /// The directory of a layer (which may not exist).
    pub fn layer_dir(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self.root.join("layers").join(digest_hex(diff_id)?))
    }

    /// Where the blob a layer came in as is kept.
    pub fn kept_dir(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self.root.join("kept").join(digest_hex(diff_id)?))
    }

    /// The kept blob of a layer, when there is one and the layer's files are unchanged.
    pub fn kept(&self, diff_id: &str) -> Result<Option<kept::Kept>> {
        kept::find(&self.kept_dir(diff_id)?, &self.layer_dir(diff_id)?, diff_id)
    }

    pub fn has_layer(&self, diff_id: &str) -> bool {
        self.layer_dir(diff_id).is_ok_and(|p| p.is_dir())
    }

    /// Unpacks the uncompressed layer tar `tar` into `tmp/`, checking its digest against
    /// `expected` when given. Reads the stream to its end (where the sources check their
    /// own blob digests).
    pub fn stage(
        &self,
        tar: impl Read,
        expected: Option<&str>,
        opts: &unpack::Options,
    ) -> Result<Staged> {
        self.stage_in(&self.root.join("tmp"), tar, expected, opts)
    }

    /// [`Store::stage`] into `dir`, a directory of the store's filesystem (a build keeps
    /// its staged layers in its own directory, swept as a whole if the build dies).
    pub fn stage_in(
        &self,
        dir: &Path,
        tar: impl Read,
        expected: Option<&str>,
        opts: &unpack::Options,
    ) -> Result<Staged> {
        let tmp = tempfile::Builder::new()
            .prefix(&Store::tmp_prefix("layer"))
            .tempdir_in(dir)
            .context("creating a staging directory in the store")?
            .keep();
        let mut staged = Staged {
            path: Some(tmp.clone()),
            hashes: Default::default(),
            diff_id: String::new(),
            size: 0,
            stats: unpack::Stats::default(),
            kept: None,
        };
        let fd = sys::open_host_dir(&tmp)?;
        let mut hashing = Hashing::new(tar);
        staged.stats = unpack::unpack(&mut hashing, fd.as_fd(), opts)?;
        let (digest, size) = hashing.finish().context("reading the layer")?;
        if let Some(want) = expected {
            if want != digest {
                bail!("layer digest mismatch: expected {want}, read {digest}");
            }
        }
        staged.diff_id = digest;
        staged.size = size;
        // Read back from the page cache just filled: what `verify` and `-o verify` check
        // the layer against from now on.
        staged.hashes = super::verify::hash_list_of(&tmp).context("hashing the layer's files")?;
        Ok(staged)
    }

    /// Keeps the layer blob `raw` (as the source holds it, `hint` from its media type) and
    /// unpacks the layer from the kept copy, as [`Store::stage`] does.
    pub fn stage_blob(
        &self,
        raw: impl Read,
        hint: Option<Compression>,
        expected: Option<&str>,
        opts: &unpack::Options,
    ) -> Result<Staged> {
        let k = kept::stage(&self.root.join("tmp"), raw, hint)?;
        self.stage_kept(k, expected, opts)
    }

    /// [`Store::stage_blob`] for a blob already in a file of the store's filesystem whose
    /// bytes the caller checked against `digest` as it wrote them (a download): the file
    /// is moved into place, not copied and hashed again.
    pub fn stage_blob_file(
        &self,
        file: &Path,
        digest: &Digest,
        hint: Option<Compression>,
        expected: Option<&str>,
        opts: &unpack::Options,
    ) -> Result<Staged> {
        let k = kept::stage_file(&self.root.join("tmp"), file, digest, hint)?;
        self.stage_kept(k, expected, opts)
    }

    fn stage_kept(
        &self,
        mut k: kept::Staged,
        expected: Option<&str>,
        opts: &unpack::Options,
    ) -> Result<Staged> {
        let mut staged = self.stage(k.tar()?, expected, opts)?;
        let dir = staged.path.as_ref().expect("staged until published");
        k.seal(&staged.diff_id, dir)?;
        staged.kept = Some(k);
        Ok(staged)
    }

    /// The directory of layer `diff_id` with every file's content present: a lazy layer
    /// is filled first (for tools that read its files rather than mount it).
    pub fn whole_layer_dir(&self, diff_id: &str) -> Result<PathBuf> {
        let dir = self.layer_dir(diff_id)?;
        crate::lazy::layer::fill_all(&dir)?;
        Ok(dir)
    }

    /// Makes layer `diff_id` a lazy layer from its blob's table of contents (nothing if
    /// the store has the layer), under the store's lock.
    pub fn add_lazy(
        &self,
        diff_id: &str,
        opened: &crate::lazy::Opened,
        source: crate::format::lazy::Source,
        opts: &unpack::Options,
    ) -> Result<()> {
        let _lock = self.lock()?;
        if self.has_layer(diff_id) {
            return Ok(());
        }
        crate::lazy::materialize(opened, source, &self.layer_dir(diff_id)?, opts)
    }

    /// Makes layer `diff_id` a lazy layer that arrives whole from `source` (a blob
    /// without a table of contents, compressed as `compression`): an empty directory and
    /// its record; the first mount (or tool) that needs it streams it in. Nothing if the
    /// store has the layer.
    pub fn add_lazy_whole(
        &self,
        diff_id: &str,
        source: crate::format::lazy::Source,
        compression: Compression,
    ) -> Result<()> {
        let _lock = self.lock()?;
        if self.has_layer(diff_id) {
            return Ok(());
        }
        crate::lazy::whole::make(&self.layer_dir(diff_id)?, source, compression)
    }

    /// Moves staged layers into place (a layer already present is kept and the copy
    /// dropped) and writes the image record, taking the names from any image that had them.
    pub fn publish(&self, staged: Vec<Staged>, record: &ImageRecord) -> Result<()> {
        let _lock = self.lock()?;
        for mut s in staged {
            let dst = self.layer_dir(&s.diff_id)?;
            // The list first: a layer is never in place without one (a list without its
            // layer, left by a crash here, holds the same content: layers are content-addressed).
            if !HashList::path_for(&dst).exists() {
                s.hashes
                    .store(&dst)
                    .with_context(|| format!("writing the hash list of {}", dst.display()))?;
            }
            if dst.exists() {
                continue; // dropped: its tmp dir is removed
            }
            // The kept blob first: one without its layer is replaced by the next import,
            // a layer without one is packed from its files.
            if let Some(k) = s.kept.take() {
                k.publish(&self.kept_dir(&s.diff_id)?)?;
            }
            let src = s.path.take().expect("staged layers have a path");
            sys::rename_path(&src, &dst)
                .with_context(|| format!("moving the layer into {}", dst.display()))?;
        }
        for l in &record.layers {
            if !self.has_layer(&l.diff_id) {
                bail!("layer {} is not in the store", l.diff_id);
            }
        }
        for mut other in self.images()? {
            if other.id == record.id {
                continue;
            }
            let before = other.names.len();
            other.names.retain(|n| !record.names.contains(n));
            if other.names.len() != before {
                self.write_record(&other)?;
            }
        }
        self.write_record(record)
    }

    fn write_record(&self, record: &ImageRecord) -> Result<()> {
        let path = self
            .root
            .join("images")
            .join(format!("{}.json", digest_hex(&record.id)?));
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(record)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        sys::rename_path(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Every image, sorted by name.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let mut out = Vec::new();
        for ent in std::fs::read_dir(self.root.join("images"))? {
            let p = ent?.path();
            if p.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                out.push(
                    serde_json::from_slice(&text)
                        .with_context(|| format!("parsing {}", p.display()))?,
                );
            }
        }
        out.sort_by(|a: &ImageRecord, b| a.names.cmp(&b.names).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The image named `name` (`NAME[:TAG]`, `:latest` implied), or whose id starts with it.
    pub fn find(&self, name: &str) -> Result<Option<ImageRecord>> {
        let full = normalize_name(name);
        let images = self.images()?;
        if let Some(i) = images.iter().find(|i| i.names.contains(&full)) {
            return Ok(Some(i.clone()));
        }
        let id = name.strip_prefix("sha256:").unwrap_or(name);
        if id.len() >= 6 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<_> = images
                .into_iter()
                .filter(|i| i.id.trim_start_matches("sha256:").starts_with(id))
                .collect();
            match hits.len() {
                0 => {}
                1 => return Ok(hits.into_iter().next()),
                _ => bail!("{name}: more than one image id starts with it"),
            }
        }
        Ok(None)
    }

    /// Layer directories of an image, top first (the order of `lowerdir=`).
    pub fn lowers(&self, image: &ImageRecord) -> Result<Vec<PathBuf>> {
        image
            .layers
            .iter()
            .rev()
            .map(|l| self.layer_dir(&l.diff_id))
            .collect()
    }

    /// Removes the image and every layer no other image uses; returns the removed layers.
    pub fn remove(&self, name: &str) -> Result<(ImageRecord, Vec<String>)> {
        let _lock = self.lock()?;
        let Some(image) = self.find(name)? else {
            bail!("{name}: no such image in {}", self.root.display());
        };
        let path = self
            .root
            .join("images")
            .join(format!("{}.json", digest_hex(&image.id)?));
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        let ids: Vec<String> = image.layers.iter().map(|l| l.diff_id.clone()).collect();
        let removed = self.remove_unused_locked(&ids)?;
        Ok((image, removed))
    }

    /// Removes those of the layers `diff_ids` that no image uses (what a pull that failed
    /// made before failing: its lazy layers); returns the removed ones.
    pub fn remove_unused_layers(&self, diff_ids: &[String]) -> Result<Vec<String>> {
        let _lock = self.lock()?;
        self.remove_unused_locked(diff_ids)
    }

    /// [`Store::remove_unused_layers`] under the lock: each layer with its kept blob, lazy
    /// record and hash list.
    fn remove_unused_locked(&self, diff_ids: &[String]) -> Result<Vec<String>> {
        let used: std::collections::HashSet<String> = self
            .images()?
            .into_iter()
            .flat_map(|i| i.layers.into_iter().map(|l| l.diff_id))
            .collect();
        let pinned = self.pinned_locked()?;
        let mut removed = Vec::new();
        for id in diff_ids {
            if used.contains(id) || removed.contains(id) {
                continue;
            }
            if pinned.contains(digest_hex(id)?) {
                log::info!("{id}: kept, a process serves it");
                continue;
            }
            let dir = self.layer_dir(id)?;
            // Renamed aside first, so a crash never leaves a half-removed layer in place.
            let trash = self.root.join("tmp").join(format!(
                "{}{}",
                Store::tmp_prefix("rm"),
                digest_hex(id)?
            ));
            if std::fs::rename(&dir, &trash).is_ok() {
                remove_tree(&trash)?;
            }
            let kept = self.kept_dir(id)?;
            if kept.exists() {
                std::fs::remove_dir_all(&kept)
                    .with_context(|| format!("removing {}", kept.display()))?;
            }
            // A lazy layer's record goes with it (after the layer: a record without its
            // layer is never read, a layer without its record would show placeholders).
            if let Some(lazy) = crate::format::lazy::dir_for(&dir).filter(|d| d.exists()) {
                std::fs::remove_dir_all(&lazy)
                    .with_context(|| format!("removing {}", lazy.display()))?;
            }
            let list = HashList::path_for(&dir);
            if let Err(e) = std::fs::remove_file(&list) {
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(e).with_context(|| format!("removing {}", list.display()));
                }
            }
            removed.push(id.clone());
        }
        self.sweep_kept()?;
        Ok(removed)
    }

    /// Removes kept blobs whose layer is not in the store (left by a crash between the two
    /// renames of `publish`; both happen under the lock this runs under).
    fn sweep_kept(&self) -> Result<()> {
        for ent in std::fs::read_dir(self.root.join("kept"))? {
            let ent = ent?;
            let name = ent.file_name();
            let Some(hex) = name.to_str() else { continue };
            if !self.root.join("layers").join(hex).exists() {
                log::info!("removing the kept blob of a missing layer {hex}");
                std::fs::remove_dir_all(ent.path())
                    .with_context(|| format!("removing {}", ent.path().display()))?;
            }
        }
        Ok(())
    }
}

/// `NAME` → `NAME:latest`; a name with a tag or digest is kept.
pub fn normalize_name(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || last.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// The id of an image that has no config blob of its own yet: the digest of its record.
pub fn record_id(layers: &[LayerRecord], config: &RunConfig, history: &[HistoryEntry]) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&(layers, config, history)).expect("serializable"));
    format!("sha256:{:x}", h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_layer_outlives_a_removal_while_its_process_lives() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = format!("sha256:{}", "ab".repeat(32));
        let layer = store.layer_dir(&id).unwrap();
        std::fs::create_dir(&layer).unwrap();
        std::fs::write(layer.join("f"), "x").unwrap();
        let pin = store.pin(&id).unwrap();
        assert!(store
            .remove_unused_layers(std::slice::from_ref(&id))
            .unwrap()
            .is_empty());
        assert!(layer.join("f").exists());
        drop(pin);
        // A pin whose process is gone pins nothing, and goes.
        let stale = dir
            .path()
            .join("pins")
            .join(format!("{}.999999999", "ab".repeat(32)));
        std::fs::write(&stale, "").unwrap();
        assert_eq!(
            store
                .remove_unused_layers(std::slice::from_ref(&id))
                .unwrap(),
            [id]
        );
        assert!(!layer.exists());
        assert!(!stale.exists());
    }
}
