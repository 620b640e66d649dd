//! Hostile layers: every malformed or malicious archive gives one clear error line and a
//! failing exit status: no panic, no path outside the image, bounded memory.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use testkit::imagekit::Comp;
use testkit::BIN;

/// One raw tar header (+ data), written by hand so any name can be used.
fn entry(out: &mut Vec<u8>, name: &[u8], ty: tar::EntryType, link: &[u8], data: &[u8]) {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_entry_type(ty);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn finish(mut t: Vec<u8>) -> Vec<u8> {
    t.extend_from_slice(&[0u8; 1024]);
    t
}

fn inspect(src: &str, cache: &Path) -> Output {
    Command::new(BIN)
        .args(["inspect", src])
        .env("LAYERFS_CACHE_DIR", cache)
        .output()
        .unwrap()
}

/// Runs inspect on a one-layer OCI image of `tar` and returns the error line.
fn refused(tar: &[u8], comp: Comp) -> String {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("oci");
    testkit::imagekit::write_oci(&dir, &[tar.to_vec()], &["hostile"], comp, "x");
    let o = inspect(&format!("oci:{}", dir.display()), &t.path().join("cache"));
    one_error(&o)
}

fn one_error(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "must fail: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn dot_dot_names_are_refused() {
    let mut t = Vec::new();
    entry(&mut t, b"ok", tar::EntryType::Regular, b"", b"fine");
    entry(&mut t, b"a/../../evil", tar::EntryType::Regular, b"", b"x");
    let err = refused(&finish(t), Comp::None);
    assert!(
        err.contains("leaves the image root") && err.contains("evil"),
        "{err}"
    );
}

#[test]
fn absolute_names_are_refused() {
    let mut t = Vec::new();
    entry(
        &mut t,
        b"/etc/passwd",
        tar::EntryType::Regular,
        b"",
        b"root::0:0",
    );
    let err = refused(&finish(t), Comp::Gzip);
    assert!(
        err.contains("absolute path") && err.contains("/etc/passwd"),
        "{err}"
    );
}

#[test]
fn a_file_through_a_symlink_of_the_same_layer_is_refused() {
    let mut t = Vec::new();
    entry(&mut t, b"ln", tar::EntryType::Symlink, b"/etc", b"");
    entry(&mut t, b"ln/passwd", tar::EntryType::Regular, b"", b"x");
    let err = refused(&finish(t), Comp::Zstd);
    assert!(
        err.contains("/ln/passwd") && err.contains("symlink"),
        "{err}"
    );
}

#[test]
fn a_hard_link_out_of_the_image_is_refused() {
    let mut t = Vec::new();
    entry(&mut t, b"h", tar::EntryType::Link, b"../../etc/shadow", b"");
    let err = refused(&finish(t), Comp::None);
    assert!(err.contains("/h") && err.contains("hard link"), "{err}");
}

#[test]
fn a_truncated_gzip_layer_is_an_error() {
    let mut t = Vec::new();
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    entry(&mut t, b"big", tar::EntryType::Regular, b"", &data);
    let gz = testkit::imagekit::compress(&finish(t), Comp::Gzip);
    let cut = gz[..gz.len() / 2].to_vec();
    // A layout whose blob is the cut stream (its digest is the cut bytes': only the
    // decompressor can notice).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("oci");
    write_raw_layer(&dir, &cut, "application/vnd.oci.image.layer.v1.tar+gzip");
    let o = inspect(&format!("oci:{}", dir.display()), &tmp.path().join("cache"));
    let err = one_error(&o);
    assert!(
        err.contains("/big") && err.contains("incomplete deflate stream"),
        "{err}"
    );
}

/// An OCI layout whose single layer is `blob` as is.
fn write_raw_layer(dir: &Path, blob: &[u8], media_type: &str) {
    let put = |data: &[u8]| {
        let d = testkit::imagekit::sha256(data);
        let p = dir.join("blobs/sha256").join(&d[7..]);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
        d
    };
    let cfg = br#"{"config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = put(cfg);
    let ld = put(blob);
    let m = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()},
        "layers": [{"mediaType": media_type, "digest": ld, "size": blob.len()}],
    }))
    .unwrap();
    let md = put(&m);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": m.len()}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A directory of 10^6 entries: refused at the per-directory limit, in bounded memory.
#[test]
fn a_million_entry_directory_is_refused_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("oci");
    // 10^6 headers are 512 MB of tar: built from one template header (name and checksum
    // patched) and compressed by the zstd tool, so the test costs seconds, not minutes.
    let mut zstd = Command::new("zstd")
        .args(["-1", "-q", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("zstd is installed (scripts/test installs it)");
    let mut stdin = zstd.stdin.take().unwrap();
    let mut stdout = zstd.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut v).unwrap();
        v
    });
    let mut first = Vec::new();
    entry(&mut first, b"d/", tar::EntryType::Directory, b"", b"");
    stdin.write_all(&first).unwrap();
    let mut template = tar::Header::new_old();
    template.set_mode(0o644);
    template.set_size(0);
    template.set_entry_type(tar::EntryType::Regular);
    template.as_old_mut().cksum = [b' '; 8];
    let base: u32 = template.as_bytes().iter().map(|&b| b as u32).sum();
    let mut buf = Vec::with_capacity(1 << 20);
    for i in 0..1_000_000u32 {
        let name = format!("d/{i}");
        let mut h = *template.as_bytes();
        h[..name.len()].copy_from_slice(name.as_bytes());
        let sum = base + name.bytes().map(u32::from).sum::<u32>();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        buf.extend_from_slice(&h);
        if buf.len() >= 1 << 20 {
            stdin.write_all(&buf).unwrap();
            buf.clear();
        }
    }
    buf.extend_from_slice(&[0u8; 1024]);
    stdin.write_all(&buf).unwrap();
    drop(stdin);
    let blob = reader.join().unwrap();
    assert!(zstd.wait().unwrap().success());
    write_raw_layer(&dir, &blob, "application/vnd.oci.image.layer.v1.tar+zstd");
    let o = inspect(&format!("oci:{}", dir.display()), &tmp.path().join("cache"));
    let err = one_error(&o);
    assert!(err.contains("directory /d has more than"), "{err}");
    // SAFETY: `ru` is a plain struct getrusage fills.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    let r = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    assert_eq!(r, 0);
    let peak_mib = ru.ru_maxrss / 1024;
    assert!(peak_mib < 150, "peak RSS of a child: {peak_mib} MiB");
}

/// A symlink in a layer directory pointing at the host's /etc is followed inside the image
/// only: `cat -L` never reads the host's file.
#[test]
fn symlinks_resolve_inside_the_image_only() {
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("l");
    std::fs::create_dir_all(l.join("etc")).unwrap();
    std::fs::write(l.join("etc/passwd"), b"image passwd\n").unwrap();
    std::os::unix::fs::symlink("/etc", l.join("ln")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/shadow", l.join("gone")).unwrap();
    let src = format!("lowerdir={}", l.display());
    let cat = |p: &str| {
        Command::new(BIN)
            .args(["cat", "-L", &src, p])
            .env("LAYERFS_CACHE_DIR", t.path().join("cache"))
            .output()
            .unwrap()
    };
    let o = cat("/ln/passwd");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, b"image passwd\n");
    let err = one_error(&cat("/gone"));
    assert!(err.contains("/nonexistent/shadow"), "{err}");
    // Without -L a symlink is named, not followed.
    let o = Command::new(BIN)
        .args(["cat", &src, "/ln/passwd"])
        .env("LAYERFS_CACHE_DIR", t.path().join("cache"))
        .output()
        .unwrap();
    let err = one_error(&o);
    assert!(err.contains("/ln/passwd") || err.contains("/ln"), "{err}");
}
