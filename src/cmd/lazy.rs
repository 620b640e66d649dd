//! The wiring of lazy layers into a mount: the union core asks its `LazyContent` hook for a
//! lower file's content; the image tools' `LazyLayer` fetches it. The binary is the one
//! place that knows both (the mount crate never depends on the image crate).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use layerfs_image::lazy::LazyLayer;
use layerfs_mount::union::{Lazy, LazyContent};
use layerfs_mount::LayerIdx;

/// The lazy layers of a stack, by layer index.
pub struct LazyLayers(Vec<Option<Arc<LazyLayer>>>);

impl LazyContent for LazyLayers {
    fn ensure(&self, layer: LayerIdx, path: &[u8]) -> io::Result<()> {
        match self.0.get(layer.0 as usize) {
            Some(Some(l)) => l.ensure(path),
            _ => Ok(()),
        }
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
            found.push(LazyLayer::open(&real)?);
        }
        if found.iter().all(Option::is_none) {
            return Ok(None);
        }
        for (l, f) in lowers.iter().zip(&found) {
            if let Some(f) = f {
                log::info!(
                    "{}: lazy, {} files not fetched yet",
                    l.display(),
                    f.pending()
                );
            }
        }
        Ok(Some(Arc::new(LazyLayers(found))))
    }

    /// The one-layer stack `layer_dir`'s lazy layer, its blob read from `source`; `None`
    /// when the layer is not (or no longer) lazy.
    pub fn of_one(
        layer_dir: &std::path::Path,
        source: Arc<dyn layerfs_image::lazy::RangeSource>,
    ) -> Result<Option<Arc<LazyLayers>>> {
        if layerfs_image::lazy::layer::pending_files(layer_dir)?.is_none() {
            return Ok(None);
        }
        let l = match LazyLayer::open_with(layer_dir, source) {
            Ok(l) => l,
            // Filled since (by another process): an ordinary layer now.
            Err(_) if layerfs_image::lazy::layer::pending_files(layer_dir)?.is_none() => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        log::info!(
            "{}: lazy, {} files not fetched yet",
            layer_dir.display(),
            l.pending()
        );
        Ok(Some(Arc::new(LazyLayers(vec![Some(l)]))))
    }

    /// The hook for the union core.
    pub fn hook(self: &Arc<Self>) -> Lazy {
        Lazy {
            layers: self.0.iter().map(Option::is_some).collect(),
            content: Arc::clone(self) as Arc<dyn LazyContent>,
        }
    }

    /// Starts each layer's background prefetch, unless `LAYERFS_LAZY_PREFETCH=0` (tests
    /// that count what a read fetches). Called in the daemon, after the fork.
    pub fn start_prefetch(&self) {
        if std::env::var_os("LAYERFS_LAZY_PREFETCH").is_some_and(|v| v == "0") {
            return;
        }
        for l in self.0.iter().flatten() {
            l.start_prefetch();
        }
    }
}
