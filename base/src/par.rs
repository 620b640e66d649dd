//! The one order-preserving parallel map, for I/O-bound work (cold directory reads, cold
//! `lstat`s, hashing layer files, building layer manifests): a few scoped threads let the
//! disk serve several reads at once. Each worker takes the next item as it frees up, so
//! uneven items (a big file, a big layer) balance; results come back in item order.

use std::sync::atomic::{AtomicUsize, Ordering};

const THREADS: usize = 8;

/// `f` over `items` on up to [`THREADS`] threads; below `min_parallel` items it runs
/// inline, since spawning costs more than it saves.
pub fn map<T: Sync, R: Send>(
    items: &[T],
    min_parallel: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if items.len() < min_parallel.max(2) {
        return items.iter().map(f).collect();
    }
    map_with(items, THREADS, || (), |_, x| f(x))
}

/// `f` over `items` on up to `threads` threads (inline when that is one), each worker with
/// its own scratch state made by `init` (a read buffer, say) and lent to each call.
/// A panic in `f` is resumed in the caller.
pub fn map_with<T: Sync, S, R: Send>(
    items: &[T],
    threads: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.min(items.len());
    if threads <= 1 {
        let mut state = init();
        return items.iter().map(|x| f(&mut state, x)).collect();
    }
    let next = AtomicUsize::new(0);
    let (init, f, next) = (&init, &f, &next);
    let parts: Vec<Vec<(usize, R)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let mut state = init();
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(x) = items.get(i) else { break };
                        out.push((i, f(&mut state, x)));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut slots: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    for (i, r) in parts.into_iter().flatten() {
        slots[i] = Some(r);
    }
    slots
        .into_iter()
        .map(|r| r.expect("every item taken by a worker"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order_inline_and_in_parallel() {
        let v: Vec<u32> = (0..103).collect();
        assert_eq!(
            super::map(&v, 1000, |x| x * 2),
            v.iter().map(|x| x * 2).collect::<Vec<_>>()
        );
        assert_eq!(
            super::map(&v, 4, |x| x * 2),
            v.iter().map(|x| x * 2).collect::<Vec<_>>()
        );
    }

    #[test]
    fn map_with_keeps_order_and_gives_each_worker_its_state() {
        let v: Vec<u64> = (0..257).collect();
        for threads in [1, 3, 64] {
            // Each worker counts the items it took; the counts must add up to all items.
            let out = super::map_with(
                &v,
                threads,
                || 0u64,
                |seen, &x| {
                    *seen += 1;
                    (x * 3, *seen)
                },
            );
            let values: Vec<u64> = out.iter().map(|&(y, _)| y).collect();
            assert_eq!(values, v.iter().map(|x| x * 3).collect::<Vec<_>>());
            let firsts = out.iter().filter(|&&(_, seen)| seen == 1).count();
            assert!(
                (1..=threads).contains(&firsts),
                "{firsts} workers for {threads}"
            );
        }
    }

    #[test]
    fn map_with_results_stay_per_item() {
        let v: Vec<i32> = (0..50).collect();
        let out: Vec<Result<i32, String>> = super::map_with(
            &v,
            4,
            || (),
            |_, &x| {
                if x % 7 == 3 {
                    Err(format!("item {x}"))
                } else {
                    Ok(x)
                }
            },
        );
        let first_err = out.into_iter().collect::<Result<Vec<_>, _>>().unwrap_err();
        assert_eq!(first_err, "item 3");
    }
}
