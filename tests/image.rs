//! The image tools end to end: import (hostile tars, digest mismatches), commit
//! (reproducibility, round trip through a writable mount), squash (round trip through the
//! stack's mount), and the store.

mod common;

use std::path::{Path, PathBuf};

use common::ops::{self, Op};
use common::spec::{self, Form};
use common::{ok, require_root, run_layerfs, sha, tree, Layerfs};
use proptest::prelude::*;

/// Writes an OCI layout at `dir` tagged `t` with the given uncompressed layer tars;
/// `diff_ids` overrides the config's (to forge a mismatch).
fn layout(dir: &Path, layers: &[Vec<u8>], diff_ids: Option<Vec<String>>) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| -> String {
        let d = sha(b);
        std::fs::write(blobs.join(&d[7..]), b).unwrap();
        d
    };
    let descs: Vec<_> = layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": put(l), "size": l.len()})
        })
        .collect();
    let diff_ids = diff_ids.unwrap_or_else(|| layers.iter().map(|l| sha(l)).collect());
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin", "IMAGE_VAR=1"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}}))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put(&config), "size": config.len()},
        "layers": descs}))
    .unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": put(&manifest), "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "t"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// A tar entry with raw (unchecked) name and link name.
fn raw_entry(out: &mut Vec<u8>, name: &[u8], kind: tar::EntryType, data: &[u8], link: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn finish(mut t: Vec<u8>) -> Vec<u8> {
    t.extend_from_slice(&[0u8; 1024]);
    t
}

/// Every file under `dir` (relative), to show a store is empty.
fn contents(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["layers", "kept", "images", "tmp"] {
        if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
            out.extend(rd.map(|e| e.unwrap().path()));
        }
    }
    out
}

#[test]
fn hostile_tars_are_refused_and_leave_the_store_unchanged() {
    if !require_root("hostile_tars_are_refused_and_leave_the_store_unchanged") {
        return;
    }
    use tar::EntryType as T;
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "untouched").unwrap();
    let o = outside.to_str().unwrap().as_bytes().to_vec();
    let secret = [o.as_slice(), b"/secret"].concat();
    // A harmless first layer, so a failure in the second must also undo the first.
    let good = {
        let mut v = Vec::new();
        raw_entry(&mut v, b"ok", T::Regular, b"fine", b"");
        finish(v)
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            {
                let mut v = Vec::new();
                raw_entry(&mut v, b"a/../../escape", T::Regular, b"x", b"");
                finish(v)
            },
            "`..`",
        ),
        (
            "absolute",
            {
                let mut v = Vec::new();
                raw_entry(&mut v, &secret, T::Regular, b"x", b"");
                finish(v)
            },
            "absolute",
        ),
        (
            "through a symlink",
            {
                let mut v = Vec::new();
                raw_entry(&mut v, b"l", T::Symlink, b"", &o);
                raw_entry(&mut v, b"l/secret", T::Regular, b"overwritten", b"");
                finish(v)
            },
            "symlink",
        ),
        (
            "hard link outside",
            {
                let mut v = Vec::new();
                raw_entry(&mut v, b"h", T::Link, b"", b"../../../../../../etc/passwd");
                finish(v)
            },
            "`..`",
        ),
        (
            "hard link through a symlink",
            {
                let mut v = Vec::new();
                raw_entry(&mut v, b"l", T::Symlink, b"", &o);
                raw_entry(&mut v, b"h", T::Link, b"", b"l/secret");
                finish(v)
            },
            "symlink",
        ),
        (
            "absurd size",
            {
                let mut v = Vec::new();
                let mut h = tar::Header::new_gnu();
                h.set_path("huge").unwrap();
                h.set_size(1 << 50);
                h.set_mode(0o644);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
                h.set_cksum();
                v.extend_from_slice(h.as_bytes());
                finish(v)
            },
            "exceeds the limit",
        ),
    ];
    let store = t.path().join("store");
    for (what, tar, why) in cases {
        let dir = t.path().join(what.replace(' ', "-"));
        layout(&dir, &[good.clone(), tar], None);
        let src = format!("oci:{}:t", dir.display());
        let out = run_layerfs(&["import", &src, "--store", store.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: import succeeded");
        assert!(err.contains(why), "{what}: unclear error: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: one line: {err}");
        assert_eq!(
            contents(&store),
            Vec::<PathBuf>::new(),
            "{what}: store changed"
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "untouched",
            "{what}"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1, "{what}");
    }
}

#[test]
fn digest_mismatch_leaves_no_layer_behind() {
    if !require_root("digest_mismatch_leaves_no_layer_behind") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mut a = Vec::new();
    raw_entry(&mut a, b"a", tar::EntryType::Regular, b"a", b"");
    let a = finish(a);
    let mut b = Vec::new();
    raw_entry(&mut b, b"b", tar::EntryType::Regular, b"b", b"");
    let b = finish(b);
    let store = t.path().join("store");
    // Wrong diff_id for the second layer.
    let dir = t.path().join("bad-diff-id");
    layout(
        &dir,
        &[a.clone(), b.clone()],
        Some(vec![sha(&a), sha(b"other")]),
    );
    let out = run_layerfs(&[
        "import",
        &format!("oci:{}:t", dir.display()),
        "--store",
        store.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("mismatch"), "{err}");
    assert_eq!(contents(&store), Vec::<PathBuf>::new());
    // A blob whose bytes are not its digest.
    let dir = t.path().join("bad-blob");
    layout(&dir, &[a.clone(), b.clone()], None);
    let blob = dir.join("blobs/sha256").join(&sha(&b)[7..]);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[600] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let out = run_layerfs(&[
        "import",
        &format!("oci:{}:t", dir.display()),
        "--store",
        store.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("mismatch"), "{err}");
    assert_eq!(contents(&store), Vec::<PathBuf>::new());
    // The good image imports, and rmi takes it all away again.
    let dir = t.path().join("good");
    layout(&dir, &[a, b], None);
    let src = format!("oci:{}:t", dir.display());
    ok(
        &run_layerfs(&[
            "import",
            &src,
            "--name",
            "good",
            "--store",
            store.to_str().unwrap(),
        ]),
        "import",
    );
    assert_eq!(std::fs::read_dir(store.join("layers")).unwrap().count(), 2);
    let list = ok(
        &run_layerfs(&["images", "--json", "--store", store.to_str().unwrap()]),
        "images",
    );
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v[0]["config"]["env"][1], "IMAGE_VAR=1");
    ok(
        &run_layerfs(&["rmi", "good", "--store", store.to_str().unwrap()]),
        "rmi",
    );
    assert_eq!(contents(&store), Vec::<PathBuf>::new());
}

/// An upper with every kind of entry and mark, as the kernel writes them.
fn kernel_upper(u: &Path) {
    use std::os::unix::fs::symlink;
    std::fs::create_dir_all(u.join("dir/sub")).unwrap();
    std::fs::create_dir_all(u.join("opaque")).unwrap();
    std::fs::write(u.join("file"), "data").unwrap();
    std::fs::hard_link(u.join("file"), u.join("dir/link")).unwrap();
    symlink("../file", u.join("dir/sym")).unwrap();
    std::fs::write(u.join("opaque/new"), "new").unwrap();
    let f = std::fs::File::create(u.join("sparse")).unwrap();
    f.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"middle", 4 << 20).unwrap();
    let c = |p: &Path| std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: NUL-terminated paths; plain syscalls.
    unsafe {
        assert_eq!(
            libc::mknod(c(&u.join("gone")).as_ptr(), libc::S_IFCHR, 0),
            0
        );
        assert_eq!(
            libc::mknod(c(&u.join("fifo")).as_ptr(), libc::S_IFIFO | 0o640, 0),
            0
        );
        let (n, v) = (c(Path::new("trusted.overlay.opaque")), b"y");
        assert_eq!(
            libc::lsetxattr(
                c(&u.join("opaque")).as_ptr(),
                n.as_ptr(),
                v.as_ptr().cast(),
                1,
                0
            ),
            0
        );
        let (n, v) = (
            c(Path::new("security.capability")),
            [1u8, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        assert_eq!(
            libc::lsetxattr(
                c(&u.join("file")).as_ptr(),
                n.as_ptr(),
                v.as_ptr().cast(),
                v.len(),
                0
            ),
            0
        );
        let (n, v) = (c(Path::new("user.note")), b"kept");
        assert_eq!(
            libc::lsetxattr(
                c(&u.join("dir")).as_ptr(),
                n.as_ptr(),
                v.as_ptr().cast(),
                4,
                0
            ),
            0
        );
    }
}

#[test]
fn commit_is_reproducible_and_converts_to_oci_form() {
    if !require_root("commit_is_reproducible_and_converts_to_oci_form") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let u = t.path().join("upper");
    kernel_upper(&u);
    let store = t.path().join("store");
    let commit = |to: &str, extra: &[&str]| {
        let o = format!("upperdir={}", u.display());
        let mut args = vec![
            "commit",
            "-o",
            &o,
            "--to",
            to,
            "--json",
            "--store",
            store.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = ok(&run_layerfs(&args), "commit");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let one = commit(
        t.path().join("1.tar.gz").to_str().unwrap(),
        &["--compress", "gzip"],
    );
    // Touching every file's atime/ctime changes nothing; a second run gives the same bytes.
    let two = commit(
        t.path().join("2.tar.gz").to_str().unwrap(),
        &["--compress", "gzip"],
    );
    assert_eq!(one["diff_id"], two["diff_id"]);
    assert_eq!(one["blob_digest"], two["blob_digest"]);
    let pinned = commit(
        t.path().join("3.tar").to_str().unwrap(),
        &["--timestamp", "0"],
    );
    assert_ne!(pinned["diff_id"], one["diff_id"]);

    // What GNU tar sees: OCI markers, the hard link, the sparse map, the xattrs.
    let list = std::process::Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-tvvf"])
        .arg(t.path().join("3.tar"))
        .output()
        .unwrap();
    let list = ok(&list, "tar -t");
    for want in [
        ".wh.gone",
        "opaque/.wh..wh..opq",
        "file link to dir/link",
        "dir/sym -> ../file",
        "1970-01-01",
    ] {
        assert!(list.contains(want), "{want} missing in\n{list}");
    }
    assert!(!list.contains("overlay"), "a union xattr leaked:\n{list}");
    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let o = std::process::Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-xf"])
        .arg(t.path().join("3.tar"))
        .arg("-C")
        .arg(&x)
        .output()
        .unwrap();
    ok(&o, "tar -x");
    use std::os::unix::fs::MetadataExt;
    // Holes travel as zeros (no GNU sparse member: containers/storage refuses type `S`).
    let sparse = std::fs::read(x.join("sparse")).unwrap();
    assert_eq!(sparse.len(), 8 << 20);
    assert_eq!(&sparse[4 << 20..(4 << 20) + 6], b"middle");
    assert_eq!(sparse.iter().filter(|&&b| b != 0).count(), 6);
    let mut r = layerfs_image::tarread::TarReader::new(
        std::fs::File::open(t.path().join("3.tar")).unwrap(),
    );
    while let Some(e) = r.next_entry().unwrap() {
        assert_ne!(e.kind, tar::EntryType::GNUSparse, "{:?}", e.path);
    }
    let caps = std::process::Command::new("getfattr")
        .args(["-n", "security.capability", "--only-values"])
        .arg(x.join("file"))
        .output()
        .unwrap();
    ok(&caps, "getfattr");
    assert_eq!(caps.stdout.len(), 20, "security.capability kept");
    assert_eq!(
        tree::xattrs(&x.join("dir")).get("user.note").unwrap(),
        b"kept"
    );
    assert_eq!(
        std::fs::metadata(x.join("file")).unwrap().ino(),
        std::fs::metadata(x.join("dir/link")).unwrap().ino()
    );

    // Into a layer directory: kernel form again, readable by the kernel's overlayfs.
    let l = t.path().join("layer");
    commit(&format!("dir:{}", l.display()), &[]);
    let lower = t.path().join("lower");
    std::fs::create_dir_all(lower.join("opaque")).unwrap();
    std::fs::write(lower.join("gone"), "hidden").unwrap();
    std::fs::write(lower.join("opaque/old"), "hidden").unwrap();
    let mp = t.path().join("mnt");
    let _k = common::Kernel::mount(&[l.clone(), lower.clone()], &mp);
    assert!(!mp.join("gone").exists());
    assert!(!mp.join("opaque/old").exists());
    assert_eq!(
        std::fs::read_to_string(mp.join("opaque/new")).unwrap(),
        "new"
    );
    assert_eq!(std::fs::read_to_string(mp.join("dir/sym")).unwrap(), "data");
    // Our own unpacking turns the zeros back into holes.
    let sparse = std::fs::metadata(l.join("sparse")).unwrap();
    assert_eq!(sparse.len(), 8 << 20);
    assert!(sparse.blocks() * 512 < 1 << 20, "unpacked dense");
}

fn cases(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// squash(stack), mounted, shows what the stack mounted shows.
fn squash_case(stack: &[spec::Layer], form: Form) {
    let t = tempfile::tempdir().unwrap();
    let layers = spec::write_stack(&t.path().join("layers"), stack, form);
    let mut expected = {
        let m = Layerfs::mount(&layers, &t.path().join("m1"));
        tree::snapshot(&m.mp)
    };
    // A merged file's link count is its layer's, counting names an upper layer hides; the
    // squashed layer has only the visible names.
    let classes = tree::ino_classes(&expected);
    for (p, m) in expected.meta.iter_mut() {
        if let Some(n) = m.nlink.as_mut() {
            *n = classes[p].len() as u64;
        }
    }
    let lowerdir = format!(
        "lowerdir={}",
        layers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    );
    let sq = t.path().join("squashed");
    let out = run_layerfs(&[
        "squash",
        &lowerdir,
        "--to",
        &format!("dir:{}", sq.display()),
        "--json",
        "--store",
        t.path().join("store").to_str().unwrap(),
    ]);
    let out = ok(&out, "squash");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["whiteouts"], 0, "a squashed layer has no whiteouts");
    assert!(v["bytes_saved"].is_i64());
    let m = Layerfs::mount(&[sq], &t.path().join("m2"));
    tree::assert_same(&expected, &tree::snapshot(&m.mp), "squashed vs stack");
}

/// commit(upper) stacked on its lowers shows what the writable mount showed.
fn commit_case(stack: &[spec::Layer], program: &[Op]) {
    let stack = spec::without_hardlinks(stack);
    let t = tempfile::tempdir().unwrap();
    let lowers = spec::write_stack(&t.path().join("layers"), &stack, Form::Kernel);
    let (upper, work) = (t.path().join("upper"), t.path().join("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let expected = {
        let m = Layerfs::mount_rw(&lowers, &upper, &work, &t.path().join("m1"));
        for op in program {
            ops::apply(&m.mp, op);
        }
        tree::snapshot(&m.mp)
    };
    let opts = format!(
        "lowerdir={},upperdir={}",
        lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
        upper.display()
    );
    let layer = t.path().join("committed");
    ok(
        &run_layerfs(&[
            "commit",
            "-o",
            &opts,
            "--to",
            &format!("dir:{}", layer.display()),
            "--store",
            t.path().join("store").to_str().unwrap(),
        ]),
        "commit",
    );
    let mut stacked = vec![layer];
    stacked.extend(lowers);
    let m = Layerfs::mount(&stacked, &t.path().join("m2"));
    let mut actual = tree::snapshot(&m.mp);
    // The merged root's own xattrs come from the top layer's root, which a layer tar does
    // not carry (the root belongs to the image below).
    actual.meta.get_mut(Path::new("")).unwrap().xattrs =
        expected.meta[Path::new("")].xattrs.clone();
    tree::assert_same(&expected, &actual, "commit stacked vs the writable mount");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases("LAYERFS_IMAGE_CASES", 10), max_shrink_iters: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn squash_of_a_stack_mounts_like_the_stack(stack in spec::stack(), oci in any::<bool>()) {
        if !require_root("squash_of_a_stack_mounts_like_the_stack") {
            return Ok(());
        }
        squash_case(&stack, if oci { Form::Oci } else { Form::Kernel });
    }

    #[test]
    fn commit_of_an_upper_stacks_like_the_writable_mount(
        stack in spec::stack(),
        program in prop::collection::vec(ops::op(), 1..30),
    ) {
        if !require_root("commit_of_an_upper_stacks_like_the_writable_mount") {
            return Ok(());
        }
        commit_case(&stack, &program);
    }
}

#[test]
fn commit_of_a_renamed_directory_carries_its_lower_content() {
    if !require_root("commit_of_a_renamed_directory_carries_its_lower_content") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let lower = t.path().join("lower");
    std::fs::create_dir_all(lower.join("a/deep")).unwrap();
    std::fs::write(lower.join("a/deep/f"), "from below").unwrap();
    std::fs::create_dir_all(lower.join("b")).unwrap();
    std::fs::write(lower.join("b/old"), "hidden by the rename").unwrap();
    let (upper, work) = (t.path().join("upper"), t.path().join("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let expected = {
        let m = Layerfs::mount_rw(
            std::slice::from_ref(&lower),
            &upper,
            &work,
            &t.path().join("m1"),
        );
        std::fs::remove_dir_all(m.path("b")).unwrap();
        std::fs::rename(m.path("a"), m.path("b")).unwrap();
        std::fs::write(m.path("b/new"), "added").unwrap();
        tree::snapshot(&m.mp)
    };
    assert!(
        tree::xattrs(&upper.join("b"))
            .keys()
            .any(|k| k.ends_with("overlay.redirect")),
        "the rename left a redirect in the upper"
    );
    let layer = t.path().join("committed");
    let opts = format!("lowerdir={},upperdir={}", lower.display(), upper.display());
    let to = format!("dir:{}", layer.display());
    let store = t.path().join("store");
    ok(
        &run_layerfs(&[
            "commit",
            "-o",
            &opts,
            "--to",
            &to,
            "--store",
            store.to_str().unwrap(),
        ]),
        "commit",
    );
    assert_eq!(
        std::fs::read_to_string(layer.join("b/deep/f")).unwrap(),
        "from below"
    );
    let m = Layerfs::mount(&[layer, lower], &t.path().join("m2"));
    let mut actual = tree::snapshot(&m.mp);
    actual.meta.get_mut(Path::new("")).unwrap().xattrs =
        expected.meta[Path::new("")].xattrs.clone();
    tree::assert_same(&expected, &actual, "renamed directory committed");
    // Without the lowers the content cannot be found: a clear refusal.
    let o = format!("upperdir={}", upper.display());
    let out = run_layerfs(&[
        "commit",
        "-o",
        &o,
        "--to",
        t.path().join("x.tar").to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lowerdir"));
}

#[test]
fn commit_of_a_kernel_metacopy_upper_takes_the_data_from_below() {
    if !require_root("commit_of_a_kernel_metacopy_upper_takes_the_data_from_below") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let lower = t.path().join("lower");
    std::fs::create_dir_all(&lower).unwrap();
    std::fs::write(lower.join("f"), "lower data").unwrap();
    let (upper, work) = (t.path().join("upper"), t.path().join("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    {
        let k = common::Kernel::mount_rw_with(
            std::slice::from_ref(&lower),
            &upper,
            &work,
            &t.path().join("m1"),
            ",metacopy=on,redirect_dir=on",
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(k.mp.join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    assert!(
        tree::xattrs(&upper.join("f"))
            .keys()
            .any(|k| k.ends_with("overlay.metacopy")),
        "the kernel made a metadata-only copy"
    );
    let layer = t.path().join("committed");
    let opts = format!("lowerdir={},upperdir={}", lower.display(), upper.display());
    let store = t.path().join("store");
    ok(
        &run_layerfs(&[
            "commit",
            "-o",
            &opts,
            "--to",
            &format!("dir:{}", layer.display()),
            "--store",
            store.to_str().unwrap(),
        ]),
        "commit",
    );
    assert_eq!(
        std::fs::read_to_string(layer.join("f")).unwrap(),
        "lower data"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(layer.join("f")).unwrap().mode() & 0o777,
        0o600
    );
}

/// `commit -m` and `--created-by` land in the image's history, and `inspect` shows both on
/// the layer's row (before, inspect said "layerfs commit" whatever was given).
#[test]
fn commit_records_its_message_and_created_by_and_inspect_shows_them() {
    if !require_root("commit_records_its_message_and_created_by_and_inspect_shows_them") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let u = t.path().join("upper");
    kernel_upper(&u);
    let o = format!("upperdir={}", u.display());
    let oci = format!("oci:{}:v1", t.path().join("oci").display());
    let store = t.path().join("store");
    ok(
        &run_layerfs(&[
            "commit",
            "-o",
            &o,
            "--to",
            &oci,
            "-m",
            "the hello layer",
            "--created-by",
            "RUN make hello",
            "--store",
            store.to_str().unwrap(),
        ]),
        "commit",
    );
    let shown = ok(&run_layerfs(&["inspect", &oci]), "inspect");
    let row = shown
        .lines()
        .find(|l| l.contains("RUN make hello"))
        .unwrap_or_else(|| panic!("no row shows the created_by:\n{shown}"));
    assert!(row.contains("the hello layer"), "no comment in {row:?}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&run_layerfs(&["inspect", "--json", &oci]), "inspect")).unwrap();
    let layer = &json["layers"][0];
    assert_eq!(layer["created_by"], "RUN make hello");
    assert_eq!(layer["comment"], "the hello layer");
}

/// A commit on a store image imported without history (a layer stack) names the new
/// layer, not the base's: inspect pairs history entries with layers in order, so the base's
/// layers get blank entries first.
#[test]
fn commit_on_an_image_without_history_attributes_created_by_to_the_new_layer() {
    if !require_root("commit_on_an_image_without_history_attributes_created_by_to_the_new_layer") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base");
    std::fs::create_dir_all(base.join("etc")).unwrap();
    std::fs::write(base.join("etc/base"), "base\n").unwrap();
    let u = t.path().join("upper");
    kernel_upper(&u);
    let store = t.path().join("store");
    let s = store.to_str().unwrap();
    let lower = format!("lowerdir={}", base.display());
    ok(
        &run_layerfs(&["import", &lower, "--name", "base", "--store", s]),
        "import",
    );
    let o = format!("upperdir={}", u.display());
    let oci = format!("oci:{}:v1", t.path().join("oci").display());
    ok(
        &run_layerfs(&[
            "commit",
            "-o",
            &o,
            "--from",
            "base",
            "--to",
            &oci,
            "--created-by",
            "RUN top",
            "--store",
            s,
        ]),
        "commit",
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&run_layerfs(&["inspect", "--json", &oci]), "inspect")).unwrap();
    assert_eq!(json["layers"][1]["created_by"], "RUN top");
    assert_eq!(json["layers"][0]["created_by"], serde_json::Value::Null);
}
