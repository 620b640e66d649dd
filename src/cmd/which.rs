//! `layerfs which SOURCE PATH`: the layer that provides PATH, the copies it shadows, and
//! what hides a deleted path.

use anyhow::{bail, Result};
use clap::Args;

use super::image_source::{emit, Named, SourceArgs};
use layerfs_image::inspect::merge;
use layerfs_image::manifest::human;
use layerfs_image::source::RelPath;
use layerfs_image::which::{self, Copy, Which};
use std::fmt::Write as _;

#[derive(Args, Debug)]
pub struct WhichArgs {
    /// SOURCE (unless -o gives a stack) and the image path.
    #[arg(value_name = "SOURCE PATH", required = true)]
    pub args: Vec<String>,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Follow symlinks inside the image (absolute targets from the image root).
    #[arg(long, short = 'L')]
    pub follow: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One copy, naming its layer by position and id (`ids`: every layer's id, bottom first).
fn line(c: &Copy, ids: &[String]) -> String {
    let mut s = format!(
        "layer {} ({}): {} mode {:o} owner {}:{}",
        c.layer, ids[c.layer], c.kind, c.mode, c.uid, c.gid
    );
    if c.kind == "file" || c.kind == "hardlink" {
        s.push_str(&format!(" size {} ({} bytes)", human(c.size), c.size));
    }
    if let Some(h) = &c.blake3 {
        s.push_str(&format!(" blake3 {h}"));
    }
    if let Some(l) = &c.link {
        s.push_str(&format!(" -> {l}"));
    }
    s
}

pub fn run(a: WhichArgs) -> Result<i32> {
    let (named, rest) = a.source.spec(&a.args, 1)?;
    a.source
        .common
        .reading(&[&named], || show(&a, &named, &rest[0]).map(|()| 0))
}

fn show(a: &WhichArgs, named: &Named, path: &str) -> Result<()> {
    let name = a.args.first().map_or("the stack", String::as_str);
    let image = a.source.common.open(named, name)?;
    let manifests = a.source.common.manifests(&image)?;
    let merged = merge::merge(&manifests);
    let path = RelPath::parse(path.as_bytes(), true)?;
    let w = which::which(&merged, &path, a.follow)?;
    if a.json {
        return emit(&(serde_json::to_string_pretty(&w)? + "\n"));
    }
    let ids: Vec<String> = image.layers.iter().map(|l| l.id.clone()).collect();
    emit(&text(&w, &ids, &image.name)?)
}

/// The human answer (`explore` shows the same lines): `ids` are the layers' ids, bottom
/// first; `name` is the image's. An error for a path no layer has.
pub fn text(w: &Which, ids: &[String], name: &str) -> Result<String> {
    let mut out = String::new();
    if w.resolved != w.path {
        let _ = writeln!(out, "{} resolves to {}", w.path, w.resolved);
    }
    match &w.provided_by {
        Some(c) => {
            let _ = writeln!(out, "{}: {}", w.resolved, line(c, ids));
        }
        None => match &w.hidden_by {
            Some(h) => {
                let _ = writeln!(
                    out,
                    "{}: deleted by layer {} ({}): {} at {}",
                    w.resolved, h.layer, ids[h.layer], h.how, h.path
                );
            }
            None if w.shadowed.is_empty() => match &w.below_symlink {
                Some((link, target)) => bail!(
                    "{}: {link} is a symlink to {target} in the image (--follow / -L follows it)",
                    w.resolved
                ),
                None => bail!("{}: in no layer of {name}", w.resolved),
            },
            None => {
                let _ = writeln!(out, "{}: not in the merged view", w.resolved);
            }
        },
    }
    for c in &w.shadowed {
        let _ = writeln!(out, "  shadows {}", line(c, ids));
    }
    Ok(out)
}
