//! Quick calls: plain methods that their type declares never block
//! (`#[shared(quick = [...])]`) run where the server read the request, with no hand-off.
//!
//! Handing a body to a worker thread costs a thread wake-up, which is most of the cost of a
//! small call. A method that only reads or updates its object (a getter, a counter, a
//! container's `len` or `append`) gains nothing from a thread of its own, so its type may list
//! it as quick: its body then runs in the connection's read loop, on one of the runtime's
//! threads, as the part of an `async` method before its first wait does. The object's lock is
//! taken without waiting (a quick call whose object's lock is held by another call waits for
//! it in a task and then runs on a worker, as any plain call does).
//!
//! A wrong declaration must not stop the server, so a watcher guards the quick calls. While
//! one runs, tokio's I/O driver may go unpolled: the runtime's other threads may all be asleep,
//! waiting to be told of work that only the driver would find. A quick call that has run for
//! a [`TICK`] is taken for one that blocks: the watcher wakes the runtime (a no-op task sent
//! from outside it), so another thread takes over the driver and the other connections are
//! served again within about a tick. When the call ends, its method is demoted: logged once,
//! and run on worker threads from then on. Until then, the connection that made the call is
//! not read (its read loop runs the call).
//!
//! The same watcher looks after the plain calls that shared-memory reader threads run where
//! they read them (`server::inline`): while any runs, it looks at each such connection every
//! tick ([`Overrun`]), and a connection whose call has run for a tick gets another thread to
//! read it.
//!
//! On a busy machine a call that never blocks can take longer than a tick too, waiting for the
//! CPU that other threads hold. So the clock alone does not demote a method: when the watcher
//! finds a call running for a whole tick, it notes that thread's run time and run-queue wait
//! (Linux's `schedstat`), and when the call ends, its thread compares them with its own: a
//! call that slept (blocked) or ran for a tick of its own time is demoted, one that only
//! waited for the CPU is not ([`held_its_thread`]). A call the watcher did not catch is judged
//! by the clock, with a bound ([`UNSEEN_BOUND`]) longer than any wait for the CPU.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::object::{Job, Outcome};
use crate::registry::Entry;

/// A quick call that runs longer than this blocks: the runtime is woken, and its method is
/// demoted when it ends.
pub(super) const TICK: Duration = Duration::from_millis(1);

/// A quick call the watcher did not catch running (it ran for less than about two ticks, or
/// the watcher itself waited for the CPU) is taken for one that blocks past this.
pub(super) const UNSEEN_BOUND: Duration = Duration::from_millis(20);

/// The watcher sleeps once no quick call has started for this many ticks.
const IDLE_TICKS: u32 = 200;

/// The server's quick calls and their watcher (see the module documentation).
#[derive(Debug)]
pub(super) struct Quick {
    enabled: bool,
    shared: Arc<Watched>,
}

#[derive(Debug)]
struct Watched {
    /// Quick calls started and finished (so, running: the difference).
    started: AtomicU64,
    finished: AtomicU64,
    /// Whether the watcher sleeps (and must be woken by the next quick call).
    asleep: AtomicBool,
    /// Whether the watcher thread has been started, and the server is stopping.
    state: Mutex<WatcherState>,
    wake: Condvar,
    /// The runtime to wake when a quick call blocks.
    runtime: Option<tokio::runtime::Handle>,
    /// Inline calls (`server::inline`) started and finished.
    inline_started: AtomicU64,
    inline_finished: AtomicU64,
    /// What runs inline calls, looked at every tick while one runs.
    overruns: Mutex<Vec<Weak<dyn Overrun>>>,
    /// The thread of the quick call that started last (its Linux thread id; 0 unknown).
    thread: AtomicI32,
    /// What the watcher saw of a call's thread when it found the call running for a tick.
    seen: Mutex<Option<Seen>>,
}

/// A quick call's thread as the watcher saw it, once the call had run for a tick.
#[derive(Debug, Clone, Copy)]
struct Seen {
    thread: i32,
    at: Instant,
    times: ThreadTimes,
}

/// A thread's time on the CPU and waiting for it, so far.
#[derive(Debug, Clone, Copy)]
struct ThreadTimes {
    run_ns: u64,
    wait_ns: u64,
}

/// Something that runs calls inline where it reads them (a shared-memory connection's
/// reader), looked at by the watcher every tick while inline calls run.
pub(super) trait Overrun: Send + Sync {
    /// Called every tick while inline calls run: a call of this one's running since before
    /// `now - TICK` is taken to block.
    fn tick(self: Arc<Self>, now: Instant);
}

#[derive(Debug, Default)]
struct WatcherState {
    started: bool,
    stopping: bool,
}

impl Quick {
    /// Quick calls for a server on the current runtime; `enabled` false runs every plain
    /// method on a worker thread (`ServerConfig::quick_calls`).
    pub(super) fn new(enabled: bool) -> Quick {
        Quick {
            enabled,
            shared: Arc::new(Watched {
                started: AtomicU64::new(0),
                finished: AtomicU64::new(0),
                asleep: AtomicBool::new(true),
                state: Mutex::new(WatcherState::default()),
                wake: Condvar::new(),
                runtime: tokio::runtime::Handle::try_current().ok(),
                inline_started: AtomicU64::new(0),
                inline_finished: AtomicU64::new(0),
                overruns: Mutex::new(Vec::new()),
                thread: AtomicI32::new(0),
                seen: Mutex::new(None),
            }),
        }
    }

    /// Whether a call of method `index` of `entry` runs quick.
    pub(super) fn admit(&self, entry: &Entry, index: usize) -> Option<Admitted<'_>> {
        (self.enabled && entry.is_quick(index)).then_some(Admitted(&self.shared))
    }

    /// Has the watcher look at `runner` every tick while inline calls run, for as long as it
    /// lives.
    pub(super) fn watch(&self, runner: Weak<dyn Overrun>) {
        let mut overruns = self.shared.overruns.lock();
        overruns.retain(|o| o.strong_count() > 0);
        overruns.push(runner);
    }

    /// An inline call starts: the watcher wakes if it sleeps.
    pub(super) fn inline_started(&self) {
        let watched = &self.shared;
        // SeqCst: as for quick calls (see `Admitted::run`).
        watched.inline_started.fetch_add(1, Ordering::SeqCst);
        if watched.asleep.load(Ordering::SeqCst) {
            watched.wake_watcher();
        }
    }

    /// An inline call has ended.
    pub(super) fn inline_finished(&self) {
        self.shared.inline_finished.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Quick {
    fn drop(&mut self) {
        self.shared.state.lock().stopping = true;
        self.shared.wake.notify_all();
    }
}

/// A call that runs quick.
pub(super) struct Admitted<'a>(&'a Arc<Watched>);

impl Admitted<'_> {
    /// Runs the body here; a body that turns out to block demotes its method.
    pub(super) fn run(self, entry: &Entry, index: usize, job: Job) -> std::thread::Result<Outcome> {
        let watched = self.0;
        // SeqCst here and where the watcher goes to sleep: each side writes one and then reads
        // the other, so at least one of them sees the other's write.
        watched.started.fetch_add(1, Ordering::SeqCst);
        watched.thread.store(this_thread(), Ordering::Relaxed);
        if watched.asleep.load(Ordering::SeqCst) {
            watched.wake_watcher();
        }
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        let took = started.elapsed();
        watched.finished.fetch_add(1, Ordering::Relaxed);
        if took > TICK && held_its_thread(watched, started, took) && entry.demote(index) {
            let method = entry.methods[index].name;
            tracing::warn!(
                typeid = &*entry.typeid,
                method,
                "{method} of {:?} is declared quick but ran for {took:.1?}, holding up its \
                 connection meanwhile; it runs on worker threads from now on (remove it from \
                 `#[shared(quick = [...])]`)",
                &*entry.typeid,
            );
        }
        outcome
    }
}

impl Watched {
    /// Notes the run time and run-queue wait of the thread of the call found running for a
    /// tick, for [`held_its_thread`] to compare when the call ends.
    fn note_stuck_thread(&self) {
        let thread = self.thread.load(Ordering::Relaxed);
        let seen = (thread != 0)
            .then(|| thread_times(&format!("/proc/self/task/{thread}/schedstat")))
            .flatten()
            .map(|times| Seen {
                thread,
                at: Instant::now(),
                times,
            });
        *self.seen.lock() = seen;
    }

    /// Wakes the watcher, starting its thread the first time.
    fn wake_watcher(self: &Arc<Self>) {
        let mut state = self.state.lock();
        if !self.asleep.swap(false, Ordering::Relaxed) {
            return;
        }
        if state.started {
            drop(state);
            self.wake.notify_one();
            return;
        }
        state.started = true;
        drop(state);
        let watched = self.clone();
        let spawned = std::thread::Builder::new()
            .name("manager-quick-watch".into())
            .spawn(move || watched.watch());
        if let Err(e) = spawned {
            tracing::error!("cannot start the watcher of quick calls: {e}");
        }
    }

    /// Every tick while quick calls happen: a call that has been running for a whole tick
    /// wakes the runtime, once per such call.
    fn watch(self: Arc<Self>) {
        let mut idle = 0u32;
        let mut last_started = self.started.load(Ordering::Relaxed);
        let mut last_finished = self.finished.load(Ordering::Relaxed);
        let mut woken_at = None;
        let mut last_inline = self.inline_started.load(Ordering::Relaxed);
        loop {
            std::thread::sleep(TICK);
            let inline = self.inline_started.load(Ordering::Relaxed);
            let started = self.started.load(Ordering::Relaxed);
            let finished = self.finished.load(Ordering::Relaxed);
            // While a quick call runs too: one that blocks holds a reader pool's thread, and
            // the pool starts another when all of its threads are held (`pool`).
            if inline != self.inline_finished.load(Ordering::Relaxed) || started != finished {
                self.look_at_inline_calls();
            }
            // Running a tick ago and none finished since: a call has run for a tick at least.
            let stuck = last_started > last_finished && finished == last_finished;
            if stuck && woken_at != Some(finished) {
                woken_at = Some(finished);
                self.note_stuck_thread();
                if let Some(runtime) = &self.runtime {
                    // From outside the runtime, a task goes to its shared queue and wakes a
                    // sleeping thread, which then polls the I/O driver.
                    drop(runtime.spawn(async {}));
                }
            }
            let quiet =
                inline == last_inline && inline == self.inline_finished.load(Ordering::Relaxed);
            idle = if started == last_started && started == finished && quiet {
                idle + 1
            } else {
                0
            };
            (last_started, last_finished, last_inline) = (started, finished, inline);
            if idle >= IDLE_TICKS {
                let mut state = self.state.lock();
                if state.stopping {
                    return;
                }
                self.asleep.store(true, Ordering::SeqCst);
                // A call that started after the last look finds `asleep` true and wakes us,
                // or started before we set it and shows in the counters.
                if self.started.load(Ordering::SeqCst) == started
                    && self.inline_started.load(Ordering::SeqCst) == inline
                {
                    self.wake.wait(&mut state);
                }
                self.asleep.store(false, Ordering::Relaxed);
                if state.stopping {
                    return;
                }
                idle = 0;
                last_started = self.started.load(Ordering::Relaxed);
                last_finished = self.finished.load(Ordering::Relaxed);
                last_inline = self.inline_started.load(Ordering::Relaxed);
            }
        }
    }

    /// One tick's look at every runner of inline calls.
    fn look_at_inline_calls(&self) {
        let now = Instant::now();
        let runners: Vec<Arc<dyn Overrun>> = {
            let mut overruns = self.overruns.lock();
            overruns.retain(|o| o.strong_count() > 0);
            overruns.iter().filter_map(Weak::upgrade).collect()
        };
        for runner in runners {
            runner.tick(now);
        }
    }
}

/// Whether a quick call that started at `started` and ran for `took` (more than a tick) held
/// its thread, by blocking or by computing, rather than waiting for the CPU (see the module
/// documentation): judged on the thread's own times since the watcher saw it running, when it
/// did; else by the clock, against [`UNSEEN_BOUND`].
fn held_its_thread(watched: &Watched, started: Instant, took: Duration) -> bool {
    let thread = this_thread();
    let seen = {
        let mut seen = watched.seen.lock();
        match *seen {
            Some(s) if s.thread == thread && s.at >= started => seen.take(),
            _ => None,
        }
    };
    let Some(seen) = seen else {
        return took > UNSEEN_BOUND;
    };
    let Some(now) = thread_times("/proc/thread-self/schedstat") else {
        return took > UNSEEN_BOUND;
    };
    let wall = seen.at.elapsed();
    let ran = Duration::from_nanos(now.run_ns.saturating_sub(seen.times.run_ns));
    let waited = Duration::from_nanos(now.wait_ns.saturating_sub(seen.times.wait_ns));
    // Neither on the CPU nor waiting for it: asleep, so blocked.
    let asleep = wall.saturating_sub(ran + waited);
    ran >= TICK || asleep >= TICK / 2
}

/// This thread's id, as Linux's `/proc` names it (0 elsewhere); asked once per thread.
fn this_thread() -> i32 {
    #[cfg(target_os = "linux")]
    {
        thread_local! {
            static ID: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
        }
        ID.with(|id| {
            if id.get() == 0 {
                id.set(rustix::thread::gettid().as_raw_nonzero().get());
            }
            id.get()
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// A thread's run time and run-queue wait from its `schedstat` file at `path` (Linux).
fn thread_times(path: &str) -> Option<ThreadTimes> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some(ThreadTimes {
        run_ns: fields.next()??,
        wait_ns: fields.next()??,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread that sleeps held it (it blocked); one that only waited for the CPU did not.
    #[test]
    fn a_sleeping_thread_held_its_thread() {
        let Some(times) = thread_times("/proc/thread-self/schedstat") else {
            return; // No schedstat here: the clock judges.
        };
        let quick = Quick::new(true);
        let watched = &quick.shared;
        let started = Instant::now();
        *watched.seen.lock() = Some(Seen {
            thread: this_thread(),
            at: Instant::now(),
            times,
        });
        std::thread::sleep(TICK * 3);
        assert!(held_its_thread(watched, started, TICK * 3));
        // Nothing seen of this call (the watcher did not catch it): the clock, with its bound.
        assert!(!held_its_thread(watched, Instant::now(), TICK * 2));
        assert!(held_its_thread(watched, Instant::now(), UNSEEN_BOUND * 2));
        // Seen, and then neither asleep nor running long: it waited for the CPU at most.
        let started = Instant::now();
        let times = thread_times("/proc/thread-self/schedstat").unwrap();
        *watched.seen.lock() = Some(Seen {
            thread: this_thread(),
            at: Instant::now(),
            times,
        });
        assert!(!held_its_thread(watched, started, TICK * 2));
    }
}
