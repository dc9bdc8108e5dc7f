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
use crate::sync::release::{acquirer, current_owner, settled};
use crate::sync::wait::{runtime_error, seconds, wait_mode, wait_until, Wait};
use crate::sync::{typeids, Typed};

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

    /// Python's `acquire(blocking, timeout)` of this lock for `owner` of the caller: whether it
    /// was acquired. `timeout` is in seconds (`None`: wait as long as it takes); it cannot be
    /// given with `blocking = false`.
    pub(crate) async fn acquire_for(
        self: &Arc<Self>,
        blocking: bool,
        timeout: Option<f64>,
        owner: u64,
        ctx: &CallContext,
    ) -> Result<bool, RemoteError> {
        let mode = wait_mode(blocking, timeout, self.typeid, "acquire")?;
        Ok(self.acquire(Holder::of(ctx, owner), 1, mode, ctx).await)
    }
}

/// Declares the `#[shared]` impl of a type holding a [`LockCore`] in `$core`: the lock's
/// methods, `acquire(blocking, timeout)`, `release()` and `locked()`, written here once for
/// `Lock`, `RLock` and `Condition`, then the type's own methods. With `owner = [owner]`,
/// `acquire` and `release` take the id of the caller's thread or task that owns the lock
/// (`RLock`, `Condition`; a CPython client leaves it out, and sends 0); a plain `Lock`'s
/// owner is its connection, and anyone may release it.
macro_rules! lock_object {
    (
        impl $object:ident, $core:ident, owner = [$($owner:ident)?], quick = [$($quick:ident),*],
        { $($own:tt)* }
    ) => {
        #[crate::shared(
            crate = "crate",
            proxies = raw,
            // Bounded by their arguments and results, never by the size of the object, and
            // never waiting: no worker thread needed (see `server::quick`).
            quick = [release, locked $(, $quick)*]
        )]
        impl $object {
            /// Python's `acquire(blocking, timeout)` (for `owner` of the caller, when owned):
            /// whether the lock was acquired (again, re-entrant, when `owner` holds it).
            /// `timeout` is in seconds (`None`: wait as long as it takes); it cannot be given
            /// with `blocking = false`.
            pub async fn acquire(
                &self,
                blocking: bool,
                timeout: Option<f64>,
                $($owner: u64,)?
                ctx: &CallContext,
            ) -> Result<bool, RemoteError> {
                let owner = $crate::sync::lock::owner_or_connection!($($owner)?);
                self.$core.acquire_for(blocking, timeout, owner, ctx).await
            }

            /// Releases one level of the lock; a `Runtime` error when it is not locked (or,
            /// owned, when `owner` of the caller does not hold it).
            pub fn release(&self, $($owner: u64,)? ctx: &CallContext) -> Result<(), RemoteError> {
                let owner = $crate::sync::lock::owner_or_connection!($($owner)?);
                self.$core.release(Holder::of(ctx, owner), "release", ctx)
            }

            /// Whether anyone holds the lock.
            pub fn locked(&self) -> bool {
                self.$core.locked()
            }

            $($own)*
        }
    };
}
pub(crate) use lock_object;

/// The owner of a lock's acquisition: the `owner` argument of an owned lock, else 0 (the
/// caller's connection owns it).
macro_rules! owner_or_connection {
    () => {
        0
    };
    ($owner:ident) => {
        $owner
    };
}
pub(crate) use owner_or_connection;

// ---------------------------------------------------------------------------------------------
// Server side: Lock and RLock.
// ---------------------------------------------------------------------------------------------

/// Declares the server types of `Lock` and `RLock`, which differ only in whether the lock is
/// re-entrant and owned (`owner = [owner]`).
macro_rules! lock_types {
    ($(
        $(#[$doc:meta])* $object:ident, $typeid:expr, reentrant = $reentrant:expr,
        owner = [$($owner:ident)?];
    )*) => {$(
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $object {
            core: Arc<LockCore>,
        }

        impl $object {
            /// A new, unlocked lock.
            pub fn new() -> $object {
                $object {
                    core: LockCore::new($typeid, $reentrant),
                }
            }
        }

        impl Default for $object {
            fn default() -> Self {
                $object::new()
            }
        }

        lock_object! {
            impl $object, core, owner = [$($owner)?], quick = [n_waiting],
            {
                /// How many calls wait to acquire the lock.
                pub fn n_waiting(&self) -> u64 {
                    self.core.n_waiting()
                }
            }
        }
    )*};
}

lock_types! {
    /// The server side of a shared `Lock`. Any client may release it, as in Python; when the
    /// connection that acquired it closes while holding it, it is released.
    LockObject, typeids::LOCK, reentrant = false, owner = [];

    /// The server side of a shared `RLock`: re-entrant, owned by one (connection, owner id)
    /// pair. When the owner's connection closes, the lock is released however deep it was
    /// held.
    RLockObject, typeids::RLOCK, reentrant = true, owner = [owner];
}

// ---------------------------------------------------------------------------------------------
// Client side: LockProxy and RLockProxy.
// ---------------------------------------------------------------------------------------------

/// Declares the proxies of `Lock` and `RLock`, which differ only in who owns an acquisition
/// and in their docs: each entry gives the async proxy (with its docs), the blocking twin
/// (with its docs), the server type and its raw proxy, then what [`acquirer!`] takes.
macro_rules! lock_proxies {
    ($(
        $(#[$doc:meta])* $proxy:ident,
        $(#[$bdoc:meta])* $blocking:ident for $object:ident over $raw:ident, owner = $owner:expr,
        acquire($b:ident, $t:ident, $o:ident) -> $args:ty = $acquire:expr,
        release($r:ident) = $release:expr,
        release_doc = $release_doc:literal, with = $with:literal;
    )*) => {$(
        $(#[$doc])*
        pub struct $proxy(Typed<(), $raw>);

        acquirer! {
            $proxy for $object,
            $(#[$bdoc])*
            $blocking,
            owner = $owner,
            acquire($b, $t, $o) -> $args = $acquire,
            release($r) = $release,
            what = "the lock",
            release_doc = $release_doc,
            with = $with
        }

        #[crate::blocking_twin($blocking, via = settled)]
        impl $proxy {
            /// Whether the lock is held (by anyone).
            pub async fn locked(&self) -> Result<bool, Error>;

            /// How many calls (of any client) wait to acquire the lock.
            pub async fn n_waiting(&self) -> Result<u64, Error>;
        }
    )*};
}

lock_proxies! {
    /// A shared lock (Python's `manager.Lock()`), with async methods.
    ///
    /// It is not owned: any client may release it, as in Python. When the connection that
    /// acquired it closes (the process exits or is killed) while it is held, the server
    /// releases it.
    LockProxy,
    /// A shared lock (Python's `manager.Lock()`), with blocking methods.
    ///
    /// It is not owned: any client may release it, as in Python. When the connection that
    /// acquired it closes (the process exits or is killed) while it is held, the server
    /// releases it.
    LockBlockingProxy for LockObject over LockObjectRawProxy, owner = 0,
    acquire(blocking, timeout, _owner) -> (bool, Option<f64>) =
        LockObjectRawProxy::acquire_call(blocking, timeout),
    release(_owner) = LockObjectRawProxy::release_call(),
    release_doc = "Releases the lock; a `Runtime` error when it is not locked.",
    with = " (Python's `with lock:`).";

    /// A shared re-entrant lock (Python's `manager.RLock()`), with async methods.
    ///
    /// Its owner is the calling tokio task or, outside a task, the calling thread, through
    /// this connection: the owner may acquire it again (each acquire needs its release), and
    /// only the owner may release it. When the owner's connection closes (the process exits or
    /// is killed), the server releases it however deep it was held.
    RLockProxy,
    /// A shared re-entrant lock (Python's `manager.RLock()`), with blocking methods.
    ///
    /// Its owner is the calling thread, through this connection: the owner may acquire it
    /// again (each acquire needs its release), and only the owner may release it. When the
    /// owner's connection closes (the process exits or is killed), the server releases it
    /// however deep it was held.
    RLockBlockingProxy for RLockObject over RLockObjectRawProxy, owner = current_owner(),
    acquire(blocking, timeout, owner) -> (bool, Option<f64>, u64) =
        RLockObjectRawProxy::acquire_call(blocking, timeout, owner),
    release(owner) = RLockObjectRawProxy::release_call(owner),
    release_doc = "Releases one level; a `Runtime` error when the caller does not own the lock.",
    with = " (Python's `with rlock:`).";
}

crate::sync::constructors! {
    /// A new shared lock (Python's `manager.Lock()`).
    fn lock() -> LockProxy, LockBlockingProxy = typeids::LOCK, ();

    /// A new shared re-entrant lock (Python's `manager.RLock()`).
    fn rlock() -> RLockProxy, RLockBlockingProxy = typeids::RLOCK, ();
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
