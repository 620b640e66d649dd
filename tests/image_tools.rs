//! The layer tools against an independent model and against kernel overlayfs.
//!
//! Generated stacks (testkit/src/spec.rs: every whiteout form, opaque dirs, hard links) are
//! inspected; the expected merged view, per-layer added / modified / deleted counts, bytes
//! added, wasted bytes and merged bytes are computed here from the generator's own model,
//! and the merged view is also compared with what kernel overlayfs mounts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use serde_json::Value;
use testkit::spec::{self, Form, Node};
use testkit::{require_root, tree, Kernel, BIN};

/// One visible path in the model: what a reader sees, and where it came from.
#[derive(Debug, Clone)]
struct Seen {
    kind: &'static str,
    mode: u32,
    uid: u32,
    size: u64,
    content: Option<Vec<u8>>,
    target: Option<String>,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// (layer, bottom = 0; the file's first name in that layer): names of one file share it.
    origin: (usize, String),
}

impl Seen {
    fn same(&self, o: &Seen) -> bool {
        (
            self.kind,
            self.mode,
            self.uid,
            self.size,
            &self.content,
            &self.target,
            &self.xattrs,
        ) == (
            o.kind, o.mode, o.uid, o.size, &o.content, &o.target, &o.xattrs,
        )
    }
}

type View = BTreeMap<String, Seen>;

fn remove_subtree(v: &mut View, p: &str, with_self: bool) {
    let prefix = format!("{p}/");
    v.retain(|k, _| !(k.starts_with(&prefix) || (with_self && k == p)));
}

/// Applies one layer (a directory's children at `dir`) to the view, the way overlayfs
/// resolves it.
fn apply(v: &mut View, dir: &str, children: &BTreeMap<String, Node>, li: usize) {
    for (name, node) in children {
        let p = format!("{dir}/{name}");
        match node {
            Node::Whiteout => remove_subtree(v, &p, true),
            Node::Dir {
                opaque,
                mode,
                children,
            } => {
                let merges = !opaque && v.get(&p).is_some_and(|s| s.kind == "dir");
                if !merges {
                    remove_subtree(v, &p, true);
                }
                v.insert(
                    p.clone(),
                    seen(
                        "dir",
                        *mode,
                        0,
                        None,
                        None,
                        BTreeMap::new(),
                        (li, p.clone()),
                    ),
                );
                apply(v, &p, children, li);
            }
            Node::File {
                data,
                mode,
                owner,
                xattr,
                hardlink,
            } => {
                let xattrs: BTreeMap<String, Vec<u8>> = xattr.iter().cloned().collect();
                let mut names = vec![p.clone()];
                if *hardlink {
                    names.push(format!("{p}.lnk"));
                }
                for n in names {
                    remove_subtree(v, &n, true);
                    v.insert(
                        n,
                        seen(
                            "file",
                            *mode,
                            *owner,
                            Some(data.clone()),
                            None,
                            xattrs.clone(),
                            (li, p.clone()),
                        ),
                    );
                }
            }
            Node::Symlink(t) => {
                remove_subtree(v, &p, true);
                v.insert(
                    p.clone(),
                    seen(
                        "symlink",
                        0o777,
                        0,
                        None,
                        Some(t.clone()),
                        BTreeMap::new(),
                        (li, p),
                    ),
                );
            }
            Node::Fifo => {
                remove_subtree(v, &p, true);
                v.insert(
                    p.clone(),
                    seen("fifo", 0o644, 0, None, None, BTreeMap::new(), (li, p)),
                );
            }
        }
    }
}

fn seen(
    kind: &'static str,
    mode: u32,
    uid: u32,
    content: Option<Vec<u8>>,
    target: Option<String>,
    xattrs: BTreeMap<String, Vec<u8>>,
    origin: (usize, String),
) -> Seen {
    Seen {
        kind,
        mode,
        uid,
        size: content.as_ref().map_or(0, |c| c.len() as u64),
        content,
        target,
        xattrs,
        origin,
    }
}

/// Every regular file a layer stores: (first name, size), hard-linked names once.
fn stored_files(dir: &str, children: &BTreeMap<String, Node>, out: &mut Vec<(String, u64)>) {
    for (name, node) in children {
        let p = format!("{dir}/{name}");
        match node {
            Node::File { data, .. } => out.push((p, data.len() as u64)),
            Node::Dir { children, .. } => stored_files(&p, children, out),
            _ => {}
        }
    }
}

#[derive(Debug, PartialEq, Eq, Clone)]
struct Numbers {
    /// Per layer, bottom first: added, modified, deleted, bytes added, bytes wasted.
    layers: Vec<(u64, u64, u64, u64, u64)>,
    image_bytes: u64,
    merged_bytes: u64,
    reclaimable: u64,
}

/// The model's answer for a stack given top first (as spec writes it).
fn model(stack: &[spec::Layer]) -> (View, Numbers) {
    let bottom_first: Vec<&spec::Layer> = stack.iter().rev().collect();
    let mut views = vec![View::new()];
    for (li, layer) in bottom_first.iter().enumerate() {
        let mut v = views.last().unwrap().clone();
        apply(&mut v, "", layer, li);
        views.push(v);
    }
    let fin = views.last().unwrap().clone();
    let mut layers = Vec::new();
    for (li, layer) in bottom_first.iter().enumerate() {
        let (before, after) = (&views[li], &views[li + 1]);
        let added = after.keys().filter(|k| !before.contains_key(*k)).count() as u64;
        let deleted = before.keys().filter(|k| !after.contains_key(*k)).count() as u64;
        let modified = after
            .iter()
            .filter(|(k, s)| before.get(*k).is_some_and(|b| !b.same(s)))
            .count() as u64;
        let mut files = Vec::new();
        stored_files("", layer, &mut files);
        let bytes_added = files.iter().map(|f| f.1).sum();
        // A stored file is wasted when no name of it shows in the final view.
        let wasted = files
            .iter()
            .filter(|(first, _)| {
                !fin.values()
                    .any(|s| s.origin == (li, first.clone()) && s.kind == "file")
            })
            .map(|f| f.1)
            .sum();
        layers.push((added, modified, deleted, bytes_added, wasted));
    }
    let origins: BTreeSet<&(usize, String)> = fin
        .values()
        .filter(|s| s.kind == "file")
        .map(|s| &s.origin)
        .collect();
    let merged_bytes = origins
        .iter()
        .map(|o| {
            fin.values()
                .find(|s| &s.origin == *o && s.kind == "file")
                .unwrap()
                .size
        })
        .sum();
    let image_bytes = layers.iter().map(|l| l.3).sum();
    let reclaimable = layers.iter().map(|l| l.4).sum();
    (
        fin,
        Numbers {
            layers,
            image_bytes,
            merged_bytes,
            reclaimable,
        },
    )
}

fn layerfs(args: &[&str], cache: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("LAYERFS_CACHE_DIR", cache)
        .output()
        .unwrap()
}

fn json(args: &[&str], cache: &Path) -> Value {
    let o = layerfs(args, cache);
    assert!(
        o.status.success(),
        "layerfs {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn numbers(report: &Value) -> Numbers {
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    Numbers {
        layers: report["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    n(l, "added"),
                    n(l, "modified"),
                    n(l, "deleted"),
                    n(l, "bytes_added"),
                    n(l, "bytes_wasted"),
                )
            })
            .collect(),
        image_bytes: n(&report["totals"], "image_bytes"),
        merged_bytes: n(&report["totals"], "merged_bytes"),
        reclaimable: n(&report["totals"], "reclaimable_bytes"),
    }
}

/// A comparable line per visible path: kind, permissions, owner, size, blake3, target, xattrs.
fn line(
    kind: &str,
    mode: u32,
    uid: u32,
    size: u64,
    content: Option<&[u8]>,
    target: Option<&str>,
    x: &BTreeMap<String, Vec<u8>>,
) -> String {
    let size = if kind == "file" { size } else { 0 };
    let hash = content.map(|c| blake3::hash(c).to_hex().to_string());
    format!(
        "{kind} {:o} {uid} {size} {hash:?} {target:?} {x:?}",
        mode & 0o7777
    )
}

fn tool_view(merged: &Value) -> BTreeMap<String, String> {
    merged
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let x: BTreeMap<String, Vec<u8>> = e["xattrs"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().as_bytes().to_vec()))
                .collect();
            let hash = e["blake3"].as_str().map(str::to_string);
            let kind = e["kind"].as_str().unwrap();
            let size = if kind == "file" {
                e["size"].as_u64().unwrap()
            } else {
                0
            };
            let l = format!(
                "{kind} {:o} {} {size} {hash:?} {:?} {x:?}",
                e["mode"].as_u64().unwrap() as u32 & 0o7777,
                e["uid"].as_u64().unwrap(),
                e["link"].as_str()
            );
            (e["path"].as_str().unwrap().to_string(), l)
        })
        .collect()
}

fn model_view(v: &View) -> BTreeMap<String, String> {
    v.iter()
        .map(|(p, s)| {
            (
                p.clone(),
                line(
                    s.kind,
                    s.mode,
                    s.uid,
                    s.size,
                    s.content.as_deref(),
                    s.target.as_deref(),
                    &lossy(&s.xattrs),
                ),
            )
        })
        .collect()
}

/// JSON carries xattr values as (lossy) text: compare them that way.
fn lossy(x: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    x.iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).as_bytes().to_vec()))
        .collect()
}

fn kernel_view(t: &tree::Tree) -> BTreeMap<String, String> {
    t.meta
        .iter()
        .filter(|(p, _)| !p.as_os_str().is_empty())
        .map(|(p, m)| {
            let kind = match m.mode & libc::S_IFMT {
                libc::S_IFDIR => "dir",
                libc::S_IFREG => "file",
                libc::S_IFLNK => "symlink",
                libc::S_IFIFO => "fifo",
                libc::S_IFCHR => "chardev",
                _ => "other",
            };
            let target = m.target.as_ref().map(|t| t.to_string_lossy().into_owned());
            let l = line(
                kind,
                m.mode,
                m.uid,
                m.size.unwrap_or(0),
                m.content.as_deref(),
                target.as_deref(),
                &lossy(&m.xattrs),
            );
            (format!("/{}", p.display()), l)
        })
        .collect()
}

fn lowerdir(dirs: &[PathBuf]) -> String {
    format!(
        "lowerdir={}",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    )
}

fn check(stack: &[spec::Layer]) {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let (mview, mnum) = model(stack);
    let kernel_dirs = spec::write_stack(t.path(), stack, Form::Kernel);
    let kview = {
        let k = Kernel::mount(&kernel_dirs, &t.path().join("kmnt"));
        kernel_view(&tree::snapshot(&k.mp))
    };
    assert_eq!(
        model_view(&mview),
        kview,
        "the test's model disagrees with kernel overlayfs"
    );
    for form in [Form::Kernel, Form::KernelXattr, Form::Oci] {
        let dirs = if form == Form::Kernel {
            kernel_dirs.clone()
        } else {
            spec::write_stack(t.path(), stack, form)
        };
        let src = lowerdir(&dirs);
        let report = json(&["inspect", "--json", &src], &cache);
        assert_eq!(numbers(&report), mnum, "inspect numbers, {form:?} layers");
        let merged = json(&["inspect", "--merged", "--json", &src], &cache);
        assert_eq!(
            tool_view(&merged),
            kview,
            "merged view, {form:?} layers vs kernel"
        );
        // Warm: manifests come from the cache and say the same.
        assert_eq!(
            json(&["inspect", "--json", &src], &cache),
            report,
            "cached run, {form:?}"
        );
    }
}

fn cases() -> u32 {
    std::env::var("LAYERFS_IMAGE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 100, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn generated_stacks_match_the_model_and_the_kernel(stack in spec::stack()) {
        if !require_root() {
            return Ok(());
        }
        check(&stack);
    }
}

/// A writable kernel mount with `redirect_dir=on` renames lower directories by writing a
/// redirect xattr in the upper: the tools read such an upper as the kernel does.
#[test]
fn an_upper_with_redirects_reads_as_the_kernel_shows_it() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let (l0, l1, up, work) = (
        t.path().join("l0"),
        t.path().join("l1"),
        t.path().join("up"),
        t.path().join("work"),
    );
    for d in [&l0, &l1, &up, &work] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::create_dir_all(l0.join("d/sub")).unwrap();
    std::fs::write(l0.join("d/a"), b"a0").unwrap();
    std::fs::write(l0.join("d/sub/c"), vec![3u8; 3000]).unwrap();
    std::fs::write(l0.join("f"), b"f").unwrap();
    std::fs::create_dir_all(l1.join("d")).unwrap();
    std::fs::write(l1.join("d/b"), b"b1").unwrap();
    let lowers = vec![l1.clone(), l0.clone()];
    let kview = {
        let k = Kernel::mount_rw_with(
            &lowers,
            &up,
            &work,
            &t.path().join("mnt"),
            ",redirect_dir=on",
        );
        let m = &k.mp;
        std::fs::rename(m.join("d"), m.join("e")).unwrap();
        std::fs::rename(m.join("e/sub"), m.join("sub2")).unwrap();
        std::fs::write(m.join("e/a"), b"changed").unwrap();
        std::fs::remove_file(m.join("f")).unwrap();
        std::fs::create_dir(m.join("d")).unwrap();
        std::fs::write(m.join("d/new"), b"new").unwrap();
        kernel_view(&tree::snapshot(m))
    };
    let redirect = tree::xattrs(&up.join("e"));
    assert!(
        redirect.contains_key("trusted.overlay.redirect"),
        "the kernel wrote no redirect: {redirect:?}"
    );
    let src = format!("{},upperdir={}", lowerdir(&lowers), up.display());
    let merged = json(&["inspect", "--merged", "--json", &src], &cache);
    assert_eq!(
        tool_view(&merged),
        kview,
        "merged view of an upper with redirects"
    );
    // The upper against its lowers, as podman diff would list a container's changes.
    let d = json(&["diff", "--json", &src], &cache);
    let got: BTreeSet<String> = d
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["change"].as_str().unwrap(),
                c["path"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "A /e",
        "A /e/a",
        "A /e/b",
        "A /sub2",
        "A /sub2/c",
        "D /f",
        "D /d/a",
        "D /d/b",
        "D /d/sub",
        "D /d/sub/c",
        "A /d/new",
    ] {
        assert!(got.contains(want), "{want} missing from {got:?}");
    }
}

/// The seeds' example: 50 MB written in one layer and deleted in the next is 50 MB wasted;
/// written and deleted within one layer it never reaches the image. CI mode tells them apart.
#[test]
fn fifty_megabytes_deleted_later_are_wasted_and_fail_ci() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let (l0, l1, one) = (
        t.path().join("l0"),
        t.path().join("l1"),
        t.path().join("one"),
    );
    for d in [&l0, &l1, &one] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(l0.join("50M.file"), vec![0u8; 50 << 20]).unwrap();
    std::fs::write(l0.join("keep"), b"kept").unwrap();
    std::fs::write(l1.join(".wh.50M.file"), b"").unwrap();
    std::fs::write(one.join("keep"), b"kept").unwrap();
    // As an OCI image too (gzip layers), the way a build would ship it.
    let tars = vec![
        testkit::imagekit::tar_dir(&l0),
        testkit::imagekit::tar_dir(&l1),
    ];
    let oci = t.path().join("oci");
    testkit::imagekit::write_oci(
        &oci,
        &tars,
        &[
            "RUN dd if=/dev/zero of=50M.file bs=1M count=50",
            "RUN rm 50M.file",
        ],
        testkit::imagekit::Comp::Gzip,
        "latest",
    );
    for src in [
        lowerdir(&[l1.clone(), l0.clone()]),
        format!("oci:{}", oci.display()),
    ] {
        let r = json(&["inspect", "--json", &src], &cache);
        assert_eq!(r["layers"][0]["bytes_wasted"], 50 << 20, "{src}: {r}");
        assert_eq!(r["totals"]["reclaimable_bytes"], 50 << 20, "{src}");
        assert_eq!(r["wasted"][0]["path"], "/50M.file");
        assert_eq!(r["wasted"][0]["how"], "deleted");
        let o = layerfs(
            &["inspect", "--ci", "--max-wasted-bytes", "20MB", &src],
            &cache,
        );
        assert_eq!(o.status.code(), Some(1), "{src}: CI must fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("max-wasted-bytes"),
            "the broken rule is named: {err}"
        );
    }
    let src = lowerdir(&[one]);
    let r = json(&["inspect", "--json", &src], &cache);
    assert_eq!(r["totals"]["reclaimable_bytes"], 0);
    let o = layerfs(
        &["inspect", "--ci", "--max-wasted-bytes", "20MB", &src],
        &cache,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The same rules from a config file; a percentage rule broken on the first stack.
    let cfg = t.path().join("ci.conf");
    std::fs::write(&cfg, "max-wasted-percent = 10\nmin-efficiency = 0.5\n").unwrap();
    let o = layerfs(
        &[
            "inspect",
            "--ci",
            "--ci-config",
            cfg.to_str().unwrap(),
            &lowerdir(&[l1, l0]),
        ],
        &cache,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("max-wasted-percent"));
}

/// The same generated stacks as layer dirs, OCI layouts (tar, gzip, zstd), an OCI archive,
/// a docker archive and podman's store (loaded by podman, saved back by podman) all give
/// the same `inspect --json` numbers.
#[test]
fn every_source_kind_gives_the_same_numbers() {
    if !require_root() {
        return;
    }
    use proptest::strategy::{Strategy, ValueTree};
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let podman = testkit::imagekit::Podman::new(t.path());
    for case in 0..3 {
        let stack = spec::stack().new_tree(&mut runner).unwrap().current();
        let base = t.path().join(format!("case{case}"));
        let dirs = spec::write_stack(&base, &stack, Form::Oci);
        let want = numbers(&json(&["inspect", "--json", &lowerdir(&dirs)], &cache));
        assert_eq!(want, model(&stack).1, "case {case}: dirs vs model");
        let tars: Vec<Vec<u8>> = dirs
            .iter()
            .rev()
            .map(|d| testkit::imagekit::tar_dir(d))
            .collect();
        let history: Vec<String> = (0..tars.len()).map(|i| format!("RUN step {i}")).collect();
        let history: Vec<&str> = history.iter().map(String::as_str).collect();
        let mut sources = Vec::new();
        for comp in [
            testkit::imagekit::Comp::None,
            testkit::imagekit::Comp::Gzip,
            testkit::imagekit::Comp::Zstd,
        ] {
            let dir = base.join(format!("oci-{comp:?}"));
            testkit::imagekit::write_oci(&dir, &tars, &history, comp, "v1");
            sources.push(format!("oci:{}:v1", dir.display()));
        }
        let archive = base.join("oci.tar");
        testkit::imagekit::tar_layout(&base.join("oci-Gzip"), &archive);
        sources.push(format!("oci-archive:{}", archive.display()));
        let da = base.join("docker.tar");
        let tag = format!("localhost/case{case}:latest");
        testkit::imagekit::write_docker_archive(&da, &tars, &history, &tag);
        sources.push(format!("docker-archive:{}", da.display()));
        podman.run(&["load", "-q", "-i", da.to_str().unwrap()]);
        let saved_d = base.join("saved-docker.tar");
        let saved_o = base.join("saved-oci.tar");
        podman.run(&[
            "save",
            "-q",
            "--format",
            "docker-archive",
            "-o",
            saved_d.to_str().unwrap(),
            &tag,
        ]);
        podman.run(&[
            "save",
            "-q",
            "--format",
            "oci-archive",
            "-o",
            saved_o.to_str().unwrap(),
            &tag,
        ]);
        sources.push(format!("docker-archive:{}", saved_d.display()));
        sources.push(format!("oci-archive:{}", saved_o.display()));
        for src in &sources {
            let r = json(&["inspect", "--json", src], &cache);
            assert_eq!(numbers(&r), want, "case {case}: {src}");
            assert_eq!(r["layers"][0]["created_by"], "RUN step 0", "{src}");
        }
        let root = podman.root.to_str().unwrap().to_string();
        let r = json(
            &[
                "inspect",
                "--json",
                "--storage-root",
                &root,
                &format!("containers-storage:case{case}"),
            ],
            &cache,
        );
        assert_eq!(numbers(&r), want, "case {case}: containers-storage");
    }
}
