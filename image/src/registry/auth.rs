//! Credentials and authentication challenges, as podman and skopeo read them.
//!
//! Credentials come from `--creds USER:PASS`, else from `--authfile FILE`, else from the
//! first of `$REGISTRY_AUTH_FILE`, `${XDG_RUNTIME_DIR}/containers/auth.json`,
//! `~/.config/containers/auth.json` and `~/.docker/config.json` that has an entry for the
//! registry (`{"auths": {"HOST[:PORT][/REPO...]": {"auth": base64("user:pass")}}}`; the
//! most specific key wins, as in containers-auth.json(5)).
//!
//! A registry answers `401` with `WWW-Authenticate: Basic realm=...` (the credentials go
//! with each request) or `Bearer realm=URL,service=S,scope=S` (a token is fetched from
//! the realm, with the credentials if there are any, and sent as `Bearer TOKEN`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde::Deserialize;

/// A user and password for one registry, and where they came from (for messages).
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    /// `--creds`, or the file they were read from.
    pub from: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "user {} from {}", self.user, self.from)
    }
}

impl Credentials {
    /// `USER:PASS` as `--creds` takes it.
    pub fn parse(s: &str) -> Result<Credentials> {
        let Some((user, password)) = s.split_once(':') else {
            bail!("--creds: expected USER:PASSWORD");
        };
        if user.is_empty() {
            bail!("--creds: the user is empty");
        }
        Ok(Credentials {
            user: user.into(),
            password: password.into(),
            from: "--creds".into(),
        })
    }

    /// The `Authorization` value for basic auth.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.user, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The auth files looked at when none is given, in order.
pub fn default_auth_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
        v.push(PathBuf::from(p));
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        v.push(PathBuf::from(d).join("containers/auth.json"));
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        let h = PathBuf::from(h);
        v.push(h.join(".config/containers/auth.json"));
        v.push(h.join(".docker/config.json"));
    }
    v
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The credentials `files` hold for `host`/`repo` (the first file with an entry wins; in a
/// file, the longest matching key). A file that does not exist is skipped.
pub fn lookup(files: &[PathBuf], host: &str, repo: &str) -> Result<Option<Credentials>> {
    for f in files {
        if let Some(c) = lookup_in(f, host, repo)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

fn lookup_in(file: &Path, host: &str, repo: &str) -> Result<Option<Credentials>> {
    let text = match std::fs::read(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let parsed: AuthFile =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", file.display()))?;
    // Keys may carry a scheme and a trailing slash (docker's legacy form).
    let key_of = |k: &str| {
        let k = k
            .strip_prefix("https://")
            .or_else(|| k.strip_prefix("http://"))
            .unwrap_or(k);
        k.trim_end_matches('/').to_string()
    };
    let full = format!("{host}/{repo}");
    let best = parsed
        .auths
        .iter()
        .map(|(k, v)| (key_of(k), v))
        .filter(|(k, _)| *k == host || full == *k || full.starts_with(&format!("{k}/")))
        .max_by_key(|(k, _)| k.len());
    let Some((key, entry)) = best else {
        return Ok(None);
    };
    let from = format!("{} (entry {key})", file.display());
    let (user, password) = match (&entry.auth, &entry.username, &entry.password) {
        (Some(a), _, _) if !a.is_empty() => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.trim())
                .with_context(|| format!("{from}: the auth value is not base64"))?;
            let raw = String::from_utf8(raw).with_context(|| format!("{from}: not UTF-8"))?;
            let Some((u, p)) = raw.split_once(':') else {
                bail!("{from}: the auth value is not USER:PASSWORD");
            };
            (u.to_string(), p.to_string())
        }
        (_, Some(u), Some(p)) => (u.clone(), p.clone()),
        _ => return Ok(None),
    };
    Ok(Some(Credentials {
        user,
        password,
        from,
    }))
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses `Basic realm="x"` or `Bearer realm="URL",service="S",scope="A,B"`; other
    /// schemes are `None`.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => {
                let p = params_of(params);
                let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                Some(Challenge::Bearer {
                    realm: get("realm")?,
                    service: get("service"),
                    scope: get("scope"),
                })
            }
            _ => None,
        }
    }
}

/// `k="v", k2=v2` pairs (quoted values may hold commas and `\"`).
fn params_of(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.extend(chars.next()),
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        out.push((key.trim().to_ascii_lowercase(), val.trim().to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.test/token",service="reg.test",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.test/token".into(),
                service: Some("reg.test".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(Challenge::parse("Negotiate x"), None);
        assert_eq!(Challenge::parse("Bearer service=x"), None);
    }

    #[test]
    fn auth_files_most_specific_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("auth.json");
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            &f,
            format!(
                r#"{{"auths":{{"reg.test:5000":{{"auth":"{}"}},"reg.test:5000/team":{{"auth":"{}"}},
                   "https://other.test/":{{"auth":"{}"}}}}}}"#,
                b("all:1"),
                b("team:2"),
                b("o:3")
            ),
        )
        .unwrap();
        let files = vec![dir.path().join("missing.json"), f];
        let c = lookup(&files, "reg.test:5000", "team/app")
            .unwrap()
            .unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("team", "2"));
        let c = lookup(&files, "reg.test:5000", "teamx/app")
            .unwrap()
            .unwrap();
        assert_eq!(c.user, "all");
        assert_eq!(
            lookup(&files, "other.test", "x").unwrap().unwrap().user,
            "o"
        );
        assert!(lookup(&files, "none.test", "x").unwrap().is_none());
        assert_eq!(
            Credentials::parse("u:p:q").unwrap().basic(),
            format!("Basic {}", b("u:p:q"))
        );
    }
}
