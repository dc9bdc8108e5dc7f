//! `Barrier`: a meeting point for a fixed number of parties (Python's `threading.Barrier`, as
//! `SyncManager` shares it).
//!
//! The barrier follows Python's state machine: it fills until `parties` waiters have arrived,
//! releases them all together, drains (newcomers wait until the released waiters have left),
//! and fills again. A wait that times out, or `abort`, breaks it: every waiter, present and
//! future, gets a `BrokenBarrier` error until `reset`. A `reset` with waiters present breaks
//! their wait too, and leaves the barrier usable.
//!
//! Waiting never holds a server thread or the object's lock. Where Python has no equivalent:
//!
//! - A waiter whose client goes away (it exits, crashes or is killed) withdraws: it no longer
//!   counts in `n_waiting` nor towards `parties`, and the barrier is not broken.
//! - So that indices stay distinct despite withdrawals, a waiter's index is its place among the
//!   waiters present when the barrier trips, in order of arrival: 0 for the earliest, `parties
//!   - 1` for the last (the one that trips it), as in Python when nobody withdraws.
//! - Python's `action` callable has no equivalent (a function cannot be sent to the server).

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::context::CallContext;
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::registry::{Register, Registry};
use crate::sync::wait::{deadline, seconds};
use crate::sync::{builtin_proxy, typeids, Typed};

/// Python's `_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiters arrive (Python's 0).
    Filling,
    /// The barrier tripped; the released waiters are leaving (Python's 1).
    Draining,
    /// A reset woke the waiters with an error; they are leaving (Python's -1).
    Resetting,
    /// Broken by a timeout or an abort, until reset (Python's -2).
    Broken,
}

struct BarrierState {
    phase: Phase,
    /// The waiters of the round being filled, by ticket, in order of arrival.
    waiting: Vec<u64>,
    /// The waiters inside `wait` (Python's `_count`): those filling, and those released or
    /// woken by a reset that have not left yet.
    inside: usize,
    /// The index of each waiter released by a trip, until it leaves.
    released: HashMap<u64, u64>,
    next_ticket: u64,
}

/// The server side of a shared barrier.
pub struct BarrierObject {
    parties: usize,
    /// The timeout of a `wait` that gives none, in seconds.
    timeout: Option<f64>,
    state: Mutex<BarrierState>,
    /// Signalled (every waiter) at every change of phase.
    changed: Notify,
}

/// One waiter inside `wait`; leaving (returning, failing, or being dropped because its client
/// went away) takes it out of the barrier.
struct Inside<'a> {
    barrier: &'a BarrierObject,
    ticket: u64,
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        let drained = {
            let mut state = self.barrier.state.lock();
            if let Some(at) = state.waiting.iter().position(|t| *t == self.ticket) {
                state.waiting.remove(at);
            }
            state.released.remove(&self.ticket);
            state.inside -= 1;
            // Python's `_exit`: the last waiter out of a drain or a reset lets newcomers in.
            let drained =
                state.inside == 0 && matches!(state.phase, Phase::Draining | Phase::Resetting);
            if drained {
                state.phase = Phase::Filling;
            }
            drained
        };
        if drained {
            self.barrier.changed.notify_waiters();
        }
    }
}

impl BarrierObject {
    /// A barrier for `parties` waiters whose waits last at most `timeout` seconds by default.
    fn new((parties, timeout): (u64, Option<f64>)) -> Result<BarrierObject, RemoteError> {
        let invalid = |message: &str| {
            RemoteError::new(
                RemoteErrorKind::InvalidValue,
                typeids::BARRIER,
                "create",
                message,
            )
        };
        if parties == 0 {
            return Err(invalid("parties must be > 0"));
        }
        if timeout.is_some_and(|t| t.is_nan() || t < 0.0) {
            return Err(invalid("'timeout' must be a non-negative number"));
        }
        Ok(BarrierObject {
            parties: usize::try_from(parties).unwrap_or(usize::MAX),
            timeout,
            state: Mutex::new(BarrierState {
                phase: Phase::Filling,
                waiting: Vec::new(),
                inside: 0,
                released: HashMap::new(),
                next_ticket: 0,
            }),
            changed: Notify::new(),
        })
    }

    fn broken_error() -> RemoteError {
        RemoteError::new(
            RemoteErrorKind::BrokenBarrier,
            typeids::BARRIER,
            "wait",
            "the barrier is broken",
        )
    }

    /// Breaks the barrier and wakes every waiter (Python's `_break`).
    fn break_barrier(&self) {
        self.state.lock().phase = Phase::Broken;
        self.changed.notify_waiters();
    }

    /// Python's `_enter`: waits while the barrier drains or resets, then joins the round being
    /// filled, tripping the barrier when it completes it. A `BrokenBarrier` error when it is
    /// broken.
    async fn enter(&self) -> Result<(Inside<'_>, bool), RemoteError> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state.lock();
                match state.phase {
                    Phase::Broken => return Err(Self::broken_error()),
                    Phase::Draining | Phase::Resetting => {}
                    Phase::Filling => {
                        let ticket = state.next_ticket;
                        state.next_ticket += 1;
                        state.waiting.push(ticket);
                        state.inside += 1;
                        let inside = Inside {
                            barrier: self,
                            ticket,
                        };
                        let tripped = state.waiting.len() >= self.parties;
                        if tripped {
                            // Python's `_release`: everyone present goes, with their index.
                            let released: Vec<u64> = std::mem::take(&mut state.waiting);
                            state.released.extend(released.into_iter().zip(0u64..));
                            state.phase = Phase::Draining;
                        }
                        return Ok((inside, tripped));
                    }
                }
            }
            notified.await;
        }
    }

    /// What a waiter of the current round learns: its index once released, an error once the
    /// barrier is broken or reset, or nothing yet.
    fn outcome(&self, ticket: u64) -> Option<Result<u64, RemoteError>> {
        let state = self.state.lock();
        if let Some(index) = state.released.get(&ticket) {
            return Some(Ok(*index));
        }
        match state.phase {
            Phase::Broken | Phase::Resetting => Some(Err(Self::broken_error())),
            Phase::Filling | Phase::Draining => None,
        }
    }
}

#[crate::shared(
    crate = "crate",
    proxies = raw,
    // Bounded by their arguments and results, never by the size of the object, and never
    // waiting: no worker thread needed (see `server::quick`).
    quick = [parties, n_waiting, broken]
)]
impl BarrierObject {
    /// Waits until `parties` waiters have arrived, for at most `timeout` seconds (the
    /// barrier's default timeout when `None`), and returns this waiter's index, from 0 to
    /// `parties - 1`. A timeout breaks the barrier; a `BrokenBarrier` error when it times out,
    /// is or becomes broken, or is reset while waiting.
    pub async fn wait(&self, timeout: Option<f64>) -> Result<u64, RemoteError> {
        let deadline = deadline(timeout.or(self.timeout), typeids::BARRIER, "wait")?;
        let (inside, tripped) = self.enter().await?;
        if tripped {
            self.changed.notify_waiters();
        }
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(outcome) = self.outcome(inside.ticket) {
                return outcome;
            }
            match deadline {
                None => notified.await,
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        // Python's `wait_for` checks once more before giving up.
                        if let Some(outcome) = self.outcome(inside.ticket) {
                            return outcome;
                        }
                        self.break_barrier();
                        return Err(Self::broken_error());
                    }
                }
            }
        }
    }

    /// Puts the barrier back to its empty state; waiters present get a `BrokenBarrier` error.
    /// A broken barrier becomes usable again.
    pub fn reset(&self) {
        {
            let mut state = self.state.lock();
            if state.inside > 0 {
                // Waiters of the round being filled leave with an error; Python ignores a
                // reset while the barrier drains.
                if matches!(state.phase, Phase::Filling | Phase::Broken) {
                    state.phase = Phase::Resetting;
                    state.waiting.clear();
                }
            } else {
                state.phase = Phase::Filling;
            }
        }
        self.changed.notify_waiters();
    }

    /// Breaks the barrier: waiters present and future get a `BrokenBarrier` error until
    /// `reset`.
    pub fn abort(&self) {
        self.break_barrier();
    }

    /// The number of waiters needed to trip the barrier.
    pub fn parties(&self) -> u64 {
        self.parties as u64
    }

    /// The number of waiters in the round being filled (0 while it drains, resets or is
    /// broken).
    pub fn n_waiting(&self) -> u64 {
        let state = self.state.lock();
        match state.phase {
            Phase::Filling => state.waiting.len() as u64,
            _ => 0,
        }
    }

    /// Whether the barrier is broken.
    pub fn broken(&self) -> bool {
        self.state.lock().phase == Phase::Broken
    }
}

/// Registers `Barrier`.
pub(super) fn register(registry: &mut Registry) -> Result<(), Error> {
    registry.register(Register::factory_with_context(
        typeids::BARRIER,
        |args: (u64, Option<f64>), _: &CallContext| BarrierObject::new(args),
    ))?;
    Ok(())
}

/// A shared barrier (Python's `manager.Barrier(parties, timeout=...)`), with async methods.
///
/// A waiter withdraws from the barrier when the server cancels its call: when its client
/// exits or dies (and when the client abandons the call, if it tells the server so).
pub struct BarrierProxy(Typed<(), BarrierObjectRawProxy>);

#[crate::blocking_twin(BarrierBlockingProxy)]
impl BarrierProxy {
    /// Waits until `parties` waiters have arrived (for at most the barrier's default timeout,
    /// if it has one), and returns this waiter's index, from 0 to `parties - 1`. A
    /// `BrokenBarrier` remote error when the barrier is or becomes broken, times out, or is
    /// reset while waiting.
    pub async fn wait(&self) -> Result<u64, Error> {
        self.0.raw.wait(None).await
    }

    /// Like [`wait`](BarrierProxy::wait), for at most `timeout`; when it passes, the barrier
    /// breaks and this waiter gets a `BrokenBarrier` error.
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<u64, Error> {
        self.0.raw.wait(seconds(timeout)).await
    }

    /// Puts the barrier back to its empty state; waiters present get a `BrokenBarrier` error.
    pub async fn reset(&self) -> Result<(), Error>;

    /// Breaks the barrier: waiters present and future get a `BrokenBarrier` error until
    /// [`reset`](BarrierProxy::reset).
    pub async fn abort(&self) -> Result<(), Error>;

    /// The number of waiters needed to trip the barrier.
    pub async fn parties(&self) -> Result<u64, Error>;

    /// The number of waiters in the round being filled.
    pub async fn n_waiting(&self) -> Result<u64, Error>;

    /// Whether the barrier is broken.
    pub async fn broken(&self) -> Result<bool, Error>;
}

builtin_proxy! {
    BarrierProxy for BarrierObject,
    /// A shared barrier (Python's `manager.Barrier(parties, timeout=...)`), with blocking
    /// methods.
    BarrierBlockingProxy
}

crate::sync::constructors! {
    /// A new shared barrier for `parties` waiters, whose waits last at most `timeout` unless
    /// they give their own (Python: `manager.Barrier(parties, timeout=timeout)`). An
    /// `InvalidValue` error when `parties` is 0.
    fn barrier(parties: u64, timeout: Option<Duration>) -> BarrierProxy, BarrierBlockingProxy
        = typeids::BARRIER, (parties, timeout.and_then(seconds));
}

#[cfg(test)]
mod tests {
    use std::task::Poll;

    use super::*;
    use crate::sync::wait::poll;

    fn barrier(parties: u64) -> BarrierObject {
        BarrierObject::new((parties, None)).unwrap()
    }

    type Waiter = std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, RemoteError>>>>;

    /// A new waiter of `barrier`, and what its first poll gave.
    fn arrive(barrier: &std::sync::Arc<BarrierObject>) -> (Waiter, Poll<Result<u64, RemoteError>>) {
        let barrier = barrier.clone();
        let mut waiter: Waiter = Box::pin(async move { barrier.wait(None).await });
        let first_poll = poll(&mut waiter);
        (waiter, first_poll)
    }

    /// A barrier of two parties, just tripped: its first waiter is released but has not been
    /// told its index yet, the second has been told its index, 1.
    fn tripped() -> (std::sync::Arc<BarrierObject>, Waiter, Waiter) {
        let barrier = std::sync::Arc::new(barrier(2));
        let (first, polled) = arrive(&barrier);
        assert!(polled.is_pending());
        let (second, polled) = arrive(&barrier);
        assert_eq!(polled, Poll::Ready(Ok(1)));
        (barrier, first, second)
    }

    #[test]
    fn a_withdrawn_waiter_leaves_the_indices_distinct() {
        let barrier = barrier(3);
        let mut first = Box::pin(barrier.wait(None));
        let mut second = Box::pin(barrier.wait(None));
        assert!(poll(&mut first).is_pending());
        assert!(poll(&mut second).is_pending());
        assert_eq!(barrier.n_waiting(), 2);
        drop(first);
        assert_eq!(barrier.n_waiting(), 1);
        assert!(!barrier.broken());

        let mut third = Box::pin(barrier.wait(None));
        assert!(poll(&mut third).is_pending());
        let mut fourth = Box::pin(barrier.wait(None));
        assert_eq!(
            poll(&mut fourth),
            Poll::Ready(Ok(2)),
            "the last arrival trips it"
        );
        assert_eq!(poll(&mut second), Poll::Ready(Ok(0)));
        assert_eq!(poll(&mut third), Poll::Ready(Ok(1)));
    }

    #[test]
    fn newcomers_wait_for_the_drain_even_when_a_released_waiter_is_dropped() {
        let (barrier, first, second) = tripped();
        drop(second);

        // `first` is released but has not left: the barrier drains, newcomers wait.
        let mut newcomer = Box::pin(barrier.wait(None));
        assert!(poll(&mut newcomer).is_pending());
        assert_eq!(barrier.n_waiting(), 0);
        // Its client goes away before it learns its index: the drain still completes.
        drop(first);
        assert!(poll(&mut newcomer).is_pending());
        assert_eq!(barrier.n_waiting(), 1, "the newcomer starts the next round");
        let mut last = Box::pin(barrier.wait(None));
        assert_eq!(poll(&mut last), Poll::Ready(Ok(1)));
        assert_eq!(poll(&mut newcomer), Poll::Ready(Ok(0)));
    }

    #[test]
    fn reset_while_draining_is_ignored_and_reset_of_a_broken_barrier_waits_for_its_waiters() {
        let (barrier, mut first, second) = tripped();
        barrier.reset();
        assert_eq!(poll(&mut first), Poll::Ready(Ok(0)), "as Python: ignored");
        drop((first, second));

        let mut waiter = Box::pin(barrier.wait(None));
        assert!(poll(&mut waiter).is_pending());
        barrier.abort();
        assert!(barrier.broken());
        barrier.reset();
        assert!(!barrier.broken());
        let mut newcomer = Box::pin(barrier.wait(None));
        assert!(
            poll(&mut newcomer).is_pending(),
            "waits for the reset to finish"
        );
        assert_eq!(
            poll(&mut waiter).map_err(|e| e.kind),
            Poll::Ready(Err(RemoteErrorKind::BrokenBarrier))
        );
        drop(waiter);
        assert!(poll(&mut newcomer).is_pending());
        assert_eq!(barrier.n_waiting(), 1);
    }
}
