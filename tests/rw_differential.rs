//! Differential state machine: the same random operations on kernel overlayfs and on
//! layerfs over the same generated stack (layerfs also over the OCI form of it). Every
//! operation's outcome (data or errno) must match; the trees must match every few steps,
//! after remounting all of them, and when the kernel mounts layerfs's upper.
//!
//! The kernel runs with `redirect_dir=on`, so it renames merged directories as layerfs
//! does (without it the kernel answers EXDEV and `mv` falls back to copying).

mod common;

use std::path::{Path, PathBuf};

use common::ops::{self, Op, Outcome};
use common::spec::{self, Form};
use common::tree;
use common::{require_root, Kernel, Layerfs};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("LAYERFS_RW_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

const KERNEL_OPTS: &str = ",redirect_dir=on";

struct Side {
    name: String,
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    mp: PathBuf,
}

impl Side {
    fn new(base: &Path, name: &str, lowers: Vec<PathBuf>) -> Side {
        let d = base.join(name);
        let s = Side {
            name: name.to_string(),
            lowers,
            upper: d.join("upper"),
            work: d.join("work"),
            mp: d.join("mnt"),
        };
        for p in [&s.upper, &s.work, &s.mp] {
            std::fs::create_dir_all(p).unwrap();
        }
        s
    }
}

/// A live mount of either kind; held for its Drop (the unmount).
#[allow(dead_code)]
enum Mounted {
    Kernel(Kernel),
    Layerfs(Layerfs),
}

fn mount(s: &Side, kernel: bool) -> Mounted {
    if kernel {
        Mounted::Kernel(Kernel::mount_rw_with(
            &s.lowers,
            &s.upper,
            &s.work,
            &s.mp,
            KERNEL_OPTS,
        ))
    } else {
        Mounted::Layerfs(Layerfs::mount_rw(&s.lowers, &s.upper, &s.work, &s.mp))
    }
}

fn run_case(stack: &[spec::Layer], program: &[Op]) {
    let stack = spec::without_hardlinks(stack);
    let t = tempfile::tempdir().unwrap();
    let k_layers = spec::write_stack(&t.path().join("layers"), &stack, Form::Kernel);
    let o_layers = spec::write_stack(&t.path().join("layers"), &stack, Form::Oci);
    let kernel = Side::new(t.path(), "kernel", k_layers.clone());
    let ours = Side::new(t.path(), "layerfs", k_layers.clone());
    let oci = Side::new(t.path(), "layerfs-oci", o_layers);
    let sides = [(&kernel, true), (&ours, false), (&oci, false)];
    {
        let mounts: Vec<Mounted> = sides.iter().map(|(s, k)| mount(s, *k)).collect();
        for (step, op) in program.iter().enumerate() {
            let mut want = ops::apply(&kernel.mp, op);
            let mut got = vec![];
            for (s, _) in &sides[1..] {
                got.push(ops::apply(&s.mp, op));
            }
            // layerfs renames directories the kernel cannot (EXDEV): compare with `mv`.
            if let Op::Rename { from, to, flags } = op {
                if want == Outcome::Errno(libc::EXDEV) && got.iter().all(|g| *g == Outcome::Ok) {
                    want = ops::rename_as_mv(&kernel.mp, from, to, *flags);
                }
            }
            for ((s, _), got) in sides[1..].iter().zip(got) {
                assert_eq!(
                    want, got,
                    "step {step}: {op:?}: kernel {want:?}, {} {got:?}",
                    s.name
                );
            }
            if step % 4 == 3 || step + 1 == program.len() {
                compare(&sides, &format!("after step {step} ({op:?})"));
            }
        }
        compare(&sides, "after the program");
        for m in &mounts {
            if let Mounted::Layerfs(m) = m {
                m.assert_no_errors_logged();
            }
        }
    }
    // Remounted: what each wrote to its upper means the same thing.
    {
        let _mounts: Vec<Mounted> = sides.iter().map(|(s, k)| mount(s, *k)).collect();
        compare(&sides, "after remounting");
    }
    // The kernel reads layerfs's upper as layerfs showed it.
    let expected = {
        let _m = mount(&kernel, true);
        tree::snapshot(&kernel.mp)
    };
    let compat = Side {
        name: "kernel-on-layerfs-upper".into(),
        lowers: k_layers,
        upper: ours.upper.clone(),
        work: t.path().join("compat-work"),
        mp: t.path().join("compat-mnt"),
    };
    std::fs::create_dir_all(&compat.work).unwrap();
    let _m = mount(&compat, true);
    let mut actual = tree::snapshot(&compat.mp);
    // Kernel on both sides: the same lower whiteouts it lists but cannot stat.
    assert_eq!(expected.phantoms, actual.phantoms, "kernel phantoms");
    actual.phantoms.clear();
    tree::assert_same(
        &expected,
        &actual,
        "kernel overlayfs mounting layerfs's upper",
    );
    assert_no_debris(&ours.work);
    assert_no_debris(&oci.work);
}

fn compare(sides: &[(&Side, bool)], when: &str) {
    let expected = tree::snapshot(&sides[0].0.mp);
    for (s, _) in &sides[1..] {
        tree::assert_same(
            &expected,
            &tree::snapshot(&s.mp),
            &format!("{} vs kernel {when}", s.name),
        );
    }
}

/// Nothing of ours is left in a workdir once its operations are done.
fn assert_no_debris(work: &Path) {
    let left: Vec<_> = std::fs::read_dir(work)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("#layerfs-"))
        .collect();
    assert!(left.is_empty(), "workdir debris: {left:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_match_kernel_overlayfs(
        stack in spec::stack(),
        program in prop::collection::vec(ops::op(), 1..40),
    ) {
        if !require_root("random_operations_match_kernel_overlayfs") {
            return Ok(());
        }
        run_case(&stack, &program);
    }
}
