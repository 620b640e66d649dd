//! Random reads through the mount equal reads of the layer file, in every file mode
//! (passthrough, handle-less cached READs, open handles): offsets and lengths anywhere,
//! across page and request boundaries and past the end of the file.

use std::os::unix::fs::FileExt;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use testkit::{require_root, Layerfs};

#[test]
fn random_preads_match_the_layer_file_in_every_file_mode() {
    if !require_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (top, low) = (t.path().join("top"), t.path().join("low"));
    std::fs::create_dir_all(&top).unwrap();
    std::fs::create_dir_all(&low).unwrap();
    // Sizes around page and request boundaries; content from a cheap generator.
    let sizes = [
        0usize,
        1,
        4095,
        4096,
        4097,
        131_071,
        131_072,
        1 << 20,
        (3 << 20) + 17,
    ];
    for (i, n) in sizes.iter().enumerate() {
        let data: Vec<u8> = (0..*n).map(|k| (k.wrapping_mul(31) ^ i) as u8).collect();
        std::fs::write(
            if i % 2 == 0 { &top } else { &low }.join(format!("f{i}")),
            data,
        )
        .unwrap();
    }
    for mode in ["passthrough", "cached", "handles"] {
        let m = Layerfs::mount_with(
            &[top.clone(), low.clone()],
            &t.path().join(format!("m-{mode}")),
            &["--file-io", mode],
        );
        let mut runner = TestRunner::new(Config {
            cases: 200,
            failure_persistence: None,
            ..Config::default()
        });
        let strategy = (0..sizes.len(), 0u64..(4 << 20), 0usize..(300 << 10));
        runner
            .run(&strategy, |(i, off, len)| {
                let name = format!("f{i}");
                let layer = if i % 2 == 0 { &top } else { &low };
                let read = |path: &std::path::Path| {
                    let f = std::fs::File::open(path).unwrap();
                    let mut buf = vec![0u8; len];
                    let mut got = 0;
                    // pread until EOF or the buffer is full, as a careful reader does.
                    while got < len {
                        let n = f.read_at(&mut buf[got..], off + got as u64).unwrap();
                        if n == 0 {
                            break;
                        }
                        got += n;
                    }
                    buf.truncate(got);
                    buf
                };
                prop_assert!(
                    read(&m.path(&name)) == read(&layer.join(&name)),
                    "{mode}: {name} at {off} for {len}"
                );
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
    }
}
