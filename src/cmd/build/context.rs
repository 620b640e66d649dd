//! The build context: `.containerignore` / `.dockerignore`, COPY sources (wildcards) and
//! the digest of what a COPY reads, which keys the layer cache.
//!
//! The ignore patterns are Docker's (moby's patternmatcher): Go `filepath.Match` syntax per
//! path (`*`, `?`, `[...]`, `\` escapes) plus `**` for any number of directories, `!` to
//! re-include, the last matching pattern deciding, a pattern matching a directory covering
//! everything below it. Hand-written (about 60 lines) because no crate implements exactly
//! these rules, and a near miss would silently send files a user meant to keep out.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use sha2::{Digest as _, Sha256};

/// The context directory and its ignore rules.
pub struct Context {
    pub root: PathBuf,
    patterns: Vec<(bool, String)>,
}

impl Context {
    pub fn open(root: &Path) -> Result<Context> {
        let root = std::fs::canonicalize(root)
            .with_context(|| format!("build context {}", root.display()))?;
        let mut patterns = Vec::new();
        for name in [".containerignore", ".dockerignore"] {
            let p = root.join(name);
            if let Ok(text) = std::fs::read_to_string(&p) {
                patterns = parse_ignore(&text);
                break;
            }
        }
        Ok(Context { root, patterns })
    }

    /// True when `rel` (slash-separated, relative to the context) is left out.
    pub fn ignored(&self, rel: &str) -> bool {
        let mut out = false;
        for (include, pat) in &self.patterns {
            let mut prefix = String::new();
            let mut hit = false;
            for comp in rel.split('/') {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(comp);
                if glob(pat.as_bytes(), prefix.as_bytes()) {
                    hit = true;
                    break;
                }
            }
            if hit {
                out = !include;
            }
        }
        out
    }

    /// The context paths a COPY source names (wildcards expanded, sorted), relative.
    pub fn sources(&self, src: &str) -> Result<Vec<String>> {
        let clean = clean(src)?;
        if !clean.contains(['*', '?', '[']) {
            if !clean.is_empty() && self.ignored(&clean) {
                bail!("{src}: excluded by .containerignore/.dockerignore");
            }
            if std::fs::symlink_metadata(self.root.join(&clean)).is_err() {
                bail!("{src}: no such file in the build context");
            }
            return Ok(vec![clean]);
        }
        let mut out = Vec::new();
        self.walk("", &mut |rel, _| {
            if glob(clean.as_bytes(), rel.as_bytes()) {
                out.push(rel.to_string());
            }
            Ok(())
        })?;
        if out.is_empty() {
            bail!("{src}: no file in the build context matches");
        }
        Ok(out)
    }

    /// Visits `rel` and everything below it that is not ignored, sorted by name.
    pub fn walk(
        &self,
        rel: &str,
        f: &mut dyn FnMut(&str, &std::fs::Metadata) -> Result<()>,
    ) -> Result<()> {
        let path = self.root.join(rel);
        let md = std::fs::symlink_metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if !rel.is_empty() {
            f(rel, &md)?;
        }
        if md.is_dir() {
            let mut names: Vec<String> = std::fs::read_dir(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_>>()?;
            names.sort();
            for n in names {
                let child = if rel.is_empty() {
                    n
                } else {
                    format!("{rel}/{n}")
                };
                if !self.ignored(&child) {
                    self.walk(&child, f)?;
                }
            }
        }
        Ok(())
    }

    /// sha256 over every file a COPY reads: names, kinds, modes, sizes, mtimes, link
    /// targets and contents. Touching a source changes it, as the cache must see.
    pub fn digest(&self, sources: &[String]) -> Result<String> {
        let mut h = Sha256::new();
        for s in sources {
            self.walk(s, &mut |rel, md| {
                h.update(rel.as_bytes());
                h.update(
                    format!(
                        "\0{}:{}:{}:{}\0",
                        md.mode(),
                        md.len(),
                        md.mtime(),
                        md.mtime_nsec()
                    )
                    .as_bytes(),
                );
                let p = self.root.join(rel);
                if md.file_type().is_symlink() {
                    h.update(std::fs::read_link(&p)?.as_os_str().as_encoded_bytes());
                } else if md.is_file() {
                    let mut f = std::fs::File::open(&p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        let n = f.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        h.update(&buf[..n]);
                    }
                }
                Ok(())
            })?;
        }
        Ok(format!("sha256:{:x}", h.finalize()))
    }
}

/// `.dockerignore` lines: comments and blanks skipped, `!` re-includes, paths cleaned.
fn parse_ignore(text: &str) -> Vec<(bool, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (include, p) = match l.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, l),
            };
            clean(p).ok().map(|c| (include, c))
        })
        .collect()
}

/// A context-relative path: leading `/` and `./` dropped, `..` refused.
pub fn clean(p: &str) -> Result<String> {
    let mut out: Vec<String> = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            Component::ParentDir if out.pop().is_none() => {
                bail!("{p}: outside the build context")
            }
            _ => {}
        }
    }
    Ok(out.join("/"))
}

/// Go's `filepath.Match` on `/`-separated paths, plus `**` for any run of characters
/// including `/`.
pub fn glob(pat: &[u8], s: &[u8]) -> bool {
    match pat.first() {
        None => s.is_empty(),
        Some(b'*') if pat.get(1) == Some(&b'*') => {
            let rest = pat[2..].strip_prefix(b"/").unwrap_or(&pat[2..]);
            (0..=s.len()).any(|i| glob(rest, &s[i..]))
                || (0..=s.len()).any(|i| glob(&pat[2..], &s[i..]))
        }
        Some(b'*') => {
            for i in 0..=s.len() {
                if glob(&pat[1..], &s[i..]) {
                    return true;
                }
                if i < s.len() && s[i] == b'/' {
                    break;
                }
            }
            false
        }
        Some(b'?') => !s.is_empty() && s[0] != b'/' && glob(&pat[1..], &s[1..]),
        Some(b'[') => {
            let Some(end) = pat.iter().skip(1).position(|&b| b == b']').map(|i| i + 1) else {
                return false;
            };
            let Some(&c) = s.first() else {
                return false;
            };
            let class = &pat[1..end];
            let (neg, class) = match class.first() {
                Some(b'^' | b'!') => (true, &class[1..]),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != neg && c != b'/' && glob(&pat[end + 1..], &s[1..])
        }
        Some(b'\\') if pat.len() > 1 => s.first() == Some(&pat[1]) && glob(&pat[2..], &s[1..]),
        Some(&p) => s.first() == Some(&p) && glob(&pat[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_as_go_and_moby_match() {
        let g = |p: &str, s: &str| glob(p.as_bytes(), s.as_bytes());
        assert!(g("*.txt", "a.txt"));
        assert!(!g("*.txt", "d/a.txt"), "* stops at /");
        assert!(g("**/*.txt", "d/e/a.txt"));
        assert!(g("**/*.txt", "a.txt"));
        assert!(g("d/**", "d/e/f"));
        assert!(g("a?c", "abc") && !g("a?c", "a/c"));
        assert!(g("[a-c]x", "bx") && !g("[!a-c]x", "bx"));
        assert!(g("\\*", "*") && !g("\\*", "a"));
    }

    #[test]
    fn ignore_rules_last_match_wins_and_cover_directories() {
        let c = Context {
            root: PathBuf::new(),
            patterns: parse_ignore("# c\nbuild\n*.log\n!keep.log\n/secret/\n"),
        };
        assert!(c.ignored("build") && c.ignored("build/x/y"));
        assert!(c.ignored("a.log") && !c.ignored("keep.log"));
        assert!(c.ignored("secret/k"));
        assert!(!c.ignored("src/a.log"), "*.log is not **/*.log");
        assert!(!c.ignored("main.c"));
    }

    #[test]
    fn sources_stay_inside_the_context() {
        assert_eq!(clean("./a/../b/").unwrap(), "b");
        assert_eq!(clean("/x/y").unwrap(), "x/y");
        assert!(clean("../etc/passwd").is_err());
    }
}
