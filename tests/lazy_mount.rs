//! Lazy layers, mounted: a layer made from a zstd:chunked or eStargz blob's table of
//! contents (its tree at once, file contents as placeholders), filled on first open
//! through the union's hook. A small read fetches a small part of the blob; after reading,
//! every byte and the whole tree equal the source; done marks survive a remount; a
//! corrupted chunk answers EIO and its bytes never reach the file; a blob that fails
//! mid-read answers EIO and the mount keeps serving what it has; the background prefetch
//! makes the layer whole and ordinary. The blob is a local file (the range source a
//! registry's blob requests will stand in for).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use layerfs_base::format::lazy::{self as mark, Source};
use layerfs_image::lazy::{self, FileSource, LazyLayer};
use testkit::{eventually, ok, require_root, run_layerfs, tree, Layerfs};

const BIG: usize = 5 << 20;

/// A source tree: small files, a big incompressible file over several chunks, links,
/// an xattr, an empty file, nested directories.
fn source_tree(base: &Path) -> PathBuf {
    let src = base.join("src");
    for d in ["etc/conf.d", "usr/lib", "var/empty"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    std::fs::write(src.join("etc/small"), "a few bytes\n").unwrap();
    std::fs::write(src.join("etc/conf.d/other"), "other\n".repeat(100)).unwrap();
    let big = testkit::imagekit::noise(BIG, 1);
    std::fs::write(src.join("usr/lib/big"), &big).unwrap();
    std::fs::hard_link(src.join("usr/lib/big"), src.join("usr/lib/big.2")).unwrap();
    std::os::unix::fs::symlink("lib/big", src.join("usr/big.link")).unwrap();
    std::fs::write(src.join("var/empty/none"), "").unwrap();
    let p = std::ffi::CString::new(src.join("etc/small").to_str().unwrap()).unwrap();
    // SAFETY: NUL-terminated path and name; the value's pointer and length agree.
    let r = unsafe { libc::lsetxattr(p.as_ptr(), c"user.k".as_ptr(), b"v".as_ptr().cast(), 1, 0) };
    assert_eq!(r, 0);
    src
}

/// The source committed as a `form` blob file.
fn blob(base: &Path, src: &Path, form: &str) -> PathBuf {
    let out = base.join(format!("{}.blob", form.replace(':', "-")));
    let o = format!("upperdir={}", src.display());
    let to = format!("tar:{}", out.display());
    ok(
        run_layerfs(&["commit", "-o", &o, "--to", &to, "--compress", form]),
        "commit",
    );
    out
}

/// A lazy store layer `store/layers/NAME` made from `blob`'s TOC (found by its footer).
fn lazy_layer(store: &Path, name: &str, blob: &Path) -> PathBuf {
    let layer = store.join("layers").join(name);
    std::fs::create_dir_all(layer.parent().unwrap()).unwrap();
    let src = FileSource::open(blob).unwrap();
    let opened = lazy::open(&src, &Default::default()).unwrap();
    let opts = layerfs_image::unpack::Options::for_this_process();
    let source = Source::File {
        path: blob.to_path_buf(),
    };
    lazy::materialize(&opened, source, &layer, &opts).unwrap();
    layer
}

fn done_marks(layer: &Path) -> usize {
    let dir = mark::dir_for(layer).unwrap();
    std::fs::read(dir.join(mark::DONE)).map_or(0, |b| b.len() / 4)
}

fn no_prefetch() -> [(&'static str, &'static Path); 1] {
    [("LAYERFS_LAZY_PREFETCH", Path::new("0"))]
}

#[test]
fn a_small_read_fetches_little_and_the_filled_layer_equals_the_source() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("lazy-fill")
        .tempdir()
        .unwrap();
    let src = source_tree(tmp.path());
    let want = tree::snapshot(&src);
    for form in ["zstd:chunked", "estargz"] {
        let b = blob(tmp.path(), &src, form);
        let blob_size = std::fs::metadata(&b).unwrap().len();
        let store = tmp.path().join(format!("store-{}", form.replace(':', "-")));
        let layer = lazy_layer(&store, "l", &b);
        // Without a mount: the library's own count of the bytes a small file costs.
        let counted = Arc::new(FileSource::open(&b).unwrap());
        let l = LazyLayer::open_with(&layer, counted.clone()).unwrap();
        let pending = l.pending();
        l.ensure(b"etc/small").unwrap();
        let (bytes, ranges) = counted.counts();
        assert!(
            ranges == 1 && bytes < 4096,
            "{form}: a 12-byte file cost {bytes} bytes in {ranges} ranges of a {blob_size}-byte blob"
        );
        assert_eq!(l.pending(), pending - 1);
        drop(l);
        // Mounted: the tree is there before any content, the read file is marked done.
        let mp = tmp.path().join("mnt");
        let m = Layerfs::mount_with_env(std::slice::from_ref(&layer), &mp, &[], &no_prefetch());
        assert_eq!(
            done_marks(&layer),
            1,
            "{form}: the library's fill was recorded"
        );
        assert_eq!(
            std::fs::read(mp.join("etc/conf.d/other")).unwrap(),
            std::fs::read(src.join("etc/conf.d/other")).unwrap()
        );
        assert_eq!(
            done_marks(&layer),
            2,
            "{form}: one more file filled by one read"
        );
        // Every byte, every attribute (snapshot reads each file).
        let shown = tree::snapshot(&m.mp);
        let mut shown_meta = shown;
        shown_meta
            .meta
            .insert(PathBuf::new(), want.meta[Path::new("")].clone());
        tree::assert_same(&want, &shown_meta, &format!("{form}: lazy mount"));
        m.assert_no_errors_logged();
        drop(m);
        // Whole: the record is gone, an ordinary store layer remains.
        assert!(
            !mark::dir_for(&layer).unwrap().exists(),
            "{form}: record removed"
        );
        assert!(LazyLayer::open(&layer).unwrap().is_none());
    }
}

#[test]
fn a_corrupted_chunk_answers_eio_and_never_reaches_the_file() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("lazy-corrupt")
        .tempdir()
        .unwrap();
    let src = source_tree(tmp.path());
    for form in ["zstd:chunked", "estargz"] {
        let b = blob(tmp.path(), &src, form);
        // Flip a byte inside the big file's second chunk.
        let opened = lazy::open(&FileSource::open(&b).unwrap(), &Default::default()).unwrap();
        let big = opened
            .toc
            .entries
            .iter()
            .find(|e| e.path == b"usr/lib/big")
            .unwrap();
        let c = &big.chunks[1];
        let mut bytes = std::fs::read(&b).unwrap();
        bytes[((c.blob_offset + c.blob_end) / 2) as usize] ^= 0x5a;
        let bad = tmp.path().join(format!("bad-{}", form.replace(':', "-")));
        std::fs::write(&bad, &bytes).unwrap();
        let store = tmp
            .path()
            .join(format!("store-bad-{}", form.replace(':', "-")));
        let layer = lazy_layer(&store, "l", &bad);
        let mp = tmp.path().join("mnt");
        let m = Layerfs::mount_with_env(std::slice::from_ref(&layer), &mp, &[], &no_prefetch());
        let err = std::fs::read(mp.join("usr/lib/big")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{form}: {err}");
        // Its hard link is the same file: EIO too, every time (never the placeholder).
        let err = std::fs::read(mp.join("usr/lib/big.2")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{form}: {err}");
        // The rest of the layer is served.
        assert_eq!(
            std::fs::read(mp.join("etc/small")).unwrap(),
            b"a few bytes\n"
        );
        let logged = m.errors_logged().join("\n");
        assert!(
            logged.contains("usr/lib/big") && logged.contains("digest mismatch"),
            "{form}: the error names the file and the cause: {logged}"
        );
        drop(m);
        // On disk, the corrupted chunk's range of the placeholder holds no byte of it.
        let on_disk = std::fs::read(layer.join("usr/lib/big")).unwrap();
        let range = &on_disk[c.file_offset as usize..(c.file_offset + c.size) as usize];
        assert!(range.iter().all(|&x| x == 0), "{form}: bad bytes written");
        assert_eq!(done_marks(&layer), 1, "{form}: only etc/small is done");
    }
}

#[test]
fn a_blob_failing_mid_read_answers_eio_and_what_is_cached_stays_served() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("lazy-fail")
        .tempdir()
        .unwrap();
    let src = source_tree(tmp.path());
    let b = blob(tmp.path(), &src, "zstd:chunked");
    let copy = tmp.path().join("copy.blob");
    std::fs::copy(&b, &copy).unwrap();
    let layer = lazy_layer(&tmp.path().join("store"), "l", &copy);
    let mp = tmp.path().join("mnt");
    let m = Layerfs::mount_with_env(std::slice::from_ref(&layer), &mp, &[], &no_prefetch());
    assert_eq!(
        std::fs::read(mp.join("etc/small")).unwrap(),
        b"a few bytes\n"
    );
    // The blob goes away under the mount (a registry that stops answering).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&copy)
        .unwrap()
        .set_len(100)
        .unwrap();
    let started = std::time::Instant::now();
    let err = std::fs::read(mp.join("usr/lib/big")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(started.elapsed().as_secs() < 10, "bounded retries");
    assert_eq!(
        std::fs::read(mp.join("etc/small")).unwrap(),
        b"a few bytes\n"
    );
    assert!(std::fs::read_dir(mp.join("usr/lib")).unwrap().count() == 2);
    drop(m);
    // Remounted: what was filled is served from the store, with the blob gone.
    let m = Layerfs::mount_with_env(std::slice::from_ref(&layer), &mp, &[], &no_prefetch());
    assert_eq!(
        std::fs::read(m.path("etc/small")).unwrap(),
        b"a few bytes\n"
    );
    assert_eq!(done_marks(&layer), 1);
}

#[test]
fn the_background_prefetch_makes_the_layer_whole_and_ordinary() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("lazy-prefetch")
        .tempdir()
        .unwrap();
    let src = source_tree(tmp.path());
    let b = blob(tmp.path(), &src, "estargz");
    let layer = lazy_layer(&tmp.path().join("store"), "l", &b);
    let lazy_dir = mark::dir_for(&layer).unwrap();
    let m = Layerfs::mount(std::slice::from_ref(&layer), &tmp.path().join("mnt"));
    eventually("the prefetch fills every file", || !lazy_dir.exists());
    // Every byte is in the store now: the blob is no longer needed.
    std::fs::remove_file(&b).unwrap();
    assert_eq!(
        std::fs::read(m.path("usr/lib/big")).unwrap(),
        std::fs::read(src.join("usr/lib/big")).unwrap()
    );
    m.assert_no_errors_logged();
}

#[test]
fn a_copy_up_of_a_lazy_file_copies_its_content() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("lazy-copyup")
        .tempdir()
        .unwrap();
    let src = source_tree(tmp.path());
    let b = blob(tmp.path(), &src, "zstd:chunked");
    let layer = lazy_layer(&tmp.path().join("store"), "l", &b);
    let (upper, work) = (tmp.path().join("upper"), tmp.path().join("work"));
    std::fs::create_dir(&upper).unwrap();
    std::fs::create_dir(&work).unwrap();
    let rw = format!(
        "upperdir={},workdir={},metacopy=on",
        upper.display(),
        work.display()
    );
    let mp = tmp.path().join("mnt");
    let m = Layerfs::mount_with_env(
        std::slice::from_ref(&layer),
        &mp,
        &["-o", &rw],
        &no_prefetch(),
    );
    let want = std::fs::read(src.join("usr/lib/big")).unwrap();
    // A write copies the file up: with its content, never the placeholder's holes.
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(m.path("usr/lib/big"))
        .unwrap();
    f.write_all(b"+").unwrap();
    drop(f);
    let mut expected = want.clone();
    expected.push(b'+');
    assert_eq!(std::fs::read(upper.join("usr/lib/big")).unwrap(), expected);
    // A chmod under metacopy=on copies metadata only; the data read later comes from the
    // lazy layer, fetched then.
    use std::os::unix::fs::PermissionsExt as _;
    let other = m.path("etc/conf.d/other");
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        std::fs::read(&other).unwrap(),
        std::fs::read(src.join("etc/conf.d/other")).unwrap()
    );
    m.assert_no_errors_logged();
}

#[test]
fn concurrent_first_reads_of_one_file_fetch_it_once() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("lazy-concurrent")
        .tempdir()
        .unwrap();
    let src = source_tree(tmp.path());
    let b = blob(tmp.path(), &src, "estargz");
    let layer = lazy_layer(&tmp.path().join("store"), "l", &b);
    let m = Layerfs::mount_with_env(
        std::slice::from_ref(&layer),
        &tmp.path().join("mnt"),
        &[],
        &no_prefetch(),
    );
    let want = std::fs::read(src.join("usr/lib/big")).unwrap();
    std::thread::scope(|s| {
        let readers: Vec<_> = [
            "usr/lib/big",
            "usr/lib/big.2",
            "usr/lib/big",
            "usr/lib/big.2",
        ]
        .iter()
        .map(|p| s.spawn(|| std::fs::read(m.path(p)).unwrap()))
        .collect();
        for r in readers {
            assert!(r.join().unwrap() == want, "a reader saw other bytes");
        }
    });
    // One file (two names), filled once: one done mark.
    assert_eq!(done_marks(&layer), 1);
    m.assert_no_errors_logged();
}

#[test]
fn a_layer_arriving_whole_shows_its_tree_only_once_whole_to_every_mount_of_it() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("lazy-whole")
        .tempdir()
        .unwrap();
    let src = source_tree(tmp.path());
    let b = blob(tmp.path(), &src, "gzip");
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc {} | sha256sum", b.display()))
        .output()
        .unwrap();
    let diff_id = ok(&o, "sha256sum")[..64].to_string();
    let layer = tmp.path().join("store/layers").join(&diff_id);
    std::fs::create_dir_all(layer.parent().unwrap()).unwrap();
    let source = Source::File { path: b.clone() };
    lazy::whole::make(&layer, source, layerfs_image::source::Compression::Gzip).unwrap();
    // An ordinary layer above it: a kernel whiteout hides one of its names, one is added.
    let top = tmp.path().join("top");
    std::fs::create_dir_all(top.join("etc")).unwrap();
    std::fs::write(top.join("etc/new"), "new\n").unwrap();
    let wh = std::ffi::CString::new(top.join("etc/small").to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path; mknod touches no memory of ours.
    assert_eq!(unsafe { libc::mknod(wh.as_ptr(), libc::S_IFCHR, 0) }, 0);
    // Two mounts of it at once: one streams it, the other waits for that one (the lock).
    let stacked = Layerfs::mount(&[top.clone(), layer.clone()], &tmp.path().join("m1"));
    let alone = Layerfs::mount(std::slice::from_ref(&layer), &tmp.path().join("m2"));
    let mut got = tree::snapshot(&alone.path("")).meta;
    let mut want = tree::snapshot(&src).meta;
    got.remove(Path::new(""));
    want.remove(Path::new(""));
    assert_eq!(got, want);
    let names = |d: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(stacked.path(d))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("etc"), ["conf.d", "new"]);
    assert!(
        std::fs::read(stacked.path("usr/lib/big")).unwrap()
            == std::fs::read(src.join("usr/lib/big")).unwrap()
    );
    assert!(!mark::dir_for(&layer).unwrap().exists(), "still lazy");
    stacked.assert_no_errors_logged();
    alone.assert_no_errors_logged();
}
