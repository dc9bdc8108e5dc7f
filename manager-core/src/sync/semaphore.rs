//! `Semaphore` and `BoundedSemaphore`: shared counting semaphores (Python's
//! `threading.Semaphore` and `threading.BoundedSemaphore` as a `SyncManager` serves them).
//!
//! The server counts, per connection, the permits it holds (its acquires minus its releases,
//! never below zero). When a connection closes, the permits it still holds are given back, so
//! a killed process does not shrink the semaphore for good, as it would in Python. What is
//! given back is capped so that the value never rises above the initial value by it: a
//! semaphore used for signalling (started at 0, released by producers, acquired by consumers)
//! does not gain phantom permits when a consumer dies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::context::CallContext;
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::proxy::Proxy;
use crate::sync::release::{acquirer, settled};
use crate::sync::wait::{seconds, wait_mode, wait_until, Wait};
use crate::sync::{typeids, Typed};

#[derive(Debug, Default)]
struct SemState {
    value: u64,
    /// Permits held by each connection: its acquires minus its releases, not below zero.
    held: HashMap<u64, u64>,
}

/// A counting semaphore as the server keeps it.
#[derive(Debug)]
struct SemCore {
    typeid: &'static str,
    initial: u64,
    bounded: bool,
    state: Mutex<SemState>,
    /// Woken whenever permits are released.
    released: Notify,
    /// How many calls wait for a permit.
    waiting: AtomicU64,
}

impl SemCore {
    fn new(typeid: &'static str, value: u64, bounded: bool) -> Arc<SemCore> {
        Arc::new(SemCore {
            typeid,
            initial: value,
            bounded,
            state: Mutex::new(SemState {
                value,
                held: HashMap::new(),
            }),
            released: Notify::new(),
            waiting: AtomicU64::new(0),
        })
    }

    /// Makes sure that the caller's connection gives its permits back when it closes.
    fn watch(self: &Arc<Self>, ctx: &CallContext) {
        let core = Arc::downgrade(self);
        let conn = ctx.connection_id();
        ctx.on_close(move || {
            if let Some(core) = core.upgrade() {
                core.release_connection(conn);
            }
        });
    }

    /// Takes a permit for the caller's connection if one is free. Never for a closed connection.
    fn try_take(&self, ctx: &CallContext) -> bool {
        let mut state = self.state.lock();
        if ctx.is_closed() || state.value == 0 {
            return false;
        }
        state.value -= 1;
        *state.held.entry(ctx.connection_id()).or_default() += 1;
        true
    }

    async fn acquire(self: &Arc<Self>, mode: Wait, ctx: &CallContext) -> bool {
        self.watch(ctx);
        wait_until(&self.released, &self.waiting, mode, || {
            self.try_take(ctx).then_some(())
        })
        .await
        .is_some()
    }

    fn release(&self, n: u64, ctx: &CallContext) -> Result<(), RemoteError> {
        if n == 0 {
            return Err(RemoteError::new(
                RemoteErrorKind::InvalidValue,
                self.typeid,
                "release",
                "n must be one or more",
            ));
        }
        let mut state = self.state.lock();
        if ctx.is_closed() {
            // Already given back by the connection's cleanup, or about to be: a release that
            // runs after it (the server cancels a closed connection's calls, but one may
            // still run) must not give the permits back a second time.
            return Ok(());
        }
        let value = state.value.checked_add(n);
        let value = match value {
            Some(value) if !self.bounded || value <= self.initial => value,
            _ => {
                return Err(RemoteError::new(
                    RemoteErrorKind::InvalidValue,
                    self.typeid,
                    "release",
                    "Semaphore released too many times",
                ))
            }
        };
        state.value = value;
        let conn = ctx.connection_id();
        if let Some(held) = state.held.get_mut(&conn) {
            *held = held.saturating_sub(n);
            if *held == 0 {
                state.held.remove(&conn);
            }
        }
        drop(state);
        self.released.notify_waiters();
        Ok(())
    }

    /// Gives back the permits connection `conn` holds (it has closed), without raising the
    /// value above the initial value.
    fn release_connection(&self, conn: u64) {
        let mut state = self.state.lock();
        let held = state.held.remove(&conn).unwrap_or(0);
        let back = held.min(self.initial.saturating_sub(state.value));
        if back > 0 {
            state.value += back;
            drop(state);
            self.released.notify_waiters();
        }
    }

    fn value(&self) -> u64 {
        self.state.lock().value
    }
}

/// The server side of a shared semaphore: `value` permits. A `Semaphore`
/// (`SemaphoreObject<false>`) allows releases beyond it (they raise the value, as in Python); a
/// `BoundedSemaphore` (`SemaphoreObject<true>`) refuses a release that would raise the value
/// above its initial value with an `InvalidValue` error.
#[derive(Debug)]
pub struct SemaphoreObject<const BOUNDED: bool> {
    core: Arc<SemCore>,
}

impl<const BOUNDED: bool> SemaphoreObject<BOUNDED> {
    /// The typeid of this kind of semaphore.
    const TYPEID: &'static str = if BOUNDED {
        typeids::BOUNDED_SEMAPHORE
    } else {
        typeids::SEMAPHORE
    };

    /// A semaphore with `value` permits (the argument of `create`).
    pub fn new((value,): (u64,)) -> SemaphoreObject<BOUNDED> {
        SemaphoreObject {
            core: SemCore::new(Self::TYPEID, value, BOUNDED),
        }
    }
}

#[crate::shared(
    crate = "crate",
    proxies = raw,
    // Bounded by their arguments and results, never by the size of the object, and never
    // waiting: no worker thread needed (see `server::quick`).
    quick = [release, get_value, n_waiting]
)]
impl<const BOUNDED: bool> SemaphoreObject<BOUNDED> {
    /// Python's `acquire(blocking, timeout)`: whether a permit was taken. `timeout` is in
    /// seconds (`None`: wait as long as it takes); it cannot be given with `blocking = false`.
    pub async fn acquire(
        &self,
        blocking: bool,
        timeout: Option<f64>,
        ctx: &CallContext,
    ) -> Result<bool, RemoteError> {
        let mode = wait_mode(blocking, timeout, Self::TYPEID, "acquire")?;
        Ok(self.core.acquire(mode, ctx).await)
    }

    /// Python's `release(n)`: gives `n` permits back; an `InvalidValue` error when `n` is 0,
    /// or, bounded, ("Semaphore released too many times") when the value would exceed its
    /// initial value.
    pub fn release(&self, n: u64, ctx: &CallContext) -> Result<(), RemoteError> {
        self.core.release(n, ctx)
    }

    /// The number of free permits.
    pub fn get_value(&self) -> u64 {
        self.core.value()
    }

    /// How many calls wait for a permit.
    pub fn n_waiting(&self) -> u64 {
        self.core.waiting.load(Ordering::Relaxed)
    }
}

/// Defines a semaphore proxy pair over the one raw proxy: the two typeids share one client API.
macro_rules! semaphore_proxy {
    (
        $(#[$doc:meta])* $proxy:ident for $object:ty,
        $(#[$bdoc:meta])* $blocking:ident,
        $release_doc:literal
    ) => {
        $(#[$doc])*
        pub struct $proxy(Typed<(), SemaphoreObjectRawProxy>);

        acquirer! {
            $proxy for $object,
            $(#[$bdoc])*
            $blocking,
            owner = 0,
            acquire(blocking, timeout, _owner) -> (bool, Option<f64>) =
                SemaphoreObjectRawProxy::acquire_call(blocking, timeout),
            release(_owner) = SemaphoreObjectRawProxy::release_call(1),
            what = "a permit",
            release_doc = $release_doc,
            with = " (Python's `with semaphore:`)."
        }

        #[crate::blocking_twin($blocking, via = settled)]
        impl $proxy {
            /// Gives `n` permits back at once (Python's `release(n)`); an `InvalidValue` error
            /// when `n` is 0.
            pub async fn release_n(&self, n: u64) -> Result<(), Error> {
                settled(self.base(), self.0.raw.release(n)).await
            }

            /// The number of free permits.
            pub async fn get_value(&self) -> Result<u64, Error>;

            /// How many calls (of any client) wait for a permit.
            pub async fn n_waiting(&self) -> Result<u64, Error>;
        }
    };
}

semaphore_proxy! {
    /// A shared semaphore (Python's `manager.Semaphore(value)`), with async methods.
    ///
    /// Permits a process still holds when its connection closes (it exits or is killed) are
    /// given back, up to the initial value.
    SemaphoreProxy for SemaphoreObject<false>,
    /// A shared semaphore (Python's `manager.Semaphore(value)`), with blocking methods.
    ///
    /// Permits a process still holds when its connection closes (it exits or is killed) are
    /// given back, up to the initial value.
    SemaphoreBlockingProxy,
    "Gives a permit back (any client may, and the value may exceed the initial value)."
}

semaphore_proxy! {
    /// A shared bounded semaphore (Python's `manager.BoundedSemaphore(value)`), with async
    /// methods.
    ///
    /// Permits a process still holds when its connection closes (it exits or is killed) are
    /// given back.
    BoundedSemaphoreProxy for SemaphoreObject<true>,
    /// A shared bounded semaphore (Python's `manager.BoundedSemaphore(value)`), with blocking
    /// methods.
    ///
    /// Permits a process still holds when its connection closes (it exits or is killed) are
    /// given back.
    BoundedSemaphoreBlockingProxy,
    "Gives a permit back; an `InvalidValue` error (\"Semaphore released too many times\") when the value would exceed its initial value."
}

crate::sync::constructors! {
    /// A new shared semaphore with `value` permits (Python's `manager.Semaphore(value)`).
    fn semaphore(value: u64) -> SemaphoreProxy, SemaphoreBlockingProxy
        = typeids::SEMAPHORE, (value,);

    /// A new shared bounded semaphore with `value` permits (Python's
    /// `manager.BoundedSemaphore(value)`).
    fn bounded_semaphore(value: u64) -> BoundedSemaphoreProxy, BoundedSemaphoreBlockingProxy
        = typeids::BOUNDED_SEMAPHORE, (value,);
}

/// Registers `Semaphore` and `BoundedSemaphore` under their typeids.
pub(crate) fn register(registry: &mut crate::registry::Registry) -> Result<(), Error> {
    use crate::registry::Register;
    registry.register(Register::factory(
        typeids::SEMAPHORE,
        SemaphoreObject::<false>::new,
    ))?;
    registry.register(Register::factory(
        typeids::BOUNDED_SEMAPHORE,
        SemaphoreObject::<true>::new,
    ))?;
    Ok(())
}
