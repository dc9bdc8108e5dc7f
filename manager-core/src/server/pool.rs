//! The threads that read native socket connections: a few threads waiting on one `epoll` set,
//! each taking the next connection that has something to read (see `reader`).
//!
//! A connection is registered with `EPOLLONESHOT`: the event that finds it ready disarms it,
//! so exactly one thread reads it until the thread finds nothing more to read (it arms the
//! connection again then) or runs one of its calls (see `inline`). Under load a thread finishing
//! one connection finds the next ready at once, without sleeping: no thread wakes another to
//! run a call, which is what a hand-off to a worker thread cost for each call.
//!
//! The pool has as many threads as the machine has cores (at least two), and more while
//! bodies hold them: every tick while calls run where they were read, the watcher of `quick`
//! looks at the pool ([`Overrun`]), and when each of its threads has been in one body (or one
//! quick call) for a tick, it starts another, so that the other connections are read on.
//! Threads past that number end after a second with nothing to do, and all of them once the
//! server stops and its last connection is gone.
//!
//! A connection whose reading must wait for room (`ServerConfig::max_in_flight`, or replies
//! the client does not read) is not armed meanwhile; a runtime task waits for the room and
//! then hands it back to the pool through its wake-up descriptor ([`Pool::kick`]), which is
//! also how a new connection's first bytes, read before it came here, are read.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use foldhash::HashMap as FastMap;
use parking_lot::Mutex;
use rustix::event::{epoll, eventfd, EventfdFlags, Timespec};
use tokio_util::sync::CancellationToken;

use super::inline::Relay;
use super::quick::Overrun;
use super::reader::SocketInput;
use super::State;

/// The key of the pool's wake-up descriptor in its `epoll` set; connections have keys from 1.
const KICK: u64 = 0;

/// How long a thread waits for something to do before it looks whether it is one too many.
const IDLE_WAIT: Timespec = Timespec {
    tv_sec: 1,
    tv_nsec: 0,
};

/// The most events one thread takes from one wait: one, since a thread that takes several
/// reads them one after the other, and the others wait (disarmed, so no other thread sees
/// them) for as long as a body it runs for one of them takes.
const EVENTS: usize = 1;

/// The pool of a server's socket reader threads (see the module documentation).
pub(super) struct Pool {
    epoll: OwnedFd,
    /// Its wake-up descriptor, and the relays to read that were handed to it.
    kick_fd: OwnedFd,
    kicked: Mutex<VecDeque<Arc<Relay>>>,
    /// The relays of the connections registered, by key.
    relays: Mutex<FastMap<u64, Arc<Relay>>>,
    next_key: AtomicU64,
    threads: Mutex<Threads>,
    /// How many threads the pool keeps while idle.
    base: usize,
    /// Advanced by the watcher's looks at the pool; what busy threads are stamped with.
    ticks: AtomicU64,
    /// The server's stop.
    stop: CancellationToken,
    /// The server's watcher for more to read before sleeping (see `spin`).
    spin: Arc<super::spin::Spin>,
}

#[derive(Default)]
struct Threads {
    /// Each live thread's stamp: 0 while it waits or reads, else the tick (plus one) at which
    /// it entered the body or quick call it runs.
    stamps: Vec<Weak<AtomicU64>>,
}

/// A pool thread's stamp (see [`Threads::stamps`]).
pub(super) struct Busy<'a> {
    stamp: &'a AtomicU64,
    pool: &'a Pool,
}

impl Busy<'_> {
    /// This thread enters a call that may hold it.
    pub(super) fn enter(&self) {
        let now = self.pool.ticks.load(Ordering::Relaxed) + 1;
        self.stamp.store(now, Ordering::Relaxed);
    }

    /// This thread left it.
    pub(super) fn leave(&self) {
        self.stamp.store(0, Ordering::Relaxed);
    }
}

impl Pool {
    /// The pool of `state`'s server, made (with its threads) on first use.
    pub(super) fn of(state: &Arc<State>) -> std::io::Result<Arc<Pool>> {
        let mut pool = state.reader_pool.lock();
        if let Some(pool) = &*pool {
            return Ok(pool.clone());
        }
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let kick_fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(
            &epoll,
            &kick_fd,
            epoll::EventData::new_u64(KICK),
            epoll::EventFlags::IN,
        )?;
        let base = std::thread::available_parallelism()
            .map_or(2, usize::from)
            .max(2);
        let made = Arc::new(Pool {
            epoll,
            kick_fd,
            kicked: Mutex::new(VecDeque::new()),
            relays: Mutex::new(FastMap::default()),
            next_key: AtomicU64::new(KICK + 1),
            threads: Mutex::new(Threads::default()),
            base,
            ticks: AtomicU64::new(0),
            stop: state.stop.clone(),
            spin: state.spin.clone(),
        });
        let weak = Arc::downgrade(&made);
        state.quick.watch(weak);
        *pool = Some(made.clone());
        Ok(made)
    }

    /// Registers a connection's socket (not armed: [`Pool::kick`] it to have it read); its
    /// key.
    pub(super) fn add(
        self: &Arc<Self>,
        input: &SocketInput,
        relay: Arc<Relay>,
    ) -> std::io::Result<u64> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.relays.lock().insert(key, relay);
        // Registered disarmed: the first read is a kick's.
        if let Err(e) = epoll::add(
            &self.epoll,
            input.socket().as_fd(),
            epoll::EventData::new_u64(key),
            epoll::EventFlags::ONESHOT,
        ) {
            self.relays.lock().remove(&key);
            return Err(e.into());
        }
        self.keep_threads()?;
        Ok(key)
    }

    /// Forgets a connection whose reading ended.
    pub(super) fn remove(&self, input: &SocketInput) {
        let _ = epoll::delete(&self.epoll, input.socket().as_fd());
        self.relays.lock().remove(&input.key());
    }

    /// Arms a connection's socket: the next thread to find it ready reads it.
    pub(super) fn arm(&self, input: &SocketInput) {
        let armed = epoll::modify(
            &self.epoll,
            input.socket().as_fd(),
            epoll::EventData::new_u64(input.key()),
            epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ONESHOT,
        );
        if let Err(e) = armed {
            // Not seen again: its serving task's liveness check or close ends it.
            tracing::error!("cannot watch a connection's socket: {e}");
        }
    }

    /// Has a thread of the pool read `relay` now (what it holds already, or what its socket
    /// has).
    pub(super) fn kick(&self, relay: Arc<Relay>) {
        self.kicked.lock().push_back(relay);
        let _ = rustix::io::write(&self.kick_fd, &1u64.to_ne_bytes());
    }

    /// Starts threads up to the base number.
    fn keep_threads(self: &Arc<Self>) -> std::io::Result<()> {
        let mut threads = self.threads.lock();
        threads.stamps.retain(|s| s.strong_count() > 0);
        while threads.stamps.len() < self.base {
            self.start(&mut threads)?;
        }
        Ok(())
    }

    fn start(self: &Arc<Self>, threads: &mut Threads) -> std::io::Result<()> {
        let stamp = Arc::new(AtomicU64::new(0));
        threads.stamps.push(Arc::downgrade(&stamp));
        let pool = self.clone();
        let started = std::thread::Builder::new()
            .name("manager-conn".into())
            .spawn(move || pool.serve(stamp));
        if started.is_err() {
            threads.stamps.pop();
        }
        started.map(drop)
    }

    /// A pool thread: waits for ready connections and reads them, until it is one too many.
    fn serve(self: Arc<Self>, stamp: Arc<AtomicU64>) {
        let busy = Busy {
            stamp: &stamp,
            pool: &self,
        };
        let mut events = Vec::with_capacity(EVENTS);
        let mut worked = false;
        loop {
            events.clear();
            let mut waited = Ok(0);
            if worked {
                waited = self.spin_for_more(&mut events);
            }
            if events.is_empty() && waited.is_ok() {
                waited = epoll::wait(
                    &self.epoll,
                    rustix::buffer::spare_capacity(&mut events),
                    Some(&IDLE_WAIT),
                );
            }
            worked = !events.is_empty();
            match waited {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    tracing::error!("a connection reader thread cannot wait: {e}");
                    break;
                }
            }
            if events.is_empty() && self.retire(&stamp) {
                return;
            }
            for event in &events {
                let key = event.data.u64();
                if key == KICK {
                    // One relay per thread, as one event: the next is another thread's.
                    let mut count = [0u8; 8];
                    let _ = rustix::io::read(&self.kick_fd, &mut count);
                    let (relay, more) = {
                        let mut kicked = self.kicked.lock();
                        (kicked.pop_front(), !kicked.is_empty())
                    };
                    if more {
                        let _ = rustix::io::write(&self.kick_fd, &1u64.to_ne_bytes());
                    }
                    if let Some(relay) = relay {
                        relay.read_ready(&self, &busy);
                    }
                    continue;
                }
                let relay = self.relays.lock().get(&key).cloned();
                if let Some(relay) = relay {
                    relay.read_ready(&self, &busy);
                }
            }
        }
        self.retire_now(&stamp);
    }

    /// A thread that just read looks for the next ready connection before it sleeps, if no
    /// other reader does (see `spin`): a client's next request, coming within microseconds,
    /// then costs no thread wake-up.
    fn spin_for_more(&self, events: &mut Vec<epoll::Event>) -> rustix::io::Result<usize> {
        const NOW: Timespec = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let found = self.spin.watch(|| {
            epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(events),
                Some(&NOW),
            )
            .map(|found| (found > 0).then_some(found))
        });
        found.map(|found| found.unwrap_or(0))
    }

    /// After a wait with nothing to do: whether this thread ends (one too many, or the server
    /// stopped and its connections are gone).
    fn retire(&self, stamp: &Arc<AtomicU64>) -> bool {
        let mut threads = self.threads.lock();
        threads.stamps.retain(|s| s.strong_count() > 0);
        let stopped = self.stop.is_cancelled() && self.relays.lock().is_empty();
        // Those held by calls do not count: the pool keeps its base number free.
        let free = threads
            .stamps
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|s| s.load(Ordering::Relaxed) == 0)
            .count();
        if stopped || free > self.base {
            threads
                .stamps
                .retain(|s| !std::ptr::eq(s.as_ptr(), Arc::as_ptr(stamp)));
            return true;
        }
        false
    }

    fn retire_now(&self, stamp: &Arc<AtomicU64>) {
        self.threads
            .lock()
            .stamps
            .retain(|s| !std::ptr::eq(s.as_ptr(), Arc::as_ptr(stamp)));
    }
}

impl Overrun for Pool {
    /// Starts a thread when every thread has been in one call for a tick.
    fn tick(self: Arc<Self>, _now: Instant) {
        let ticks = self.ticks.fetch_add(1, Ordering::Relaxed) + 1;
        let mut threads = self.threads.lock();
        threads.stamps.retain(|s| s.strong_count() > 0);
        let held = |stamp: &Weak<AtomicU64>| {
            stamp.upgrade().is_some_and(|s| {
                let entered = s.load(Ordering::Relaxed);
                entered != 0 && ticks + 1 - entered >= 2
            })
        };
        if !threads.stamps.is_empty() && threads.stamps.iter().all(held) {
            tracing::debug!(
                "every connection reader thread is held by a call: starting another ({} now)",
                threads.stamps.len() + 1
            );
            if let Err(e) = self.start(&mut threads) {
                tracing::error!("cannot start another connection reader thread: {e}");
            }
        }
    }
}
