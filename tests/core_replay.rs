//! The writable core without a mount: random programs of tests/common, run on the union
//! core through its `Core` interface (no FUSE), compared with what the kernel's overlayfs
//! gave for the same programs over the same stacks, as recorded in
//! tests/data/core-replay.json (outcome of every operation, and the final tree).
//!
//! The cases come from fixed seeds, so the record names each by its seed and a digest of
//! the generated stack and program; when the generators change, the digests stop matching
//! and the record must be made again, as root, with
//! `cargo test --test core_replay -- --ignored record_kernel_results`.
//!
//! Building the stacks needs root (file owners, `trusted.*` xattrs, whiteout devices), and
//! so does the core's upper (`trusted.overlay.*` marks); nothing is mounted.

mod common;

use common::ops::{self, Op};
use common::spec::{self, Form, Layer};
use common::{core_ops, require_root, tree};
use layerfs_base::format::MarkNs;
use layerfs_mount::{upper, Config, Stack, Union};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};

const RECORD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/core-replay.json");
/// How many cases the record holds.
const CASES: usize = 100;

/// The stack and program of seed `seed`.
fn case(seed: u64) -> (Vec<Layer>, Vec<Op>) {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
    let mut runner = TestRunner::new_with_rng(Default::default(), rng);
    let stack = spec::stack().new_tree(&mut runner).unwrap().current();
    let program = prop::collection::vec(ops::op(), 1..40)
        .new_tree(&mut runner)
        .unwrap()
        .current();
    (spec::without_hardlinks(&stack), program)
}

fn digest(stack: &[Layer], program: &[Op]) -> String {
    blake3::hash(format!("{stack:?}{program:?}").as_bytes())
        .to_hex()
        .to_string()
}

/// The tree as text: every path's metadata, then which paths share an inode number.
fn render(t: &tree::Tree) -> String {
    let classes: Vec<_> = tree::ino_classes(t)
        .into_values()
        .filter(|c| c.len() > 1)
        .collect();
    let mut out = String::new();
    for (p, m) in &t.meta {
        out.push_str(&format!("{p:?} {m:?}\n"));
    }
    out.push_str(&format!("shared inodes: {classes:?}"));
    out
}

struct Dirs {
    t: tempfile::TempDir,
}

impl Dirs {
    fn new() -> Dirs {
        let d = Dirs {
            t: tempfile::tempdir().unwrap(),
        };
        for s in ["upper", "work", "mnt"] {
            std::fs::create_dir(d.p(s)).unwrap();
        }
        d
    }

    fn p(&self, s: &str) -> std::path::PathBuf {
        self.t.path().join(s)
    }
}

/// The union core over `lowers` with a fresh upper.
fn core(lowers: &[std::path::PathBuf], d: &Dirs) -> Union {
    let up = upper::open(&d.p("upper"), &d.p("work"), MarkNs::Trusted).unwrap();
    let dev = std::fs::metadata(d.p("upper")).unwrap();
    let dev = std::os::unix::fs::MetadataExt::dev(&dev);
    let stack = Stack::open_with_upper(lowers, Some(dev)).unwrap();
    // The core clears the process's umask (a daemon gets modes with the caller's umask
    // applied); this process is also the caller, whose umask the kernel applied.
    // SAFETY: umask only swaps the process mask.
    let mask = unsafe { libc::umask(0) };
    let u = Union::new(stack, Some(up), Config::default(), true).unwrap();
    // SAFETY: as above.
    unsafe { libc::umask(mask) };
    u
}

#[test]
fn recorded_kernel_results_replay_on_the_core() {
    if !require_root("recorded_kernel_results_replay_on_the_core") {
        return;
    }
    let text = std::fs::read_to_string(RECORD).expect("tests/data/core-replay.json");
    let record: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(record.len(), CASES);
    for r in &record {
        let seed = r["seed"].as_u64().unwrap();
        let (stack, program) = case(seed);
        assert_eq!(
            r["digest"].as_str().unwrap(),
            digest(&stack, &program),
            "seed {seed}: the generators changed; record again (see the module doc)"
        );
        let d = Dirs::new();
        let lowers = spec::write_stack(&d.p("layers"), &stack, Form::Kernel);
        let u = core(&lowers, &d);
        let want: Vec<&str> = r["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap())
            .collect();
        for (step, op) in program.iter().enumerate() {
            let got = format!("{:?}", core_ops::apply(&u, op));
            assert_eq!(
                want[step], got,
                "seed {seed}, step {step}: {op:?}: kernel {}, core {got}",
                want[step]
            );
        }
        let got = render(&core_ops::snapshot(&u));
        let want = r["tree"].as_str().unwrap();
        if want != got {
            let (w, g): (Vec<_>, Vec<_>) = (want.lines().collect(), got.lines().collect());
            let at = w.iter().zip(&g).position(|(a, b)| a != b).unwrap_or(0);
            panic!(
                "seed {seed}: the final tree differs from the kernel's at line {at}:\n kernel: {:?}\n core:   {:?}\nprogram: {program:?}",
                w.get(at),
                g.get(at)
            );
        }
    }
}

/// Runs the cases on the kernel's overlayfs and writes the record (root; by hand, never in
/// CI: `cargo test --features kernel-tests,record-kernel-results --test core_replay
/// record_kernel_results`).
#[cfg(feature = "record-kernel-results")]
#[test]
fn record_kernel_results() {
    use common::ops::Outcome;
    use common::Kernel;
    assert!(require_root("record_kernel_results"));
    let mut out = Vec::new();
    let mut seed = 0u64;
    while out.len() < CASES {
        seed += 1;
        let (stack, program) = case(seed);
        let d = Dirs::new();
        let lowers = spec::write_stack(&d.p("layers"), &stack, Form::Kernel);
        let k = Kernel::mount_rw_with(
            &lowers,
            &d.p("upper"),
            &d.p("work"),
            &d.p("mnt"),
            ",redirect_dir=on",
        );
        let outcomes: Vec<Outcome> = program.iter().map(|op| ops::apply(&k.mp, op)).collect();
        // A directory rename the kernel refuses (EXDEV: a redirect beyond its limit) and
        // layerfs makes: compared by the mounted differential, not here.
        if outcomes.contains(&Outcome::Errno(libc::EXDEV)) {
            continue;
        }
        let mut t = tree::snapshot(&k.mp);
        t.phantoms.clear();
        out.push(serde_json::json!({
            "seed": seed,
            "digest": digest(&stack, &program),
            "outcomes": outcomes.iter().map(|o| format!("{o:?}")).collect::<Vec<_>>(),
            "tree": render(&t),
        }));
        drop(k);
    }
    std::fs::write(RECORD, serde_json::to_string_pretty(&out).unwrap()).unwrap();
}
