//! Events: a shared object tells its clients what happens to it, instead of being polled.
//!
//! An object keeps an [`Events<E>`] for each kind of event it has (a job board its new jobs, a
//! cache its evictions), emits from its methods with [`Events::emit`], and exposes a stream
//! method that returns [`Events::subscribe`]: each call of it is one subscription, a typed
//! stream of [`Event<E>`] on the client (`RemoteStream` on the async proxy, `BlockingStream`
//! on the blocking one).
//!
//! ```
//! # use manager_core as manager;
//! use manager::events::{Event, Events};
//! use manager::Stream;
//!
//! #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
//! pub struct Job {
//!     pub id: u64,
//!     pub what: String,
//! }
//!
//! pub struct Board {
//!     next: u64,
//!     posted: Events<Job>,
//! }
//!
//! #[manager::shared(crate = "manager_core")]
//! impl Board {
//!     /// Posts a job; every subscriber hears of it.
//!     pub fn post(&mut self, what: String) -> u64 {
//!         self.next += 1;
//!         self.posted.emit(Job { id: self.next, what });
//!         self.next
//!     }
//!
//!     /// The jobs posted from now on, as they are posted.
//!     pub fn jobs(&self) -> Stream<Event<Job>> {
//!         self.posted.subscribe()
//!     }
//! }
//! # fn main() {}
//! ```
//!
//! **A slow subscriber never holds anyone up.** Each subscription has a bounded queue (the
//! capacity given to [`Events::new`]); emitting never waits, and a subscriber that falls
//! more than that far behind loses the oldest events it has not read and is told how many,
//! as [`Event::Missed`], before the next one it gets (the policy of
//! `tokio::sync::broadcast`, which this is built on). Other subscribers, the emitter and the
//! connection go on as if it were not there; on the wire a subscription is a stream like any
//! other, within its window.
//!
//! **A subscription ends** when the client drops its stream, when its connection closes, or
//! when the object is dropped (the stream then ends after the events already queued).

use std::fmt;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::stream::Stream;

/// The default capacity of a subscription's queue: how far a subscriber may fall behind
/// before it misses events.
pub const DEFAULT_CAPACITY: usize = 1024;

/// What a subscriber receives: an event, or how many it missed by falling behind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event<E> {
    /// An event, in the order it was emitted.
    Emitted(E),
    /// This many events were emitted that this subscriber will never see: it fell behind by
    /// more than its queue holds. The events after them follow.
    Missed(u64),
}

impl<E> Event<E> {
    /// The event, or `None` for [`Event::Missed`].
    pub fn emitted(self) -> Option<E> {
        match self {
            Event::Emitted(event) => Some(event),
            Event::Missed(_) => None,
        }
    }
}

/// A kind of event a shared object emits, and its subscribers (see the
/// [module documentation](self)).
pub struct Events<E> {
    sender: broadcast::Sender<E>,
}

impl<E> fmt::Debug for Events<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("subscribers", &self.sender.receiver_count())
            .finish()
    }
}

impl<E: Clone + Serialize + Send + 'static> Default for Events<E> {
    fn default() -> Self {
        Events::new(DEFAULT_CAPACITY)
    }
}

impl<E: Clone + Serialize + Send + 'static> Events<E> {
    /// Events whose every subscriber may fall `capacity` events behind (at least 1) before it
    /// misses the oldest.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Events { sender }
    }

    /// Sends `event` to every subscriber, without waiting for any; returns how many there
    /// are.
    pub fn emit(&self, event: E) -> usize {
        self.sender.send(event).unwrap_or(0)
    }

    /// A new subscription: the events emitted from now on, for a stream method to return.
    pub fn subscribe(&self) -> Stream<Event<E>> {
        let receiver = self.sender.subscribe();
        Stream::from_stream(futures::stream::unfold(
            receiver,
            |mut receiver| async move {
                match receiver.recv().await {
                    Ok(event) => Some((Event::Emitted(event), receiver)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        Some((Event::Missed(missed), receiver))
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            },
        ))
    }

    /// How many subscriptions are open.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }
}
