//! Tables of open handles (files: directories have none), keyed by the number the kernel
//! holds.

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

/// Open handles of one kind; numbers are never reused within a mount.
#[derive(Debug)]
pub struct Handles<T> {
    map: DashMap<u64, T>,
    next: AtomicU64,
}

impl<T> Default for Handles<T> {
    fn default() -> Self {
        Handles {
            map: DashMap::new(),
            next: AtomicU64::new(1),
        }
    }
}

impl<T: Clone> Handles<T> {
    pub fn insert(&self, v: T) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.map.insert(fh, v);
        fh
    }

    pub fn get(&self, fh: u64) -> Option<T> {
        self.map.get(&fh).map(|v| v.clone())
    }

    pub fn remove(&self, fh: u64) -> Option<T> {
        self.map.remove(&fh).map(|(_, v)| v)
    }
}
