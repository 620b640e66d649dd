//! Archives read in place: an index of the members of an uncompressed tar (name → offset
//! and length), so layers and JSON are read straight from the archive file with no
//! unpacking; and `docker-archive:` (`docker save` / `podman save` output) on top of it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use super::blob::{BlobRef, Compression, Digest};
use super::entry::RelPath;
use super::{attach_config, read_json_bytes, Image, ImageConfig, Layer, Limits, Location};
use crate::sys;
use crate::tarread::TarReader;

/// Members an archive may have before it is called absurd.
const MAX_MEMBERS: usize = 1_000_000;

/// Read access to the files of an image (a layout directory or an archive).
pub(super) trait Files {
    /// Where the named file's bytes are (a regular file, after following the archive's own
    /// links); names are relative, `/`-separated.
    fn blob(&self, name: &str) -> Result<BlobRef>;
    /// Short description for messages.
    fn describe(&self) -> String;

    /// A JSON document, bounded in size, its digest checked when given.
    fn json(&self, name: &str, digest: Option<&Digest>) -> Result<Vec<u8>> {
        let b = self.blob(name)?;
        read_json_bytes(
            b.open_raw(digest)?,
            &format!("{name} in {}", self.describe()),
        )
    }
}

/// A directory (an OCI layout) as [`Files`]: each name resolved beneath the root, no
/// symlink followed; only regular files are blobs.
pub(super) struct DirFiles {
    pub root: PathBuf,
}

impl Files for DirFiles {
    fn blob(&self, name: &str) -> Result<BlobRef> {
        let rel = RelPath::parse(name.as_bytes(), false)?;
        let root = sys::open_host_dir(&self.root)
            .with_context(|| format!("opening {}", self.root.display()))?;
        let fd = sys::open_beneath(root.as_fd(), &sys::cstr(rel.as_bytes())?, libc::O_RDONLY)
            .with_context(|| format!("opening {name} in {}", self.root.display()))?;
        let st = sys::fstat(fd.as_fd())?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            bail!("{name} in {} is not a regular file", self.root.display());
        }
        Ok(BlobRef {
            path: self.root.join(rel.to_string().trim_start_matches('/')),
            offset: 0,
            len: st.st_size as u64,
        })
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

/// An uncompressed tar, indexed once.
pub(super) struct TarFiles {
    file: PathBuf,
    members: HashMap<Vec<u8>, Member>,
}

enum Member {
    Data {
        offset: u64,
        len: u64,
    },
    /// A symlink or hard link, already resolved to an archive path.
    Link(RelPath),
}

impl TarFiles {
    pub fn open(file: &Path) -> Result<TarFiles> {
        let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let mut head = [0u8; 4];
        let n = (&f).read(&mut head)?;
        if Compression::sniff(&head[..n]) != Compression::None {
            bail!(
                "{}: a compressed archive; decompress it first",
                file.display()
            );
        }
        drop(f);
        let f = File::open(file)?;
        let mut archive = TarReader::new_seekable(BufReader::new(f));
        let mut members = HashMap::new();
        while let Some(e) = archive
            .next_entry()
            .with_context(|| format!("reading {}", file.display()))?
        {
            if members.len() >= MAX_MEMBERS {
                bail!("{}: more than {MAX_MEMBERS} members", file.display());
            }
            let path =
                RelPath::parse(&e.path, false).with_context(|| format!("{}", file.display()))?;
            let member = match e.kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => Member::Data {
                    offset: archive.data_offset(),
                    len: e.size,
                },
                tar::EntryType::Symlink => {
                    let target = e
                        .link
                        .as_deref()
                        .ok_or_else(|| anyhow!("{path}: empty link"))?;
                    // A link inside the archive (docker save links repeated layers); relative
                    // to the link's directory, never leaving the archive.
                    let mut joined = path.parent().as_bytes().to_vec();
                    joined.push(b'/');
                    joined.extend_from_slice(target);
                    Member::Link(
                        resolve_dots(&joined).with_context(|| format!("{path}: link target"))?,
                    )
                }
                tar::EntryType::Link => {
                    let target = e
                        .link
                        .as_deref()
                        .ok_or_else(|| anyhow!("{path}: empty link"))?;
                    Member::Link(RelPath::parse(target, false)?)
                }
                _ => continue,
            };
            members.insert(path.as_bytes().to_vec(), member);
        }
        Ok(TarFiles {
            file: file.to_path_buf(),
            members,
        })
    }
}

/// Normalises `a/b/../c` (inside an archive only): `..` may not climb above the root.
fn resolve_dots(p: &[u8]) -> Result<RelPath> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop().ok_or_else(|| anyhow!("leaves the archive"))?;
            }
            _ => parts.push(c),
        }
    }
    RelPath::parse(&parts.join(&b'/'), false)
}

impl Files for TarFiles {
    fn blob(&self, name: &str) -> Result<BlobRef> {
        let mut key = RelPath::parse(name.as_bytes(), false)?.as_bytes().to_vec();
        for _ in 0..16 {
            match self.members.get(&key) {
                Some(Member::Data { offset, len }) => {
                    return Ok(BlobRef {
                        path: self.file.clone(),
                        offset: *offset,
                        len: *len,
                    })
                }
                Some(Member::Link(to)) => key = to.as_bytes().to_vec(),
                None => bail!("{name}: not in {}", self.file.display()),
            }
        }
        bail!("{name}: too many links in {}", self.file.display())
    }

    fn describe(&self) -> String {
        self.file.display().to_string()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// True when `tag` names `want`, allowing the implied registry / `:latest` parts: a first
/// component that is a registry host (it holds a `.` or a `:`, or is `localhost`, the
/// reference grammar's rule) and a `library/` namespace after it are left out of the match.
pub(super) fn tag_matches(tag: &str, want: &str) -> bool {
    let norm = |s: &str| -> String {
        let s = match s.split_once('/') {
            Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => {
                rest.strip_prefix("library/").unwrap_or(rest)
            }
            _ => s,
        };
        let last = s.rsplit('/').next().unwrap_or(s);
        if last.contains(':') || last.contains('@') {
            s.to_string()
        } else {
            format!("{s}:latest")
        }
    };
    tag == want || norm(tag) == norm(want)
}

/// `blobs/sha256/HEX` or `HEX.json` / `HEX/layer.tar` style names carry their digest.
fn digest_in_name(name: &str) -> Option<Digest> {
    if let Some(hex) = name.strip_prefix("blobs/sha256/") {
        return Digest::parse(&format!("sha256:{hex}")).ok();
    }
    let stem = name.strip_suffix(".json")?;
    Digest::parse(&format!("sha256:{stem}")).ok()
}

pub(super) fn open_docker(file: &Path, reference: Option<&str>) -> Result<Image> {
    let files = TarFiles::open(file)?;
    let raw = files.json("manifest.json", None)?;
    let manifests: Vec<DockerManifest> = serde_json::from_slice(&raw)
        .with_context(|| format!("{}: parsing manifest.json", file.display()))?;
    let pick = match reference {
        Some(r) => manifests
            .iter()
            .find(|m| m.repo_tags.iter().flatten().any(|t| tag_matches(t, r)))
            .ok_or_else(|| anyhow!("{}: no image tagged {r}", file.display()))?,
        None => match manifests.as_slice() {
            [one] => one,
            [] => bail!("{}: manifest.json lists no image", file.display()),
            many => bail!(
                "{}: holds {} images; name one of: {}",
                file.display(),
                many.len(),
                many.iter()
                    .flat_map(|m| m.repo_tags.iter().flatten())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    let config_digest = digest_in_name(&pick.config);
    let config_json = files.json(&pick.config, config_digest.as_ref())?;
    let config = ImageConfig::parse(&config_json).with_context(|| format!("{}", file.display()))?;
    if !config.diff_ids.is_empty() && config.diff_ids.len() != pick.layers.len() {
        bail!(
            "{}: the config lists {} layers, manifest.json {}",
            file.display(),
            config.diff_ids.len(),
            pick.layers.len()
        );
    }
    let mut layers = Vec::new();
    for (i, name) in pick.layers.iter().enumerate() {
        let blob = files.blob(name)?;
        let digest = name
            .strip_prefix("blobs/")
            .and_then(|_| digest_in_name(name));
        let diff_id = config.diff_ids.get(i).cloned();
        layers.push(Layer {
            id: digest
                .as_ref()
                .or(diff_id.as_ref())
                .map(Digest::to_string)
                .unwrap_or_else(|| name.clone()),
            digest,
            diff_id,
            media_type: None,
            compression: None,
            size: Some(blob.len),
            created_by: None,
            comment: None,
            location: Location::Blob(blob),
        });
    }
    attach_config(&mut layers, &config);
    Ok(Image {
        name: format!("docker-archive:{}", file.display()),
        layers,
        config: Some(config),
        config_digest,
        manifest_digest: None,
        limits: Limits::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert!(tag_matches("localhost/foo:latest", "foo"));
        assert!(tag_matches(
            "registry.example:5000/library/debian:12",
            "debian:12"
        ));
        assert!(tag_matches("registry.example/team/app", "team/app:latest"));
        assert!(!tag_matches("foo:1", "foo"));
    }

    #[test]
    fn dots() {
        assert_eq!(resolve_dots(b"a/b/../c").unwrap().as_bytes(), b"a/c");
        assert!(resolve_dots(b"a/../../c").is_err());
    }
}
