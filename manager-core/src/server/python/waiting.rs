//! A waiting call on a connection's thread, finished by whoever wakes it.
//!
//! CPython's server blocks the getter's thread on the queue's condition: a `put` wakes that
//! thread, which takes the item and writes the reply, then reads the client's next request.
//! Here the connection's thread leaves a waiting `get` (or a `put` waiting for room, or a
//! `join`) behind and goes back to `read`: the thread whose call wakes it (the `put` of another
//! connection) polls it once its own call is done, and writes its reply on the waiting
//! client's socket. The getter's client is woken by the reply itself; the getter's thread wakes
//! only for the client's next request, which it reads anyway. No futex, no readiness watch, no
//! thread hop per item.
//!
//! The client going away is seen by the same `read`: an end of stream, or anything the client
//! sends while its call waits (a CPython client waits for each reply), cancels the call, which
//! is dropped where it waits and takes nothing (see `sync::queue`). A wake-up from elsewhere (a
//! timeout's timer, a Rust client's `put` on a runtime task) finishes the call on a task of the
//! runtime. The reply is written without blocking the waking thread when the socket takes it
//! at once (any reply a CPython client waits for, unless it is larger than the socket's
//! buffer); the rest, if any, with a blocking write (the client sends its next request only
//! once it has all of it, so the connection's thread never writes over it).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool};
use std::task::{Context, Poll, Wake, Waker};

use tokio_util::sync::CancellationToken;

use super::thread::Socket;
use super::*;

/// A call left waiting.
pub(super) type Call = Pin<Box<dyn Future<Output = PyValue> + Send>>;

/// Whether a call of `request` may be left waiting for its waker to finish: the waiting methods
/// of the built-in queues, whose completion is short (take or put an item, encode the reply).
pub(super) fn parks(state: &State, request: &Request) -> bool {
    if !matches!(request.method.as_str(), "get" | "put" | "join") {
        return false;
    }
    let Some(id) = request.ident.as_deref().and_then(id_from_hex) else {
        return false;
    };
    state.table.lock().entry(id).is_some_and(|entry| {
        builtin(entry)
            && matches!(
                &*entry.typeid,
                crate::sync::typeids::QUEUE | crate::sync::typeids::JOINABLE_QUEUE
            )
    })
}

enum Slot {
    /// No call waits.
    Idle,
    /// A call waits; whoever wakes it polls it.
    Waiting(Call),
    /// The waiting call was answered (its reply sent, or being sent): the connection reads on.
    Answered,
}

/// The waiting call of one connection served by a thread, and the waker of that call.
pub(super) struct Parked {
    slot: Mutex<Slot>,
    /// Set by every wake-up, cleared by the poll it causes.
    woken: AtomicBool,
    /// The connection's socket (a clone), for the reply; let go when its thread ends (a waker
    /// may outlive the thread, and must not keep the connection open).
    socket: parking_lot::RwLock<Option<Socket>>,
    closed: CancellationToken,
    handle: tokio::runtime::Handle,
}

thread_local! {
    /// Whether this thread is running a call, whose wake-ups wait in `DEFERRED`.
    static DEFERRING: Cell<bool> = const { Cell::new(false) };
    /// Waiting calls woken by this thread's call, finished by `finish_deferred`.
    static DEFERRED: RefCell<VecDeque<Arc<Parked>>> = const { RefCell::new(VecDeque::new()) };
}

/// Runs `f` (a poll) with the waiting calls it wakes kept for [`finish_deferred`], not finished
/// inside it: the waker runs wherever the wake-up is, perhaps under a lock the waiting call
/// would take.
pub(super) fn deferring<R>(f: impl FnOnce() -> R) -> R {
    let outer = DEFERRING.with(|d| d.replace(true));
    let result = f();
    DEFERRING.with(|d| d.set(outer));
    result
}

/// Finishes the waiting calls this thread's calls woke (and those they wake in turn).
pub(super) fn finish_deferred() {
    while let Some(woken) = DEFERRED.with(|d| d.borrow_mut().pop_front()) {
        deferring(|| woken.run());
    }
}

impl Parked {
    /// The parking place of a connection whose thread reads `socket`.
    pub(super) fn new(
        socket: &Socket,
        me: &Connection,
        handle: &tokio::runtime::Handle,
    ) -> std::io::Result<Arc<Parked>> {
        Ok(Arc::new(Parked {
            slot: Mutex::new(Slot::Idle),
            woken: AtomicBool::new(false),
            socket: parking_lot::RwLock::new(Some(socket.try_clone()?)),
            closed: me.closed.clone(),
            handle: handle.clone(),
        }))
    }

    /// Polls `call` once here: its reply if it is done; `None` when it was left waiting (its
    /// reply goes out when it is woken, and the connection's thread reads on, then calls
    /// [`settle`](Parked::settle)).
    pub(super) fn start(self: &Arc<Self>, mut call: Call) -> Option<PyValue> {
        self.woken.store(false, Ordering::Release);
        let waker = Waker::from(self.clone());
        let polled = deferring(|| call.as_mut().poll(&mut Context::from_waker(&waker)));
        if let Poll::Ready(reply) = polled {
            return Some(reply);
        }
        *self.slot.lock() = Slot::Waiting(call);
        // Woken between the poll and the parking: nobody else will poll it. (A waker that
        // found the lock taken set `woken` first: the fences order that store and this load.)
        fence(Ordering::SeqCst);
        if self.woken.load(Ordering::Acquire) {
            deferring(|| self.run());
        }
        None
    }

    /// Once the connection's thread has read past a call it left waiting: whether the
    /// connection goes on (the call was answered). A call still waiting is cancelled: the
    /// client sent something while it waited, or went away. (A reply still being written
    /// needs no waiting for: the client sends its next request only once it has all of it.)
    pub(super) fn settle(&self) -> bool {
        let slot = std::mem::replace(&mut *self.slot.lock(), Slot::Idle);
        // Dropped outside the lock: a dropped waiter may pass its wake-up on.
        !matches!(slot, Slot::Waiting(_))
    }

    /// At the end of the connection's thread: a waiting call is cancelled, the socket let go.
    pub(super) fn close(&self) {
        let slot = std::mem::replace(&mut *self.slot.lock(), Slot::Idle);
        drop(slot);
        if let Some(socket) = &*self.socket.read() {
            // Ends a reply still being written to a client that does not read it.
            socket.shutdown();
        }
        drop(self.socket.write().take());
    }

    /// Polls the waiting call if it was woken; sends its reply if it is done.
    fn run(self: &Arc<Self>) {
        let waker = Waker::from(self.clone());
        loop {
            // Whoever holds the lock looks at `woken` again once it lets go.
            fence(Ordering::SeqCst);
            let Some(mut slot) = self.slot.try_lock() else {
                return;
            };
            let Slot::Waiting(call) = &mut *slot else {
                return;
            };
            if !self.woken.swap(false, Ordering::AcqRel) {
                return;
            }
            let polled = {
                let _entered = self.handle.enter();
                call.as_mut().poll(&mut Context::from_waker(&waker))
            };
            if let Poll::Ready(reply) = polled {
                let done = std::mem::replace(&mut *slot, Slot::Answered);
                drop(slot);
                drop(done);
                self.send(&reply);
                return;
            }
            drop(slot);
            fence(Ordering::SeqCst);
            if !self.woken.load(Ordering::Acquire) {
                return;
            }
        }
    }

    /// Writes the reply of the waiting call. When it cannot be sent, the socket is shut down:
    /// the connection's thread, reading, sees the connection end.
    fn send(&self, reply: &PyValue) {
        let socket = self.socket.read();
        let Some(socket) = socket.as_ref() else {
            return;
        };
        if self.closed.is_cancelled() {
            return;
        }
        let sent = frame(reply).and_then(|frame| {
            let taken = socket.send_nonblocking(&frame)?;
            if taken < frame.len() {
                // Larger than the socket's buffer: the rest waits for the client to read.
                let mut writer = socket;
                tokio::task::block_in_place(|| writer.write_all(&frame[taken..]))?;
            }
            Ok(())
        });
        if let Err(e) = sent {
            tracing::debug!("cannot answer a waiting CPython client: {e}");
            socket.shutdown();
        }
    }
}

/// A reply as one frame, header and pickle.
fn frame(reply: &PyValue) -> std::io::Result<Vec<u8>> {
    let payload = pickle::encode_with(reply, &pickle::EncodeOptions::default())
        .map_err(|e| std::io::Error::other(format!("a pickled message: {e}")))?;
    let mut frame = crate::python::connection::frame_header(payload.len(), false);
    frame.extend_from_slice(&payload);
    Ok(frame)
}

impl Wake for Parked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let deferred = DEFERRING
            .try_with(|deferring| {
                deferring.get() && {
                    DEFERRED.with(|d| d.borrow_mut().push_back(self.clone()));
                    true
                }
            })
            .unwrap_or(false);
        if !deferred {
            // Woken outside a call of a connection's thread (a timer, a runtime task).
            let woken = self.clone();
            self.handle.spawn(async move {
                deferring(|| woken.run());
                finish_deferred();
            });
        }
    }
}
