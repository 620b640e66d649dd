//! Entry points for the fuzz targets (`fuzz/`, cargo-fuzz on nightly) and for the test that
//! runs their committed corpora on stable (`tests/fuzz_corpus.rs`): one function per parser
//! of untrusted bytes, taking the raw input. Each must return for any input, never panic,
//! never allocate without bound; where a parser accepts an input, the invariants it
//! promises are checked here with `assert!` (a failed one is a crash to the fuzzer).
//!
//! The FUSE request decoder is fuser's own (no request bytes pass through our code), so it
//! has no target here.

use crate::idmap::{IdMap, Ids};
use crate::image::source::{walk, ImageConfig, Kind, Limits};
use crate::image::tarread::TarReader;
use crate::options::MountOptions;

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
    let limits = crate::image::unpack::Limits::default();
    while let Ok(Some(e)) = reader.next_entry() {
        // The names extraction accepts are safe components: never `..`, `.`, empty, a
        // `/` or a NUL, never over 255 bytes.
        for name in [Some(&e.path), e.link.as_ref()].into_iter().flatten() {
            if let Ok(comps) = crate::image::unpack::clean_path(name, &limits) {
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
    crate::image::source::oci::parse_documents(data);
    let _ = ImageConfig::parse(data);
}

/// `-o` arguments: the input split at NUL bytes into arguments, parsed as a mount's and as
/// the layer tools' options. Accepted options name at least one layer, and a writable
/// mount has both an upper and a work directory.
pub fn mount_options(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let args: Vec<&str> = s.split('\0').collect();
    if let Ok(o) = MountOptions::parse(&args) {
        assert!(!o.lowers.is_empty());
        assert_eq!(o.upper.is_some(), o.work.is_some());
        let (u, g) = o.ids.show(0, 0);
        let _ = (o.ids.store_uid(u), o.ids.store_gid(g));
    }
    if let Ok(o) = MountOptions::parse_layers(&args) {
        assert!(!o.lowers.is_empty());
    }
}

/// An id map (`uidmapping=` value, up to the first NUL) and ids to map (the bytes after
/// it, 4 at a time, also read as xattr values). Every id a map shows stores back to itself
/// unless ranges overlap, and no id maps to `u32::MAX` (chown's "unchanged").
pub fn idmap(data: &[u8]) {
    let (spec, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(spec) = std::str::from_utf8(spec) else {
        return;
    };
    let Ok(map) = IdMap::parse(spec) else {
        return;
    };
    let overlapping = overlaps(&map);
    for c in rest.chunks_exact(4) {
        let id = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let shown = map.show(id);
        let stored = map.store(id);
        assert_ne!(shown, u32::MAX, "{spec:?} shows {id} as u32::MAX");
        assert_ne!(stored, u32::MAX, "{spec:?} stores {id} as u32::MAX");
        if !overlapping && shown != crate::idmap::OVERFLOW_ID {
            assert_eq!(map.store(shown), id, "{spec:?}: {id} shows as {shown}");
        }
    }
    let ids = Ids {
        uid_map: Some(map.clone()),
        gid_map: Some(map),
        squash_uid: None,
        squash_gid: None,
    };
    for name in [
        &b"system.posix_acl_access"[..],
        b"system.posix_acl_default",
        b"security.capability",
    ] {
        let shown = ids.show_xattr(name, rest);
        assert_eq!(shown.len(), rest.len());
        let stored = ids.store_xattr(name, rest);
        assert_eq!(stored.len(), rest.len());
    }
}

/// A layer's hash list (`verity`, read by `-o verify` mounts): decoded without panic, and
/// a list that decodes encodes back to the same list.
pub fn hash_list(data: &[u8]) {
    if let Ok(l) = crate::verity::HashList::decode(data) {
        let again = crate::verity::HashList::decode(&l.encode()).expect("own encoding decodes");
        assert_eq!(again, l);
    }
}

/// True when two ranges of the map overlap on either side (then the last one wins and a
/// round trip may leave a range).
fn overlaps(map: &IdMap) -> bool {
    let r = map.ranges();
    let meet = |a: u32, n: u32, b: u32, m: u32| {
        n > 0
            && m > 0
            && u64::from(a) < u64::from(b) + u64::from(m)
            && u64::from(b) < u64::from(a) + u64::from(n)
    };
    r.iter().enumerate().any(|(i, x)| {
        r[i + 1..].iter().any(|y| {
            meet(x.disk, x.count, y.disk, y.count) || meet(x.shown, x.count, y.shown, y.count)
        })
    })
}

/// A seekable layer blob (zstd:chunked or eStargz) found by its footer, and the same bytes
/// as a TOC's JSON in either form. An accepted TOC's names are clean and relative, its
/// files' chunks tile them and lie in the blob's data; every chunk fetched is exactly its
/// size (or refused: a digest never matches bytes it was not made from).
pub fn lazy_toc(data: &[u8]) {
    use crate::image::lazy::{read, toc, Form};
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
