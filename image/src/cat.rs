//! `cat`: a file's bytes as one layer, or the merged view, has them.

use std::io::{self, Write};

use anyhow::{anyhow, bail, Context, Result};

use super::inspect::merge::Merged;
use super::manifest::Manifest;
use super::source::{Image, Kind, Location, RelPath};

/// Where the bytes of `path` are: (layer, the path holding the content in that layer).
pub fn locate(
    manifests: &[Manifest],
    merged: &Merged<'_>,
    layer: Option<usize>,
    path: &RelPath,
) -> Result<(usize, RelPath)> {
    let (li, rec) = match layer {
        Some(n) => {
            let m = manifests
                .get(n)
                .ok_or_else(|| anyhow!("no layer {n} (the image has {})", manifests.len()))?;
            (
                n,
                m.get(path)
                    .ok_or_else(|| anyhow!("{path}: not in layer {n}"))?,
            )
        }
        None => {
            let (o, r) = merged
                .lookup(path)
                .ok_or_else(|| anyhow!("{path}: not in the merged view"))?;
            (o.layer, r)
        }
    };
    match rec.kind {
        Kind::File => Ok((li, path.clone())),
        // The content is stored under the link's first name, in the same layer.
        Kind::HardLink => Ok((
            li,
            RelPath::from_normalised(rec.link.clone().unwrap_or_default()),
        )),
        Kind::Whiteout => bail!("{path}: deleted in layer {li} (a whiteout)"),
        Kind::Dir => bail!("{path}: a directory"),
        Kind::Symlink => bail!(
            "{path}: a symlink to {} (see `layerfs which --follow`)",
            String::from_utf8_lossy(rec.link.as_deref().unwrap_or_default())
        ),
        other => bail!("{path}: a {}, not a regular file", other.name()),
    }
}

/// Copies the content of `path` in layer `li` to `out`. For a tar layer the whole layer is
/// read (a tar has no index), so its digest is checked before this returns: a mismatch is
/// an error even though the bytes were already written.
pub fn copy_out(image: &Image, li: usize, path: &RelPath, out: &mut dyn Write) -> Result<u64> {
    let layer = &image.layers[li];
    match &layer.location {
        Location::Dir(_) => {
            let mut f = layer.open_file(path)?.expect("a directory layer");
            io::copy(&mut f, out).with_context(|| format!("reading {path}"))
        }
        Location::Blob(_) => {
            let mut copied = None;
            layer.walk(true, &mut |e, content| {
                if let (Some(r), true) = (content, e.path == *path) {
                    copied = Some(io::copy(r, out).with_context(|| format!("reading {path}"))?);
                }
                Ok(())
            })?;
            copied.ok_or_else(|| anyhow!("{path}: no content in layer {}", layer.id))
        }
    }
}
