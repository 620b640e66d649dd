//! What a `-o verify` mount checks lower files against: each layer's hash list
//! ([`layerfs_base::verity`]), a file hashed on its first open and refused (EIO, logged with
//! the layer and path) when it does not match.

use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use dashmap::DashMap;
use layerfs_base::verity::{hash_fd, HashList};

use crate::error::Error;
use crate::stack::LayerIdx;

/// What a `-o verify` mount checks lower files against: each layer's list, and the files
/// already found intact (lower files never change, so each is hashed once a mount).
#[derive(Debug)]
pub struct Verifier {
    /// By [`LayerIdx`]: the layer's directory (for messages) and its list.
    layers: Vec<(PathBuf, HashList)>,
    /// (device, inode) of lower files that matched.
    good: DashMap<(u64, u64), ()>,
}

impl Verifier {
    /// Loads the list of every layer (top first, as the stack numbers them; a symlink to
    /// a layer, as podman gives them, is resolved first). A layer without one cannot be
    /// verified: the mount is refused, naming it.
    pub fn load(layers: &[PathBuf]) -> Result<Verifier, String> {
        let mut v = Vec::with_capacity(layers.len());
        for dir in layers {
            let dir = &std::fs::canonicalize(dir)
                .map_err(|e| format!("-o verify: layer {}: {e}", dir.display()))?;
            match HashList::load(dir) {
                Ok(Some(list)) => v.push((dir.clone(), list)),
                Ok(None) => {
                    return Err(format!(
                        "-o verify: layer {} has no hash list ({}); only layers imported \
                         into a store have one",
                        dir.display(),
                        HashList::path_for(dir).display()
                    ))
                }
                Err(e) => return Err(format!("-o verify: layer {}: {e}", dir.display())),
            }
        }
        Ok(Verifier {
            layers: v,
            good: DashMap::new(),
        })
    }

    /// True for a lower file (device, inode) found intact before.
    pub fn known_good(&self, dev: u64, ino: u64) -> bool {
        self.good.contains_key(&(dev, ino))
    }

    /// Checks the lower file open as `fd` (`key`: its device and inode), at `path` in
    /// layer `layer`.
    pub fn check(
        &self,
        layer: LayerIdx,
        path: &[u8],
        key: (u64, u64),
        fd: BorrowedFd<'_>,
    ) -> Result<(), Error> {
        let (dir, list) = self
            .layers
            .get(layer.0 as usize)
            .ok_or(Error::Bug("verify: a layer index past the stack"))?;
        let corrupt = |why: &str| Error::Corrupt {
            layer: dir.display().to_string(),
            path: String::from_utf8_lossy(path).into_owned(),
            why: why.to_string(),
        };
        let want = list
            .get(path)
            .ok_or_else(|| corrupt("not in the layer's hash list"))?;
        let got = hash_fd(fd).map_err(Error::io("verify: reading"))?;
        if &got != want {
            return Err(corrupt("content does not match the layer's hash list"));
        }
        self.good.insert(key, ());
        Ok(())
    }
}
