//! Where a made layer goes (commit, squash, build): a tar, a layer directory, a new image in
//! the store, an image in an OCI layout, or one pushed to a registry, with the base image's
//! layers, config and history carried over. The one delivery path; the commands only parse and print.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::commit::{layer_tar, Compress, LayerTar};
use crate::oci_write::{Descriptor, LayerDesc, Layout, MANIFEST_TYPE};
use crate::pack::Mode;
use crate::progress;
use crate::registry::{self, push, Options, Reference};
use crate::source::Compression;
use crate::source::Digest;
use crate::store::{
    normalize_name, record_id, HistoryEntry, ImageRecord, LayerRecord, RunConfig, Store,
};
use crate::unpack;

/// Where a layer goes.
#[derive(Debug, Clone)]
pub enum Dest {
    Tar(PathBuf),
    Dir(PathBuf),
    Store(String),
    Oci(PathBuf, String),
    /// A registry: written as an OCI image in the store's `tmp/`, then pushed.
    Registry(Reference, Options),
}

impl Dest {
    pub fn parse(s: &str) -> Result<Dest> {
        Ok(if let Some(p) = s.strip_prefix("tar:") {
            Dest::Tar(p.into())
        } else if let Some(p) = s.strip_prefix("dir:") {
            Dest::Dir(p.into())
        } else if let Some(n) = s.strip_prefix("store:") {
            Dest::Store(n.into())
        } else if let Some(rest) = s.strip_prefix("oci:") {
            match rest.rsplit_once(':') {
                Some((d, t)) if !t.is_empty() && !t.contains('/') => Dest::Oci(d.into(), t.into()),
                _ => Dest::Oci(rest.into(), "latest".into()),
            }
        } else if s.starts_with(registry::PREFIX) {
            Dest::Registry(Reference::parse(s)?, Options::default())
        } else if s.contains(':') {
            bail!(
                "--to {s}: expected tar:FILE, dir:DIR, store:NAME, oci:DIR:TAG or docker://HOST/REPO[:TAG]"
            );
        } else {
            Dest::Tar(s.into())
        })
    }
}

/// What was written.
#[derive(Serialize, Default)]
pub struct Outcome {
    pub diff_id: String,
    pub size: u64,
    pub entries: u64,
    pub whiteouts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    pub dest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_saved: Option<i64>,
}

/// The image a new layer goes on top of.
pub struct Base {
    pub layers: Vec<LayerRecord>,
    pub config: RunConfig,
    pub history: Vec<HistoryEntry>,
    /// Where the image came from (its record's `source`): a pushed image's blobs may be
    /// mounted from there.
    pub source: Option<String>,
}

/// Delivers a layer tar to `dest`.
pub fn deliver(
    store: &Store,
    tar: &mut LayerTar,
    dest: &Dest,
    base: Option<Base>,
    history: HistoryEntry,
    compress: Option<Compress>,
    timestamp: Option<i64>,
) -> Result<Outcome> {
    let mut out = Outcome {
        diff_id: tar.diff_id.clone(),
        size: tar.size,
        entries: tar.stats.entries,
        whiteouts: tar.stats.whiteouts,
        ..Outcome::default()
    };
    let base = base.unwrap_or(Base {
        layers: Vec::new(),
        config: RunConfig::default(),
        history: Vec::new(),
        source: None,
    });
    match dest {
        Dest::Tar(path) => {
            let f = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let c = tar.compress_to(compress.unwrap_or(Compress::None), f)?;
            out.blob_digest = Some(c.digest);
            if let Some(d) = c.diff_id {
                out.diff_id = d;
            }
            out.dest = path.display().to_string();
        }
        Dest::Dir(path) => {
            std::fs::create_dir(path)
                .with_context(|| format!("creating {} (it must not exist)", path.display()))?;
            let fd = crate::sys::open_host_dir(path)?;
            let r = tar.reader()?;
            unpack::unpack(
                r,
                std::os::fd::AsFd::as_fd(&fd),
                &unpack::Options::for_this_process(),
            )
            .with_context(|| format!("writing the layer into {}", path.display()))?;
            out.dest = path.display().to_string();
        }
        Dest::Store(name) => {
            let diff_id = tar.diff_id.clone();
            let staged = store.stage_blob(
                tar.reader()?,
                Some(Compression::None),
                Some(&diff_id),
                &unpack::Options::for_this_process(),
            )?;
            let mut layers = base.layers;
            layers.push(LayerRecord {
                diff_id: diff_id.clone(),
                size: tar.size,
                blob: None,
                skipped_devices: staged.stats.skipped_devices.clone(),
            });
            let mut hist = aligned_history(layers.len() - 1, base.history);
            hist.push(history.clone());
            let id = record_id(&layers, &base.config, &hist);
            let record = ImageRecord {
                id: id.clone(),
                names: vec![normalize_name(name)],
                layers,
                config: base.config,
                history: hist,
                created: history.created.clone(),
                source: "commit".into(),
            };
            store.publish(vec![staged], &record)?;
            out.image_id = Some(id);
            out.dest = format!("store:{}", normalize_name(name));
        }
        Dest::Oci(dir, tag) => {
            let how = compress.unwrap_or(Compress::Gzip);
            let layout = Layout::create(dir)?;
            let mut layers = export_layers(store, &layout, &base.layers, how, timestamp)?;
            let new = blob(&layout, tar, how)?;
            out.blob_digest = Some(new.blob.digest.clone());
            out.diff_id = new.diff_id.clone();
            layers.push(new);
            let mut hist = aligned_history(base.layers.len(), base.history);
            hist.push(history.clone());
            let created = history.created.clone().unwrap_or_default();
            let (manifest, config) =
                layout.write_image(tag, &base.config, &hist, &created, &layers)?;
            out.manifest_digest = Some(manifest.digest);
            out.image_id = Some(config);
            out.dest = format!("oci:{}:{tag}", dir.display());
        }
        Dest::Registry(reference, opts) => {
            let tmp = tempfile::Builder::new()
                .prefix("push-")
                .tempdir_in(store.root().join("tmp"))
                .context("creating a directory in the store")?;
            let dir = tmp.path().join("oci");
            let mount_from = base.source.clone();
            let mut sub = deliver(
                store,
                tar,
                &Dest::Oci(dir.clone(), "latest".into()),
                Some(base),
                history,
                compress,
                timestamp,
            )?;
            let manifest = sub.manifest_digest.clone().context("no manifest written")?;
            let pushed = push_layout(&dir, &manifest, reference, opts, mount_from.as_deref())?;
            sub.manifest_digest = Some(pushed.manifest_digest);
            sub.dest = pushed.reference;
            out = sub;
        }
    }
    Ok(out)
}

/// The layers of a store image written into `layout` (bottom first): as the blobs they came
/// in as (kept in the store) while their files are unchanged, so they keep their digests;
/// else packed from their directories and compressed `how`. A blob already in the layout
/// is not written twice.
pub fn export_layers(
    store: &Store,
    layout: &Layout,
    base_layers: &[LayerRecord],
    how: Compress,
    timestamp: Option<i64>,
) -> Result<Vec<LayerDesc>> {
    let mut layers = Vec::new();
    // A store image's layers are written as the blobs they came in as (kept in the
    // store), else packed from their directories; a blob already in the layout is
    // not written twice.
    for l in base_layers {
        if let Some(b) = l.blob.as_ref().filter(|b| layout.has_blob(&b.digest)) {
            // The base image's own blob is in the layout already: referenced (a seekable
            // one with the annotations that make it so).
            let seekable = crate::commit::Compressed {
                annotations: layout
                    .blob_path(&b.digest)
                    .ok()
                    .and_then(|p| crate::lazy::read::annotations_of_file(&p))
                    .unwrap_or_default(),
                ..Default::default()
            };
            layers.push(LayerDesc {
                blob: Descriptor {
                    media_type: b.media_type.clone(),
                    digest: b.digest.clone(),
                    size: b.size,
                    annotations: seekable.descriptor_annotations(),
                },
                diff_id: l.diff_id.clone(),
            });
            continue;
        }
        // The blob it came in as, while its files are unchanged: the same digests,
        // nothing packed or compressed again.
        match store.kept(&l.diff_id)?.map(|k| k.write_to(layout, how)) {
            Some(Ok(desc)) => {
                layers.push(desc);
                continue;
            }
            Some(Err(e)) => log::warn!(
                "layer {}: its kept blob is unusable ({e:#}); packing it from its files",
                l.diff_id
            ),
            None => {}
        }
        let ldir = store.whole_layer_dir(&l.diff_id)?;
        let mut t = layer_tar(
            &ldir,
            Mode::Layer,
            timestamp,
            None,
            &[],
            &store.root().join("tmp"),
            &|_| {},
        )?;
        layers.push(blob(layout, &mut t, how)?);
    }
    Ok(layers)
}

fn blob(layout: &Layout, tar: &mut LayerTar, how: Compress) -> Result<LayerDesc> {
    let mut c = None;
    let (digest, size) = layout.write_blob(|w| {
        c = Some(tar.compress_to(how, w)?);
        Ok(())
    })?;
    let c = c.unwrap_or_default();
    Ok(LayerDesc {
        blob: Descriptor {
            media_type: how.media_type().into(),
            digest,
            size,
            annotations: c.descriptor_annotations(),
        },
        diff_id: c.diff_id.unwrap_or_else(|| tar.diff_id.clone()),
    })
}

/// An image's history with one entry per layer (each without `empty_layer`), as tools
/// pair them: an image imported without history (a layer stack) gets blank entries for
/// its layers first, so the entry a commit or a build adds names the new layer, not the
/// base's.
pub fn aligned_history(layers: usize, mut history: Vec<HistoryEntry>) -> Vec<HistoryEntry> {
    let made = history.iter().filter(|h| !h.empty_layer).count();
    let missing = layers.saturating_sub(made);
    history.splice(0..0, std::iter::repeat_n(HistoryEntry::default(), missing));
    history
}

/// `--timestamp` (or now) as RFC 3339 UTC.
pub fn rfc3339(ts: Option<i64>) -> String {
    let secs = ts.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    });
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Pushes the image `manifest` of the OCI layout `dir` to `dest`; `source` is where the
/// image came from (a `docker://` reference on the same registry lends its blobs by mount).
pub fn push_layout(
    dir: &Path,
    manifest: &str,
    dest: &Reference,
    opts: &Options,
    source: Option<&str>,
) -> Result<push::Pushed> {
    let manifest = Digest::parse(manifest)?;
    let client = registry::connect(dest, opts)?;
    let mount_from = source
        .filter(|s| s.starts_with(registry::PREFIX))
        .and_then(|s| Reference::parse_qualified(s).ok())
        .filter(|r| r.host == dest.host)
        .map(|r| r.repo);
    let pb = progress::items("pushing blobs", 0);
    let pushed = push::push_layout(
        &client,
        dir,
        &manifest,
        MANIFEST_TYPE,
        dest,
        mount_from.as_deref(),
        &|done, total| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        },
    )
    .with_context(|| dest.to_string());
    pb.finish_and_clear();
    pushed
}
