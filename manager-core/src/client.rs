//! The client side of one connection: requests matched to responses by id.
//!
//! A [`Connection`] is cheap to clone and is shared by every proxy made through it. Calls from
//! any number of tasks and threads are written to the one socket and complete out of order; a
//! reader task hands each response to the call waiting for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use foldhash::HashMap as FastMap;
use futures::StreamExt;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;
use tokio_util::codec::FramedRead;

use crate::address::Address;
use crate::auth::AuthKey;
use crate::error::Error;
use crate::sync::settle::Unsettled;
use crate::transport::{self, Outbox, ReadHalf};
use crate::wire::{self, Control, ControlReply, Reply, Request, ResponseHead, Token};

mod direct;
pub(crate) mod flush;
mod handoff;
mod resume;
mod shared;
pub mod streams;

/// A response as it came off the wire: its head, and the frame that holds its payload.
#[derive(Debug)]
pub struct Response {
    /// What the server answered.
    pub reply: Reply,
    frame: Bytes,
    payload_at: usize,
    /// The end of the frame, when a shared-memory reader copied it out into a buffer of its
    /// own (a large byte string, see `transport::shm::bulk`): the payload is then the frame's
    /// bytes after the head followed by these.
    tail: Option<Vec<u8>>,
    /// The payload in one piece, once asked for, when it came in two.
    joined: std::sync::OnceLock<Vec<u8>>,
}

impl Response {
    /// The payload bytes after the head (a value or a raised error), in the native codec.
    pub fn payload(&self) -> &[u8] {
        match &self.tail {
            None => &self.frame[self.payload_at..],
            Some(tail) => self
                .joined
                .get_or_init(|| [&self.frame[self.payload_at..], &tail[..]].concat()),
        }
    }

    /// The payload's byte string (postcard: a varint length, then the bytes) as a buffer of
    /// its own, taken without a copy, when the reader copied it out so
    /// ([`Response::tail`]); `None` when it did not (decode the payload as usual).
    pub(crate) fn take_byte_string(&mut self) -> Option<Vec<u8>> {
        let tail = self.tail.as_ref()?;
        let (len, rest) = postcard::take_from_bytes::<u64>(&self.frame[self.payload_at..]).ok()?;
        if !rest.is_empty() || len != tail.len() as u64 {
            return None;
        }
        self.tail.take()
    }
}

/// `future`, for at most `limit`. A deadline needs a tokio timer: outside any runtime (a
/// blocking proxy that drives the future with a plain executor) it takes the timer of the
/// background runtime, whose thread fires it.
pub(crate) fn within<F: std::future::Future>(
    limit: Duration,
    future: F,
) -> tokio::time::Timeout<F> {
    match Handle::try_current() {
        Ok(_) => tokio::time::timeout(limit, future),
        Err(_) => {
            let _enter = background_runtime().enter();
            tokio::time::timeout(limit, future)
        }
    }
}

/// Who waits for a response: an async call (a oneshot) or a blocked thread (a sync channel,
/// which can wait with a deadline without a runtime).
enum Pending {
    Async(oneshot::Sender<Result<Response, Error>>),
    Blocking(std::sync::mpsc::SyncSender<Result<Response, Error>>),
}

impl Pending {
    /// Delivers the result; gives it back if nobody waits any more.
    fn deliver(self, result: Result<Response, Error>) -> Option<Result<Response, Error>> {
        match self {
            Pending::Async(done) => done.send(result).err(),
            Pending::Blocking(done) => match done.try_send(result) {
                Ok(()) => None,
                Err(std::sync::mpsc::TrySendError::Full(r))
                | Err(std::sync::mpsc::TrySendError::Disconnected(r)) => Some(r),
            },
        }
    }
}

struct Inner {
    address: Address,
    server_address: Address,
    python_address: Option<Address>,
    /// Where requests go: written by their caller, or queued for the writer task. It outlives
    /// a broken socket when the session may be resumed (it keeps what it sent until the
    /// server acknowledges it).
    outbox: Outbox,
    /// The socket the connection uses now, and the tasks that serve it (see `resume`).
    link: parking_lot::RwLock<resume::Link>,
    /// How many response frames of the session have been delivered.
    received: AtomicU64,
    /// The bytes of the replies delivered since the last acknowledgement.
    unacked_bytes: AtomicU64,
    /// How to resume the session when the socket breaks; `None` when the server or the
    /// options have resumption off.
    resume: Option<resume::Resume>,
    /// Whether the connection failed because its session could not be resumed.
    expired: AtomicBool,
    /// The calls waiting for their response, by request id (ids are ours: a fast hash).
    pending: Mutex<FastMap<u64, Pending>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    close_reason: Mutex<Option<String>>,
    max_frame: usize,
    /// The default deadline of a call, in nanoseconds; 0 for none.
    timeout_ns: AtomicU64,
    /// This connection's number in this process, for its calls' spans.
    id: u64,
    /// What the server's `Hello` said it understands (`wire::features`); 0 for a server that
    /// predates it.
    features: AtomicU64,
    /// The open streams' sinks, by the request id that opened them (see `streams`).
    streams: Mutex<FastMap<u64, streams::Sink>>,
    /// The releases sent without waiting and not yet answered, shared with this process's
    /// other connections to the same server; made when a lock-like proxy first needs it.
    unsettled: OnceLock<Arc<Unsettled>>,
}

/// The number of the next connection this process opens.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// One authenticated connection to a manager server, shared by every proxy made through it.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("address", &self.inner.address)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

/// How to connect to a server, beyond its address and authkey: TLS, for now.
///
/// ```no_run
/// # use manager_core::{Address, AuthKey, ConnectOptions, Connection, TlsClientConfig};
/// # async fn example() -> manager_core::Result<()> {
/// let options = ConnectOptions::new().tls(TlsClientConfig::new("ca.pem", "manager.example"));
/// let address = Address::tcp("manager.example:50000");
/// let conn = Connection::connect_with(&address, &AuthKey::from("key"), &options).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// TLS around the connection (TCP only), the server's certificate checked against a CA;
    /// `None` (the default) for none. Needs the `tls` feature. See [`crate::tls`].
    pub tls: Option<crate::tls::TlsClientConfig>,
    /// How long connecting may take, from dialling to the end of the authkey handshake (and
    /// TLS's); past it the connect fails with [`Error::Timeout`]. Default 30 s: a server whose
    /// host has vanished would otherwise hold `connect()` for as long as TCP retries.
    pub connect_timeout: Duration,
    /// How long the server may leave a ping unanswered before the connection is taken for
    /// vanished (its host lost power or network): every pending and later call then fails
    /// with [`Error::ConnectionClosed`], with or without a deadline. The client pings at a
    /// third of this or of the server's own `liveness_timeout`, whichever is shorter.
    /// Default 30 s.
    pub liveness_timeout: Duration,
    /// Whether a connection that breaks (a read error, a reset, or a ping unanswered for
    /// `liveness_timeout`; not a close by either side) reconnects by itself and resumes its
    /// session, for as long as the server keeps it (its `ServerConfig::session_grace`): calls
    /// in flight then complete exactly once, and callers see only the delay. When it cannot,
    /// every pending and later call fails with [`Error::SessionExpired`] (or
    /// [`Error::ConnectionClosed`] when nothing listens at the address any more). Off, a
    /// break fails every call with [`Error::ConnectionClosed`] at once. Default on.
    pub resume: bool,
    /// How long the client waits before its first attempt to reconnect after a break; each
    /// failed attempt doubles it, up to 1 s. Default 50 ms.
    pub reconnect_delay: Duration,
    /// Whether a connection over a Unix socket asks the server to carry its requests and
    /// replies in shared memory (a pair of rings the server hands over the socket; the socket
    /// stays open only to tell either side when the other has gone). A round trip then costs
    /// about half a socket's on a 2-core machine, and blocked callers, the server's reader
    /// and the replies wake each other through futexes after a spin of a few microseconds. A
    /// server that does not offer it (older, or `ServerConfig::shared_memory` off) keeps the
    /// connection on the socket. Such a connection is not resumed should it break: a peer on
    /// the same host that goes away has exited. TCP connections ignore it. Default on;
    /// `false` keeps every connection on its socket.
    pub shared_memory: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            tls: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            liveness_timeout: DEFAULT_LIVENESS_TIMEOUT,
            resume: true,
            reconnect_delay: Duration::from_millis(50),
            shared_memory: true,
        }
    }
}

/// The default of [`ConnectOptions::liveness_timeout`].
pub const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(30);

/// The default of [`ConnectOptions::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl ConnectOptions {
    /// No TLS, and the default connect timeout.
    pub fn new() -> Self {
        ConnectOptions::default()
    }

    /// Takes the server for vanished when a ping goes unanswered for `timeout` (see
    /// [`ConnectOptions::liveness_timeout`]).
    pub fn liveness_timeout(mut self, timeout: Duration) -> Self {
        self.liveness_timeout = timeout;
        self
    }

    /// Gives up connecting after `timeout` (see [`ConnectOptions::connect_timeout`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connects with TLS, configured by `tls`.
    pub fn tls(mut self, tls: crate::tls::TlsClientConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Turns the resumption of a broken connection's session on or off (see
    /// [`ConnectOptions::resume`]).
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// Waits `delay` before the first attempt to reconnect after a break (see
    /// [`ConnectOptions::reconnect_delay`]).
    pub fn reconnect_delay(mut self, delay: Duration) -> Self {
        self.reconnect_delay = delay;
        self
    }

    /// Turns shared memory for connections over Unix sockets on or off (see
    /// [`ConnectOptions::shared_memory`]).
    pub fn shared_memory(mut self, on: bool) -> Self {
        self.shared_memory = on;
        self
    }
}

/// The runtime that carries the sockets of connections made outside any runtime (the blocking
/// API). It has one worker thread, started on first use.
pub(crate) fn background_runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("manager-client-io")
            .enable_all()
            .build()
            .expect("cannot start the manager client's I/O runtime")
    })
}

/// Fails with [`Error::BlockingInAsync`] when called on a thread that runs an async runtime
/// (outside [`in_blocking_region`]).
pub(crate) fn ensure_blocking_allowed() -> Result<(), Error> {
    if Handle::try_current().is_ok() && !BLOCKING_REGION.get() {
        Err(Error::BlockingInAsync)
    } else {
        Ok(())
    }
}

thread_local! {
    /// Set while [`in_blocking_region`] runs its closure on this thread.
    static BLOCKING_REGION: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, which makes blocking manager calls, where blocking is allowed: outside any
/// runtime as it is; on a thread of a multi-threaded tokio runtime inside `block_in_place`
/// (the runtime's other tasks move to another thread meanwhile). Used where the framework
/// itself must block briefly inside a runtime: a proxy that arrives as an argument, decoded
/// by the server, attaches to its server before the call runs. A current-thread runtime
/// cannot do that and gets [`Error::BlockingInAsync`].
pub(crate) fn in_blocking_region<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            BLOCKING_REGION.set(self.0);
        }
    }
    match Handle::try_current() {
        Err(_) => f(),
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| {
                let _reset = Reset(BLOCKING_REGION.replace(true));
                f()
            })
        }
        Ok(_) => Err(Error::BlockingInAsync),
    }
}

impl Connection {
    /// Dials `address`, runs the authkey handshake and starts the connection's I/O tasks on the
    /// current tokio runtime.
    pub async fn connect(address: &Address, authkey: &AuthKey) -> Result<Connection, Error> {
        Connection::connect_with(address, authkey, &ConnectOptions::default()).await
    }

    /// Like [`Connection::connect`], with `options` (TLS, which wraps the connection before the
    /// authkey handshake runs inside it).
    pub async fn connect_with(
        address: &Address,
        authkey: &AuthKey,
        options: &ConnectOptions,
    ) -> Result<Connection, Error> {
        let connecting = async {
            let mut stream = transport::connect(address, options.tls.as_ref()).await?;
            let (welcome, handshake) = stream.handshake_client(authkey).await?;
            let asked = match options.shared_memory && matches!(stream, transport::Stream::Unix(_))
            {
                true => Some(shared::ask(&mut stream).await?),
                false => None,
            };
            Ok::<_, Error>((stream, welcome, handshake, asked))
        };
        let (stream, welcome, handshake, asked) =
            tokio::time::timeout(options.connect_timeout, connecting)
                .await
                .map_err(|_| {
                    Error::Timeout(format!(
                        "`connect` to {address} (ConnectOptions::connect_timeout of {:?})",
                        options.connect_timeout
                    ))
                })??;
        let (memory, features) = match asked {
            Some(shared::Answer::Memory(features, side)) => (Some(side), Some(features)),
            Some(shared::Answer::Socket(features)) => (None, Some(features)),
            None => (None, None),
        };
        let resumable = options.resume && !welcome.session_grace.is_zero() && memory.is_none();
        let (outbox, rx) = match &memory {
            Some(side) => Outbox::for_ring(side.clone()),
            None if resumable => Outbox::resumable(&stream)?,
            None => Outbox::new(&stream)?,
        };
        // A hello sent on the socket before the outbox was its first request (and its answer
        // the first reply): counted so, for a resumption of the session.
        let asked_on_socket = memory.is_none() && features.is_some();
        if asked_on_socket {
            outbox.count_sent(1);
        }
        let liveness = match welcome.liveness {
            Duration::ZERO => options.liveness_timeout,
            server => server.min(options.liveness_timeout),
        };
        let inner = Arc::new(Inner {
            address: address.clone(),
            server_address: welcome.address,
            python_address: welcome.python_address,
            outbox,
            link: parking_lot::RwLock::new(resume::Link::default()),
            received: AtomicU64::new(u64::from(asked_on_socket)),
            unacked_bytes: AtomicU64::new(0),
            resume: resumable.then(|| resume::Resume {
                authkey: authkey.clone(),
                options: options.clone(),
                keys: handshake.session(),
                grace: welcome.session_grace,
                runtime: Handle::current(),
            }),
            expired: AtomicBool::new(false),
            pending: Mutex::new(FastMap::default()),
            next_id: AtomicU64::new(shared::HELLO_ID + 1),
            closed: AtomicBool::new(false),
            close_reason: Mutex::new(None),
            max_frame: wire::DEFAULT_MAX_FRAME,
            timeout_ns: AtomicU64::new(0),
            id: NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
            features: AtomicU64::new(features.unwrap_or(0)),
            streams: Mutex::new(FastMap::default()),
            unsettled: OnceLock::new(),
        });
        match memory {
            Some(side) => shared::start(&inner, stream, side, rx, liveness)?,
            None => resume::start_link(&inner, stream, rx, liveness)?,
        }
        flush::register(&inner);
        let conn = Connection { inner };
        if features.is_none() {
            conn.greet(options.connect_timeout).await?;
        }
        Ok(conn)
    }

    /// Tells the server what this client understands and learns what it does (`wire::Hello`):
    /// one round trip, once per connection. A server that predates `Hello` answers the
    /// ping with a pong.
    async fn greet(&self, timeout: Duration) -> Result<(), Error> {
        let response = self
            .request_with(
                |id, buf: &mut BytesMut| {
                    let op = Control::Ping;
                    wire::put(buf, &Request::Control { id, op }, "request")?;
                    let hello = wire::Hello {
                        features: wire::features::ALL,
                    };
                    wire::put(buf, &hello, "hello")
                },
                Some(timeout),
            )
            .await?;
        match expect_control(response)? {
            ControlReply::Hello(hello) => {
                let known = hello.features & wire::features::ALL;
                self.inner.features.store(known, Ordering::Relaxed);
                Ok(())
            }
            ControlReply::Pong => Ok(()),
            other => Err(Error::Protocol(format!(
                "expected an answer to the hello, got {other:?}"
            ))),
        }
    }

    /// This connection's number in this process (in its calls' spans).
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// Whether the server said it understands `feature` (one of `wire::features`).
    pub fn server_has(&self, feature: u64) -> bool {
        self.inner.features.load(Ordering::Relaxed) & feature == feature
    }

    /// Whether this connection carries its requests and replies in shared memory (see
    /// [`ConnectOptions::shared_memory`]) rather than on its socket.
    pub fn uses_shared_memory(&self) -> bool {
        self.server_has(wire::features::SHARED_MEMORY)
    }

    /// Whether calls may carry a trace context (the server understands it).
    pub(crate) fn traces_calls(&self) -> bool {
        self.server_has(wire::features::TRACE_CONTEXT)
    }

    /// Like [`Connection::connect`], for code without a runtime: the connection's I/O runs on a
    /// shared background thread.
    pub fn connect_blocking(address: &Address, authkey: &AuthKey) -> Result<Connection, Error> {
        Connection::connect_blocking_with(address, authkey, &ConnectOptions::default())
    }

    /// Like [`Connection::connect_with`], for code without a runtime.
    pub fn connect_blocking_with(
        address: &Address,
        authkey: &AuthKey,
        options: &ConnectOptions,
    ) -> Result<Connection, Error> {
        ensure_blocking_allowed()?;
        background_runtime().block_on(Connection::connect_with(address, authkey, options))
    }

    /// The address of the server.
    pub fn address(&self) -> &Address {
        &self.inner.address
    }

    /// The address the server names itself by in the tokens it issues (it may differ from the
    /// address dialled, for instance `0.0.0.0:5000` for `127.0.0.1:5000`).
    pub fn server_address(&self) -> &Address {
        &self.inner.server_address
    }

    /// The one-way releases of lock-like objects sent to this connection's server from this
    /// process and not yet answered (see `sync::settle`).
    pub(crate) fn unsettled(&self) -> &Arc<Unsettled> {
        self.inner
            .unsettled
            .get_or_init(|| Unsettled::of_server(&self.inner.server_address))
    }

    /// Where the server takes CPython clients, if it does (`ServerConfig::python_address`).
    pub fn python_address(&self) -> Option<&Address> {
        self.inner.python_address.as_ref()
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    fn closed_error(&self) -> Error {
        let reason = self.inner.close_reason.lock().clone();
        let reason = reason.unwrap_or_else(|| "closed".to_string());
        if self.inner.expired.load(Ordering::Acquire) {
            Error::SessionExpired(reason)
        } else {
            Error::ConnectionClosed(reason)
        }
    }

    /// The deadline every call on this connection gets unless its proxy sets its own; `None`
    /// (the default) waits as long as it takes.
    pub fn default_timeout(&self) -> Option<Duration> {
        match self.inner.timeout_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Sets the deadline of calls on this connection (see [`Connection::default_timeout`]).
    /// A call that misses it fails with [`Error::Timeout`], and the server is told to cancel it.
    pub fn set_default_timeout(&self, timeout: Option<Duration>) {
        let ns = timeout.map_or(0, |t| t.as_nanos().clamp(1, u64::MAX as u128) as u64);
        self.inner.timeout_ns.store(ns, Ordering::Relaxed);
    }

    /// Sends a request built by `build` (given the request id), registering `pending` as its
    /// waiter, and returns the request id. The caller writes the request to the socket itself
    /// when nothing is queued before it: a hop through the writer task cost more than the
    /// write (see [`Outbox`]).
    fn send_request<F: BuildFrame>(&self, build: F, pending: Pending) -> Result<u64, Error> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let pending = match self.send_direct(id, &build, pending) {
            Ok(sent) => return sent,
            Err(pending) => pending,
        };
        let mut buf = self.inner.outbox.frame_buffer();
        build.build(id, &mut buf)?;
        let frame = wire::finish_buffer(buf, self.inner.max_frame)?;
        if let Some(pending) = pending {
            self.inner.pending.lock().insert(id, pending);
        }
        // Checked again under the lock order the reader uses when it fails everything pending.
        if !self.inner.outbox.send_buffer(frame) || self.is_closed() {
            self.inner.pending.lock().remove(&id);
            return Err(self.closed_error());
        }
        Ok(id)
    }

    /// Through shared memory, a large call (its frame of at least `BULK_AT_LEAST` bytes) is
    /// serialized straight into a block of the request arena (`Outbox::send_direct`), rather
    /// than into a buffer that is then copied there. Gives `pending` back when the frame is
    /// to be built and sent the usual way; `None` in its place when it is registered already
    /// (the direct send was tried, and the reply may come as soon as a frame is out).
    fn send_direct<F: BuildFrame>(
        &self,
        id: u64,
        build: &F,
        pending: Pending,
    ) -> Result<Result<u64, Error>, Option<Pending>> {
        if !self.inner.outbox.is_ring() {
            return Err(Some(pending));
        }
        let Some((head, args)) = build.parts(id) else {
            return Err(Some(pending));
        };
        let Ok(args_size) = wire::size_of(args, "the arguments") else {
            return Err(Some(pending));
        };
        if args_size < crate::transport::shm::bulk::BULK_AT_LEAST {
            return Err(Some(pending));
        }
        let Ok(head_size) = wire::size_of(&head, "request") else {
            return Err(Some(pending));
        };
        let len = head_size + args_size;
        if len > self.inner.max_frame {
            // Refused as too large by the usual way.
            return Err(Some(pending));
        }
        self.inner.pending.lock().insert(id, pending);
        let sent = self.inner.outbox.send_direct(len, &mut |block| {
            block.serialize(&head)?;
            block.serialize(args)
        });
        if !sent {
            return Err(None);
        }
        // Checked again under the lock order the reader uses when it fails everything pending.
        if self.is_closed() {
            self.inner.pending.lock().remove(&id);
            return Ok(Err(self.closed_error()));
        }
        Ok(Ok(id))
    }

    /// Sends a request and returns a receiver for its response, without waiting. Dropping the
    /// receiver ignores the response (a proxy in it is released when it arrives).
    pub(crate) fn start<F>(
        &self,
        build: F,
    ) -> Result<oneshot::Receiver<Result<Response, Error>>, Error>
    where
        F: BuildFrame,
    {
        self.start_with_id(build).map(|(_, wait)| wait)
    }

    /// Like [`Connection::start`], also returning the request's id (for [`Connection::cancel`]).
    pub(crate) fn start_with_id<F>(
        &self,
        build: F,
    ) -> Result<(u64, oneshot::Receiver<Result<Response, Error>>), Error>
    where
        F: BuildFrame,
    {
        let (done, wait) = oneshot::channel();
        let id = self.send_request(build, Pending::Async(done))?;
        Ok((id, wait))
    }

    /// Asks the server to cancel request `id` while still waiting for its answer: the server
    /// answers a call it cancelled with a `Cancelled` error, and one that had already finished
    /// with its result (which the caller must then undo, as an acquisition is).
    pub(crate) fn cancel(&self, id: u64) {
        self.notify(&Request::Cancel { id });
    }

    /// Gives up on request `id`: nobody waits for it any more, and the server is asked to
    /// cancel it if it is still running.
    fn abandon(&self, id: u64) {
        if self.inner.pending.lock().remove(&id).is_some() {
            self.notify(&Request::Cancel { id });
        }
    }

    /// Sends a one-way message (no response).
    pub(crate) fn notify(&self, request: &Request<'_>) {
        if self.is_closed() {
            return;
        }
        self.inner.send_one_way(request);
    }

    /// Sends a request and waits for its response, with the connection's default deadline.
    pub(crate) async fn request<F>(&self, build: F) -> Result<Response, Error>
    where
        F: BuildFrame,
    {
        self.request_with(build, self.default_timeout()).await
    }

    /// Sends a request and waits for its response for at most `timeout`. If the returned
    /// future is dropped before the response arrives, the server is asked to cancel the call.
    pub(crate) async fn request_with<F>(
        &self,
        build: F,
        timeout: Option<Duration>,
    ) -> Result<Response, Error>
    where
        F: BuildFrame,
    {
        let (done, wait) = oneshot::channel();
        let id = self.send_request(build, Pending::Async(done))?;
        let mut abandon = AbandonOnDrop {
            conn: self,
            id,
            armed: true,
        };
        let result = match timeout {
            None => wait.await,
            Some(limit) => match within(limit, wait).await {
                Ok(result) => result,
                Err(_) => return Err(Error::Timeout(format!("(request {id}) after {limit:?}"))),
            },
        };
        abandon.armed = false;
        match result {
            Ok(result) => result,
            Err(_) => Err(self.closed_error()),
        }
    }

    /// Sends a request and blocks the thread until its response arrives, with the
    /// connection's default deadline.
    pub(crate) fn request_blocking<F>(&self, build: F) -> Result<Response, Error>
    where
        F: BuildFrame,
    {
        self.request_blocking_with(build, self.default_timeout())
    }

    /// Sends a request and blocks the thread for at most `timeout` for its response.
    pub(crate) fn request_blocking_with<F>(
        &self,
        build: F,
        timeout: Option<Duration>,
    ) -> Result<Response, Error>
    where
        F: BuildFrame,
    {
        ensure_blocking_allowed()?;
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        let started = Instant::now();
        // Through shared memory, the reader task is quieted before the request goes out: a
        // server that answers at once would wake it for a reply this thread reads itself.
        // (Such a link is never replaced; a socket's is read again after the send.)
        let early = self.inner.link.read().direct();
        let quieted = early.1.as_ref().is_some_and(|direct| direct.quiet_reader());
        let id = match self.send_request(build, Pending::Blocking(done)) {
            Ok(id) => id,
            Err(e) => {
                if let (true, Some(direct)) = (quieted, &early.1) {
                    direct.unquiet_reader();
                }
                return Err(e);
            }
        };
        let deadline = timeout.and_then(|limit| started.checked_add(limit));
        let (socket, direct) = match quieted {
            true => early,
            false => self.inner.link.read().direct(),
        };
        if let Some(direct) = direct {
            // Read the reply on this thread, unless the reader task is reading right now. A
            // break hands the wait to the channel: the reply comes once the session resumes.
            let waited = direct.read_until(
                || wait.try_recv().ok(),
                deadline,
                |frame| direct.deliver(&self.inner, frame),
                |reason| resume::link_broken(&self.inner, socket, reason, None),
                quieted,
            );
            match waited {
                direct::Waited::Done(result) => return result,
                direct::Waited::TimedOut => return Err(self.timed_out(id, timeout)),
                direct::Waited::Busy => {}
            }
        }
        let left = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
        let result = match left {
            None => wait.recv().map_err(|_| self.closed_error()),
            Some(left) => match wait.recv_timeout(left) {
                Ok(result) => Ok(result),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    return Err(self.timed_out(id, timeout))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(self.closed_error()),
            },
        };
        result?
    }

    /// Abandons request `id`, whose deadline `timeout` passed, and says so.
    fn timed_out(&self, id: u64, timeout: Option<Duration>) -> Error {
        self.abandon(id);
        let limit = timeout.unwrap_or_default();
        Error::Timeout(format!("(request {id}) after {limit:?}"))
    }

    /// Builds the frame of a call of `method` on `object` with `args`.
    pub(crate) fn call_frame<'a, A: Serialize>(
        object: u64,
        method: &'a str,
        args: &'a A,
    ) -> impl FnOnce(u64, &mut BytesMut) -> Result<(), Error> + 'a {
        move |id, buf| {
            wire::put(buf, &Request::Call { id, object, method }, "request")?;
            wire::put(buf, args, "the arguments")
        }
    }

    /// Builds the frame of a call of `method` on `object` with `args`, with the trace context
    /// of the client's span when there is one (and the server takes it). Records the request
    /// id in `span`.
    pub(crate) fn traced_call_frame<'a, A: Serialize>(
        object: u64,
        method: &'a str,
        args: &'a A,
        span: &'a tracing::Span,
        trace: Option<crate::trace::TraceContext>,
    ) -> CallFrame<'a, A> {
        CallFrame {
            object,
            method,
            args,
            span,
            trace,
        }
    }

    /// Builds the frame of a create of `typeid` with `args`.
    /// Builds the frame of a create of `typeid`, for a proxy that stands for objects of the
    /// type `object_type` when it is known: then, if the server understands it, the server
    /// checks that the typeid makes objects of that type ([`Request::CreateAs`]).
    pub(crate) fn create_frame<'a, A: Serialize>(
        &self,
        typeid: &'a str,
        object_type: Option<&'static str>,
        args: &'a A,
    ) -> impl FnOnce(u64, &mut BytesMut) -> Result<(), Error> + 'a {
        let object_type = object_type.filter(|_| self.server_has(wire::features::CREATE_AS));
        move |id, buf| {
            let head = match object_type {
                Some(object_type) => Request::CreateAs {
                    id,
                    typeid,
                    object_type,
                },
                None => Request::Create { id, typeid },
            };
            wire::put(buf, &head, "request")?;
            wire::put(buf, args, "the arguments")
        }
    }

    /// Builds the frame of a control request.
    pub(crate) fn control_frame(
        op: Control,
    ) -> impl FnOnce(u64, &mut BytesMut) -> Result<(), Error> {
        move |id, buf| wire::put(buf, &Request::Control { id, op }, "request")
    }

    /// Builds the frame of an attach request for the object `token` names.
    pub(crate) fn attach_frame(
        token: &Token,
    ) -> impl FnOnce(u64, &mut BytesMut) -> Result<(), Error> + '_ {
        move |id, buf| {
            let request = Request::Attach {
                id,
                object: token.id,
                typeid: &token.typeid,
                instance: token.instance,
            };
            wire::put(buf, &request, "request")
        }
    }

    /// Sends a control request and waits for its answer.
    pub async fn control(&self, op: Control) -> Result<ControlReply, Error> {
        expect_control(self.request(Self::control_frame(op)).await?)
    }

    /// Sends a control request and blocks until its answer arrives.
    pub fn control_blocking(&self, op: Control) -> Result<ControlReply, Error> {
        expect_control(self.request_blocking(Self::control_frame(op))?)
    }

    /// Fails every pending call: the connection is gone (its session expired, when
    /// `expired`).
    fn fail_all(inner: &Inner, reason: String, expired: bool) {
        if expired {
            inner.expired.store(true, Ordering::Release);
        }
        inner.closed.store(true, Ordering::Release);
        inner.outbox.close();
        // The first reason stays: it says why (a later one only says the socket then closed).
        let reason = inner
            .close_reason
            .lock()
            .get_or_insert_with(|| reason.clone())
            .clone();
        let pending = std::mem::take(&mut *inner.pending.lock());
        let expired = inner.expired.load(Ordering::Acquire);
        for (_, waiter) in pending {
            let error = if expired {
                Error::SessionExpired(reason.clone())
            } else {
                Error::ConnectionClosed(reason.clone())
            };
            let _ = waiter.deliver(Err(error));
        }
        // A stream whose sink is gone ends with the connection's error.
        inner.streams.lock().clear();
    }

    /// Releases a proxy token that arrived for a call nobody waits for any more.
    fn release_orphan(inner: &Inner, response: &Response) {
        if let Reply::Proxy(token) = &response.reply {
            inner.send_one_way(&Request::DecRef { object: token.id });
        }
    }
}

impl Inner {
    /// Sends a one-way message (a release, a cancel, an acknowledgement): written from this
    /// thread when nothing is queued before it, as a request is, else queued for the writer
    /// task. Always queued, each one woke the client's I/O thread (a blocking proxy's drop, a
    /// large reply's acknowledgement), and the caller's next request waited behind it.
    fn send_one_way(&self, request: &Request<'_>) {
        let mut buf = self.outbox.frame_buffer();
        if wire::put(&mut buf, request, "request").is_ok() {
            if let Ok(frame) = wire::finish_buffer(buf, self.max_frame) {
                self.outbox.send_buffer(frame);
            }
        }
    }
}

/// A request frame to send: its bytes after the length prefix, written into a buffer; or, when
/// it is a head followed by arguments ([`BuildFrame::parts`]) and large, written straight into
/// shared memory (see `Connection::send_direct`).
pub(crate) trait BuildFrame {
    /// Writes the frame of request `id` into `buf`, after its length prefix.
    fn build(self, id: u64, buf: &mut BytesMut) -> Result<(), Error>;

    /// The frame of request `id` as its head and arguments, when it is made of them.
    fn parts(&self, _id: u64) -> Option<(Request<'_>, &dyn erased_serde::Serialize)> {
        None
    }
}

impl<F: FnOnce(u64, &mut BytesMut) -> Result<(), Error>> BuildFrame for F {
    fn build(self, id: u64, buf: &mut BytesMut) -> Result<(), Error> {
        self(id, buf)
    }
}

/// The frame of a call (see [`Connection::traced_call_frame`]).
pub(crate) struct CallFrame<'a, A> {
    object: u64,
    method: &'a str,
    args: &'a A,
    span: &'a tracing::Span,
    trace: Option<crate::trace::TraceContext>,
}

impl<A: Serialize> CallFrame<'_, A> {
    fn head(&self, id: u64) -> Request<'_> {
        self.span.record("request", id);
        let (object, method) = (self.object, self.method);
        match self.trace {
            None => Request::Call { id, object, method },
            Some(trace) => Request::TracedCall {
                id,
                object,
                method,
                trace,
            },
        }
    }
}

impl<A: Serialize> BuildFrame for CallFrame<'_, A> {
    fn build(self, id: u64, buf: &mut BytesMut) -> Result<(), Error> {
        wire::put(buf, &self.head(id), "request")?;
        wire::put(buf, self.args, "the arguments")
    }

    fn parts(&self, id: u64) -> Option<(Request<'_>, &dyn erased_serde::Serialize)> {
        Some((self.head(id), self.args))
    }
}

/// Hands one response frame to the call waiting for it (releasing the proxy it carries when
/// nobody waits any more). An error means the server broke the protocol.
fn deliver(inner: &Inner, frame: BytesMut) -> Result<(), String> {
    deliver_with(inner, frame, None)
}

/// [`deliver`], for a frame whose end came in a buffer of its own (`tail`, see
/// [`Response::take_byte_string`]).
fn deliver_with(inner: &Inner, frame: BytesMut, tail: Option<Vec<u8>>) -> Result<(), String> {
    let frame = frame.freeze();
    let (head, payload) =
        wire::take::<ResponseHead>(&frame, "response").map_err(|e| e.to_string())?;
    let payload_at = frame.len() - payload.len();
    if inner.resume.is_some() {
        let received = inner.received.fetch_add(1, Ordering::Relaxed) + 1;
        if head.id == 0 {
            // Not an answer: the server says how many requests it has read.
            return match head.reply {
                Reply::Control(ControlReply::Received(read)) => inner.outbox.acked(read),
                other => Err(format!("an answer to no request: {other:?}")),
            };
        }
        // Every so many replies, or bytes of replies (what the server keeps until then).
        let bytes = inner
            .unacked_bytes
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        let bytes = bytes + frame.len() as u64;
        if received.is_multiple_of(resume::ACK_EVERY) || bytes >= resume::ACK_BYTES {
            inner.unacked_bytes.store(0, Ordering::Relaxed);
            resume::acknowledge(inner, received);
        }
    }
    let response = Response {
        reply: head.reply,
        frame: frame.clone(),
        payload_at,
        tail,
        joined: std::sync::OnceLock::new(),
    };
    let Some(response) = streams::deliver(inner, head.id, response) else {
        return Ok(());
    };
    let waiter = inner.pending.lock().remove(&head.id);
    match waiter {
        Some(waiter) => {
            if let Some(Ok(response)) = waiter.deliver(Ok(response)) {
                Connection::release_orphan(inner, &response);
            }
        }
        None => Connection::release_orphan(inner, &response),
    }
    Ok(())
}

/// The reader task of a plain TCP or Unix connection's socket number `socket`, which blocked
/// callers share.
async fn read_plain<H: direct::SocketReadHalf>(
    inner: std::sync::Weak<Inner>,
    direct: Arc<direct::Direct>,
    reader: H,
    socket: u64,
) {
    let ended = direct::read_replies(inner.clone(), direct, reader).await;
    if let (Some(reason), Some(inner)) = (ended, inner.upgrade()) {
        resume::link_broken(&inner, socket, reason, None);
    }
}

fn expect_control(response: Response) -> Result<ControlReply, Error> {
    match response.reply {
        Reply::Control(reply) => Ok(reply),
        Reply::Error(e) => Err(Error::Remote(e)),
        other => Err(Error::Protocol(format!(
            "expected a control reply, got {other:?}"
        ))),
    }
}

/// The reader task of a TLS connection's socket number `socket`.
async fn read_responses<R: ReadHalf>(inner: std::sync::Weak<Inner>, reader: R, socket: u64) {
    let mut frames = FramedRead::new(reader, wire::frame_codec(wire::DEFAULT_MAX_FRAME));
    let reason = loop {
        let Some(frame) = frames.next().await else {
            break "the server closed the connection".to_string();
        };
        let Some(inner) = inner.upgrade() else { return };
        let delivered = match frame {
            Ok(frame) => deliver(&inner, frame),
            Err(e) => Err(format!("bad frame from the server: {e}")),
        };
        if let Err(reason) = delivered {
            break reason;
        }
    };
    if let Some(inner) = inner.upgrade() {
        resume::link_broken(&inner, socket, reason, None);
    }
}

/// Turns a response into a proxy token, or the error it carries.
pub(crate) fn expect_token(response: Response, what: &str) -> Result<Token, Error> {
    match response.reply {
        Reply::Proxy(token) => Ok(token),
        Reply::Error(e) => Err(Error::Remote(e)),
        other => Err(Error::Protocol(format!(
            "{what}: expected a proxy, got {other:?}"
        ))),
    }
}

/// This process's connection to the server at `address`, made on first use with this process's
/// authkey and default TLS configuration ([`crate::tls::set_default_client_config`]) and
/// shared from then on: how a proxy that arrives from another process (as a spawned function's
/// argument, or inside a value) reaches its server.
pub(crate) fn shared_connection(address: &Address) -> Result<Connection, Error> {
    static CONNECTIONS: OnceLock<Mutex<HashMap<Address, Connection>>> = OnceLock::new();
    let connections = CONNECTIONS.get_or_init(Default::default);
    if let Some(conn) = connections.lock().get(address) {
        if !conn.is_closed() {
            return Ok(conn.clone());
        }
    }
    let tls = crate::tls::default_client_config_for(address);
    let options = ConnectOptions {
        tls: tls.clone(),
        ..ConnectOptions::default()
    };
    let conn = Connection::connect_blocking_with(address, &crate::process::authkey(), &options)
        .map_err(|e| match e {
            Error::Tls(why) if tls.is_none() => Error::Tls(format!(
                "a proxy for {address} reached {}, which has no default TLS configuration \
                 (manager::tls::set_default_client_config, which spawned processes inherit \
                 from their parent): {why}",
                crate::process::current_process_name()
            )),
            Error::Tls(why) => Error::Tls(format!(
                "a proxy for {address} reconnected with the default TLS configuration of {}: \
                 {why}",
                crate::process::current_process_name()
            )),
            other => other,
        })?;
    connections.lock().insert(address.clone(), conn.clone());
    Ok(conn)
}

/// Abandons a request whose future is dropped before its response arrived.
struct AbandonOnDrop<'a> {
    conn: &'a Connection,
    id: u64,
    armed: bool,
}

impl Drop for AbandonOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.conn.abandon(self.id);
        }
    }
}

/// Pings the server every third of `liveness` while socket number `socket` serves the
/// connection. A ping unanswered for `liveness` means the server's host has vanished, or the
/// link to it (no FIN or RST ever comes over a half-open connection): the socket is taken for
/// broken (see `resume`). The pings also tell the server that this client lives.
async fn keep_alive(inner: std::sync::Weak<Inner>, liveness: Duration, socket: u64) {
    let liveness = liveness.max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(liveness / 3).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.closed.load(Ordering::Acquire) || inner.link.read().number() != socket {
            return;
        }
        let conn = Connection { inner };
        let ping = conn.request_with(Connection::control_frame(Control::Ping), Some(liveness));
        match ping.await {
            Ok(_) => {}
            Err(Error::Timeout(_)) => {
                let reason = format!(
                    "the server at {} did not answer a ping for {liveness:?} \
                     (ConnectOptions::liveness_timeout): its host may have vanished",
                    conn.inner.address
                );
                resume::link_broken(&conn.inner, socket, reason, Some(true));
                return;
            }
            Err(_) => return,
        }
    }
}
