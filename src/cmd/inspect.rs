//! `layerfs inspect SOURCE`: per-layer changes, wasted bytes, duplicates; a layer's
//! changes as a tree; CI rules.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use super::image_source::{emit, parse_size, Named, SourceArgs};
use layerfs::image::inspect::{self, render, Change, Report};
use layerfs::image::manifest::human;
use layerfs::image::source::RelPath;

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    Added,
    Modified,
    Deleted,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    #[default]
    Name,
    Size,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The image: oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF],
    /// containers-storage:IMAGE, or lowerdir=TOP:...:BOTTOM[,upperdir=U] (or use -o).
    #[arg(value_name = "SOURCE")]
    pub args: Vec<String>,
    #[command(flatten)]
    pub source: SourceArgs,
    /// List the merged view (every visible path, its layer, kind, mode, owner, size, blake3).
    #[arg(long, conflicts_with = "tree")]
    pub merged: bool,
    /// Print the report as JSON (schema: docs/LAYER-TOOLS.md).
    #[arg(long)]
    pub json: bool,
    /// How many wasted files and duplicates to list.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,
    /// One layer (0 = bottom) for --tree.
    #[arg(long, value_name = "N")]
    pub layer: Option<usize>,
    /// Print the layer's changes as a tree with A/M/D marks and sizes.
    #[arg(long, requires = "layer")]
    pub tree: bool,
    /// Only this kind of change in the tree.
    #[arg(long, value_enum, requires = "tree")]
    pub only: Option<Only>,
    /// Order of the tree's entries (size: largest subtrees first).
    #[arg(long, value_enum, default_value_t = SortBy::Name, requires = "tree")]
    pub sort: SortBy,
    /// Only paths under this image path in the tree (repeatable).
    #[arg(long = "path", value_name = "PATH", requires = "tree")]
    pub paths: Vec<String>,
    /// CI mode: check the rules below and exit 1 naming the first one broken.
    #[arg(long)]
    pub ci: bool,
    /// Rule: at most this many wasted bytes (20MB, 20MiB, 1048576).
    #[arg(long, value_name = "SIZE")]
    pub max_wasted_bytes: Option<String>,
    /// Rule: at most this percent of the image wasted.
    #[arg(long, value_name = "PERCENT")]
    pub max_wasted_percent: Option<f64>,
    /// Rule: an efficiency (merged / image bytes) of at least this (0..1).
    #[arg(long, value_name = "RATIO")]
    pub min_efficiency: Option<f64>,
    /// A file of rules, `key = value` per line with the flags' names (flags win).
    #[arg(long, value_name = "FILE")]
    pub ci_config: Option<PathBuf>,
}

/// The CI rules, from flags and a config file.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rules {
    pub max_wasted_bytes: Option<u64>,
    pub max_wasted_percent: Option<f64>,
    pub min_efficiency: Option<f64>,
}

impl Rules {
    /// Parses `key = value` (or `key: value`) lines; `#` starts a comment; keys are the
    /// flags' names with `-` or `_`.
    pub fn parse_file(text: &str) -> Result<Rules> {
        let mut r = Rules::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() || line.starts_with('[') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .or_else(|| line.split_once(':'))
                .with_context(|| format!("line {}: expected key = value", n + 1))?;
            let v = v.trim().trim_matches('"');
            match k.trim().replace('_', "-").as_str() {
                "max-wasted-bytes" => r.max_wasted_bytes = Some(parse_size(v)?),
                "max-wasted-percent" => r.max_wasted_percent = Some(parse_percent(v)?),
                "min-efficiency" => {
                    r.min_efficiency = Some(v.parse().with_context(|| format!("line {}", n + 1))?)
                }
                other => bail!("line {}: unknown rule {other:?}", n + 1),
            }
        }
        Ok(r)
    }

    /// Checks the report; the first broken rule as a sentence.
    pub fn check(&self, r: &Report) -> Option<String> {
        let t = &r.totals;
        if let Some(max) = self.max_wasted_bytes {
            if t.reclaimable_bytes > max {
                return Some(format!(
                    "max-wasted-bytes: {} bytes ({}) wasted, the limit is {max} bytes ({})",
                    t.reclaimable_bytes,
                    human(t.reclaimable_bytes),
                    human(max)
                ));
            }
        }
        if let Some(max) = self.max_wasted_percent {
            if t.reclaimable_percent > max {
                return Some(format!(
                    "max-wasted-percent: {:.2}% of the image wasted, the limit is {max}%",
                    t.reclaimable_percent
                ));
            }
        }
        if let Some(min) = self.min_efficiency {
            if t.efficiency < min {
                return Some(format!(
                    "min-efficiency: efficiency {:.4}, the minimum is {min}",
                    t.efficiency
                ));
            }
        }
        None
    }
}

fn parse_percent(v: &str) -> Result<f64> {
    v.trim()
        .trim_end_matches('%')
        .trim()
        .parse()
        .with_context(|| format!("not a percentage: {v:?}"))
}

pub fn run(a: InspectArgs) -> Result<i32> {
    let (named, _) = a.source.spec(&a.args, 0)?;
    a.source
        .common
        .reading(&[&named], || show(&a, &named).map(|()| 0))
}

fn show(a: &InspectArgs, named: &Named) -> Result<()> {
    let name = a.args.first().map_or("the stack", String::as_str);
    let image = a.source.common.open(named, name)?;
    let manifests = a.source.common.manifests(&image)?;
    let (report, merged) = inspect::analyze(&image, &manifests, a.top);
    if a.merged {
        emit(&listing(&merged, a.json)?)?;
        return Ok(());
    }
    if let Some(n) = a.layer {
        if n >= image.layers.len() {
            bail!(
                "--layer {n}: the image has {} layers (0 = bottom)",
                image.layers.len()
            );
        }
    }
    if a.tree {
        let layer = a.layer.expect("clap requires --layer with --tree");
        let opts = render::TreeOptions {
            only: a.only.map(|o| match o {
                Only::Added => Change::Added,
                Only::Modified => Change::Modified,
                Only::Deleted => Change::Deleted,
            }),
            by_size: a.sort == SortBy::Size,
            under: a
                .paths
                .iter()
                .map(|p| RelPath::parse(p.as_bytes(), true))
                .collect::<Result<_>>()?,
        };
        if a.json {
            let list: Vec<serde_json::Value> = merged.changes[layer]
                .iter()
                .filter(|(p, c)| {
                    opts.only.is_none_or(|o| o == c.0) && (opts.under.is_empty() || opts.under.iter().any(|u| p.starts_with(u)))
                })
                .map(|(p, &(c, was, now))| {
                    let rec = now.or(was).map(|o| merged.record(o));
                    serde_json::json!({
                        "path": p.to_string(),
                        "change": c.name(),
                        "kind": rec.map(|r| r.kind.name()),
                        "size": rec.filter(|r| r.kind == layerfs::image::source::Kind::File).map(|r| r.size),
                    })
                })
                .collect();
            emit(&(serde_json::to_string_pretty(&list)? + "\n"))?;
        } else {
            emit(&render::tree(&merged, layer, &opts))?;
        }
        return Ok(());
    }
    let mut rules = match &a.ci_config {
        Some(f) => Rules::parse_file(
            &std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
        )
        .with_context(|| format!("{}", f.display()))?,
        None => Rules::default(),
    };
    if let Some(s) = &a.max_wasted_bytes {
        rules.max_wasted_bytes = Some(parse_size(s)?);
    }
    if let Some(p) = a.max_wasted_percent {
        rules.max_wasted_percent = Some(p);
    }
    if let Some(e) = a.min_efficiency {
        rules.min_efficiency = Some(e);
    }
    if a.ci && rules == Rules::default() {
        bail!("--ci needs a rule: --max-wasted-bytes, --max-wasted-percent, --min-efficiency or --ci-config");
    }
    if a.json {
        emit(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        emit(&render::table(&report))?;
    }
    if a.ci {
        if let Some(broken) = rules.check(&report) {
            bail!("CI rule broken: {broken}");
        }
        eprintln!("CI: all rules pass");
    }
    Ok(())
}

/// The merged view, one line (or JSON object) per visible path.
fn listing(merged: &inspect::Merged<'_>, json: bool) -> Result<String> {
    let rows = merged
        .view
        .iter()
        .filter(|(p, _)| !p.is_root())
        .map(|(p, &o)| (p, o.layer, merged.record(o)));
    if json {
        let list: Vec<serde_json::Value> = rows
            .map(|(p, layer, r)| {
                serde_json::json!({
                    "path": p.to_string(),
                    "layer": layer,
                    "kind": layerfs::image::inspect::merge::shown_kind(r.kind).name(),
                    "mode": r.mode,
                    "uid": r.uid,
                    "gid": r.gid,
                    "size": r.size,
                    "rdev": r.rdev,
                    "blake3": r.hash.map(|h| h.hex()),
                    "link": r.link.as_ref().filter(|_| r.kind == layerfs::image::source::Kind::Symlink)
                        .map(|l| String::from_utf8_lossy(l).into_owned()),
                    "xattrs": r.xattrs.iter()
                        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned()))
                        .collect::<std::collections::BTreeMap<_, _>>(),
                })
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&list)? + "\n");
    }
    let mut out = String::new();
    for (p, layer, r) in rows {
        out.push_str(&format!(
            "{} {:>5}:{:<5} {:>10} {:>3}  {}\n",
            render::mode_string(r),
            r.uid,
            r.gid,
            if r.kind == layerfs::image::source::Kind::File {
                human(r.size)
            } else {
                String::new()
            },
            layer,
            p
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_files() {
        let r = Rules::parse_file(
            "# dive-like\nmax-wasted-bytes = 20MB\nmax_wasted_percent: 5%\nmin-efficiency = 0.9\n",
        )
        .unwrap();
        assert_eq!(r.max_wasted_bytes, Some(20_000_000));
        assert_eq!(r.max_wasted_percent, Some(5.0));
        assert_eq!(r.min_efficiency, Some(0.9));
        assert!(Rules::parse_file("nonsense = 1").is_err());
    }
}
