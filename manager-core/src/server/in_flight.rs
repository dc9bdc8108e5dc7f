//! The bound on a connection's calls in flight (`ServerConfig::max_in_flight`).
//!
//! A counter rather than tokio's `Semaphore`: only the connection's read loop takes permits
//! and waits for one, so taking one is an atomic increment and giving it back a decrement,
//! with a wake-up only when the loop may be waiting; the semaphore took its waiters' lock at
//! every release.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// How many calls of one connection are in flight, and at most how many may be.
pub(super) struct InFlight {
    taken: AtomicUsize,
    max: usize,
    /// Notified when a permit comes back to a full bound.
    freed: Notify,
}

/// One call in flight; dropping it gives its place back.
pub(super) struct Permit(Arc<InFlight>);

impl InFlight {
    /// A bound of `max` calls (at least one).
    pub(super) fn new(max: usize) -> Arc<InFlight> {
        Arc::new(InFlight {
            taken: AtomicUsize::new(0),
            max: max.max(1),
            freed: Notify::new(),
        })
    }

    /// Whether a call may start now.
    pub(super) fn has_room(&self) -> bool {
        self.taken.load(Ordering::Acquire) < self.max
    }

    /// Waits until a call may start.
    pub(super) async fn room(&self) {
        while !self.has_room() {
            // `notify_one` keeps its wake-up for a waiter still to come, so a permit given
            // back between the check and this wait is not missed.
            self.freed.notified().await;
        }
    }

    /// A permit for one more call, unless `max` are in flight.
    pub(super) fn try_take(self: &Arc<Self>) -> Option<Permit> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < self.max).then_some(taken + 1)
            })
            .ok()
            .map(|_| Permit(self.clone()))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.0.taken.fetch_sub(1, Ordering::AcqRel) == self.0.max {
            self.0.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Permits run out at the bound, come back when dropped, and wake a waiter for room.
    #[tokio::test]
    async fn permits_stop_at_the_bound_and_come_back() {
        let bound = InFlight::new(2);
        let first = bound.try_take().expect("room for one");
        let second = bound.try_take().expect("room for two");
        assert!(bound.try_take().is_none());
        assert!(!bound.has_room());
        let waiter = tokio::spawn({
            let bound = bound.clone();
            async move { bound.room().await }
        });
        tokio::task::yield_now().await;
        drop(first);
        waiter.await.unwrap();
        assert!(bound.has_room());
        drop(second);
        assert!(bound.try_take().is_some());
    }
}
