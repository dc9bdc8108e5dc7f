//! Threads and tasks that share one connection and call without deadlines: every call must
//! return. A watchdog fails the test when any call has been under way for longer than
//! [`CEILING`], rather than letting a lost wake-up hang it (a deadline on the calls would
//! hide one: the caller would time out and go on).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How long one call may take before the test takes it for lost. Generous on purpose: it
/// only turns a hang into a failure.
pub const CEILING: Duration = super::TIMEOUT;

/// When each caller's call under way started (nanoseconds after `epoch`, plus one; 0 when
/// none is), and how many calls returned.
struct Watch {
    epoch: Instant,
    started: Vec<AtomicU64>,
    returned: AtomicU64,
}

impl Watch {
    fn start(&self, caller: usize) {
        let at = self.epoch.elapsed().as_nanos() as u64 + 1;
        self.started[caller].store(at, Ordering::Relaxed);
    }

    fn end(&self, caller: usize) {
        self.started[caller].store(0, Ordering::Relaxed);
        self.returned.fetch_add(1, Ordering::Relaxed);
    }

    /// The caller whose call has been under way the longest, and for how long.
    fn longest(&self) -> Option<(usize, Duration)> {
        let now = self.epoch.elapsed();
        self.started
            .iter()
            .enumerate()
            .filter_map(|(caller, at)| match at.load(Ordering::Relaxed) {
                0 => None,
                at => Some((caller, now.saturating_sub(Duration::from_nanos(at - 1)))),
            })
            .max_by_key(|&(_, took)| took)
    }
}

/// Says whether a caller finished all its calls, also when it panicked.
struct Finished {
    tx: mpsc::Sender<bool>,
    ok: bool,
}

impl Finished {
    /// Says the caller finished all its calls.
    fn succeed(mut self) {
        self.ok = true;
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        let _ = self.tx.send(self.ok);
    }
}

/// `threads` threads call `blocking(tag)` and `tasks` tasks on a two-worker runtime call
/// `asynchronous(tag)`, `calls` times each, with a distinct tag per call that the call must
/// give back; none has a deadline. Fails if a caller gets a wrong answer or panics, or if any
/// call takes longer than [`CEILING`].
pub fn every_call_returns<B, A, F>(
    threads: usize,
    tasks: usize,
    calls: u64,
    blocking: B,
    asynchronous: A,
) where
    B: Fn(u64) -> u64 + Clone + Send + 'static,
    A: Fn(u64) -> F + Clone + Send + 'static,
    F: Future<Output = u64> + Send + 'static,
{
    let watch = Arc::new(Watch {
        epoch: Instant::now(),
        started: (0..threads + tasks).map(|_| AtomicU64::new(0)).collect(),
        returned: AtomicU64::new(0),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tx, finished) = mpsc::channel();
    let tag = |caller: usize, i: u64| caller as u64 * 1_000_000_000 + i;
    for caller in 0..threads {
        let (watch, blocking) = (watch.clone(), blocking.clone());
        let finished = Finished {
            tx: tx.clone(),
            ok: false,
        };
        std::thread::spawn(move || {
            for i in 0..calls {
                watch.start(caller);
                let got = blocking(tag(caller, i));
                watch.end(caller);
                assert_eq!(got, tag(caller, i), "a wrong answer");
            }
            finished.succeed();
        });
    }
    for caller in threads..threads + tasks {
        let (watch, asynchronous) = (watch.clone(), asynchronous.clone());
        let finished = Finished {
            tx: tx.clone(),
            ok: false,
        };
        runtime.spawn(async move {
            for i in 0..calls {
                watch.start(caller);
                let got = asynchronous(tag(caller, i)).await;
                watch.end(caller);
                assert_eq!(got, tag(caller, i), "a wrong answer");
            }
            finished.succeed();
        });
    }
    drop(tx);
    for _ in 0..threads + tasks {
        loop {
            match finished.recv_timeout(Duration::from_millis(200)) {
                Ok(ok) => {
                    assert!(ok, "a caller failed (see its panic above)");
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(e) => panic!("a caller vanished: {e}"),
            }
            if let Some((caller, took)) = watch.longest() {
                assert!(
                    took < CEILING,
                    "a call of caller {caller} has not returned for {took:?} ({} calls \
                     returned): it waits for a reply nobody reads",
                    watch.returned.load(Ordering::Relaxed)
                );
            }
        }
    }
    let all = (threads + tasks) as u64 * calls;
    assert_eq!(watch.returned.load(Ordering::Relaxed), all);
}
