//! A writable mount of one lower layer, for tests that change and remount it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::Layerfs;

/// One lower layer, an upper, a workdir and a layerfs mount of them.
pub struct Rw {
    pub t: tempfile::TempDir,
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub m: Option<Layerfs>,
}

impl Rw {
    pub fn new(fill: impl FnOnce(&Path)) -> Rw {
        let t = tempfile::tempdir().unwrap();
        let (lower, upper, work) = (t.path().join("l"), t.path().join("u"), t.path().join("w"));
        for d in [&lower, &upper, &work] {
            fs::create_dir(d).unwrap();
        }
        fill(&lower);
        let mut rw = Rw {
            t,
            lower,
            upper,
            work,
            m: None,
        };
        rw.remount();
        rw
    }

    pub fn remount(&mut self) {
        self.m = None;
        let mp = self.t.path().join("m");
        self.m = Some(Layerfs::mount_rw(
            std::slice::from_ref(&self.lower),
            &self.upper,
            &self.work,
            &mp,
        ));
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.m.as_ref().unwrap().path(rel)
    }
}
