//! Mount options in the overlayfs / fuse-overlayfs syntax (`-o lowerdir=A:B,upperdir=U,...`).

use std::path::PathBuf;

/// A mapping of ids as fuse-overlayfs' `uidmapping=` / `gidmapping=` give it:
/// `CONTAINER:HOST:COUNT[:CONTAINER:HOST:COUNT...]`. The merged view shows a file owned by
/// host id `HOST + i` as owned by `CONTAINER + i`; ids outside every range show as the
/// overflow id 65534.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdMap {
    pub ranges: Vec<(u32, u32, u32)>,
}

pub const OVERFLOW_ID: u32 = 65534;

impl IdMap {
    fn parse(s: &str) -> Result<IdMap, OptionError> {
        let bad = || {
            OptionError::Value(format!(
                "id mapping {s:?}: expected CONTAINER:HOST:COUNT[:...]"
            ))
        };
        let nums: Vec<u32> = s
            .trim_start_matches(':')
            .split(':')
            .map(|n| n.parse::<u32>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        if nums.is_empty() || !nums.len().is_multiple_of(3) {
            return Err(bad());
        }
        Ok(IdMap {
            ranges: nums.chunks(3).map(|c| (c[0], c[1], c[2])).collect(),
        })
    }

    /// The host id stored on disk for an id of the mount (the inverse of `to_container`).
    pub fn to_host(&self, container: u32) -> u32 {
        for &(c, h, n) in &self.ranges {
            if container >= c && container - c < n {
                return h + (container - c);
            }
        }
        OVERFLOW_ID
    }

    /// The id shown in the mount for a host id stored on disk.
    pub fn to_container(&self, host: u32) -> u32 {
        for &(c, h, n) in &self.ranges {
            if host >= h && host - h < n {
                return c + (host - h);
            }
        }
        OVERFLOW_ID
    }
}

/// Everything `-o` can say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// Lower directories, top first, unescaped, not yet resolved.
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    /// No fsync of copied-up data (podman's `volatile`).
    pub volatile: bool,
    /// Marks in `user.overlay.*` instead of `trusted.overlay.*` (kernel's `userxattr`).
    pub userxattr: bool,
    pub uid_map: Option<IdMap>,
    pub gid_map: Option<IdMap>,
    pub squash_to_uid: Option<u32>,
    pub squash_to_gid: Option<u32>,
    /// Unknown options: accepted with a warning.
    pub ignored: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    #[error("no lowerdir= given (expected -o lowerdir=TOP:...:BOTTOM[,upperdir=U,workdir=W])")]
    NoLower,
    #[error("lowerdir= has an empty layer path in {0:?}")]
    EmptyLayer(String),
    #[error("upperdir= needs workdir= too (and workdir= needs upperdir=)")]
    UpperWithoutWork,
    #[error("option {0:?} needs a value")]
    MissingValue(String),
    #[error("{0}")]
    Value(String),
    #[error("option {0:?} ends with a lone backslash")]
    TrailingEscape(String),
}

/// Splits on `sep` where it is not escaped by a backslash; keeps escapes for a later pass.
fn split_unescaped(s: &str, sep: char) -> Result<Vec<String>, OptionError> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let next = chars
                .next()
                .ok_or_else(|| OptionError::TrailingEscape(s.to_string()))?;
            let cur = out.last_mut().expect("never empty");
            cur.push('\\');
            cur.push(next);
        } else if c == sep {
            out.push(String::new());
        } else {
            out.last_mut().expect("never empty").push(c);
        }
    }
    Ok(out)
}

/// Removes escapes: `\X` becomes `X` (so `\:` `\,` `\\` give `:` `,` `\`).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl MountOptions {
    /// Parses every `-o` argument, in order (later values win, as with mount(8)).
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<MountOptions, OptionError> {
        Self::parse_inner(args, true)
    }

    /// Parses a stack for the layer tools, which only read it: an `upperdir` needs no
    /// `workdir` there.
    pub fn parse_layers<S: AsRef<str>>(args: &[S]) -> Result<MountOptions, OptionError> {
        Self::parse_inner(args, false)
    }

    fn parse_inner<S: AsRef<str>>(
        args: &[S],
        need_work: bool,
    ) -> Result<MountOptions, OptionError> {
        let mut o = MountOptions::default();
        for arg in args {
            for item in split_unescaped(arg.as_ref(), ',')? {
                if item.is_empty() {
                    continue; // podman writes `work,,volatile`
                }
                let (key, value) = match item.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (item.clone(), None),
                };
                let need =
                    |v: Option<String>| v.ok_or_else(|| OptionError::MissingValue(key.clone()));
                let num = |v: Option<String>| -> Result<u32, OptionError> {
                    let v = need(v)?;
                    v.parse()
                        .map_err(|_| OptionError::Value(format!("{key}={v}: not a number")))
                };
                match key.as_str() {
                    "lowerdir" => {
                        let v = need(value)?;
                        let mut lowers = Vec::new();
                        // `::` separates data-only lowers in newer kernels; treat as ':'.
                        for p in split_unescaped(&v, ':')? {
                            if p.is_empty() {
                                if v.contains("::") {
                                    continue;
                                }
                                return Err(OptionError::EmptyLayer(v.clone()));
                            }
                            lowers.push(PathBuf::from(unescape(&p)));
                        }
                        o.lowers = lowers;
                    }
                    "upperdir" => o.upper = Some(PathBuf::from(unescape(&need(value)?))),
                    "workdir" => o.work = Some(PathBuf::from(unescape(&need(value)?))),
                    "volatile" => o.volatile = true,
                    "userxattr" => o.userxattr = true,
                    "uidmapping" => o.uid_map = Some(IdMap::parse(&need(value)?)?),
                    "gidmapping" => o.gid_map = Some(IdMap::parse(&need(value)?)?),
                    "squash_to_uid" => o.squash_to_uid = Some(num(value)?),
                    "squash_to_gid" => o.squash_to_gid = Some(num(value)?),
                    "squash_to_root" => {
                        o.squash_to_uid = Some(0);
                        o.squash_to_gid = Some(0);
                    }
                    // Accepted for compatibility; they do not change what the mount shows.
                    "xattr_permissions"
                    | "context"
                    | "fscontext"
                    | "defcontext"
                    | "rootcontext"
                    | "ro"
                    | "rw"
                    | "noatime"
                    | "relatime"
                    | "nodev"
                    | "nosuid"
                    | "dev"
                    | "suid"
                    | "exec"
                    | "noexec"
                    | "redirect_dir"
                    | "metacopy"
                    | "index"
                    | "xino"
                    | "nfs_export"
                    | "fsync"
                    | "default_permissions"
                    | "allow_other"
                    | "allow_root"
                    | "auto_unmount"
                    | "threaded"
                    | "noacl"
                    | "plugins"
                    | "fast_ino"
                    | "static_nlink"
                    | "timeout" => {}
                    _ => o.ignored.push(item.clone()),
                }
            }
        }
        if o.lowers.is_empty() {
            return Err(OptionError::NoLower);
        }
        if need_work && o.upper.is_some() != o.work.is_some() {
            return Err(OptionError::UpperWithoutWork);
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_read_write_form() {
        let o = MountOptions::parse(&[
            "lowerdir=l/A:l/B,upperdir=/s/x/diff,workdir=/s/x/work,,volatile",
        ])
        .unwrap();
        assert_eq!(o.lowers, vec![PathBuf::from("l/A"), PathBuf::from("l/B")]);
        assert_eq!(o.upper, Some(PathBuf::from("/s/x/diff")));
        assert_eq!(o.work, Some(PathBuf::from("/s/x/work")));
        assert!(o.volatile);
        assert!(o.ignored.is_empty());
    }

    #[test]
    fn escapes() {
        let o = MountOptions::parse(&[r"lowerdir=/a\:b:/c\,d:/e\\f"]).unwrap();
        assert_eq!(
            o.lowers,
            vec![
                PathBuf::from("/a:b"),
                PathBuf::from("/c,d"),
                PathBuf::from(r"/e\f")
            ]
        );
    }

    #[test]
    fn several_dash_o_and_mappings() {
        let o = MountOptions::parse(&[
            "lowerdir=/a",
            "uidmapping=:0:1000:1:1:100000:65536,gidmapping=0:1000:1",
        ])
        .unwrap();
        let m = o.uid_map.unwrap();
        assert_eq!(m.to_container(1000), 0);
        assert_eq!(m.to_container(100000), 1);
        assert_eq!(m.to_container(100005), 6);
        assert_eq!(m.to_container(5), OVERFLOW_ID);
        assert_eq!(o.gid_map.unwrap().ranges, vec![(0, 1000, 1)]);
    }

    #[test]
    fn errors() {
        assert_eq!(
            MountOptions::parse(&["upperdir=/u"]),
            Err(OptionError::NoLower)
        );
        assert_eq!(
            MountOptions::parse(&["lowerdir=/a,upperdir=/u"]),
            Err(OptionError::UpperWithoutWork)
        );
        assert!(matches!(
            MountOptions::parse(&["lowerdir=/a:"]),
            Err(OptionError::EmptyLayer(_))
        ));
        assert!(matches!(
            MountOptions::parse(&["lowerdir"]),
            Err(OptionError::MissingValue(_))
        ));
        assert!(matches!(
            MountOptions::parse(&["lowerdir=/a,uidmapping=1:2"]),
            Err(OptionError::Value(_))
        ));
        assert!(matches!(
            MountOptions::parse(&[r"lowerdir=/a\"]),
            Err(OptionError::TrailingEscape(_))
        ));
    }

    #[test]
    fn unknown_options_are_kept_for_a_warning() {
        let o =
            MountOptions::parse(&["lowerdir=/a,frobnicate=3,squash_to_root,xattr_permissions=2"])
                .unwrap();
        assert_eq!(o.ignored, vec!["frobnicate=3".to_string()]);
        assert_eq!(o.squash_to_uid, Some(0));
    }
}
