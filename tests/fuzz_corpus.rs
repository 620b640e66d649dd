//! The fuzz targets' committed corpora (`fuzz/corpus/TARGET/`), run on stable as ordinary
//! tests through the same entry functions the fuzzer calls (`layerfs_base::fuzz`, `layerfs_image::fuzz`): an input
//! that once crashed a target stays a test here once its file is in the corpus.

use std::path::PathBuf;

fn run(target: &str, entry: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let ok = std::panic::catch_unwind(|| entry(&data));
        assert!(
            ok.is_ok(),
            "{target}: {} crashes the target",
            path.display()
        );
        n += 1;
    }
    assert!(n > 0, "{}: an empty corpus", dir.display());
    println!("{target}: {n} inputs");
}

#[test]
fn tar_corpus() {
    run("tar", layerfs_image::fuzz::tar);
}

#[test]
fn oci_corpus() {
    run("oci", layerfs_image::fuzz::oci);
}

#[test]
fn mount_options_corpus() {
    run("mount_options", layerfs_base::fuzz::mount_options);
}

#[test]
fn idmap_corpus() {
    run("idmap", layerfs_base::fuzz::idmap);
}

#[test]
fn hash_list_corpus() {
    run("hash_list", layerfs_base::fuzz::hash_list);
}

#[test]
fn lazy_toc_corpus() {
    run("lazy_toc", layerfs_image::fuzz::lazy_toc);
}
