//! Background indexing of directories a tree walk is about to enter.
//!
//! When a directory is listed with attributes (readdirplus: `find`, `ls -R`, `tar`, `du`),
//! its subdirectories are usually entered next. Building their merged indexes on a few
//! worker threads overlaps their disk reads with the round trips of the walk. The queue is
//! bounded and hints are dropped when it is full: prefetching is never required for
//! correctness, only a head start on work a lookup would do anyway.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use log::debug;

const WORKERS: usize = 3;
const QUEUE: usize = 4096;

/// One piece of background work: building an index (its errors are the job's to log).
pub type Job = Box<dyn FnOnce() + Send>;

pub struct Prefetcher {
    tx: SyncSender<Job>,
}

impl Prefetcher {
    pub fn start() -> Prefetcher {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..WORKERS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("prefetch-{i}"))
                .spawn(move || worker(&rx));
            if let Err(e) = spawned {
                debug!("prefetch: no worker thread: {e}");
            }
        }
        Prefetcher { tx }
    }

    /// Asks for `job` to run soon; a no-op when the queue is full.
    pub fn hint(&self, job: Job) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(job) {
            debug!("prefetch: queue full, hint dropped");
        }
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while taking one item; it ends when the sender is dropped.
        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(job) = next else { return };
        job();
    }
}
