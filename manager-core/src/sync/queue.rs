//! `Queue` and `JoinableQueue`: shared FIFO queues (Python's `queue.Queue`, as `SyncManager`
//! registers it under both typeids).
//!
//! Waiting never holds a server thread or the object's lock: every method takes `&self`, the
//! queue's state sits behind a short [`parking_lot::Mutex`], and blocked `put`s, `get`s and
//! `join`s wait on [`tokio::sync::Notify`]s, with their timeouts kept by the server.
//!
//! A blocked call whose client goes away is dropped where it waits. An item only leaves the
//! queue in the same poll that returns it to the caller, so a dropped `get` never swallows an
//! item; a wake-up it received but did not use passes on to the next waiter (that is how
//! `Notify` treats a dropped, notified waiter). A dropped `put` never inserts its item.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::context::CallContext;
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::registry::{Register, Registry};
use crate::sync::wait::{deadline, seconds, Counted};
use crate::sync::{builtin_proxy, encode, typeids, Element, Stored, Typed};
use crate::value::Value;

/// The queue itself, independent of what it stores (so that its waiting logic can be tested
/// without a server).
struct QueueCore<I> {
    /// The most items the queue holds; 0 for no limit.
    maxsize: usize,
    state: Mutex<CoreState<I>>,
    /// Signalled (one waiter at a time) when an item is put.
    not_empty: Notify,
    /// Signalled (one waiter at a time) when an item is taken.
    not_full: Notify,
    /// Signalled (every waiter) when the count of unfinished tasks drops to zero.
    all_done: Notify,
    /// How many `get`s wait for an item.
    getters: AtomicU64,
    /// How many `put`s wait for room.
    putters: AtomicU64,
}

struct CoreState<I> {
    items: VecDeque<I>,
    /// Items put and not yet marked done with `task_done`.
    unfinished: u64,
}

impl<I> QueueCore<I> {
    fn new(maxsize: usize) -> Self {
        QueueCore {
            maxsize,
            state: Mutex::new(CoreState {
                items: VecDeque::new(),
                unfinished: 0,
            }),
            not_empty: Notify::new(),
            not_full: Notify::new(),
            all_done: Notify::new(),
            getters: AtomicU64::new(0),
            putters: AtomicU64::new(0),
        }
    }

    /// Puts `item` if there is room, or hands it back.
    fn try_put(&self, item: I) -> Result<(), I> {
        {
            let mut state = self.state.lock();
            if self.maxsize > 0 && state.items.len() >= self.maxsize {
                return Err(item);
            }
            state.items.push_back(item);
            state.unfinished += 1;
        }
        self.not_empty.notify_one();
        Ok(())
    }

    /// Takes the oldest item, if any.
    fn try_get(&self) -> Option<I> {
        let item = self.state.lock().items.pop_front()?;
        self.not_full.notify_one();
        Some(item)
    }

    /// Puts `item`, waiting for room when `block` is set, until `deadline` if there is one.
    /// Hands the item back when the queue is still full.
    async fn put(&self, item: I, block: bool, deadline: Option<Instant>) -> Result<(), I> {
        let mut item = item;
        let mut counted = None;
        loop {
            // Registered before the check, so that a slot freed after the check wakes us.
            let notified = self.not_full.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            item = match self.try_put(item) {
                Ok(()) => return Ok(()),
                Err(item) => item,
            };
            if !block {
                return Err(item);
            }
            counted.get_or_insert_with(|| Counted::new(&self.putters));
            match deadline {
                None => notified.await,
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return self.try_put(item);
                    }
                }
            }
        }
    }

    /// Takes the oldest item, waiting for one when `block` is set, until `deadline` if there
    /// is one. `None` when the queue is still empty.
    ///
    /// The item is removed only in the poll that returns it: a dropped `get` takes nothing.
    async fn get(&self, block: bool, deadline: Option<Instant>) -> Option<I> {
        let mut counted = None;
        loop {
            // Registered before the check, so that an item put after the check wakes us. If
            // this future is dropped after being woken, the wake-up passes to the next getter.
            let notified = self.not_empty.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(item) = self.try_get() {
                return Some(item);
            }
            if !block {
                return None;
            }
            counted.get_or_insert_with(|| Counted::new(&self.getters));
            match deadline {
                None => notified.await,
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return self.try_get();
                    }
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.state.lock().items.len()
    }

    /// Marks one task done; `false` when there is no unfinished task.
    fn task_done(&self) -> bool {
        let all_done = {
            let mut state = self.state.lock();
            if state.unfinished == 0 {
                return false;
            }
            state.unfinished -= 1;
            state.unfinished == 0
        };
        if all_done {
            self.all_done.notify_waiters();
        }
        true
    }

    /// Waits until every item put has been marked done.
    async fn join(&self) {
        loop {
            let notified = self.all_done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state.lock().unfinished == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// The server side of a shared queue (both `Queue` and `JoinableQueue`): its items, with the
/// references their proxies hold.
pub struct QueueObject {
    typeid: &'static str,
    core: QueueCore<Stored>,
}

impl std::fmt::Debug for QueueObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueObject")
            .field("typeid", &self.typeid)
            .finish_non_exhaustive()
    }
}

impl QueueObject {
    /// A queue holding at most `maxsize` items (0 or less: no limit), answering as `typeid`.
    fn new(typeid: &'static str, maxsize: i64) -> QueueObject {
        let maxsize = usize::try_from(maxsize.max(0)).unwrap_or(usize::MAX);
        QueueObject {
            typeid,
            core: QueueCore::new(maxsize),
        }
    }

    /// An empty `Queue` holding at most `maxsize` items (0: no limit), for a factory or a
    /// `method_to_typeid = { m: "Queue" }` method that returns a built-in queue; clients use a
    /// [`QueueProxy`]`<T>` on it.
    pub fn queue(maxsize: usize) -> QueueObject {
        QueueObject::new(typeids::QUEUE, i64::try_from(maxsize).unwrap_or(i64::MAX))
    }

    /// An empty `JoinableQueue` holding at most `maxsize` items (0: no limit); clients use a
    /// [`JoinableQueueProxy`]`<T>` on it.
    pub fn joinable(maxsize: usize) -> QueueObject {
        QueueObject::new(
            typeids::JOINABLE_QUEUE,
            i64::try_from(maxsize).unwrap_or(i64::MAX),
        )
    }

    fn error(&self, kind: RemoteErrorKind, method: &str, message: &str) -> RemoteError {
        RemoteError::new(kind, self.typeid, method, message)
    }

    fn full_error(&self, method: &str) -> RemoteError {
        self.error(RemoteErrorKind::Full, method, "the queue is full")
    }

    fn empty_error(&self, method: &str) -> RemoteError {
        self.error(RemoteErrorKind::Empty, method, "the queue is empty")
    }
}

#[crate::shared(
    crate = "crate",
    proxies = raw,
    // Bounded by their arguments and results, never by the size of the object, and never
    // waiting: no worker thread needed (see `server::quick`).
    quick = [put_nowait, get_nowait, qsize, empty, full, maxsize, task_done, n_waiting_get, n_waiting_put]
)]
impl QueueObject {
    /// Puts `item` at the back (Python's `put(item, block=True, timeout=None)`). With `block`,
    /// waits for room, for at most `timeout` seconds if given; a `Full` error when there is
    /// still no room (at once without `block`).
    pub async fn put(
        &self,
        item: Value,
        block: bool,
        timeout: Option<f64>,
        ctx: &CallContext,
    ) -> Result<(), RemoteError> {
        let deadline = deadline(timeout, self.typeid, "put")?;
        let stored = Stored::new(ctx, item, self.typeid, "put")?;
        self.core
            .put(stored, block, deadline)
            .await
            .map_err(|_| self.full_error("put"))
    }

    /// Puts `item` if there is room; a `Full` error otherwise.
    pub fn put_nowait(&self, item: Value, ctx: &CallContext) -> Result<(), RemoteError> {
        let stored = Stored::new(ctx, item, self.typeid, "put_nowait")?;
        self.core
            .try_put(stored)
            .map_err(|_| self.full_error("put_nowait"))
    }

    /// Removes and returns the item at the front (Python's `get(block=True, timeout=None)`).
    /// With `block`, waits for an item, for at most `timeout` seconds if given; an `Empty`
    /// error when there is still none (at once without `block`).
    pub async fn get(
        &self,
        block: bool,
        timeout: Option<f64>,
        ctx: &CallContext,
    ) -> Result<Value, RemoteError> {
        let deadline = deadline(timeout, self.typeid, "get")?;
        match self.core.get(block, deadline).await {
            Some(stored) => Ok(stored.give(ctx)),
            None => Err(self.empty_error("get")),
        }
    }

    /// Removes and returns the item at the front; an `Empty` error when there is none.
    pub fn get_nowait(&self, ctx: &CallContext) -> Result<Value, RemoteError> {
        match self.core.try_get() {
            Some(stored) => Ok(stored.give(ctx)),
            None => Err(self.empty_error("get_nowait")),
        }
    }

    /// The number of items.
    pub fn qsize(&self) -> u64 {
        self.core.len() as u64
    }

    /// Whether the queue holds no item.
    pub fn empty(&self) -> bool {
        self.core.len() == 0
    }

    /// Whether the queue has a limit and holds that many items.
    pub fn full(&self) -> bool {
        self.core.maxsize > 0 && self.core.len() >= self.core.maxsize
    }

    /// The most items the queue holds; 0 for no limit.
    pub fn maxsize(&self) -> u64 {
        self.core.maxsize as u64
    }

    /// Marks one item taken from the queue as processed; an `InvalidValue` error (Python's
    /// `ValueError`, as `queue.JoinableQueue` raises it) when every item put has already been
    /// marked.
    pub fn task_done(&self) -> Result<(), RemoteError> {
        if self.core.task_done() {
            Ok(())
        } else {
            Err(self.error(
                RemoteErrorKind::InvalidValue,
                "task_done",
                "task_done() called too many times",
            ))
        }
    }

    /// Waits until every item put has been marked processed with `task_done`.
    pub async fn join(&self) {
        self.core.join().await;
    }

    /// How many `get` calls are waiting for an item (not in Python; for monitoring).
    pub fn n_waiting_get(&self) -> u64 {
        self.core.getters.load(Ordering::SeqCst)
    }

    /// How many `put` calls are waiting for room (not in Python; for monitoring).
    pub fn n_waiting_put(&self) -> u64 {
        self.core.putters.load(Ordering::SeqCst)
    }
}

/// Registers `Queue` and `JoinableQueue` (one server type; as in Python, both expose every
/// method, and the typed proxies choose what to offer).
pub(super) fn register(registry: &mut Registry) -> Result<(), Error> {
    registry.register(Register::factory_with_context(
        typeids::QUEUE,
        |(maxsize,): (i64,), _: &CallContext| Ok(QueueObject::new(typeids::QUEUE, maxsize)),
    ))?;
    registry.register(Register::factory_with_context(
        typeids::JOINABLE_QUEUE,
        |(maxsize,): (i64,), _: &CallContext| {
            Ok(QueueObject::new(typeids::JOINABLE_QUEUE, maxsize))
        },
    ))?;
    Ok(())
}

/// Turns a `Full` error into `false`.
fn full_to_false(result: Result<(), Error>) -> Result<bool, Error> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.remote_kind() == Some(RemoteErrorKind::Full) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Turns an `Empty` error into `None`.
fn empty_to_none<T>(result: Result<T, Error>) -> Result<Option<T>, Error> {
    match result {
        Ok(item) => Ok(Some(item)),
        Err(e) if e.remote_kind() == Some(RemoteErrorKind::Empty) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A shared FIFO queue of `T` (Python's `manager.Queue()`), with async methods.
///
/// Items are converted with serde; proxies may be queued, and the queue keeps their objects
/// alive while it holds them. Waiting happens in the server, which also keeps the timeouts.
///
/// A `get` waiting in the server that its client gives up on (a dropped future, a client
/// that exits or dies) takes no item once the server has cancelled it; but an item the server
/// handed out just before is lost with the reply nobody reads. To bound a wait, prefer
/// [`get_timeout`](QueueProxy::get_timeout), whose timeout the server keeps.
pub struct QueueProxy<T>(Typed<T, QueueObjectRawProxy>);

/// A shared FIFO queue of `T` whose items can be marked processed, and waited for (Python's
/// `manager.JoinableQueue()`), with async methods. Everything [`QueueProxy`] has, plus
/// [`task_done`](JoinableQueueProxy::task_done) and [`join`](JoinableQueueProxy::join).
pub struct JoinableQueueProxy<T>(Typed<T, QueueObjectRawProxy>);

/// The methods both queue proxies have, and their blocking twins.
macro_rules! queue_methods {
    ($proxy:ident, $blocking:ident) => {
        #[crate::blocking_twin($blocking)]
        impl<T: Element> $proxy<T> {
            /// Puts `item` at the back, waiting as long as the queue is full.
            pub async fn put(&self, item: &T) -> Result<(), Error> {
                self.0.raw.put(encode(item)?, true, None).await
            }

            /// Puts `item` at the back, waiting at most `timeout` for room; `false` when the
            /// queue was still full (the item was not put).
            pub async fn put_timeout(&self, item: &T, timeout: Duration) -> Result<bool, Error> {
                full_to_false(self.0.raw.put(encode(item)?, true, seconds(timeout)).await)
            }

            /// Puts `item` at the back if there is room; `false` when the queue is full (where
            /// Python raises `queue.Full`).
            pub async fn put_nowait(&self, item: &T) -> Result<bool, Error> {
                full_to_false(self.0.raw.put_nowait(encode(item)?).await)
            }

            /// Removes and returns the item at the front, waiting as long as the queue is
            /// empty.
            pub async fn get(&self) -> Result<T, Error> {
                self.0.decode(self.0.raw.get(true, None).await?)
            }

            /// Removes and returns the item at the front, waiting at most `timeout` for one;
            /// `None` when the queue was still empty.
            pub async fn get_timeout(&self, timeout: Duration) -> Result<Option<T>, Error> {
                let item = empty_to_none(self.0.raw.get(true, seconds(timeout)).await)?;
                item.map(|item| self.0.decode(item)).transpose()
            }

            /// Removes and returns the item at the front; `None` when the queue is empty
            /// (where Python raises `queue.Empty`).
            pub async fn get_nowait(&self) -> Result<Option<T>, Error> {
                let item = empty_to_none(self.0.raw.get_nowait().await)?;
                item.map(|item| self.0.decode(item)).transpose()
            }

            /// The number of items (already out of date when it arrives, as in Python).
            pub async fn qsize(&self) -> Result<u64, Error>;

            /// Whether the queue holds no item.
            pub async fn empty(&self) -> Result<bool, Error>;

            /// Whether the queue has a limit and holds that many items.
            pub async fn full(&self) -> Result<bool, Error>;

            /// The most items the queue holds; 0 for no limit.
            pub async fn maxsize(&self) -> Result<u64, Error>;

            /// How many `get`s are waiting for an item in the server (not in Python).
            pub async fn n_waiting_get(&self) -> Result<u64, Error>;

            /// How many `put`s are waiting for room in the server (not in Python).
            pub async fn n_waiting_put(&self) -> Result<u64, Error>;
        }
    };
}

queue_methods!(QueueProxy, QueueBlockingProxy);
queue_methods!(JoinableQueueProxy, JoinableQueueBlockingProxy);

#[crate::blocking_twin(JoinableQueueBlockingProxy)]
impl<T: Element> JoinableQueueProxy<T> {
    /// Marks one item taken from the queue as processed; a `Runtime` error ("task_done()
    /// called too many times") when every item put has already been marked.
    pub async fn task_done(&self) -> Result<(), Error>;

    /// Waits until every item put has been marked processed with
    /// [`task_done`](JoinableQueueProxy::task_done).
    pub async fn join(&self) -> Result<(), Error>;
}

builtin_proxy! {
    QueueProxy<T> for QueueObject,
    /// A shared FIFO queue of `T` (Python's `manager.Queue()`), with blocking methods.
    QueueBlockingProxy
}

builtin_proxy! {
    JoinableQueueProxy<T> for QueueObject,
    /// A shared FIFO queue of `T` with `task_done` and `join` (Python's
    /// `manager.JoinableQueue()`), with blocking methods.
    JoinableQueueBlockingProxy
}

/// The `maxsize` argument of the factories: Python's, where 0 (or less) means no limit.
fn maxsize_arg(maxsize: u64) -> i64 {
    i64::try_from(maxsize).unwrap_or(i64::MAX)
}

crate::sync::constructors! {
    /// A new shared queue holding at most `maxsize` items, 0 for no limit (Python:
    /// `manager.Queue(maxsize)`).
    fn queue<T: Element>(maxsize: u64) -> QueueProxy<T>, QueueBlockingProxy<T>
        = typeids::QUEUE, (maxsize_arg(maxsize),);

    /// A new shared joinable queue holding at most `maxsize` items, 0 for no limit (Python:
    /// `manager.JoinableQueue(maxsize)`).
    fn joinable_queue<T: Element>(maxsize: u64) -> JoinableQueueProxy<T>, JoinableQueueBlockingProxy<T>
        = typeids::JOINABLE_QUEUE, (maxsize_arg(maxsize),);
}

#[cfg(test)]
mod tests {
    use std::task::Poll;

    use super::*;
    use crate::sync::wait::poll;

    type Putter<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), i32>> + 'a>>;

    /// Fills `core`, of one slot, with 1, and starts a put of 2 that waits for room.
    fn waiting_putter(core: &QueueCore<i32>) -> Putter<'_> {
        assert!(core.try_put(1).is_ok());
        let mut putter: Putter<'_> = Box::pin(core.put(2, true, None));
        assert!(poll(&mut putter).is_pending());
        putter
    }

    #[test]
    fn a_dropped_woken_getter_takes_nothing_and_passes_the_wake_up_on() {
        let core = QueueCore::<i32>::new(0);
        let mut first = Box::pin(core.get(true, None));
        let mut second = Box::pin(core.get(true, None));
        assert!(poll(&mut first).is_pending());
        assert!(poll(&mut second).is_pending());
        assert_eq!(core.getters.load(Ordering::SeqCst), 2);

        // The put wakes one getter; whichever it was, dropping the first before it runs
        // leaves the item in the queue and the second getter takes it.
        assert!(core.try_put(7).is_ok());
        drop(first);
        assert_eq!(core.len(), 1);
        assert_eq!(core.getters.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut second), Poll::Ready(Some(7)));
        assert_eq!(core.len(), 0);
        drop(second);
        assert_eq!(core.getters.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_dropped_waiting_putter_puts_nothing() {
        let core = QueueCore::<i32>::new(1);
        let putter = waiting_putter(&core);
        assert_eq!(core.putters.load(Ordering::SeqCst), 1);
        drop(putter);
        assert_eq!(core.putters.load(Ordering::SeqCst), 0);
        assert_eq!(core.try_get(), Some(1));
        assert_eq!(core.try_get(), None);
    }

    #[test]
    fn a_waiting_putter_fills_the_freed_slot() {
        let core = QueueCore::<i32>::new(1);
        let mut putter = waiting_putter(&core);
        assert_eq!(core.try_get(), Some(1));
        assert_eq!(poll(&mut putter), Poll::Ready(Ok(())));
        assert_eq!(core.try_get(), Some(2));
    }

    #[test]
    fn join_waits_for_every_task_done() {
        let core = QueueCore::<i32>::new(0);
        assert!(core.try_put(1).is_ok());
        assert!(core.try_put(2).is_ok());
        let mut join = Box::pin(core.join());
        assert!(poll(&mut join).is_pending());
        assert!(core.task_done());
        assert!(poll(&mut join).is_pending());
        assert!(core.task_done());
        assert_eq!(poll(&mut join), Poll::Ready(()));
        assert!(!core.task_done(), "a third task_done is one too many");
    }
}
