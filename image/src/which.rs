//! `which`: where a path of the merged view comes from, what it shadows, and what hides a
//! deleted path.

use serde::Serialize;

use super::inspect::merge::Merged;
use super::manifest::{Manifest, Record};
use super::source::{Kind, RelPath};
use anyhow::{bail, Result};

/// Symlinks followed before giving up (the kernel's limit).
const MAX_HOPS: usize = 40;

/// One copy of a path in one layer.
#[derive(Debug, Clone, Serialize)]
pub struct Copy {
    pub layer: usize,
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub blake3: Option<String>,
    pub link: Option<String>,
}

impl Copy {
    fn of(layer: usize, r: &Record) -> Copy {
        Copy {
            layer,
            kind: r.kind.name(),
            mode: r.mode,
            uid: r.uid,
            gid: r.gid,
            size: r.size,
            blake3: r.hash.map(|h| h.hex()),
            link: r
                .link
                .as_ref()
                .map(|l| String::from_utf8_lossy(l).into_owned()),
        }
    }
}

/// What hides a path that is not in the merged view.
#[derive(Debug, Clone, Serialize)]
pub struct HiddenBy {
    pub layer: usize,
    /// The path that carries the mark (the path itself or an ancestor).
    pub path: String,
    /// `whiteout`, `opaque directory`, `replaced by a non-directory`, `redirected directory`.
    pub how: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Which {
    /// The path asked for, and (with symlinks followed) the path resolved.
    pub path: String,
    pub resolved: String,
    /// The copy the merged view shows, if any.
    pub provided_by: Option<Copy>,
    /// Every other copy in the layers, top first (shadowed or hidden).
    pub shadowed: Vec<Copy>,
    /// For a path the merged view does not show: what hides it.
    pub hidden_by: Option<HiddenBy>,
    /// For a path below a symlink of the merged view (not followed): that symlink and its
    /// target, e.g. `/bin` → `usr/bin` in a merged-/usr image.
    pub below_symlink: Option<(String, String)>,
}

/// Resolves `path` in the merged view, following symlinks inside the image when `follow`
/// (absolute targets from the image root, never the host's).
pub fn resolve(merged: &Merged<'_>, path: &RelPath, follow: bool) -> Result<RelPath> {
    if !follow {
        return Ok(path.clone());
    }
    let mut todo: Vec<Vec<u8>> = path
        .as_bytes()
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    todo.reverse();
    let mut cur: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.as_slice() {
            b"." => continue,
            b".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        cur.push(c);
        let here = RelPath::from_normalised(cur.join(&b'/'));
        if let Some((_, r)) = merged.lookup(&here) {
            if r.kind == Kind::Symlink {
                hops += 1;
                if hops > MAX_HOPS {
                    bail!("{path}: more than {MAX_HOPS} symlinks");
                }
                let target = r.link.clone().unwrap_or_default();
                cur.pop();
                if target.starts_with(b"/") {
                    cur.clear();
                }
                let mut parts: Vec<Vec<u8>> = target
                    .split(|&b| b == b'/')
                    .filter(|c| !c.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect();
                parts.reverse();
                todo.extend(parts);
            }
        }
    }
    Ok(RelPath::from_normalised(cur.join(&b'/')))
}

/// Answers `which` for `path`.
pub fn which(merged: &Merged<'_>, path: &RelPath, follow: bool) -> Result<Which> {
    let resolved = resolve(merged, path, follow)?;
    let ms: &[Manifest] = merged.manifests;
    let shown = merged.lookup(&resolved);
    let mut shadowed = Vec::new();
    for (li, m) in ms.iter().enumerate().rev() {
        if let Some(r) = m.get(&resolved) {
            if r.kind == Kind::Whiteout || shown.is_some_and(|(o, _)| o.layer == li) {
                continue;
            }
            shadowed.push(Copy::of(li, r));
        }
    }
    let hidden_by = if shown.is_none() {
        let top_copy = shadowed.first().map(|c| c.layer);
        top_copy.and_then(|t| hider(ms, &resolved, t))
    } else {
        None
    };
    let below_symlink = resolved
        .ancestors()
        .map(|a| RelPath::from_normalised(a.to_vec()))
        .find_map(|a| {
            let (_, r) = merged.lookup(&a)?;
            (r.kind == Kind::Symlink).then(|| {
                (
                    a.to_string(),
                    String::from_utf8_lossy(r.link.as_deref().unwrap_or_default()).into_owned(),
                )
            })
        });
    Ok(Which {
        below_symlink,
        path: path.to_string(),
        resolved: resolved.to_string(),
        provided_by: shown.map(|(o, r)| Copy::of(o.layer, r)),
        shadowed,
        hidden_by,
    })
}

/// The first layer above `above` that hides `path`.
fn hider(ms: &[Manifest], path: &RelPath, above: usize) -> Option<HiddenBy> {
    let ancestors: Vec<RelPath> = path
        .ancestors()
        .map(|a| RelPath::from_normalised(a.to_vec()))
        .collect();
    for (li, m) in ms.iter().enumerate().skip(above + 1) {
        if m.get(path).is_some_and(|r| r.kind == Kind::Whiteout) {
            return Some(HiddenBy {
                layer: li,
                path: path.to_string(),
                how: "whiteout",
            });
        }
        for a in &ancestors {
            let Some(r) = m.get(a) else { continue };
            let how = match r.kind {
                Kind::Whiteout => "whiteout",
                Kind::Dir if r.opaque => "opaque directory",
                Kind::Dir if r.redirect.is_some() => "redirected directory",
                Kind::Dir | Kind::OpaqueMark => continue,
                _ => "replaced by a non-directory",
            };
            return Some(HiddenBy {
                layer: li,
                path: a.to_string(),
                how,
            });
        }
    }
    None
}
