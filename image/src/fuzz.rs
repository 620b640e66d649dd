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

/// A seekable layer blob (zstd:chunked or eStargz) found by its footer, and the same bytes
/// as a TOC's JSON in either form. An accepted TOC's names are clean and relative, its
/// files' chunks tile them and lie in the blob's data; every chunk fetched is exactly its
/// size (or refused: a digest never matches bytes it was not made from).
pub fn lazy_toc(data: &[u8]) {
    use crate::lazy::{read, toc, Form};
    let check = |t: &toc::Toc, data_end: u64| {
        for e in &t.entries {
            assert!(!e.path.starts_with(b"/") && !e.path.split(|&b| b == b'/').any(|c| c == b".."));
            let mut at = 0;
            for c in &e.chunks {
                assert_eq!(c.file_offset, at);
                assert!(c.size > 0);
                assert!(c.zeros || (c.blob_offset < c.blob_end && c.blob_end <= data_end));
                at += c.size;
            }
            assert!(e.chunks.is_empty() || at == e.size);
        }
    };
    for form in [Form::ZstdChunked, Form::Estargz] {
        if let Ok(t) = toc::Toc::parse(data, form, data.len() as u64) {
            check(&t, data.len() as u64);
        }
    }
    let blob = data.to_vec();
    if let Ok(o) = read::open(&blob, &Default::default()) {
        check(&o.toc, o.data_end);
        let mut budget = MAX_READ;
        for c in o.toc.entries.iter().flat_map(|e| &e.chunks) {
            if c.size > budget {
                break;
            }
            budget -= c.size;
            if let Ok(b) = read::fetch_chunk(&blob, o.form, c) {
                assert_eq!(b.len() as u64, c.size);
            }
        }
    }
}
