//! `layerfs verify`: layers hashed again and compared with what they should hold.
//!
//! - A store layer (a directory with a hash list, [`crate::verity`]) is walked and every
//!   regular file hashed (in parallel, as manifests are built); a file whose blake3 differs
//!   from the list, one the list has and the layer lacks, and one the layer has and the list
//!   lacks are each named.
//! - A blob layer (OCI layouts, archives) is streamed again: its blob digest and diff_id are
//!   checked on the way (`source`), and each file's blake3 is compared with the cached
//!   manifest's, when there is one.
//! - A directory layer with no hash list has nothing to be checked against: reported as
//!   unverifiable, not as a failure.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::manifest::{self, Cache, Manifest, Progress};
use super::source::{Image, Layer, Limits, Location};
use crate::verity::HashList;

/// What is wrong with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Problem {
    /// Its content's hash differs from the reference.
    Modified,
    /// The reference has it, the layer does not (or it is no longer a regular file).
    Missing,
    /// The layer has it, the reference does not.
    Added,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileProblem {
    /// `/a/b`, as the tools write image paths.
    pub path: String,
    pub problem: Problem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every check passed.
    Ok,
    /// Files differ (listed).
    Differs,
    /// The layer could not be read to its end, or a digest did not match.
    Error,
    /// Nothing to check it against (a directory layer without a hash list).
    Unverifiable,
}

/// One layer's result.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// The layer's id (digest, diff_id or directory).
    pub layer: String,
    pub status: Status,
    /// Regular files hashed.
    pub files: usize,
    /// What it was checked against: `hash list`, `digests`, `digests + manifest`.
    pub against: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub problems: Vec<FileProblem>,
}

impl LayerReport {
    fn new(layer: &str, against: &'static str) -> LayerReport {
        LayerReport {
            layer: layer.to_string(),
            status: Status::Ok,
            files: 0,
            against,
            error: None,
            problems: Vec::new(),
        }
    }

    fn failed(mut self, e: anyhow::Error) -> LayerReport {
        self.status = Status::Error;
        self.error = Some(format!("{e:#}"));
        self
    }

    /// True when the layer passed or could not be checked.
    pub fn passed(&self) -> bool {
        matches!(self.status, Status::Ok | Status::Unverifiable)
    }
}

/// The regular files (and hard links) of a manifest with their hashes.
fn hashed(m: &Manifest) -> impl Iterator<Item = (&[u8], &[u8; 32])> {
    m.records
        .iter()
        .filter_map(|r| Some((r.path.as_bytes(), &r.hash.as_ref()?.0)))
}

/// Compares the freshly built `fresh` with the reference `want` (path -> hash).
fn compare<'a>(
    mut report: LayerReport,
    fresh: &Manifest,
    want: impl Iterator<Item = (&'a [u8], &'a [u8; 32])>,
) -> LayerReport {
    let mut seen = HashSet::new();
    for (path, hash) in want {
        seen.insert(path.to_vec());
        let problem = match fresh.get(&super::source::RelPath::from_normalised(path.to_vec())) {
            Some(r) => match &r.hash {
                Some(h) if &h.0 == hash => continue,
                Some(_) => Problem::Modified,
                None => Problem::Missing,
            },
            None => Problem::Missing,
        };
        report.problems.push(FileProblem {
            path: format!("/{}", String::from_utf8_lossy(path)),
            problem,
        });
    }
    for (path, _) in hashed(fresh) {
        report.files += 1;
        if !seen.contains(path) {
            report.problems.push(FileProblem {
                path: format!("/{}", String::from_utf8_lossy(path)),
                problem: Problem::Added,
            });
        }
    }
    report.problems.sort_by(|a, b| a.path.cmp(&b.path));
    if !report.problems.is_empty() {
        report.status = Status::Differs;
    }
    report
}

/// A layer directory against its hash list.
pub fn dir_layer(id: &str, dir: &Path, progress: &Progress) -> LayerReport {
    let list = match HashList::load(dir) {
        Ok(Some(l)) => l,
        Ok(None) => {
            progress.layer_done();
            let mut r = LayerReport::new(id, "nothing");
            r.status = Status::Unverifiable;
            r.error = Some(format!(
                "no hash list ({} is missing)",
                HashList::path_for(dir).display()
            ));
            return r;
        }
        Err(e) => return LayerReport::new(id, "hash list").failed(e.into()),
    };
    let layer = Layer::of_dir(id.to_string(), dir);
    match manifest::build(&layer, Limits::default(), None, progress) {
        Ok(fresh) => {
            let want = list.sorted();
            compare(LayerReport::new(id, "hash list"), &fresh, want.into_iter())
        }
        Err(e) => LayerReport::new(id, "hash list").failed(e),
    }
}

/// Every layer of an image (bottom first).
pub fn image(image: &Image, cache: &Cache, progress: &Progress) -> Vec<LayerReport> {
    image
        .layers
        .iter()
        .map(|layer| match &layer.location {
            Location::Dir(d) => dir_layer(&layer.id, d, progress),
            Location::Blob(_) => {
                let reference = cache.load(layer);
                let against = if reference.is_some() {
                    "digests + manifest"
                } else {
                    "digests"
                };
                match manifest::build(layer, image.limits, None, progress) {
                    Ok(fresh) => match &reference {
                        Some(m) => compare(LayerReport::new(&layer.id, against), &fresh, hashed(m)),
                        None => {
                            cache.store(layer, &fresh);
                            let mut r = LayerReport::new(&layer.id, against);
                            r.files = hashed(&fresh).count();
                            r
                        }
                    },
                    Err(e) => LayerReport::new(&layer.id, against).failed(e),
                }
            }
        })
        .collect()
}

/// Builds the hash list of a layer directory just unpacked (the store calls this before
/// publishing a layer).
pub fn hash_list_of(dir: &Path) -> Result<HashList> {
    let layer = Layer::of_dir(dir.display().to_string(), dir);
    let m = manifest::build(&layer, Limits::default(), None, &Progress::hidden())?;
    let mut list = HashList::default();
    for (p, h) in hashed(&m) {
        list.insert(p, *h);
    }
    Ok(list)
}
