//! The client half of every lock-like built-in (`Lock`, `RLock`, `Semaphore`,
//! `BoundedSemaphore`, `Condition`): who owns an acquisition, acquiring calls that undo
//! themselves when abandoned, the guards, and the releases sent without waiting.
//!
//! A guard ([`LockGuard`], [`BlockingLockGuard`]) releases on drop without waiting for the
//! answer. So that the dropping client still sees its own release, every later call on the
//! same object from this process first waits for the answers of the releases sent before it
//! (kept with the connections to the object's server: see [`super::settle`]). An acquiring
//! call whose future is dropped, or whose deadline passes, before its answer arrives does not
//! leak the lock either: the answer is awaited in the background and what was acquired is
//! released.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::{BoxFuture, FutureExt};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::client::{Connection, Response};
use crate::error::Error;
use crate::proxy::shape::{Checked, Shape};
use crate::proxy::{BaseProxy, MethodCall};

/// The owner id the calling thread or task sends to an `RLock` or a `Condition`: a hash of the
/// current tokio task id (an even number) inside a task, else a number unique to the calling
/// thread (an odd number). Calls made from one task, or from one thread outside any task,
/// belong to one owner.
pub(crate) fn current_owner() -> u64 {
    static NEXT_THREAD: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static THREAD: u64 = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
    }
    match tokio::task::try_id() {
        Some(task) => {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            task.hash(&mut hasher);
            hasher.finish() << 1
        }
        None => (THREAD.with(|n| *n) << 1) | 1,
    }
}

type Answer = oneshot::Receiver<Result<Response, Error>>;

/// Waits until the server has answered every one-way release sent for `base`'s object from
/// this process, so that a call made after a guard is dropped sees the release.
async fn settle(base: &BaseProxy) {
    base.connection().unsettled().settle(base.token().id).await;
}

/// Makes later calls on `base`'s object from this process wait for `settled` (see
/// [`Unsettled::settle_later`](crate::sync::settle::Unsettled::settle_later)).
fn settle_later(base: &BaseProxy, settled: BoxFuture<'static, ()>) {
    base.connection()
        .unsettled()
        .settle_later(base.token().id, settled);
}

/// Sends `call` to `base`'s object without waiting for the answer (what a guard does when
/// dropped). Later calls on the object from this process wait for the answer first.
pub(crate) fn call_later<A: Serialize, S>(base: &BaseProxy, call: MethodCall<A, S>) {
    let id = base.token().id;
    let Ok(answer) = base
        .connection()
        .start(Connection::call_frame(id, call.method, &call.args))
    else {
        // The connection is closed: the server releases what it held.
        return;
    };
    settle_later(
        base,
        async move {
            let _ = answer.await;
        }
        .boxed(),
    );
}

/// Runs `call` (a call of the raw proxy of `base`'s object) once the releases sent earlier
/// have been answered.
pub(crate) async fn settled<F: Future>(base: &BaseProxy, call: F) -> F::Output {
    settle(base).await;
    call.await
}

/// Sends `call` to `base`'s object once the releases sent earlier have been answered, and
/// waits for its answer.
async fn call_now<A: Serialize, S: Shape>(
    base: &BaseProxy,
    call: MethodCall<A, S>,
) -> Result<S::Output, Error> {
    settled(base, base.call::<S>(call.method, call.args)).await
}

/// An acquiring call in flight. Dropped before its answer arrived, it hands the answer to a
/// background task that undoes a successful acquisition.
struct InFlight<'a, U: Serialize + Send + 'static, S> {
    base: &'a BaseProxy,
    /// The request, to cancel if abandoned.
    id: u64,
    method: &'static str,
    answer: Option<Answer>,
    undo: Option<MethodCall<U, S>>,
}

impl<U: Serialize + Send + 'static, S> Drop for InFlight<'_, U, S> {
    fn drop(&mut self) {
        let (Some(answer), Some(undo)) = (self.answer.take(), self.undo.take()) else {
            return;
        };
        let (method, args) = (undo.method, undo.args);
        let acquire = self.method;
        // The clone keeps a reference to the object until the undo is answered. Later calls on
        // the object from this process wait for it: one made right after a timed-out acquire
        // must not find the lock taken by the acquisition it gave up on.
        let base = self.base.clone();
        // The server stops waiting, and answers `Cancelled`, or `true` if it acquired first.
        base.connection().cancel(self.id);
        settle_later(
            self.base,
            async move {
                let Ok(Ok(response)) = answer.await else {
                    return;
                };
                if let Ok(true) = Checked::<bool>::from_response(&base, acquire, response) {
                    let undo = base.connection().start(Connection::call_frame(
                        base.token().id,
                        method,
                        &args,
                    ));
                    if let Ok(undone) = undo {
                        let _ = undone.await;
                    }
                }
            }
            .boxed(),
        );
    }
}

/// Sends an acquiring call, `acquire`, that answers whether it acquired. If the returned
/// future is dropped before the answer arrives, `undo` (the release) is sent once the answer
/// says the acquisition succeeded.
async fn acquire_call<A: Serialize, U: Serialize + Send + 'static, S>(
    base: &BaseProxy,
    acquire: MethodCall<A, Checked<bool>>,
    undo: MethodCall<U, S>,
) -> Result<bool, Error> {
    settle(base).await;
    let method = acquire.method;
    let (id, answer) = base.connection().start_with_id(Connection::call_frame(
        base.token().id,
        method,
        &acquire.args,
    ))?;
    let mut in_flight = InFlight {
        base,
        id,
        method,
        answer: Some(answer),
        undo: Some(undo),
    };
    let answer = in_flight.answer.as_mut().expect("the answer is there");
    let response = match base.timeout() {
        None => answer.await,
        Some(limit) => match crate::client::within(limit, answer).await {
            Ok(response) => response,
            Err(_) => {
                // Dropping `in_flight` cancels the call, and undoes it should the server have
                // acquired meanwhile.
                return Err(Error::Timeout(format!(
                    "{}.{method} (request {id}) after {limit:?}",
                    base.token().typeid
                )));
            }
        },
    };
    in_flight.answer = None;
    match response {
        Ok(response) => Checked::<bool>::from_response(base, method, response?),
        Err(_) => Err(Error::ConnectionClosed(
            "the connection closed before the answer arrived".to_string(),
        )),
    }
}

/// What releasing a guard sends: the release call of the object's raw proxy
/// (`LockObjectRawProxy::release_call()`, `RLockObjectRawProxy::release_call(owner)`, ...).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Release {
    /// `release()`: a `Lock`.
    Plain(MethodCall<(), Checked<()>>),
    /// `release(owner)` of an `RLock` or a `Condition`, `release(1)` of a semaphore.
    With(MethodCall<(u64,), Checked<()>>),
}

impl From<MethodCall<(), Checked<()>>> for Release {
    fn from(call: MethodCall<(), Checked<()>>) -> Release {
        Release::Plain(call)
    }
}

impl From<MethodCall<(u64,), Checked<()>>> for Release {
    fn from(call: MethodCall<(u64,), Checked<()>>) -> Release {
        Release::With(call)
    }
}

impl Release {
    /// Releases now and waits for the answer.
    pub(crate) async fn now(self, base: &BaseProxy) -> Result<(), Error> {
        match self {
            Release::Plain(call) => call_now(base, call).await,
            Release::With(call) => call_now(base, call).await,
        }
    }

    fn later(self, base: &BaseProxy) {
        match self {
            Release::Plain(call) => call_later(base, call),
            Release::With(call) => call_later(base, call),
        }
    }
}

/// An acquired `Lock`, `RLock` level, `Condition` lock or semaphore permit, released when the
/// guard is dropped (without waiting for the server's answer; later calls on the same object
/// from this process see the release). [`LockGuard::release`] releases it and reports errors.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    base: &'a BaseProxy,
    release: Option<Release>,
}

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("typeid", &self.base.token().typeid)
            .field("id", &self.base.token().id)
            .finish()
    }
}

impl<'a> LockGuard<'a> {
    pub(crate) fn new(base: &'a BaseProxy, release: impl Into<Release>) -> LockGuard<'a> {
        LockGuard {
            base,
            release: Some(release.into()),
        }
    }

    /// Releases now and waits for the server's answer.
    pub async fn release(mut self) -> Result<(), Error> {
        match self.release.take() {
            Some(release) => release.now(self.base).await,
            None => Ok(()),
        }
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release.later(self.base);
        }
    }
}

/// The blocking form of [`LockGuard`]: released when dropped, or by
/// [`BlockingLockGuard::release`].
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct BlockingLockGuard<'a>(LockGuard<'a>);

impl<'a> BlockingLockGuard<'a> {
    pub(crate) fn new(guard: LockGuard<'a>) -> BlockingLockGuard<'a> {
        BlockingLockGuard(guard)
    }

    /// Releases now and waits for the server's answer.
    pub fn release(self) -> Result<(), Error> {
        crate::proxy::blocking::run(self.0.release())
    }
}

/// How a lock-like built-in's proxy acquires and releases, for the one client half that
/// [`acquirer!`] gives them all.
pub(crate) trait Acquirer: crate::proxy::Proxy {
    /// The arguments of the acquiring call.
    type Args: Serialize;

    /// Who acquires: the calling task or thread ([`current_owner`]) for an owned lock, 0 for
    /// what its connection holds (a `Lock`, a semaphore's permits).
    fn owner() -> u64;

    /// Python's `acquire(blocking, timeout)`, as `owner`.
    fn acquire_call(
        blocking: bool,
        timeout: Option<f64>,
        owner: u64,
    ) -> MethodCall<Self::Args, Checked<bool>>;

    /// The release of what `owner` acquired.
    fn release_call(owner: u64) -> Release;
}

/// Acquires for `owner`, waiting as `blocking` and `timeout` say: whether it was acquired. An
/// acquisition abandoned before its answer is undone (see [`acquire_call`]).
pub(crate) async fn acquire_as<P: Acquirer>(
    proxy: &P,
    owner: u64,
    blocking: bool,
    timeout: Option<f64>,
) -> Result<bool, Error> {
    let acquire = P::acquire_call(blocking, timeout, owner);
    match P::release_call(owner) {
        Release::Plain(undo) => acquire_call(proxy.base(), acquire, undo).await,
        Release::With(undo) => acquire_call(proxy.base(), acquire, undo).await,
    }
}

/// Waits until `proxy` is acquired, and returns the guard that releases it as the owner that
/// acquired it, wherever it is dropped.
pub(crate) async fn lock<P: Acquirer>(proxy: &P) -> Result<LockGuard<'_>, Error> {
    let owner = P::owner();
    acquire_as(proxy, owner, true, None).await?;
    Ok(LockGuard::new(proxy.base(), P::release_call(owner)))
}

/// The client half of every lock-like built-in (`Lock`, `RLock`, `Condition`'s lock,
/// `Semaphore`, `BoundedSemaphore`) on `$proxy` (of `$object`) and its blocking twin
/// `$blocking` (with its docs), made by [`builtin_proxy!`](crate::sync::builtin_proxy):
/// [`Acquirer`] from `owner` (who acquires), `acquire` (the raw proxy's acquiring call for
/// `blocking`, `timeout`, `owner`, and its arguments' type) and `release` (the raw proxy's
/// release for `owner`), and
/// from them `acquire`, `acquire_timeout`, `try_acquire`, `release` and `lock`. `what` names
/// what is acquired in the docs ("the lock", "a permit").
macro_rules! acquirer {
    (
        $proxy:ident for $object:ty, $(#[$bdoc:meta])* $blocking:ident,
        owner = $owner:expr,
        acquire($b:ident, $t:ident, $o:ident) -> $args:ty = $acquire:expr,
        release($r:ident) = $release:expr,
        what = $what:literal,
        release_doc = $release_doc:literal,
        with = $with:literal
    ) => {
        $crate::sync::builtin_proxy! {
            $proxy for $object,
            $(#[$bdoc])*
            $blocking
        }

        impl $crate::sync::release::Acquirer for $proxy {
            type Args = $args;

            fn owner() -> u64 {
                $owner
            }

            fn acquire_call(
                $b: bool,
                $t: Option<f64>,
                $o: u64,
            ) -> $crate::proxy::MethodCall<Self::Args, $crate::proxy::shape::Checked<bool>> {
                $acquire
            }

            fn release_call($r: u64) -> $crate::sync::release::Release {
                $release.into()
            }
        }

        #[crate::blocking_twin($blocking)]
        impl $proxy {
            #[doc = concat!("Waits until the caller acquires ", $what, ".")]
            pub async fn acquire(&self) -> Result<(), Error> {
                let owner = <Self as $crate::sync::release::Acquirer>::owner();
                $crate::sync::release::acquire_as(self, owner, true, None)
                    .await
                    .map(drop)
            }

            #[doc = concat!("Waits at most `timeout` to acquire ", $what, ": whether it did.")]
            pub async fn acquire_timeout(&self, timeout: Duration) -> Result<bool, Error> {
                let owner = <Self as $crate::sync::release::Acquirer>::owner();
                $crate::sync::release::acquire_as(self, owner, true, seconds(timeout)).await
            }

            #[doc = concat!("Acquires ", $what, " if it can without waiting: whether it did.")]
            pub async fn try_acquire(&self) -> Result<bool, Error> {
                let owner = <Self as $crate::sync::release::Acquirer>::owner();
                $crate::sync::release::acquire_as(self, owner, false, None).await
            }

            #[doc = $release_doc]
            pub async fn release(&self) -> Result<(), Error> {
                let owner = <Self as $crate::sync::release::Acquirer>::owner();
                let release = <Self as $crate::sync::release::Acquirer>::release_call(owner);
                release.now(self.base()).await
            }
        }

        impl $proxy {
            #[doc = concat!("Waits until the caller acquires ", $what, " and returns a guard that releases it when dropped", $with)]
            /// The guard releases as the owner that acquired, wherever it is dropped.
            pub async fn lock(&self) -> Result<$crate::sync::LockGuard<'_>, Error> {
                $crate::sync::release::lock(self).await
            }
        }

        impl $blocking {
            #[doc = concat!("Waits until the caller acquires ", $what, " and returns a guard that releases it when dropped", $with)]
            pub fn lock(&self) -> Result<$crate::sync::BlockingLockGuard<'_>, Error> {
                $crate::proxy::blocking::run(self.0.lock()).map($crate::sync::BlockingLockGuard::new)
            }
        }
    };
}
pub(crate) use acquirer;
