//! Work split across the machine's cores, results in input order (so what is computed never
//! depends on the scheduling).

/// `f` over `items` on up to one thread per core, in order. Small inputs stay on this thread.
pub fn map<T: Sync, U: Send>(items: &[T], f: impl Fn(&T) -> U + Sync) -> Vec<U> {
    let threads = threads();
    if threads < 2 || items.len() < 256 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> =
            items.chunks(chunk).map(|c| s.spawn(move || c.iter().map(f).collect::<Vec<U>>())).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

fn threads() -> usize {
    // Read once: asking the system each time reads cgroup files.
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(8))
}

/// Runs each of `jobs` once on up to one thread per core, each taken by the next thread to
/// come free, in the order given (so put the longest first); results in input order. Once a
/// job panics no further job is started, and the panic is raised here.
pub fn jobs<T: Send, U: Send>(jobs: Vec<T>, f: impl Fn(T) -> U + Sync) -> Vec<U> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let threads = threads().min(jobs.len());
    if threads < 2 {
        return jobs.into_iter().map(f).collect();
    }
    /// Marks the run failed if dropped while its thread unwinds from a panic.
    struct Panicked<'a>(&'a AtomicBool);
    impl Drop for Panicked<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.store(true, Ordering::Relaxed);
            }
        }
    }
    let n = jobs.len();
    let failed = AtomicBool::new(false);
    let queue = std::sync::Mutex::new(jobs.into_iter().enumerate());
    let results: Vec<std::sync::Mutex<Option<U>>> = (0..n).map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let _guard = Panicked(&failed);
                    while !failed.load(Ordering::Relaxed) {
                        // The lock is held only to take the next job.
                        let next = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next();
                        let Some((i, job)) = next else { break };
                        let out = f(job);
                        *results[i].lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(out);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        }
    });
    results
        .into_iter()
        .map(|r| r.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner).expect("every job ran"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_keep_input_order() {
        let items: Vec<u64> = (0..10_000).collect();
        assert_eq!(super::map(&items, |x| x * 3), items.iter().map(|x| x * 3).collect::<Vec<_>>());
        assert_eq!(super::map(&items[..3], |x| x + 1), vec![1, 2, 3]);
    }

    #[test]
    fn every_job_runs_once_and_results_keep_input_order() {
        let ran = std::sync::atomic::AtomicUsize::new(0);
        let jobs: Vec<u64> = (0..97).rev().collect();
        let out = super::jobs(jobs.clone(), |x| {
            ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (0..x * 1000).fold(x, |a, b| a.wrapping_add(b % 7))
        });
        assert_eq!(ran.into_inner(), 97);
        let expected: Vec<u64> = jobs.iter().map(|&x| (0..x * 1000).fold(x, |a, b| a.wrapping_add(b % 7))).collect();
        assert_eq!(out, expected);
        assert!(super::jobs(Vec::<u8>::new(), |x| x).is_empty());
    }

    #[test]
    fn a_panicking_job_is_raised_to_the_caller() {
        let out = std::panic::catch_unwind(|| {
            super::jobs((0..1_000).collect::<Vec<u32>>(), |x| {
                assert!(x != 500, "job 500 fails");
                x
            })
        });
        assert!(out.is_err(), "the panic reaches the caller");
    }
}
