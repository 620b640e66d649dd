//! `layerfs inspect SOURCE`: per-layer changes, wasted bytes, duplicates; a layer's
//! changes as a tree; CI rules.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

use super::ci_rules::{self, Rules};
use super::image_source::{emit, Named, SourceArgs};
use layerfs_image::inspect::{self, render, Change};
use layerfs_image::manifest::human;
use layerfs_image::source::RelPath;

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
    /// CI mode: check the rules below; exit 1 naming the first one broken, 2 when the
    /// rules or the image cannot be read (as dive).
    #[arg(long)]
    pub ci: bool,
    /// Rule: at most this many wasted bytes (20MB, 20MiB, 1048576).
    #[arg(long, value_name = "SIZE", value_parser = ci_rules::size)]
    pub max_wasted_bytes: Option<u64>,
    /// Rule: at most this percent (0..100) of the image wasted.
    #[arg(long, value_name = "PERCENT", value_parser = ci_rules::percent)]
    pub max_wasted_percent: Option<f64>,
    /// Rule: an efficiency (merged / image bytes) of at least this (0..1).
    #[arg(long, value_name = "RATIO", value_parser = ci_rules::ratio)]
    pub min_efficiency: Option<f64>,
    /// Rule: at most this ratio (0..1) of the bytes the layers above the bottom one add
    /// wasted (dive's highestUserWastedPercent).
    #[arg(long, value_name = "RATIO", value_parser = ci_rules::ratio)]
    pub max_user_wasted: Option<f64>,
    /// A rules file: dive's `.dive-ci` (YAML, `rules:` lowestEfficiency,
    /// highestWastedBytes, highestUserWastedPercent) or `key = value` lines with the flags'
    /// names; flags win. Default in CI mode: ./.dive-ci when it exists.
    #[arg(long, value_name = "FILE")]
    pub ci_config: Option<PathBuf>,
}

pub fn run(a: InspectArgs) -> Result<i32> {
    let ci = a.ci;
    // In CI mode exit 1 means a rule broke: anything else that stops the check is 2.
    let ci_code = |r: Result<i32>| match r {
        Err(e) if ci => {
            eprintln!("layerfs: {}", super::one_line(&e));
            Ok(2)
        }
        r => r,
    };
    let rules = Rules::load(
        a.ci_config.as_deref(),
        Rules {
            max_wasted_bytes: a.max_wasted_bytes,
            max_wasted_percent: a.max_wasted_percent,
            min_efficiency: a.min_efficiency,
            max_user_wasted: a.max_user_wasted,
        },
        ci,
    );
    let rules = match rules {
        Ok(r) if ci && r == Rules::default() => Err(anyhow::anyhow!(
            "--ci needs a rule: --max-wasted-bytes, --max-wasted-percent, --min-efficiency, \
             --max-user-wasted, --ci-config or a .dive-ci file"
        )),
        r => r,
    };
    // A bad rule is bad input with or without --ci.
    let rules = match rules {
        Ok(r) => r,
        Err(e) => {
            eprintln!("layerfs: {}", super::one_line(&e));
            return Ok(2);
        }
    };
    let (named, _) = match a.source.spec(&a.args, 0) {
        Ok(n) => n,
        Err(e) => return ci_code(Err(e)),
    };
    let shown = a
        .source
        .common
        .reading(&[&named], || ci_code(show(&a, &named, &rules)));
    ci_code(shown)
}

fn show(a: &InspectArgs, named: &Named, rules: &Rules) -> Result<i32> {
    let name = a.args.first().map_or("the stack", String::as_str);
    let image = a.source.common.open(named, name)?;
    let manifests = a.source.common.manifests(&image)?;
    let (report, merged) = inspect::analyze(&image, &manifests, a.top);
    if a.merged {
        emit(&listing(&merged, a.json)?)?;
        return Ok(0);
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
                        "size": rec.filter(|r| r.kind == layerfs_image::source::Kind::File).map(|r| r.size),
                    })
                })
                .collect();
            emit(&(serde_json::to_string_pretty(&list)? + "\n"))?;
        } else {
            emit(&render::tree(&merged, layer, &opts))?;
        }
        return Ok(0);
    }
    if a.json {
        emit(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        emit(&render::table(&report))?;
    }
    if a.ci {
        if let Some(broken) = rules.check(&report) {
            eprintln!("layerfs: CI rule broken: {broken}");
            return Ok(1);
        }
        eprintln!("CI: all rules pass");
    }
    Ok(0)
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
                    "kind": layerfs_image::inspect::merge::shown_kind(r.kind).name(),
                    "mode": r.mode,
                    "uid": r.uid,
                    "gid": r.gid,
                    "size": r.size,
                    "rdev": r.rdev,
                    "blake3": r.hash.map(|h| h.hex()),
                    "link": r.link.as_ref().filter(|_| r.kind == layerfs_image::source::Kind::Symlink)
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
            if r.kind == layerfs_image::source::Kind::File {
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
