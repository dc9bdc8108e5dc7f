//! The manager server: the object table, client connections, and request dispatch.
//!
//! One idea per module:
//!
//! - `config`: [`ServerConfig`], every limit and timeout;
//! - `accept`: the accept loop, the handshake and admission of a new connection;
//! - `connection`: a connection's state and the loop that reads its requests;
//! - `dispatch`: running a call (plain bodies on `workers`, `async` methods in tasks);
//! - `workers`: the threads that run plain method bodies;
//! - `reader`, `pool`, `shm`, `inline`: connections over a plain socket (read by a pool of
//!   threads) or through shared memory (by a thread of its own), whose reader runs the last
//!   plain call it read itself, handing the reading on should the call block; `socket`: a
//!   socket taken out of the runtime;
//! - `refs`: which objects a connection holds, and how many references;
//! - `segments`: the shared memory blocks connections track, unlinked with the last of them;
//! - `session`: sessions that outlive a broken connection, and their resumption;
//! - `reply`: encoding replies;
//! - `activity`: the calls running now and per-method statistics;
//! - `table`: the object table; `python`: CPython clients.
//!
//! Each connection owns the references its proxies hold; when it closes, every reference it
//! held is released, and so is every shared memory block it tracked. A native connection whose socket breaks (rather than being closed) is
//! kept for its client to resume for `ServerConfig::session_grace` (`session`). See `ARCHITECTURE.md` for the path of one call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::address::Address;
use crate::auth::AuthKey;
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::object::DispatchError;
use crate::registry::{Entry, Registry, Source};
use crate::transport::Listener;
use crate::value::Value;
use crate::wire::{DebugInfo, ObjectInfo};

mod accept;
mod activity;
mod config;
mod connection;
mod dispatch;
mod in_flight;
mod inline;
mod pool;
#[cfg(feature = "python")]
mod python;
mod quick;
mod reader;
mod refs;
mod reply;
mod segments;
mod session;
mod shm;
mod socket;
mod spin;
mod streams;
mod table;
mod workers;

pub use config::ServerConfig;

struct State {
    registry: Registry,
    address: Address,
    authkey: AuthKey,
    config: ServerConfig,
    table: Mutex<table::ObjectTable>,
    /// The ids of the shared instances, by typeid.
    shared: HashMap<Arc<str>, u64>,
    connections: AtomicU64,
    next_connection: AtomicU64,
    stop: CancellationToken,
    /// Where CPython clients connect, when the server takes them.
    python_address: Option<Address>,
    /// The references CPython clients hold.
    #[cfg(feature = "python")]
    python: python::PythonRefs,
    /// The threads that run plain method bodies.
    workers: workers::Workers<dispatch::Work>,
    /// Which quick calls may run where they were read.
    quick: quick::Quick,
    /// The threads that read native sockets (see `pool`), made with the first such connection.
    reader_pool: Mutex<Option<Arc<pool::Pool>>>,
    /// The one reader thread at a time that watches for more before it sleeps (see `spin`).
    spin: Arc<spin::Spin>,
    /// The calls running now, and per-method statistics.
    activity: activity::Activity,
    /// This run of the server: a random number, never 0, in every token it issues.
    instance: u64,
    /// The native connections that may be resumed should their socket break (or that broke
    /// and wait for their client), by session id.
    sessions: Mutex<HashMap<u64, Arc<connection::Connection>>>,
    /// The shared memory blocks connections track.
    segments: segments::Segments,
}

impl State {
    /// Whether a token of the server run `instance` may name this run's objects: it is this
    /// run, or not known (0, a token that came through a CPython client).
    fn issued(&self, instance: u64) -> bool {
        instance == 0 || instance == self.instance
    }

    /// Why a token of the server run `instance` for object `id` is refused.
    fn stale_message(&self, id: u64, instance: u64) -> String {
        format!(
            "the token for object {id} was issued by an earlier run of the server at {} \
             (run {instance:016x}; this run is {:016x}): the server restarted since, and the \
             objects of that run are gone",
            self.address, self.instance
        )
    }
}

/// A manager server bound to its address, ready to serve.
pub struct Server {
    state: Arc<State>,
    listener: Listener,
    python: Option<Listener>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.state.address)
            .finish_non_exhaustive()
    }
}

/// Stops a running server from anywhere (another task, another thread, a signal handler).
#[derive(Clone, Debug)]
pub struct ShutdownHandle(CancellationToken);

impl ShutdownHandle {
    /// Asks the server to stop accepting connections and close the open ones.
    pub fn shutdown(&self) {
        self.0.cancel();
    }

    /// Waits until the server has been asked to stop.
    pub async fn stopped(&self) {
        self.0.cancelled().await;
    }
}

impl Server {
    /// Binds `address` and prepares to serve the typeids of `registry` to clients holding
    /// `authkey`. Fails if the registry is inconsistent or the address cannot be bound.
    pub async fn bind(
        registry: Registry,
        address: &Address,
        authkey: AuthKey,
        config: ServerConfig,
    ) -> Result<Server, Error> {
        registry.validate()?;
        let tls = match &config.tls {
            Some(tls) => Some(crate::tls::Acceptor::new(
                tls,
                address,
                config.handshake_timeout,
            )?),
            None => None,
        };
        let (listener, address) = Listener::bind(address, tls).await?;
        let python =
            match &config.python_address {
                #[cfg(feature = "python")]
                Some(python) => Some(Listener::bind(python, None).await?),
                #[cfg(not(feature = "python"))]
                Some(_) => return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "ServerConfig::python_address is set, but this build has no CPython support \
                     (the `python` feature, on by default)",
                ))),
                None => None,
            };
        let mut table = table::ObjectTable::default();
        let mut shared = HashMap::new();
        for entry in registry.entries() {
            if let Source::Shared(referent) = &entry.source {
                // The server's own reference keeps a shared instance alive until shutdown.
                let id = table.insert(entry.clone(), referent.clone());
                shared.insert(entry.typeid.clone(), id);
            }
        }
        let activity = activity::Activity::new(&registry);
        Ok(Server {
            state: Arc::new(State {
                registry,
                address,
                authkey,
                table: Mutex::new(table),
                shared,
                connections: AtomicU64::new(0),
                next_connection: AtomicU64::new(1),
                stop: CancellationToken::new(),
                python_address: python
                    .as_ref()
                    .map(|(_, bound): &(Listener, Address)| bound.clone()),
                #[cfg(feature = "python")]
                python: python::PythonRefs::default(),
                workers: workers::Workers::new(config.max_workers, config.worker_spin),
                quick: quick::Quick::new(config.quick_calls),
                reader_pool: Mutex::new(None),
                spin: Arc::new(spin::Spin::new(config.worker_spin)),
                activity,
                instance: rand::random::<u64>() | 1,
                sessions: Mutex::new(HashMap::new()),
                segments: segments::Segments::default(),
                config,
            }),
            listener,
            python: python.map(|(listener, _)| listener),
        })
    }

    /// The address clients reach this server at (with the real port when bound to port 0).
    pub fn address(&self) -> &Address {
        &self.state.address
    }

    /// The address CPython clients reach this server at, when it takes them
    /// (`ServerConfig::python_address`).
    pub fn python_address(&self) -> Option<&Address> {
        self.state.python_address.as_ref()
    }

    /// A handle that stops this server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.state.stop.clone())
    }
}

impl State {
    /// A number for a new connection, unique for as long as the server runs.
    fn next_connection(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// Drops `count` references to object `id`; the object goes when none are left.
    fn release(&self, id: u64, count: u64) {
        let dropped = self.table.lock().release(id, count);
        // The referent is dropped here, outside the table lock.
        drop(dropped);
    }

    /// Runs `work` on a worker thread and waits for its result without holding a thread:
    /// user code (a plain method's body, a factory) run for a task that must not block.
    #[cfg_attr(
        not(feature = "python"),
        allow(dead_code, reason = "used by CPython clients' connections")
    )]
    async fn on_worker<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::Result<T> {
        let (tx, rx) = futures::channel::oneshot::channel();
        self.workers.spawn(dispatch::Work::Other(Box::new(move || {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)));
        })));
        rx.await
            .unwrap_or_else(|_| Err(Box::new("the worker thread was stopped") as _))
    }

    fn debug_info(&self) -> DebugInfo {
        let table = self.table.lock();
        let mut objects: Vec<ObjectInfo> = table
            .iter()
            .map(|(id, entry, refs)| ObjectInfo {
                id,
                typeid: entry.typeid.to_string(),
                type_name: entry.type_name.to_string(),
                refcount: refs,
            })
            .collect();
        objects.sort_by_key(|o| o.id);
        drop(table);
        let (running, methods) = self.activity.snapshot();
        DebugInfo {
            objects,
            connections: self.connections.load(Ordering::Relaxed),
            address: self.address.clone(),
            running,
            methods,
        }
    }
}

fn dispatch_error(entry: &Entry, method: &str, error: DispatchError) -> RemoteError {
    match error {
        DispatchError::NoSuchMethod => RemoteError::new(
            RemoteErrorKind::NoSuchMethod,
            &*entry.typeid,
            method,
            format!("{} has no method {method:?}", entry.type_name),
        ),
        DispatchError::BadArguments(message) => RemoteError::new(
            RemoteErrorKind::BadArguments,
            &*entry.typeid,
            method,
            format!("the arguments do not fit the parameters of {method}: {message}"),
        ),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// The arguments of a create or a call, in the codec they came in.
pub(crate) enum Args<'a> {
    /// Postcard bytes from a native client (a tuple, to the end of the frame).
    Native(&'a [u8]),
    /// A value tuple built from another protocol's arguments (CPython's).
    #[cfg_attr(
        not(feature = "python"),
        allow(dead_code, reason = "used by CPython clients' connections")
    )]
    Value(Value),
}

impl Args<'_> {
    /// Runs `f` on a deserializer over the arguments. Bytes left over after a native tuple
    /// mean too many arguments, an error of their own.
    pub(crate) fn decode<T>(
        self,
        f: impl FnOnce(&mut dyn erased_serde::Deserializer<'_>) -> T,
    ) -> Result<T, String> {
        match self {
            Args::Native(bytes) => {
                let mut de = postcard::Deserializer::from_bytes(bytes);
                let made = f(&mut <dyn erased_serde::Deserializer<'_>>::erase(&mut de));
                match de.finalize().map(|rest| rest.len()).unwrap_or(0) {
                    0 => Ok(made),
                    left => Err(format!(
                        "{left} bytes left over after the arguments (too many arguments?)"
                    )),
                }
            }
            Args::Value(value) => Ok(f(&mut <dyn erased_serde::Deserializer<'_>>::erase(value))),
        }
    }
}

impl crate::context::Release for State {
    fn release(&self, id: u64, count: u64) {
        State::release(self, id, count);
    }
}
