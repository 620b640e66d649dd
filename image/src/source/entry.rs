//! The entry model every source yields: one [`Entry`] per tar header or directory entry,
//! with the union's marks (whiteouts, opaque directories, redirects) already decoded by
//! [`crate::format`], so no tool ever looks at `.wh.` names or overlay xattrs again.

use std::fmt;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Longest path accepted from a layer (Linux's `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// Longest name accepted for one path component (Linux's `NAME_MAX`).
pub const MAX_NAME: usize = 255;

/// A path inside an image, relative to its root, normalised: no leading `/`, no `.`, `..`
/// or empty components, no NUL. The root itself is the empty path. Bytes, not UTF-8:
/// layers may hold any name the kernel accepts.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// The image root.
    pub fn root() -> RelPath {
        RelPath(Vec::new())
    }

    /// Parses a name from a tar header (or a user's argument, with `allow_absolute`).
    /// `./a//b/` becomes `a/b`; `..` anywhere, a NUL, an over-long path or name are
    /// errors, and so is a leading `/` unless `allow_absolute` (tar names are relative; an
    /// absolute one is how an archive tries to write outside the root).
    pub fn parse(raw: &[u8], allow_absolute: bool) -> Result<RelPath> {
        let shown = || String::from_utf8_lossy(raw);
        if raw.len() > MAX_PATH {
            bail!("path too long ({} bytes): {:.80}...", raw.len(), shown());
        }
        if raw.contains(&0) {
            bail!("path contains a NUL byte: {:?}", shown());
        }
        if raw.starts_with(b"/") && !allow_absolute {
            bail!("absolute path in a layer: {:?}", shown());
        }
        let mut out = Vec::with_capacity(raw.len());
        for c in raw.split(|&b| b == b'/') {
            match c {
                b"" | b"." => continue,
                b".." => bail!("path leaves the image root: {:?}", shown()),
                _ if c.len() > MAX_NAME => bail!("name too long in {:?}", shown()),
                _ => {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(c);
                }
            }
        }
        Ok(RelPath(out))
    }

    /// Joins one component (already checked by the caller to be a valid name).
    pub fn join(&self, name: &[u8]) -> RelPath {
        let mut v = Vec::with_capacity(self.0.len() + 1 + name.len());
        v.extend_from_slice(&self.0);
        if !v.is_empty() {
            v.push(b'/');
        }
        v.extend_from_slice(name);
        RelPath(v)
    }

    /// Wraps bytes that are already normalised (from a manifest this program wrote or a
    /// [`crate::format::redirect_target`]).
    pub fn from_normalised(v: Vec<u8>) -> RelPath {
        RelPath(v)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The parent directory's bytes, without allocating.
    pub fn parent_bytes(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[..i],
            None => &[],
        }
    }

    /// The parent directory (the root's parent is the root).
    pub fn parent(&self) -> RelPath {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => RelPath(self.0[..i].to_vec()),
            None => RelPath::root(),
        }
    }

    /// The last component (empty for the root).
    pub fn name(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// True when `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        other.0.is_empty()
            || (self.0.starts_with(&other.0)
                && (self.0.len() == other.0.len() || self.0[other.0.len()] == b'/'))
    }

    /// Every proper ancestor, nearest the root first (`a`, `a/b` for `a/b/c`), root excluded.
    pub fn ancestors(&self) -> impl Iterator<Item = &[u8]> {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'/')
            .map(|(i, _)| &self.0[..i])
    }

    /// `self` with the prefix `from` replaced by `to` (`self` must start with `from`).
    pub fn rebase(&self, from: &RelPath, to: &RelPath) -> RelPath {
        let rest = &self.0[from.0.len()..];
        let mut v = to.0.clone();
        let rest = rest.strip_prefix(b"/").unwrap_or(rest);
        if !rest.is_empty() {
            if !v.is_empty() {
                v.push(b'/');
            }
            v.extend_from_slice(rest);
        }
        RelPath(v)
    }
}

impl fmt::Display for RelPath {
    /// `/a/b`, the way people write image paths; non-UTF-8 bytes shown lossily.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// What an entry is. Whiteouts of every form arrive as [`Kind::Whiteout`] at the path they
/// delete; the OCI opaque marker arrives as [`Kind::OpaqueMark`] at its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A second name for a file of the same layer; `Entry::link` holds the first name.
    HardLink,
    CharDev,
    BlockDev,
    Fifo,
    Socket,
    /// Deletes this path (and everything below it) from the layers underneath.
    Whiteout,
    /// Only a mark: the directory at this path is opaque in this layer (OCI
    /// `.wh..wh..opq`). Directory walkers set [`Entry::opaque`] instead.
    OpaqueMark,
}

impl Kind {
    /// One letter, as `ls -l` shows it (`w` for whiteouts, `o` for opaque marks).
    pub fn letter(self) -> char {
        match self {
            Kind::File => '-',
            Kind::Dir => 'd',
            Kind::Symlink => 'l',
            Kind::HardLink => 'h',
            Kind::CharDev => 'c',
            Kind::BlockDev => 'b',
            Kind::Fifo => 'p',
            Kind::Socket => 's',
            Kind::Whiteout => 'w',
            Kind::OpaqueMark => 'o',
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::HardLink => "hardlink",
            Kind::CharDev => "chardev",
            Kind::BlockDev => "blockdev",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::Whiteout => "whiteout",
            Kind::OpaqueMark => "opaque",
        }
    }
}

/// One entry of a layer, as a tar header or a directory entry describes it (and, inside a
/// manifest [`Record`](crate::manifest::Record), as the manifest cache stores it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: RelPath,
    pub kind: Kind,
    /// Permission bits, with setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Bytes of content (regular files; 0 for everything else).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Device number (`makedev(major, minor)`) of character and block devices.
    pub rdev: u64,
    /// A symlink's target (raw bytes, not checked: never followed on the host), or for a
    /// [`Kind::HardLink`] the image path of the file it names.
    pub link: Option<Vec<u8>>,
    /// The entry's xattrs, sorted by name, without the union's own (`*.overlay.*`).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// A directory hiding every lower entry below it.
    pub opaque: bool,
    /// A renamed directory (kernel upper, `redirect_dir=on`): where its lower content lives,
    /// already resolved to an image path.
    pub redirect: Option<RelPath>,
    /// For entries of directory layers: what identifies this version of the file on the
    /// host, so a cached content hash can be reused while it is unchanged.
    pub stamp: Option<Stamp>,
}

/// A file's identity and change time on the host. The kernel sets `ctime` on every change
/// of content or metadata and nobody can set it back, so an equal stamp means an unchanged
/// file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub ctime_sec: i64,
    pub ctime_nsec: i64,
    pub size: u64,
}

impl Entry {
    /// A bare entry of `kind` at `path`, root-owned, mode 0.
    pub fn new(path: RelPath, kind: Kind) -> Entry {
        Entry {
            path,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            rdev: 0,
            link: None,
            xattrs: Vec::new(),
            opaque: false,
            redirect: None,
            stamp: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_normalises_and_refuses_escapes() {
        assert_eq!(
            RelPath::parse(b"./a//b/", false).unwrap().as_bytes(),
            b"a/b"
        );
        assert!(RelPath::parse(b"./", false).unwrap().is_root());
        assert!(RelPath::parse(b"a/../../etc", false).is_err());
        assert!(RelPath::parse(b"/etc/passwd", false).is_err());
        assert_eq!(RelPath::parse(b"/etc", true).unwrap().as_bytes(), b"etc");
        assert!(RelPath::parse(&[b'a'; 300], false).is_err());
    }

    #[test]
    fn path_relations() {
        let p = RelPath::parse(b"a/b/c", false).unwrap();
        assert_eq!(p.parent().as_bytes(), b"a/b");
        assert_eq!(p.name(), b"c");
        assert!(p.starts_with(&RelPath::parse(b"a/b", false).unwrap()));
        assert!(!p.starts_with(&RelPath::parse(b"a/bb", false).unwrap()));
        assert!(p.starts_with(&RelPath::root()));
        let a: Vec<&[u8]> = p.ancestors().collect();
        assert_eq!(a, vec![&b"a"[..], &b"a/b"[..]]);
        let to = RelPath::parse(b"x", false).unwrap();
        let from = RelPath::parse(b"a", false).unwrap();
        assert_eq!(p.rebase(&from, &to).as_bytes(), b"x/b/c");
        assert_eq!(from.rebase(&from, &to).as_bytes(), b"x");
        assert_eq!(p.to_string(), "/a/b/c");
    }
}
