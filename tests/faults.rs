//! A random-fault campaign (feature `failpoints`: `cargo test --features failpoints --test
//! faults`): random programs on a writable mount while the syscall wrappers that change the
//! upper and the workdir, and `openat`, fail at random (EIO or ENOSPC, `base/src/sys/faults.rs`).
//!
//! - every operation that fails answers an errno and changes nothing the mount shows;
//! - once faults stop, the tree equals kernel overlayfs' after a replay of the operations
//!   that succeeded, live and after a remount, and the kernel reads the upper the same way;
//! - the daemon is alive and serving, its fd and thread counts bounded, and the number of
//!   faults injected is printed.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use common::faults::{ctl, POINTS};
use common::ops::{self, Op, Outcome};
use common::spec::{self, Form};
use common::{eventually, require_root, tree, Kernel, Layerfs};
use proptest::prelude::*;

static FAULTS: AtomicU64 = AtomicU64::new(0);
static FAILED_OPS: AtomicU64 = AtomicU64::new(0);
static OPS: AtomicU64 = AtomicU64::new(0);

fn cases() -> u32 {
    std::env::var("LAYERFS_FAULT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

fn run_case(stack: &[spec::Layer], program: &[Op], percent: u32, errno: i32) {
    let stack = spec::without_hardlinks(stack);
    let t = tempfile::Builder::new()
        .prefix("i24-faults")
        .tempdir()
        .unwrap();
    let lowers = spec::write_stack(&t.path().join("layers"), &stack, Form::Kernel);
    let d = |n: &str| -> PathBuf {
        let p = t.path().join(n);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    let (u, w, mp) = (d("upper"), d("work"), t.path().join("mnt"));
    let sock = t.path().join("faults.sock");
    let rw = format!("upperdir={},workdir={}", u.display(), w.display());
    let mut succeeded = Vec::new();
    let live = {
        let m = Layerfs::mount_with_env(
            &lowers,
            &mp,
            &["-o", &rw],
            &[("LAYERFS_FAULTS", sock.as_path())],
        );
        eventually("the failpoint socket", || sock.exists());
        let fds_before: u64 = ctl(&sock, "fds").parse().unwrap();
        let threads = || -> (u64, String) {
            let a = ctl(&sock, "threads");
            let (n, names) = a.split_once(' ').unwrap_or((&a, ""));
            (n.parse().unwrap(), names.to_string())
        };
        // Taken once the mount has served a tree walk: its worker threads are all started.
        let _ = tree::snapshot(&m.mp);
        let threads_before = threads();
        // Faults only while an operation runs: the checks read the tree without them.
        let arm = || {
            for p in POINTS {
                ctl(&sock, &format!("set {p} {percent}%return({errno})"));
            }
        };
        for (step, op) in program.iter().enumerate() {
            let before = tree::snapshot(&m.mp);
            arm();
            let out = ops::apply(&m.mp, op);
            ctl(&sock, "off");
            OPS.fetch_add(1, Ordering::Relaxed);
            match out {
                Outcome::Errno(e) => {
                    FAILED_OPS.fetch_add(1, Ordering::Relaxed);
                    let after = tree::snapshot(&m.mp);
                    tree::assert_same(
                        &before,
                        &after,
                        &format!("step {step}: {op:?} failed ({e}) but changed the tree"),
                    );
                }
                Outcome::Ok | Outcome::Data(_) => succeeded.push(op.clone()),
                Outcome::Skipped => {}
            }
        }
        let injected: u64 = ctl(&sock, "count").parse().unwrap();
        FAULTS.fetch_add(injected, Ordering::Relaxed);
        let live = tree::snapshot(&m.mp);
        // Alive and serving, and no fds piling up: what it holds is bounded by the
        // directories it has indexed (one fd per layer copy and one per upper copy).
        let fds_after: u64 = ctl(&sock, "fds").parse().unwrap();
        // Threads: the workers and the signal thread, plus the prefetch pool (3 at most)
        // started on first use.
        let threads_after = threads();
        assert!(
            threads_after.0 <= threads_before.0 + 3,
            "threads: {threads_before:?} before, {threads_after:?} after"
        );
        let dirs = live.meta.len() as u64;
        let bound = fds_before + dirs * (lowers.len() as u64 + 1) + 16;
        assert!(
            fds_after <= bound,
            "fds: {fds_before} before, {fds_after} after ({dirs} entries, {injected} faults)"
        );
        // Injected EIOs are logged as errors (as a disk's would be); bugs and panics never.
        let bugs: Vec<String> = m
            .errors_logged()
            .into_iter()
            .filter(|l| l.contains("internal error") || l.contains("panic"))
            .collect();
        assert!(bugs.is_empty(), "the daemon logged bugs: {bugs:#?}");
        live
    };

    // The kernel, replaying what succeeded, reaches the same tree.
    let (ku, kw, kmp) = (d("kupper"), d("kwork"), t.path().join("kmnt"));
    let expected = {
        let k = Kernel::mount_rw_with(&lowers, &ku, &kw, &kmp, ",redirect_dir=on");
        for (i, op) in succeeded.iter().enumerate() {
            let mut got = ops::apply(&k.mp, op);
            if let (Op::Rename { from, to, flags }, Outcome::Errno(libc::EXDEV)) = (op, &got) {
                got = ops::rename_as_mv(&k.mp, from, to, *flags);
            }
            assert!(
                matches!(got, Outcome::Ok | Outcome::Data(_)),
                "replay {i}: {op:?} succeeded on layerfs, the kernel answers {got:?}"
            );
        }
        tree::snapshot(&k.mp)
    };
    tree::assert_same(
        &expected,
        &live,
        "layerfs (faults stopped) vs kernel replay",
    );
    let remounted = {
        let m = Layerfs::mount_rw(&lowers, &u, &w, &mp);
        let t = tree::snapshot(&m.mp);
        m.assert_no_errors_logged();
        t
    };
    tree::assert_same(&expected, &remounted, "layerfs remounted vs kernel replay");
    let kw2 = d("kwork2");
    let mut on_ours = {
        let k = Kernel::mount_rw_with(&lowers, &u, &kw2, &kmp, ",redirect_dir=on");
        tree::snapshot(&k.mp)
    };
    // Lower whiteouts the kernel lists but cannot stat depend on which directories have
    // an upper copy, and a failed operation may leave its parent copied up (as the
    // kernel's own does), which the replay of the successful ones never made: not compared.
    on_ours.phantoms.clear();
    tree::assert_same(
        &expected,
        &on_ours,
        "kernel on layerfs's upper vs kernel replay",
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 100, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_faults_fail_cleanly_and_leave_a_tree_the_kernel_agrees_with(
        stack in spec::stack(),
        program in prop::collection::vec(ops::op(), 10..50),
        percent in 5u32..40,
        enospc in any::<bool>(),
    ) {
        if !require_root("random_faults_fail_cleanly_and_leave_a_tree_the_kernel_agrees_with") {
            return Ok(());
        }
        run_case(&stack, &program, percent, if enospc { libc::ENOSPC } else { libc::EIO });
        // Past the harness's capture, so CI logs show the counts.
        let _ = writeln!(
            std::io::stderr().lock(),
            "faults: {} injected so far, {} of {} operations failed",
            FAULTS.load(Ordering::Relaxed),
            FAILED_OPS.load(Ordering::Relaxed),
            OPS.load(Ordering::Relaxed)
        );
    }
}
