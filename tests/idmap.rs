//! Id mappings against fuse-overlayfs, the reference for podman's `uidmapping=` /
//! `gidmapping=`: for random maps, random on-disk owners, random chowns and files created
//! by random callers, layerfs must show the same owners in the mount and store the same
//! owners in the upper as fuse-overlayfs does on a copy of the same directories.

use std::collections::BTreeMap;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use testkit::{mount_type, require_root, Layerfs};

/// One `DISK:SHOWN:COUNT` triple. Starts are drawn from two windows (image ids and a
/// subordinate range) so that ranges overlap, touch and miss each other.
fn triple() -> impl Strategy<Value = (u32, u32, u32)> {
    let start = prop_oneof![0u32..3000, 100_000u32..103_000];
    (start.clone(), start, 1u32..1500)
}

fn map() -> impl Strategy<Value = Option<Vec<(u32, u32, u32)>>> {
    prop_oneof![
        1 => Just(None),
        6 => proptest::collection::vec(triple(), 1..=3).prop_map(Some),
    ]
}

/// An id as it may be on disk or given by a caller: mapped or not by the drawn map.
fn id() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..5000, 100_000u32..105_000, Just(65_534)]
}

#[derive(Debug, Clone)]
struct Case {
    uid_map: Option<Vec<(u32, u32, u32)>>,
    gid_map: Option<Vec<(u32, u32, u32)>>,
    /// Owners of the lower files f0.. and of the lower directory d.
    lower: Vec<(u32, u32)>,
    dir_owner: (u32, u32),
    /// chown of lower file (index mod len) to (uid, gid); `None` keeps that id.
    chowns: Vec<(usize, Option<u32>, Option<u32>)>,
    /// A new file (or directory) created by the caller (uid, gid), in the root or in d.
    creates: Vec<(u32, u32, bool, bool)>,
    /// chmod of lower file (index mod len): a copy-up that keeps the stored owner.
    chmods: Vec<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        map(),
        map(),
        proptest::collection::vec((id(), id()), 1..5),
        (id(), id()),
        proptest::collection::vec(
            (
                0usize..8,
                proptest::option::of(id()),
                proptest::option::of(id()),
            ),
            0..4,
        ),
        proptest::collection::vec((id(), id(), any::<bool>(), any::<bool>()), 0..4),
        proptest::collection::vec(0usize..8, 0..3),
    )
        .prop_map(
            |(uid_map, gid_map, lower, dir_owner, chowns, creates, chmods)| Case {
                uid_map,
                gid_map,
                lower,
                dir_owner,
                chowns,
                creates,
                chmods,
            },
        )
}

/// `uidmapping=` value; the leading colon is podman's form.
fn mapping(m: &[(u32, u32, u32)]) -> String {
    m.iter().map(|(a, b, n)| format!(":{a}:{b}:{n}")).collect()
}

fn options(c: &Case) -> String {
    let mut o = String::new();
    if let Some(m) = &c.uid_map {
        o += &format!(",uidmapping={}", mapping(m));
    }
    if let Some(m) = &c.gid_map {
        o += &format!(",gidmapping={}", mapping(m));
    }
    o
}

/// Owners of every entry under `root` (marker files left out: fuse-overlayfs writes
/// `.wh..wh..opq` files into new directories), by relative path.
fn owners(root: &Path) -> BTreeMap<PathBuf, (u32, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_name().as_encoded_bytes().starts_with(b".wh.") {
                continue;
            }
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            out.insert(
                e.path().strip_prefix(root).unwrap().to_path_buf(),
                (md.uid(), md.gid()),
            );
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    let md = std::fs::symlink_metadata(root).unwrap();
    out.insert(PathBuf::from("."), (md.uid(), md.gid()));
    out
}

/// Lower, upper and work directories for one filesystem under test.
fn layout(base: &Path, c: &Case) -> (PathBuf, PathBuf, PathBuf) {
    let (l, u, w) = (base.join("l"), base.join("u"), base.join("w"));
    for d in [&l, &u, &w] {
        std::fs::create_dir_all(d).unwrap();
    }
    // Everyone may create in the merged root (its attributes come from the upper root).
    for d in [&l, &u] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    for (i, &(uid, gid)) in c.lower.iter().enumerate() {
        let f = l.join(format!("f{i}"));
        std::fs::write(&f, "x").unwrap();
        chown(&f, Some(uid), Some(gid)).unwrap();
    }
    let d = l.join("d");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    chown(&d, Some(c.dir_owner.0), Some(c.dir_owner.1)).unwrap();
    (l, u, w)
}

/// What a mount shows and what it stored, after the case's operations.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    shown_before: BTreeMap<PathBuf, (u32, u32)>,
    shown_after: BTreeMap<PathBuf, (u32, u32)>,
    results: Vec<bool>,
    stored: BTreeMap<PathBuf, (u32, u32)>,
}

fn exercise(mp: &Path, c: &Case) -> (BTreeMap<PathBuf, (u32, u32)>, Vec<bool>) {
    let shown = owners(mp);
    let mut results = Vec::new();
    for &(i, uid, gid) in &c.chowns {
        let f = mp.join(format!("f{}", i % c.lower.len()));
        results.push(chown(&f, uid, gid).is_ok());
    }
    for &i in &c.chmods {
        let f = mp.join(format!("f{}", i % c.lower.len()));
        let mode = std::fs::Permissions::from_mode(0o640);
        results.push(std::fs::set_permissions(&f, mode).is_ok());
    }
    for (n, &(uid, gid, dir, in_d)) in c.creates.iter().enumerate() {
        let p = mp.join(if in_d { "d" } else { "." }).join(format!("n{n}"));
        let script = if dir { "mkdir \"$0\"" } else { ": > \"$0\"" };
        let ok = Command::new("setpriv")
            .args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
            .args(["--clear-groups", "sh", "-c", script])
            .arg(&p)
            .output()
            .unwrap()
            .status
            .success();
        results.push(ok);
    }
    (shown, results)
}

fn with_layerfs(base: &Path, c: &Case) -> Seen {
    let (l, u, w) = layout(base, c);
    let opts = format!(
        "upperdir={},workdir={}{}",
        u.display(),
        w.display(),
        options(c)
    );
    let m = Layerfs::mount_with(&[l], &base.join("m"), &["-o", &opts]);
    let (shown_before, results) = exercise(&m.mp, c);
    let shown_after = owners(&m.mp);
    m.assert_no_errors_logged();
    drop(m);
    Seen {
        shown_before,
        shown_after,
        results,
        stored: owners(&u),
    }
}

fn with_fuse_overlayfs(base: &Path, c: &Case) -> Seen {
    let (l, u, w) = layout(base, c);
    let mp = base.join("m");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}{}",
        l.display(),
        u.display(),
        w.display(),
        options(c)
    );
    let m = testkit::side::fuse_overlayfs(&opts, &mp);
    let (shown_before, results) = exercise(&mp, c);
    let shown_after = owners(&mp);
    drop(m);
    assert_eq!(mount_type(&mp), None);
    Seen {
        shown_before,
        shown_after,
        results,
        stored: owners(&u),
    }
}

fn check(c: &Case) {
    let t = tempfile::tempdir().unwrap();
    let expected = with_fuse_overlayfs(&t.path().join("fo"), c);
    let actual = with_layerfs(&t.path().join("lfs"), c);
    assert_eq!(
        actual,
        expected,
        "layerfs (left) and fuse-overlayfs (right) differ for -o ...{}",
        options(c)
    );
}

fn cases() -> u32 {
    std::env::var("LAYERFS_IDMAP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 100, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn id_mappings_match_fuse_overlayfs(c in case()) {
        if !require_root() {
            return Ok(());
        }
        check(&c);
    }
}

/// The minimal case and podman's keep-id form, spelled out.
#[test]
fn mapped_ids_show_and_store_like_fuse_overlayfs_in_known_cases() {
    if !require_root() {
        return;
    }
    let minimal = Case {
        uid_map: Some(vec![(0, 100_000, 65_536)]),
        gid_map: Some(vec![(0, 100_000, 65_536)]),
        lower: vec![(0, 0), (100_000, 100_000)],
        dir_owner: (0, 0),
        chowns: vec![(0, Some(100_005), None)],
        creates: vec![(100_007, 100_008, false, false), (5, 5, true, true)],
        chmods: vec![1],
    };
    let t = tempfile::tempdir().unwrap();
    let seen = with_layerfs(t.path(), &minimal);
    let p = PathBuf::from;
    assert_eq!(seen.shown_before[&p("f0")], (100_000, 100_000));
    assert_eq!(seen.shown_before[&p("f1")], (65_534, 65_534));
    assert_eq!(seen.stored[&p("f0")], (5, 0));
    assert_eq!(seen.stored[&p("n0")], (7, 8));
    assert_eq!(seen.stored[&p("d/n1")], (65_534, 65_534));
    assert_eq!(
        seen.stored[&p("f1")],
        (100_000, 100_000),
        "copy-up keeps the stored owner"
    );
    check(&minimal);

    let keep_id = Case {
        uid_map: Some(vec![(0, 1, 1001), (1001, 0, 1), (1002, 1002, 64_535)]),
        gid_map: Some(vec![(0, 1, 1001), (1001, 0, 1), (1002, 1002, 64_535)]),
        lower: vec![(0, 42), (1001, 1001)],
        dir_owner: (0, 0),
        chowns: vec![],
        creates: vec![(1, 1, false, false), (0, 0, false, true)],
        chmods: vec![0],
    };
    let t = tempfile::tempdir().unwrap();
    let seen = with_layerfs(t.path(), &keep_id);
    assert_eq!(
        seen.shown_before[&p("f0")],
        (1, 43),
        "image root shows as 1"
    );
    assert_eq!(seen.shown_before[&p("f1")], (0, 0));
    assert_eq!(
        seen.stored[&p("n0")],
        (0, 0),
        "container root stores image root"
    );
    assert_eq!(seen.stored[&p("d/n1")], (1001, 1001));
    check(&keep_id);
}

fn getfattr_hex(p: &Path, name: &str) -> String {
    let o = Command::new("getfattr")
        .args(["--absolute-names", "-e", "hex", "--only-values", "-n", name])
        .arg(p)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "getfattr {name} {}: {}",
        p.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout.iter().map(|b| format!("{b:02x}")).collect()
}

fn sh(cmd: &str) {
    let o = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A v3 `security.capability` value (cap_net_raw permitted) with root id `root`.
fn caps_v3(root: u32) -> String {
    let mut v = 0x0300_0000u32.to_le_bytes().to_vec();
    v.extend_from_slice(&(1u32 << 13).to_le_bytes());
    v.extend_from_slice(&[0; 12]);
    v.extend_from_slice(&root.to_le_bytes());
    v.iter().map(|b| format!("{b:02x}")).collect()
}

/// Ids inside xattrs follow the mapping: POSIX ACL entries and a v3 capability's root id
/// show mapped and are stored unmapped, on lower files and after copy-up.
#[test]
fn ids_in_acls_and_file_capabilities_are_mapped() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (l, u, w) = (t.path().join("l"), t.path().join("u"), t.path().join("w"));
    for d in [&l, &u, &w] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(l.join("acl"), "x").unwrap();
    std::fs::write(l.join("cap"), "x").unwrap();
    sh(&format!(
        "setfacl -m u:5:r,g:7:w {}",
        l.join("acl").display()
    ));
    sh(&format!(
        "setfattr -n security.capability -v 0x{} {}",
        caps_v3(5),
        l.join("cap").display()
    ));
    let opts = format!(
        "upperdir={},workdir={},uidmapping=0:100000:65536,gidmapping=0:200000:65536",
        u.display(),
        w.display()
    );
    let m = Layerfs::mount_with(&[l], &t.path().join("m"), &["-o", &opts]);
    let acl = Command::new("getfacl")
        .args(["-n", "--omit-header"])
        .arg(m.path("acl"))
        .output()
        .unwrap();
    let acl = String::from_utf8_lossy(&acl.stdout).to_string();
    assert!(
        acl.contains("user:100005:r--") && acl.contains("group:200007:-w-"),
        "shown ACL:\n{acl}"
    );
    assert_eq!(
        getfattr_hex(&m.path("cap"), "security.capability"),
        caps_v3(100_005)
    );

    // Set through the mount (copy-up), stored unmapped.
    sh(&format!(
        "setfacl -m u:100009:rw {}",
        m.path("acl").display()
    ));
    sh(&format!(
        "setfattr -n security.capability -v 0x{} {}",
        caps_v3(100_011),
        m.path("cap").display()
    ));
    m.assert_no_errors_logged();
    drop(m);
    let acl = Command::new("getfacl")
        .args(["-n", "--omit-header"])
        .arg(u.join("acl"))
        .output()
        .unwrap();
    let acl = String::from_utf8_lossy(&acl.stdout).to_string();
    assert!(
        acl.contains("user:5:r--") && acl.contains("user:9:rw-") && acl.contains("group:7:-w-"),
        "stored ACL:\n{acl}"
    );
    assert_eq!(
        getfattr_hex(&u.join("cap"), "security.capability"),
        caps_v3(11)
    );
}
