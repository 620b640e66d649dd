//! A real full disk: the upper on a small loop-mounted ext4. Untarring into the mount runs
//! into ENOSPC; with the disk full, copy-ups (of data, of metadata, of a directory) fail
//! with ENOSPC and leave nothing in the upper or the work dir; after deleting, writes and
//! copy-ups succeed again; a layerfs remount and the kernel's overlay over the same upper
//! show the same tree.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::imagekit::noise;
use testkit::{require_root, tree, Kernel, Layerfs};

/// An ext4 filesystem in a file, loop-mounted (`mount -o loop`: the loop device is
/// released at unmount); unmounted in Drop.
struct LoopExt4 {
    mnt: PathBuf,
}

impl LoopExt4 {
    fn new(dir: &Path, mib: u64) -> LoopExt4 {
        let img = dir.join("ext4.img");
        fs::File::create(&img).unwrap().set_len(mib << 20).unwrap();
        // -m 0: no blocks reserved for root (the daemon is root and would use them).
        let o = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&img)
            .output()
            .expect("mkfs.ext4 (e2fsprogs)");
        assert!(
            o.status.success(),
            "mkfs.ext4: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let mnt = dir.join("ext4");
        fs::create_dir(&mnt).unwrap();
        let o = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "mount -o loop: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        LoopExt4 { mnt }
    }

    /// Commits the journal: blocks freed by a deletion are reusable only after it.
    fn sync(&self) {
        let d = fs::File::open(&self.mnt).unwrap();
        // SAFETY: `d` is an open fd for the call's duration.
        let r = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&d)) };
        assert_eq!(r, 0);
    }
}

impl Drop for LoopExt4 {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.mnt.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is NUL-terminated.
        if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
            // SAFETY: as above; detached if still busy, the loop device goes with it.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn is_enospc(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC)
}

/// Entries of a directory, sorted.
fn names(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_full_upper_fails_cleanly_and_recovers() {
    if !require_root() {
        return;
    }
    let t = tempfile::Builder::new()
        .prefix("i24-enospc")
        .tempdir()
        .unwrap();
    let disk = LoopExt4::new(t.path(), 24);
    let l = t.path().join("lower");
    fs::create_dir_all(l.join("d/sub")).unwrap();
    let big = noise(6 << 20, 1);
    fs::write(l.join("big"), &big).unwrap();
    fs::write(l.join("d/sub/f"), b"lower file\n").unwrap();
    fs::write(l.join("small"), b"small\n").unwrap();
    let (u, w) = (disk.mnt.join("upper"), disk.mnt.join("work"));
    fs::create_dir(&u).unwrap();
    fs::create_dir(&w).unwrap();
    let lowers = std::slice::from_ref(&l);
    let mp = t.path().join("mnt");

    // A tar of 30 MiB, more than the disk holds.
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..30 {
        fs::write(src.join(format!("part{i:02}")), noise(1 << 20, 100 + i)).unwrap();
    }
    let tarball = t.path().join("fill.tar");
    let o = Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .output()
        .unwrap();
    assert!(o.status.success());

    {
        let m = Layerfs::mount_rw(lowers, &u, &w, &mp);
        fs::create_dir(m.path("x")).unwrap();
        let o = Command::new("tar")
            .arg("-xf")
            .arg(&tarball)
            .arg("-C")
            .arg(m.path("x"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "the untar fitted on a 24 MiB disk");
        assert!(err.contains("No space left on device"), "tar: {err}");
        // Fill what tar left, 4 KiB at a time.
        let mut filler = fs::File::create(m.path("filler")).unwrap();
        let e = loop {
            if let Err(e) = filler
                .write_all(&[0x55; 4096])
                .and_then(|()| filler.sync_data())
            {
                break e;
            }
        };
        assert!(is_enospc(&e), "filling: {e}");
        drop(filler);
        let before_u = names(&u);

        // With the disk full, copy-ups fail with ENOSPC, leaving nothing behind.
        let e = fs::OpenOptions::new()
            .append(true)
            .open(m.path("big"))
            .and_then(|mut f| f.write_all(b"+"))
            .unwrap_err();
        assert!(is_enospc(&e), "data copy-up: {e}");
        let e = fs::set_permissions(m.path("big"), fs::Permissions::from_mode(0o600)).unwrap_err();
        assert!(is_enospc(&e), "metadata copy-up: {e}");
        let e = fs::create_dir(m.path("d/sub/new")).unwrap_err();
        assert!(is_enospc(&e), "directory copy-up: {e}");
        assert_eq!(
            names(&u),
            before_u,
            "a failed copy-up left an entry in the upper"
        );
        assert_eq!(
            names(&w),
            Vec::<String>::new(),
            "a failed copy-up left debris in the work dir"
        );
        assert_eq!(fs::read(m.path("big")).unwrap(), big, "big changed");
        assert_eq!(
            fs::metadata(m.path("big")).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(!m.path("d/sub/new").exists());

        // Delete, and everything works again.
        fs::remove_dir_all(m.path("x")).unwrap();
        fs::remove_file(m.path("filler")).unwrap();
        disk.sync();
        fs::OpenOptions::new()
            .append(true)
            .open(m.path("big"))
            .and_then(|mut f| f.write_all(b"+"))
            .unwrap();
        fs::create_dir(m.path("d/sub/new")).unwrap();
        fs::write(m.path("d/sub/new/file"), noise(2 << 20, 7)).unwrap();
        let mut grown = big.clone();
        grown.push(b'+');
        assert_eq!(fs::read(m.path("big")).unwrap(), grown);
        m.assert_no_errors_logged();
    }

    // The next mount and the kernel's overlay show the same tree.
    let ours = {
        let m = Layerfs::mount_rw(lowers, &u, &w, &mp);
        tree::snapshot(&m.mp)
    };
    let kmp = t.path().join("kmnt");
    let theirs = {
        let k = Kernel::mount_rw(lowers, &u, &w, &kmp);
        tree::snapshot(&k.mp)
    };
    tree::assert_same(&theirs, &ours, "kernel overlay vs layerfs after ENOSPC");
    assert!(ours.meta.keys().any(|p| p == Path::new("d/sub/new/file")));
    assert!(!ours
        .meta
        .keys()
        .any(|p| p.starts_with("x") || p == Path::new("filler")));
    drop(disk);
}
