//! Image references as skopeo spells them after `docker://`: `HOST[:PORT]/REPO[:TAG]` or
//! `HOST[:PORT]/REPO@sha256:HEX`. A name whose first component is not a host (no `.`, no
//! `:`, not `localhost`) is unqualified: it is tried against registries.conf's
//! `unqualified-search-registries`, in order, or refused when that list is empty.

use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::source::Digest;

/// The transport prefix of registry references.
pub const PREFIX: &str = "docker://";

/// A tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tag(String),
    Digest(Digest),
}

/// A fully qualified reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host` or `host:port`, as written.
    pub host: String,
    /// The repository path (`team/app`).
    pub repo: String,
    pub target: Target,
}

impl Reference {
    /// Parses `HOST[:PORT]/REPO[:TAG|@DIGEST]` (with or without `docker://`); an
    /// unqualified name is resolved with registries.conf (see [`candidates`]) and must have
    /// exactly one candidate here.
    pub fn parse(s: &str) -> Result<Reference> {
        let mut all = candidates(s)?;
        if all.len() > 1 {
            bail!(
                "{s}: an unqualified name, and registries.conf lists {} registries to search \
                 ({}); name the registry: docker://HOST/{}",
                all.len(),
                all.iter()
                    .map(|r| r.host.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                all[0].repo
            );
        }
        Ok(all.remove(0))
    }

    /// Parses a qualified reference (the host must be there).
    pub fn parse_qualified(s: &str) -> Result<Reference> {
        let body = s.strip_prefix(PREFIX).unwrap_or(s);
        let Some((host, rest)) = body.split_once('/').filter(|(h, _)| is_host(h)) else {
            bail!("{s}: expected docker://HOST[:PORT]/REPO[:TAG|@DIGEST]");
        };
        parse_with_host(s, host, rest)
    }

    /// `host/repo:tag` or `host/repo@digest`.
    pub fn name(&self) -> String {
        match &self.target {
            Target::Tag(t) => format!("{}/{}:{t}", self.host, self.repo),
            Target::Digest(d) => format!("{}/{}@{d}", self.host, self.repo),
        }
    }

    /// What the manifest endpoint takes: the tag or the digest.
    pub fn target_str(&self) -> &str {
        match &self.target {
            Target::Tag(t) => t,
            Target::Digest(d) => d.as_str(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.name())
    }
}

fn is_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// Every reference an image name may mean: itself when qualified, else one per registry
/// of registries.conf's `unqualified-search-registries` (in its order).
pub fn candidates(s: &str) -> Result<Vec<Reference>> {
    let body = s.strip_prefix(PREFIX).unwrap_or(s);
    if body.is_empty() {
        bail!("{s}: expected docker://HOST[:PORT]/REPO[:TAG|@DIGEST]");
    }
    match body.split_once('/') {
        Some((host, rest)) if is_host(host) => Ok(vec![parse_with_host(s, host, rest)?]),
        _ => {
            let conf = RegistriesConf::load()?;
            if conf.unqualified.is_empty() {
                bail!(
                    "{s}: an unqualified name, and no registries.conf ({}) lists \
                     unqualified-search-registries; name the registry: docker://HOST[:PORT]/{body}",
                    conf.read
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            conf.unqualified
                .iter()
                .map(|host| parse_with_host(s, host, body))
                .collect()
        }
    }
}

fn parse_with_host(whole: &str, host: &str, rest: &str) -> Result<Reference> {
    let (path, target) = if let Some((p, d)) = rest.split_once('@') {
        let d = Digest::parse(d).with_context(|| format!("{whole}: the digest"))?;
        (p, Target::Digest(d))
    } else {
        match rest.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, Target::Tag(t.to_string())),
            _ => (rest, Target::Tag("latest".into())),
        }
    };
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    if path.is_empty() || !path.split('/').all(component_ok) {
        bail!(
            "{whole}: {path:?} is not a repository name (lowercase letters, digits, . _ - and /)"
        );
    }
    if let Target::Tag(t) = &target {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && !t.starts_with(['.', '-']);
        if !ok {
            bail!("{whole}: {t:?} is not a tag");
        }
    }
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        bail!("{whole}: {host:?} is not a registry host");
    }
    Ok(Reference {
        host: host.to_string(),
        repo: path.to_string(),
        target,
    })
}

/// What layerfs reads of registries.conf (containers-registries.conf(5)): the search list
/// for unqualified names and the registries marked `insecure` (plain HTTP or an untrusted
/// certificate allowed, as with `--tls-verify=false`).
#[derive(Debug, Default)]
pub struct RegistriesConf {
    pub unqualified: Vec<String>,
    pub insecure: Vec<String>,
    /// The files read (for messages).
    pub read: Vec<PathBuf>,
}

#[derive(Deserialize, Default)]
struct ConfFile {
    #[serde(rename = "unqualified-search-registries")]
    unqualified: Option<Vec<String>>,
    #[serde(default)]
    registry: Vec<ConfRegistry>,
}

#[derive(Deserialize)]
struct ConfRegistry {
    #[serde(default)]
    location: String,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    insecure: bool,
}

impl RegistriesConf {
    /// `$CONTAINERS_REGISTRIES_CONF` if set, else `~/.config/containers/registries.conf` if
    /// it exists, else `/etc/containers/registries.conf`; then the drop-ins of
    /// `/etc/containers/registries.conf.d/` in name order (a later file's search list
    /// replaces an earlier one, as containers/image does).
    pub fn load() -> Result<RegistriesConf> {
        let mut files = Vec::new();
        if let Some(p) = std::env::var_os("CONTAINERS_REGISTRIES_CONF") {
            files.push(PathBuf::from(p));
        } else {
            let user = std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".config/containers/registries.conf"));
            match user.filter(|p| p.exists()) {
                Some(p) => files.push(p),
                None => files.push("/etc/containers/registries.conf".into()),
            }
            if let Ok(rd) = std::fs::read_dir("/etc/containers/registries.conf.d") {
                let mut more: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                    .collect();
                more.sort();
                files.extend(more);
            }
        }
        let mut conf = RegistriesConf::default();
        for f in files {
            let text = match std::fs::read_to_string(&f) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("reading {}", f.display())),
            };
            let parsed: ConfFile =
                toml::from_str(&text).with_context(|| format!("parsing {}", f.display()))?;
            if let Some(u) = parsed.unqualified {
                conf.unqualified = u;
            }
            for r in parsed.registry.into_iter().filter(|r| r.insecure) {
                let loc = if r.location.is_empty() {
                    r.prefix
                } else {
                    r.location
                };
                conf.insecure.push(loc);
            }
            conf.read.push(f);
        }
        Ok(conf)
    }

    /// Whether registries.conf marks `host` (or `host/repo...` by prefix) insecure.
    pub fn is_insecure(&self, host: &str, repo: &str) -> bool {
        let full = format!("{host}/{repo}");
        self.insecure
            .iter()
            .any(|l| l == host || full == *l || full.starts_with(&format!("{l}/")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_references() {
        let r = Reference::parse_qualified("docker://127.0.0.1:5000/team/app:v1").unwrap();
        assert_eq!(r.host, "127.0.0.1:5000");
        assert_eq!(r.repo, "team/app");
        assert_eq!(r.target, Target::Tag("v1".into()));
        assert_eq!(r.to_string(), "docker://127.0.0.1:5000/team/app:v1");
        let r = Reference::parse_qualified("localhost/app").unwrap();
        assert_eq!(r.target, Target::Tag("latest".into()));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse_qualified(&format!("docker://h.example/app@{d}")).unwrap();
        assert_eq!(r.target_str(), d);
        assert!(Reference::parse_qualified("docker://h.example/App").is_err());
        assert!(Reference::parse_qualified("docker://h.example/app:-x").is_err());
        assert!(Reference::parse_qualified("docker://app").is_err());
        assert!(Reference::parse_qualified("docker://h.example/app@sha256:12").is_err());
    }

    #[test]
    fn insecure_by_prefix() {
        let c = RegistriesConf {
            insecure: vec!["127.0.0.1:5000".into(), "reg.test/team".into()],
            ..Default::default()
        };
        assert!(c.is_insecure("127.0.0.1:5000", "x"));
        assert!(c.is_insecure("reg.test", "team/app"));
        assert!(!c.is_insecure("reg.test", "teamx/app"));
    }
}
