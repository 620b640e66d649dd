//! The wrappers against the kernel (no root needed): what each conversion to rustix's types
//! must keep of the libc calls' behaviour.

use super::*;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

fn dir(t: &tempfile::TempDir) -> OwnedFd {
    open_host_dir(t.path()).unwrap()
}

#[test]
fn read_dir_gives_every_entry_with_its_type_and_inode() {
    let t = tempfile::tempdir().unwrap();
    let d = dir(&t);
    std::fs::write(t.path().join("file"), "x").unwrap();
    std::fs::create_dir(t.path().join("sub")).unwrap();
    std::os::unix::fs::symlink("file", t.path().join("link")).unwrap();
    mknodat(d.as_fd(), c"fifo", libc::S_IFIFO | 0o600, 0).unwrap();
    // More names than one 64 KiB getdents64 buffer holds: the read goes on past it.
    let long = "n".repeat(200);
    for i in 0..1000 {
        std::fs::write(t.path().join(format!("{long}{i}")), "").unwrap();
    }
    let got = read_dir(d.as_fd()).unwrap();
    assert_eq!(got.len(), 1004, "no . or .., nothing lost");
    let find = |n: &str| got.iter().find(|e| &*e.name == n.as_bytes()).unwrap();
    assert_eq!(find("file").d_type, libc::DT_REG);
    assert_eq!(find("sub").d_type, libc::DT_DIR);
    assert_eq!(find("link").d_type, libc::DT_LNK);
    assert_eq!(find("fifo").d_type, libc::DT_FIFO);
    for name in ["file", "sub", "link", "fifo"] {
        let md = std::fs::symlink_metadata(t.path().join(name)).unwrap();
        assert_eq!(find(name).ino, md.ino(), "{name}");
    }
    // A second read of the same fd starts over.
    assert_eq!(read_dir(d.as_fd()).unwrap().len(), 1004);
}

#[test]
fn lstatat_and_fstat_fill_every_field() {
    let t = tempfile::tempdir().unwrap();
    let d = dir(&t);
    std::fs::write(t.path().join("f"), vec![7u8; 10_000]).unwrap();
    std::os::unix::fs::symlink("f", t.path().join("l")).unwrap();
    for name in [c"f", c"l"] {
        let st = lstatat(d.as_fd(), name).unwrap();
        let md = std::fs::symlink_metadata(t.path().join(name.to_str().unwrap())).unwrap();
        assert_eq!(
            (st.st_dev, st.st_ino, st.st_mode, st.st_nlink),
            (md.dev(), md.ino(), md.mode(), md.nlink())
        );
        assert_eq!(
            (st.st_uid, st.st_gid, st.st_rdev, st.st_size),
            (md.uid(), md.gid(), md.rdev(), md.size() as i64)
        );
        assert_eq!(
            (st.st_blksize, st.st_blocks),
            (md.blksize() as i64, md.blocks() as i64)
        );
        assert_eq!(
            (st.st_atime, st.st_atime_nsec, st.st_mtime, st.st_mtime_nsec),
            (md.atime(), md.atime_nsec(), md.mtime(), md.mtime_nsec())
        );
        assert_eq!(
            (st.st_ctime, st.st_ctime_nsec),
            (md.ctime(), md.ctime_nsec())
        );
    }
    let f = openat(d.as_fd(), c"f", libc::O_RDONLY).unwrap();
    let (a, b) = (fstat(f.as_fd()).unwrap(), lstatat(d.as_fd(), c"f").unwrap());
    assert_eq!(
        (a.st_ino, a.st_size, a.st_mode),
        (b.st_ino, b.st_size, b.st_mode)
    );
    assert_eq!(
        lstatat(d.as_fd(), c"none").unwrap_err().raw_os_error(),
        Some(libc::ENOENT)
    );
}

#[test]
fn proc_paths_are_built_on_the_stack_when_they_fit() {
    let t = tempfile::tempdir().unwrap();
    let d = dir(&t);
    let fd = d.as_raw_fd();
    let p = proc_path(d.as_fd(), b"name").unwrap();
    assert!(matches!(p, ProcPath::Stack(..)));
    assert_eq!(
        p.as_cstr().to_bytes(),
        format!("/proc/self/fd/{fd}/name").as_bytes()
    );
    let p = proc_path(d.as_fd(), b"").unwrap();
    assert_eq!(
        p.as_cstr().to_bytes(),
        format!("/proc/self/fd/{fd}").as_bytes()
    );
    let long = "x".repeat(400);
    let p = proc_path(d.as_fd(), long.as_bytes()).unwrap();
    assert!(matches!(p, ProcPath::Heap(..)));
    assert_eq!(
        p.as_cstr().to_bytes(),
        format!("/proc/self/fd/{fd}/{long}").as_bytes()
    );
    let err = proc_path(d.as_fd(), b"a\0b").err().unwrap();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
}

#[test]
fn xattrs_round_trip_whatever_their_size() {
    let t = tempfile::tempdir().unwrap();
    let d = dir(&t);
    std::fs::write(t.path().join("f"), "").unwrap();
    // Larger than the first 256-byte buffer: the call asks the size and tries again.
    let big = vec![b'v'; 1000];
    setxattr_at(d.as_fd(), b"f", c"user.big", &big, 0).unwrap();
    setxattr_at(d.as_fd(), b"f", c"user.small", b"s", libc::XATTR_CREATE).unwrap();
    let again = setxattr_at(d.as_fd(), b"f", c"user.small", b"s", libc::XATTR_CREATE);
    assert_eq!(again.unwrap_err().raw_os_error(), Some(libc::EEXIST));
    assert_eq!(getxattr_at(d.as_fd(), b"f", c"user.big").unwrap(), big);
    let list = listxattr_at(d.as_fd(), b"f").unwrap();
    let mut names: Vec<&[u8]> = split_xattr_list(&list).collect();
    names.sort();
    assert_eq!(names, [&b"user.big"[..], b"user.small"]);
    let f = openat(d.as_fd(), c"f", libc::O_RDONLY).unwrap();
    assert_eq!(fgetxattr(f.as_fd(), c"user.small").unwrap(), b"s");
    assert_eq!(flistxattr(f.as_fd()).unwrap(), list);
    // The directory itself (empty name: the magic link is followed).
    setxattr_at(d.as_fd(), b"", c"user.d", b"dir", 0).unwrap();
    assert_eq!(getxattr_at(d.as_fd(), b"", c"user.d").unwrap(), b"dir");
    removexattr_at(d.as_fd(), b"f", c"user.big").unwrap();
    let gone = getxattr_at(d.as_fd(), b"f", c"user.big").unwrap_err();
    assert_eq!(gone.raw_os_error(), Some(libc::ENODATA));
}

#[test]
fn mknodat_without_a_type_makes_a_regular_file() {
    let t = tempfile::tempdir().unwrap();
    let d = dir(&t);
    mknodat(d.as_fd(), c"r", 0o640, 0).unwrap();
    let st = lstatat(d.as_fd(), c"r").unwrap();
    assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFREG);
    assert_eq!(st.st_mode & 0o7777, 0o640 & !umask_now());
}

fn umask_now() -> u32 {
    let m = umask(0o022);
    umask(m);
    m
}

#[test]
fn lseek_finds_data_and_holes() {
    let t = tempfile::tempdir().unwrap();
    let d = dir(&t);
    let f = create_excl(d.as_fd(), c"sparse", libc::O_RDWR, 0o600).unwrap();
    pwrite_all(f.as_fd(), b"end", 1 << 20).unwrap();
    let data = lseek(f.as_fd(), 0, libc::SEEK_DATA).unwrap();
    assert!(data > 0 && data <= 1 << 20, "{data}");
    assert_eq!(lseek(f.as_fd(), 0, libc::SEEK_HOLE).unwrap(), 0);
    assert_eq!(lseek(f.as_fd(), 0, libc::SEEK_END).unwrap(), (1 << 20) + 3);
    assert_eq!(lseek(f.as_fd(), 5, libc::SEEK_SET).unwrap(), 5);
    assert_eq!(lseek(f.as_fd(), 5, libc::SEEK_CUR).unwrap(), 10);
    assert_eq!(
        lseek(f.as_fd(), 0, 99).unwrap_err().raw_os_error(),
        Some(libc::EINVAL)
    );
    let mut buf = [0u8; 8];
    assert_eq!(pread_full(f.as_fd(), &mut buf, (1 << 20) - 5).unwrap(), 8);
    assert_eq!(&buf, b"\0\0\0\0\0end");
}

#[test]
fn chown_with_minus_one_keeps_the_ids() {
    let t = tempfile::tempdir().unwrap();
    let d = dir(&t);
    std::fs::write(t.path().join("f"), "").unwrap();
    let before = lstatat(d.as_fd(), c"f").unwrap();
    lchownat(d.as_fd(), c"f", u32::MAX, u32::MAX).unwrap();
    let f = openat(d.as_fd(), c"f", libc::O_PATH).unwrap();
    fchown(f.as_fd(), u32::MAX, before.st_gid).unwrap();
    let after = lstatat(d.as_fd(), c"f").unwrap();
    assert_eq!((after.st_uid, after.st_gid), (before.st_uid, before.st_gid));
}

#[test]
fn times_are_set_and_omitted_as_asked() {
    let t = tempfile::tempdir().unwrap();
    let d = dir(&t);
    std::fs::write(t.path().join("f"), "").unwrap();
    let at = libc::timespec {
        tv_sec: 1_000_000,
        tv_nsec: 123,
    };
    let omit = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_OMIT,
    };
    lutimesat(d.as_fd(), c"f", at, at).unwrap();
    let f = openat(d.as_fd(), c"f", libc::O_PATH).unwrap();
    let mt = libc::timespec {
        tv_sec: 2_000_000,
        tv_nsec: 456,
    };
    futimens(f.as_fd(), omit, mt).unwrap();
    let st = lstatat(d.as_fd(), c"f").unwrap();
    assert_eq!((st.st_atime, st.st_atime_nsec), (1_000_000, 123));
    assert_eq!((st.st_mtime, st.st_mtime_nsec), (2_000_000, 456));
}

#[test]
fn flock_takes_every_operation() {
    let t = tempfile::tempdir().unwrap();
    let d = dir(&t);
    let f = create_excl(d.as_fd(), c"lock", libc::O_RDWR, 0o600).unwrap();
    let other = openat(d.as_fd(), c"lock", libc::O_RDONLY).unwrap();
    flock(f.as_fd(), libc::LOCK_EX).unwrap();
    let busy = flock(other.as_fd(), libc::LOCK_SH | libc::LOCK_NB).unwrap_err();
    assert_eq!(busy.raw_os_error(), Some(libc::EWOULDBLOCK));
    flock(f.as_fd(), libc::LOCK_UN).unwrap();
    flock(other.as_fd(), libc::LOCK_SH | libc::LOCK_NB).unwrap();
    let bad = flock(f.as_fd(), 0).unwrap_err();
    assert_eq!(bad.raw_os_error(), Some(libc::EINVAL));
}

#[test]
#[allow(clippy::zombie_processes)] // reaped by sys::waitpid, the call under test
fn kill_and_waitpid_report_how_a_child_ended_and_reap_any() {
    let child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    assert_eq!(waitpid(pid, libc::WNOHANG).unwrap(), None);
    kill(pid, 0).unwrap();
    kill(pid, libc::SIGTERM).unwrap();
    let (got, exit) = waitpid(pid, 0).unwrap().unwrap();
    assert_eq!((got, exit), (pid, Exit::Signal(libc::SIGTERM)));
    assert_eq!(exit.status(), 128 + libc::SIGTERM);
    let child = std::process::Command::new("sh")
        .args(["-c", "exit 3"])
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    assert_eq!(waitpid(pid, 0).unwrap(), Some((pid, Exit::Code(3))));
    // -1: any child, also one that made a process group of its own, as the shell pid 1 of
    // `layerfs run` must reap does (in one test: -1 would reap another test's child).
    use std::os::unix::process::CommandExt;
    let child = std::process::Command::new("sh")
        .args(["-c", "exit 4"])
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    assert_eq!(waitpid(-1, 0).unwrap(), Some((pid, Exit::Code(4))));
}

#[test]
fn a_read_from_the_disk_counts_in_the_threads_block_reads() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    // O_DIRECT goes past the page cache to the device: a read from the disk every time.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .unwrap();
    let mut page = Box::new(Page([0; 4096]));
    let before = thread_blocks_read();
    assert!(f.read(&mut page.0).unwrap() > 0);
    assert!(thread_blocks_read() > before);
    // Another thread's reads are not this one's.
    let before = thread_blocks_read();
    let other = std::thread::spawn(move || {
        let before = thread_blocks_read();
        assert!(std::os::unix::fs::FileExt::read_at(&f, &mut page.0, 0).unwrap() > 0);
        thread_blocks_read() > before
    });
    assert!(other.join().unwrap());
    assert_eq!(thread_blocks_read(), before);
}
