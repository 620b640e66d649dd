//! `layerfs diff A [B]`: what changed from source A to source B, as `podman diff` prints
//! it (A added, C changed, D deleted), with sizes and content-vs-metadata.

use anyhow::{bail, Result};
use clap::Args;

use super::image_source::{emit, CommonArgs, Named};
use layerfs_image::diff;
use layerfs_image::inspect::merge;
use layerfs_image::manifest::human;
use layerfs_image::source::Spec;

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The old source.
    #[arg(value_name = "A")]
    pub a: String,
    /// The new source. Without it, A must be a stack with an upperdir: the upper is
    /// compared with its lowers.
    #[arg(value_name = "B")]
    pub b: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: DiffArgs) -> Result<i32> {
    let (sa, sb) = match &a.b {
        Some(b) => (a.common.resolve(&a.a)?, a.common.resolve(b)?),
        None => match a.common.resolve(&a.a)? {
            Named::Source(Spec::Stack {
                lowers,
                upper: Some(u),
            }) => (
                Named::Source(Spec::Stack {
                    lowers: lowers.clone(),
                    upper: None,
                }),
                Named::Source(Spec::Stack {
                    lowers,
                    upper: Some(u),
                }),
            ),
            _ => bail!(
                "diff with one source needs a stack with an upperdir (lowerdir=...,upperdir=U)"
            ),
        },
    };
    a.common
        .reading(&[&sa, &sb], || show(&a, &sa, &sb).map(|()| 0))
}

fn show(a: &DiffArgs, sa: &Named, sb: &Named) -> Result<()> {
    let nb = a.b.as_deref().unwrap_or(&a.a);
    let (ia, ib) = (a.common.open(sa, &a.a)?, a.common.open(sb, nb)?);
    let (ma, mb) = (a.common.manifests(&ia)?, a.common.manifests(&ib)?);
    let (va, vb) = (merge::merge(&ma), merge::merge(&mb));
    let mut changes = diff::diff(&va, &vb);
    // A store image imported rootless lacks the device nodes its layers have: not a
    // deletion by any layer, so said as what it is.
    let (skipped_a, skipped_b) = (skipped_devices(sa), skipped_devices(sb));
    for c in &mut changes {
        let skipped = match c.change {
            'D' => &skipped_b,
            'A' => &skipped_a,
            _ => continue,
        };
        if skipped.contains(&c.path) {
            c.note = Some("a device node the rootless import could not create in the store");
        }
    }
    if a.json {
        return emit(&(serde_json::to_string_pretty(&changes)? + "\n"));
    }
    let mut out = String::new();
    for c in &changes {
        let sizes = match (c.size_a, c.size_b) {
            (Some(x), Some(y)) if x != y => format!("{} -> {}", human(x), human(y)),
            (Some(x), Some(_)) => human(x),
            (Some(x), None) | (None, Some(x)) => human(x),
            (None, None) => String::new(),
        };
        let what = match c.content_changed {
            Some(true) => "content",
            Some(false) => "metadata",
            None => "",
        };
        let line = format!(
            "{} {}  {:<9} {:>10} {}",
            c.change, c.path, c.kind, sizes, what
        );
        match c.note {
            Some(n) => out.push_str(&format!("{}  ({n})\n", line.trim_end())),
            None => out.push_str(&format!("{line}\n")),
        }
    }
    emit(&out)
}

/// The device nodes a rootless import left out of a store image's layers.
fn skipped_devices(n: &Named) -> std::collections::HashSet<String> {
    match n {
        Named::Store { record, .. } => record
            .layers
            .iter()
            .flat_map(|l| l.skipped_devices.iter().cloned())
            .collect(),
        Named::Source(_) => Default::default(),
    }
}
