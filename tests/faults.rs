//! A random-fault campaign (feature `failpoints`: `cargo test --features failpoints --test
//! faults`): random programs on a writable mount while the syscall wrappers that change the
//! upper and the workdir, and `openat`, fail at random (EIO or ENOSPC, `base/src/sys/faults.rs`).
//!
//! - every operation that fails answers an errno and changes nothing the mount shows;
//! - once faults stop, the tree equals kernel overlayfs' after a replay of the operations
//!   that succeeded, live and after a remount, and the kernel reads the upper the same way;
//! - the daemon is alive and serving, its fd and thread counts bounded, and the number of
//!   faults injected is printed.
//!
//! And single faults at a chosen wrapper where an operation has a step that could fail
//! after it changed something.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use testkit::faults::{ctl, POINTS};
use testkit::ops::{self, Op, Outcome};
use testkit::spec::{self, Form};
use testkit::{eventually, require_root, tree, Kernel, Layerfs};

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

/// `rename(2)` with `flags` of `from` to `to`: the errno, or 0.
fn rename2(from: &std::path::Path, to: &std::path::Path, flags: u32) -> i32 {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &std::path::Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let (a, b) = (c(from), c(to));
    // SAFETY: two NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
}

/// Renames of a nested overlay's whiteouts that fail on ENOSPC (making a file fails) change
/// nothing: a `RENAME_WHITEOUT` builds its whiteout before it renames, and the directory a
/// nested whiteout moves to is marked only once the move can go ahead. Before, the first
/// renamed and then failed, and the second left the target directory copied up and marked.
#[test]
fn renames_of_nested_whiteouts_failing_on_enospc_change_nothing() {
    if !require_root() {
        return;
    }
    let t = tempfile::Builder::new()
        .prefix("nested-fix-faults")
        .tempdir()
        .unwrap();
    let d = |n: &str| -> PathBuf {
        let p = t.path().join(n);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    // A lower nested whiteout `s/wh` (the escaped form) and a lower directory `d2`.
    let l = d("l");
    std::fs::create_dir_all(l.join("s/d2")).unwrap();
    std::fs::write(l.join("s/wh"), "").unwrap();
    for (name, value, rel) in [
        ("trusted.overlay.overlay.whiteout", "y", "s/wh"),
        ("trusted.overlay.overlay.opaque", "x", "s"),
    ] {
        let ok = std::process::Command::new("setfattr")
            .args(["-n", name, "-v", value])
            .arg(l.join(rel))
            .status()
            .unwrap()
            .success();
        assert!(ok, "setfattr {name}");
    }
    let (u, w, mp) = (d("u"), d("w"), t.path().join("m"));
    let sock = t.path().join("faults.sock");
    let rw = format!("upperdir={},workdir={}", u.display(), w.display());
    let m = Layerfs::mount_with_env(
        &[l],
        &mp,
        &["-o", &rw],
        &[("LAYERFS_FAULTS", sock.as_path())],
    );
    eventually("the failpoint socket", || sock.exists());
    std::fs::write(m.path("s/a"), "a\n").unwrap();
    let before = tree::snapshot(&m.mp);
    ctl(
        &sock,
        &format!("set sys::create_excl return({})", libc::ENOSPC),
    );
    let moved = rename2(&m.path("s/wh"), &m.path("s/d2/wh"), 0);
    let left = rename2(&m.path("s/a"), &m.path("s/b"), libc::RENAME_WHITEOUT);
    ctl(&sock, "off");
    assert_eq!((moved, left), (libc::ENOSPC, libc::ENOSPC));
    assert!(!u.join("s/d2").exists(), "d2 copied up");
    tree::assert_same(&before, &tree::snapshot(&m.mp), "after the failed renames");
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
        if !require_root() {
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
