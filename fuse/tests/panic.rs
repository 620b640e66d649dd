//! A bug in the core must cost one request (answered EIO), not a worker thread: mounted with
//! a single worker, a panicking lookup is answered and the next requests still are.

// A test of the adapter alone, without layerfs-base's wrappers: its two libc calls (a
// zeroed `stat`, `geteuid`) say why they are sound where they are.
#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::time::Duration;

use layerfs_fuse::fuser::{self, MountOption};
use layerfs_fuse::{Adapter, AdapterOptions, Core, DirEntry, Entry, FileIo, Opened, ToErrno};

struct Fail(i32);

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "errno {}", self.0)
    }
}

impl ToErrno for Fail {
    fn errno(&self) -> i32 {
        self.0
    }
}

/// A root directory whose lookup of "boom" panics; everything else is absent or refused.
struct Fake;

fn root_attr() -> Entry {
    // SAFETY: libc::stat is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_ino = 1;
    st.st_mode = libc::S_IFDIR | 0o755;
    st.st_nlink = 2;
    Entry {
        node: 1,
        generation: 0,
        attr: st,
        ttl: Duration::ZERO,
    }
}

impl Core for Fake {
    type Error = Fail;
    fn lookup(&self, _p: u64, name: &OsStr) -> Result<Entry, Fail> {
        if name == "boom" {
            panic!("a bug in the core");
        }
        Err(Fail(libc::ENOENT))
    }
    fn negative_ttl(&self) -> Option<Duration> {
        None
    }
    fn forget(&self, _i: u64, _n: u64) {}
    fn getattr(&self, ino: u64) -> Result<Entry, Fail> {
        if ino == 1 {
            Ok(root_attr())
        } else {
            Err(Fail(libc::ENOENT))
        }
    }
    fn readlink(&self, _i: u64) -> Result<Vec<u8>, Fail> {
        Err(Fail(libc::EINVAL))
    }
    fn open(&self, _i: u64, _f: i32, _k: bool, _c: layerfs_fuse::Ctx) -> Result<Opened, Fail> {
        Err(Fail(libc::EACCES))
    }
    fn files_immutable(&self) -> bool {
        true
    }
    fn read(&self, _i: u64, _fh: u64, _o: u64, _s: u32) -> Result<Vec<u8>, Fail> {
        Err(Fail(libc::EIO))
    }
    fn release(&self, _i: u64, _fh: u64) {}
    fn lseek(&self, _i: u64, _fh: u64, _o: i64, _w: i32) -> Result<i64, Fail> {
        Err(Fail(libc::EINVAL))
    }
    fn readdir(
        &self,
        _i: u64,
        _o: u64,
        _p: bool,
        _add: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> Result<(), Fail> {
        Ok(())
    }
    fn getxattr(&self, _i: u64, _n: &OsStr) -> Result<Vec<u8>, Fail> {
        Err(Fail(libc::ENODATA))
    }
    fn listxattr(&self, _i: u64) -> Result<Vec<u8>, Fail> {
        Ok(Vec::new())
    }
    fn statfs(&self, _i: u64) -> Result<libc::statvfs, Fail> {
        Err(Fail(libc::ENOSYS))
    }
    fn access(&self, _i: u64, _m: i32, _u: u32, _g: u32) -> Result<(), Fail> {
        Ok(())
    }
    fn mutation_error(&self) -> Fail {
        Fail(libc::EROFS)
    }
}

#[test]
fn a_panicking_core_call_is_answered_eio_and_the_worker_survives() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("LAYERFS_NO_SKIP").is_none(),
            "needs root to mount"
        );
        eprintln!("SKIP a_panicking_core_call_is_answered_eio_and_the_worker_survives: needs root to mount");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mut config = fuser::Config::default();
    config.mount_options = vec![MountOption::FSName("panic-test".into())];
    config.n_threads = Some(1);
    let adapter = Adapter::new(
        Fake,
        AdapterOptions {
            file_io: FileIo::Handles,
            acl: true,
            lower_direct_io: None,
        },
    );
    let session = fuser::spawn_mount(adapter, t.path(), &config).expect("mount");
    // The checks run on another thread: with a dead worker they would block forever, and
    // the test must fail, not hang.
    let dir = t.path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let boom: Vec<Option<i32>> = (0..3)
            .map(|_| {
                std::fs::symlink_metadata(dir.join("boom"))
                    .err()
                    .and_then(|e| e.raw_os_error())
            })
            .collect();
        let miss = std::fs::symlink_metadata(dir.join("absent"))
            .err()
            .and_then(|e| e.raw_os_error());
        let root_is_dir = std::fs::metadata(&dir).map(|m| m.is_dir()).unwrap_or(false);
        let _ = tx.send((boom, miss, root_is_dir));
    });
    let (boom, miss, root_is_dir) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the mount stopped answering after a panic in the core");
    assert_eq!(boom, vec![Some(libc::EIO); 3]);
    assert_eq!(miss, Some(libc::ENOENT));
    assert!(root_is_dir);
    drop(session);
}
