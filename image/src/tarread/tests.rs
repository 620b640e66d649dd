//! The reader against archives made by the `tar` crate's builder and by hand.

use std::io::Read;

use super::pax::format_record;
use super::*;

fn header(kind: EntryType, path: &str, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_path(path).unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(1);
    h.set_gid(2);
    h.set_mtime(3);
    h.set_cksum();
    h
}

/// A raw extension member (the builder would refuse some of these).
fn ext(out: &mut Vec<u8>, kind: EntryType, data: &[u8]) {
    let mut h = header(kind, "ext", data.len() as u64);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

fn file(out: &mut Vec<u8>, path: &str, data: &[u8]) {
    let h = header(EntryType::Regular, path, data.len() as u64);
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0; 1024]);
}

/// Every member: (path, link, size, uid, gid, mtime, xattrs, data).
type Seen = (
    String,
    Option<String>,
    u64,
    u64,
    u64,
    (i64, i64),
    Vec<(Vec<u8>, Vec<u8>)>,
    Vec<u8>,
);

fn read_all(tar: &[u8]) -> Result<Vec<Seen>> {
    let mut r = TarReader::new(tar);
    let mut out = Vec::new();
    while let Some(e) = r.next_entry()? {
        let mut data = Vec::new();
        r.data().read_to_end(&mut data)?;
        out.push((
            String::from_utf8(e.path).unwrap(),
            e.link.map(|l| String::from_utf8(l).unwrap()),
            e.size,
            e.uid,
            e.gid,
            (e.mtime, e.mtime_nsec),
            e.xattrs,
            data,
        ));
    }
    Ok(out)
}

#[test]
fn builder_output_with_newline_xattrs_and_long_names() {
    let mut b = tar::Builder::new(Vec::new());
    let value: &[u8] = b"line1\nline2\n13 path=evil\n\0=";
    b.append_pax_extensions([("SCHILY.xattr.user.nl", value), ("mtime", &b"7.5"[..])])
        .unwrap();
    let mut h = Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o600);
    let long = format!("{}/f", "d".repeat(150));
    b.append_data(&mut h, &long, &b"hello"[..]).unwrap();
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Symlink);
    h.set_size(0);
    let target = "t".repeat(300);
    b.append_link(&mut h, "link", &target).unwrap();
    let tar = b.into_inner().unwrap();
    let seen = read_all(&tar).unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, long);
    assert_eq!(seen[0].5, (7, 500_000_000));
    assert_eq!(seen[0].6, vec![(b"user.nl".to_vec(), value.to_vec())]);
    assert_eq!(seen[0].7, b"hello");
    assert_eq!(seen[1].0, "link");
    assert_eq!(seen[1].1.as_deref(), Some(&target[..]));
    assert!(
        seen[1].6.is_empty(),
        "a PAX header applies to one member only"
    );
}

#[test]
fn pax_overrides_the_header() {
    let mut tar = Vec::new();
    let mut recs = format_record(b"size", b"3");
    recs.extend(format_record(b"uid", b"4000000000"));
    recs.extend(format_record(b"gid", b"5"));
    recs.extend(format_record(b"path", b"long/name"));
    ext(&mut tar, EntryType::XHeader, &recs);
    // The header says 0 bytes: PAX's 3 must be read, else the next member is misplaced.
    let mut h = header(EntryType::Regular, "short", 0);
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    tar.extend_from_slice(b"abc");
    tar.resize(tar.len().next_multiple_of(512), 0);
    ext(
        &mut tar,
        EntryType::XGlobalHeader,
        &format_record(b"comment", b"x"),
    );
    file(&mut tar, "next", b"z");
    end(&mut tar);
    let seen = read_all(&tar).unwrap();
    assert_eq!(seen.len(), 2, "the global header is no member");
    assert_eq!(seen[0].0, "long/name");
    assert_eq!((seen[0].2, seen[0].3, seen[0].4), (3, 4_000_000_000, 5));
    assert_eq!(seen[0].7, b"abc");
    assert_eq!(seen[1].0, "next");
    assert_eq!((seen[1].3, seen[1].4, seen[1].5), (1, 2, (3, 0)));
    assert_eq!(seen[1].7, b"z");
}

fn err(tar: &[u8]) -> String {
    format!("{:#}", read_all(tar).expect_err("must fail"))
}

#[test]
fn bad_extensions_fail_cleanly() {
    // A lying record length, naming the member it describes.
    let mut tar = Vec::new();
    ext(&mut tar, EntryType::XHeader, b"99 uid=1\n");
    file(&mut tar, "victim", b"");
    end(&mut tar);
    let e = err(&tar);
    assert!(
        e.contains("malformed PAX record") && e.contains("victim"),
        "{e}"
    );

    // A header claiming more than the bound: refused before any allocation.
    let mut h = header(EntryType::XHeader, "ext", 1 << 40);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    end(&mut tar);
    assert!(err(&tar).contains("more than the"), "{}", err(&tar));
    let mut h = header(EntryType::GNULongName, "././@LongLink", MAX_EXTENSION + 1);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    end(&mut tar);
    assert!(err(&tar).contains("more than the"));

    // Truncated: inside the extension, after it, inside a header, inside data.
    let mut tar = Vec::new();
    ext(&mut tar, EntryType::XHeader, &format_record(b"uid", b"1"));
    assert!(err(&tar).contains("without its member"));
    assert!(err(&tar[..100]).contains("inside a header"));
    assert!(err(&tar[..515]).contains("ends inside it"));
    let mut tar = Vec::new();
    file(&mut tar, "f", &[1; 1000]);
    assert!(
        err(&tar[..900]).contains("ends inside"),
        "{}",
        err(&tar[..900])
    );

    // Two PAX headers for one member; a bad checksum.
    let mut tar = Vec::new();
    ext(&mut tar, EntryType::XHeader, &format_record(b"uid", b"1"));
    ext(&mut tar, EntryType::XHeader, &format_record(b"uid", b"1"));
    file(&mut tar, "f", b"");
    assert!(err(&tar).contains("second PAX header"));
    let mut tar = Vec::new();
    file(&mut tar, "f", b"");
    tar[0] = b'g';
    assert!(err(&tar).contains("checksum"));

    // A PAX sparse member (its map is not read): refused, not unpacked wrong.
    let mut tar = Vec::new();
    ext(
        &mut tar,
        EntryType::XHeader,
        &format_record(b"GNU.sparse.major", b"1"),
    );
    file(&mut tar, "GNUSparseFile.1/f", b"1\n0\n0\n");
    end(&mut tar);
    assert!(err(&tar).contains("PAX sparse file"), "{}", err(&tar));
}

/// An old-GNU sparse member with its map spilling into extension blocks, as GNU tar (and
/// layerfs's `pack` before it wrote holes as zeros) writes.
#[test]
fn sparse_files_read_with_their_holes() {
    let segs: Vec<(u64, u64)> = (0..30)
        .map(|i| (i * 1000, 10))
        .chain([(40_000, 0)])
        .collect();
    let stored: u64 = segs.iter().map(|s| s.1).sum();
    let mut h = header(EntryType::GNUSparse, "sparse", stored);
    let mut blocks = Vec::new();
    {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.set_real_size(40_000);
        for (slot, &(o, l)) in gnu.sparse.iter_mut().zip(&segs[..4]) {
            slot.set_offset(o);
            slot.set_length(l);
        }
        gnu.set_is_extended(true);
        let chunks: Vec<_> = segs[4..].chunks(21).collect();
        for (i, c) in chunks.iter().enumerate() {
            let mut e = GnuExtSparseHeader::new();
            for (slot, &(o, l)) in e.sparse.iter_mut().zip(c.iter()) {
                slot.set_offset(o);
                slot.set_length(l);
            }
            e.set_is_extended(i + 1 < chunks.len());
            blocks.extend_from_slice(e.as_bytes());
        }
    }
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend(&blocks);
    for i in 0..30u8 {
        tar.extend([i + 1; 10]);
    }
    tar.resize(tar.len().next_multiple_of(512), 0);
    file(&mut tar, "after", b"ok");
    end(&mut tar);
    let seen = read_all(&tar).unwrap();
    let data = &seen[0].7;
    assert_eq!((seen[0].2, data.len()), (40_000, 40_000));
    for (i, chunk) in data.chunks(1000).enumerate() {
        if i < 30 {
            assert_eq!(&chunk[..10], &[i as u8 + 1; 10]);
            assert!(chunk[10..].iter().all(|&b| b == 0));
        } else {
            assert!(chunk.iter().all(|&b| b == 0));
        }
    }
    assert_eq!(
        seen[1].7, b"ok",
        "the next member is found after the sparse one"
    );

    // A map holding more bytes than the member: refused.
    let mut bad = tar.clone();
    let mut h = Header::from_byte_slice(&bad[..512]).clone();
    h.set_size(stored - 1);
    h.set_cksum();
    bad[..512].copy_from_slice(h.as_bytes());
    assert!(err(&bad).contains("sparse map holds"));
}

/// The reader agrees with the `tar` crate's on what the crate can read (no newline in
/// PAX values); both consume the builder's output.
#[test]
fn agrees_with_the_tar_crate() {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..20usize {
        let v = vec![b'a' + (i % 26) as u8; i * 7];
        if i % 3 == 0 {
            b.append_pax_extensions([("SCHILY.xattr.user.k", &v[..])])
                .unwrap();
        }
        let mut h = Header::new_gnu();
        h.set_size(v.len() as u64);
        h.set_uid(i as u64);
        h.set_mtime(i as u64 * 11);
        let name = format!("{}{i}", "n".repeat(i * 13));
        b.append_data(&mut h, &name, &v[..]).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mine = read_all(&tar).unwrap();
    let mut a = tar::Archive::new(&tar[..]);
    let mut theirs = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> = match e.pax_extensions().unwrap() {
            Some(x) => x
                .map(|r| r.unwrap())
                .map(|r| (r.key_bytes()[13..].to_vec(), r.value_bytes().to_vec()))
                .collect(),
            None => Vec::new(),
        };
        let (uid, mtime) = (e.header().uid().unwrap(), e.header().mtime().unwrap());
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        theirs.push((path, uid, mtime as i64, xattrs, data));
    }
    let mine: Vec<_> = mine
        .into_iter()
        .map(|s| (s.0, s.3, s.5 .0, s.6, s.7))
        .collect();
    assert_eq!(mine, theirs);
}

/// Seeking over data (archives read in place) finds the same members, and each member's
/// data offset points at its bytes.
#[test]
fn seekable_reader_gives_data_offsets() {
    let mut b = tar::Builder::new(Vec::new());
    let files: Vec<(String, Vec<u8>)> = (0..5usize)
        .map(|i| {
            (
                format!("{}{i}", "m".repeat(i * 60)),
                vec![b'0' + i as u8; i * 700],
            )
        })
        .collect();
    for (name, data) in &files {
        b.append_pax_extensions([("SCHILY.xattr.user.v", &b"\n"[..])])
            .unwrap();
        let mut h = Header::new_gnu();
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut r = TarReader::new_seekable(io::Cursor::new(&tar[..]));
    let mut i = 0;
    while let Some(e) = r.next_entry().unwrap() {
        let (name, data) = &files[i];
        assert_eq!(e.path, name.as_bytes());
        let off = r.data_offset() as usize;
        assert_eq!(&tar[off..off + e.size as usize], &data[..]);
        i += 1;
    }
    assert_eq!(i, files.len());
}
