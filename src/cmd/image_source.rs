//! The source arguments every layer tool takes (`inspect`, `which`, `diff`, `cat`), and
//! what opening one costs (manifests from the cache, a progress bar on a terminal).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use layerfs::image::manifest::{self, Cache, Manifest, Progress};
use layerfs::image::source::{Image, OpenOptions, Spec};
use layerfs::MountOptions;

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
}

impl SourceArgs {
    /// The source, from `-o` or the first of the positional `args`, and the `rest` of them
    /// (`rest` of them expected).
    pub fn spec(&self, args: &[String], rest: usize) -> Result<(Spec, Vec<String>)> {
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
            Ok((Spec::parse(&args[0])?, args[1..].to_vec()))
        } else {
            Ok((
                Spec::stack(MountOptions::parse_layers(&self.options)?),
                args.to_vec(),
            ))
        }
    }
}

impl CommonArgs {
    pub fn open(&self, spec: &Spec) -> Result<Image> {
        let opts = OpenOptions {
            storage_root: self.storage_root.clone(),
            ..Default::default()
        };
        spec.open(&opts)
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
