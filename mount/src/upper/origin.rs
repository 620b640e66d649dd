//! Reading copy-up origin records (`*.overlay.origin`, `format::origin`) back into the
//! lower file they name, over the filesystems of one mount, as the kernel's overlay does
//! (`ovl_check_origin_fh`): the record's handle is opened on each lower filesystem in layer
//! order, the first that finds the file wins, and a record whose file is gone names
//! nothing. Opening by handle needs `CAP_DAC_READ_SEARCH` (the kernel's overlay needs it
//! too); without it a record is decoded from the handle's bytes instead, which gives an
//! inode number but not the file's link count (docs/SEMANTICS.md).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use log::debug;

use crate::format::origin;
use crate::sys::{self, Stat};

/// What an origin record names.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    /// Found by its handle, as the kernel finds it: its filesystem (inode-scheme index) and
    /// its `stat`.
    Found(u16, Stat),
    /// Decoded from the record alone (opening by handle refused): its filesystem and inode
    /// number, when exactly one filesystem's handle layout fits.
    Decoded(u16, u64),
}

/// One filesystem of the mount.
#[derive(Debug)]
struct Fs {
    /// Its index in the inode scheme.
    id: u16,
    /// Its type (`f_type`), which says how to decode a handle.
    magic: i64,
    /// A directory on it, to open handles on; `None` for the upper's own filesystem, where
    /// the kernel looks for no origin.
    lower: Option<OwnedFd>,
}

/// The origin records' reader of one mount.
#[derive(Debug)]
pub struct Origins {
    fs: Vec<Fs>,
    /// Opening by handle has not been refused (`EPERM`) yet.
    open: AtomicBool,
}

impl Default for Origins {
    fn default() -> Origins {
        Origins {
            fs: Vec::new(),
            open: AtomicBool::new(true),
        }
    }
}

impl Origins {
    /// `upper`, then `lowers` in layer order: (inode-scheme index, any directory fd on it)
    /// for every layer of the mount.
    pub fn new<'a>(
        upper: Option<(u16, BorrowedFd<'a>)>,
        lowers: impl IntoIterator<Item = (u16, BorrowedFd<'a>)>,
    ) -> Origins {
        let mut out = Origins::default();
        let layers = upper.map(|u| (u, false)).into_iter();
        for ((id, fd), lower) in layers.chain(lowers.into_iter().map(|l| (l, true))) {
            let dup = || match fd.try_clone_to_owned() {
                Ok(d) => Some(d),
                Err(e) => {
                    debug!("origins: no fd to open handles on filesystem {id}: {e}");
                    None
                }
            };
            match out.fs.iter_mut().find(|f| f.id == id) {
                Some(f) if lower && f.lower.is_none() => f.lower = dup(),
                Some(_) => {}
                None => out.fs.push(Fs {
                    id,
                    magic: sys::fs_magic(fd).unwrap_or(0),
                    lower: if lower { dup() } else { None },
                }),
            }
        }
        out
    }

    /// The file `record` names: found by handle where we may open handles, else decoded.
    /// `None` when the record names nothing we can find (gone, unreadable, ambiguous).
    pub fn read(&self, record: &[u8]) -> Option<Origin> {
        let (kind, handle) = origin::handle(record)?;
        if self.open.load(Ordering::Relaxed) {
            for f in &self.fs {
                let Some(dir) = &f.lower else { continue };
                match sys::open_by_handle(dir.as_fd(), kind, handle) {
                    Ok(fd) => {
                        return sys::fstat(fd.as_fd())
                            .ok()
                            .map(|st| Origin::Found(f.id, st))
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                        debug!("origins: opening by handle refused ({e}): decoding records");
                        self.open.store(false, Ordering::Relaxed);
                        break;
                    }
                    // Not on this filesystem, or gone.
                    Err(_) => {}
                }
            }
            if self.open.load(Ordering::Relaxed) {
                return None;
            }
        }
        self.decode(record)
            .map(|(fs, ino)| Origin::Decoded(fs, ino))
    }

    /// The filesystem (inode-scheme index) and inode number `record` names, decoded from its
    /// bytes, if certain: exactly one filesystem's handle layout fits.
    pub fn decode(&self, record: &[u8]) -> Option<(u16, u64)> {
        let mut fits = self
            .fs
            .iter()
            .filter_map(|f| Some((f.id, origin::ino(record, f.magic)?)));
        let first = fits.next()?;
        fits.next().is_none().then_some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_records_name_the_lower_inode() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"x").unwrap();
        std::fs::hard_link(t.path().join("f"), t.path().join("g")).unwrap();
        let dir = sys::open_host_dir(t.path()).unwrap();
        let (kind, handle) = sys::file_handle(dir.as_fd(), c"f").unwrap();
        let rec = origin::record(kind, &handle);
        let st = sys::lstatat(dir.as_fd(), c"f").unwrap();
        let magic = sys::fs_magic(dir.as_fd()).unwrap();
        assert_eq!(
            origin::ino(&rec, magic),
            Some(st.st_ino),
            "fs magic {magic:#x}"
        );
        // Read over the filesystems of a mount: certain only when one layout fits.
        let two = |m: i64| Origins {
            fs: vec![
                Fs {
                    id: 0,
                    magic,
                    lower: None,
                },
                Fs {
                    id: 1,
                    magic: m,
                    lower: None,
                },
            ],
            open: AtomicBool::new(false),
        };
        let other_type = if magic == 0x0102_1994 {
            0xEF53
        } else {
            0x0102_1994
        };
        assert_eq!(two(other_type).decode(&rec), Some((0, st.st_ino)));
        assert_eq!(two(magic).decode(&rec), None, "two filesystems of one type");
        // A record from another filesystem (non-null uuid) is not ours to read.
        let mut other = rec.clone();
        other[5] = 1;
        assert_eq!(origin::ino(&other, magic), None);
        // Opened by handle (as root), the file itself, with its link count.
        let mount = Origins::new(None, [(3, dir.as_fd())]);
        match mount.read(&rec) {
            Some(Origin::Found(3, o)) => assert_eq!((o.st_ino, o.st_nlink), (st.st_ino, 2)),
            Some(Origin::Decoded(3, ino)) if sys::geteuid() != 0 => assert_eq!(ino, st.st_ino),
            r => panic!("read {r:?}"),
        }
        // Gone, it names nothing (as root; the kernel's overlay finds nothing either).
        std::fs::remove_file(t.path().join("f")).unwrap();
        std::fs::remove_file(t.path().join("g")).unwrap();
        if sys::geteuid() == 0 {
            assert!(mount.read(&rec).is_none());
        }
    }
}
