//! Core benchmark, no mount: what the union itself costs per operation on stacks of 1, 32,
//! 128 and 512 layers (index build on first lookup, then hash-probe lookups, listings,
//! misses). The FUSE round trip is not included; `scripts/bench` measures whole mounts
//! against kernel overlayfs and fuse-overlayfs.
//!
//! `cargo bench --bench core` runs it; under `cargo test` it runs one small pass as a
//! smoke test.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use layerfs_fuse::Core;
use layerfs_mount::{Config, Stack, Union};

fn make_stack(base: &std::path::Path, layers: usize, files_per_layer: usize) -> Vec<PathBuf> {
    (0..layers)
        .map(|i| {
            let d = base.join(format!("{i}"));
            std::fs::create_dir_all(d.join("usr/lib")).unwrap();
            for j in 0..files_per_layer {
                std::fs::write(d.join(format!("usr/lib/lib{i}-{j}.so")), b"x").unwrap();
            }
            d
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (depths, reps): (&[usize], usize) = if full {
        (&[1, 32, 128, 512], 9)
    } else {
        (&[1, 32], 1)
    };
    println!(
        "{:>7} {:>14} {:>14} {:>14} {:>14}",
        "layers", "first lookup", "300 lookups", "300 misses", "readdirplus"
    );
    for &n in depths {
        let t = tempfile::tempdir().unwrap();
        let per = (600 / n).max(3);
        let layers = make_stack(t.path(), n, per);
        let names: Vec<String> = (0..300)
            .map(|k| {
                let i = k * n / 300;
                format!("lib{i}-{}.so", k % per)
            })
            .collect();
        let (mut first, mut hits, mut misses, mut listing) = (vec![], vec![], vec![], vec![]);
        for _ in 0..reps {
            let u = Union::new(
                Stack::open(&layers).unwrap(),
                None,
                Config::default(),
                false,
            )
            .unwrap();
            let t0 = Instant::now();
            let usr = u.lookup(1, OsStr::new("usr")).unwrap().node;
            let lib = u.lookup(usr, OsStr::new("lib")).unwrap().node;
            first.push(t0.elapsed());
            let t0 = Instant::now();
            for name in &names {
                u.lookup(lib, OsStr::new(name)).unwrap();
            }
            hits.push(t0.elapsed());
            let t0 = Instant::now();
            for k in 0..300 {
                assert!(u.lookup(lib, OsStr::new(&format!("missing-{k}"))).is_err());
            }
            misses.push(t0.elapsed());
            let t0 = Instant::now();
            let mut count = 0;
            u.readdir(lib, 0, true, &mut |_| {
                count += 1;
                false
            })
            .unwrap();
            listing.push(t0.elapsed());
            assert_eq!(count, n * per + 2);
        }
        println!(
            "{n:>7} {:>14?} {:>14?} {:>14?} {:>14?}",
            median(first),
            median(hits),
            median(misses),
            median(listing)
        );
    }
}
