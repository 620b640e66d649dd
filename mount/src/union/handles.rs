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

    /// Inserts `v` under `number(seq)` for the next sequence number whose handle is free
    /// (a supervised mount's handles say which node they open: `recover.rs`); the handle
    /// and the sequence number used.
    pub fn insert_numbered(&self, v: T, number: impl Fn(u64) -> u64) -> (u64, u64) {
        loop {
            let seq = self.next.fetch_add(1, Ordering::Relaxed);
            let fh = number(seq);
            if let dashmap::Entry::Vacant(e) = self.map.entry(fh) {
                e.insert(v);
                return (fh, seq);
            }
        }
    }

    /// Handle `fh` again (a restarted daemon's, reopened): the one there, or `v`.
    pub fn insert_at(&self, fh: u64, v: T) -> T {
        self.map.entry(fh).or_insert(v).clone()
    }

    /// New numbers start after `max` (the highest an earlier daemon gave).
    pub fn start_after(&self, max: u64) {
        self.next.fetch_max(max + 1, Ordering::Relaxed);
    }

    pub fn remove(&self, fh: u64) -> Option<T> {
        self.map.remove(&fh).map(|(_, v)| v)
    }
}
