//! Copy-up and the upper-layer marker writers, driven directly (no FUSE mount). The kernel
//! check mounts overlayfs over what we wrote, to prove the kernel reads it the same way.

mod common;

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use layerfs_base::format::{self, MarkNs};
use layerfs_base::sys;
use layerfs_mount::upper::copyup::{copy_up, CopyOpts, Workdir, TEMP_PREFIX};

fn dir_fd(p: &Path) -> OwnedFd {
    sys::open_host_dir(p).unwrap()
}

fn is_root() -> bool {
    sys::geteuid() == 0
}

fn set_times(p: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    assert_eq!(
        // SAFETY: NUL-terminated path, two timespecs.
        unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                ts.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        },
        0
    );
}

struct Dirs {
    _t: tempfile::TempDir,
    lower: std::path::PathBuf,
    upper: std::path::PathBuf,
    work: std::path::PathBuf,
}

fn dirs() -> Dirs {
    let t = tempfile::tempdir().unwrap();
    let (lower, upper, work) = (
        t.path().join("lower"),
        t.path().join("upper"),
        t.path().join("work"),
    );
    for d in [&lower, &upper, &work] {
        std::fs::create_dir(d).unwrap();
    }
    Dirs {
        _t: t,
        lower,
        upper,
        work,
    }
}

fn up(d: &Dirs, name: &str) -> std::io::Result<()> {
    let src = dir_fd(&d.lower);
    let st = sys::lstatat(src.as_fd(), &CString::new(name).unwrap()).unwrap();
    let work = Workdir::new(dir_fd(&d.work));
    copy_up(
        src.as_fd(),
        name.as_bytes(),
        &st,
        &work,
        dir_fd(&d.upper).as_fd(),
        CopyOpts {
            fsync: true,
            origin: None,
            data: true,
            owner_optional: false,
            metacopy: None,
        },
    )
}

fn workdir_is_empty(d: &Dirs) -> bool {
    std::fs::read_dir(&d.work).unwrap().next().is_none()
}

#[test]
fn a_regular_file_keeps_data_mode_owner_times_and_xattrs() {
    let d = dirs();
    let f = d.lower.join("f");
    std::fs::write(&f, b"payload").unwrap();
    if is_root() {
        std::os::unix::fs::chown(&f, Some(1000), Some(1001)).unwrap();
    }
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4751)).unwrap();
    let p = CString::new(f.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(
        // SAFETY: NUL-terminated strings and a live value.
        unsafe { libc::setxattr(p.as_ptr(), c"user.k".as_ptr(), b"v".as_ptr().cast(), 1, 0) },
        0
    );
    set_times(&f, (1_000_000_000, 123), (1_500_000_000, 456_789));
    up(&d, "f").unwrap();
    let (a, b) = (
        std::fs::symlink_metadata(&f).unwrap(),
        std::fs::symlink_metadata(d.upper.join("f")).unwrap(),
    );
    assert_eq!(std::fs::read(d.upper.join("f")).unwrap(), b"payload");
    assert_eq!(b.mode(), a.mode(), "mode, setuid included");
    assert_eq!((b.uid(), b.gid()), (a.uid(), a.gid()));
    assert_eq!(
        (b.mtime(), b.mtime_nsec(), b.atime(), b.atime_nsec()),
        (1_500_000_000, 456_789, 1_000_000_000, 123)
    );
    assert_eq!(
        common::tree::xattrs(&d.upper.join("f"))
            .get("user.k")
            .map(Vec::as_slice),
        Some(&b"v"[..])
    );
    assert!(workdir_is_empty(&d));
}

#[test]
fn a_sparse_file_stays_sparse() {
    let d = dirs();
    let f = d.lower.join("sparse");
    {
        let file = std::fs::File::create(&f).unwrap();
        use std::os::unix::fs::FileExt;
        file.write_all_at(b"head", 0).unwrap();
        file.write_all_at(b"middle", 32 << 20).unwrap();
        file.set_len(64 << 20).unwrap();
    }
    up(&d, "sparse").unwrap();
    let m = std::fs::metadata(d.upper.join("sparse")).unwrap();
    assert_eq!(m.len(), 64 << 20);
    assert!(
        m.blocks() * 512 < (1 << 20),
        "{} bytes allocated for two small extents",
        m.blocks() * 512
    );
    let data = std::fs::read(d.upper.join("sparse")).unwrap();
    assert_eq!(&data[..4], b"head");
    assert_eq!(&data[32 << 20..(32 << 20) + 6], b"middle");
    assert!(data[4..32 << 20].iter().all(|&b| b == 0));
}

#[test]
fn symlinks_directories_and_fifos() {
    let d = dirs();
    std::os::unix::fs::symlink("../../etc/passwd", d.lower.join("link")).unwrap();
    std::fs::create_dir(d.lower.join("dir")).unwrap();
    std::fs::write(d.lower.join("dir/child"), "stays below").unwrap();
    std::fs::set_permissions(d.lower.join("dir"), std::fs::Permissions::from_mode(0o1750)).unwrap();
    let c = CString::new(d.lower.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o640) }, 0);
    for n in ["link", "dir", "fifo"] {
        up(&d, n).unwrap();
    }
    assert_eq!(
        std::fs::read_link(d.upper.join("link")).unwrap(),
        Path::new("../../etc/passwd")
    );
    let dir = std::fs::metadata(d.upper.join("dir")).unwrap();
    assert!(dir.is_dir());
    assert_eq!(dir.mode() & 0o7777, 0o1750);
    assert!(
        std::fs::read_dir(d.upper.join("dir"))
            .unwrap()
            .next()
            .is_none(),
        "a directory is copied without its contents"
    );
    use std::os::unix::fs::FileTypeExt;
    let fifo = std::fs::symlink_metadata(d.upper.join("fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o640);
    assert!(workdir_is_empty(&d));
}

#[test]
fn an_existing_upper_entry_is_never_replaced_and_nothing_is_left_behind() {
    let d = dirs();
    std::fs::write(d.lower.join("f"), "lower").unwrap();
    std::fs::write(d.upper.join("f"), "upper").unwrap();
    let err = up(&d, "f").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
    assert_eq!(std::fs::read_to_string(d.upper.join("f")).unwrap(), "upper");
    assert!(workdir_is_empty(&d));
}

#[test]
fn leftovers_of_a_crashed_copy_are_cleared() {
    let d = dirs();
    std::fs::write(d.work.join(format!("{TEMP_PREFIX}1-1")), "torn").unwrap();
    std::fs::create_dir_all(d.work.join(format!("{TEMP_PREFIX}1-2/sub"))).unwrap();
    std::fs::write(d.work.join(format!("{TEMP_PREFIX}1-2/sub/x")), "").unwrap();
    std::fs::write(d.work.join("not-ours"), "").unwrap();
    let work = Workdir::new(dir_fd(&d.work));
    assert_eq!(work.clear_leftovers().unwrap(), 2);
    let left: Vec<_> = std::fs::read_dir(&d.work)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("not-ours")]);
}

#[test]
fn the_kernel_reads_our_whiteouts_and_opaque_marks() {
    if !common::require_root("the_kernel_reads_our_whiteouts_and_opaque_marks") {
        return;
    }
    let d = dirs();
    std::fs::write(d.lower.join("gone"), "x").unwrap();
    std::fs::create_dir_all(d.lower.join("op")).unwrap();
    std::fs::write(d.lower.join("op/hidden"), "x").unwrap();
    std::fs::write(d.lower.join("kept"), "x").unwrap();
    let upper = dir_fd(&d.upper);
    format::write_whiteout(upper.as_fd(), c"gone").unwrap();
    std::fs::create_dir(d.upper.join("op")).unwrap();
    format::write_opaque(upper.as_fd(), b"op", MarkNs::Trusted).unwrap();
    std::fs::write(d.upper.join("op/mine"), "m").unwrap();
    let k = common::Kernel::mount(&[d.upper.clone(), d.lower.clone()], &d.work.join("mnt"));
    let mut names: Vec<_> = std::fs::read_dir(&k.mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["kept", "op"]);
    let inner: Vec<_> = std::fs::read_dir(k.mp.join("op"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(inner, vec![std::ffi::OsString::from("mine")]);
}

mod sparse_layouts {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// Random extents of data at random offsets, a random final size: the copy reads
        /// back byte for byte, and allocates no more than the source.
        #[test]
        fn copies_of_random_sparse_layouts_are_exact(
            extents in prop::collection::vec((0u64..(16 << 20), prop::collection::vec(any::<u8>(), 1..20_000)), 0..6),
            tail in 0u64..(4 << 20),
        ) {
            let d = dirs();
            let f = d.lower.join("s");
            let file = std::fs::File::create(&f).unwrap();
            use std::os::unix::fs::FileExt;
            let mut end = 0;
            for (off, bytes) in &extents {
                file.write_all_at(bytes, *off).unwrap();
                end = end.max(off + bytes.len() as u64);
            }
            file.set_len(end + tail).unwrap();
            drop(file);
            up(&d, "s").unwrap();
            let (a, b) = (std::fs::read(&f).unwrap(), std::fs::read(d.upper.join("s")).unwrap());
            prop_assert!(a == b, "content differs");
            let (ma, mb) = (std::fs::metadata(&f).unwrap(), std::fs::metadata(d.upper.join("s")).unwrap());
            prop_assert!(mb.blocks() <= ma.blocks() + 8, "copy allocates {} blocks, source {}", mb.blocks(), ma.blocks());
        }
    }
}

fn xattr_raw(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: NUL-terminated strings; the buffer is writable for its length.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| {
        buf.truncate(r as usize);
        buf
    })
}

#[test]
fn the_origin_we_record_is_the_kernels_and_keeps_the_inode_number() {
    if !common::require_root("the_origin_we_record_is_the_kernels_and_keeps_the_inode_number") {
        return;
    }
    let d = dirs();
    std::fs::write(d.lower.join("f"), "lower data").unwrap();
    let lower_ino = std::fs::metadata(d.lower.join("f")).unwrap().ino();

    // What the kernel records when it copies the same file up.
    let (ku, kw) = (d.work.join("kupper"), d.work.join("kwork"));
    std::fs::create_dir_all(&ku).unwrap();
    std::fs::create_dir_all(&kw).unwrap();
    let kernel_origin = {
        let k = common::Kernel::mount_rw(
            std::slice::from_ref(&d.lower),
            &ku,
            &kw,
            &d.work.join("kmnt"),
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(k.mp.join("f"))
            .unwrap(); // triggers copy-up
        drop(k);
        xattr_raw(&ku.join("f"), "trusted.overlay.origin").expect("the kernel records an origin")
    };

    // Ours.
    let src = dir_fd(&d.lower);
    let st = sys::lstatat(src.as_fd(), c"f").unwrap();
    let work = Workdir::new(dir_fd(&d.work));
    let opts = CopyOpts {
        fsync: false,
        origin: Some(MarkNs::Trusted),
        data: true,
        owner_optional: false,
        metacopy: None,
    };
    copy_up(
        src.as_fd(),
        b"f",
        &st,
        &work,
        dir_fd(&d.upper).as_fd(),
        opts,
    )
    .unwrap();
    let ours = xattr_raw(&d.upper.join("f"), "trusted.overlay.origin").unwrap();
    assert_eq!(
        ours, kernel_origin,
        "origin record differs from the kernel's"
    );

    // The kernel, mounting our upper, reports the lower file's inode number for the copy.
    let w2 = d.work.join("w2");
    std::fs::create_dir_all(&w2).unwrap();
    let seen = {
        let k = common::Kernel::mount_rw(
            std::slice::from_ref(&d.lower),
            &d.upper,
            &w2,
            &d.work.join("m2"),
        );
        std::fs::metadata(k.mp.join("f"))
            .map(|m| (m.ino(), std::fs::read_to_string(k.mp.join("f")).unwrap()))
    };
    let (ino, data) = seen.unwrap();
    assert_eq!(data, "lower data");
    assert_eq!(ino, lower_ino, "the kernel does not take our origin");
}
