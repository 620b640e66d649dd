//! Round trips: a tar written in each seekable form, its TOC read back, every file's
//! chunks fetched and checked; hostile TOCs refused.

use std::collections::HashMap;
use std::io::{Read, Seek, Write};

use super::read::{self, fetch_chunk};
use super::toc::{Form, Kind, Toc};
use super::write::{self, CHUNK};

/// A layer tar with every kind the TOC records; returns it and the files' contents.
pub fn sample_tar() -> (std::fs::File, Files) {
    let mut b = tar::Builder::new(Vec::new());
    let mut files = Vec::new();
    let add = |b: &mut tar::Builder<Vec<u8>>,
               path: &str,
               kind: tar::EntryType,
               data: &[u8],
               link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o640
        });
        h.set_uid(1000);
        h.set_gid(100);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        b.append_data(&mut h, path, data).unwrap();
    };
    add(&mut b, "etc/", tar::EntryType::Directory, b"", None);
    let small = b"hello, lazy world\n".to_vec();
    add(&mut b, "etc/hello", tar::EntryType::Regular, &small, None);
    files.push(("etc/hello".to_string(), small));
    add(&mut b, "etc/empty", tar::EntryType::Regular, b"", None);
    let big: Vec<u8> = (0..(2 * CHUNK + 12345))
        .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
        .collect();
    add(&mut b, "usr/big", tar::EntryType::Regular, &big, None);
    files.push(("usr/big".to_string(), big));
    add(
        &mut b,
        "usr/link",
        tar::EntryType::Symlink,
        b"",
        Some("big"),
    );
    add(
        &mut b,
        "usr/hard",
        tar::EntryType::Link,
        b"",
        Some("usr/big"),
    );
    add(&mut b, "etc/.wh.gone", tar::EntryType::Regular, b"", None);
    let data = b.into_inner().unwrap();
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&data).unwrap();
    f.rewind().unwrap();
    (f, files)
}

/// Paths and contents of a sample's regular files.
type Files = Vec<(String, Vec<u8>)>;

fn written(form: Form) -> (Vec<u8>, write::Written, Vec<u8>, Files) {
    let (mut f, files) = sample_tar();
    let mut tar = Vec::new();
    f.read_to_end(&mut tar).unwrap();
    let mut blob = Vec::new();
    let w = write::write(&mut f, form, &mut blob).unwrap();
    (blob, w, tar, files)
}

fn annotations(w: &write::Written) -> HashMap<String, String> {
    w.annotations.clone().into_iter().collect()
}

#[test]
fn both_forms_round_trip_with_and_without_annotations() {
    for form in [Form::ZstdChunked, Form::Estargz] {
        let (blob, w, tar, files) = written(form);
        // Decompressed, the blob is the layer tar (eStargz: with its TOC member added).
        let mut plain = Vec::new();
        match form {
            Form::ZstdChunked => {
                zstd::stream::read::Decoder::new(&blob[..])
                    .unwrap()
                    .read_to_end(&mut plain)
                    .unwrap();
                assert_eq!(plain, tar, "zstd:chunked decompresses to the tar");
            }
            Form::Estargz => {
                flate2::read::MultiGzDecoder::new(&blob[..])
                    .read_to_end(&mut plain)
                    .unwrap();
                let names: Vec<String> = tar::Archive::new(&plain[..])
                    .entries()
                    .unwrap()
                    .map(|e| e.unwrap().path().unwrap().display().to_string())
                    .collect();
                assert_eq!(names.last().map(String::as_str), Some("stargz.index.json"));
            }
        }
        assert_eq!(
            w.diff_id,
            format!(
                "sha256:{:x}",
                <sha2::Sha256 as sha2::Digest>::digest(&plain)
            )
        );
        for ann in [annotations(&w), HashMap::new()] {
            let opened = read::open(&blob, &ann).unwrap();
            assert_eq!(opened.form, form);
            let toc = &opened.toc;
            let paths: Vec<&[u8]> = toc.entries.iter().map(|e| &e.path[..]).collect();
            assert_eq!(
                paths,
                [
                    &b"etc"[..],
                    b"etc/hello",
                    b"etc/empty",
                    b"usr/big",
                    b"usr/link",
                    b"usr/hard",
                    b"etc/.wh.gone"
                ]
            );
            let e = &toc.entries[3];
            assert_eq!(
                (e.mode, e.uid, e.gid, e.mtime),
                (0o640, 1000, 100, 1_700_000_000)
            );
            assert_eq!(e.chunks.len(), 3);
            assert_eq!(toc.entries[4].kind, Kind::Symlink(b"big".to_vec()));
            assert_eq!(toc.entries[5].kind, Kind::Hardlink(b"usr/big".to_vec()));
            for (path, content) in &files {
                let e = toc
                    .entries
                    .iter()
                    .find(|e| e.path == path.as_bytes())
                    .unwrap();
                let mut got = Vec::new();
                for c in &e.chunks {
                    got.extend(fetch_chunk(&blob, form, c).unwrap());
                }
                assert_eq!(&got, content, "{path}");
            }
        }
    }
}

#[test]
fn a_corrupted_chunk_is_refused_and_a_wrong_toc_digest_too() {
    for form in [Form::ZstdChunked, Form::Estargz] {
        let (blob, w, _, _) = written(form);
        let opened = read::open(&blob, &annotations(&w)).unwrap();
        let e = opened
            .toc
            .entries
            .iter()
            .find(|e| e.path == b"usr/big")
            .unwrap();
        let c = &e.chunks[1];
        // Flip a byte in the compressed chunk: either the decoder or the digest refuses.
        let mut bad = blob.clone();
        bad[((c.blob_offset + c.blob_end) / 2) as usize] ^= 0x55;
        assert!(fetch_chunk(&bad, form, c).is_err(), "{form:?}");
        // A chunk entry pointing at another file's (valid) bytes fails its digest.
        let mut wrong = c.clone();
        (wrong.blob_offset, wrong.blob_end) = (e.chunks[0].blob_offset, e.chunks[0].blob_end);
        let err = fetch_chunk(&blob, form, &wrong).unwrap_err();
        assert!(format!("{err:#}").contains("digest mismatch"), "{err:#}");
        let mut ann = annotations(&w);
        for v in ann.values_mut() {
            if v.starts_with("sha256:") {
                *v = format!("sha256:{}", "0".repeat(64));
            }
        }
        assert!(read::open(&blob, &ann).is_err());
    }
}

#[test]
fn hostile_tocs_are_refused() {
    let cases: &[&str] = &[
        r#"{"version":1,"entries":[{"type":"reg","name":"../x","size":1,"offset":1,"endOffset":2,"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}]}"#,
        r#"{"version":1,"entries":[{"type":"reg","name":"/abs","size":0}]}"#,
        r#"{"version":2,"entries":[]}"#,
        r#"{"version":1,"entries":[{"type":"reg","name":"a","size":10,"offset":5,"endOffset":900,"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}]}"#,
        r#"{"version":1,"entries":[{"type":"reg","name":"a","size":10,"offset":5,"endOffset":6,"chunkSize":4,"chunkDigest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}]}"#,
        r#"{"version":1,"entries":[{"type":"chunk","name":"a","chunkOffset":3}]}"#,
        r#"{"version":1,"entries":[{"type":"reg","name":"a","size":-1}]}"#,
        r#"{"version":1,"entries":[{"type":"hardlink","name":"a","linkName":"../../etc/passwd"}]}"#,
        r#"{"version":1,"entries":[{"type":"reg","name":"a","size":1,"offset":1,"endOffset":2,"digest":"md5:00"}]}"#,
    ];
    for c in cases {
        assert!(
            Toc::parse(c.as_bytes(), Form::ZstdChunked, 100).is_err(),
            "{c}"
        );
    }
}

#[test]
fn estargz_landmarks_mark_what_to_fetch_first_and_are_not_files() {
    let d = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    let toc = format!(
        r#"{{"version":1,"entries":[
        {{"type":"reg","name":"first","size":5,"offset":10,"chunkDigest":"{d}","digest":"{d}"}},
        {{"type":"reg","name":".prefetch.landmark","size":1,"offset":20,"chunkDigest":"{d}"}},
        {{"type":"reg","name":"later","size":5,"offset":30,"chunkDigest":"{d}","digest":"{d}"}},
        {{"type":"reg","name":"stargz.index.json","size":5,"offset":40,"chunkDigest":"{d}"}}]}}"#
    );
    let t = Toc::parse(toc.as_bytes(), Form::Estargz, 50).unwrap();
    let names: Vec<(&[u8], bool)> = t
        .entries
        .iter()
        .map(|e| (&e.path[..], e.landmark))
        .collect();
    assert_eq!(names, [(&b"first"[..], true), (b"later", false)]);
    // Each chunk ends where the next member starts.
    assert_eq!(
        (
            t.entries[0].chunks[0].blob_offset,
            t.entries[0].chunks[0].blob_end
        ),
        (10, 20)
    );
    // zstd:chunked has no landmarks: the same names are files there.
    let z = Toc::parse(toc.as_bytes(), Form::ZstdChunked, 50).unwrap();
    assert_eq!(z.entries.len(), 4);
}

#[test]
fn times_with_offsets_as_go_writes_them() {
    // Go's encoding of a tar header's local time carries its offset.
    let toc = r#"{"version":1,"entries":[{"type":"dir","name":"d","modtime":"2023-01-02T03:04:05.5+02:00"}]}"#;
    let t = Toc::parse(toc.as_bytes(), Form::ZstdChunked, 0).unwrap();
    assert_eq!(
        (t.entries[0].mtime, t.entries[0].mtime_nsec),
        (1_672_621_445, 500_000_000)
    );
}

#[test]
fn a_name_that_is_not_utf8_refuses_a_seekable_form() {
    use std::os::unix::ffi::OsStrExt;
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(1);
    let name = std::path::Path::new(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    b.append_data(&mut h, name, &b"x"[..]).unwrap();
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&b.into_inner().unwrap()).unwrap();
    for form in [Form::ZstdChunked, Form::Estargz] {
        let err = write::write(&mut f, form, Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("not UTF-8"), "{err:#}");
    }
}

#[test]
fn a_blobs_seekable_annotations_are_found_again_from_its_footer() {
    for form in [Form::ZstdChunked, Form::Estargz] {
        let (blob, w, _, _) = written(form);
        let mut want = w.annotations.clone();
        // Not recoverable without reading the whole blob; readers do without it.
        want.remove(super::read::ESTARGZ_UNCOMPRESSED_SIZE);
        assert_eq!(
            super::read::annotations_of(&blob),
            Some(want),
            "{}",
            form.name()
        );
    }
    assert_eq!(super::read::annotations_of(&vec![0u8; 4096]), None);
}

/// A blob whose stream breaks once at `break_at` (a dropped connection): what a layer
/// arriving whole must resume from, not start again.
struct Breaking {
    blob: Vec<u8>,
    break_at: u64,
    broke: std::sync::atomic::AtomicBool,
    opened_at: std::sync::Mutex<Vec<u64>>,
}

impl super::RangeSource for Breaking {
    fn read_range(&self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        self.blob.read_range(offset, len)
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.blob.len() as u64)
    }

    fn describe(&self) -> String {
        "a breaking blob".into()
    }

    fn stream_from(&self, offset: u64) -> std::io::Result<Box<dyn Read + Send + '_>> {
        self.opened_at.lock().unwrap().push(offset);
        let rest = &self.blob[offset as usize..];
        if offset < self.break_at && !self.broke.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let upto = (self.break_at - offset) as usize;
            let cut = std::io::Cursor::new(rest[..upto].to_vec());
            return Ok(Box::new(cut.chain(Failing)));
        }
        Ok(Box::new(std::io::Cursor::new(rest.to_vec())))
    }
}

struct Failing;

impl Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    }
}

#[test]
fn a_layer_arriving_whole_resumes_a_broken_stream_and_becomes_ordinary() {
    use sha2::Digest as _;
    let (mut f, files) = sample_tar();
    let mut tar = Vec::new();
    f.read_to_end(&mut tar).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let blob = gz.finish().unwrap();
    let diff_id = format!("{:x}", sha2::Sha256::digest(&tar));
    let store = tempfile::tempdir().unwrap();
    let layer = store.path().join("layers").join(&diff_id);
    std::fs::create_dir_all(layer.parent().unwrap()).unwrap();
    let unused = crate::format::lazy::Source::File {
        path: store.path().join("no-such-blob"),
    };
    super::whole::make(&layer, unused, crate::source::Compression::Gzip).unwrap();
    let src = std::sync::Arc::new(Breaking {
        break_at: blob.len() as u64 / 2,
        blob,
        broke: Default::default(),
        opened_at: Default::default(),
    });
    let l = super::WholeLayer::open_with(&layer, src.clone()).unwrap();
    l.fill().unwrap();
    // Opened twice: from the start, then from where it broke.
    assert_eq!(*src.opened_at.lock().unwrap(), [0, src.break_at]);
    for (path, data) in &files {
        assert_eq!(&std::fs::read(layer.join(path)).unwrap(), data, "{path}");
    }
    assert!(!crate::format::lazy::dir_for(&layer).unwrap().exists());
    assert!(crate::verity::HashList::path_for(&layer).exists());
}
