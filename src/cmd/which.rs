//! `layerfs which SOURCE PATH`: the layer that provides PATH, the copies it shadows, and
//! what hides a deleted path.

use anyhow::{bail, Result};
use clap::Args;

use super::image_source::SourceArgs;
use layerfs::image::inspect::merge;
use layerfs::image::manifest::human;
use layerfs::image::source::RelPath;
use layerfs::image::which::{self, Copy};

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

fn line(c: &Copy, image: &layerfs::image::source::Image) -> String {
    let mut s = format!(
        "layer {} ({}): {} mode {:o} owner {}:{}",
        c.layer, image.layers[c.layer].id, c.kind, c.mode, c.uid, c.gid
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

pub fn run(a: WhichArgs) -> Result<()> {
    let (spec, rest) = a.source.spec(&a.args, 1)?;
    let image = a.source.common.open(&spec)?;
    let manifests = a.source.common.manifests(&image)?;
    let merged = merge::merge(&manifests);
    let path = RelPath::parse(rest[0].as_bytes(), true)?;
    let w = which::which(&merged, &path, a.follow)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&w)?);
        return Ok(());
    }
    if w.resolved != w.path {
        println!("{} resolves to {}", w.path, w.resolved);
    }
    match &w.provided_by {
        Some(c) => println!("{}: {}", w.resolved, line(c, &image)),
        None => match &w.hidden_by {
            Some(h) => println!(
                "{}: deleted by layer {} ({}): {} at {}",
                w.resolved, h.layer, image.layers[h.layer].id, h.how, h.path
            ),
            None if w.shadowed.is_empty() => bail!("{}: in no layer of {}", w.resolved, image.name),
            None => println!("{}: not in the merged view", w.resolved),
        },
    }
    for c in &w.shadowed {
        println!("  shadows {}", line(c, &image));
    }
    Ok(())
}
