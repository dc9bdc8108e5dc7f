//! `Lock` and `RLock`: shared mutual-exclusion locks (Python's `threading.Lock` and
//! `threading.RLock` as a `SyncManager` serves them), and the lock state `Condition` shares.
//!
//! # Server side
//!
//! Every method takes `&self` and keeps its state behind a `parking_lot` mutex, woken through a
//! [`tokio::sync::Notify`]; a waiting call is a suspended future, not a blocked thread. A waiter
//! takes what it waits for (the lock, a permit) synchronously in the same poll that finds it
//! free, so a waiter whose future is dropped (its timeout expired, or its client's connection
//! closed and the server cancelled the call) never took anything.
//!
//! Unlike Python's, a lock does not stay held when its holder dies: the first call of a
//! connection registers a [`CallContext::on_close`] cleanup that releases whatever that
//! connection still holds. A waiter also never takes a lock for a connection that has closed
//! (its cleanup may have run already).
//!
//! # Client side
//!
//! Python's owner of an `RLock` is a thread. Here it is the pair (connection, owner id), where
//! the client sends an owner id derived from the calling tokio task (`tokio::task::try_id()`)
//! or, outside a task, from the calling thread: see [`current_owner`].
//!
//! Guards, acquisitions that undo themselves and releases sent without waiting live in
//! `release`; timeouts and waiting in `wait`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::context::CallContext;
use crate::error::{Error, RemoteError};
use crate::proxy::Proxy;
use crate::sync::release::{
    acquire_call, current_owner, owned_lock, settled, BlockingLockGuard, LockGuard,
};
use crate::sync::wait::{runtime_error, seconds, wait_mode, wait_until, Wait};
use crate::sync::{builtin_proxy, typeids, Typed};

// ---------------------------------------------------------------------------------------------
// Server side: the lock state Lock, RLock and Condition share.
// ---------------------------------------------------------------------------------------------

/// Who holds a lock: a connection and, within it, an owner (a thread or task of the client;
/// always 0 for a plain `Lock`, whose owner is its connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) conn: u64,
    pub(crate) owner: u64,
}

impl Holder {
    /// The caller of `ctx`, as `owner`.
    pub(crate) fn of(ctx: &CallContext, owner: u64) -> Holder {
        Holder {
            conn: ctx.connection_id(),
            owner,
        }
    }
}

#[derive(Debug, Default)]
struct LockState {
    holder: Option<Holder>,
    /// How many times the holder acquired it (always 1 for a plain lock).
    count: u64,
}

/// A lock as the server keeps it: plain (`Lock`) or re-entrant (`RLock`, and the lock of a
/// `Condition`).
#[derive(Debug)]
pub(crate) struct LockCore {
    typeid: &'static str,
    reentrant: bool,
    state: Mutex<LockState>,
    /// Woken whenever the lock becomes free.
    freed: Notify,
    /// How many calls wait to acquire it.
    waiting: AtomicU64,
}

impl LockCore {
    pub(crate) fn new(typeid: &'static str, reentrant: bool) -> Arc<LockCore> {
        Arc::new(LockCore {
            typeid,
            reentrant,
            state: Mutex::new(LockState::default()),
            freed: Notify::new(),
            waiting: AtomicU64::new(0),
        })
    }

    /// Makes sure that the caller's connection releases this lock when it closes.
    pub(crate) fn watch(self: &Arc<Self>, ctx: &CallContext) {
        let core = Arc::downgrade(self);
        let conn = ctx.connection_id();
        ctx.on_close(move || {
            if let Some(core) = core.upgrade() {
                core.release_connection(conn);
            }
        });
    }

    /// Takes the lock `count` times for `who` if it is free (or, re-entrant, already `who`'s).
    /// Never for a closed connection: its cleanup may have run already, and nobody would
    /// release it.
    fn try_take(&self, who: Holder, count: u64, ctx: &CallContext) -> bool {
        let mut state = self.state.lock();
        if ctx.is_closed() {
            return false;
        }
        match state.holder {
            None => {
                state.holder = Some(who);
                state.count = count;
                true
            }
            Some(holder) if self.reentrant && holder == who => {
                state.count += count;
                true
            }
            Some(_) => false,
        }
    }

    /// Acquires the lock `count` times for `who`, waiting as `mode` allows. Whether it got it.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        who: Holder,
        count: u64,
        mode: Wait,
        ctx: &CallContext,
    ) -> bool {
        self.watch(ctx);
        wait_until(&self.freed, &self.waiting, mode, || {
            self.try_take(who, count, ctx).then_some(())
        })
        .await
        .is_some()
    }

    /// Releases one level of the lock for `who`. A plain lock may be released by anyone (as in
    /// Python); a re-entrant one only by its holder.
    ///
    /// A release from a closed connection does nothing: the server cancels the calls of a
    /// closed connection, but one may still run once the connection's cleanup has released
    /// what it held (a guard's release sent just before its process exited, say), and it must
    /// not release the lock again, now held by someone else.
    pub(crate) fn release(
        &self,
        who: Holder,
        method: &str,
        ctx: &CallContext,
    ) -> Result<(), RemoteError> {
        let mut state = self.state.lock();
        if ctx.is_closed() {
            return Ok(());
        }
        match state.holder {
            None if self.reentrant => Err(runtime_error(
                self.typeid,
                method,
                "cannot release un-acquired lock",
            )),
            None => Err(runtime_error(self.typeid, method, "release unlocked lock")),
            Some(holder) if self.reentrant && holder != who => Err(runtime_error(
                self.typeid,
                method,
                "cannot release un-acquired lock",
            )),
            Some(_) => {
                state.count = state.count.saturating_sub(1);
                if state.count == 0 || !self.reentrant {
                    state.holder = None;
                    state.count = 0;
                    drop(state);
                    self.freed.notify_waiters();
                }
                Ok(())
            }
        }
    }

    /// Whether anyone holds the lock.
    pub(crate) fn locked(&self) -> bool {
        self.state.lock().holder.is_some()
    }

    /// How many calls wait to acquire the lock.
    pub(crate) fn n_waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// If `who` holds the lock, runs `then` while the holder cannot change, and returns its
    /// result.
    pub(crate) fn if_held<R>(&self, who: Holder, then: impl FnOnce() -> R) -> Option<R> {
        let state = self.state.lock();
        (state.holder == Some(who)).then(then)
    }

    /// If `who` holds the lock, runs `then` and releases the lock completely, in one step;
    /// returns how many times `who` held it, with `then`'s result.
    pub(crate) fn release_all_after<R>(
        &self,
        who: Holder,
        then: impl FnOnce() -> R,
    ) -> Option<(u64, R)> {
        let mut state = self.state.lock();
        if state.holder != Some(who) {
            return None;
        }
        let result = then();
        let count = std::mem::take(&mut state.count);
        state.holder = None;
        drop(state);
        self.freed.notify_waiters();
        Some((count, result))
    }

    /// Releases the lock if connection `conn` holds it (the connection has closed).
    pub(crate) fn release_connection(&self, conn: u64) {
        let mut state = self.state.lock();
        if state.holder.is_some_and(|holder| holder.conn == conn) {
            state.holder = None;
            state.count = 0;
            drop(state);
            self.freed.notify_waiters();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server side: Lock and RLock.
// ---------------------------------------------------------------------------------------------

/// The server side of a shared `Lock`. Any client may release it, as in Python; when the
/// connection that acquired it closes while holding it, it is released.
#[derive(Debug)]
pub struct LockObject {
    core: Arc<LockCore>,
}

impl LockObject {
    /// A new, unlocked lock.
    pub fn new() -> LockObject {
        LockObject {
            core: LockCore::new(typeids::LOCK, false),
        }
    }
}

impl Default for LockObject {
    fn default() -> Self {
        LockObject::new()
    }
}

#[crate::shared(
    crate = "crate",
    proxies = raw,
    // Bounded by their arguments and results, never by the size of the object, and never
    // waiting: no worker thread needed (see `server::quick`).
    quick = [release, locked, n_waiting]
)]
impl LockObject {
    /// Python's `acquire(blocking, timeout)`: whether the lock was acquired. `timeout` is in
    /// seconds (`None`: wait as long as it takes); it cannot be given with `blocking = false`.
    pub async fn acquire(
        &self,
        blocking: bool,
        timeout: Option<f64>,
        ctx: &CallContext,
    ) -> Result<bool, RemoteError> {
        let mode = wait_mode(blocking, timeout, typeids::LOCK, "acquire")?;
        Ok(self.core.acquire(Holder::of(ctx, 0), 1, mode, ctx).await)
    }

    /// Releases the lock; a `Runtime` error when it is not locked.
    pub fn release(&self, ctx: &CallContext) -> Result<(), RemoteError> {
        self.core.release(Holder::of(ctx, 0), "release", ctx)
    }

    /// Whether the lock is held.
    pub fn locked(&self) -> bool {
        self.core.locked()
    }

    /// How many calls wait to acquire the lock.
    pub fn n_waiting(&self) -> u64 {
        self.core.n_waiting()
    }
}

/// The server side of a shared `RLock`: re-entrant, owned by one (connection, owner id) pair.
/// When the owner's connection closes, the lock is released however deep it was held.
#[derive(Debug)]
pub struct RLockObject {
    core: Arc<LockCore>,
}

impl RLockObject {
    /// A new, unlocked re-entrant lock.
    pub fn new() -> RLockObject {
        RLockObject {
            core: LockCore::new(typeids::RLOCK, true),
        }
    }
}

impl Default for RLockObject {
    fn default() -> Self {
        RLockObject::new()
    }
}

#[crate::shared(
    crate = "crate",
    proxies = raw,
    // Bounded by their arguments and results, never by the size of the object, and never
    // waiting: no worker thread needed (see `server::quick`).
    quick = [release, locked, n_waiting]
)]
impl RLockObject {
    /// Python's `acquire(blocking, timeout)` for the thread or task `owner` of the caller:
    /// whether the lock was acquired (again, when `owner` already holds it).
    pub async fn acquire(
        &self,
        blocking: bool,
        timeout: Option<f64>,
        owner: u64,
        ctx: &CallContext,
    ) -> Result<bool, RemoteError> {
        let mode = wait_mode(blocking, timeout, typeids::RLOCK, "acquire")?;
        Ok(self
            .core
            .acquire(Holder::of(ctx, owner), 1, mode, ctx)
            .await)
    }

    /// Releases one level; a `Runtime` error when `owner` of the caller does not hold it.
    pub fn release(&self, owner: u64, ctx: &CallContext) -> Result<(), RemoteError> {
        self.core.release(Holder::of(ctx, owner), "release", ctx)
    }

    /// Whether anyone holds the lock.
    pub fn locked(&self) -> bool {
        self.core.locked()
    }

    /// How many calls wait to acquire the lock.
    pub fn n_waiting(&self) -> u64 {
        self.core.n_waiting()
    }
}

// ---------------------------------------------------------------------------------------------
// Client side: LockProxy and RLockProxy.
// ---------------------------------------------------------------------------------------------

/// A shared lock (Python's `manager.Lock()`), with async methods.
///
/// It is not owned: any client may release it, as in Python. When the connection that
/// acquired it closes (the process exits or is killed) while it is held, the server releases
/// it.
pub struct LockProxy(Typed<(), LockObjectRawProxy>);

impl LockProxy {
    async fn acquire_with(&self, blocking: bool, timeout: Option<f64>) -> Result<bool, Error> {
        acquire_call(
            self.base(),
            LockObjectRawProxy::acquire_call(blocking, timeout),
            LockObjectRawProxy::release_call(),
        )
        .await
    }

    /// Waits until the lock is acquired and returns a guard that releases it when dropped
    /// (Python's `with lock:`).
    pub async fn lock(&self) -> Result<LockGuard<'_>, Error> {
        self.acquire().await?;
        Ok(LockGuard::new(
            self.base(),
            LockObjectRawProxy::release_call(),
        ))
    }
}

#[crate::blocking_twin(LockBlockingProxy)]
impl LockProxy {
    /// Waits until the lock is acquired.
    pub async fn acquire(&self) -> Result<(), Error> {
        self.acquire_with(true, None).await.map(drop)
    }

    /// Waits at most `timeout` for the lock: whether it was acquired.
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<bool, Error> {
        self.acquire_with(true, seconds(timeout)).await
    }

    /// Acquires the lock if it is free, without waiting: whether it was acquired.
    pub async fn try_acquire(&self) -> Result<bool, Error> {
        self.acquire_with(false, None).await
    }

    /// Releases the lock; a `Runtime` error when it is not locked.
    pub async fn release(&self) -> Result<(), Error> {
        settled(self.base(), self.0.raw.release()).await
    }

    /// Whether the lock is held (by anyone).
    pub async fn locked(&self) -> Result<bool, Error> {
        settled(self.base(), self.0.raw.locked()).await
    }

    /// How many calls (of any client) wait to acquire the lock.
    pub async fn n_waiting(&self) -> Result<u64, Error> {
        settled(self.base(), self.0.raw.n_waiting()).await
    }
}

builtin_proxy! {
    LockProxy for LockObject,
    /// A shared lock (Python's `manager.Lock()`), with blocking methods.
    ///
    /// It is not owned: any client may release it, as in Python. When the connection that
    /// acquired it closes (the process exits or is killed) while it is held, the server
    /// releases it.
    LockBlockingProxy
}

impl LockBlockingProxy {
    /// Waits until the lock is acquired and returns a guard that releases it when dropped
    /// (Python's `with lock:`).
    pub fn lock(&self) -> Result<BlockingLockGuard<'_>, Error> {
        crate::proxy::blocking::run(self.0.lock()).map(BlockingLockGuard::new)
    }
}

/// A shared re-entrant lock (Python's `manager.RLock()`), with async methods.
///
/// Its owner is the calling tokio task or, outside a task, the calling thread, through this
/// connection: the owner may acquire it again (each acquire needs its release), and only the
/// owner may release it. When the owner's connection closes (the process exits or is killed),
/// the server releases it however deep it was held.
pub struct RLockProxy(Typed<(), RLockObjectRawProxy>);

owned_lock!(
    RLockProxy,
    RLockObjectRawProxy,
    RLockBlockingProxy,
    "Releases one level; a `Runtime` error when the caller does not own the lock.",
    " (Python's `with rlock:`)."
);

#[crate::blocking_twin(RLockBlockingProxy)]
impl RLockProxy {
    /// How many calls (of any client) wait to acquire the lock.
    pub async fn n_waiting(&self) -> Result<u64, Error> {
        settled(self.base(), self.0.raw.n_waiting()).await
    }
}

builtin_proxy! {
    RLockProxy for RLockObject,
    /// A shared re-entrant lock (Python's `manager.RLock()`), with blocking methods.
    ///
    /// Its owner is the calling thread, through this connection: the owner may acquire it
    /// again (each acquire needs its release), and only the owner may release it. When the
    /// owner's connection closes (the process exits or is killed), the server releases it
    /// however deep it was held.
    RLockBlockingProxy
}

impl crate::manager::Manager {
    /// A new shared lock (Python's `manager.Lock()`).
    pub async fn lock(&self) -> Result<LockProxy, Error> {
        self.create_dynamic(typeids::LOCK, ())
            .await
            .map(Proxy::from_base)
    }

    /// A new shared re-entrant lock (Python's `manager.RLock()`).
    pub async fn rlock(&self) -> Result<RLockProxy, Error> {
        self.create_dynamic(typeids::RLOCK, ())
            .await
            .map(Proxy::from_base)
    }
}

impl crate::manager::BlockingManager {
    /// A new shared lock (Python's `manager.Lock()`).
    pub fn lock(&self) -> Result<LockBlockingProxy, Error> {
        self.create_dynamic(typeids::LOCK, ()).map(Proxy::from_base)
    }

    /// A new shared re-entrant lock (Python's `manager.RLock()`).
    pub fn rlock(&self) -> Result<RLockBlockingProxy, Error> {
        self.create_dynamic(typeids::RLOCK, ())
            .map(Proxy::from_base)
    }
}

/// Registers `Lock` and `RLock` under their typeids.
pub(crate) fn register(registry: &mut crate::registry::Registry) -> Result<(), Error> {
    use crate::registry::Register;
    registry.register(Register::factory(typeids::LOCK, |(): ()| LockObject::new()))?;
    registry.register(Register::factory(typeids::RLOCK, |(): ()| {
        RLockObject::new()
    }))?;
    Ok(())
}
