//! `Condition`: a shared condition variable with its own re-entrant lock (Python's
//! `threading.Condition()` as a `SyncManager` serves it).
//!
//! `wait` registers the caller as a waiter and releases the lock (however deep the caller held
//! it) in one step, waits for a `notify`, then re-acquires the lock at the same depth; as in
//! Python, the timeout of `wait_timeout` bounds only the wait for the notification, not the
//! re-acquisition. Notifications go to the waiters in the order they started waiting.
//!
//! A waiter that goes away without returning (its client's connection closed and the server
//! cancelled the call) never consumes a notification: if it had been notified, the
//! notification passes to the next waiter. A waiter whose timeout expires at the same moment
//! as it is notified counts as notified. When a connection closes, the lock is released if it
//! held it.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::context::CallContext;
use crate::error::{Error, RemoteError};
use crate::proxy::Proxy;
use crate::sync::lock::{lock_object, Holder, LockCore};
use crate::sync::release::{acquirer, current_owner, settled};
use crate::sync::wait::{runtime_error, seconds, timeout_of, Wait};
use crate::sync::{typeids, Typed};

#[derive(Debug, Default)]
struct WaitState {
    next: u64,
    /// Waiters not notified yet, in the order they started waiting.
    waiting: VecDeque<u64>,
    /// Waiters notified that have not noticed it yet.
    signalled: HashSet<u64>,
}

impl WaitState {
    /// Moves up to `n` waiters from waiting to notified; whether any moved.
    fn notify(&mut self, n: u64) -> bool {
        let mut moved = false;
        for _ in 0..n {
            match self.waiting.pop_front() {
                Some(next) => {
                    self.signalled.insert(next);
                    moved = true;
                }
                None => break,
            }
        }
        moved
    }
}

#[derive(Debug, Default)]
struct Waiters {
    state: Mutex<WaitState>,
    /// Woken whenever waiters are notified.
    signalled: Notify,
}

impl Waiters {
    fn register(&self) -> u64 {
        let mut state = self.state.lock();
        let id = state.next;
        state.next += 1;
        state.waiting.push_back(id);
        id
    }

    fn notify(&self, n: u64) {
        if self.state.lock().notify(n) {
            self.signalled.notify_waiters();
        }
    }
}

/// One call of `wait`, between its registration and its return.
struct Ticket<'a> {
    waiters: &'a Waiters,
    id: u64,
    /// It noticed its notification.
    notified: bool,
    /// `wait` returned: nothing to undo.
    done: bool,
}

impl Ticket<'_> {
    /// Takes the notification if it has come.
    fn take(&mut self) -> bool {
        if self.waiters.state.lock().signalled.remove(&self.id) {
            self.notified = true;
        }
        self.notified
    }

    /// Waits for the notification.
    async fn notified(&mut self) {
        loop {
            let signalled = self.waiters.signalled.notified();
            tokio::pin!(signalled);
            signalled.as_mut().enable();
            if self.take() {
                return;
            }
            signalled.await;
        }
    }

    /// The timeout expired: stops waiting, unless the notification came meanwhile. Whether it
    /// was notified.
    fn give_up(&mut self) -> bool {
        let mut state = self.waiters.state.lock();
        if state.signalled.remove(&self.id) {
            self.notified = true;
        } else {
            state.waiting.retain(|id| *id != self.id);
        }
        self.notified
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // The call was cancelled (its connection closed): leave, and pass on a notification
        // received and not acted on.
        let mut state = self.waiters.state.lock();
        let id = self.id;
        let had_notification = if state.signalled.remove(&id) {
            true
        } else {
            state.waiting.retain(|waiting| *waiting != id);
            self.notified
        };
        if had_notification && state.notify(1) {
            drop(state);
            self.waiters.signalled.notify_waiters();
        }
    }
}

/// The server side of a shared `Condition`: a re-entrant lock, owned like an `RLock`, and the
/// queue of its waiters.
#[derive(Debug)]
pub struct ConditionObject {
    lock: Arc<LockCore>,
    waiters: Waiters,
}

impl ConditionObject {
    /// A new condition with an unlocked lock of its own.
    pub fn new() -> ConditionObject {
        ConditionObject {
            lock: LockCore::new(typeids::CONDITION, true),
            waiters: Waiters::default(),
        }
    }
}

impl Default for ConditionObject {
    fn default() -> Self {
        ConditionObject::new()
    }
}

lock_object! {
    impl ConditionObject, lock, owner = [owner], quick = [notify, notify_all, n_waiting],
    {
        /// Python's `wait(timeout)`: releases the lock, waits until notified (at most `timeout`
        /// seconds when given), re-acquires the lock, and answers whether it was notified. A
        /// `Runtime` error when `owner` does not hold the lock.
        pub async fn wait(
            &self,
            timeout: Option<f64>,
            owner: u64,
            ctx: &CallContext,
        ) -> Result<bool, RemoteError> {
            let limit = timeout_of(timeout, typeids::CONDITION, "wait")?;
            let who = Holder::of(ctx, owner);
            // The wait re-acquires the lock: the connection must release it if it closes.
            self.lock.watch(ctx);
            let Some((depth, id)) = self.lock.release_all_after(who, || self.waiters.register()) else {
                return Err(runtime_error(
                    typeids::CONDITION,
                    "wait",
                    "cannot wait on un-acquired lock",
                ));
            };
            let mut ticket = Ticket {
                waiters: &self.waiters,
                id,
                notified: false,
                done: false,
            };
            let notified = match limit {
                None => {
                    ticket.notified().await;
                    true
                }
                Some(limit) => match tokio::time::timeout(limit, ticket.notified()).await {
                    Ok(()) => true,
                    Err(_) => ticket.give_up(),
                },
            };
            self.lock.acquire(who, depth, Wait::Forever, ctx).await;
            ticket.done = true;
            Ok(notified)
        }

        /// Python's `notify(n)`: wakes up to `n` waiters. A `Runtime` error when `owner` does not
        /// hold the lock.
        pub fn notify(&self, n: u64, owner: u64, ctx: &CallContext) -> Result<(), RemoteError> {
            self.lock
                .if_held(Holder::of(ctx, owner), || self.waiters.notify(n))
                .ok_or_else(|| {
                    runtime_error(
                        typeids::CONDITION,
                        "notify",
                        "cannot notify on un-acquired lock",
                    )
                })
        }

        /// Python's `notify_all()`: wakes every waiter. A `Runtime` error when `owner` does not
        /// hold the lock.
        pub fn notify_all(&self, owner: u64, ctx: &CallContext) -> Result<(), RemoteError> {
            self.lock
                .if_held(Holder::of(ctx, owner), || self.waiters.notify(u64::MAX))
                .ok_or_else(|| {
                    runtime_error(
                        typeids::CONDITION,
                        "notify_all",
                        "cannot notify on un-acquired lock",
                    )
                })
        }

        /// How many calls wait for a notification (not those notified and waiting to re-acquire
        /// the lock).
        pub fn n_waiting(&self) -> u64 {
            self.waiters.state.lock().waiting.len() as u64
        }
    }
}

/// A shared condition variable with its own re-entrant lock (Python's `manager.Condition()`),
/// with async methods.
///
/// The lock is owned like an [`RLockProxy`](crate::sync::RLockProxy)'s: by the calling tokio
/// task or, outside a task, the calling thread, through this connection. `wait`, `notify` and
/// `notify_all` need the caller to hold it.
///
/// Cancelling a `wait` future (dropping it before it completes) does not cancel the wait in
/// the server: the lock is re-acquired when that wait ends. Use
/// [`ConditionProxy::wait_timeout`] rather than a timeout around `wait`.
pub struct ConditionProxy(Typed<(), ConditionObjectRawProxy>);

acquirer! {
    ConditionProxy for ConditionObject,
    /// A shared condition variable with its own re-entrant lock (Python's
    /// `manager.Condition()`), with blocking methods.
    ///
    /// The lock is owned like a [`RLockBlockingProxy`](crate::sync::RLockBlockingProxy)'s: by
    /// the calling thread, through this connection. `wait`, `notify` and `notify_all` need the
    /// caller to hold it.
    ConditionBlockingProxy,
    owner = current_owner(),
    acquire(blocking, timeout, owner) -> (bool, Option<f64>, u64) =
        ConditionObjectRawProxy::acquire_call(blocking, timeout, owner),
    release(owner) = ConditionObjectRawProxy::release_call(owner),
    what = "the lock",
    release_doc = "Releases one level of the lock; a `Runtime` error when the caller does not own it.",
    with = " (Python's `with condition:`)."
}

#[crate::blocking_twin(ConditionBlockingProxy, via = settled)]
impl ConditionProxy {
    /// Whether the lock is held (by anyone).
    pub async fn locked(&self) -> Result<bool, Error>;

    /// How many calls (of any client) wait for a notification.
    pub async fn n_waiting(&self) -> Result<u64, Error>;

    /// Releases the lock, waits until notified, and re-acquires the lock (Python's
    /// `wait()`). A `Runtime` error when the caller does not hold the lock.
    pub async fn wait(&self) -> Result<(), Error> {
        settled(self.base(), self.0.raw.wait(None, current_owner()))
            .await
            .map(drop)
    }

    /// Like [`ConditionProxy::wait`], waiting at most `timeout` for the notification: whether
    /// it came (Python's `wait(timeout)`). The lock is re-acquired either way.
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        settled(
            self.base(),
            self.0.raw.wait(seconds(timeout), current_owner()),
        )
        .await
    }

    /// Wakes up to `n` waiters (Python's `notify(n)`). A `Runtime` error when the caller does
    /// not hold the lock.
    pub async fn notify(&self, n: u64) -> Result<(), Error> {
        settled(self.base(), self.0.raw.notify(n, current_owner())).await
    }

    /// Wakes every waiter (Python's `notify_all()`). A `Runtime` error when the caller does
    /// not hold the lock.
    pub async fn notify_all(&self) -> Result<(), Error> {
        settled(self.base(), self.0.raw.notify_all(current_owner())).await
    }
}

impl ConditionProxy {
    /// Waits until `predicate` answers true, checking it first and then after each wake-up
    /// (Python's `wait_for(predicate, timeout)`, looping in the client as CPython's proxy
    /// does). The caller must hold the lock; `predicate` runs while it does. With a `timeout`,
    /// gives up once that much time has passed; answers the last result of `predicate`. An
    /// error of `predicate` ends the wait with that error.
    pub async fn wait_for<F, Fut>(
        &self,
        mut predicate: F,
        timeout: Option<Duration>,
    ) -> Result<bool, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<bool, Error>>,
    {
        let deadline = timeout.map(|t| Instant::now().checked_add(t));
        let mut result = predicate().await?;
        while !result {
            match deadline {
                None | Some(None) => self.wait().await?,
                Some(Some(deadline)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    self.wait_timeout(left).await?;
                }
            }
            result = predicate().await?;
        }
        Ok(result)
    }
}

impl ConditionBlockingProxy {
    /// Waits until `predicate` answers true, checking it first and then after each wake-up
    /// (Python's `wait_for(predicate, timeout)`, looping in the client as CPython's proxy
    /// does). The caller must hold the lock; `predicate` runs while it does. With a `timeout`,
    /// gives up once that much time has passed; answers the last result of `predicate`. An
    /// error of `predicate` ends the wait with that error.
    pub fn wait_for<F>(&self, mut predicate: F, timeout: Option<Duration>) -> Result<bool, Error>
    where
        F: FnMut() -> Result<bool, Error>,
    {
        crate::client::ensure_blocking_allowed()?;
        let deadline = timeout.map(|t| Instant::now().checked_add(t));
        let mut result = predicate()?;
        while !result {
            match deadline {
                None | Some(None) => self.wait()?,
                Some(Some(deadline)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    self.wait_timeout(left)?;
                }
            }
            result = predicate()?;
        }
        Ok(result)
    }
}

crate::sync::constructors! {
    /// A new shared condition variable with a re-entrant lock of its own (Python's
    /// `manager.Condition()`).
    fn condition() -> ConditionProxy, ConditionBlockingProxy = typeids::CONDITION, ();
}

/// Registers `Condition` under its typeid.
pub(crate) fn register(registry: &mut crate::registry::Registry) -> Result<(), Error> {
    use crate::registry::Register;
    registry.register(Register::factory(typeids::CONDITION, |(): ()| {
        ConditionObject::new()
    }))?;
    Ok(())
}
