//! File data on writable mounts: where the kernel grants passthrough (root), the data of
//! upper and created files goes straight to the upper file (no READ or WRITE requests), and
//! every open of a file keeps seeing what the kernel's overlay shows, a copy-up while the
//! lower file is open or mapped included (side by side with `mount -t overlay`).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use testkit::{require_root, Kernel, Layerfs};

/// Layer dirs for one mount: a lower with files `a`, `b`, `c`, `m`, an upper and a workdir.
struct Dirs {
    t: tempfile::TempDir,
    lower: PathBuf,
}

impl Dirs {
    fn new() -> Dirs {
        let t = tempfile::tempdir().unwrap();
        let lower = t.path().join("l");
        fs::create_dir(&lower).unwrap();
        for (name, data) in [("a", "lower a\n"), ("b", "lower b\n"), ("c", "lower c\n")] {
            fs::write(lower.join(name), data).unwrap();
        }
        fs::write(lower.join("m"), vec![b'm'; 8192]).unwrap();
        Dirs { t, lower }
    }

    /// A fresh upper and workdir named after `tag`.
    fn upper(&self, tag: &str) -> (PathBuf, PathBuf) {
        let (u, w) = (
            self.t.path().join(format!("u-{tag}")),
            self.t.path().join(format!("w-{tag}")),
        );
        fs::create_dir(&u).unwrap();
        fs::create_dir(&w).unwrap();
        (u, w)
    }

    fn layerfs(&self, env: &[(&str, &Path)]) -> Layerfs {
        self.layerfs_with("", env)
    }

    /// Mounted with more options (`opts`, each after a comma).
    fn layerfs_with(&self, opts: &str, env: &[(&str, &Path)]) -> Layerfs {
        let (u, w) = self.upper("layerfs");
        let rw = format!("upperdir={},workdir={}{opts}", u.display(), w.display());
        let mp = self.t.path().join("layerfs");
        Layerfs::mount_with_env(std::slice::from_ref(&self.lower), &mp, &["-o", &rw], env)
    }

    fn kernel(&self) -> Kernel {
        let (u, w) = self.upper("kernel");
        let mp = self.t.path().join("kernel");
        Kernel::mount_rw(std::slice::from_ref(&self.lower), &u, &w, &mp)
    }
}

fn counts(file: &Path) -> HashMap<String, u64> {
    fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(op, n)| (op.to_string(), n.trim().parse().unwrap()))
        .collect()
}

fn read_at(f: &File, len: usize) -> String {
    let mut buf = vec![0; len];
    let n = f.read_at(&mut buf, 0).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn upper_and_created_files_are_read_and_written_without_requests() {
    if !require_root() {
        return;
    }
    let d = Dirs::new();
    let count_file = d.t.path().join("counts");
    let m = d.layerfs(&[("LAYERFS_REQUEST_COUNTS", &count_file)]);
    // A created file, written in 4 KiB pieces, read back through a second open.
    let block = [b'x'; 4096];
    let mut f = File::create(m.path("new")).unwrap();
    for _ in 0..256 {
        f.write_all(&block).unwrap();
    }
    f.sync_all().unwrap();
    let mut back = Vec::new();
    File::open(m.path("new"))
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back.len(), 1 << 20);
    assert!(back.iter().all(|&b| b == b'x'));
    drop(f);
    // A lower file opened for writing (copied up), then read and written again.
    let f = OpenOptions::new().write(true).open(m.path("a")).unwrap();
    f.write_at(b"UPPER", 0).unwrap();
    drop(f);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("a"))
        .unwrap();
    f.write_at(b"again", 8).unwrap();
    assert_eq!(read_at(&f, 64), "UPPER a\nagain");
    assert_eq!(fs::read_to_string(m.path("a")).unwrap(), "UPPER a\nagain");
    drop(f);
    m.assert_no_errors_logged();
    drop(m);
    let c = counts(&count_file);
    assert!(c.get("create").copied().unwrap_or(0) >= 1, "{c:?}");
    assert!(c.get("open").copied().unwrap_or(0) >= 3, "{c:?}");
    for op in ["read", "write"] {
        assert_eq!(c.get(op).copied().unwrap_or(0), 0, "{op} requests: {c:?}");
    }
}

/// With `-o lower_passthrough`, lower files opened read-only on a writable mount are
/// passed through: the kernel reads the lower file itself (no READ request; one page cache
/// with every mount of the layer).
#[test]
fn lower_files_are_read_without_requests() {
    if !require_root() {
        return;
    }
    let read = |opts: &str| {
        let d = Dirs::new();
        let count_file = d.t.path().join("counts");
        let m = d.layerfs_with(opts, &[("LAYERFS_REQUEST_COUNTS", &count_file)]);
        for _ in 0..2 {
            for n in ["a", "b", "c"] {
                assert_eq!(
                    fs::read_to_string(m.path(n)).unwrap(),
                    format!("lower {n}\n")
                );
            }
        }
        m.assert_no_errors_logged();
        drop(m);
        counts(&count_file).get("read").copied().unwrap_or(0)
    };
    assert_eq!(read(",lower_passthrough"), 0);
    assert!(read("") >= 3);
}

/// Opens, copy-ups and maps that mix modes, with what each step saw.
fn copy_up_while_open(root: &Path) -> Vec<String> {
    let mut seen = Vec::new();
    let p = |n: &str| root.join(n);
    // A read-only open of a lower file, then a write open (copy-up) while it is open.
    let ro = File::open(p("a")).unwrap();
    seen.push(format!("ro before: {}", read_at(&ro, 64)));
    let w = OpenOptions::new().write(true).open(p("a")).unwrap();
    w.write_at(b"WRITTEN", 0).unwrap();
    seen.push(format!("ro after write: {}", read_at(&ro, 64)));
    let ro2 = File::open(p("a")).unwrap();
    seen.push(format!("new ro: {}", read_at(&ro2, 64)));
    drop((ro, ro2, w));
    seen.push(format!(
        "closed, reread: {}",
        fs::read_to_string(p("a")).unwrap()
    ));
    // O_TRUNC of a lower file held open read-only.
    let ro = File::open(p("b")).unwrap();
    let mut t = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(p("b"))
        .unwrap();
    t.write_all(b"short").unwrap();
    seen.push(format!("ro after trunc: {}", read_at(&ro, 64)));
    drop((ro, t));
    // A shared writable mapping of an upper file, read back with read().
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(p("c"))
        .unwrap();
    // SAFETY: the file is not truncated while mapped (only this test touches it).
    let mut map = unsafe { memmap2::MmapMut::map_mut(&f).unwrap() };
    map[..6].copy_from_slice(b"MAPPED");
    map.flush().unwrap();
    seen.push(format!(
        "after mmap write: {}",
        fs::read_to_string(p("c")).unwrap()
    ));
    drop((map, f));
    // A read-only mapping of a lower file, then a copy-up and a write.
    let f = File::open(p("m")).unwrap();
    // SAFETY: as above.
    let map = unsafe { memmap2::Mmap::map(&f).unwrap() };
    let w = OpenOptions::new().write(true).open(p("m")).unwrap();
    w.write_at(b"W", 0).unwrap();
    seen.push(format!("read after mapped copy-up: {}", read_at(&f, 2)));
    seen.push(format!("mapping: {}{}", map[0] as char, map[8191] as char));
    drop((map, f, w));
    seen
}

#[test]
fn copy_up_while_open_or_mapped_shows_what_the_kernel_shows() {
    if !require_root() {
        return;
    }
    let d = Dirs::new();
    let kernel = {
        let k = d.kernel();
        copy_up_while_open(&k.mp)
    };
    let m = d.layerfs(&[]);
    let mut ours = copy_up_while_open(&m.mp);
    m.assert_no_errors_logged();
    // The one difference: a mapping made before the copy-up shows the copy's later writes
    // (the kernel's maps the lower file itself; ours, the mount's page cache).
    assert_eq!(kernel.last().map(String::as_str), Some("mapping: mm"));
    assert_eq!(ours.pop().as_deref(), Some("mapping: Wm"));
    assert_eq!(ours[..], kernel[..kernel.len() - 1]);
    // With lower passthrough (`-o lower_passthrough`) the kernel reads the lower file
    // itself, so what was opened before a copy-up stays bound to it: it does not see the
    // copy's writes, where the kernel's overlay moves a read-only open to the copy (pinned,
    // docs/SEMANTICS.md); a mapping shows the lower file, as on the kernel.
    let d = Dirs::new();
    let m = d.layerfs_with(",lower_passthrough", &[]);
    let ours = copy_up_while_open(&m.mp);
    m.assert_no_errors_logged();
    let pinned = [
        ("ro after write: WRITTEN\n", "ro after write: lower a\n"),
        ("ro after trunc: short", "ro after trunc: lower b\n"),
        (
            "read after mapped copy-up: Wm",
            "read after mapped copy-up: mm",
        ),
    ];
    assert_eq!(kernel.len(), ours.len());
    for (k, o) in kernel.iter().zip(&ours) {
        match pinned.iter().find(|(pk, _)| pk == k) {
            Some((_, po)) => assert_eq!(o, po, "pinned: kernel {k:?}"),
            None => assert_eq!(o, k),
        }
    }
}

/// With `-o lower_passthrough`, every path-based change of a lower file open read-only
/// elsewhere (which copies it up) reaches the new node the VFS finds on its retry: chmod,
/// truncate, setxattr, rename and link all succeed, as on the kernel's overlay, and the
/// earlier open still reads the lower file (pinned: the kernel's would read the copy).
#[test]
fn path_changes_of_a_lower_file_open_elsewhere_reach_the_copy() {
    if !require_root() {
        return;
    }
    let script = |m: &Path| {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(
                r#"cd "$0"; exec 3< a 4< b 5< c
                chmod 600 a && stat -c '%n %a %s' a
                truncate -s 2 b && stat -c '%n %s' b
                setfattr -n user.x -v 1 c && getfattr --only-values -n user.x c; echo
                exec 6< a; mv a a2 && ln b b2 && stat -c '%n %h' a2 b b2
                head -c 7 <&3; echo; head -c 7 <&4; echo; head -c 7 <&6; echo"#,
            )
            .arg(m)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    let d = Dirs::new();
    let kernel = {
        let k = d.kernel();
        script(&k.mp)
    };
    let m = d.layerfs_with(",lower_passthrough", &[]);
    let ours = script(&m.mp);
    m.assert_no_errors_logged();
    // The open of `b` made before its truncation reads the lower file; the kernel's, the
    // truncated copy. (`a`'s copy-up changed no data: both read the same.)
    let pinned = kernel.replace("\nlo\n", "\nlower b\n");
    assert_eq!(ours, pinned, "kernel:\n{kernel}");
}

/// What an unprivileged user's process sees of one file on a mount (`/usr/bin/python3`, the
/// system's, which that user can run): after reading `path` whole, how many of its pages
/// the mount's own page cache holds (`cachestat`, kernel 6.5+, asked of the open file, so
/// no mapping disturbs it); whether a shared read-only mapping of it has the bytes of `want`
/// (the lower file); and, with `write`, what an open made before a write through another
/// open reads afterwards (the copy-up's data, on the kernel's overlay).
const PROBE: &str = r#"
import ctypes, mmap, os, sys
path, want, write = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
data = open(want, "rb").read()
with open(path, "rb") as f:
    got = f.read()
    rng = (ctypes.c_uint64 * 2)(0, 0)
    cs = (ctypes.c_uint64 * 5)()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(451, f.fileno(), rng, cs, 0) != 0:
        sys.exit("cachestat: " + os.strerror(ctypes.get_errno()))
    print("read", "same" if got == data else "differs")
    print("cached pages", cs[0], "of", (len(data) + 4095) // 4096)
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        print("mapped", "same" if m[:] == data else "differs")
if write:
    r = open(path, "rb")
    with open(path, "r+b") as w:
        w.write(b"XXXX")
        w.flush()
        print("read after write", r.read(8))
"#;

/// Runs [`PROBE`] on `path` (the lower file `want`) as `uid`, or as root when `None`.
fn probe(uid: Option<u32>, path: &Path, want: &Path, write: bool) -> String {
    let mut cmd = match uid {
        Some(u) => {
            let mut c = std::process::Command::new("setpriv");
            let u = u.to_string();
            c.args([
                "--reuid",
                &u,
                "--regid",
                &u,
                "--clear-groups",
                "/usr/bin/python3",
            ]);
            c
        }
        None => std::process::Command::new("/usr/bin/python3"),
    };
    let out = cmd
        .args(["-c", PROBE])
        .arg(path)
        .arg(want)
        .arg(if write { "1" } else { "0" })
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A rootless writable mount (an unprivileged user, through fusermount3: no passthrough):
/// a lower file read whole leaves none of its pages in the mount's page cache (the lower
/// filesystem's cache, shared by every mount of the layer, is the only copy), large or
/// small; a shared mapping still works (the kernel's `FUSE_DIRECT_IO_ALLOW_MMAP`), and an
/// open made before a write reads the written bytes, as on the kernel's overlay (root,
/// side by side). With `lower_direct_io=16K` a file below 16 KiB is cached as before; with
/// `lower_direct_io=off` every file is.
#[test]
fn rootless_reads_of_large_lower_files_keep_no_second_copy_and_still_map() {
    if !require_root() {
        return;
    }
    use std::os::unix::fs::chown;
    const UID: u32 = 65_534; // nobody: fusermount3 wants a passwd entry
    let t = tempfile::Builder::new()
        .prefix("layerfs-transport-rootless-")
        .tempdir()
        .unwrap();
    let lower = t.path().join("l");
    fs::create_dir(&lower).unwrap();
    // 4 MiB that no two pages share, and 8 KiB.
    let big: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i / 4096 + i % 251) as u8)
        .collect();
    fs::write(lower.join("big"), &big).unwrap();
    fs::write(lower.join("small"), vec![b's'; 8192]).unwrap();
    // cachestat answers only the file's owner or a writer.
    for f in ["big", "small"] {
        chown(lower.join(f), Some(UID), Some(UID)).unwrap();
    }
    let bin = t.path().join("layerfs");
    fs::copy(testkit::BIN, &bin).unwrap();
    let _fuse = testkit::DevFuseOpen::new();
    let mount = |tag: &str, opts: &str| -> (PathBuf, Unmount) {
        let (u, w, mp) = (
            t.path().join(format!("u-{tag}")),
            t.path().join(format!("w-{tag}")),
            t.path().join(format!("mnt-{tag}")),
        );
        for d in [&u, &w, &mp] {
            fs::create_dir(d).unwrap();
        }
        for p in [t.path(), &lower, &u, &w, &mp] {
            chown(p, Some(UID), Some(UID)).unwrap();
        }
        let o = format!(
            "lowerdir={},upperdir={},workdir={}{opts}",
            lower.display(),
            u.display(),
            w.display()
        );
        let out = std::process::Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(&bin)
            .args(["-o", &o])
            .arg(&mp)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rootless mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (mp.clone(), Unmount(mp))
    };
    let (mp, _m) = mount("direct", "");
    let said = probe(Some(UID), &mp.join("big"), &lower.join("big"), true);
    let small = probe(Some(UID), &mp.join("small"), &lower.join("small"), false);
    let (above_mp, _a) = mount("above", ",lower_direct_io=16K");
    let above = probe(Some(UID), &above_mp.join("big"), &lower.join("big"), false);
    let below = probe(
        Some(UID),
        &above_mp.join("small"),
        &lower.join("small"),
        false,
    );
    let (cached_mp, _c) = mount("cached", ",lower_direct_io=off");
    let cached = probe(Some(UID), &cached_mp.join("big"), &lower.join("big"), false);
    drop((_m, _a, _c));
    let (ku, kw) = (t.path().join("u-kernel"), t.path().join("w-kernel"));
    fs::create_dir(&ku).unwrap();
    fs::create_dir(&kw).unwrap();
    let kernel = Kernel::mount_rw(
        std::slice::from_ref(&lower),
        &ku,
        &kw,
        &t.path().join("kernel"),
    );
    let on_kernel = probe(None, &kernel.mp.join("big"), &lower.join("big"), true);
    let line = |out: &str, key: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key:?} in {out}"))
            .to_string()
    };
    assert_eq!(
        line(&said, "cached pages"),
        "cached pages 0 of 1024",
        "{said}"
    );
    assert_eq!(line(&said, "read "), "read same", "{said}");
    assert_eq!(line(&said, "mapped"), "mapped same", "{said}");
    assert_eq!(
        line(&said, "read after write"),
        line(&on_kernel, "read after write"),
        "{said}\nkernel:\n{on_kernel}"
    );
    assert_eq!(
        line(&small, "cached pages"),
        "cached pages 0 of 2",
        "{small}"
    );
    assert_eq!(line(&small, "mapped"), "mapped same", "{small}");
    assert_eq!(
        line(&above, "cached pages"),
        "cached pages 0 of 1024",
        "{above}"
    );
    assert_eq!(
        line(&below, "cached pages"),
        "cached pages 2 of 2",
        "{below}"
    );
    assert_eq!(
        line(&cached, "cached pages"),
        "cached pages 1024 of 1024",
        "{cached}"
    );
    assert_eq!(line(&cached, "mapped"), "mapped same", "{cached}");
}

/// Unmounts (lazily, as root) in Drop: a rootless mount made by a daemonized `layerfs`.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
