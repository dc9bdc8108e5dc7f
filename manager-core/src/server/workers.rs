//! The worker threads that run plain (not `async`) method bodies.
//!
//! A plain method may block or compute for seconds, so it never runs where the server reads,
//! writes or accepts: the server hands its body, with the object's lock already held, to one of
//! these threads, which runs it and writes the reply itself. Threads are started as calls need
//! them, up to `ServerConfig::max_workers`, and leave after a while idle; past the bound, bodies
//! wait in a queue for a free thread (the server logs once that the bound was reached).
//!
//! Why not tokio's `spawn_blocking`: its threads carry the runtime's context, so a method that
//! uses a blocking proxy (nesting shared objects, as Python users do) would be refused as a
//! blocking call inside an async runtime; its bound is shared with tokio's own blocking work
//! (files, DNS) and set per runtime, not per server; and it tells nothing of what runs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// Work for a worker thread.
pub(crate) type Work = Box<dyn FnOnce() + Send>;

/// How long a worker thread waits for work before it leaves.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// A bounded, growing pool of worker threads (see the module documentation).
pub(crate) struct Workers {
    shared: Arc<Pool>,
}

struct Pool {
    state: Mutex<PoolState>,
    work: Condvar,
    max: usize,
    /// Whether the bound has been logged already.
    warned: AtomicBool,
}

#[derive(Default)]
struct PoolState {
    queue: VecDeque<Work>,
    /// Threads started and not yet gone.
    threads: usize,
    /// Threads waiting for work.
    idle: usize,
    stopping: bool,
}

impl Workers {
    /// A pool of at most `max` threads (at least one).
    pub(crate) fn new(max: usize) -> Workers {
        Workers {
            shared: Arc::new(Pool {
                state: Mutex::new(PoolState::default()),
                work: Condvar::new(),
                max: max.max(1),
                warned: AtomicBool::new(false),
            }),
        }
    }

    /// Runs `work` on a worker thread: an idle one, a new one while there are fewer than the
    /// bound, else the first to become free.
    pub(crate) fn spawn(&self, work: Work) {
        let pool = &self.shared;
        let mut state = pool.state.lock();
        state.queue.push_back(work);
        if state.idle >= state.queue.len() {
            drop(state);
            pool.work.notify_one();
            return;
        }
        if state.threads < pool.max {
            state.threads += 1;
            drop(state);
            let shared = pool.clone();
            let started = std::thread::Builder::new()
                .name("manager-worker".into())
                .spawn(move || shared.serve());
            if let Err(e) = started {
                // The work stays queued for the threads there are; with none, nothing would
                // ever run it, so it runs here rather than being lost.
                let mut state = pool.state.lock();
                state.threads -= 1;
                let none_left = state.threads == 0;
                drop(state);
                tracing::error!("cannot start a worker thread: {e}");
                if none_left {
                    if let Some(work) = pool.state.lock().queue.pop_front() {
                        run(work);
                    }
                }
            }
            return;
        }
        drop(state);
        if !pool.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "all {} worker threads are busy with plain method calls; further plain calls \
                 wait for a free one (ServerConfig::max_workers); logged once",
                pool.max
            );
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Idle threads leave now; busy ones after their call.
        self.shared.state.lock().stopping = true;
        self.shared.work.notify_all();
    }
}

impl Pool {
    fn serve(&self) {
        let mut state = self.state.lock();
        loop {
            if let Some(work) = state.queue.pop_front() {
                drop(state);
                run(work);
                state = self.state.lock();
                continue;
            }
            if state.stopping {
                break;
            }
            state.idle += 1;
            let waited = self.work.wait_for(&mut state, KEEP_ALIVE);
            state.idle -= 1;
            if waited.timed_out() && state.queue.is_empty() {
                break;
            }
        }
        state.threads -= 1;
    }
}

/// Runs one piece of work; a panic (the work catches its own, this is a last resort) must not
/// take the thread's bookkeeping with it.
fn run(work: Work) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).is_err() {
        tracing::error!("a worker's work panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn runs_everything_and_never_more_than_the_bound_at_once() {
        let workers = Workers::new(3);
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (done, finished) = mpsc::channel();
        for _ in 0..20 {
            let (running, most, done) = (running.clone(), most.clone(), done.clone());
            workers.spawn(Box::new(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                running.fetch_sub(1, Ordering::SeqCst);
                done.send(()).unwrap();
            }));
        }
        for _ in 0..20 {
            finished.recv_timeout(Duration::from_secs(20)).unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 3);
        assert!(workers.shared.state.lock().threads <= 3);
    }

    #[test]
    fn a_blocked_worker_does_not_hold_up_the_others() {
        let workers = Workers::new(4);
        let (release, blocked) = mpsc::channel::<()>();
        workers.spawn(Box::new(move || {
            let _ = blocked.recv_timeout(Duration::from_secs(20));
        }));
        let (done, finished) = mpsc::channel();
        workers.spawn(Box::new(move || done.send(()).unwrap()));
        finished.recv_timeout(Duration::from_secs(20)).unwrap();
        release.send(()).unwrap();
    }
}
