//! Serving unmodified CPython clients (`multiprocessing.managers.BaseManager`/`SyncManager`).
//!
//! A CPython client speaks `multiprocessing.connection` (its frames and HMAC challenges) and
//! pickles `(ident, methodname, args, kwds)` requests. This module decodes them with
//! [`crate::python::pickle`] into [`Value`]s, and runs them through the very dispatchers native
//! clients use: the arguments reach a `#[shared]` method through `Value` as the serde
//! deserializer, by position or by parameter name, and results leave through `to_value`. The
//! built-in types answer to the method names of CPython's proxies (`__getitem__`, `acquire`,
//! `__getattribute__`, ...).
//!
//! References: CPython clients keep no connection per proxy (they open one for every
//! `create`, `incref` and `decref`), so the references they take belong to the server's
//! CPython clients as a whole, as in CPython's own server; a CPython client killed with SIGKILL
//! leaves its references behind, as it does there. Two things are tracked better than CPython
//! does: the reference a `#PROXY` reply hands over belongs to the method connection that
//! received it until the client's own `decref` takes it over, so a client that fails to build
//! the proxy (an unregistered typeid) does not leak the object past that connection; and locks,
//! semaphores and waits of a method connection (one per client thread) are released when it
//! closes.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};

use super::activity::Activity;
use super::connection::Connection;
use super::dispatch::runs_factory;
use super::{dispatch_error, panic_message, Args, State};
use crate::address::Address;
use crate::context::CallContext;
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::object::{Call, Outcome};
use crate::python::connection::SMALL_WRITE;
use crate::python::pickle::{self, id_from_hex, id_to_hex};
use crate::python::{PyConnection, PyException, PyProxy, PyValue};
use crate::registry::Entry;
use crate::transport::Outbox;
use crate::transport::Stream;
use crate::value::to_value;
use crate::value::Value;
use crate::wire::{Reply, Token};

mod arguments;
mod builtins;
mod call;
mod control;
mod create;
mod framing;
mod names;
mod results;
mod slices;
mod thread;
mod waiting;
mod watch;
use arguments::*;
use builtins::*;
use call::{call, call_in, Exec};
use control::control;

use create::*;
use names::*;
use results::*;
use slices::*;

/// What the CPython clients of a server hold together, and the `#PROXY` references waiting
/// for their client's `decref`.
#[derive(Default)]
pub(super) struct PythonRefs {
    owner: Mutex<Option<Arc<Connection>>>,
    handed: Mutex<HashMap<u64, Vec<Weak<Connection>>>>,
    /// Method connections served by threads of their own (see `thread`).
    threads: std::sync::atomic::AtomicUsize,
    /// Those threads watching their sockets before they block (see `watch`).
    watching: watch::Watching,
}

impl PythonRefs {
    /// The pseudo-connection that holds the references CPython clients take.
    fn owner(&self, state: &Arc<State>) -> Arc<Connection> {
        self.owner
            .lock()
            .get_or_insert_with(|| pseudo_connection(state))
            .clone()
    }

    /// Releases everything CPython clients held (the server is stopping).
    pub(super) fn release(&self) {
        if let Some(owner) = self.owner.lock().take() {
            owner.closed.cancel();
            owner.release_all();
        }
    }
}

/// A connection record with no socket of its own: it owns references, and gives method calls
/// a [`CallContext`].
fn pseudo_connection(state: &Arc<State>) -> Arc<Connection> {
    // Nothing is ever sent to it: what it would queue is dropped.
    let (outbox, _) = Outbox::queue_only();
    Arc::new(Connection::new(state.clone(), outbox, None))
}

/// Serves one CPython client connection.
pub(super) async fn handle_python(state: Arc<State>, stream: Stream) {
    #[allow(unreachable_patterns)]
    match stream {
        Stream::Tcp(stream) => {
            let fd = stream.as_raw_fd();
            keep_alive(fd, state.config.liveness_timeout);
            serve(state, stream, Some(fd)).await
        }
        Stream::Unix(stream) => serve(state, stream, None).await,
        _ => tracing::warn!("CPython clients are served over plain TCP and Unix sockets only"),
    }
}

/// A CPython client cannot answer pings, so its TCP socket gets the same bound from the kernel:
/// keepalive probes after half the liveness timeout of silence, and `TCP_USER_TIMEOUT` for data
/// left unacknowledged, so that a client whose host vanished is dropped (and its locks and
/// waits released) within about `liveness`.
fn keep_alive(fd: RawFd, liveness: std::time::Duration) {
    #[cfg(target_os = "linux")]
    {
        let secs = |d: std::time::Duration| d.as_secs().clamp(1, i32::MAX as u64) as libc::c_int;
        let options = [
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs(liveness / 2)),
            (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs(liveness / 6)),
            (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3),
            (
                libc::IPPROTO_TCP,
                libc::TCP_USER_TIMEOUT,
                liveness.as_millis().clamp(1, i32::MAX as u128) as libc::c_int,
            ),
        ];
        for (level, name, value) in options {
            // SAFETY: `fd` is the open socket of the stream being served, and the option value
            // is a c_int that outlives the call.
            let failed = unsafe {
                libc::setsockopt(
                    fd,
                    level,
                    name,
                    &value as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            } != 0;
            if failed {
                tracing::debug!(
                    "cannot set a keepalive option on a CPython connection: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (fd, liveness);
}

/// CPython clients sometimes write twice before they read: a control connection's last
/// handshake message and then its request, or a frame past 16 KiB as its header and then its
/// payload. With Nagle on their side and delayed acknowledgements on ours, the second write
/// would wait 40 ms for the acknowledgement of the first. Asking for a quick acknowledgement
/// before the second is read (before a control connection's request; once a big frame's header
/// is read) sends the pending one at once (Linux re-arms delayed ACKs, so it is done each
/// time). A method connection's small requests need none: each waits for its reply, which
/// carries the acknowledgement, so they are spared the system call.
fn quick_ack(fd: Option<RawFd>) {
    #[cfg(target_os = "linux")]
    if let Some(fd) = fd {
        let one: libc::c_int = 1;
        // SAFETY: fd is the open socket this connection owns; the option value is a c_int.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

async fn serve<S>(state: Arc<State>, stream: S, fd: Option<RawFd>)
where
    S: AsyncRead + AsyncWrite + Unpin + thread::IntoSocket,
{
    // Buffered: CPython sends a small request's header and pickle in one write, which one read
    // then takes whole (unbuffered, the header and the pickle were a read each).
    let stream = tokio::io::BufReader::with_capacity(16 * 1024, stream);
    let mut conn = PyConnection::new(stream).with_max_frame(state.config.max_frame);
    let handshake = tokio::select! {
        result = tokio::time::timeout(state.config.handshake_timeout, conn.server_handshake(&state.authkey)) => result,
        _ = state.stop.cancelled() => return,
    };
    match handshake {
        Ok(Ok(_)) => {}
        Ok(Err(Error::Auth(message))) => {
            tracing::warn!("refused a CPython client with a wrong authkey: {message}");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!("CPython handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!("a CPython client did not complete the handshake in time");
            return;
        }
    }
    state.connections.fetch_add(1, Ordering::Relaxed);
    let me = pseudo_connection(&state);
    let mut methods = false;
    let mut on_thread = None;
    loop {
        if !methods {
            // Before the read: the request may wait behind the handshake's last message.
            quick_ack(fd);
        }
        let wants_ack = |len: usize| {
            if methods && len > SMALL_WRITE {
                quick_ack(fd);
            }
        };
        let message = tokio::select! {
            _ = me.closed.cancelled() => break,
            message = conn.recv_bytes_with(wants_ack) => message,
        };
        let frame = match message {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("closing a CPython connection: {e}");
                break;
            }
        };
        let (reply, after) = match request_of(&state, &frame) {
            Err(answer) => answer,
            Ok(request) if request.ident.is_none() => control(&me, request, &mut methods).await,
            Ok(_) if !methods => (
                traceback(
                    "RuntimeError",
                    "method calls come after accept_connection on this connection",
                ),
                After::Close,
            ),
            Ok(request) => {
                // A CPython client sends nothing while it waits; anything read meanwhile means it
                // is gone (or broke the protocol), and the call is dropped.
                let call = call(&me, request);
                tokio::select! {
                    reply = call => (reply, After::Continue),
                    _ = me.closed.cancelled() => break,
                    _ = conn.recv() => break,
                }
            }
        };
        if let Err(e) = conn.send(&reply).await {
            tracing::debug!("cannot answer a CPython client: {e}");
            break;
        }
        match after {
            After::Continue => {}
            After::Close => break,
            After::Stop => {
                state.stop.cancel();
                break;
            }
        }
        if methods && on_thread.is_none() {
            // Accepted for method calls: the rest goes to a thread of its own, if one is free.
            on_thread = thread::slot(&state);
            if on_thread.is_some() {
                break;
            }
        }
    }
    if let Some(slot) = on_thread.take() {
        if !me.closed.is_cancelled() {
            let reader = conn.into_inner();
            let leftover = reader.buffer().to_vec();
            match reader.into_inner().into_socket() {
                Ok(socket) => {
                    return thread::serve_on_thread(state, me, socket, leftover, slot).await
                }
                Err(e) => tracing::debug!("cannot serve a CPython connection on a thread: {e}"),
            }
        }
    }
    me.close();
    state.connections.fetch_sub(1, Ordering::Relaxed);
}

/// The request in a frame, with its proxies' addresses made native; or the reply for a frame
/// that holds none, and whether the connection goes on.
fn request_of(state: &State, frame: &[u8]) -> Result<Request, (PyValue, After)> {
    // A whole frame that does not unpickle (a global outside the allow-list, an int past
    // i128, ...) is the request's fault, not the connection's: the client gets an error in
    // its own form and the connection goes on serving that thread's other proxies.
    let request = match pickle::decode_with(frame, &decode_options()) {
        Ok(request) => request,
        Err(e) => {
            let refused = refusal(&e.to_string());
            return Err((traceback("TypeError", &refused), After::Continue));
        }
    };
    match Request::parse(request) {
        Ok(mut request) => {
            let (native, python) = (Some(&state.address), state.python_address.as_ref());
            request
                .args
                .iter_mut()
                .for_each(|v| retarget(v, python, native));
            request
                .kwds
                .iter_mut()
                .for_each(|(_, v)| retarget(v, python, native));
            Ok(request)
        }
        Err(message) => Err((traceback("TypeError", &message), After::Close)),
    }
}

/// How requests are unpickled: any object outside the allow-list (a `datetime`, a
/// dataclass) is kept symbolically, never imported or called, and stored as a
/// [`Value::Opaque`]: its pickle, which goes back to CPython clients as it came.
fn decode_options() -> pickle::DecodeOptions {
    pickle::DecodeOptions {
        opaque_globals: true,
        ..Default::default()
    }
}

/// The message of a request that could not be unpickled, logged at warn level once per kind
/// (the message up to its first colon: "refused to unpickle the global datetime.date", ...).
fn refusal(reason: &str) -> String {
    static LOGGED: std::sync::OnceLock<Mutex<std::collections::HashSet<String>>> =
        std::sync::OnceLock::new();
    let kind = reason.split(':').next().unwrap_or(reason).to_string();
    let logged = LOGGED.get_or_init(Default::default);
    if logged.lock().insert(kind) {
        tracing::warn!("refused a CPython request (logged once per kind): {reason}");
    }
    format!("the manager server cannot take this request: {reason}")
}

/// Rewrites the address of every proxy token inside `value` from `from` to `to`: CPython
/// clients know the server by its CPython address, the object table by its native one.
fn retarget(value: &mut Value, from: Option<&Address>, to: Option<&Address>) {
    let (Some(from), Some(to)) = (from, to) else {
        return;
    };
    match value {
        Value::Proxy(token) if &token.address == from => token.address = to.clone(),
        Value::List(items) | Value::Tuple(items) | Value::Set(items) | Value::FrozenSet(items) => {
            items
                .iter_mut()
                .for_each(|v| retarget(v, Some(from), Some(to)))
        }
        Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            retarget(k, Some(from), Some(to));
            retarget(v, Some(from), Some(to));
        }),
        _ => {}
    }
}

/// What to do after a reply.
enum After {
    Continue,
    Close,
    Stop,
}

/// A request `(ident, methodname, args, kwds)`.
struct Request {
    ident: Option<String>,
    method: String,
    args: Vec<Value>,
    kwds: Vec<(String, Value)>,
}

impl Request {
    fn parse(request: PyValue) -> Result<Request, String> {
        let PyValue::Tuple(mut parts) = request else {
            return Err("a request must be the tuple (ident, methodname, args, kwds)".into());
        };
        if parts.len() != 4 {
            return Err(format!("a request has 4 items, not {}", parts.len()));
        }
        let kwds = parts.pop().unwrap_or_default();
        let args = parts.pop().unwrap_or_default();
        let method = parts.pop().unwrap_or_default();
        let ident = parts.pop().unwrap_or_default();
        let ident = match ident {
            PyValue::None => None,
            PyValue::Str(ident) => Some(ident),
            other => return Err(format!("an ident is a str, not a {}", other.kind())),
        };
        let PyValue::Str(method) = method else {
            return Err("a method name is a str".into());
        };
        let args = match args {
            PyValue::Tuple(args) | PyValue::List(args) => args,
            other => return Err(format!("args is a tuple, not a {}", other.kind())),
        };
        let args = args
            .into_iter()
            .map(PyValue::into_value)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let kwds = match kwds {
            PyValue::Dict(entries) => entries
                .into_iter()
                .map(|(k, v)| match k {
                    PyValue::Str(k) => Ok((k, v.into_value().map_err(|e| e.to_string())?)),
                    other => Err(format!("a keyword is a str, not a {}", other.kind())),
                })
                .collect::<Result<Vec<_>, _>>()?,
            PyValue::None => Vec::new(),
            other => return Err(format!("kwds is a dict, not a {}", other.kind())),
        };
        Ok(Request {
            ident,
            method,
            args,
            kwds,
        })
    }
}

fn reply(kind: &str, payload: PyValue) -> PyValue {
    PyValue::Tuple(vec![PyValue::str(kind), payload])
}

fn ok(value: PyValue) -> PyValue {
    reply("#RETURN", value)
}

/// A `#TRACEBACK` reply: CPython clients raise `RemoteError` with the text.
fn traceback(exception: &str, message: &str) -> PyValue {
    reply(
        "#TRACEBACK",
        PyValue::str(format!(
            "Traceback (most recent call last):\n  (raised by a Rust manager server)\n{exception}: {message}\n"
        )),
    )
}

/// The `#TRACEBACK` of a method the object does not serve, as CPython's server words it: its
/// `AttributeError`, then the `KeyError` of the fallback it looked for (the line a client
/// shows last).
fn not_exposed(method: &str, message: &str) -> PyValue {
    reply(
        "#TRACEBACK",
        PyValue::str(format!(
            "Traceback (most recent call last):\n  (raised by a Rust manager server)\n\
             AttributeError: {message}\n\n\
             During handling of the above exception, another exception occurred:\n\n\
             Traceback (most recent call last):\n  (raised by a Rust manager server)\n\
             KeyError: {}\n",
            crate::python::repr::repr(&Value::Str(method.to_string()))
        )),
    )
}

/// An `#ERROR` reply: CPython clients raise the exception itself.
fn raise(module: &str, name: &str, args: Vec<PyValue>) -> PyValue {
    reply(
        "#ERROR",
        PyValue::Exception(PyException::new(module, name, args)),
    )
}

/// The reply for a remote error, as the exception CPython would raise.
fn error_reply(error: RemoteError) -> PyValue {
    let message = || vec![PyValue::str(error.message.clone())];
    match error.kind {
        RemoteErrorKind::Index => raise("builtins", "IndexError", message()),
        RemoteErrorKind::Key => raise("builtins", "KeyError", message()),
        RemoteErrorKind::InvalidValue => raise("builtins", "ValueError", message()),
        RemoteErrorKind::Attribute => raise("builtins", "AttributeError", message()),
        RemoteErrorKind::Empty => raise("queue", "Empty", Vec::new()),
        RemoteErrorKind::Full => raise("queue", "Full", Vec::new()),
        RemoteErrorKind::BrokenBarrier => raise("threading", "BrokenBarrierError", Vec::new()),
        // A list past the size `l *= n` may make; a number out of an array's typecode's range.
        RemoteErrorKind::Limit if error.typeid == "list" && error.method == "repeat" => {
            raise("builtins", "MemoryError", message())
        }
        RemoteErrorKind::Limit if error.typeid == "Array" => {
            raise("builtins", "OverflowError", message())
        }
        RemoteErrorKind::Runtime | RemoteErrorKind::Limit => {
            raise("builtins", "RuntimeError", message())
        }
        RemoteErrorKind::BadArguments => raise("builtins", "TypeError", message()),
        RemoteErrorKind::UnknownTypeid | RemoteErrorKind::UnknownObject => {
            traceback("KeyError", &error.message)
        }
        RemoteErrorKind::NotExposed | RemoteErrorKind::NoSuchMethod => {
            traceback("AttributeError", &error.message)
        }
        _ => traceback("RuntimeError", &error.to_string()),
    }
}

/// The `#TRACEBACK` form of an error reply: how CPython's server answers a control request
/// (`create`) whose callable raised, so its clients raise `RemoteError` with the text.
fn as_traceback(reply: PyValue) -> PyValue {
    match reply {
        PyValue::Tuple(parts) => match parts.as_slice() {
            [PyValue::Str(kind), PyValue::Exception(e)] if kind == "#ERROR" => {
                let message = e.args.first().map(|m| match m {
                    PyValue::Str(s) => s.clone(),
                    other => other.to_string(),
                });
                traceback(&e.qualified_name(), &message.unwrap_or_default())
            }
            _ => PyValue::Tuple(parts),
        },
        other => other,
    }
}

fn single_ident(request: &Request) -> Result<u64, PyValue> {
    match request.args.as_slice() {
        [Value::Str(ident)] => {
            id_from_hex(ident).ok_or_else(|| traceback("KeyError", &format!("{ident:?}")))
        }
        _ => Err(traceback("TypeError", "expected one ident")),
    }
}

/// A `#PROXY` reply: the result became an object of `target`. The reference goes to this
/// method connection until the client's `decref` takes it over.
fn proxy_reply(
    me: &Arc<Connection>,
    entry: &Entry,
    method: &str,
    target: &str,
    value: Box<dyn std::any::Any + Send>,
) -> PyValue {
    match me.convert(entry, method, target, value) {
        Reply::Proxy(token) => {
            me.state
                .python
                .handed
                .lock()
                .entry(token.id)
                .or_default()
                .push(Arc::downgrade(me));
            let exposed = exposed_of(&me.state, token.id);
            let mut token = token;
            if let Some(python) = &me.state.python_address {
                token.address = python.clone();
            }
            reply(
                "#PROXY",
                PyValue::Tuple(vec![exposed, PyValue::Token(token)]),
            )
        }
        Reply::Error(e) => error_reply(e),
        other => traceback("RuntimeError", &format!("unexpected {other:?}")),
    }
}
