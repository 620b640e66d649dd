//! `layerfs pull docker://REF`: an import from a registry. The layers the store lacks are
//! downloaded (in parallel, digest-checked) into a directory of the store's `tmp/`, then
//! imported as any source is (unpacked, the blobs kept as they came); nothing is published
//! unless every layer arrived whole, and the downloads are removed either way.
//! Also the registry options every command that reads or writes `docker://` takes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use layerfs_image::registry::{self, pull, Credentials, Options, Reference};
use layerfs_image::store::{ImageRecord, Store};
use serde::Serialize;

use super::imagecmd::{as_store_owner, print_json, StoreArgs};

/// How to reach a registry (skopeo's and podman's flags).
#[derive(Args, Debug, Clone, Default)]
pub struct RegistryArgs {
    /// USER:PASSWORD for the registry (else the auth files are read).
    #[arg(long, value_name = "USER:PASSWORD")]
    pub creds: Option<String>,
    /// The auth file to read credentials from (default: ${XDG_RUNTIME_DIR}/containers/auth.json,
    /// then ~/.docker/config.json).
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Require HTTPS and a trusted certificate (--tls-verify=false allows plain HTTP and
    /// untrusted certificates; default: true unless registries.conf marks the registry insecure).
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub tls_verify: Option<bool>,
    /// A directory of certificates: *.crt (CAs), *.cert and *.key (a client certificate).
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Seekable layers (zstd:chunked, eStargz) become lazy store layers: their trees made
    /// from their tables of contents (a few range requests, or the local blob's), each
    /// file's content fetched when first read or by a mount's background prefetch. From a
    /// registry, other layers (plain gzip, zstd) are lazy too, fetched whole: a mount
    /// comes up at once and streams them in, its first lookup waiting for them; from a
    /// local source they are unpacked as usual.
    #[arg(long)]
    pub lazy: bool,
}

impl RegistryArgs {
    pub fn options(&self) -> Result<Options> {
        Ok(Options {
            creds: self.creds.as_deref().map(Credentials::parse).transpose()?,
            authfile: self.authfile.clone(),
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir.clone(),
            lazy: self.lazy,
        })
    }
}

/// Pull an image from a registry into the layer store.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// docker://HOST[:PORT]/REPO[:TAG|@DIGEST] (the docker:// may be left out).
    pub reference: String,
    /// Name the image NAME[:TAG] in the store too (it is always named HOST/REPO:TAG).
    #[arg(long)]
    pub name: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct PulledJson<'a> {
    reference: String,
    manifest_digest: String,
    id: &'a str,
    names: &'a [String],
    layers: Vec<PulledLayer>,
}

#[derive(Serialize)]
struct PulledLayer {
    digest: Option<String>,
    diff_id: String,
    size: u64,
    /// Already in the store: not downloaded.
    reused: bool,
    /// Pulled lazily: only the table of contents was fetched.
    lazy: bool,
}

/// What a pull did.
pub struct Pulled {
    pub reference: Reference,
    pub manifest_digest: String,
    pub record: ImageRecord,
    pub reused: Vec<bool>,
    /// Per layer: made lazily (its blob stays in the registry).
    pub lazy: Vec<bool>,
}

pub fn run(args: PullArgs) -> Result<i32> {
    let root = args.store.root();
    let opts = args.registry.options()?;
    as_store_owner(|| {
        let store = Store::open(&root)?;
        let p = pull(&store, &args.reference, &args.name, &opts, opts.lazy)?;
        if args.json {
            print_json(&PulledJson {
                reference: p.reference.to_string(),
                manifest_digest: p.manifest_digest.clone(),
                id: &p.record.id,
                names: &p.record.names,
                layers: p
                    .record
                    .layers
                    .iter()
                    .zip(&p.reused)
                    .zip(&p.lazy)
                    .map(|((l, r), lazy)| PulledLayer {
                        digest: l.blob.as_ref().map(|b| b.digest.clone()),
                        diff_id: l.diff_id.clone(),
                        size: l.size,
                        reused: *r,
                        lazy: *lazy,
                    })
                    .collect(),
            })?;
        } else {
            let shared = p.reused.iter().filter(|r| **r).count();
            let lazy = p.lazy.iter().filter(|l| **l).count();
            let lazy = if lazy > 0 {
                format!(", {lazy} lazy")
            } else {
                String::new()
            };
            println!(
                "{} ({} layers, {shared} already in the store{lazy}) as {}",
                p.record.id,
                p.record.layers.len(),
                p.record.names.join(", ")
            );
        }
        Ok(0)
    })
}

/// Pulls `source` (`docker://REF`, or an unqualified name tried against registries.conf's
/// search list) into `store` under `names` and its `HOST/REPO:TAG`. The caller is the
/// store's owner. `lazy`: layers in a seekable form with their TOC's digest in the
/// manifest are made lazy ([`pull::open_lazy`]), not downloaded.
pub fn pull(
    store: &Store,
    source: &str,
    names: &[String],
    opts: &Options,
    lazy: bool,
) -> Result<Pulled> {
    let (client, reference, resolved) = resolve(source, opts)?;
    pull_resolved(store, &client, reference, resolved, names, opts, lazy)
}

/// [`pull`] of a reference already resolved to its manifest.
fn pull_resolved(
    store: &Store,
    client: &Arc<registry::Client>,
    reference: Reference,
    resolved: pull::Resolved,
    names: &[String],
    opts: &Options,
    lazy: bool,
) -> Result<Pulled> {
    let what = reference.to_string();
    // The lazy layers first, from their TOCs: then the store has them, so the download
    // skips them and the import reuses them like any layer the store had.
    let mut made_lazy = vec![false; resolved.layer_count()];
    let mut lazy_ids = Vec::new();
    // What this pull made lazily goes again if the pull fails (unless an image uses it).
    let undo = |ids: &[String], e: anyhow::Error| -> anyhow::Error {
        if let Err(u) = store.remove_unused_layers(ids) {
            log::warn!("{what}: removing the lazy layers of a failed pull: {u:#}");
        }
        e
    };
    if lazy {
        let unpack = layerfs_image::unpack::Options::for_this_process();
        for (i, m) in made_lazy.iter_mut().enumerate() {
            let l = match pull::open_lazy(client, &reference, &resolved, opts, i) {
                Ok(Some(l)) => l,
                Ok(None) => {
                    // No table of contents: the layer arrives whole, streamed by the first
                    // mount that needs it (docs/SEMANTICS.md, "Lazy layers").
                    match pull::open_whole(client, &reference, &resolved, opts, i) {
                        Ok(Some(w)) if !store.has_layer(w.diff_id.as_str()) => {
                            if let Err(e) =
                                store.add_lazy_whole(w.diff_id.as_str(), w.source, w.compression)
                            {
                                let e =
                                    e.context(format!("{what}: layer {} ({})", i + 1, w.diff_id));
                                return Err(undo(&lazy_ids, e));
                            }
                            lazy_ids.push(w.diff_id.to_string());
                            log::info!(
                                "{what}: layer {} lazy, arriving whole ({})",
                                i + 1,
                                layerfs_image::lazy::whole::form_name(w.compression)
                            );
                            *m = true;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            return Err(undo(
                                &lazy_ids,
                                e.context(format!("{what}: layer {}", i + 1)),
                            ))
                        }
                    }
                    continue;
                }
                Err(e) => {
                    return Err(undo(
                        &lazy_ids,
                        e.context(format!("{what}: layer {}", i + 1)),
                    ))
                }
            };
            if store.has_layer(l.diff_id.as_str()) {
                continue;
            }
            if let Err(e) =
                store.add_lazy(l.diff_id.as_str(), &l.opened, l.source.record(), &unpack)
            {
                let e = e.context(format!("{what}: layer {} ({})", i + 1, l.diff_id));
                return Err(undo(&lazy_ids, e));
            }
            lazy_ids.push(l.diff_id.to_string());
            let (bytes, requests) = l.source.counts();
            log::info!(
                "{what}: layer {} lazy ({} files; its TOC took {bytes} bytes in {requests} requests)",
                i + 1,
                l.opened.toc.entries.len()
            );
            *m = true;
        }
    }
    let mut all_names = names.to_vec();
    all_names.push(reference.name());
    // Named by pid: what a killed pull left is swept when the store is next opened
    // (`Store::sweep`).
    let tmp = tempfile::Builder::new()
        .prefix(&format!("pull-{}-", std::process::id()))
        .tempdir_in(store.root().join("tmp"))
        .context("creating a download directory in the store")?;
    let bars = pull::LayerBars::new(resolved.layer_count());
    // Each layer is imported as soon as its blob is in, while the next ones download.
    let img = pull::image(&reference, &resolved, tmp.path()).with_context(|| what.clone())?;
    let ready = pull::Ready::new(img.layers.len());
    let have = |d: &layerfs_image::source::Digest| store.has_layer(d.as_str());
    let (record, mut reused) = std::thread::scope(|s| {
        s.spawn(|| pull::download(client, &reference, &img, &have, &bars, &ready));
        let r = layerfs_image::import::import_image(
            store,
            &img,
            &what,
            &all_names,
            Some(&|i| ready.wait(i)),
            // Lazy layers of a registry were made above, from their TOCs.
            false,
        );
        if r.is_err() {
            ready.cancel();
        }
        r
    })
    .map_err(|e| undo(&lazy_ids, e))?;
    for (r, l) in reused.iter_mut().zip(&made_lazy) {
        *r &= !l;
    }
    Ok(Pulled {
        reference,
        manifest_digest: resolved.manifest_digest.to_string(),
        record,
        reused,
        lazy: made_lazy,
    })
}

/// The registry, reference and manifest `source` names: the first candidate (of
/// registries.conf's search list for an unqualified name) that has it.
fn resolve(
    source: &str,
    opts: &Options,
) -> Result<(Arc<registry::Client>, Reference, pull::Resolved)> {
    let mut errors = Vec::new();
    for reference in registry::reference::candidates(source)? {
        let got = registry::connect(&reference, opts).and_then(|client| {
            let r = pull::resolve(&client, &reference).with_context(|| reference.to_string())?;
            Ok((client, r))
        });
        match got {
            Ok((client, r)) => return Ok((Arc::new(client), reference, r)),
            Err(e) => errors.push(e),
        }
    }
    match errors.len() {
        1 => Err(errors.remove(0)),
        _ => Err(anyhow!(
            "{source}: no registry of registries.conf's search list has it: {}",
            errors
                .iter()
                .map(|e| format!("{e:#}"))
                .collect::<Vec<_>>()
                .join("; ")
        )),
    }
}

/// The store image `source` (`docker://REF`) names now: the registry is asked which
/// manifest the reference names, and the image pulled unless the store has it already
/// (same config, every layer). For every command that takes a SOURCE.
/// With `opts.lazy` (`--lazy`), pulled as `pull --lazy` does.
pub fn store_image(source: &str, root: &Path, opts: &Options) -> Result<(Store, ImageRecord)> {
    let src = source.to_string();
    let (root2, opts2) = (root.to_path_buf(), opts.clone());
    let code = as_store_owner(move || {
        let store = Store::open(&root2)?;
        let (client, reference, resolved) = match resolve(&src, &opts2) {
            Ok(r) => r,
            Err(e) => {
                // The registry cannot say which image the reference names now: the store's
                // copy of it, if there is one, serves (with a warning), as podman's run uses
                // its local image.
                for r in registry::reference::candidates(&src)? {
                    if store.find(&r.name())?.is_some() {
                        log::warn!("{src}: {e:#}; using the store's copy of {}", r.name());
                        return Ok(0);
                    }
                }
                return Err(e);
            }
        };
        let id = resolved.config_digest.to_string();
        let present = store.images()?.into_iter().find(|i| i.id == id);
        if let Some(rec) = present.filter(|r| r.layers.iter().all(|l| store.has_layer(&l.diff_id)))
        {
            if rec.names.contains(&reference.name()) {
                return Ok(0);
            }
        }
        let lazy = opts2.lazy;
        pull_resolved(&store, &client, reference, resolved, &[], &opts2, lazy)?;
        Ok(0)
    })?;
    if code != 0 {
        bail!("{source}: pull failed");
    }
    let store = Store::open(root)?;
    // The name the pull gave it (the reference as the registry resolved it).
    let reference = registry::reference::candidates(source)?;
    for r in reference {
        if let Some(rec) = store.find(&r.name())? {
            return Ok((store, rec));
        }
    }
    bail!("{source}: not in the store after pulling it")
}
