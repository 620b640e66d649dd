//! Snapshots of a mounted tree, for comparing two mounts of the same stack.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a merged view shows for one path. Times and directory sizes are left out: the two
/// mounts compared may read different copies of the layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: Option<u64>,
    pub nlink: Option<u64>,
    pub rdev: u64,
    pub content: Option<Vec<u8>>,
    pub target: Option<PathBuf>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// A walked tree: metadata per relative path, and the inode number per path.
#[derive(Debug, Default)]
pub struct Tree {
    pub meta: BTreeMap<PathBuf, Meta>,
    pub ino: BTreeMap<PathBuf, u64>,
    /// Names readdir listed but lstat could not find. Kernel overlayfs does this for
    /// whiteouts inside a lower directory that merges with nothing (it passes the real
    /// directory through); layerfs must never do it.
    pub phantoms: Vec<PathBuf>,
}

pub fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut list = vec![0u8; 4096];
    // SAFETY: `p` is NUL-terminated; buffer writable for its length.
    let n = unsafe { libc::llistxattr(p.as_ptr(), list.as_mut_ptr().cast(), list.len()) };
    let mut out = BTreeMap::new();
    if n <= 0 {
        return out;
    }
    list.truncate(n as usize);
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: as above.
        let r =
            unsafe { libc::lgetxattr(p.as_ptr(), cname.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(
            r >= 0,
            "lgetxattr {:?} on {}",
            String::from_utf8_lossy(name),
            path.display()
        );
        v.truncate(r as usize);
        // Security labels are the host's business, not the layers'.
        let name = String::from_utf8_lossy(name).into_owned();
        if !name.starts_with("security.") {
            out.insert(name, v);
        }
    }
    out
}

fn walk(root: &Path, rel: &Path, t: &mut Tree) {
    let path = root.join(rel);
    let md = match std::fs::symlink_metadata(&path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            t.phantoms.push(rel.to_path_buf());
            return;
        }
        Err(e) => panic!("lstat {}: {e}", path.display()),
    };
    let ft = md.file_type();
    let meta = Meta {
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        size: (!ft.is_dir()).then(|| md.size()),
        nlink: (!ft.is_dir()).then(|| md.nlink()),
        rdev: md.rdev(),
        content: ft.is_file().then(|| {
            std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        }),
        target: ft.is_symlink().then(|| std::fs::read_link(&path).unwrap()),
        xattrs: xattrs(&path),
    };
    t.meta.insert(rel.to_path_buf(), meta);
    t.ino.insert(rel.to_path_buf(), md.ino());
    if ft.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("readdir {}: {e}", path.display()))
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        let unique: BTreeSet<_> = names.iter().collect();
        assert_eq!(
            unique.len(),
            names.len(),
            "duplicate names in {}",
            path.display()
        );
        for n in names {
            walk(root, &rel.join(n), t);
        }
    }
}

/// Walks the whole tree under `root`.
pub fn snapshot(root: &Path) -> Tree {
    let mut t = Tree::default();
    walk(root, Path::new(""), &mut t);
    t
}

/// For each path, the set of paths sharing its inode number.
pub fn ino_classes(t: &Tree) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut by_ino: BTreeMap<u64, BTreeSet<PathBuf>> = BTreeMap::new();
    for (p, i) in &t.ino {
        by_ino.entry(*i).or_default().insert(p.clone());
    }
    t.ino
        .iter()
        .map(|(p, i)| (p.clone(), by_ino[i].clone()))
        .collect()
}

/// Asserts two trees show the same thing, with a readable first difference.
pub fn assert_same(expected: &Tree, actual: &Tree, what: &str) {
    assert!(
        actual.phantoms.is_empty(),
        "{what}: listed but absent: {:?}",
        actual.phantoms
    );
    let ek: Vec<_> = expected.meta.keys().collect();
    let ak: Vec<_> = actual.meta.keys().collect();
    if ek != ak {
        let missing: Vec<_> = ek
            .iter()
            .filter(|k| !actual.meta.contains_key(**k))
            .collect();
        let extra: Vec<_> = ak
            .iter()
            .filter(|k| !expected.meta.contains_key(**k))
            .collect();
        panic!("{what}: different paths\n missing: {missing:?}\n extra: {extra:?}");
    }
    for (p, e) in &expected.meta {
        let a = &actual.meta[p];
        assert_eq!(e, a, "{what}: {} differs", p.display());
    }
    // Directories: the root's number may differ in meaning; compare classes of the rest.
    let (ec, ac) = (ino_classes(expected), ino_classes(actual));
    for (p, class) in &ec {
        assert_eq!(
            class,
            &ac[p],
            "{what}: inode sharing of {} differs",
            p.display()
        );
    }
}
