//! Watching for the next request before sleeping: the server's reader threads (the pool's,
//! over sockets, and each shared-memory connection's) look for more to read for
//! `ServerConfig::worker_spin` after reading, one thread at a time, yielding the CPU to any
//! thread that wants it between looks.
//!
//! Why: a client's next request often comes within microseconds of its reply, and a thread
//! asleep in the kernel costs a wake-up to get it; on a virtual machine, waking an idle CPU is
//! most of a round trip (a blocking round trip through a futex in shared memory measured
//! 43-50 us here, the same with one side watching 2.5 us). The watcher keeps one CPU out of
//! deep idle and gives it up whenever another thread can run (`sched_yield`), so it costs a
//! loaded machine little; at most one reader watches at once, so the others sleep.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One watcher at a time, for `spin` each time (zero: never).
pub(super) struct Spin {
    spin: Duration,
    watching: AtomicBool,
}

impl Spin {
    /// Watching for `spin` at most (`ServerConfig::worker_spin`).
    pub(super) fn new(spin: Duration) -> Spin {
        Spin {
            spin,
            watching: AtomicBool::new(false),
        }
    }

    /// Calls `look` until it finds something (`Ok(Some(_))`) or fails, yielding the CPU
    /// between looks, for the spin at most; `Ok(None)` at once when the spin is off or another
    /// thread watches.
    pub(super) fn watch<T, E>(
        &self,
        mut look: impl FnMut() -> Result<Option<T>, E>,
    ) -> Result<Option<T>, E> {
        if self.spin.is_zero() || self.watching.swap(true, Ordering::Acquire) {
            return Ok(None);
        }
        let until = Instant::now() + self.spin;
        let found = loop {
            match look() {
                Ok(None) if Instant::now() < until => std::thread::yield_now(),
                done => break done,
            }
        };
        self.watching.store(false, Ordering::Release);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::Spin;
    use std::time::Duration;

    #[test]
    fn a_watch_ends_with_what_it_found_or_after_the_spin() {
        let spin = Spin::new(Duration::from_millis(5));
        let mut looks = 0;
        let found: Result<_, ()> = spin.watch(|| {
            looks += 1;
            Ok((looks == 3).then_some(looks))
        });
        assert_eq!(found, Ok(Some(3)));
        let mut looks = 0;
        let found: Result<Option<()>, ()> = spin.watch(|| {
            looks += 1;
            Ok(None)
        });
        assert_eq!(found, Ok(None));
        assert!(looks > 1, "it looked until the spin ended");
        assert_eq!(spin.watch(|| Err::<Option<()>, _>("broken")), Err("broken"));
    }

    #[test]
    fn one_thread_watches_at_a_time_and_none_without_a_spin() {
        let spin = Spin::new(Duration::from_millis(5));
        let inner: Result<Option<u8>, ()> = spin
            .watch(|| Ok(Some(spin.watch(|| Ok::<_, ()>(Some(1u8))))))
            .map(|found| found.and_then(Result::ok).flatten());
        assert_eq!(inner, Ok(None), "a second watcher does not watch");
        assert_eq!(
            spin.watch(|| Ok::<_, ()>(Some(2u8))),
            Ok(Some(2)),
            "the first watch ended"
        );
        let off = Spin::new(Duration::ZERO);
        assert_eq!(off.watch(|| Ok::<_, ()>(Some(1u8))), Ok(None));
    }
}
