//! Crash safety: the daemon is killed with SIGKILL during a storm of copy-ups and creates;
//! after a remount every file shows its old or its new content (never a torn copy), and no
//! workdir temporary is visible or left behind.
//!
//! With the `failpoints` feature (`cargo test --features failpoints --test crash`), random
//! programs are cut by a SIGKILL landing at the Nth call of a random syscall wrapper (inside
//! copy-up, rename, whiteout creation, ...) or between two operations; after a remount,
//! layerfs and the kernel's overlay over the same upper show the same tree, the workdir
//! holds nothing of ours, and every file fsynced before the kill reads back intact.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use testkit::{eventually, require_root, Layerfs};

const FILES: usize = 24;
const SIZE: usize = 2 << 20;

fn old_content(i: usize) -> Vec<u8> {
    (0..SIZE).map(|j| (i * 31 + j / 4096) as u8).collect()
}

fn new_file_content(i: usize) -> Vec<u8> {
    vec![i as u8 ^ 0x5a; 256 << 10]
}

/// Appends one byte to every lower file (each a copy-up) and creates new files, until told
/// to stop or the mount dies.
fn storm(root: &Path, stop: &AtomicBool) {
    for i in 0..FILES {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let append = fs::OpenOptions::new()
            .append(true)
            .open(root.join(format!("f{i}")))
            .and_then(|mut f| f.write_all(b"+"));
        let create = fs::File::create(root.join(format!("n{i}")))
            .and_then(|mut f| f.write_all(&new_file_content(i)));
        if append.is_err() || create.is_err() {
            return; // the daemon is gone
        }
    }
}

#[test]
fn kill_9_during_copy_ups_leaves_old_or_new_never_torn() {
    if !require_root() {
        return;
    }
    for (round, kill_after) in [2usize, 9, 17].into_iter().enumerate() {
        let t = tempfile::tempdir().unwrap();
        let (l, u, w) = (t.path().join("l"), t.path().join("u"), t.path().join("w"));
        for d in [&l, &u, &w] {
            fs::create_dir(d).unwrap();
        }
        for i in 0..FILES {
            fs::write(l.join(format!("f{i}")), old_content(i)).unwrap();
        }
        let lowers = std::slice::from_ref(&l);
        let mp = t.path().join("m");
        {
            let mut m = Layerfs::mount_rw(lowers, &u, &w, &mp);
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                let root = m.mp.clone();
                let stop = &stop;
                s.spawn(move || storm(&root, stop));
                // Kill once the storm is well under way, while a copy is being built.
                eventually("a copy-up in flight", || {
                    fs::read_dir(&u).map_or(0, |d| d.count()) >= kill_after
                        && fs::read_dir(&w).map_or(0, |d| d.count()) > 0
                });
                m.kill();
                stop.store(true, Ordering::Relaxed);
            });
        }
        let interrupted = fs::read_dir(&w).unwrap().count();
        assert!(interrupted > 0, "round {round}: no copy was cut short");
        let m = Layerfs::mount_rw(lowers, &u, &w, &mp);
        let mut copied = 0;
        for i in 0..FILES {
            let got = fs::read(m.path(&format!("f{i}"))).unwrap();
            let old = old_content(i);
            let mut new = old.clone();
            new.push(b'+');
            assert!(
                got == old || got == new,
                "round {round}: f{i} torn: {} bytes",
                got.len()
            );
            copied += usize::from(u.join(format!("f{i}")).exists());
            match fs::read(m.path(&format!("n{i}"))) {
                Ok(d) => assert!(
                    d.is_empty() || d == new_file_content(i),
                    "round {round}: n{i} has {} bytes",
                    d.len()
                ),
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
            }
        }
        assert!(copied >= 1, "round {round}: the storm copied nothing up");
        let names: Vec<String> = fs::read_dir(&m.mp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with('#')),
            "debris in view: {names:?}"
        );
        let work: Vec<_> = fs::read_dir(&w)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            work.is_empty(),
            "round {round}: workdir not cleared at mount: {work:?}"
        );
    }
}

/// `layerfs import` killed with SIGKILL while it stages layers: the store has no image
/// record and no partial layer (what `layers/` holds is complete, with its hash list), the
/// next import completes, and `verify` finds every stored layer intact.
#[test]
fn kill_9_during_import_leaves_no_half_imported_image() {
    if !require_root() {
        return;
    }
    let t = tempfile::Builder::new()
        .prefix("i24-import-kill")
        .tempdir()
        .unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..24u64 {
        fs::write(
            src.join(format!("f{i}")),
            testkit::imagekit::noise(1 << 20, i),
        )
        .unwrap();
    }
    let store = t.path().join("store");
    let stack = format!("lowerdir={}", src.display());
    let args = ["import", &stack, "--store", store.to_str().unwrap()];
    let mut child = std::process::Command::new(testkit::BIN)
        .args(args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once a layer is being staged.
    eventually("a layer being staged", || {
        fs::read_dir(store.join("tmp")).is_ok_and(|mut d| d.next().is_some())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let records = fs::read_dir(store.join("images")).unwrap().count();
    assert_eq!(records, 0, "an image record after a killed import");
    for e in fs::read_dir(store.join("layers")).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let list = store.join("hashes").join(format!("{name}.blake3"));
            assert!(
                list.exists(),
                "{} published without its hash list",
                p.display()
            );
        }
    }
    let o = testkit::run_layerfs(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = testkit::run_layerfs(&["verify", "--store", store.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

#[cfg(feature = "failpoints")]
mod at_random_points {
    use std::fs;
    use std::io::Write;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};

    use proptest::prelude::*;
    use testkit::faults::{ctl, POINTS};
    use testkit::ops::{self, Op, Outcome};
    use testkit::spec::{self, Form};
    use testkit::{eventually, require_root, tree, Kernel, Layerfs};

    static KILLS_IN_CALL: AtomicU64 = AtomicU64::new(0);
    static KILLS_BETWEEN: AtomicU64 = AtomicU64::new(0);

    fn cases() -> u32 {
        std::env::var("LAYERFS_KILL_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(24)
    }

    /// Where a kill may land: every faulted wrapper, and the data path's.
    fn points() -> Vec<&'static str> {
        let mut v = POINTS.to_vec();
        v.extend(["sys::pwrite", "sys::fsync", "sys::fallocate"]);
        v
    }

    fn run_case(stack: &[spec::Layer], program: &[Op], point: &str, nth: u32, backstop: usize) {
        // `*`: the Nth call of any of them.
        let point = if point == "*" {
            points().join(",")
        } else {
            point.to_string()
        };
        let stack = spec::without_hardlinks(stack);
        let t = tempfile::Builder::new()
            .prefix("i24-kill")
            .tempdir()
            .unwrap();
        let lowers = spec::write_stack(&t.path().join("layers"), &stack, Form::Kernel);
        let d = |n: &str| -> PathBuf {
            let p = t.path().join(n);
            fs::create_dir_all(&p).unwrap();
            p
        };
        let (u, w, mp) = (d("upper"), d("work"), t.path().join("mnt"));
        let sock = t.path().join("faults.sock");
        let rw = format!("upperdir={},workdir={}", u.display(), w.display());
        // Files whose fsync returned before the kill: they must survive it.
        let mut synced: Vec<(String, Vec<u8>)> = Vec::new();
        {
            let mut m = Layerfs::mount_with_env(
                &lowers,
                &mp,
                &["-o", &rw],
                &[("LAYERFS_FAULTS", sock.as_path())],
            );
            eventually("the failpoint socket", || sock.exists());
            ctl(&sock, &format!("kill {point} {nth}"));
            let mut killed_in_call = false;
            for (step, op) in program.iter().enumerate() {
                if step == backstop {
                    break;
                }
                if step % 4 == 0 {
                    let name = format!("fsynced{step}");
                    let data = vec![step as u8 ^ 0xa5; 3000 + step * 100];
                    let r = fs::File::create(m.path(&name))
                        .and_then(|mut f| f.write_all(&data).and_then(|()| f.sync_all()));
                    if r.is_ok() {
                        synced.push((name, data));
                    }
                }
                if ops::apply(&m.mp, op) == Outcome::Errno(libc::ENOTCONN) {
                    killed_in_call = true;
                    break;
                }
            }
            if killed_in_call {
                KILLS_IN_CALL.fetch_add(1, Ordering::Relaxed);
            } else {
                // The kill point was not reached (or not often enough): killed between
                // two operations instead.
                m.kill();
                KILLS_BETWEEN.fetch_add(1, Ordering::Relaxed);
            }
        }
        let ours = {
            let m = Layerfs::mount_rw(&lowers, &u, &w, &mp);
            let debris: Vec<_> = fs::read_dir(&w)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n.to_string_lossy().starts_with("#layerfs-"))
                .collect();
            assert!(
                debris.is_empty(),
                "workdir not cleared at mount: {debris:?}"
            );
            for (name, data) in &synced {
                let got = fs::read(m.path(name)).unwrap_or_default();
                assert!(
                    got == *data,
                    "{name}, fsynced before the kill: {} bytes",
                    got.len()
                );
            }
            let t = tree::snapshot(&m.mp);
            m.assert_no_errors_logged();
            t
        };
        let kmp = t.path().join("kmnt");
        let kw = d("kwork");
        let theirs = {
            let k = Kernel::mount_rw_with(&lowers, &u, &kw, &kmp, ",redirect_dir=on");
            tree::snapshot(&k.mp)
        };
        tree::assert_same(
            &theirs,
            &ours,
            &format!(
                "kernel vs layerfs after a kill at call {nth} of {}",
                &point[..point.len().min(40)]
            ),
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 50, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn kill_9_at_random_points_of_random_programs(
            stack in spec::stack(),
            program in prop::collection::vec(ops::op(), 10..60),
            (point, nth) in prop_oneof![
                1 => (prop::sample::select(points()), 1u32..6),
                3 => (Just("*"), 1u32..30),
            ],
            backstop in 20usize..60,
        ) {
            if !require_root() {
                return Ok(());
            }
            run_case(&stack, &program, point, nth, backstop);
            // Past the harness's capture, so CI logs show the counts.
            let _ = writeln!(
                std::io::stderr().lock(),
                "kills: {} inside a syscall wrapper, {} between operations",
                KILLS_IN_CALL.load(Ordering::Relaxed),
                KILLS_BETWEEN.load(Ordering::Relaxed)
            );
        }
    }
}

/// Faults and kills in the store's paths: `layerfs import` and `layerfs commit --to store:`
/// with a failpoint firing (EIO) or a SIGKILL landing at the Nth call of each wrapper they
/// use. A failed one says why in one line; neither leaves an image record, a layer without
/// its hash list, or anything in `tmp/` once the next store operation ran; the next import
/// or commit completes and `verify` finds the store intact.
#[cfg(feature = "failpoints")]
#[test]
fn faults_and_kills_in_import_and_commit_leave_no_half_image() {
    if !require_root() {
        return;
    }
    let t = tempfile::Builder::new()
        .prefix("i24-store-faults")
        .tempdir()
        .unwrap();
    let src = t.path().join("src");
    for d in 0..4 {
        let dir = src.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..6 {
            fs::write(
                dir.join(format!("f{f}")),
                vec![(d * 6 + f) as u8; 5000 + f * 300],
            )
            .unwrap();
        }
        std::os::unix::fs::symlink("f0", dir.join("link")).unwrap();
    }
    let upper = t.path().join("upper");
    fs::create_dir_all(upper.join("new")).unwrap();
    fs::write(upper.join("new/file"), "committed").unwrap();
    fs::write(upper.join("d0f"), "top").unwrap();
    let points = [
        "sys::mkdirat",
        "sys::create_excl",
        "sys::pwrite_all",
        "sys::symlinkat",
        "sys::lutimesat",
        "sys::futimens",
        "sys::fchmod",
        "sys::rename_path",
    ];
    let records = |store: &Path| {
        fs::read_dir(store.join("images")).map_or(0, |d| {
            d.filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "json")
            })
            .count()
        })
    };
    let (mut faults, mut kills, mut case) = (0, 0, 0);
    for point in points {
        for (nth, kill) in [(1, false), (3, false), (2, true), (5, true)] {
            case += 1;
            let store = t.path().join(format!("store{case}"));
            let s = store.to_str().unwrap();
            let stack = format!("lowerdir={}", src.display());
            let import = ["import", stack.as_str(), "--store", s];
            let rw = format!("lowerdir={},upperdir={}", src.display(), upper.display());
            let commit = [
                "commit",
                "-o",
                rw.as_str(),
                "--to",
                "store:c:1",
                "--store",
                s,
            ];
            // Every other case in commit (on a store with the image imported).
            let args: &[&str] = if case % 2 == 0 {
                let o = testkit::run_layerfs(&import);
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                &commit
            } else {
                &import
            };
            let before = records(&store);
            let cmd = match kill {
                true => format!("kill {point} {nth}"),
                false => format!("set {point} {}*off->return(5)", nth - 1),
            };
            let o = std::process::Command::new(testkit::BIN)
                .args(args)
                .env("LAYERFS_FAULT_COMMANDS", &cmd)
                .output()
                .unwrap();
            let what = format!("{} with {cmd}", args[0]);
            if !o.status.success() {
                let err = String::from_utf8_lossy(&o.stderr);
                if kill {
                    use std::os::unix::process::ExitStatusExt;
                    assert_eq!(o.status.signal(), Some(9), "{what}: {err}");
                    kills += 1;
                } else {
                    assert!(
                        err.trim().lines().count() == 1,
                        "{what}: not one line: {err}"
                    );
                    assert!(err.contains("Input/output error"), "{what}: {err}");
                    faults += 1;
                }
                assert_eq!(
                    records(&store),
                    before,
                    "{what}: an image record after a failure"
                );
            }
            // The next store operation clears what a killed one left.
            let o = testkit::run_layerfs(&["images", "--store", s]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let tmp: Vec<_> = fs::read_dir(store.join("tmp")).unwrap().collect();
            assert!(
                tmp.is_empty(),
                "{what}: tmp/ after the next operation: {tmp:?}"
            );
            let half: Vec<_> = fs::read_dir(store.join("images"))
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .to_string_lossy()
                        .ends_with(".tmp")
                })
                .collect();
            assert!(half.is_empty(), "{what}: half-written records: {half:?}");
            for e in fs::read_dir(store.join("layers")).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                let list = store.join("hashes").join(format!("{name}.blake3"));
                assert!(list.exists(), "{what}: layer {name} without its hash list");
            }
            let o = testkit::run_layerfs(args);
            assert!(
                o.status.success(),
                "{what}, again: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let o = testkit::run_layerfs(&["verify", "--store", s]);
            assert!(
                o.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&o.stdout)
            );
        }
    }
    assert!(faults > 0 && kills > 0, "faults {faults}, kills {kills}");
    // Past the harness's capture, so CI logs show the counts.
    let _ = writeln!(
        std::io::stderr().lock(),
        "store: {faults} faults and {kills} kills in import and commit over {case} runs"
    );
}
