//! A mount that outlives its daemon (`-o supervise`): the serving daemon killed with
//! SIGKILL inside a request of a random program, or swapped by `layerfs restart` during a
//! `tar c` of the mount, costs a pause and nothing else: every operation answers what it
//! answers on a mount whose daemon was never touched, the trees are the same, tar's archive
//! is byte for byte the same, and nobody sees ENOTCONN.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use testkit::{require_root, run_layerfs, Layerfs};

/// `layerfs status MNT --json`.
fn status(mp: &Path) -> serde_json::Value {
    let o = run_layerfs(&["status", mp.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn num(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// A writable supervised mount of `lowers` in `dir` (upper, work and mountpoint made there).
fn mount(dir: &Path, lowers: &[PathBuf], env: &[(&str, &Path)]) -> Layerfs {
    let d = |n: &str| -> PathBuf {
        let p = dir.join(n);
        fs::create_dir_all(&p).unwrap();
        p
    };
    let (u, w) = (d("upper"), d("work"));
    let rw = format!("upperdir={},workdir={},supervise", u.display(), w.display());
    Layerfs::mount_with_env(lowers, &dir.join("mnt"), &["-o", &rw], env)
}

#[test]
fn status_names_the_serving_daemon_and_its_supervisor() {
    if !require_root() {
        return;
    }
    let t = tempfile::Builder::new()
        .prefix("sup-status")
        .tempdir()
        .unwrap();
    let l = t.path().join("l");
    fs::create_dir_all(&l).unwrap();
    fs::write(l.join("a"), "a").unwrap();
    let m = mount(t.path(), std::slice::from_ref(&l), &[]);
    let s = status(&m.mp);
    assert_eq!(num(&s, "supervisor_pid"), u64::from(m.pid()));
    let serving = num(&s, "serving_pid");
    assert_ne!(serving, u64::from(m.pid()));
    assert_eq!(num(&s, "restarts"), 0);
    assert!(Path::new(&format!("/proc/{serving}")).exists());
    // Without -o supervise there is nobody to ask: said so, exit 1.
    let plain = Layerfs::mount(std::slice::from_ref(&l), &t.path().join("plain"));
    let o = run_layerfs(&["status", plain.mp.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("supervise"));
}

#[cfg(feature = "failpoints")]
mod killed_inside_requests {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use proptest::prelude::*;
    use testkit::faults::{ctl, POINTS};
    use testkit::ops::{self, Op, Outcome};
    use testkit::spec::{self, Form};
    use testkit::{eventually, require_root, tree};

    static KILLS: AtomicU64 = AtomicU64::new(0);
    static PROGRAMS: AtomicU64 = AtomicU64::new(0);

    fn cases() -> u32 {
        std::env::var("LAYERFS_SUPERVISE_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(12)
    }

    /// Runs `program` on a supervised mount of `stack`; with `kill_at`, the daemon kills
    /// itself (SIGKILL) at that call of any faulted wrapper, so inside a request. The
    /// outcomes, the tree, and how many daemons were killed.
    fn run(
        stack: &[spec::Layer],
        program: &[Op],
        kill_at: Option<u32>,
    ) -> (Vec<Outcome>, tree::Tree, u64) {
        let t = tempfile::Builder::new()
            .prefix("sup-kill")
            .tempdir()
            .unwrap();
        let lowers = spec::write_stack(&t.path().join("layers"), stack, Form::Kernel);
        let sock = t.path().join("faults.sock");
        let m = mount(t.path(), &lowers, &[("LAYERFS_FAULTS", sock.as_path())]);
        if let Some(n) = kill_at {
            eventually("the failpoint socket", || sock.exists());
            let mut points = POINTS.to_vec();
            points.extend(["sys::pwrite", "sys::fsync", "sys::fallocate"]);
            ctl(&sock, &format!("kill {} {n}", points.join(",")));
        }
        let outcomes: Vec<Outcome> = program.iter().map(|op| ops::apply(&m.mp, op)).collect();
        let tree = tree::snapshot(&m.mp);
        let restarts = num(&status(&m.mp), "restarts");
        m.assert_no_errors_logged();
        (outcomes, tree, restarts)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 20, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn kill_9_inside_a_request_of_a_random_program_loses_nothing(
            stack in spec::stack(),
            program in prop::collection::vec(ops::op(), 10..50),
            nth in 1u32..40,
        ) {
            if !require_root() {
                return Ok(());
            }
            let stack = spec::without_hardlinks(&stack);
            let (want, want_tree, _) = run(&stack, &program, None);
            let (got, got_tree, killed) = run(&stack, &program, Some(nth));
            for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                prop_assert_eq!(w, g, "step {} {:?} (daemon killed {} times)", i, program[i], killed);
            }
            tree::assert_same(&want_tree, &got_tree, "untouched daemon vs killed daemon");
            KILLS.fetch_add(killed, Ordering::Relaxed);
            PROGRAMS.fetch_add(1, Ordering::Relaxed);
            // Past the harness's capture, so CI logs show the counts.
            let _ = writeln!(
                std::io::stderr().lock(),
                "supervise: {} daemons killed inside a request over {} random programs",
                KILLS.load(Ordering::Relaxed),
                PROGRAMS.load(Ordering::Relaxed)
            );
        }
    }
}

/// A tree big enough for a `tar c` that takes several restarts: `dirs` directories of
/// `files` files of a few KiB each.
fn write_tree(root: &Path, dirs: usize, files: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..files {
            let data: Vec<u8> = (0..(1024 + 97 * f))
                .map(|i| (i * 7 + d + f) as u8)
                .collect();
            fs::write(dir.join(format!("f{f:03}")), data).unwrap();
        }
    }
}

/// `tar c` of the mount: its archive's sha256 and exit status.
fn tar_c(mp: &Path) -> std::process::Child {
    Command::new("sh")
        .arg("-c")
        .arg("tar --sort=name -cf - . | sha256sum")
        .current_dir(mp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn restart_and_kill_9_during_tar_c_give_the_same_archive() {
    if !require_root() {
        return;
    }
    let t = tempfile::Builder::new()
        .prefix("sup-tar")
        .tempdir()
        .unwrap();
    let l = t.path().join("l");
    write_tree(&l, 40, 50);
    let m = mount(t.path(), std::slice::from_ref(&l), &[]);
    // Some of it copied up and changed, some new in the upper.
    for d in (0..40).step_by(3) {
        fs::write(m.path(&format!("d{d:03}/f001")), format!("changed {d}")).unwrap();
        fs::write(m.path(&format!("d{d:03}/new")), format!("new {d}")).unwrap();
    }
    let quiet = tar_c(&m.mp).wait_with_output().unwrap();
    assert!(
        quiet.status.success(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    let mut pauses = Vec::new();
    let mut kills = 0;
    let mut runs = 0;
    // Until a tar saw at least three daemons go, the third by SIGKILL.
    while pauses.len() + kills < 3 || kills == 0 {
        runs += 1;
        assert!(runs < 20, "tar c never overlapped a restart");
        let mut tar = tar_c(&m.mp);
        let mut swapped = 0;
        while tar.try_wait().unwrap().is_none() {
            if (pauses.len() + kills) % 3 == 2 {
                // None while the next daemon starts: asked again.
                let Some(pid) = status(&m.mp)["serving_pid"].as_u64() else {
                    continue;
                };
                let killed = Command::new("kill").args(["-9", &pid.to_string()]).status();
                // Gone already (a pid status named just before it died): not counted.
                if killed.unwrap().success() {
                    kills += 1;
                }
            } else {
                let o = run_layerfs(&["restart", m.mp.to_str().unwrap()]);
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                pauses.push(status(&m.mp)["last_pause_ms"].as_f64().unwrap());
            }
            swapped += 1;
        }
        let out = tar.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "tar c with {swapped} swaps: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.stdout, quiet.stdout,
            "the archive after {swapped} swaps"
        );
    }
    // A restart asked of a daemon just killed is one restart for both.
    testkit::eventually("every restart counted", || {
        let n = num(&status(&m.mp), "restarts") as usize;
        n >= pauses.len().max(kills) && n <= pauses.len() + kills
    });
    pauses.sort_by(f64::total_cmp);
    let _ = std::io::Write::write_fmt(
        &mut std::io::stderr().lock(),
        format_args!(
            "supervise: {} restarts and {} kills during tar c; restart pause ms min {:.1} median {:.1} max {:.1}\n",
            pauses.len(),
            kills,
            pauses[0],
            pauses[pauses.len() / 2],
            pauses[pauses.len() - 1]
        ),
    );
    m.assert_no_errors_logged();
}

#[test]
fn a_file_open_but_removed_survives_a_kill_9_and_a_restart() {
    if !require_root() {
        return;
    }
    use std::io::{Read, Seek, SeekFrom, Write};
    let t = tempfile::Builder::new()
        .prefix("sup-orphan")
        .tempdir()
        .unwrap();
    let l = t.path().join("l");
    fs::create_dir_all(&l).unwrap();
    fs::write(l.join("lower"), "from below").unwrap();
    let m = mount(t.path(), std::slice::from_ref(&l), &[]);
    let mut a = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(m.path("scratch"))
        .unwrap();
    a.write_all(b"written before").unwrap();
    // A lower file opened, then removed (a whiteout hides it; its node keeps the lower file).
    let mut b = fs::File::open(m.path("lower")).unwrap();
    fs::remove_file(m.path("scratch")).unwrap();
    fs::remove_file(m.path("lower")).unwrap();
    for swap in ["kill", "restart"] {
        if swap == "kill" {
            let pid = num(&status(&m.mp), "serving_pid");
            Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .unwrap();
        } else {
            let o = run_layerfs(&["restart", m.mp.to_str().unwrap()]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        a.write_all(format!(", after the {swap}").as_bytes())
            .unwrap();
        a.sync_all().unwrap();
        let mut got = String::new();
        a.seek(SeekFrom::Start(0)).unwrap();
        a.read_to_string(&mut got).unwrap();
        assert!(
            got.ends_with(&format!("after the {swap}")),
            "{swap}: {got:?}"
        );
        let mut low = String::new();
        b.seek(SeekFrom::Start(0)).unwrap();
        b.read_to_string(&mut low).unwrap();
        assert_eq!(low, "from below", "{swap}");
    }
    assert!(!m.path("scratch").exists() && !m.path("lower").exists());
    drop((a, b));
    m.assert_no_errors_logged();
    let work: Vec<_> = fs::read_dir(t.path().join("work"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("#layerfs-orphan"))
        .collect();
    drop(m);
    // Unmounted: the next mount clears what is left.
    let again = mount(t.path(), std::slice::from_ref(&l), &[]);
    drop(again);
    let left: Vec<_> = fs::read_dir(t.path().join("work"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("#layerfs-orphan"))
        .collect();
    assert!(
        left.is_empty(),
        "orphans after a fresh mount: {left:?} (before: {work:?})"
    );
}

/// Unmounts (lazily) in Drop: a mount made by a daemonized `layerfs`.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn restart_runs_the_binary_now_on_disk() {
    if !require_root() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let t = tempfile::Builder::new()
        .prefix("sup-swap")
        .tempdir()
        .unwrap();
    let l = t.path().join("l");
    fs::create_dir_all(&l).unwrap();
    fs::write(l.join("a"), "a").unwrap();
    let bin = t.path().join("layerfs");
    fs::copy(testkit::BIN, &bin).unwrap();
    let mp = t.path().join("mnt");
    fs::create_dir_all(&mp).unwrap();
    let opts = format!("lowerdir={},supervise", l.display());
    // Daemonized: returns once the mount is live. The kernel offers FUSE-over-io_uring
    // meanwhile: a supervised mount declines it (a ring dies with its daemon), and says
    // nothing of it, since nobody asked.
    let o = {
        let _rings = testkit::EnableUring::set(true);
        Command::new(&bin)
            .args(["-o", &opts])
            .arg(&mp)
            .output()
            .unwrap()
    };
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _guard = Unmount(mp.clone());
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(!said.contains("io_uring"), "{said}");
    let exe_ino = |pid: u64| fs::metadata(format!("/proc/{pid}/exe")).unwrap().ino();
    let old = num(&status(&mp), "serving_pid");
    assert_eq!(exe_ino(old), fs::metadata(&bin).unwrap().ino());
    // A new build replaces the file (a new inode under the same name, as install(1) does).
    let next = t.path().join("layerfs.new");
    fs::copy(testkit::BIN, &next).unwrap();
    fs::rename(&next, &bin).unwrap();
    let o = run_layerfs(&["restart", mp.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let new = num(&status(&mp), "serving_pid");
    assert_ne!(new, old);
    assert_eq!(
        exe_ino(new),
        fs::metadata(&bin).unwrap().ino(),
        "the new daemon runs the new file"
    );
    assert_eq!(fs::read_to_string(mp.join("a")).unwrap(), "a");
}
