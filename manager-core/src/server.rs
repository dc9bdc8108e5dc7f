//! The manager server: the object table, client connections, and request dispatch.
//!
//! Each connection owns the references its proxies hold. A call is checked against the
//! connection's own references, looked up in the object table (see the `table` module), checked
//! against the typeid's exposed methods and decoded. A plain method then runs to its end in the
//! connection's task; an `async` method (and a plain one that must wait for its object's lock)
//! runs in a task of its own, so such calls on one connection complete out of order. Replies
//! are written by the task that makes them (see `transport::Outbox`). When a connection closes,
//! for any reason, every reference it held is released.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use foldhash::HashMap as FastMap;
use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::address::Address;
use crate::auth::AuthKey;
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::object::{DispatchError, Outcome, Referent};
use crate::registry::{Entry, FactoryError, Registry, Source};
use crate::transport::{with_split, write_frames, Accepted, Listener, Outbox, ReadHalf};
use crate::value::Value;

mod python;
mod table;
use crate::wire::{
    self, Control, ControlReply, DebugInfo, ObjectInfo, Reply, Request, ResponseHead, Token,
};

/// Limits and timeouts of a server.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The largest frame accepted from a client; a larger one closes that connection.
    pub max_frame: usize,
    /// How long a new connection may take to complete the authkey handshake.
    pub handshake_timeout: Duration,
    /// How many client connections may be open at once; one more is told so and closed.
    pub max_connections: usize,
    /// How many calls one connection may have running at once in tasks of their own (`async`
    /// methods, and plain ones waiting for their object's lock; a plain method that runs to its
    /// end at once holds the connection's task instead). When it has that many, the server
    /// stops reading its requests until one finishes (backpressure, not a queue).
    pub max_in_flight: usize,
    /// How many distinct objects one connection may hold references to; a create (or any
    /// request that would hand it one more) beyond that is refused with a `Limit` error.
    pub max_objects_per_connection: usize,
    /// TLS on every connection (TCP only), with its certificate, key and optional client CA;
    /// `None` (the default) for none. Binding with TLS set fails with [`Error::Tls`] in a build
    /// without the `tls` feature. See [`crate::tls`].
    pub tls: Option<crate::tls::TlsServerConfig>,
    /// How many bytes of replies may wait for a client that does not read them; beyond that,
    /// the server stops reading its requests until it catches up.
    pub max_queued_reply_bytes: usize,
    /// A second address where the server takes unmodified CPython clients
    /// (`multiprocessing.managers`' protocol: its handshake and pickled requests); `None` for
    /// native clients only. See the `python` module of this one.
    pub python_address: Option<Address>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame: wire::DEFAULT_MAX_FRAME,
            handshake_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_in_flight: 1024,
            max_objects_per_connection: 1 << 22,
            tls: None,
            max_queued_reply_bytes: 4 << 20,
            python_address: None,
        }
    }
}

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
    python: python::PythonRefs,
}

/// A manager server bound to its address, ready to serve.
pub struct Server {
    state: Arc<State>,
    listener: Listener,
    python: Option<Listener>,
}

/// Stops a running server from anywhere (another task, another thread, a signal handler).
#[derive(Clone)]
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
        let python = match &config.python_address {
            Some(python) => Some(Listener::bind(python, None).await?),
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
        Ok(Server {
            state: Arc::new(State {
                registry,
                address,
                authkey,
                config,
                table: Mutex::new(table),
                shared,
                connections: AtomicU64::new(0),
                next_connection: AtomicU64::new(1),
                stop: CancellationToken::new(),
                python_address: python.as_ref().map(|(_, bound)| bound.clone()),
                python: python::PythonRefs::default(),
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

    /// Accepts and serves clients until a client sends `shutdown` or the [`ShutdownHandle`] is
    /// used. A Unix socket file is removed when it returns.
    pub async fn serve_forever(self) -> Result<(), Error> {
        let Server {
            state,
            listener,
            python,
        } = self;
        tracing::info!(address = %state.address, "manager server listening");
        let connections = TaskTracker::new();
        loop {
            let python_client = async {
                match &python {
                    Some(listener) => listener.accept().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = state.stop.cancelled() => break,
                accepted = python_client => match accepted {
                    Ok(accepted) => {
                        connections.spawn(python::handle_python(state.clone(), accepted.into_plain()));
                    }
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                accepted = listener.accept() => match accepted {
                    Ok(stream) => {
                        connections.spawn(handle_connection(state.clone(), stream));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait a moment, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        // New clients are refused from here on; open connections cancel their calls, flush
        // what they have to say (the answer to `shutdown` among it) and close.
        drop(listener);
        drop(python);
        connections.close();
        if tokio::time::timeout(Duration::from_secs(5), connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within 5 s of shutdown");
        }
        state.python.release();
        tracing::info!(address = %state.address, "manager server stopped");
        Ok(())
    }
}

async fn handle_connection(state: Arc<State>, accepted: Accepted) {
    let handshake = tokio::select! {
        result = tokio::time::timeout(
            state.config.handshake_timeout,
            accepted.handshake_server(&state.authkey),
        ) => result,
        _ = state.stop.cancelled() => return,
    };
    let mut stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(Error::Auth(message))) => {
            tracing::warn!("refused a client with a wrong authkey: {message}");
            return;
        }
        Ok(Err(Error::Tls(message))) => {
            tracing::warn!("refused a client: {message}");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!("handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!("a client did not complete the handshake in time");
            return;
        }
    };
    let open = state.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let refused = (open > state.config.max_connections as u64).then(|| {
        format!(
            "the server has reached its limit of {} connections",
            state.config.max_connections
        )
    });
    let welcome = wire::Welcome {
        protocol: wire::PROTOCOL_VERSION,
        address: state.address.clone(),
        refused: refused.clone(),
        python_address: state.python_address.clone(),
    };
    let welcomed = stream.send_welcome(&welcome).await;
    if let Some(reason) = refused {
        tracing::warn!("refused a client: {reason}");
    }
    if welcome.refused.is_some() || welcomed.is_err() {
        state.connections.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let (outbox, rx) = match Outbox::new(&stream) {
        Ok(outbox) => outbox,
        Err(e) => {
            tracing::warn!("closing a connection: {e}");
            state.connections.fetch_sub(1, Ordering::Relaxed);
            return;
        }
    };
    with_split!(stream, |reader, writer| {
        let write_task = tokio::spawn(write_frames(writer, rx, outbox.written()));
        let conn = Arc::new(Connection {
            id: state.next_connection.fetch_add(1, Ordering::Relaxed),
            state: state.clone(),
            held: Mutex::new(FastMap::default()),
            outbox,
            closed: state.stop.child_token(),
            cleanups: Mutex::new(HashMap::new()),
            in_flight: Arc::new(Semaphore::new(state.config.max_in_flight.max(1))),
            calls: Mutex::new(FastMap::default()),
        });
        if let Err(e) = conn.read_requests(reader).await {
            tracing::debug!("closing a connection: {e}");
        }
        // Calls still running for this client are cancelled: nobody will read their answers,
        // and a call waiting (on a queue, a lock) must stop waiting.
        conn.closed.cancel();
        conn.run_cleanups();
        conn.release_all();
        drop(conn);
        let _ = write_task.await;
    });
    state.connections.fetch_sub(1, Ordering::Relaxed);
}

type Cleanup = Box<dyn FnOnce() + Send>;

struct Connection {
    id: u64,
    state: Arc<State>,
    /// The objects this connection holds references to, with how many: object id -> count.
    held: Mutex<FastMap<u64, u64>>,
    /// Where replies go: written by the task that made them, or queued for the writer task.
    outbox: Outbox,
    /// Cancelled when the connection closes or the server stops.
    closed: CancellationToken,
    /// What objects asked to run when this connection closes (one per object), such as
    /// releasing a lock the client holds.
    cleanups: Mutex<HashMap<u64, Cleanup>>,
    /// Permits for calls in flight (`ServerConfig::max_in_flight`).
    in_flight: Arc<Semaphore>,
    /// The async calls running, by request id, so that a client can cancel one.
    calls: Mutex<FastMap<u64, CancellationToken>>,
}

impl Connection {
    /// Runs the cleanups objects registered for this connection; a panicking one is logged.
    fn run_cleanups(&self) {
        let cleanups = std::mem::take(&mut *self.cleanups.lock());
        for (object, cleanup) in cleanups {
            if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(cleanup)) {
                tracing::warn!(
                    "the cleanup of object {object} panicked: {}",
                    panic_message(&panic)
                );
            }
        }
    }

    async fn read_requests<R: ReadHalf>(self: &Arc<Self>, reader: R) -> Result<(), Error> {
        let mut frames = FramedRead::new(reader, wire::frame_codec(self.state.config.max_frame));
        // Made once: a new one per request would register and unregister a waiter each time.
        let closed = self.closed.cancelled();
        tokio::pin!(closed);
        let max_queued = self.state.config.max_queued_reply_bytes as u64;
        loop {
            // With `max_in_flight` calls running in tasks of their own, the socket is left
            // unread and TCP pushes back on the client. (Only this task takes permits, so one
            // is still free when the request read next needs it; a call that runs here, to its
            // end, needs none.)
            if self.in_flight.available_permits() == 0 {
                tokio::select! {
                    _ = &mut closed => return Ok(()),
                    permit = self.in_flight.acquire() => if permit.is_err() {
                        return Ok(());
                    },
                }
            }
            // A client that does not read its answers is not read from either.
            if !self.outbox.queued().is_below(max_queued) {
                tokio::select! {
                    _ = &mut closed => return Ok(()),
                    () = self.outbox.queued().below(max_queued) => {}
                }
            }
            let frame = tokio::select! {
                biased;
                _ = &mut closed => return Ok(()),
                frame = frames.next() => frame,
            };
            match frame {
                None => return Ok(()),
                Some(Err(e)) => return Err(Error::Protocol(format!("bad frame: {e}"))),
                Some(Ok(frame)) => self.handle(frame.freeze())?,
            }
        }
    }

    /// Handles one request. An error closes the connection (the client broke the protocol).
    fn handle(self: &Arc<Self>, frame: Bytes) -> Result<(), Error> {
        let (request, args) = wire::take::<Request<'_>>(&frame, "request")?;
        let args_at = frame.len() - args.len();
        match request {
            Request::Call { id, object, method } => {
                self.call(id, object, method, frame.clone(), args_at);
            }
            Request::Cancel { id } => {
                if let Some(call) = self.calls.lock().remove(&id) {
                    call.cancel();
                }
            }
            Request::Create { id, typeid } => {
                let reply = self.create(typeid, Args::Native(&frame[args_at..]));
                self.send(id, reply);
            }
            Request::IncRef { object } => self.incref(object),
            Request::DecRef { object } => self.decref(object),
            Request::Attach { id, object } => {
                let reply = self.attach(object);
                self.send(id, reply);
            }
            Request::Control { id, op } => {
                let reply = self.control(op);
                let stopping = matches!(reply, Reply::Control(ControlReply::ShuttingDown));
                self.send(id, reply);
                if stopping {
                    self.state.stop.cancel();
                }
            }
        }
        Ok(())
    }

    fn call(self: &Arc<Self>, id: u64, object_id: u64, method: &str, frame: Bytes, args_at: usize) {
        let object = {
            // The connection's references keep the object in the table while `held` is locked.
            let held = self.held.lock();
            held.contains_key(&object_id)
                .then(|| self.state.table.lock().get(object_id))
                .flatten()
        };
        let Some((entry, referent)) = object else {
            return self.send_error(RemoteError::new(
                RemoteErrorKind::UnknownObject,
                "",
                method,
                format!("object {object_id} does not exist or this connection holds no reference to it"),
            ), id);
        };
        let index = match entry.method(method) {
            Some((index, true)) => index,
            Some((_, false)) => {
                return self.send_error(
                    RemoteError::new(
                        RemoteErrorKind::NotExposed,
                        &*entry.typeid,
                        method,
                        format!(
                            "method {method:?} is not exposed by typeid {:?} (exposed: {})",
                            &*entry.typeid,
                            entry.exposed_names().join(", ")
                        ),
                    ),
                    id,
                )
            }
            None => {
                return self.send_error(
                    RemoteError::new(
                        RemoteErrorKind::NoSuchMethod,
                        &*entry.typeid,
                        method,
                        format!(
                            "{} has no method {method:?} (exposed: {})",
                            entry.type_name,
                            entry.exposed_names().join(", ")
                        ),
                    ),
                    id,
                )
            }
        };
        let dispatched = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut de = postcard::Deserializer::from_bytes(&frame[args_at..]);
            let context = CallContext {
                conn: self.clone(),
                object: object_id,
            };
            let call = referent.dispatch(
                index,
                &mut <dyn erased_serde::Deserializer>::erase(&mut de),
                context,
            );
            let left = de.finalize().map(|rest| rest.len()).unwrap_or(0);
            match call {
                Ok(_) if left > 0 => Err(DispatchError::BadArguments(format!(
                    "{left} bytes left over after the arguments (too many arguments?)"
                ))),
                other => other,
            }
        }));
        let future = match dispatched {
            Ok(Ok(future)) => future,
            Ok(Err(e)) => return self.send_error(dispatch_error(&entry, method, e), id),
            Err(panic) => {
                return self.send_error(
                    RemoteError::new(
                        RemoteErrorKind::Panic,
                        &*entry.typeid,
                        method,
                        format!("decoding the arguments panicked: {}", panic_message(&panic)),
                    ),
                    id,
                )
            }
        };
        let is_async = entry.methods[index].is_async;
        let mut run = AssertUnwindSafe(future).catch_unwind();
        if !is_async {
            // A plain method is done at its first poll, unless it waits for its object's lock:
            // it runs here, in the connection's task, without a task of its own (as each
            // connection of a CPython manager has its own thread). The waker does not matter:
            // a call that is not done goes on in a task, whose poll brings its own.
            let mut context = std::task::Context::from_waker(std::task::Waker::noop());
            if let std::task::Poll::Ready(outcome) = Pin::new(&mut run).poll(&mut context) {
                return self.complete(id, &entry, index, outcome);
            }
        }
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            // Not reached: the read loop read this request with a permit free.
            return self.send_error(
                RemoteError::new(
                    RemoteErrorKind::Limit,
                    &*entry.typeid,
                    method,
                    "too many calls in flight on this connection",
                ),
                id,
            );
        };
        let conn = self.clone();
        // An async method may wait; the client can cancel it by id. A plain method can only
        // wait for its object's lock, so it needs no entry of its own.
        let cancel = if is_async {
            let token = self.closed.child_token();
            self.calls.lock().insert(id, token.clone());
            token
        } else {
            self.closed.clone()
        };
        tokio::spawn(async move {
            let _permit = permit;
            let outcome = tokio::select! {
                biased;
                outcome = &mut run => outcome,
                // Cancelled by the client, or the client is gone, or the server is stopping:
                // drop the call where it waits.
                _ = cancel.cancelled() => {
                    conn.calls.lock().remove(&id);
                    return;
                }
            };
            if is_async {
                conn.calls.lock().remove(&id);
            }
            conn.complete(id, &entry, index, outcome);
        });
    }

    /// Sends the reply of a call that ran to its end (or panicked).
    fn complete(
        &self,
        id: u64,
        entry: &Entry,
        index: usize,
        outcome: std::thread::Result<Outcome>,
    ) {
        let outcome = outcome.unwrap_or_else(|panic| {
            Outcome::Failed(RemoteError::new(
                RemoteErrorKind::Panic,
                &*entry.typeid,
                entry.methods[index].name,
                panic_message(&panic),
            ))
        });
        let reply = self.finish_call(entry, index, outcome);
        self.send_reply(id, reply, (&entry.typeid, entry.methods[index].name));
    }

    fn finish_call(&self, entry: &Entry, index: usize, outcome: Outcome) -> Finished {
        let method = entry.methods[index].name;
        match outcome {
            Outcome::Failed(error) => Finished::Reply(Reply::Error(error)),
            Outcome::Raised(error) => Finished::Payload(
                Reply::Raised {
                    type_name: error.type_name().to_string(),
                },
                error,
            ),
            Outcome::Value(value) => match &entry.method_to_typeid[index] {
                None => Finished::Payload(Reply::Value, value),
                Some(target) => {
                    Finished::Reply(self.convert(entry, method, target, value.into_any()))
                }
            },
            Outcome::Object(value) => match &entry.method_to_typeid[index] {
                Some(target) => Finished::Reply(self.convert(entry, method, target, value)),
                None => Finished::Reply(Reply::Error(RemoteError::new(
                    RemoteErrorKind::Conversion,
                    &*entry.typeid,
                    method,
                    "the method's result is meant for a typeid, but none is mapped",
                ))),
            },
        }
    }

    /// Turns a `method_to_typeid` result into a new object of `target` held by this connection.
    fn convert(
        &self,
        entry: &Entry,
        method: &str,
        target: &str,
        value: Box<dyn std::any::Any + Send>,
    ) -> Reply {
        let error = |message: String| {
            Reply::Error(RemoteError::new(
                RemoteErrorKind::Conversion,
                &*entry.typeid,
                method,
                message,
            ))
        };
        let Some(target_entry) = self.state.registry.get(target) else {
            return error(format!("typeid {target:?} is not registered"));
        };
        if let Err(limit) = self.room_for(None, &entry.typeid, method) {
            return Reply::Error(limit);
        }
        let made = std::panic::catch_unwind(AssertUnwindSafe(|| {
            (target_entry.from_result.convert)(value)
        }));
        match made {
            Ok(Ok(referent)) => Reply::Proxy(self.insert(target_entry.clone(), referent)),
            Ok(Err(message)) => error(format!(
                "cannot make a {target:?} from the result: {message}"
            )),
            Err(panic) => error(format!(
                "making a {target:?} from the result panicked: {}",
                panic_message(&panic)
            )),
        }
    }

    fn create(self: &Arc<Self>, typeid: &str, args: Args<'_>) -> Reply {
        let error =
            |kind, message: String| Reply::Error(RemoteError::new(kind, typeid, "create", message));
        let Some(entry) = self.state.registry.get(typeid) else {
            return error(
                RemoteErrorKind::UnknownTypeid,
                format!(
                    "typeid {typeid:?} is not registered on this server (registered: {})",
                    self.state.registry.typeids().join(", ")
                ),
            );
        };
        if !entry.create_method {
            return error(
                RemoteErrorKind::NoCreateMethod,
                format!("typeid {typeid:?} has no create method: clients cannot create it, only receive it from a method_to_typeid result"),
            );
        }
        let shared_id = self.state.shared.get(&entry.typeid).copied();
        if let Err(limit) = self.room_for(shared_id, typeid, "create") {
            return Reply::Error(limit);
        }
        match &entry.source {
            Source::Shared(_) => {
                let id = self.state.shared[&entry.typeid];
                match self.acquire(id) {
                    Some(token) => Reply::Proxy(token),
                    None => error(
                        RemoteErrorKind::Shutdown,
                        "the shared instance is gone".into(),
                    ),
                }
            }
            Source::Factory(factory) => {
                let context = CallContext {
                    conn: self.clone(),
                    object: 0,
                };
                let made = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    args.decode(|de| factory(de, &context))
                        .map_err(FactoryError::BadArguments)?
                }));
                match made {
                    Ok(Ok(referent)) => Reply::Proxy(self.insert(entry.clone(), referent)),
                    Ok(Err(FactoryError::BadArguments(message))) => error(
                        RemoteErrorKind::BadArguments,
                        format!("the arguments do not fit the factory of {typeid:?}: {message}"),
                    ),
                    Ok(Err(FactoryError::Refused(mut refused))) => {
                        refused.typeid = typeid.to_string();
                        refused.method = "create".to_string();
                        Reply::Error(refused)
                    }
                    Err(panic) => error(
                        RemoteErrorKind::Panic,
                        format!(
                            "the factory of {typeid:?} panicked: {}",
                            panic_message(&panic)
                        ),
                    ),
                }
            }
            Source::None => error(
                RemoteErrorKind::NoCreateMethod,
                format!("typeid {typeid:?} has no factory"),
            ),
        }
    }

    /// Fails when this connection may not hold one more object (`max_objects_per_connection`);
    /// taking another reference to an object it holds already is always allowed.
    fn room_for(&self, object: Option<u64>, typeid: &str, method: &str) -> Result<(), RemoteError> {
        let held = self.held.lock();
        let max = self.state.config.max_objects_per_connection;
        if held.len() >= max && object.is_none_or(|id| !held.contains_key(&id)) {
            return Err(RemoteError::new(
                RemoteErrorKind::Limit,
                typeid,
                method,
                format!("this connection already holds {max} objects, its limit"),
            ));
        }
        Ok(())
    }

    /// Adds a new object to the table, with one reference held by this connection. On a
    /// connection that has closed (its references are being released) the object is not kept.
    /// (It then gets id 0, which names no object.)
    fn insert(&self, entry: Arc<Entry>, referent: Arc<dyn Referent>) -> Token {
        let mut held = self.held.lock();
        if self.closed.is_cancelled() {
            return self.token(0, &entry);
        }
        let id = self.state.table.lock().insert(entry.clone(), referent);
        held.insert(id, 1);
        self.token(id, &entry)
    }

    fn token(&self, id: u64, entry: &Entry) -> Token {
        Token {
            typeid: entry.typeid.to_string(),
            address: self.state.address.clone(),
            id,
        }
    }

    /// Takes one more reference to an existing object for this connection. Refused once the
    /// connection has closed, so that no reference outlives it. (The held map is locked
    /// first: `release_all` takes it after the connection is marked closed.)
    fn acquire(&self, id: u64) -> Option<Token> {
        let mut held = self.held.lock();
        if self.closed.is_cancelled() {
            return None;
        }
        let entry = self.state.table.lock().acquire(id, 1)?.clone();
        *held.entry(id).or_insert(0) += 1;
        Some(self.token(id, &entry))
    }

    fn attach(&self, id: u64) -> Reply {
        if let Err(limit) = self.room_for(Some(id), "", "attach") {
            return Reply::Error(limit);
        }
        match self.acquire(id) {
            Some(token) => Reply::Proxy(token),
            None => Reply::Error(RemoteError::new(
                RemoteErrorKind::UnknownObject,
                "",
                "attach",
                format!("object {id} does not exist (it may have been released)"),
            )),
        }
    }

    fn incref(&self, id: u64) {
        let held = self
            .held
            .lock()
            .get_mut(&id)
            .map(|refs| *refs += 1)
            .is_some();
        if held {
            self.state.table.lock().acquire(id, 1);
        } else {
            tracing::warn!("incref of object {id}, which this connection does not hold; ignored");
        }
    }

    fn decref(&self, id: u64) {
        let released = {
            let mut held = self.held.lock();
            match held.get_mut(&id) {
                Some(refs) => {
                    *refs -= 1;
                    if *refs == 0 {
                        held.remove(&id);
                    }
                    true
                }
                None => false,
            }
        };
        if released {
            self.state.release(id, 1);
        } else {
            tracing::warn!("decref of object {id}, which this connection does not hold; ignored");
        }
    }

    /// Releases every reference this connection holds (it is closing).
    fn release_all(&self) {
        let held = std::mem::take(&mut *self.held.lock());
        for (id, refs) in held {
            self.state.release(id, refs);
        }
    }

    fn control(&self, op: Control) -> Reply {
        let reply = match op {
            Control::Ping => ControlReply::Pong,
            Control::NumberOfObjects => {
                ControlReply::NumberOfObjects(self.state.table.lock().len() as u64)
            }
            Control::DebugInfo => ControlReply::DebugInfo(self.state.debug_info()),
            Control::Shutdown => ControlReply::ShuttingDown,
            Control::Methods { object } => {
                let entry = {
                    let held = self.held.lock();
                    held.contains_key(&object)
                        .then(|| self.state.table.lock().entry(object).cloned())
                        .flatten()
                };
                match entry {
                    Some(entry) => ControlReply::Methods(entry.exposed_names()),
                    None => {
                        return Reply::Error(RemoteError::new(
                            RemoteErrorKind::UnknownObject,
                            "",
                            "get_methods",
                            format!("object {object} does not exist or this connection holds no reference to it"),
                        ))
                    }
                }
            }
        };
        Reply::Control(reply)
    }

    fn send_error(&self, error: RemoteError, id: u64) {
        self.send(id, Reply::Error(error));
    }

    fn send(&self, id: u64, reply: Reply) {
        self.send_reply(id, Finished::Reply(reply), ("", ""));
    }

    /// Encodes and queues a reply. `(typeid, method)` names the call, for errors.
    fn send_reply(&self, id: u64, finished: Finished, (typeid, method): (&str, &str)) {
        let max_frame = self.state.config.max_frame;
        let frame = match encode_response(self.outbox.frame_buffer(), id, finished, max_frame) {
            Ok(frame) => frame,
            Err(failed) => {
                // The reply could not be encoded (or is too large): tell the caller why, and
                // release the object a proxy reply would have handed over.
                if let Some(object) = failed.proxy {
                    self.decref(object);
                }
                let mut message = failed.error.to_string();
                let mut error =
                    RemoteError::new(RemoteErrorKind::Encode, typeid, method, message.clone());
                loop {
                    match encode_response(
                        wire::start_frame(64),
                        id,
                        Finished::Reply(Reply::Error(error.clone())),
                        max_frame,
                    ) {
                        Ok(frame) => break frame,
                        Err(_) if !message.is_empty() => {
                            // Even the error does not fit the frame limit: shorten it.
                            message.truncate(message.len() / 2);
                            while !message.is_char_boundary(message.len()) {
                                message.pop();
                            }
                            error.message = message.clone();
                            error.typeid.clear();
                            error.method.clear();
                        }
                        Err(_) => {
                            // Nothing fits: close the connection so the caller does not wait
                            // for an answer that cannot come.
                            tracing::warn!("a reply does not fit the frame limit of {max_frame} bytes; closing the connection");
                            self.closed.cancel();
                            return;
                        }
                    }
                }
            }
        };
        // A closed connection is going away; its references are released.
        self.outbox.send(frame);
    }
}

/// A reply, with the payload that follows its head when there is one.
enum Finished {
    Reply(Reply),
    Payload(Reply, Box<dyn crate::object::ReturnValue>),
}

/// A reply that could not be encoded.
struct EncodeFailed {
    /// The object a proxy reply was handing over, to be released.
    proxy: Option<u64>,
    error: Error,
}

fn encode_response(
    mut buf: BytesMut,
    id: u64,
    finished: Finished,
    max_frame: usize,
) -> Result<Bytes, Box<EncodeFailed>> {
    let (reply, payload) = match finished {
        Finished::Reply(reply) => (reply, None),
        Finished::Payload(reply, payload) => (reply, Some(payload)),
    };
    let proxy = match &reply {
        Reply::Proxy(token) => Some(token.id),
        _ => None,
    };
    let failed = |error| Box::new(EncodeFailed { proxy, error });
    wire::put(&mut buf, &ResponseHead { id, reply }, "response").map_err(failed)?;
    if let Some(payload) = payload {
        let value: &dyn erased_serde::Serialize = &*payload;
        wire::put(&mut buf, value, "the method's result").map_err(failed)?;
    }
    wire::finish(buf, max_frame).map_err(failed)
}

impl State {
    /// Drops `count` references to object `id`; the object goes when none are left.
    fn release(&self, id: u64, count: u64) {
        let dropped = self.table.lock().release(id, count);
        // The referent is dropped here, outside the table lock.
        drop(dropped);
    }

    fn debug_info(&self) -> DebugInfo {
        let table = self.table.lock();
        let mut objects: Vec<ObjectInfo> = table
            .iter()
            .map(|(id, slot)| ObjectInfo {
                id,
                typeid: slot.entry().typeid.to_string(),
                type_name: slot.entry().type_name.to_string(),
                refcount: slot.refs(),
            })
            .collect();
        objects.sort_by_key(|o| o.id);
        DebugInfo {
            objects,
            connections: self.connections.load(Ordering::Relaxed),
            address: self.address.clone(),
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

/// What a method of a shared type can know about the call it serves: which connection made it,
/// and hooks into that connection's life. A `#[shared]` method receives it by declaring a
/// parameter of type `&CallContext`; the caller does not pass it.
///
/// Built-in types use it to release a lock that a client dies holding, and to keep the objects
/// named by proxies stored inside containers alive.
#[derive(Clone)]
pub struct CallContext {
    conn: Arc<Connection>,
    object: u64,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("connection", &self.conn.id)
            .field("object", &self.object)
            .finish()
    }
}

impl CallContext {
    /// A number that identifies the calling connection for as long as the server runs.
    pub fn connection_id(&self) -> u64 {
        self.conn.id
    }

    /// The id of the object the call is for.
    pub fn object_id(&self) -> u64 {
        self.object
    }

    /// Whether the calling connection has closed (the client exited, crashed or was killed).
    pub fn is_closed(&self) -> bool {
        self.conn.closed.is_cancelled()
    }

    /// Waits until the calling connection closes.
    pub async fn closed(&self) {
        self.conn.closed.cancelled().await;
    }

    /// Runs `cleanup` when the calling connection closes. Each object has one cleanup per
    /// connection: registering again replaces the earlier one. It runs after the connection's
    /// pending calls are cancelled, and before its references are released.
    pub fn on_close(&self, cleanup: impl FnOnce() + Send + 'static) {
        if self.conn.closed.is_cancelled() {
            cleanup();
            return;
        }
        self.conn
            .cleanups
            .lock()
            .insert(self.object, Box::new(cleanup));
    }

    /// Takes a reference to every object of this server named by a proxy inside `value`, held
    /// for as long as the returned [`Retained`] lives: a container stores one beside each value
    /// it keeps. Fails, taking nothing, if a proxy names an object that does not exist.
    pub fn retain(&self, value: &Value) -> Result<Retained, String> {
        let ids: Vec<u64> = value
            .tokens()
            .into_iter()
            .filter(|token| token.address == self.conn.state.address)
            .map(|token| token.id)
            .collect();
        if !ids.is_empty() {
            let mut table = self.conn.state.table.lock();
            if let Some(missing) = ids.iter().find(|id| !table.contains(**id)) {
                return Err(format!(
                    "the value holds a proxy to object {missing}, which does not exist on this server"
                ));
            }
            for id in &ids {
                table.acquire(*id, 1);
            }
        }
        Ok(Retained {
            state: Arc::downgrade(&self.conn.state),
            ids,
        })
    }

    /// Gives the calling connection one reference to every object of this server named by a
    /// proxy inside `value`, which is about to be returned to it: the client's proxies take
    /// them over (and release those it does not keep).
    pub fn hand_out(&self, value: &Value) {
        for token in value.tokens() {
            if token.address == self.conn.state.address && self.conn.acquire(token.id).is_none() {
                tracing::warn!("a returned value names object {}, which is gone", token.id);
            }
        }
    }
}

/// References to objects, taken by [`CallContext::retain`] and released when dropped.
#[derive(Debug, Default)]
pub struct Retained {
    state: std::sync::Weak<State>,
    ids: Vec<u64>,
}

impl Drop for Retained {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        if let Some(state) = self.state.upgrade() {
            for id in &self.ids {
                state.release(*id, 1);
            }
        }
    }
}

/// The arguments of a create or a call, in the codec they came in.
pub(crate) enum Args<'a> {
    /// Postcard bytes from a native client (a tuple, to the end of the frame).
    Native(&'a [u8]),
    /// A value tuple built from another protocol's arguments (CPython's).
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
                let made = f(&mut <dyn erased_serde::Deserializer>::erase(&mut de));
                match de.finalize().map(|rest| rest.len()).unwrap_or(0) {
                    0 => Ok(made),
                    left => Err(format!(
                        "{left} bytes left over after the arguments (too many arguments?)"
                    )),
                }
            }
            Args::Value(value) => Ok(f(&mut <dyn erased_serde::Deserializer>::erase(value))),
        }
    }
}
