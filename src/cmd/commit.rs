//! `layerfs commit -o lowerdir=...,upperdir=U --to DEST`: an upper's changes as one OCI
//! layer (see `layerfs::image::pack` for the conversion), delivered as a tar, a layer
//! directory, a new image in the store, or an image in an OCI layout.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use layerfs::image::commit::{layer_tar, Compress, LayerTar};
use layerfs::image::oci_write::{Descriptor, LayerDesc, Layout};
use layerfs::image::pack::{needs_merged, Mode};
use layerfs::image::progress;
use layerfs::image::source::Compression;
use layerfs::image::store::{
    normalize_name, record_id, HistoryEntry, ImageRecord, LayerRecord, RunConfig, Store,
};
use layerfs::image::unpack;
use serde::Serialize;

use super::imagecmd::{
    as_store_owner, lowerdir_option, print_json, private_mounts, Mounted, StoreArgs,
};

/// Where a made layer goes and how it is written (commit and squash).
#[derive(Args, Debug)]
pub struct LayerOutArgs {
    /// tar:FILE (or a plain path), dir:DIR, store:NAME[:TAG], oci:DIR:TAG.
    #[arg(long, value_name = "DEST")]
    pub to: String,
    /// Compression of a tar or OCI layer (default: none for tar, gzip for oci).
    #[arg(long, value_enum)]
    pub compress: Option<Compress>,
    /// Pin every entry's mtime (and the image's creation time) to these Unix seconds.
    #[arg(long, value_name = "SECONDS")]
    pub timestamp: Option<i64>,
}

/// Turn an upper directory into one OCI layer: a tar, a layer directory, a new image in the
/// store, or an image in an OCI layout.
#[derive(Args, Debug)]
pub struct CommitArgs {
    /// lowerdir=TOP:...:BOTTOM,upperdir=U (the mount's options; the lowers are needed only
    /// for renamed directories and metadata-only copies, whose content lies below).
    #[arg(short = 'o', value_name = "OPTIONS", required = true)]
    pub options: Vec<String>,
    /// The image the upper was made on (a store name): its config, history and layers go
    /// into store and OCI outputs; its layers are the lowers if none are given.
    #[arg(long, value_name = "IMAGE")]
    pub from: Option<String>,
    #[command(flatten)]
    pub out: LayerOutArgs,
    /// The history entry's comment (`inspect` shows it beside CREATED BY).
    #[arg(long, short = 'm')]
    pub message: Option<String>,
    /// The history entry's `created_by`: what made the layer (default: "layerfs commit").
    #[arg(long, value_name = "TEXT")]
    pub created_by: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Where a layer goes.
#[derive(Debug, Clone)]
pub enum Dest {
    Tar(PathBuf),
    Dir(PathBuf),
    Store(String),
    Oci(PathBuf, String),
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
        } else if s.contains(':') {
            bail!("--to {s}: expected tar:FILE, dir:DIR, store:NAME or oci:DIR:TAG");
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
}

pub fn run(args: CommitArgs) -> Result<i32> {
    let dest = Dest::parse(&args.out.to)?;
    let (lowers, upper) = layer_options(&args.options)?;
    let Some(upper) = upper else {
        bail!("commit needs -o upperdir=DIR (the layer to commit)");
    };
    let root = args.store.root();
    as_store_owner(|| {
        let store = Store::open(&root)?;
        let base = match &args.from {
            Some(name) => {
                let (_, img) = super::image_source::store_image(name, &root)?;
                Some(Base {
                    layers: img.layers,
                    config: img.config,
                    history: img.history,
                })
            }
            None => None,
        };
        let mut lowers = lowers.clone();
        if lowers.is_empty() {
            if let Some(name) = &args.from {
                let (_, img) = super::image_source::store_image(name, &root)?;
                lowers = store.lowers(&img)?;
            }
        }
        private_mounts()?;
        let mut tar = upper_layer(&store, &upper, &lowers, args.out.timestamp)?;
        let history = HistoryEntry {
            created: Some(rfc3339(args.out.timestamp)),
            created_by: Some(
                args.created_by
                    .clone()
                    .unwrap_or_else(|| "layerfs commit".into()),
            ),
            comment: args.message.clone(),
            empty_layer: false,
        };
        let out = deliver(
            &store,
            &mut tar,
            &dest,
            base,
            history,
            args.out.compress,
            args.out.timestamp,
        )?;
        report(&out, args.json)?;
        Ok(0)
    })
}

/// The layer tar of an upper made on `lowers` (top first): the one conversion `commit` and
/// `build` use. A renamed directory's content lies below: it is read through a mount of the
/// whole stack (a fresh workdir beside the upper; nothing is written through it), so the
/// caller must be in a mount namespace of its own when rootless ([`private_mounts`]).
pub fn upper_layer(
    store: &Store,
    upper: &Path,
    lowers: &[PathBuf],
    timestamp: Option<i64>,
) -> Result<LayerTar> {
    let (work, mnt);
    let mut merged = None;
    let mounted = if needs_merged(upper)? {
        if lowers.is_empty() {
            bail!(
                "{}: renamed directories and metadata-only copies keep content in the lowers; give them with -o lowerdir=...",
                upper.display()
            );
        }
        let parent = upper.parent().unwrap_or(Path::new("."));
        work = tempfile::Builder::new()
            .prefix(".layerfs-commit-work-")
            .tempdir_in(parent)
            .context("creating a workdir beside the upper")?;
        mnt = tempfile::Builder::new()
            .prefix("layerfs-commit-")
            .tempdir()
            .context("creating a temporary mountpoint")?;
        let opts = format!(
            "{},upperdir={},workdir={}",
            lowerdir_option(lowers),
            upper.display(),
            work.path().display()
        );
        let m = Mounted::new(&opts, mnt.path())?;
        merged = Some(mnt.path());
        Some(m)
    } else {
        None
    };
    let pb = progress::bytes("committing");
    let tick = |n: u64| pb.set_position(n);
    let tar = layer_tar(
        upper,
        Mode::Layer,
        timestamp,
        merged,
        lowers,
        &store.root().join("tmp"),
        &tick,
    )?;
    pb.finish_and_clear();
    drop(mounted);
    Ok(tar)
}

/// `lowerdir=` (top first) and `upperdir=` out of `-o` options; workdir and mount flags
/// are accepted and ignored (the same options as the mount that made the upper).
pub fn layer_options(options: &[String]) -> Result<(Vec<PathBuf>, Option<PathBuf>)> {
    let (mut lowers, mut upper) = (Vec::new(), None);
    for item in options.iter().flat_map(|o| o.split(',')) {
        if let Some(v) = item.strip_prefix("lowerdir=") {
            lowers.extend(v.split(':').filter(|p| !p.is_empty()).map(PathBuf::from));
        } else if let Some(v) = item.strip_prefix("upperdir=") {
            upper = Some(PathBuf::from(v));
        }
    }
    Ok((lowers, upper))
}

pub fn report(out: &Outcome, json: bool) -> Result<()> {
    if json {
        return print_json(out);
    }
    println!("{} -> {}", out.diff_id, out.dest);
    if let Some(id) = &out.image_id {
        println!("image {id}");
    }
    if let Some(saved) = out.bytes_saved {
        println!(
            "{saved} bytes ({}) of file content saved against the stacked layers \
             (inspect's reclaimable)",
            layerfs::image::manifest::human(saved.max(0) as u64)
        );
    }
    Ok(())
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
            let fd = layerfs::sys::open_host_dir(path)?;
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
            let mut layers = Vec::new();
            // A store image's layers are written as the blobs they came in as (kept in the
            // store), else packed from their directories; a blob already in the layout is
            // not written twice.
            for l in &base.layers {
                if let Some(b) = l.blob.as_ref().filter(|b| layout.has_blob(&b.digest)) {
                    // The base image's own blob is in the layout already: referenced.
                    layers.push(LayerDesc {
                        blob: Descriptor {
                            media_type: b.media_type.clone(),
                            digest: b.digest.clone(),
                            size: b.size,
                            annotations: None,
                        },
                        diff_id: l.diff_id.clone(),
                    });
                    continue;
                }
                // The blob it came in as, while its files are unchanged: the same digests,
                // nothing packed or compressed again.
                match store.kept(&l.diff_id)?.map(|k| k.write_to(&layout, how)) {
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
                let ldir = store.layer_dir(&l.diff_id)?;
                let mut t = layer_tar(
                    &ldir,
                    Mode::Layer,
                    timestamp,
                    None,
                    &[],
                    &store.root().join("tmp"),
                    &|_| {},
                )?;
                layers.push(blob(&layout, &mut t, how)?);
            }
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
    }
    Ok(out)
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
