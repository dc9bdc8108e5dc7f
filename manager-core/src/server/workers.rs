//! The worker threads that run plain (not `async`) method bodies.
//!
//! A plain method may block or compute for seconds, so it never runs where the server reads,
//! writes or accepts: the server hands its body, with the object's lock already held, to one of
//! these threads, which runs it and writes the reply itself. Threads are started as calls need
//! them, up to `ServerConfig::max_workers`, and leave after a while idle; past the bound, bodies
//! wait in a queue for a free thread (the server logs once that the bound was reached).
//!
//! Waking a sleeping thread costs more than a small call, so the pool avoids it where it safely
//! can: one idle thread spins for `ServerConfig::worker_spin` (yielding the CPU) before it
//! sleeps, so calls that arrive one after the other find it awake; and work queued while
//! enough threads are busy with work that started only microseconds ago (pipelined calls) is
//! left for them to take next. Should they turn out to be stuck in long calls, a watchdog
//! thread, awake only while work is queued, gives the queue another thread within a tick
//! (100 us), so a quick call never waits for a slow one for longer than that.
//!
//! Why not tokio's `spawn_blocking`: its threads carry the runtime's context, so a method that
//! uses a blocking proxy (nesting shared objects, as Python users do) would be refused as a
//! blocking call inside an async runtime; its bound is shared with tokio's own blocking work
//! (files, DNS) and set per runtime, not per server; and it tells nothing of what runs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Work for a worker thread.
pub(crate) trait Run: Send + 'static {
    /// Does the work.
    fn run(self);
}

/// Work as a closure, boxed.
pub(crate) type Boxed = Box<dyn FnOnce() + Send>;

impl Run for Boxed {
    fn run(self) {
        self()
    }
}

/// How long a worker thread waits for work before it leaves.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// A worker whose work started less than this long ago is likely to be back for more soon: new
/// work queued meanwhile need not wake another thread.
const FRESH: Duration = Duration::from_micros(50);

/// How often the watchdog looks at a queue that is not empty: work that nobody has taken for
/// this long gets another thread (its workers are blocked, or busier than they looked).
const TICK: Duration = Duration::from_micros(100);

/// A bounded, growing pool of worker threads (see the module documentation), doing work of
/// type `W` (an enum of the server's kinds of work, so that the common kind needs no box).
pub(crate) struct Workers<W: Run = Boxed> {
    shared: Arc<Pool<W>>,
}

struct Pool<W> {
    state: Mutex<PoolState<W>>,
    /// The queue's length, for a spinning worker to watch without the lock.
    pending: AtomicUsize,
    /// Idle workers wait on it.
    work: Condvar,
    /// The watchdog waits on it while the queue is empty.
    watch: Condvar,
    max: usize,
    /// How many threads can run at once (the machine's CPUs).
    parallelism: usize,
    /// How long an idle thread watches the queue before it sleeps.
    spin: Duration,
    /// Whether the bound has been logged already.
    warned: AtomicBool,
    epoch: Instant,
    /// Per worker slot: when its current work started (nanoseconds since `epoch`, plus one),
    /// or 0 when it has none.
    started: Box<[AtomicU64]>,
    /// How many pieces of work have been taken from the queue.
    taken: AtomicU64,
}

struct PoolState<W> {
    queue: VecDeque<W>,
    /// Threads started and not yet gone.
    threads: usize,
    /// Threads waiting for work.
    idle: usize,
    /// Whether a thread is spinning for work (at most one at a time).
    spinning: bool,
    /// Worker slots (`Pool::started`) handed out, and those given back.
    slots: usize,
    free_slots: Vec<usize>,
    /// Whether the watchdog thread runs, and whether it waits for the queue to fill.
    watchdog: bool,
    watching: bool,
    stopping: bool,
}

impl<W> Default for PoolState<W> {
    fn default() -> Self {
        PoolState {
            queue: VecDeque::new(),
            threads: 0,
            idle: 0,
            spinning: false,
            slots: 0,
            free_slots: Vec::new(),
            watchdog: false,
            watching: false,
            stopping: false,
        }
    }
}

impl<W: Run> Workers<W> {
    /// A pool of at most `max` threads (at least one), one of which, when idle, watches the
    /// queue for `spin` before it sleeps.
    pub(crate) fn new(max: usize, spin: Duration) -> Workers<W> {
        let max = max.max(1);
        Workers {
            shared: Arc::new(Pool {
                state: Mutex::new(PoolState::default()),
                pending: AtomicUsize::new(0),
                work: Condvar::new(),
                watch: Condvar::new(),
                max,
                parallelism: std::thread::available_parallelism().map_or(1, usize::from),
                spin,
                warned: AtomicBool::new(false),
                epoch: Instant::now(),
                started: (0..max).map(|_| AtomicU64::new(0)).collect(),
                taken: AtomicU64::new(0),
            }),
        }
    }

    /// Runs `work` on a worker thread: the spinning one, or one that has just started other
    /// work and will be back for it, or an idle one, or a new one while there are fewer than
    /// the bound, else the first to become free.
    pub(crate) fn spawn(&self, work: W) {
        let pool = &self.shared;
        let mut state = pool.state.lock();
        state.queue.push_back(work);
        let queued = state.queue.len();
        pool.pending.store(queued, Ordering::Release);
        if queued <= usize::from(state.spinning) {
            // The spinning thread takes it: no wake-up to pay.
            return;
        }
        if pool.fresh(&state) >= pool.parallelism.min(queued) {
            // Enough threads are busy with work that has only just started, most likely short
            // (pipelined calls): they take this next, with no wake-up. Should they be stuck,
            // the watchdog wakes another thread within a tick.
            pool.watch_queue(&mut state);
            return;
        }
        pool.add_taker(state);
    }
}

impl<W: Run> Drop for Workers<W> {
    fn drop(&mut self) {
        // Idle threads and the watchdog leave now; busy ones after their call.
        self.shared.state.lock().stopping = true;
        self.shared.work.notify_all();
        self.shared.watch.notify_all();
    }
}

impl<W: Run> Pool<W> {
    /// How many workers are busy with work started less than [`FRESH`] ago.
    fn fresh(&self, state: &PoolState<W>) -> usize {
        let now = self.now();
        let fresh = FRESH.as_nanos() as u64;
        self.started[..state.slots]
            .iter()
            .map(|started| started.load(Ordering::Relaxed))
            .filter(|&started| started != 0 && now.saturating_sub(started) < fresh)
            .count()
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// Gets one more thread to the queue: an idle one, else a new one below the bound.
    fn add_taker(self: &Arc<Self>, mut state: parking_lot::MutexGuard<'_, PoolState<W>>) {
        if state.idle + usize::from(state.spinning) >= state.queue.len() {
            drop(state);
            self.work.notify_one();
            return;
        }
        if state.threads < self.max {
            state.threads += 1;
            drop(state);
            let shared = self.clone();
            let started = std::thread::Builder::new()
                .name("manager-worker".into())
                .spawn(move || shared.serve());
            if let Err(e) = started {
                // The work stays queued for the threads there are; with none, nothing would
                // ever run it, so it runs here rather than being lost.
                let mut state = self.state.lock();
                state.threads -= 1;
                let none_left = state.threads == 0;
                let work = none_left.then(|| state.queue.pop_front()).flatten();
                drop(state);
                tracing::error!("cannot start a worker thread: {e}");
                if let Some(work) = work {
                    run(work);
                }
            }
            return;
        }
        drop(state);
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "all {} worker threads are busy with plain method calls; further plain calls \
                 wait for a free one (ServerConfig::max_workers); logged once",
                self.max
            );
        }
    }

    /// Makes sure the watchdog looks at the queue (starting it the first time).
    fn watch_queue(self: &Arc<Self>, state: &mut PoolState<W>) {
        if state.watching {
            state.watching = false;
            self.watch.notify_one();
        } else if !state.watchdog {
            state.watchdog = true;
            let shared = self.clone();
            let started = std::thread::Builder::new()
                .name("manager-watchdog".into())
                .spawn(move || shared.watchdog());
            if let Err(e) = started {
                state.watchdog = false;
                tracing::error!("cannot start the worker watchdog: {e}");
            }
        }
    }

    /// While work is queued: if a tick passes with none of it taken, adds a taker.
    fn watchdog(self: Arc<Self>) {
        let mut state = self.state.lock();
        loop {
            if state.stopping {
                return;
            }
            if state.queue.is_empty() {
                state.watching = true;
                self.watch.wait(&mut state);
                state.watching = false;
                continue;
            }
            let seen = self.taken.load(Ordering::Relaxed);
            drop(state);
            std::thread::sleep(TICK);
            state = self.state.lock();
            if !state.queue.is_empty() && self.taken.load(Ordering::Relaxed) == seen {
                self.add_taker(state);
                state = self.state.lock();
            }
        }
    }

    /// Watches the queue for `self.spin`, yielding the CPU to any thread that wants it.
    fn spin(&self) {
        let until = Instant::now() + self.spin;
        let mut turns = 0u32;
        while self.pending.load(Ordering::Acquire) == 0 {
            turns += 1;
            if turns.is_multiple_of(64) {
                if Instant::now() >= until {
                    return;
                }
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    fn serve(self: Arc<Self>) {
        let mut state = self.state.lock();
        let slot = match state.free_slots.pop() {
            Some(slot) => slot,
            None => {
                state.slots += 1;
                state.slots - 1
            }
        };
        // Whether this thread has spun since its last work.
        let mut spun = false;
        loop {
            if let Some(work) = state.queue.pop_front() {
                self.pending.store(state.queue.len(), Ordering::Release);
                self.taken.fetch_add(1, Ordering::Relaxed);
                self.started[slot].store(self.now(), Ordering::Relaxed);
                drop(state);
                run(work);
                self.started[slot].store(0, Ordering::Relaxed);
                spun = false;
                state = self.state.lock();
                continue;
            }
            if state.stopping {
                break;
            }
            if !spun && !state.spinning && !self.spin.is_zero() {
                // Waking a sleeping thread costs more than a small call: one thread watches
                // the queue for a moment before it sleeps, so that calls arriving one after
                // the other (a client waiting for each reply) find it awake.
                spun = true;
                state.spinning = true;
                drop(state);
                self.spin();
                state = self.state.lock();
                state.spinning = false;
                continue;
            }
            state.idle += 1;
            let waited = self.work.wait_for(&mut state, KEEP_ALIVE);
            state.idle -= 1;
            if waited.timed_out() && state.queue.is_empty() {
                break;
            }
        }
        state.free_slots.push(slot);
        state.threads -= 1;
    }
}

/// Runs one piece of work; a panic (the work catches its own, this is a last resort) must not
/// take the thread's bookkeeping with it.
fn run<W: Run>(work: W) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work.run())).is_err() {
        tracing::error!("a worker's work panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn runs_everything_and_never_more_than_the_bound_at_once() {
        let workers = Workers::<Boxed>::new(3, Duration::from_micros(50));
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
        let workers = Workers::<Boxed>::new(4, Duration::ZERO);
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
