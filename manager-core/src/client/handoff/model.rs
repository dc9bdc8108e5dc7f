//! The model check of the hand-off: [`Handoff`]'s own code, run on loom's atomic and cell,
//! with a simulated socket, runtime and server, every interleaving of two callers, the
//! reader task and the server explored (within a preemption bound).
//!
//! The world the code runs in is modelled as the kernel and tokio have it:
//!
//! - the socket's receive queue: bytes the server wrote and nobody read yet; `poll` waits
//!   until it has some, `recv` takes what there is (up to the room given) or `WouldBlock`;
//! - the runtime's readiness for the reader task, set by the I/O driver some time after data
//!   arrived (a separate step, so that anything may happen in between), with a tick per
//!   event; `try_io` runs its closure only when it is set and, on `WouldBlock`, clears it
//!   only if no event came since (tokio's `try_io`);
//! - the reader task's wait (`select!` on readiness and the wake-up, biased to readiness) and
//!   tokio `Notify`'s permit: a wake-up with nobody waiting is kept for the next wait;
//! - the server, which answers each request once it was sent, in the order it got them,
//!   whole or in two pieces (a reply may be read half now, half later), and in some checks
//!   one more frame that nobody waits for (a reply to an abandoned call), which only the
//!   reader task can read once both callers are done.
//!
//! What must hold: every caller gets its own reply, and every frame the server wrote is read
//! and delivered (the main thread waits for that): if a frame is left in the socket with the
//! reader task asleep and every caller parked, every thread waits for good, which loom
//! reports as a deadlock. Loom also checks that the inbox is never touched by two holders
//! without ordering between them (its `UnsafeCell`), under the C11 memory model for the word.
//!
//! The checks differ in their callers (two blocking, or a blocking and an async one), whether
//! replies come in pieces and an orphan frame follows, and their preemption bound (2, or 1
//! for the largest world: each one more multiplies the time). `LOOM_MAX_PREEMPTIONS` sets
//! another bound for all of them. Run by `.ci/run` in its own step (`cargo test -p
//! manager-core --lib client::handoff::model -- --ignored`): the default `cargo test`
//! skips them, as they take minutes.

use std::collections::VecDeque;
use std::io;
use std::time::Instant;

use bytes::BytesMut;
use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
use loom::thread;

use super::{Handoff, Inbox, Prims, Readiness, Socket, Turn, Waited, Wake};

/// The model's primitives: loom's atomic and cell, and a wake-up that is part of the world.
struct Loom;

impl Prims for Loom {
    type Word = loom::sync::atomic::AtomicU8;
    type Inbox = LoomInbox;
    type Wake = WakeReader;
}

/// The reader task as it was before commit 0f89e25: holding the socket, it read only through
/// the runtime's readiness (tokio's `read_buf`, which returns `Pending` without a system call
/// when the socket is not marked readable). The model must find the lost wake-up.
struct Before0f89e25;

impl Prims for Before0f89e25 {
    type Word = loom::sync::atomic::AtomicU8;
    type Inbox = LoomInbox;
    type Wake = WakeReader;
    const READ_WHEN_NOT_READY: bool = false;
}

struct LoomInbox(loom::cell::UnsafeCell<BytesMut>);

impl Inbox for LoomInbox {
    fn new(bytes: BytesMut) -> Self {
        LoomInbox(loom::cell::UnsafeCell::new(bytes))
    }
    unsafe fn with_mut<R>(&self, f: impl FnOnce(&mut BytesMut) -> R) -> R {
        // SAFETY: as `Inbox::with_mut` requires (and loom checks that the accesses are ordered).
        self.0.with_mut(|bytes| f(unsafe { &mut *bytes }))
    }
}

/// The frame nobody waits for.
const ORPHAN: u8 = 9;

/// A part of the world that threads wait on: its state, and who waits for it to change.
/// Separate parts, so that the model check takes threads that touch different parts for
/// independent (and explores fewer interleavings for nothing).
struct Place<T> {
    state: Mutex<T>,
    changed: Condvar,
}

impl<T: Default> Place<T> {
    fn new() -> Self {
        Place {
            state: Mutex::new(T::default()),
            changed: Condvar::new(),
        }
    }
}

impl<T> Place<T> {
    fn lock(&self) -> MutexGuard<'_, T> {
        self.state.lock().unwrap()
    }

    /// Changes the state, and tells whoever waits.
    fn change<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let r = f(&mut self.lock());
        self.changed.notify_all();
        r
    }

    /// Waits until `f` says what it waits for is there.
    fn wait_for<R>(&self, mut f: impl FnMut(&mut T) -> Option<R>) -> R {
        let mut state = self.lock();
        loop {
            if let Some(r) = f(&mut state) {
                return r;
            }
            state = self.changed.wait(state).unwrap();
        }
    }
}

/// The runtime's side of the socket, for the reader task.
#[derive(Default)]
struct Runtime {
    /// The socket's readiness, as the I/O driver marked it, and its event count.
    ready: bool,
    tick: u64,
    /// A wake-up of the reader task that no wait has taken yet.
    permit: bool,
    /// Tells the reader task to end, once everything was delivered.
    stop: bool,
}

/// What was delivered.
#[derive(Default)]
struct Replies {
    /// Replies delivered and not taken yet, by caller.
    mine: [Option<u8>; 2],
    /// Frames delivered, replies and the orphan.
    frames: usize,
}

/// Everything outside the hand-off: the kernel's socket, the runtime, the server.
struct Env {
    /// The socket's receive queue, as the kernel has it.
    socket: Place<VecDeque<u8>>,
    runtime: Place<Runtime>,
    /// Requests sent and not answered yet, by caller.
    requests: Place<VecDeque<u8>>,
    replies: Place<Replies>,
}

/// The socket and its readiness, as the callers and the reader task see them.
#[derive(Clone)]
struct Sim(Arc<Env>);

impl Socket for Sim {
    fn poll(&self, deadline: Option<Instant>) -> io::Result<bool> {
        assert!(deadline.is_none(), "the model has no deadlines");
        self.0
            .socket
            .wait_for(|bytes| (!bytes.is_empty()).then_some(true));
        Ok(true)
    }

    fn recv(&self, inbox: &mut BytesMut) -> io::Result<usize> {
        let mut bytes = self.0.socket.lock();
        if bytes.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = bytes.len().min(inbox.capacity() - inbox.len());
        inbox.extend(bytes.drain(..n));
        Ok(n)
    }

    fn readable_now(&self) -> io::Result<bool> {
        Ok(!self.0.socket.lock().is_empty())
    }
}

impl Readiness for Sim {
    fn try_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        let tick = {
            let runtime = self.0.runtime.lock();
            if !runtime.ready {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            runtime.tick
        };
        let result = f();
        if matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            let mut runtime = self.0.runtime.lock();
            if runtime.tick == tick {
                runtime.ready = false;
            }
        }
        result
    }
}

/// Tokio's `Notify::notify_one`: a permit for the reader task's next wait.
struct WakeReader(Arc<Env>);

impl Wake for WakeReader {
    fn wake(&self) {
        self.0.runtime.change(|r| r.permit = true);
    }
}

/// Hands a frame to whoever waits for it (`deliver` in `client.rs`).
fn deliver(env: &Env, frame: BytesMut) -> Result<(), String> {
    let (who, value) = (frame[0], frame[1]);
    env.replies.change(|r| {
        if let Some(slot) = r.mine.get_mut(who as usize) {
            assert!(slot.replace(value).is_none(), "a reply delivered twice");
        }
        r.frames += 1;
    });
    Ok(())
}

/// The value of `who`'s reply.
fn answer(who: u8) -> u8 {
    100 + who
}

/// A frame as the wire has it: a 4-byte length, then who it is for and a value.
fn frame(who: u8) -> [u8; 6] {
    [0, 0, 0, 2, who, answer(who)]
}

/// How a caller waits for its reply.
#[derive(Clone, Copy, Debug)]
enum Caller {
    /// A blocked thread (`request_blocking_with`): reads the socket itself when it can.
    Blocking,
    /// An async call: waits for the reader task to deliver its reply.
    Async,
}

/// One caller: sends its request, waits for its reply, returns it.
fn call<P: Prims>(env: &Arc<Env>, handoff: &Handoff<P>, who: u8, kind: Caller) -> u8 {
    env.requests.change(|r| r.push_back(who));
    let mine = |r: &mut Replies| r.mine[who as usize].take();
    if let Caller::Blocking = kind {
        let waited = handoff.read_until(
            &Sim(env.clone()),
            || mine(&mut env.replies.lock()),
            None,
            |frame| deliver(env, frame),
            |reason| panic!("the connection failed: {reason}"),
        );
        match waited {
            Waited::Done(value) => return value,
            Waited::TimedOut => unreachable!("no deadline"),
            Waited::Busy => {}
        }
    }
    env.replies.wait_for(mine)
}

/// The reader task: waits for readiness or a wake-up, then takes its turn.
fn reader_task<P: Prims>(env: &Arc<Env>, handoff: &Handoff<P>) {
    let sim = Sim(env.clone());
    loop {
        let go = env.runtime.wait_for(|r| {
            if r.stop {
                Some(false)
            } else if r.ready {
                Some(true)
            } else if r.permit {
                r.permit = false;
                Some(true)
            } else {
                None
            }
        });
        if !go {
            return;
        }
        let turn = handoff.reader_turn(&sim, &sim, |frame| deliver(env, frame));
        if let Turn::Ended(reason) = turn {
            panic!("the connection ended: {reason}");
        }
    }
}

/// The server: answers each request once it came (in two pieces each if `split`), then sends
/// the orphan if `orphan`.
fn serve(env: &Env, requests: usize, split: bool, orphan: bool) {
    let write = |bytes: &[u8]| {
        // The kernel queues the bytes (a polling caller wakes up)...
        env.socket.change(|s| s.extend(bytes.iter().copied()));
        // ...and, later, the runtime's I/O driver marks the socket readable.
        env.runtime.change(|r| {
            r.ready = true;
            r.tick += 1;
        });
    };
    for _ in 0..requests {
        let who = env.requests.wait_for(|r| r.pop_front());
        let frame = frame(who);
        if split {
            write(&frame[..3]);
            write(&frame[3..]);
        } else {
            write(&frame);
        }
    }
    if orphan {
        write(&frame(ORPHAN));
    }
}

/// Checks the hand-off with callers of `kinds`, the reader task and the server (`split` and
/// `orphan` as [`serve`] has them), with at most `preemptions` preemptions per interleaving
/// (each one more multiplies the time it takes).
fn check<P: Prims<Wake = WakeReader>>(
    kinds: [Caller; 2],
    split: bool,
    orphan: bool,
    preemptions: usize,
) {
    let mut builder = loom::model::Builder::new();
    // LOOM_MAX_PREEMPTIONS, when set, says how far to go instead.
    builder.preemption_bound = builder.preemption_bound.or(Some(preemptions));
    builder.check(move || {
        let env = Arc::new(Env {
            socket: Place::new(),
            runtime: Place::new(),
            requests: Place::new(),
            replies: Place::new(),
        });
        let handoff = Arc::new(Handoff::<P>::new(64, WakeReader(env.clone())));
        let reader = {
            let (env, handoff) = (env.clone(), handoff.clone());
            thread::spawn(move || reader_task(&env, &handoff))
        };
        let callers: Vec<_> = (0..2u8)
            .map(|who| {
                let (env, handoff) = (env.clone(), handoff.clone());
                let kind = kinds[who as usize];
                thread::spawn(move || call(&env, &handoff, who, kind))
            })
            .collect();
        serve(&env, callers.len(), split, orphan);
        // Everything delivered: nothing left unread (a deadlock here if something is).
        env.replies
            .wait_for(|r| (r.frames == 2 + orphan as usize).then_some(()));
        for (who, caller) in callers.into_iter().enumerate() {
            assert_eq!(caller.join().unwrap(), answer(who as u8), "a wrong reply");
        }
        env.runtime.change(|r| r.stop = true);
        reader.join().unwrap();
        assert!(env.socket.lock().is_empty(), "bytes left unread");
    });
}

#[test]
#[ignore = "a model check: run by .ci/run in its own step"]
fn two_blocking_callers_and_the_reader_task() {
    check::<Loom>([Caller::Blocking, Caller::Blocking], false, false, 2);
}

#[test]
#[ignore = "a model check: run by .ci/run in its own step"]
fn replies_in_pieces_and_a_frame_nobody_waits_for() {
    check::<Loom>([Caller::Blocking, Caller::Blocking], true, true, 1);
}

#[test]
#[ignore = "a model check: run by .ci/run in its own step"]
fn a_blocking_and_an_async_caller_and_the_reader_task() {
    check::<Loom>([Caller::Blocking, Caller::Async], true, true, 2);
}

/// The model finds the wake-up lost before 0f89e25 (see [`Before0f89e25`]). Loom aborts the
/// process when it reports a deadlock (a guard's drop panics during the unwinding), so the
/// check runs in a child process, this test again, which must fail saying so.
#[test]
#[ignore = "a model check: run by .ci/run in its own step"]
fn finds_the_lost_wake_up_of_the_reader_task_before_0f89e25() {
    const CHILD: &str = "MANAGER_HANDOFF_MODEL_CHILD";
    if std::env::var_os(CHILD).is_some() {
        check::<Before0f89e25>([Caller::Blocking, Caller::Blocking], false, false, 1);
        return;
    }
    let name = module_path!().split_once("::").unwrap().1.to_string()
        + "::finds_the_lost_wake_up_of_the_reader_task_before_0f89e25";
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            &name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env_remove("LOOM_MAX_PREEMPTIONS")
        .output()
        .expect("cannot run the model check of the old reader task");
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(
        !child.status.success() && stderr.contains("deadlock; threads"),
        "the model check passed the reader task that lost a wake-up ({}):\n{stderr}",
        child.status
    );
}
