//! `layerfs cat SOURCE [--layer N] PATH`: a file's bytes as a layer (or the merged view)
//! has them.

use anyhow::Result;
use clap::Args;

use super::image_source::{Named, SourceArgs};
use layerfs_image::inspect::merge;
use layerfs_image::source::RelPath;
use layerfs_image::{cat, which};

#[derive(Args, Debug)]
pub struct CatArgs {
    /// SOURCE (unless -o gives a stack) and the image path.
    #[arg(value_name = "SOURCE PATH", required = true)]
    pub args: Vec<String>,
    #[command(flatten)]
    pub source: SourceArgs,
    /// The layer (0 = bottom) whose copy to print, instead of the merged view's.
    #[arg(long, value_name = "N")]
    pub layer: Option<usize>,
    /// Follow symlinks inside the image (merged view only).
    #[arg(long, short = 'L', conflicts_with = "layer")]
    pub follow: bool,
}

pub fn run(a: CatArgs) -> Result<i32> {
    let (named, rest) = a.source.spec(&a.args, 1)?;
    a.source
        .common
        .reading(&[&named], || show(&a, &named, &rest[0]).map(|()| 0))
}

fn show(a: &CatArgs, named: &Named, path: &str) -> Result<()> {
    let name = a.args.first().map_or("the stack", String::as_str);
    let image = a.source.common.open(named, name)?;
    let manifests = a.source.common.manifests(&image)?;
    let merged = merge::merge(&manifests);
    let path = which::resolve(&merged, &RelPath::parse(path.as_bytes(), true)?, a.follow)?;
    let (layer, at) = cat::locate(&manifests, &merged, a.layer, &path)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cat::copy_out(&image, layer, &at, &mut out) {
        // The reader went away (`| head`): not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(())
        }
        other => other.map(|_| ()),
    }
}
