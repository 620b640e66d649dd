//! Entry points for the fuzz targets (`fuzz/`, cargo-fuzz on nightly) and for the test that
//! runs their committed corpora on stable (`tests/fuzz_corpus.rs`): one function per parser
//! of untrusted bytes, taking the raw input. Each must return for any input, never panic,
//! never allocate without bound; where a parser accepts an input, the invariants it
//! promises are checked here with `assert!` (a failed one is a crash to the fuzzer).
//! The parsers of this crate's own formats are here; the image parsers' targets are in
//! `layerfs_image::fuzz`.
//!
//! The FUSE request decoder is fuser's own (no request bytes pass through our code), so it
//! has no target here.

use crate::idmap::{IdMap, Ids};
use crate::options::MountOptions;

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
