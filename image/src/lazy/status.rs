//! How far a store layer is from whole (`layerfs lazy status`): read from its lazy record,
//! its done marks and, for a layer arriving whole, the progress its streaming process
//! writes; whether some process is fetching it now from its lock (held exclusively by a
//! whole layer's stream, shared by a background prefetch).

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::layer::read_record;
use super::whole::{self, Progress, LOCK, PROGRESS};
use crate::format::lazy::{self as mark, Source};
use crate::sys;

/// One layer's state.
#[derive(Debug, Clone, Serialize)]
pub struct LayerStatus {
    /// `zstd:chunked`, `estargz`, `gzip-whole`, `zstd-whole`, `tar-whole`, or `local` (a
    /// layer whose files are all on disk).
    pub form: String,
    /// `lazy` (some content not fetched, nobody fetching), `fetching`, or `whole`.
    pub state: &'static str,
    /// Bytes of the blob fetched into the layer (`None` for a local layer).
    pub bytes_fetched: Option<u64>,
    pub bytes_total: Option<u64>,
    /// Files with their content (for a layer arriving whole: tar entries unpacked so far).
    pub files_filled: Option<u64>,
    /// Files in all (unknown for a layer arriving whole until its stream has passed).
    pub files_total: Option<u64>,
}

/// The state of the store layer `layer_dir`.
pub fn of(layer_dir: &Path) -> Result<LayerStatus> {
    let whole_layer = LayerStatus {
        form: "local".into(),
        state: "whole",
        bytes_fetched: None,
        bytes_total: None,
        files_filled: None,
        files_total: None,
    };
    let Some(lazy_dir) = mark::dir_for(layer_dir) else {
        return Ok(whole_layer);
    };
    let Some(record) = read_record(&lazy_dir)? else {
        return Ok(whole_layer);
    };
    let busy = locked(&lazy_dir.join(LOCK));
    let total = match &record.source {
        Source::Registry { size, .. } => Some(*size),
        Source::File { path } => std::fs::metadata(path).ok().map(|m| m.len()),
    };
    let state = if busy { "fetching" } else { "lazy" };
    if whole::compression_of(&record.form).is_some() {
        // The progress a dead stream left means nothing: the next one starts again.
        let p: Progress = std::fs::read(lazy_dir.join(PROGRESS))
            .ok()
            .filter(|_| busy)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        return Ok(LayerStatus {
            form: record.form,
            state,
            bytes_fetched: Some(p.fetched),
            bytes_total: total,
            files_filled: Some(p.entries),
            files_total: None,
        });
    }
    let done = std::fs::read(lazy_dir.join(mark::DONE)).unwrap_or_default();
    let mut filled = vec![false; record.files.len()];
    for c in done.chunks_exact(4) {
        if let Some(s) = filled.get_mut(u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize) {
            *s = true;
        }
    }
    let mut ranges = HashSet::new();
    for (f, _) in record.files.iter().zip(&filled).filter(|(_, d)| **d) {
        for c in &f.chunks {
            ranges.insert((c.blob_offset, c.blob_end));
        }
    }
    Ok(LayerStatus {
        form: record.form,
        state,
        bytes_fetched: Some(ranges.iter().map(|(a, b)| b.saturating_sub(*a)).sum()),
        bytes_total: total,
        files_filled: Some(filled.iter().filter(|d| **d).count() as u64),
        files_total: Some(record.files.len() as u64),
    })
}

/// True when some process holds a lock on `path` (an exclusive one cannot be had now).
fn locked(path: &Path) -> bool {
    let Ok(f) = std::fs::OpenOptions::new().read(true).open(path) else {
        return false;
    };
    match sys::flock(f.as_fd(), libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => false,
        Err(e) => e.raw_os_error() == Some(libc::EWOULDBLOCK),
    }
}
