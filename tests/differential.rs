//! Differential tests: generated layer stacks mounted by kernel overlayfs and by layerfs
//! must show the same tree (type, mode, owner, size, content, link target, xattrs, nlink,
//! and which paths share an inode number), whatever whiteout form the layers use.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use testkit::spec::{self, Form};
use testkit::tree;
use testkit::{require_root, Kernel, Layerfs};

fn cases() -> u32 {
    std::env::var("LAYERFS_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

fn check_stack(stack: &[spec::Layer]) {
    let t = tempfile::tempdir().unwrap();
    let kernel_layers = spec::write_stack(t.path(), stack, Form::Kernel);
    let expected = {
        let k = Kernel::mount(&kernel_layers, &t.path().join("kmnt"));
        tree::snapshot(&k.mp)
    };
    for form in [Form::Kernel, Form::KernelXattr, Form::Oci] {
        let layers = if form == Form::Kernel {
            kernel_layers.clone()
        } else {
            spec::write_stack(t.path(), stack, form)
        };
        let m = Layerfs::mount(&layers, &t.path().join(format!("mnt-{form:?}")));
        let actual = tree::snapshot(&m.mp);
        tree::assert_same(
            &expected,
            &actual,
            &format!("layerfs on {form:?} layers vs kernel overlayfs"),
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_stacks_match_kernel_overlayfs(stack in spec::stack()) {
        if !require_root() {
            return Ok(());
        }
        check_stack(&stack);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: (cases() / 6).max(4), max_shrink_iters: 100, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn deep_random_stacks_match_kernel_overlayfs(stack in spec::deep_stack()) {
        if !require_root() {
            return Ok(());
        }
        check_stack(&stack);
    }
}

/// One entry of a layer of [`redirect_stack`]: what to put at a path (its parents are
/// created as plain directories), or a mark to add to the directory there.
#[derive(Debug, Clone)]
enum Put {
    Dir,
    File,
    Whiteout,
    Opaque,
    Redirect(String),
}

fn redirect_path(depth: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), depth)
        .prop_map(|c| c.join("/"))
}

/// Stacks of 2-4 kernel-form layers whose directories carry redirects (absolute, through
/// one or two components, or relative) and opaque marks on every level, over whiteouts and
/// files, from three names so that walks meet each other's marks.
fn redirect_stack() -> impl Strategy<Value = Vec<Vec<(String, Put)>>> {
    let put = prop_oneof![
        3 => Just(Put::Dir),
        3 => Just(Put::File),
        1 => Just(Put::Whiteout),
        2 => Just(Put::Opaque),
        3 => prop_oneof![
            3 => redirect_path(1..=2).prop_map(|p| format!("/{p}")),
            1 => redirect_path(1..=1),
        ]
        .prop_map(Put::Redirect),
    ];
    let layer = prop::collection::vec((redirect_path(1..=3), put), 3..16);
    prop::collection::vec(layer, 2..=4)
}

/// Writes [`redirect_stack`]'s layers (bottom first) under `dir`; the lowers, top first.
fn write_redirect_stack(
    dir: &std::path::Path,
    stack: &[Vec<(String, Put)>],
) -> Vec<std::path::PathBuf> {
    let mut lowers = vec![];
    for (i, layer) in stack.iter().enumerate() {
        let root = dir.join(format!("lower{i}"));
        std::fs::create_dir_all(&root).unwrap();
        for (path, put) in layer {
            let p = root.join(path);
            // A parent that is a file or a whiteout here: nothing to put.
            if std::fs::create_dir_all(p.parent().unwrap()).is_err() {
                continue;
            }
            let md = std::fs::symlink_metadata(&p).ok();
            let is_dir = md.as_ref().is_some_and(|m| m.is_dir());
            let mark = |name: &str, value: &[u8]| {
                if md.is_none() {
                    std::fs::create_dir(&p).unwrap();
                }
                if md.is_none() || is_dir {
                    spec::setxattr(&p, name, value);
                }
            };
            match put {
                _ if md.is_some() && !matches!(put, Put::Opaque | Put::Redirect(_)) => {}
                Put::Dir => std::fs::create_dir(&p).unwrap(),
                Put::File => std::fs::write(&p, format!("{i}:{path}\n")).unwrap(),
                Put::Whiteout => spec::mknod(&p, libc::S_IFCHR, 0),
                Put::Opaque => mark("trusted.overlay.opaque", b"y"),
                Put::Redirect(v) => mark("trusted.overlay.redirect", v.as_bytes()),
            }
        }
        lowers.insert(0, root);
    }
    lowers
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 400, failure_persistence: None, ..ProptestConfig::default() })]

    /// Redirects in lower layers (a stack of earlier uppers) are walked as the kernel walks
    /// them, whatever marks the walk meets on the way (found two faults on 2026-12-06:
    /// docs/SEMANTICS.md, "The differential test").
    #[test]
    fn random_redirects_in_lower_layers_match_kernel_overlayfs(stack in redirect_stack()) {
        if !require_root() {
            return Ok(());
        }
        let t = tempfile::tempdir().unwrap();
        let layers = write_redirect_stack(t.path(), &stack);
        let expected = {
            let k = Kernel::mount(&layers, &t.path().join("kmnt"));
            tree::snapshot(&k.mp)
        };
        let m = Layerfs::mount(&layers, &t.path().join("mnt"));
        tree::assert_same(&expected, &tree::snapshot(&m.mp), "layerfs vs kernel overlayfs");
    }
}

#[test]
fn kernel_xattr_whiteout_form_is_what_this_kernel_honours() {
    if !require_root() {
        return;
    }
    // A fixed stack exercising every form at once: whiteout of a file and of a directory,
    // opaque directory, merge through three layers.
    use spec::Node;
    use std::collections::BTreeMap;
    let file = |d: &[u8]| Node::File {
        data: d.to_vec(),
        mode: 0o644,
        owner: 0,
        xattr: None,
        hardlink: false,
    };
    let dir = |opaque, kids: Vec<(&str, Node)>| Node::Dir {
        opaque,
        mode: 0o755,
        children: kids
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<_, _>>(),
    };
    let top: spec::Layer = [
        ("a".to_string(), Node::Whiteout),
        (
            "dir".to_string(),
            dir(false, vec![("b", Node::Whiteout), ("c", file(b"top c"))]),
        ),
        ("op".to_string(), dir(true, vec![("c", file(b"only"))])),
    ]
    .into();
    let mid: spec::Layer = [
        ("dir".to_string(), dir(false, vec![("a", file(b"mid a"))])),
        ("op".to_string(), dir(false, vec![("hidden", file(b"x"))])),
    ]
    .into();
    let bottom: spec::Layer = [
        ("a".to_string(), file(b"gone")),
        (
            "dir".to_string(),
            dir(false, vec![("b", file(b"gone")), ("d", file(b"bottom d"))]),
        ),
        ("op".to_string(), dir(false, vec![("hidden2", file(b"x"))])),
    ]
    .into();
    check_stack(&[top, mid, bottom]);
}

#[test]
fn inode_numbers_are_stable_across_remounts() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let stack = spec::stack().new_tree(&mut runner).unwrap().current();
    let layers = spec::write_stack(t.path(), &stack, Form::Oci);
    let first = tree::snapshot(&Layerfs::mount(&layers, &t.path().join("m1")).mp);
    let second = tree::snapshot(&Layerfs::mount(&layers, &t.path().join("m2")).mp);
    assert_eq!(first.ino, second.ino);
    // Unique: distinct inode numbers for distinct files (hard links aside, checked above).
    let classes = tree::ino_classes(&first);
    for (p, c) in &classes {
        for q in c {
            let (a, b) = (&first.meta[p], &first.meta[q]);
            assert_eq!(
                a,
                b,
                "{} and {} share an inode but differ",
                p.display(),
                q.display()
            );
        }
    }
}
