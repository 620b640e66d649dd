//! The layer cache, as buildah's `--layers`: a step's key is its parent's key, the
//! instruction as it will run (after substitution), the state it runs in (env, user,
//! workdir, shell, build args) and, for COPY/ADD, the digest of what it reads. A key maps to
//! the layer it made (`STORE/build-cache/<hex>.json`); the entry counts only while that
//! layer is in the store (an `rmi` that removed it leaves a stale entry, ignored).

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use layerfs_image::store::{digest_hex, HistoryEntry, LayerRecord, Store};

/// What a cached step made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub layer: LayerRecord,
    pub history: HistoryEntry,
}

pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn open(store: &Store) -> Result<Cache> {
        let dir = store.root().join("build-cache");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Cache { dir })
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        Ok(self.dir.join(format!("{}.json", digest_hex(key)?)))
    }

    /// The entry for `key` whose layer is still in the store.
    pub fn get(&self, store: &Store, key: &str) -> Option<Entry> {
        let text = std::fs::read(self.path(key).ok()?).ok()?;
        let e: Entry = serde_json::from_slice(&text).ok()?;
        store.has_layer(&e.layer.diff_id).then_some(e)
    }

    /// Records an entry (atomically, by rename).
    pub fn put(&self, key: &str, entry: &Entry) -> Result<()> {
        let path = self.path(key)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(entry)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// The key of a step: sha256 over the parent's key and the step's parts, each
/// length-prefixed (so no two lists of parts run together the same way).
pub fn key(parent: &str, parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    h.update(parent.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    format!("sha256:{:x}", h.finalize())
}
