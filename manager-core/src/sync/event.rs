//! `Event`: a shared flag that processes wait for (Python's `threading.Event`, as
//! `SyncManager` shares it).
//!
//! Waiting never holds a server thread or the object's lock: the flag sits behind a short
//! [`parking_lot::Mutex`] and waiters wait on a [`tokio::sync::Notify`], with their timeouts
//! kept by the server. One `set` wakes every waiter at once. A waiter whose client goes away is
//! dropped where it waits, and leaves nothing behind.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::error::{Error, RemoteError};
use crate::registry::{Register, Registry};
use crate::sync::wait::{deadline, seconds, Counted};
use crate::sync::{builtin_proxy, typeids, Typed};

/// The server side of a shared event.
pub struct EventObject {
    state: Mutex<EventState>,
    /// Signalled (every waiter) by `set`.
    notify: Notify,
    /// How many `wait`s are waiting.
    waiting: AtomicU64,
}

struct EventState {
    flag: bool,
    /// How many times the flag went from clear to set: a waiter released by a `set` returns
    /// `true` even when a `clear` follows before it runs, as in Python.
    generation: u64,
}

impl EventObject {
    /// A new event, clear.
    fn new() -> EventObject {
        EventObject {
            state: Mutex::new(EventState {
                flag: false,
                generation: 0,
            }),
            notify: Notify::new(),
            waiting: AtomicU64::new(0),
        }
    }
}

#[crate::shared(
    crate = "crate",
    proxies = raw,
    // Bounded by their arguments and results, never by the size of the object, and never
    // waiting: no worker thread needed (see `server::quick`).
    quick = [set, clear, is_set, n_waiting]
)]
impl EventObject {
    /// Sets the flag, releasing every waiter.
    pub fn set(&self) {
        {
            let mut state = self.state.lock();
            if state.flag {
                return;
            }
            state.flag = true;
            state.generation += 1;
        }
        self.notify.notify_waiters();
    }

    /// Clears the flag: later waits wait again.
    pub fn clear(&self) {
        self.state.lock().flag = false;
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.state.lock().flag
    }

    /// Waits until the flag is set, for at most `timeout` seconds if given (Python's
    /// `wait(timeout=None)`). `true` when the flag was set (or a `set` released the wait),
    /// `false` when the timeout passed first.
    pub async fn wait(&self, timeout: Option<f64>) -> Result<bool, RemoteError> {
        let deadline = deadline(timeout, typeids::EVENT, "wait")?;
        let start = {
            let state = self.state.lock();
            if state.flag {
                return Ok(true);
            }
            state.generation
        };
        let released = || {
            let state = self.state.lock();
            state.flag || state.generation != start
        };
        let _counted = Counted::new(&self.waiting);
        loop {
            // Created before the check, so that a `set` after the check wakes us.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if released() {
                return Ok(true);
            }
            match deadline {
                None => notified.await,
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Ok(released());
                    }
                }
            }
        }
    }

    /// How many `wait` calls are waiting (not in Python; for monitoring).
    pub fn n_waiting(&self) -> u64 {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// Registers `Event`.
pub(super) fn register(registry: &mut Registry) -> Result<(), Error> {
    registry.register(Register::factory(typeids::EVENT, |(): ()| {
        EventObject::new()
    }))?;
    Ok(())
}

/// A shared event (Python's `manager.Event()`), with async methods.
///
/// Waits are kept by the server: [`wait_timeout`](EventProxy::wait_timeout) bounds a wait
/// there, and a waiting client that goes away leaves nothing behind.
pub struct EventProxy(Typed<(), EventObjectRawProxy>);

#[crate::blocking_twin(EventBlockingProxy)]
impl EventProxy {
    /// Sets the flag, releasing every waiter.
    pub async fn set(&self) -> Result<(), Error>;

    /// Clears the flag.
    pub async fn clear(&self) -> Result<(), Error>;

    /// Whether the flag is set.
    pub async fn is_set(&self) -> Result<bool, Error>;

    /// Waits until the flag is set.
    pub async fn wait(&self) -> Result<(), Error> {
        self.0.raw.wait(None).await.map(drop)
    }

    /// Waits at most `timeout` for the flag to be set: `true` when it was, `false` when the
    /// timeout passed first.
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        self.0.raw.wait(seconds(timeout)).await
    }

    /// How many `wait`s are waiting in the server (not in Python).
    pub async fn n_waiting(&self) -> Result<u64, Error>;
}

builtin_proxy! {
    EventProxy for EventObject,
    /// A shared event (Python's `manager.Event()`), with blocking methods.
    EventBlockingProxy
}

crate::sync::constructors! {
    /// A new shared event, clear (Python: `manager.Event()`).
    fn event() -> EventProxy, EventBlockingProxy = typeids::EVENT, ();
}
