//! The releases a process sent to one server without waiting for their answers (a dropped
//! guard, an abandoned acquisition undone), by object: what a later call on the same object
//! waits for first, so that it sees the release.
//!
//! The state belongs to the connections: each connection holds an [`Unsettled`] by `Arc`,
//! made the first time one of its lock-like proxies needs it, and the state goes when the last
//! connection holding it goes. The connections of one process to one server share one: a
//! thread that drops a guard and then tells another thread, with a connection of its own to
//! the same server, to take the lock must not see that thread find it still held. They find
//! each other through [`Unsettled::of_server`], a directory that holds no state, only weak
//! references, consulted once per connection.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;

use crate::address::Address;

/// An answer on its way: done when the server has answered the release (or the connection
/// closed).
type Settled = Shared<BoxFuture<'static, ()>>;

/// The releases sent from this process to one server and not yet known to have been
/// answered, by object id (ids are unique per server).
#[derive(Default)]
pub(crate) struct Unsettled {
    by_object: Mutex<HashMap<u64, Vec<Settled>>>,
}

impl std::fmt::Debug for Unsettled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsettled")
            .field("objects", &self.by_object.lock().len())
            .finish()
    }
}

impl Unsettled {
    /// The state shared by this process's connections to the server that names itself
    /// `server`: the one a live connection to it holds, or a new one.
    pub(crate) fn of_server(server: &Address) -> Arc<Unsettled> {
        static DIRECTORY: OnceLock<Mutex<HashMap<Address, Weak<Unsettled>>>> = OnceLock::new();
        let mut directory = DIRECTORY.get_or_init(Default::default).lock();
        if let Some(shared) = directory.get(server).and_then(Weak::upgrade) {
            return shared;
        }
        // The entries of servers whose connections are all gone.
        directory.retain(|_, state| state.strong_count() > 0);
        let state = Arc::new(Unsettled::default());
        directory.insert(server.clone(), Arc::downgrade(&state));
        state
    }

    /// Waits until the server has answered every release sent for object `id`.
    pub(crate) async fn settle(&self, id: u64) {
        let pending = {
            let mut map = self.by_object.lock();
            let Some(list) = map.get_mut(&id) else {
                return;
            };
            list.retain(|answer| answer.peek().is_none());
            if list.is_empty() {
                map.remove(&id);
                return;
            }
            list.clone()
        };
        for answer in pending {
            answer.await;
        }
    }

    /// Waits until the server has answered every release sent so far, for any object.
    pub(crate) async fn settle_all(&self) {
        let pending: Vec<Settled> = {
            let mut map = self.by_object.lock();
            map.retain(|_, list| {
                list.retain(|answer| answer.peek().is_none());
                !list.is_empty()
            });
            map.values().flatten().cloned().collect()
        };
        futures::future::join_all(pending).await;
    }

    /// Makes later calls on object `id` wait for `settled`, and drives it to its end in the
    /// background (even if the object is never used again), then forgets it.
    pub(crate) fn settle_later(self: &Arc<Self>, id: u64, settled: BoxFuture<'static, ()>) {
        let settled = settled.shared();
        self.by_object
            .lock()
            .entry(id)
            .or_default()
            .push(settled.clone());
        let state = Arc::clone(self);
        crate::client::background_runtime().spawn(async move {
            settled.await;
            let mut map = state.by_object.lock();
            if let Some(list) = map.get_mut(&id) {
                list.retain(|answer| answer.peek().is_none());
                if list.is_empty() {
                    map.remove(&id);
                }
            }
        });
    }
}
