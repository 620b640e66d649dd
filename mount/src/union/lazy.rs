//! Lower layers whose file content arrives after the mount (lazy layers, see
//! docs/ARCHITECTURE.md "Lazy layers"): the tree of such a layer is complete on disk, each
//! regular file at its full size, but a file's bytes may not be there yet. Before a lower
//! file of a lazy layer is opened for its data or copied up, the core asks the layer's
//! [`LazyContent`] to make that file's content present; whatever fetches it (the image
//! tools, wired in by the binary) is behind the trait, so this crate never knows of
//! registries, blobs or tables of contents.
//!
//! A layer without a table of contents (a plain gzip or zstd tar) arrives whole, as one
//! stream: its names are only known once the stream has passed. Until then its tree is not
//! shown at all: the first lookup, listing or attribute read of the mount's root (which every
//! other directory's index descends from) waits for every such layer
//! ([`LazyContent::ensure_trees`]), or answers its error, so a name never appears late in a
//! directory already listed (docs/SEMANTICS.md, "Lazy layers").
//!
//! A stack with no lazy layer pays one `Option` check per open; a lazy stack one `bool`
//! per open of a file of a non-lazy layer.

use std::io;
use std::sync::Arc;

use crate::stack::LayerIdx;

/// Makes the content of files of lazy layers present.
pub trait LazyContent: Send + Sync {
    /// Returns once the file `path` (relative to the layer's root, no leading `/`) of lazy
    /// layer `layer` holds its whole content, or with the error to answer (EIO when its
    /// bytes cannot be fetched or do not match their digest). Called for any regular file
    /// of the layer; one that was never pending returns at once. Must not block forever.
    fn ensure(&self, layer: LayerIdx, path: &[u8]) -> io::Result<()>;

    /// Returns once every layer of the stack that arrives whole (no table of contents) is
    /// on disk, tree and content, or with the error to answer meanwhile (EIO when its
    /// stream failed after the bounded retry). Must not block forever. Called before the
    /// root's lower index is built and before the root's attributes are read; only when
    /// [`Lazy::whole`] says the stack has such a layer.
    fn ensure_trees(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Which layers of the stack are lazy, and what fills them.
pub struct Lazy {
    /// By [`LayerIdx`]: true for a lazy layer.
    pub layers: Vec<bool>,
    pub content: Arc<dyn LazyContent>,
    /// Some layer arrives whole: its tree is waited for ([`LazyContent::ensure_trees`]).
    pub whole: bool,
}

impl Lazy {
    /// Makes `path` of `layer` present if the layer is lazy.
    pub fn ensure(&self, layer: LayerIdx, path: &[u8]) -> io::Result<()> {
        if !self.layers.get(layer.0 as usize).copied().unwrap_or(false) {
            return Ok(());
        }
        let path = path.strip_prefix(b"/").unwrap_or(path);
        self.content.ensure(layer, path)
    }
}

impl super::Union {
    /// Fetches lower files of lazy layers before their data is read or copied up.
    pub fn set_lazy(&mut self, lazy: Lazy) {
        if lazy.whole {
            let content = Arc::clone(&lazy.content);
            self.lowers
                .set_gate(Arc::new(move || content.ensure_trees()));
        }
        self.lazy = Some(lazy);
    }

    /// For a stack with a layer that arrives whole: returns once its tree is there (or EIO).
    pub(super) fn ensure_trees(&self) -> crate::error::Result<()> {
        match &self.lazy {
            Some(l) if l.whole => l
                .content
                .ensure_trees()
                .map_err(crate::error::Error::io("lazy tree")),
            _ => Ok(()),
        }
    }

    /// For a file of a lazy layer: its content, made present (EIO if it cannot be).
    pub(super) fn ensure_lower(&self, le: &super::lower::LowerEntry) -> crate::error::Result<()> {
        let Some(lazy) = &self.lazy else {
            return Ok(());
        };
        let (layer, path) = le.parent.place_of(le.entry());
        lazy.ensure(layer, &path)
            .map_err(crate::error::Error::io("lazy content"))
    }
}
