//! The layer stack: opened layer roots, their identities, and the inode-number scheme;
//! [`dirindex`] builds one directory's merged view from its layers, [`prefetch`] indexes
//! directories ahead of a tree walk.

pub mod dirindex;
pub mod prefetch;

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::sys;

/// Position of a layer in the stack: 0 is the topmost lower (the leftmost in `lowerdir=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerIdx(pub u16);

impl fmt::Display for LayerIdx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layer {}", self.0)
    }
}

/// An inode number as the merged view reports it (and as FUSE uses it as node id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ino(pub u64);

impl Ino {
    /// FUSE's fixed node id of the mount root.
    pub const ROOT: Ino = Ino(1);
}

/// One read-only layer.
#[derive(Debug)]
pub struct Layer {
    pub idx: LayerIdx,
    /// The directory as given (after resolving a symlink once, at mount time).
    pub path: PathBuf,
    /// The opened root directory; everything in the layer is reached relative to it.
    pub root: Arc<OwnedFd>,
    /// Index of the layer's filesystem in the inode scheme (see [`InoScheme`]).
    pub fsid: u16,
}

/// Why a layer could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("lower directory {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("lower directory {path}: not a directory")]
    NotDir { path: PathBuf },
    #[error("too many layers ({0}); at most 65535 are supported")]
    TooMany(usize),
    /// Two layers that are one directory (the kernel: "conflicting lowerdir path", ELOOP).
    #[error("lowerdir {path}: conflicting lowerdir path: it is also {other}")]
    Conflicting { path: PathBuf, other: String },
    /// A layer inside another (the kernel: "overlapping lowerdir path", ELOOP).
    #[error("{inner_what} {inner} is inside {outer_what} {outer}: overlapping lowerdir path")]
    Overlapping {
        inner_what: &'static str,
        inner: PathBuf,
        outer_what: &'static str,
        outer: PathBuf,
    },
}

/// Refuses layers that are one directory or nest, as kernel overlayfs refuses them at mount
/// time (checked side by side on 6.18): a lowerdir given twice or equal to the upperdir is
/// "conflicting"; a lowerdir inside another lowerdir, the upperdir or the workdir is
/// "overlapping". The kernel mounts an upperdir or workdir *inside* a lowerdir, and then
/// answers ELOOP for the path in the merged view that leads to it ("overlapping layers");
/// layerfs refuses that too, at mount time, rather than serve a view holding its own
/// upper. Paths are canonical (symlinks resolved); `work` without `upper` is ignored.
pub fn check_overlaps(
    lowers: &[PathBuf],
    upper: Option<&Path>,
    work: Option<&Path>,
) -> Result<(), LayerError> {
    let mut layers: Vec<(&'static str, &Path)> = Vec::new();
    if let Some(u) = upper {
        layers.push(("upperdir", u));
        layers.extend(work.map(|w| ("workdir", w)));
    }
    for l in lowers {
        for &(what, other) in &layers {
            let lower = ("lowerdir", l.as_path());
            if l == other {
                return Err(LayerError::Conflicting {
                    path: l.clone(),
                    other: if what == "lowerdir" {
                        "another lowerdir".into()
                    } else {
                        format!("the {what}")
                    },
                });
            }
            let (inner, outer) = if l.starts_with(other) {
                (lower, (what, other))
            } else if other.starts_with(l) {
                ((what, other), lower)
            } else {
                continue;
            };
            return Err(LayerError::Overlapping {
                inner_what: inner.0,
                inner: inner.1.to_path_buf(),
                outer_what: outer.0,
                outer: outer.1.to_path_buf(),
            });
        }
        layers.push(("lowerdir", l));
    }
    Ok(())
}

/// The ordered lower layers of one mount.
#[derive(Debug)]
pub struct Stack {
    layers: Vec<Layer>,
    inos: InoScheme,
    upper_fsid: Option<u16>,
}

impl Stack {
    /// Opens every lower directory, top first. Symlinked lower dirs are resolved here, once.
    pub fn open(lowers: &[PathBuf]) -> Result<Stack, LayerError> {
        Self::open_with_upper(lowers, None)
    }

    /// Like [`Stack::open`], with the filesystem of an upper layer (its `st_dev`) counted in
    /// the inode scheme, so upper inode numbers never collide with lower ones.
    pub fn open_with_upper(
        lowers: &[PathBuf],
        upper_dev: Option<u64>,
    ) -> Result<Stack, LayerError> {
        if lowers.len() > u16::MAX as usize {
            return Err(LayerError::TooMany(lowers.len()));
        }
        let mut devs: Vec<u64> = Vec::new();
        let mut layers = Vec::with_capacity(lowers.len());
        for (i, path) in lowers.iter().enumerate() {
            let open_err = |source| LayerError::Open {
                path: path.clone(),
                source,
            };
            let root = sys::open_host_dir(path).map_err(|e| {
                if e.raw_os_error() == Some(libc::ENOTDIR) {
                    LayerError::NotDir { path: path.clone() }
                } else {
                    open_err(e)
                }
            })?;
            let st = sys::fstat(root.as_fd()).map_err(open_err)?;
            let fsid = match devs.iter().position(|&d| d == st.st_dev) {
                Some(p) => p,
                None => {
                    devs.push(st.st_dev);
                    devs.len() - 1
                }
            } as u16;
            // The resolved path, for messages: one readlink of the open fd, not one per
            // component of the path as canonicalize would do.
            let path = sys::fd_path(root.as_fd()).unwrap_or_else(|_| path.clone());
            layers.push(Layer {
                idx: LayerIdx(i as u16),
                path,
                root: Arc::new(root),
                fsid,
            });
        }
        let upper_fsid = upper_dev.map(|dev| match devs.iter().position(|&d| d == dev) {
            Some(p) => p as u16,
            None => {
                devs.push(dev);
                (devs.len() - 1) as u16
            }
        });
        Ok(Stack {
            inos: InoScheme::new(devs.len()),
            layers,
            upper_fsid,
        })
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// With `on`, inode numbers of at most 32 bits (`ino32_t`): the filesystem index takes
    /// the top bits of 32, and an object whose real number does not fit below them gets
    /// one from the overflow table (unique in the mount, not kept across mounts).
    pub fn with_ino32(mut self, on: bool) -> Stack {
        if on {
            self.inos = InoScheme::with_width(self.inos.filesystems, 32);
        }
        self
    }

    pub fn layer(&self, idx: LayerIdx) -> &Layer {
        &self.layers[idx.0 as usize]
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The inode-scheme index of the upper's filesystem (stacks opened with an upper).
    pub fn upper_fsid(&self) -> Option<u16> {
        self.upper_fsid
    }

    /// The merged inode number of the object `real_ino` of the upper layer.
    pub fn upper_ino(&self, real_ino: u64) -> Ino {
        self.inos.map(self.upper_fsid.unwrap_or(0), real_ino)
    }

    /// The merged inode number of the object `real_ino` on filesystem `fsid` (an index of
    /// the inode scheme, as in [`Layer::fsid`]).
    pub fn fs_ino(&self, fsid: u16, real_ino: u64) -> Ino {
        self.inos.map(fsid, real_ino)
    }

    /// The merged inode number of the object `real_ino` in layer `idx`.
    pub fn ino(&self, idx: LayerIdx, real_ino: u64) -> Ino {
        self.inos.map(self.layer(idx).fsid, real_ino)
    }
}

/// Inode numbers in the style of overlayfs' `xino`: the real inode number, with the index of
/// its filesystem in the high bits when the layers span several filesystems.
///
/// - Same path, same layers: same number across remounts (real inode numbers are stable).
/// - Hard links of one file in one layer share the number, as they share the real one.
/// - Unique in the mount: distinct (filesystem, real inode) pairs map to distinct numbers.
///   A real number that does not fit below the fsid bits (rare: only 64-bit inode
///   filesystems) gets a number from an overflow table, unique but not stable across mounts.
#[derive(Debug)]
struct InoScheme {
    /// How many filesystems the layers span.
    filesystems: usize,
    /// How wide a number is: 64, or 32 with `ino32_t`.
    width: u32,
    /// Bits reserved at the top for the filesystem index (0 when all layers share one).
    fsid_bits: u32,
    overflow: DashMap<(u16, u64), u64>,
    next_overflow: AtomicU64,
}

impl InoScheme {
    fn new(filesystems: usize) -> Self {
        Self::with_width(filesystems, 64)
    }

    fn with_width(filesystems: usize, width: u32) -> Self {
        let fsid_bits = if filesystems <= 1 {
            0
        } else {
            usize::BITS - (filesystems - 1).leading_zeros()
        };
        InoScheme {
            filesystems,
            width,
            fsid_bits,
            overflow: DashMap::new(),
            // Counting down from the top of the first fsid's range keeps overflow numbers
            // far from real ones (real inode numbers are small and dense).
            next_overflow: AtomicU64::new(1),
        }
    }

    fn map(&self, fsid: u16, real: u64) -> Ino {
        // The bits below the filesystem index.
        let low = self.width - self.fsid_bits;
        let fits = low == 64 || real >> low == 0;
        let mapped = if fits {
            if self.fsid_bits == 0 {
                real
            } else {
                ((fsid as u64) << low) | real
            }
        } else {
            0
        };
        // 0 is invalid and 1 is FUSE's root id: both go to the overflow table too.
        if mapped > 1 {
            return Ino(mapped);
        }
        let n = *self.overflow.entry((fsid, real)).or_insert_with(|| {
            let k = self.next_overflow.fetch_add(1, Ordering::Relaxed);
            // Overflow numbers live at the top of fsid 0's space, below any fsid bits.
            let top = if low == 64 {
                u64::MAX
            } else {
                (1u64 << low) - 1
            };
            top - k
        });
        Ino(n)
    }
}

/// Resolves lower directory arguments (possibly relative, e.g. podman's `l/ID`) against `cwd`.
pub fn resolve_against(cwd: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_layers_are_refused_as_the_kernel_refuses_them() {
        let p = |s: &str| PathBuf::from(s);
        let check = |l: &[&str], u: Option<&str>, w: Option<&str>| {
            let l: Vec<PathBuf> = l.iter().map(|s| p(s)).collect();
            check_overlaps(&l, u.map(Path::new), w.map(Path::new)).map_err(|e| e.to_string())
        };
        assert!(check(&["/t/a", "/t/b"], Some("/t/u"), Some("/t/w")).is_ok());
        // Siblings with a common prefix are not nested.
        assert!(check(&["/t/ab", "/t/a"], Some("/t/a-upper"), Some("/t/w")).is_ok());
        let e = check(&["/t/a"], Some("/t/a"), Some("/t/w")).unwrap_err();
        assert_eq!(
            e,
            "lowerdir /t/a: conflicting lowerdir path: it is also the upperdir"
        );
        let e = check(&["/t/u/l"], Some("/t/u"), Some("/t/w")).unwrap_err();
        assert_eq!(
            e,
            "lowerdir /t/u/l is inside upperdir /t/u: overlapping lowerdir path"
        );
        let e = check(&["/t/l"], Some("/t/l/u"), Some("/t/w")).unwrap_err();
        assert_eq!(
            e,
            "upperdir /t/l/u is inside lowerdir /t/l: overlapping lowerdir path"
        );
        assert!(check(&["/t/w/l"], Some("/t/u"), Some("/t/w"))
            .unwrap_err()
            .contains("inside workdir /t/w"));
        assert!(check(&["/t/l"], Some("/t/u"), Some("/t/l/w"))
            .unwrap_err()
            .contains("workdir /t/l/w is inside lowerdir /t/l"));
        assert!(check(&["/t/l", "/t/l"], None, None)
            .unwrap_err()
            .contains("it is also another lowerdir"));
        assert!(check(&["/t/l", "/t/l/x"], None, None)
            .unwrap_err()
            .contains("overlapping"));
        // A workdir alone (no upper) is not a layer.
        assert!(check(&["/t/l"], None, Some("/t/l")).is_ok());
    }

    #[test]
    fn single_filesystem_keeps_real_numbers() {
        let s = InoScheme::new(1);
        assert_eq!(s.map(0, 1234), Ino(1234));
        // 1 collides with FUSE's root id: remapped, and stably so.
        let a = s.map(0, 1);
        assert_ne!(a, Ino::ROOT);
        assert_eq!(a, s.map(0, 1));
    }

    #[test]
    fn several_filesystems_get_distinct_high_bits() {
        let s = InoScheme::new(3);
        assert_eq!(s.fsid_bits, 2);
        let a = s.map(0, 42);
        let b = s.map(1, 42);
        let c = s.map(2, 42);
        assert!(a != b && b != c && a != c);
        assert_eq!(a, Ino(42));
        // Too large to carry fsid bits: overflow, unique and repeatable.
        let big = s.map(1, u64::MAX - 5);
        assert_eq!(big, s.map(1, u64::MAX - 5));
        assert_ne!(big, s.map(2, u64::MAX - 5));
    }

    #[test]
    fn ino32_numbers_fit_in_32_bits_and_stay_unique() {
        let s = InoScheme::with_width(3, 32);
        let (a, b) = (s.map(0, 42), s.map(2, 42));
        assert_eq!(a, Ino(42));
        assert_eq!(b, Ino((2 << 30) | 42));
        // A real number too wide for the 30 bits left: the overflow table, below 2^32.
        let big = s.map(1, 1 << 31);
        assert!(big.0 < 1 << 32 && big != a && big != b);
        assert_eq!(big, s.map(1, 1 << 31));
        let one = InoScheme::with_width(1, 32);
        assert_eq!(one.map(0, 7), Ino(7));
        assert!(one.map(0, 1 << 40).0 <= u32::MAX as u64);
    }

    #[test]
    fn open_reports_missing_and_non_directories() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("nope");
        let err = Stack::open(std::slice::from_ref(&missing)).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let file = t.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = Stack::open(&[file]).unwrap_err();
        assert!(matches!(err, LayerError::NotDir { .. }), "{err}");
    }
}
