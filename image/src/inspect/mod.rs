//! `inspect`: per-layer changes and the wasted-bytes accounting over layer manifests.
//!
//! Definitions (docs/LAYER-TOOLS.md has the long form):
//! - a layer *adds* a path absent from the merged view below it, *modifies* one present
//!   (content, kind, mode, owner, xattrs or target differ; a directory merely re-listed is
//!   no change), *deletes* one present below and absent after it (whiteouts, opaque
//!   directories, a directory replaced by a file: every path of the hidden subtree counts);
//! - *bytes added*: the file content a layer stores (a hard link's second name stores none);
//! - *bytes wasted* by a layer: the content of its files that the final merged view does not
//!   show (hidden by a later override or deletion). The visible copy is never counted, and
//!   a file still visible through another hard-link name is not wasted. It is exactly what
//!   squashing the image would reclaim;
//! - *duplicates*: content (blake3, non-empty) stored in more than one layer;
//! - *image bytes*: all file content stored across layers; *merged bytes*: the content the
//!   merged view shows (each hard-linked file once); *efficiency* = merged / image bytes.

pub mod merge;
pub mod render;

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::manifest::{Hash, Manifest};
use super::source::{Image, Kind};
pub use merge::{merge, Change, Merged, Origin};

/// Version of the JSON document `inspect --json` prints.
pub const SCHEMA: &str = "layerfs.inspect/v1";

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub source: String,
    pub layers: Vec<LayerReport>,
    pub totals: Totals,
    /// The largest wasted files, biggest first (`--top N`).
    pub wasted: Vec<WastedPath>,
    /// Content stored in more than one layer, most bytes first (`--top N`).
    pub duplicates: Vec<Duplicate>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// Position, bottom = 0.
    pub index: usize,
    pub id: String,
    pub digest: Option<String>,
    pub diff_id: Option<String>,
    pub media_type: Option<String>,
    /// Bytes of the blob as stored (compressed), when the source has blobs.
    pub blob_size: Option<u64>,
    pub created_by: Option<String>,
    /// The history entry's comment (`commit -m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Entries the layer holds (whiteouts included, the root excluded).
    pub entries: usize,
    pub added: usize,
    pub modified: usize,
    pub deleted: usize,
    pub bytes_added: u64,
    pub bytes_wasted: u64,
    pub files_wasted: usize,
    pub duplicate_files: usize,
    pub duplicate_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub layers: usize,
    pub image_bytes: u64,
    pub merged_bytes: u64,
    pub merged_entries: usize,
    pub reclaimable_bytes: u64,
    pub reclaimable_percent: f64,
    pub efficiency: f64,
    /// Bytes of every copy but one of content stored in several layers.
    pub duplicate_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WastedPath {
    pub path: String,
    pub layer: usize,
    pub size: u64,
    /// The layer that hid it.
    pub hidden_by: usize,
    /// `deleted` (whiteout, opaque dir) or `overwritten`.
    pub how: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Duplicate {
    pub blake3: String,
    pub size: u64,
    /// Every copy: (layer, path).
    pub copies: Vec<(usize, String)>,
}

/// Bytes a visible name stands for, hard-link groups counted once.
fn group_key(o: Origin, m: &Manifest) -> Option<(usize, u32)> {
    m.records[o.idx].link_group.map(|g| (o.layer, g))
}

/// Computes the report. `top` bounds the wasted and duplicate lists.
pub fn analyze<'m>(image: &Image, manifests: &'m [Manifest], top: usize) -> (Report, Merged<'m>) {
    let merged = merge(manifests);
    // Sizes of hard-link groups (the size of the group's first name, a regular file).
    let mut group_size: HashMap<(usize, u32), u64> = HashMap::new();
    for (li, m) in manifests.iter().enumerate() {
        for r in &m.records {
            if let (Kind::File, Some(g)) = (r.kind, r.link_group) {
                group_size.insert((li, g), r.size);
            }
        }
    }
    let visible: HashSet<Origin> = merged.view.values().copied().collect();
    let mut visible_groups: HashSet<(usize, u32)> = HashSet::new();
    let mut merged_bytes = 0u64;
    for &o in merged.view.values() {
        let r = merged.record(o);
        match group_key(o, &manifests[o.layer]) {
            Some(k) if matches!(r.kind, Kind::File | Kind::HardLink) => {
                // Each hard-linked file once, whichever of its names shows.
                let first = visible_groups.insert(k);
                merged_bytes += if first {
                    group_size.get(&k).copied().unwrap_or(r.size)
                } else {
                    0
                };
            }
            _ if r.kind == Kind::File => merged_bytes += r.size,
            _ => {}
        }
    }
    let mut wasted = Vec::new();
    let mut layers = Vec::new();
    let mut by_hash: HashMap<Hash, Vec<(usize, usize)>> = HashMap::new();
    for (li, m) in manifests.iter().enumerate() {
        let (mut bytes_added, mut bytes_wasted, mut files_wasted) = (0, 0, 0);
        for (idx, r) in m.records.iter().enumerate() {
            if r.kind != Kind::File {
                continue;
            }
            bytes_added += r.size;
            if let (Some(h), true) = (r.hash, r.size > 0) {
                by_hash.entry(h).or_default().push((li, idx));
            }
            let o = Origin { layer: li, idx };
            let shown = visible.contains(&o)
                || group_key(o, m).is_some_and(|k| visible_groups.contains(&k));
            if !shown {
                bytes_wasted += r.size;
                files_wasted += 1;
                let h = merged.hidden.get(&o).copied();
                wasted.push(WastedPath {
                    path: r.path.to_string(),
                    layer: li,
                    size: r.size,
                    hidden_by: h.map_or(li, |h| h.by),
                    how: if h.is_some_and(|h| !h.deleted) {
                        "overwritten"
                    } else {
                        "deleted"
                    },
                });
            }
        }
        let lc = &merged.changes[li];
        let count = |c: Change| lc.values().filter(|v| v.0 == c).count();
        let layer = &image.layers[li];
        layers.push(LayerReport {
            index: li,
            id: layer.id.clone(),
            digest: layer.digest.as_ref().map(ToString::to_string),
            diff_id: layer.diff_id.as_ref().map(ToString::to_string),
            media_type: layer.media_type.clone(),
            blob_size: layer.size.filter(|_| layer.dir().is_none()),
            created_by: layer.created_by.clone(),
            comment: layer.comment.clone(),
            entries: m.records.iter().filter(|r| !r.path.is_root()).count(),
            added: count(Change::Added),
            modified: count(Change::Modified),
            deleted: count(Change::Deleted),
            bytes_added,
            bytes_wasted,
            files_wasted,
            duplicate_files: 0,
            duplicate_bytes: 0,
        });
    }
    let mut duplicates = Vec::new();
    let mut duplicate_bytes = 0;
    for (h, copies) in &by_hash {
        let distinct: HashSet<usize> = copies.iter().map(|c| c.0).collect();
        if distinct.len() < 2 {
            continue;
        }
        let size = manifests[copies[0].0].records[copies[0].1].size;
        duplicate_bytes += size * (copies.len() as u64 - 1);
        for &(li, _) in copies {
            layers[li].duplicate_files += 1;
            layers[li].duplicate_bytes += size;
        }
        let mut list: Vec<(usize, String)> = copies
            .iter()
            .map(|&(li, idx)| (li, manifests[li].records[idx].path.to_string()))
            .collect();
        list.sort();
        duplicates.push(Duplicate {
            blake3: h.hex(),
            size,
            copies: list,
        });
    }
    duplicates.sort_by(|a, b| {
        (b.size * b.copies.len() as u64)
            .cmp(&(a.size * a.copies.len() as u64))
            .then(a.blake3.cmp(&b.blake3))
    });
    duplicates.truncate(top);
    wasted.sort_by(|a, b| {
        b.size
            .cmp(&a.size)
            .then(a.layer.cmp(&b.layer))
            .then(a.path.cmp(&b.path))
    });
    let image_bytes: u64 = layers.iter().map(|l| l.bytes_added).sum();
    let reclaimable: u64 = layers.iter().map(|l| l.bytes_wasted).sum();
    wasted.truncate(top);
    let totals = Totals {
        layers: layers.len(),
        image_bytes,
        merged_bytes,
        merged_entries: merged.view.keys().filter(|k| !k.is_root()).count(),
        reclaimable_bytes: reclaimable,
        reclaimable_percent: if image_bytes == 0 {
            0.0
        } else {
            reclaimable as f64 * 100.0 / image_bytes as f64
        },
        efficiency: if image_bytes == 0 {
            1.0
        } else {
            merged_bytes as f64 / image_bytes as f64
        },
        duplicate_bytes,
    };
    (
        Report {
            schema: SCHEMA,
            source: image.name.clone(),
            layers,
            totals,
            wasted,
            duplicates,
        },
        merged,
    )
}
