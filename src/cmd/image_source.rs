//! The source arguments every layer tool takes (`inspect`, `which`, `diff`, `cat`), what
//! opening one costs (manifests from the cache, a progress bar on a terminal), and the one
//! reading of SOURCE strings every command shares ([`resolve`], [`store_image`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use layerfs_base::MountOptions;
use layerfs_image::manifest::{self, Cache, Manifest, Progress};
use layerfs_image::source::{layerstore, Image, OpenOptions, Spec};
use layerfs_image::store::{normalize_name, ImageRecord, Store};

use super::imagecmd::{as_store_owner, StoreArgs};

#[derive(Args, Debug, Clone, Default)]
pub struct SourceArgs {
    /// A layer stack in mount syntax instead of SOURCE: lowerdir=TOP:...:BOTTOM[,upperdir=U].
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Options about how sources are read, shared by every layer tool.
#[derive(Args, Debug, Clone, Default)]
pub struct CommonArgs {
    /// podman's store root for containers-storage: (default: /var/lib/containers/storage as
    /// root, ~/.local/share/containers/storage otherwise).
    #[arg(long, value_name = "DIR")]
    pub storage_root: Option<PathBuf>,
    /// Do not read or write the manifest cache.
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// What a SOURCE string names.
pub enum Named {
    /// An image of the layer store.
    Store {
        store: Store,
        record: Box<ImageRecord>,
    },
    /// A source read in place (an OCI layout or archive, a docker archive, podman's
    /// store, a stack).
    Source(Spec),
}

/// The source kinds written with a prefix (skopeo's transport names) or in mount syntax.
fn is_transport(s: &str) -> bool {
    let kind = s.split_once(':').map_or("", |(k, _)| k);
    matches!(
        kind,
        "oci" | "oci-archive" | "docker-archive" | "containers-storage"
    ) || s.contains("lowerdir=")
}

/// Reads a SOURCE string, the same way for every command:
/// - `store:NAME`: the image NAME[:TAG] (or id prefix) of the layer store at `store_root`;
/// - `oci:...`, `oci-archive:...`, `docker-archive:...`, `containers-storage:...` and
///   `lowerdir=...`: that source, read in place;
/// - anything else: an image of the layer store; an unknown name is an error naming the
///   store's images (and the closest one).
pub fn resolve(s: &str, store_root: &Path) -> Result<Named> {
    if let Some(name) = s.strip_prefix("store:") {
        let (store, record) = find(name, store_root)?;
        return Ok(Named::Store {
            store,
            record: Box::new(record),
        });
    }
    if is_transport(s) {
        return Ok(Named::Source(Spec::parse(s)?));
    }
    let (store, record) = find(s, store_root)?;
    Ok(Named::Store {
        store,
        record: Box::new(record),
    })
}

const KINDS: &str = "oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF], \
                     containers-storage:IMAGE, lowerdir=TOP:...:BOTTOM";

/// The store image `name`, or an error listing the store's images with the closest first.
fn find(name: &str, store_root: &Path) -> Result<(Store, ImageRecord)> {
    if name.is_empty() {
        bail!("store: needs an image name or id");
    }
    // Looking never creates a store.
    let empty = || {
        anyhow::anyhow!(
            "{name}: no such image (the store {} has none) and no source ({KINDS})",
            store_root.display()
        )
    };
    if !store_root.join("images").is_dir() {
        return Err(empty());
    }
    let store = Store::open(store_root)?;
    if let Some(r) = store.find(name)? {
        return Ok((store, r));
    }
    let names: Vec<String> = store.images()?.into_iter().flat_map(|i| i.names).collect();
    if names.is_empty() {
        return Err(empty());
    }
    let want = normalize_name(name);
    let closest = names
        .iter()
        .map(|n| (strsim::levenshtein(n, &want), n))
        .min()
        .filter(|(d, n)| *d <= want.len().max(n.len()) / 3)
        .map(|(_, n)| format!("; did you mean {n}?"))
        .unwrap_or_default();
    bail!(
        "{name}: no such image in the store {} (it has {}){closest}",
        store_root.display(),
        names.join(", ")
    )
}

/// The store image a SOURCE names, for the commands that need its layer directories
/// (`mount`, `run`, `squash`, `commit --from`): a store name as [`resolve`] reads it, or a
/// source imported on first use (`import` keeps the source as one of the image's names,
/// so the second use finds it).
pub fn store_image(s: &str, store_root: &Path) -> Result<(Store, ImageRecord)> {
    if let Named::Store { store, record } = resolve(s, store_root)? {
        return Ok((store, *record));
    }
    let store = Store::open(store_root)?;
    if let Some(r) = store.find(s)? {
        return Ok((store, r));
    }
    let root = store_root.to_path_buf();
    let img = s.to_string();
    let code = as_store_owner(move || {
        let store = Store::open(&root)?;
        layerfs_image::import::import(
            &store,
            &img,
            std::slice::from_ref(&img),
            &OpenOptions::default(),
        )?;
        Ok(0)
    })?;
    if code != 0 {
        bail!("{s}: import failed");
    }
    let r = store
        .find(s)?
        .with_context(|| format!("{s}: not in the store after importing it"))?;
    Ok((store, r))
}

impl SourceArgs {
    /// The source, from `-o` or the first of the positional `args`, and the `rest` of them
    /// (`rest` of them expected).
    pub fn spec(&self, args: &[String], rest: usize) -> Result<(Named, Vec<String>)> {
        let want = if self.options.is_empty() {
            rest + 1
        } else {
            rest
        };
        if args.len() != want {
            bail!(
                "expected {}{} argument(s), got {}",
                if self.options.is_empty() {
                    "SOURCE"
                } else {
                    ""
                },
                if rest > 0 { " and the path" } else { "" },
                args.len()
            );
        }
        if self.options.is_empty() {
            Ok((self.common.resolve(&args[0])?, args[1..].to_vec()))
        } else {
            Ok((
                Named::Source(Spec::stack(MountOptions::parse_layers(&self.options)?)),
                args.to_vec(),
            ))
        }
    }
}

impl CommonArgs {
    pub fn resolve(&self, s: &str) -> Result<Named> {
        resolve(s, &self.store.root())
    }

    pub fn open(&self, named: &Named, name: &str) -> Result<Image> {
        match named {
            Named::Store { store, record } => layerstore::open(store, record, name),
            Named::Source(spec) => {
                let opts = OpenOptions {
                    storage_root: self.storage_root.clone(),
                    ..Default::default()
                };
                spec.open(&opts)
            }
        }
    }

    /// Runs a tool's `f` where it can read every source in `named`: rootless, a store
    /// image's layers hold files of subordinate ids in 0700 directories, so `f` runs as
    /// root of the store owner's user namespace (as `podman unshare` does); otherwise, and
    /// as root, directly. The manifest cache stays the caller's ([`Cache::default_dir`]).
    pub fn reading(&self, named: &[&Named], f: impl FnOnce() -> Result<i32>) -> Result<i32> {
        let in_store = named.iter().any(|n| matches!(n, Named::Store { .. }));
        if !in_store || layerfs_base::sys::geteuid() == 0 {
            return f();
        }
        as_store_owner(f)
    }

    /// Every layer's manifest, from the cache where valid.
    pub fn manifests(&self, image: &Image) -> Result<Vec<Manifest>> {
        let cache = Cache::new(if self.no_cache {
            None
        } else {
            Cache::default_dir()
        });
        let progress = Progress::new(image.layers.len());
        let res = manifest::manifests(image, &cache, &progress);
        progress.finish();
        res
    }
}

/// Writes a tool's output to stdout. A reader that went away (`| head`) is not an error:
/// the output simply ends there.
pub fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `20MB` (10^6), `20MiB` / `20M` (2^20), `512k`, `1.5GB`, plain bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("not a size: {s:?}"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024f64.powi(4),
        other => bail!("unknown size unit {other:?} in {s:?} (B, kB, MB, GB, KiB, MiB, GiB)"),
    };
    Ok((n * mult).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("20MB").unwrap(), 20_000_000);
        assert_eq!(parse_size("20MiB").unwrap(), 20 << 20);
        assert_eq!(parse_size("20M").unwrap(), 20 << 20);
        assert_eq!(parse_size("1.5kB").unwrap(), 1500);
        assert_eq!(parse_size("42").unwrap(), 42);
        assert!(parse_size("20XB").is_err());
        assert!(parse_size("MB").is_err());
    }
}
