//! A small order-preserving parallel map for I/O-bound work (cold directory reads, cold
//! `lstat`s): a few scoped threads let the disk serve several reads at once. Below
//! `min_parallel` items it runs inline, since spawning costs more than it saves.

const THREADS: usize = 8;

pub fn map<T: Sync, R: Send>(
    items: &[T],
    min_parallel: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if items.len() < min_parallel.max(2) {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(THREADS);
    let f = &f;
    std::thread::scope(|s| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
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
}
