//! Plain calls that a connection's reader thread runs itself, where it read them, and the
//! hand-off of the reading to another thread when one of them blocks.
//!
//! A plain call handed to a worker thread costs a thread wake-up: with the client and the
//! reader thread, three parties take turns for each call where two would do, and on a machine
//! with few cores the third wake-up is most of a small call's cost (and its CPU is what 16
//! busy clients lack). So the reader thread of a connection through shared memory (`shm`), or
//! of a plain TCP or Unix socket (`reader`), runs a plain call's body itself when it is the
//! last request it has read (pipelined requests before it go to workers as before, so that
//! they run concurrently), its object's lock taken without waiting, and while fewer bodies run
//! than `ServerConfig::max_workers` (inline bodies count against that bound, see `workers`).
//!
//! A body may block for seconds, and the connection's other callers must not wait for it
//! (issue 10's isolation). Leader and follower: before the body runs, the reader thread leaves
//! its reading state (the frame decoder and what it read) in the connection's [`Relay`] and
//! marks the reading vacant. The watcher of `quick` looks every tick (1 ms) at each relay
//! whose inline call is running. A ring whose call has run for a tick while it holds something
//! (a request waits, or the connection ended) gets a follower: a new thread takes the vacant
//! reading and goes on reading. (While the ring is empty nobody waits for a reader, and the
//! watcher looks again next tick.) A socket whose call has run for a tick is armed again in its
//! reader pool (`pool`), whose next free thread reads it when something comes. When the body
//! ends, its thread takes the reading back if it is still vacant, and otherwise (a follower
//! reads now) ends, or goes back to its pool. Exactly one thread reads a connection at any
//! time: the reading passes from one to the next only through the vacant mark, taken by one
//! compare-and-swap. A method one of whose calls the watcher found asleep (blocked: in a
//! system call, on a lock) past a tick, and which ran for longer than `quick::UNSEEN_BOUND` (a
//! getter that waited a moment for a lock a preempted thread held is not one that blocks),
//! runs on workers from then on; one that was only running, or waiting for a CPU (a busy
//! machine preempts the shortest getter now and then), keeps running inline: should it take
//! long, another thread reads meanwhile, at the cost, for a ring, of a thread started for a
//! call that took longer than a tick.
//!
//! The body runs outside the runtime's context, as on a worker, so that it may call blocking
//! proxies (nesting shared objects).

use std::cell::RefCell;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::connection::{Connection, Ended};
use super::dispatch::{Running, Work};
use super::pool::{Busy, Pool};
use super::quick::{Overrun, TICK, UNSEEN_BOUND};
use super::reader::SocketInput;
use super::workers::InlineSlot;
use super::State;
use crate::error::Error;
use crate::object::Job;
use crate::transport::shm::Side;
use crate::wire;

thread_local! {
    /// Whether the request this thread handles now may run inline, and the call once taken.
    static OFFER: RefCell<Offer> = const { RefCell::new(Offer::Closed) };
    /// This thread's id, for the watcher to look at what it does.
    static TID: i32 = rustix::thread::gettid().as_raw_nonzero().get();
}

enum Offer {
    Closed,
    Open,
    Taken(Taken),
}

/// A plain call taken to run inline, with its place under the bound.
pub(super) struct Taken {
    running: Running,
    job: Job,
    _slot: InlineSlot<Work>,
}

/// Offers to take the plain call that handling the next request on this thread dispatches
/// (the reader calls it before handling the last request it has); [`take`] ends the offer.
pub(super) fn open() {
    OFFER.with(|offer| *offer.borrow_mut() = Offer::Open);
}

/// Ends the offer [`open`] made: the call taken meanwhile, if one was.
pub(super) fn take() -> Option<Taken> {
    OFFER.with(
        |offer| match std::mem::replace(&mut *offer.borrow_mut(), Offer::Closed) {
            Offer::Taken(taken) => Some(taken),
            Offer::Closed | Offer::Open => None,
        },
    )
}

/// Whether a plain call (its object's lock held) is to run inline: this thread offered, the
/// server runs calls where it reads them (`ServerConfig::quick_calls`), the method still runs
/// inline, and the bound leaves room (the place is then its); dispatch
/// then hands it over with [`hand_over`].
pub(super) fn wanted(state: &State, running: &Running) -> Option<InlineSlot<Work>> {
    let open = OFFER.with(|offer| matches!(*offer.borrow(), Offer::Open));
    let (entry, index) = running.method();
    if !open || !state.config.quick_calls || !entry.runs_inline(index) {
        return None;
    }
    state.workers.try_inline()
}

/// Takes the call [`wanted`] wanted, for the reader to run once the request is handled.
pub(super) fn hand_over(running: Running, job: Job, slot: InlineSlot<Work>) {
    OFFER.with(|offer| {
        *offer.borrow_mut() = Offer::Taken(Taken {
            running,
            job,
            _slot: slot,
        })
    });
}

/// Someone reads the connection (or is about to).
const READING: u8 = 0;
/// Nobody reads: the last reader runs an inline call, and the reading is there to take.
const VACANT: u8 = 1;
/// The watcher is starting a follower to read (it becomes [`READING`], or [`VACANT`] again
/// if no thread could be started).
const CLAIMED: u8 = 2;
/// Nobody reads a socket, which waits for the next pool thread to find it ready (see `pool`):
/// it is armed, or will be once there is room to read.
const IDLE: u8 = 3;

/// What a relay's reader reads: a shared-memory ring, or a socket.
#[derive(Clone)]
pub(super) enum Input {
    /// The request ring of a connection through shared memory (`shm`).
    Ring(Arc<Side>),
    /// A plain TCP or Unix socket (`reader`).
    Socket(Arc<SocketInput>),
}

impl Input {
    /// The name of the threads that read it.
    fn thread_name(&self) -> &'static str {
        match self {
            Input::Ring(_) => "manager-shm",
            Input::Socket(_) => "manager-conn",
        }
    }
}

/// The reading of one connection, passed from thread to thread (see the module
/// documentation).
pub(super) struct Relay {
    conn: Arc<Connection>,
    /// What is read, let go of when the reading ends (a body that still runs must not keep
    /// a connection's memory mapped, or its socket open).
    input: Mutex<Option<Input>>,
    runtime: Handle,
    reading: Mutex<Reading>,
    /// [`READING`], [`VACANT`], [`CLAIMED`] (rings) or [`IDLE`] (sockets).
    role: AtomicU8,
    /// When the inline call that left the reading vacant started (nanoseconds since `epoch`,
    /// plus one), or 0.
    since: AtomicU64,
    /// The thread running that call.
    runner: AtomicI32,
    /// The `since` of a call the watcher found asleep past a tick.
    asleep: AtomicU64,
    /// The `since` of the call the watcher last looked at, and on which of its ticks: it looks
    /// again once the call has run twice as many (written by the watcher alone).
    looked: (AtomicU64, AtomicU64),
    epoch: Instant,
    /// How the connection's reading ended, sent by the thread that was reading then.
    done: Mutex<Option<oneshot::Sender<Result<Ended, Error>>>>,
}

impl Relay {
    /// The relay of `conn`'s connection through `input`, `first` read from it already; its
    /// end goes to `done`. The watcher looks after it from now on.
    pub(super) fn new(
        conn: Arc<Connection>,
        input: Input,
        first: Vec<u8>,
        runtime: Handle,
        done: oneshot::Sender<Result<Ended, Error>>,
    ) -> Arc<Relay> {
        // A socket's first reader is the pool thread it is handed to.
        let role = match &input {
            Input::Ring(_) => READING,
            Input::Socket(_) => IDLE,
        };
        let relay = Arc::new(Relay {
            reading: Mutex::new(Reading::new(&conn, &first)),
            conn,
            input: Mutex::new(Some(input)),
            runtime,
            role: AtomicU8::new(role),
            since: AtomicU64::new(0),
            runner: AtomicI32::new(0),
            asleep: AtomicU64::new(0),
            looked: (AtomicU64::new(0), AtomicU64::new(0)),
            epoch: Instant::now(),
            done: Mutex::new(Some(done)),
        });
        let weak = Arc::downgrade(&relay);
        relay.conn.state.quick.watch(weak);
        relay
    }

    /// Starts a thread that reads the connection (its first reader, or a follower for a
    /// claimed reading).
    pub(super) fn start(self: Arc<Self>) -> std::io::Result<()> {
        let name = match &*self.input.lock() {
            Some(input) => input.thread_name(),
            None => return Ok(()),
        };
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // A follower's, from the watcher's claim; before it reads, since it may leave
                // the reading vacant in its turn.
                let _ = self.role.compare_exchange(
                    CLAIMED,
                    READING,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                );
                self.read()
            })
            .map(drop)
    }

    /// This thread is the reader of a ring: reads and handles requests until the connection
    /// ends, or until an inline call it ran outlasted a tick and a follower read meanwhile.
    /// (Sockets are read by the threads of their pool instead, [`Relay::read_ready`].)
    fn read(self: Arc<Self>) {
        loop {
            let Some(Input::Ring(side)) = self.input.lock().clone() else {
                // The reading ended while this thread ran a call.
                return;
            };
            let step = {
                // Calls that wait for a lock, and `async` ones, become tasks of the runtime.
                let _runtime = self.runtime.enter();
                let mut reading = self.reading.lock();
                self.conn.read_ring(&side, &mut reading)
            };
            drop(side);
            match step {
                Ok(Step::Inline(taken)) => {
                    if !self.run(taken) {
                        return;
                    }
                }
                // Not a ring's: its reader waits in the ring instead.
                Ok(Step::Drained | Step::Full) => {}
                Ok(Step::Ended(ended)) => return self.end(Ok(ended)),
                Err(e) => return self.end(Err(e)),
            }
        }
    }

    /// The runtime its calls' tasks run on.
    pub(super) fn runtime(&self) -> &Handle {
        &self.runtime
    }

    /// A pool thread found this relay's socket ready, or was handed it (see `pool`): it reads
    /// and handles requests until the socket has nothing more for now (armed again), the
    /// connection ends, or it ran an inline call that outlasted a tick while a request waited
    /// (the socket was armed again meanwhile, for another thread to read).
    pub(super) fn read_ready(self: &Arc<Self>, pool: &Pool, busy: &Busy<'_>) {
        if self
            .role
            .compare_exchange(IDLE, READING, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            // Read already (an event for a reading that has ended).
            return;
        }
        loop {
            let Some(Input::Socket(socket)) = self.input.lock().clone() else {
                return;
            };
            let step = {
                // Calls that wait for a lock, and `async` ones, become tasks of the runtime;
                // an inline body runs outside it, as on a worker (it may call blocking
                // proxies).
                let _runtime = self.runtime.enter();
                let mut reading = self.reading.lock();
                self.conn.read_socket(&socket, &mut reading, busy)
            };
            match step {
                Ok(Step::Inline(taken)) => {
                    busy.enter();
                    let reader = self.run(taken);
                    busy.leave();
                    if !reader {
                        return;
                    }
                }
                Ok(Step::Drained) => {
                    self.role.store(IDLE, Ordering::SeqCst);
                    pool.arm(&socket);
                    return;
                }
                Ok(Step::Full) => {
                    self.role.store(IDLE, Ordering::SeqCst);
                    socket.read_when_there_is_room(&self.conn, self.clone());
                    return;
                }
                Ok(Step::Ended(ended)) => {
                    pool.remove(&socket);
                    return self.end(Ok(ended));
                }
                Err(e) => {
                    pool.remove(&socket);
                    return self.end(Err(e));
                }
            }
        }
    }

    fn end(&self, ended: Result<Ended, Error>) {
        drop(self.input.lock().take());
        if let Some(done) = self.done.lock().take() {
            let _ = done.send(ended);
        }
    }

    /// Runs a call inline, the reading left vacant meanwhile; whether this thread is the
    /// reader again after it.
    fn run(&self, taken: Taken) -> bool {
        let Taken {
            running,
            job,
            _slot,
        } = taken;
        let (entry, index) = running.method();
        let entry = entry.clone();
        let quick = &self.conn.state.quick;
        let stamp = self.epoch.elapsed().as_nanos() as u64 + 1;
        self.runner.store(TID.with(|tid| *tid), Ordering::SeqCst);
        self.role.store(VACANT, Ordering::SeqCst);
        self.since.store(stamp, Ordering::SeqCst);
        quick.inline_started();
        let started = Instant::now();
        self.conn.clone().run_call(running, job);
        let took = started.elapsed();
        // Only this call's mark: a follower's own inline call may have replaced it.
        let _ = self
            .since
            .compare_exchange(stamp, 0, Ordering::SeqCst, Ordering::Relaxed);
        quick.inline_finished();
        drop(_slot);
        // Found asleep, and long: a getter that waited a moment for a lock its preempted
        // holder kept (a busy machine) is no blocking method.
        let blocked = self.asleep.load(Ordering::SeqCst) == stamp;
        if took > UNSEEN_BOUND && blocked && entry.stop_inline(index) {
            let method = entry.methods[index].name;
            tracing::debug!(
                typeid = &*entry.typeid,
                method,
                "{method} blocked for {took:.1?}: its calls run on worker threads from now on"
            );
        }
        loop {
            match self
                .role
                .compare_exchange(VACANT, READING, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return true,
                // A follower is being started: wait to see whether it was.
                Err(CLAIMED) => std::thread::yield_now(),
                Err(_) => return false,
            }
        }
    }
}

impl Overrun for Relay {
    fn tick(self: Arc<Self>, now: Instant) {
        let since = self.since.load(Ordering::SeqCst);
        if since == 0 {
            return;
        }
        let now = now.saturating_duration_since(self.epoch).as_nanos() as u64 + 1;
        if now.saturating_sub(since) < TICK.as_nanos() as u64 {
            return;
        }
        // Whether the call's thread sleeps, looked at on its 1st, 2nd, 4th, 8th ... tick (a
        // read of /proc each time: with many long calls, every tick would be a core's work),
        // or the first tick after it, when the watcher was late (on a busy machine it often
        // is: a look due on the exact tick was seen missed for a whole 3 s call).
        let ticks = now.saturating_sub(since) / TICK.as_nanos() as u64;
        if self.looked.0.swap(since, Ordering::Relaxed) != since {
            self.looked.1.store(0, Ordering::Relaxed);
        }
        let due = ticks >= (2 * self.looked.1.load(Ordering::Relaxed)).max(1);
        if due {
            self.looked.1.store(ticks, Ordering::Relaxed);
        }
        if due
            && self.asleep.load(Ordering::SeqCst) != since
            && asleep(self.runner.load(Ordering::SeqCst))
            && self.since.load(Ordering::SeqCst) == since
        {
            self.asleep.store(since, Ordering::SeqCst);
        }
        if self.role.load(Ordering::SeqCst) != VACANT {
            // Someone reads already.
            return;
        }
        let Some(input) = self.input.lock().clone() else {
            return;
        };
        let side = match &input {
            Input::Socket(socket) => {
                // Any thread of the pool may read it from now on: it is armed again (the
                // kernel tells when a request comes, with no look here every tick), and the
                // call's thread goes back to the pool when the call ends.
                if self
                    .role
                    .compare_exchange(VACANT, IDLE, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
                {
                    socket.pool().arm(socket);
                }
                return;
            }
            Input::Ring(side) => side,
        };
        if matches!(side.inbound.ready(), Ok(false)) {
            // Nobody waits for the reader yet: look again next tick (a follower for every
            // call past a tick would be a thread started for each large value).
            return;
        }
        if self
            .role
            .compare_exchange(VACANT, CLAIMED, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            // Someone reads already.
            return;
        }
        let relay = self.clone();
        if let Err(e) = relay.start() {
            // The reading stays vacant: the call's thread takes it back when it ends.
            tracing::error!("cannot start a reader thread for a blocked connection: {e}");
            self.role.store(VACANT, Ordering::SeqCst);
        }
    }
}

/// Whether thread `tid` of this process sleeps (in a system call, on a lock), as opposed to
/// running or waiting for a CPU.
fn asleep(tid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return false;
    };
    // The state follows the name, which is in parentheses and may hold anything.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    matches!(state, Some('S' | 'D'))
}

/// What a connection's reader keeps between requests, handed from one reader thread to the
/// next.
pub(super) struct Reading {
    pub(super) decoder: wire::FrameDecoder,
    /// What was read and not yet decoded.
    pub(super) inbox: BytesMut,
    pub(super) last_heard: Instant,
    /// How many requests of the connection were handled.
    pub(super) received: u64,
}

impl Reading {
    /// The reading of `conn` from the requests it handled so far on, with `first` (bytes read
    /// already) ahead of what comes next.
    pub(super) fn new(conn: &Connection, first: &[u8]) -> Reading {
        Reading {
            decoder: wire::frame_codec(conn.state.config.max_frame),
            inbox: BytesMut::from(first),
            last_heard: Instant::now(),
            received: conn.received.load(Ordering::Relaxed),
        }
    }
}

/// Why a reader stopped reading.
pub(super) enum Step {
    /// To run a plain call inline.
    Inline(Taken),
    /// A socket has nothing more to read now.
    Drained,
    /// A socket's reading waits for room (`ServerConfig::max_in_flight`, or replies the client
    /// does not read).
    Full,
    /// The connection ended.
    Ended(Ended),
}
