//! `layerfs explore SOURCE`: dive's two-pane view of an image (layers beside the selected
//! layer's tree, A/M/D marks, collapse, filter, waste), drawn with ratatui on crossterm,
//! plus `which` and a file preview for the selected path.
//!
//! - model.rs: the state and every behaviour, tested without a terminal;
//! - tree.rs: a layer's tree from the manifests (the merge `inspect` uses);
//! - keys.rs: keys to actions (dive's bindings);
//! - view.rs: drawing (tested on ratatui's TestBackend).
//!
//! The view stands on the layer manifests (from the cache after the first run, with
//! `inspect`'s progress bar while they are built), never on the tars: only a preview reads
//! a file's bytes.

pub mod diff;
pub mod keys;
pub mod model;
pub mod tree;
pub mod view;

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use ratatui::crossterm::event::{self, Event, KeyEventKind};

use super::image_source::{Named, SourceArgs};
use layerfs_image::cat;
use layerfs_image::inspect::{self, merge};
use layerfs_image::manifest::Manifest;
use layerfs_image::source::{Image, RelPath};
use model::{Model, Request};

#[derive(Args, Debug)]
pub struct ExploreArgs {
    /// SOURCE (unless -o gives a stack): any source `inspect` takes.
    #[arg(value_name = "SOURCE")]
    pub args: Vec<String>,
    #[command(flatten)]
    pub source: SourceArgs,
    /// A second source to compare with, side by side (`d` shows it).
    #[arg(long, value_name = "SOURCE")]
    pub diff: Option<String>,
}

/// Bytes of a file a preview shows.
const PREVIEW_BYTES: usize = 64 << 10;

/// Keeps the first [`PREVIEW_BYTES`] written and counts the rest.
struct Head {
    buf: Vec<u8>,
}

impl Write for Head {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let room = PREVIEW_BYTES.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&b[..room.min(b.len())]);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The first bytes of `path` as layer `layer` stores it, and its size.
fn preview(
    image: &Image,
    manifests: &[Manifest],
    layer: usize,
    path: &RelPath,
) -> Result<(Vec<u8>, u64)> {
    let merged = merge::merge(manifests);
    let (li, at) = cat::locate(manifests, &merged, Some(layer), path)?;
    let mut head = Head { buf: Vec::new() };
    let total = cat::copy_out(image, li, &at, &mut head)?;
    Ok((head.buf, total))
}

pub fn run(a: ExploreArgs) -> Result<()> {
    let (named, _) = a.source.spec(&a.args, 0)?;
    if !std::io::stdout().is_terminal() {
        bail!("explore needs a terminal (`layerfs inspect` prints the same numbers)");
    }
    let other = a
        .diff
        .as_deref()
        .map(|b| a.source.common.resolve(b))
        .transpose()?;
    let sources: Vec<&Named> = std::iter::once(&named).chain(other.as_ref()).collect();
    a.source
        .common
        .reading(&sources, || explore(&a, &named, other.as_ref()).map(|()| 0))
        .map(|_| ())
}

/// The view itself, where every source can be read (rootless store images: inside the
/// store owner's user namespace, `CommonArgs::reading`).
fn explore(a: &ExploreArgs, named: &Named, other: Option<&Named>) -> Result<()> {
    let name = a.args.first().map_or("the stack", String::as_str);
    let image = a.source.common.open(named, name)?;
    let manifests = a.source.common.manifests(&image)?;
    let (report, _) = inspect::analyze(&image, &manifests, usize::MAX);
    let other = match (other, &a.diff) {
        (Some(nb), Some(b)) => {
            let ib = a.source.common.open(nb, b)?;
            let mb = a.source.common.manifests(&ib)?;
            Some((ib.name, mb))
        }
        _ => None,
    };
    let diff = other.as_ref().map(|(name, mb)| {
        diff::DiffModel::new(
            image.name.clone(),
            name.clone(),
            &merge::merge(&manifests),
            &merge::merge(mb),
        )
    });
    let mut model = Model::new(image.name.clone(), manifests, &report);
    model.diff = diff;
    let mut terminal = ratatui::init();
    let res = event_loop(&mut terminal, &mut model, &image);
    ratatui::restore();
    res
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    model: &mut Model,
    image: &Image,
) -> Result<()> {
    loop {
        model.settle();
        terminal.draw(|f| view::draw(f, model))?;
        // Act on the next event and on every one already waiting (keys typed ahead, a held
        // arrow), then build the selected layer's tree once and draw.
        let mut ev = event::read()?;
        loop {
            if let Event::Key(key) = ev {
                if key.kind == KeyEventKind::Press {
                    match model.act(keys::action(model, key)) {
                        None => {}
                        Some(Request::Quit) => return Ok(()),
                        Some(Request::Preview { layer, path }) => {
                            match preview(image, model.manifests(), layer, &path) {
                                Ok((head, total)) => model.show_preview(layer, &path, &head, total),
                                Err(e) => model.show_error(path.to_string(), &e),
                            }
                        }
                    }
                }
            }
            // Anything else (a resize) only needs a new drawing.
            if !event::poll(Duration::ZERO)? {
                break;
            }
            ev = event::read()?;
        }
    }
}
