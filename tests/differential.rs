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
