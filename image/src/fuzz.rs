//! Entry points for the fuzz targets of the image parsers (`fuzz/`, cargo-fuzz on nightly;
//! `tests/fuzz_corpus.rs` runs their corpora on stable), as `layerfs_base::fuzz` has them
//! for the mount's parsers: each must return for any input and never panic; the
//! invariants an accepted input promises are checked with `assert!`.

use crate::source::{walk, ImageConfig, Kind, Limits};
use crate::tarread::TarReader;

/// Limits small enough that a fuzz input cannot make a run slow.
fn small_limits() -> Limits {
    Limits {
        layer_entries: 10_000,
        dir_entries: 1_000,
        xattrs: 32,
        xattr_value: 4096,
    }
}

/// A layer tar: read by the tar reader member by member (data read to its end, names
/// checked as extraction cleans them), then by the layer walker that decodes marks and
/// refuses hostile names. An accepted file's
/// content is exactly the size its header gave.
pub fn tar(data: &[u8]) {
    let mut reader = TarReader::new(data);
    let limits = crate::unpack::Limits::default();
    while let Ok(Some(e)) = reader.next_entry() {
        // The names extraction accepts are safe components: never `..`, `.`, empty, a
        // `/` or a NUL, never over 255 bytes.
        for name in [Some(&e.path), e.link.as_ref()].into_iter().flatten() {
            if let Ok(comps) = crate::unpack::clean_path(name, &limits) {
                for c in comps {
                    assert!(!c.is_empty() && c != b"." && c != b"..", "component {c:?}");
                    assert!(!c.contains(&b'/') && !c.contains(&0) && c.len() <= 255);
                }
            }
        }
        if e.size > MAX_READ {
            continue; // a sparse file's holes read as zeros: bounded work per input
        }
        let file = matches!(
            e.kind,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse
        );
        match std::io::copy(&mut reader.data(), &mut std::io::sink()) {
            Ok(n) if file => assert_eq!(n, e.size, "member data differs from its size"),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let mut stream = data;
    let _ = walk::walk_tar(&mut stream, true, small_limits(), &mut |e, content| {
        assert!(
            e.kind == Kind::File || e.size == 0,
            "{}: size on a non-file",
            e.path
        );
        if let (Some(c), true) = (content, e.size <= MAX_READ) {
            let n = std::io::copy(c, &mut std::io::sink())?;
            assert_eq!(n, e.size, "{}: content length differs from size", e.path);
        }
        Ok(())
    });
}

/// Content bytes a target reads of one member (holes of a sparse map can claim gigabytes).
const MAX_READ: u64 = 16 << 20;

/// An OCI document: the same bytes parsed as an index, a manifest and an image config,
/// with every digest they name parsed too.
pub fn oci(data: &[u8]) {
    crate::source::oci::parse_documents(data);
    let _ = ImageConfig::parse(data);
}
