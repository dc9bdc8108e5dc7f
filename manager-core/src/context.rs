//! What a method of a shared type can know about the call it serves: [`CallContext`].
//!
//! The context is data (which connection, which object, a token cancelled when the connection
//! closes) with a handle to the few things the server does for it. It does not depend on the
//! server's connection type, so the model layer (`object`, `registry`) needs no server, and a
//! dispatcher can be called from a unit test or a fuzz target with [`CallContext::detached`].

use std::sync::{Arc, Weak};

use tokio_util::sync::CancellationToken;

use crate::value::Value;

/// What runs when a connection closes, registered by [`CallContext::on_close`].
pub(crate) type Cleanup = Box<dyn FnOnce() + Send>;

/// What the server does for a call's context (implemented by its connections).
pub(crate) trait Host: Send + Sync + 'static {
    /// Runs `cleanup` when the connection closes; one per object, replacing an earlier one.
    fn on_close(&self, object: u64, cleanup: Cleanup);
    /// Takes a reference to every object of this server named inside `value`.
    fn retain(&self, value: &Value) -> Result<Retained, String>;
    /// Gives the connection a reference to every object of this server named inside `value`.
    fn hand_out(&self, value: &Value);
    /// The referent of object `object`, if the server has it.
    fn referent(&self, object: u64) -> Option<crate::object::Referent>;
}

/// Releases references taken by [`CallContext::retain`] (implemented by the server's state).
pub(crate) trait Release: Send + Sync + 'static {
    /// Drops `count` references to object `id`.
    fn release(&self, id: u64, count: u64);
}

/// What a method of a shared type can know about the call it serves: which connection made it,
/// and hooks into that connection's life. A `#[shared]` method receives it by declaring a
/// parameter of type `&CallContext`; the caller does not pass it.
///
/// Built-in types use it to release a lock that a client dies holding, and to keep the objects
/// named by proxies stored inside containers alive.
#[derive(Clone)]
pub struct CallContext {
    connection: u64,
    object: u64,
    closed: CancellationToken,
    host: Option<Arc<dyn Host>>,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("connection", &self.connection)
            .field("object", &self.object)
            .finish()
    }
}

impl CallContext {
    /// The context of a call on `object` made by connection `connection` of a server.
    pub(crate) fn new(
        connection: u64,
        object: u64,
        closed: CancellationToken,
        host: Arc<dyn Host>,
    ) -> CallContext {
        CallContext {
            connection,
            object,
            closed,
            host: Some(host),
        }
    }

    /// A context that belongs to no server: for calling a dispatcher directly, in a unit test or
    /// a fuzz target. Its connection never closes, `on_close` cleanups never run, and it can
    /// neither retain nor hand out objects (values naming objects are kept without references).
    pub fn detached(object: u64) -> CallContext {
        CallContext {
            connection: 0,
            object,
            closed: CancellationToken::new(),
            host: None,
        }
    }

    /// A number that identifies the calling connection for as long as the server runs.
    pub fn connection_id(&self) -> u64 {
        self.connection
    }

    /// The id of the object the call is for.
    pub fn object_id(&self) -> u64 {
        self.object
    }

    /// Whether the calling connection has closed (the client exited, crashed or was killed).
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Waits until the calling connection closes.
    pub async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// Runs `cleanup` when the calling connection closes. Each object has one cleanup per
    /// connection: registering again replaces the earlier one. It runs after the connection's
    /// pending calls are cancelled, and before its references are released.
    pub fn on_close(&self, cleanup: impl FnOnce() + Send + 'static) {
        if self.closed.is_cancelled() {
            cleanup();
            return;
        }
        if let Some(host) = &self.host {
            host.on_close(self.object, Box::new(cleanup));
        }
    }

    /// Takes a reference to every object of this server named by a proxy inside `value`, held
    /// for as long as the returned [`Retained`] lives: a container stores one beside each value
    /// it keeps. Fails, taking nothing, if a proxy names an object that does not exist.
    pub fn retain(&self, value: &Value) -> Result<Retained, String> {
        match &self.host {
            Some(host) => host.retain(value),
            None => Ok(Retained::default()),
        }
    }

    /// Gives the calling connection one reference to every object of this server named by a
    /// proxy inside `value`, which is about to be returned to it: the client's proxies take
    /// them over (and release those it does not keep).
    pub fn hand_out(&self, value: &Value) {
        if let Some(host) = &self.host {
            host.hand_out(value);
        }
    }
}

impl CallContext {
    /// The object the call is for, as the server stores it: for a method whose result reads
    /// the object after the method has returned, such as a [`Stream`](crate::Stream) that
    /// reads each item when it is produced (the built-in list's `iter`). The method's own
    /// lock is released by then: take the lock for each read (`blocking_read` on a worker
    /// thread, where an iterator producer runs; `read().await` in a stream), and hold it no
    /// longer than one read.
    ///
    /// Holding the handle keeps the object's value alive (as a Python iterator keeps its list
    /// alive), not its place in the server: a released object can no longer be called.
    /// `None` for a [detached](CallContext::detached) context, or when `T` is not the type of
    /// the object.
    pub fn this<T: crate::object::Shared>(&self) -> Option<crate::object::Handle<T>> {
        self.host.as_ref()?.referent(self.object)?.downcast::<T>()
    }
}

/// References to objects, taken by [`CallContext::retain`] and released when dropped.
#[derive(Default)]
pub struct Retained {
    owner: Option<Weak<dyn Release>>,
    ids: Vec<u64>,
}

impl std::fmt::Debug for Retained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retained").field("ids", &self.ids).finish()
    }
}

impl Retained {
    /// References to `ids` (taken already), released through `owner` when dropped.
    pub(crate) fn new(owner: Weak<dyn Release>, ids: Vec<u64>) -> Retained {
        Retained {
            owner: Some(owner),
            ids,
        }
    }
}

impl Drop for Retained {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        if let Some(owner) = self.owner.as_ref().and_then(Weak::upgrade) {
            for id in &self.ids {
                owner.release(*id, 1);
            }
        }
    }
}
