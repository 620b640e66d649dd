//! Opening and checking upperdir and workdir (no mount).

use std::path::Path;

use layerfs_base::format::MarkNs;
use layerfs_mount::upper::copyup::TEMP_PREFIX;
use layerfs_mount::upper::{self, UpperError};

fn ns() -> MarkNs {
    if layerfs_base::sys::geteuid() == 0 {
        MarkNs::Trusted
    } else {
        MarkNs::User
    }
}

#[test]
fn good_dirs_open_and_crash_leftovers_are_cleared() {
    let t = tempfile::tempdir().unwrap();
    let (u, w) = (t.path().join("upper"), t.path().join("work"));
    std::fs::create_dir_all(&u).unwrap();
    std::fs::create_dir_all(&w).unwrap();
    std::fs::write(w.join(format!("{TEMP_PREFIX}9-9")), "torn").unwrap();
    let up = upper::open(&u, &w, ns()).unwrap();
    assert_eq!(up.path, std::fs::canonicalize(&u).unwrap());
    assert!(
        std::fs::read_dir(&w).unwrap().next().is_none(),
        "leftover cleared"
    );
    let probe = xattr_names(&w);
    assert!(
        probe.is_empty(),
        "the xattr probe was left behind: {probe:?}"
    );
}

fn xattr_names(p: &Path) -> Vec<u8> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 1024];
    // SAFETY: NUL-terminated path, writable buffer of its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    buf.truncate(n.max(0) as usize);
    buf.split(|&b| b == 0)
        .filter(|n| n.starts_with(b"trusted.overlay") || n.starts_with(b"user.overlay"))
        .flatten()
        .copied()
        .collect()
}

#[test]
fn bad_pairs_are_refused_with_the_path_in_the_message() {
    let t = tempfile::tempdir().unwrap();
    let (u, w) = (t.path().join("upper"), t.path().join("work"));
    std::fs::create_dir_all(u.join("inner")).unwrap();
    std::fs::create_dir_all(w.join("inner")).unwrap();
    let missing = t.path().join("nope");
    let e = upper::open(&missing, &w, ns()).unwrap_err();
    assert!(
        matches!(
            e,
            UpperError::Open {
                what: "upperdir",
                ..
            }
        ) && e.to_string().contains("nope"),
        "{e}"
    );
    let e = upper::open(&u, &missing, ns()).unwrap_err();
    assert!(
        matches!(
            e,
            UpperError::Open {
                what: "workdir",
                ..
            }
        ),
        "{e}"
    );
    for (a, b) in [(&u, &u.join("inner")), (&w.join("inner"), &w), (&u, &u)] {
        let e = upper::open(a, b, ns()).unwrap_err();
        assert!(
            matches!(e, UpperError::Nested { .. }),
            "{} / {}: {e}",
            a.display(),
            b.display()
        );
    }
}

#[test]
fn upper_and_work_on_different_filesystems_are_refused() {
    // /dev/shm is a tmpfs on Debian; the temp dir is not.
    let shm = Path::new("/dev/shm");
    let t = tempfile::tempdir().unwrap();
    if !shm.is_dir()
        || std::fs::metadata(shm)
            .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
            .ok()
            == std::fs::metadata(t.path())
                .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
                .ok()
    {
        panic!(
            "this test needs /dev/shm on another filesystem than {}",
            t.path().display()
        );
    }
    let w = tempfile::tempdir_in(shm).unwrap();
    let e = upper::open(t.path(), w.path(), ns()).unwrap_err();
    assert!(matches!(e, UpperError::CrossDevice { .. }), "{e}");
    assert!(e.to_string().contains("different filesystems"), "{e}");
}
