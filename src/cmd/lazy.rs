//! The wiring of lazy layers into a mount: the union core asks its `LazyContent` hook for a
//! lower file's content; the image tools' `LazyLayer` fetches it. The binary is the one
//! place that knows both (the mount crate never depends on the image crate).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use layerfs_image::lazy::layer::{open_any, AnyLazy};
use layerfs_mount::union::{Lazy, LazyContent};
use layerfs_mount::LayerIdx;

/// The lazy layers of a stack, by layer index.
pub struct LazyLayers(Vec<Option<AnyLazy>>);

impl LazyContent for LazyLayers {
    fn ensure(&self, layer: LayerIdx, path: &[u8]) -> io::Result<()> {
        match self.0.get(layer.0 as usize) {
            Some(Some(AnyLazy::Toc(l))) => l.ensure(path),
            // Its files are there once its tree is (the root's index waited for it).
            Some(Some(AnyLazy::Whole(w))) => w.wait(),
            _ => Ok(()),
        }
    }

    fn ensure_trees(&self) -> io::Result<()> {
        for l in self.0.iter().flatten() {
            if let AnyLazy::Whole(w) = l {
                w.wait()?;
            }
        }
        Ok(())
    }
}

impl LazyLayers {
    /// The lazy layers among `lowers` (top first, as the stack numbers them); `None` when
    /// there is none.
    pub fn find(lowers: &[PathBuf]) -> Result<Option<Arc<LazyLayers>>> {
        let mut found = Vec::with_capacity(lowers.len());
        for l in lowers {
            // podman gives layers as symlinks (`l/ID`); the record is found by the layer's
            // real path.
            let real = std::fs::canonicalize(l).unwrap_or_else(|_| l.clone());
            found.push(open_any(&real)?);
        }
        if found.iter().all(Option::is_none) {
            return Ok(None);
        }
        for (l, f) in lowers.iter().zip(&found) {
            match f {
                Some(AnyLazy::Toc(f)) => log::info!(
                    "{}: lazy, {} files not fetched yet",
                    l.display(),
                    f.pending()
                ),
                Some(AnyLazy::Whole(_)) => {
                    log::info!(
                        "{}: lazy, arriving whole (no table of contents)",
                        l.display()
                    )
                }
                None => {}
            }
        }
        Ok(Some(Arc::new(LazyLayers(found))))
    }

    /// The one-layer stack `layer_dir`'s lazy layer, its blob read over `blob` when the
    /// layer was made from that blob (`LazyLayer::open_for_blob`); `None` when the layer is
    /// not (or no longer) lazy.
    pub fn of_one(
        layer_dir: &std::path::Path,
        blob: &Arc<layerfs_image::lazy::remote::RegistrySource>,
    ) -> Result<Option<Arc<LazyLayers>>> {
        let Some(l) = layerfs_image::lazy::layer::LazyLayer::open_for_blob(layer_dir, blob)? else {
            return Ok(None);
        };
        log::info!(
            "{}: lazy, {} files not fetched yet",
            layer_dir.display(),
            l.pending()
        );
        Ok(Some(Arc::new(LazyLayers(vec![Some(AnyLazy::Toc(l))]))))
    }

    /// The hook for the union core.
    pub fn hook(self: &Arc<Self>) -> Lazy {
        Lazy {
            layers: self.0.iter().map(Option::is_some).collect(),
            content: Arc::clone(self) as Arc<dyn LazyContent>,
            whole: self.0.iter().any(|l| matches!(l, Some(AnyLazy::Whole(_)))),
        }
    }

    /// Starts the stream of each layer that arrives whole, and each other lazy layer's
    /// background prefetch unless `LAYERFS_LAZY_PREFETCH=0` (tests that count what a read
    /// fetches). Called in the daemon, after the fork.
    pub fn start_prefetch(&self) {
        let prefetch = std::env::var_os("LAYERFS_LAZY_PREFETCH").is_none_or(|v| v != "0");
        for l in self.0.iter().flatten() {
            match l {
                AnyLazy::Whole(w) => w.start(),
                AnyLazy::Toc(l) if prefetch => l.start_prefetch(),
                AnyLazy::Toc(_) => {}
            }
        }
    }
}
