//! A Rust client of a CPython manager (`BaseManager(...).start()` or `serve_forever()` in
//! Python).
//!
//! It talks the way CPython's own clients do: a fresh connection (and handshake) for every
//! control request (`create`, `incref`, `decref`, ...), and one long-lived method connection,
//! opened with `accept_connection`, for calls. Arguments and results travel through the
//! codec-neutral [`Value`], so any serde type goes in and comes out.
//!
//! ```no_run
//! use manager_core::python::client::{PyManager, PyProxyType, PyBaseProxy};
//! # async fn demo() -> manager_core::Result<()> {
//! let manager = PyManager::connect(&"127.0.0.1:50000".parse()?, &"key".into()).await?;
//! let pair = manager.create("get_pair", (1, 3)).await?;
//! let x: i64 = pair.call_method("get_x", ()).await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::address::Address;
use crate::auth::AuthKey;
use crate::client::{background_runtime, ensure_blocking_allowed};
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::python::pickle::{id_from_hex, id_to_hex};
use crate::python::{PyConnection, PyValue};
use crate::transport::{self, Stream};
use crate::value::{from_value, to_value, Value};

/// A socket to a CPython server.
type Io = Box<dyn ReadWrite>;

/// What a socket does.
trait ReadWrite: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> ReadWrite for T {}

/// A connection to a CPython manager server.
#[derive(Clone)]
pub struct PyManager {
    inner: Arc<Inner>,
}

struct Inner {
    address: Address,
    authkey: AuthKey,
    methods: Mutex<Option<PyConnection<Io>>>,
}

impl std::fmt::Debug for PyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyManager")
            .field("address", &self.inner.address)
            .finish()
    }
}

/// Turns an error reply into an [`Error`].
fn reply_error(kind: &str, payload: PyValue, method: &str) -> Error {
    let (remote_kind, message) = match payload {
        PyValue::Exception(e) => {
            let kind = match e.name.as_str() {
                "KeyError" => RemoteErrorKind::Key,
                "IndexError" => RemoteErrorKind::Index,
                "ValueError" => RemoteErrorKind::InvalidValue,
                "AttributeError" => RemoteErrorKind::Attribute,
                "TypeError" => RemoteErrorKind::BadArguments,
                "Empty" => RemoteErrorKind::Empty,
                "Full" => RemoteErrorKind::Full,
                "BrokenBarrierError" => RemoteErrorKind::BrokenBarrier,
                "RuntimeError" => RemoteErrorKind::Runtime,
                _ => RemoteErrorKind::Other,
            };
            let args: Vec<String> = e
                .args
                .into_iter()
                .map(|a| match a.into_value() {
                    Ok(Value::Str(s)) => s,
                    Ok(v) => v.to_string(),
                    Err(_) => "?".into(),
                })
                .collect();
            (
                kind,
                format!("{}.{}: {}", e.module, e.name, args.join(", ")),
            )
        }
        PyValue::Str(text) => {
            let kind = if text.contains("AttributeError") && text.contains("not in exposed") {
                RemoteErrorKind::NotExposed
            } else {
                RemoteErrorKind::Other
            };
            (kind, format!("{kind_name}: {text}", kind_name = kind))
        }
        other => (RemoteErrorKind::Other, format!("{kind} {other:?}")),
    };
    Error::Remote(RemoteError::new(remote_kind, "", method, message))
}

fn to_python(value: Value) -> PyValue {
    PyValue::from_value(value)
}

/// The positional arguments of a call, from a serde tuple.
fn arguments<A: Serialize>(args: &A) -> Result<Vec<PyValue>, Error> {
    match to_value(args).map_err(|e| Error::encode("the arguments", e))? {
        Value::Tuple(items) | Value::List(items) => Ok(items.into_iter().map(to_python).collect()),
        Value::None => Ok(Vec::new()),
        one => Ok(vec![to_python(one)]),
    }
}

fn request(ident: Option<&str>, method: &str, args: Vec<PyValue>) -> PyValue {
    PyValue::Tuple(vec![
        ident.map_or(PyValue::None, PyValue::str),
        PyValue::str(method),
        PyValue::Tuple(args),
        PyValue::Dict(Vec::new()),
    ])
}

/// What a call returned.
#[derive(Debug)]
pub enum PyCallResult {
    /// A value.
    Value(Value),
    /// A new object (`#PROXY`, a `method_to_typeid` method).
    Proxy(PyBaseProxy),
}

impl PyManager {
    /// Connects to the CPython manager at `address` (checking the authkey with a `dummy`
    /// request, as `BaseManager.connect()` does).
    pub async fn connect(address: &Address, authkey: &AuthKey) -> Result<PyManager, Error> {
        let manager = PyManager {
            inner: Arc::new(Inner {
                address: address.clone(),
                authkey: authkey.clone(),
                methods: Mutex::new(None),
            }),
        };
        manager.control("dummy", Vec::new()).await?;
        Ok(manager)
    }

    /// The blocking form of [`PyManager::connect`].
    pub fn connect_blocking(address: &Address, authkey: &AuthKey) -> Result<PyManager, Error> {
        ensure_blocking_allowed()?;
        background_runtime().block_on(PyManager::connect(address, authkey))
    }

    async fn open(&self) -> Result<PyConnection<Io>, Error> {
        let stream: Io = match transport::connect(&self.inner.address, None).await? {
            Stream::Tcp(stream) => Box::new(stream),
            Stream::Unix(stream) => Box::new(stream),
            #[allow(unreachable_patterns)]
            _ => {
                return Err(Error::Protocol(
                    "CPython managers take plain sockets only".into(),
                ))
            }
        };
        let mut conn = PyConnection::new(stream);
        conn.client_handshake(&self.inner.authkey).await?;
        Ok(conn)
    }

    async fn exchange(
        conn: &mut PyConnection<Io>,
        message: &PyValue,
        method: &str,
    ) -> Result<PyCallResultRaw, Error> {
        conn.send(message).await?;
        let reply = conn.recv().await?.ok_or_else(|| {
            Error::ConnectionClosed("the CPython server closed the connection".into())
        })?;
        let PyValue::Tuple(mut parts) = reply else {
            return Err(Error::Protocol(
                "a CPython reply is a (kind, payload) pair".into(),
            ));
        };
        if parts.len() != 2 {
            return Err(Error::Protocol(
                "a CPython reply is a (kind, payload) pair".into(),
            ));
        }
        let payload = parts.pop().unwrap_or_default();
        let kind = match parts.pop() {
            Some(PyValue::Str(kind)) => kind,
            _ => return Err(Error::Protocol("a reply kind is a str".into())),
        };
        match kind.as_str() {
            "#RETURN" => Ok(PyCallResultRaw::Value(payload)),
            "#PROXY" => Ok(PyCallResultRaw::Proxy(payload)),
            "#ERROR" | "#TRACEBACK" | "#UNSERIALIZABLE" => Err(reply_error(&kind, payload, method)),
            other => Err(Error::Protocol(format!("unknown reply kind {other:?}"))),
        }
    }

    /// A control request on a connection of its own, as CPython clients send them.
    async fn control(&self, method: &str, args: Vec<PyValue>) -> Result<PyValue, Error> {
        let mut conn = self.open().await?;
        match Self::exchange(&mut conn, &request(None, method, args), method).await? {
            PyCallResultRaw::Value(value) => Ok(value),
            PyCallResultRaw::Proxy(_) => {
                Err(Error::Protocol("a control request returned a proxy".into()))
            }
        }
    }

    /// Creates an object of `typeid` with the positional arguments `args` (a tuple), as
    /// `manager.typeid(*args)` does; the proxy holds the reference `create` took.
    pub async fn create<A: Serialize>(&self, typeid: &str, args: A) -> Result<PyBaseProxy, Error> {
        let mut all = vec![PyValue::str(typeid)];
        all.extend(arguments(&args)?);
        let reply = self.control("create", all).await?;
        let (ident, exposed) = match reply {
            PyValue::Tuple(mut parts) if parts.len() == 2 => {
                let exposed = parts.pop().unwrap_or_default();
                (parts.pop().unwrap_or_default(), exposed)
            }
            other => {
                return Err(Error::Protocol(format!(
                    "unexpected create reply {other:?}"
                )))
            }
        };
        let PyValue::Str(ident) = ident else {
            return Err(Error::Protocol("an ident is a str".into()));
        };
        Ok(PyBaseProxy::new(
            self.clone(),
            typeid.to_string(),
            ident,
            exposed,
        ))
    }

    /// The blocking form of [`PyManager::create`].
    pub fn create_blocking<A: Serialize>(
        &self,
        typeid: &str,
        args: A,
    ) -> Result<PyBaseProxy, Error> {
        ensure_blocking_allowed()?;
        background_runtime().block_on(self.create(typeid, args))
    }

    /// How many objects the server holds.
    pub async fn number_of_objects(&self) -> Result<u64, Error> {
        match self.control("number_of_objects", Vec::new()).await? {
            PyValue::Int(n) => Ok(n.max(0) as u64),
            other => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    /// The server's `debug_info()` text: one entry per object with its refcount.
    pub async fn debug_info(&self) -> Result<String, Error> {
        match self.control("debug_info", Vec::new()).await? {
            PyValue::Str(text) => Ok(text),
            other => Err(Error::Protocol(format!("unexpected reply {other:?}"))),
        }
    }

    /// Stops the server.
    pub async fn shutdown(&self) -> Result<(), Error> {
        match self.control("shutdown", Vec::new()).await {
            Ok(_) | Err(Error::ConnectionClosed(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn call(
        &self,
        ident: &str,
        method: &str,
        args: Vec<PyValue>,
    ) -> Result<PyCallResultRaw, Error> {
        let mut methods = self.inner.methods.lock().await;
        if methods.is_none() {
            let mut conn = self.open().await?;
            let name = format!("{}|rust", crate::process::current_process_name());
            Self::exchange(
                &mut conn,
                &request(None, "accept_connection", vec![PyValue::str(name)]),
                "accept_connection",
            )
            .await?;
            *methods = Some(conn);
        }
        let conn = methods.as_mut().expect("opened above");
        let result = Self::exchange(conn, &request(Some(ident), method, args), method).await;
        if matches!(
            result,
            Err(Error::ConnectionClosed(_) | Error::Io(_) | Error::Protocol(_))
        ) {
            *methods = None;
        }
        result
    }

    fn release(&self, ident: String) {
        let manager = self.clone();
        let release = async move {
            if let Err(e) = manager.control("decref", vec![PyValue::Str(ident)]).await {
                tracing::debug!("decref on a CPython manager failed: {e}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(release);
            }
            Err(_) => {
                background_runtime().spawn(release);
            }
        }
    }
}

enum PyCallResultRaw {
    Value(PyValue),
    Proxy(PyValue),
}

/// A proxy to an object in a CPython manager, holding one reference to it.
#[derive(Debug)]
pub struct PyBaseProxy {
    manager: PyManager,
    typeid: String,
    ident: String,
    exposed: Vec<String>,
}

impl Drop for PyBaseProxy {
    fn drop(&mut self) {
        self.manager.release(std::mem::take(&mut self.ident));
    }
}

/// A typed proxy over a [`PyBaseProxy`], written by hand (as CPython's own proxy classes are).
pub trait PyProxyType: Sized {
    /// Wraps a base proxy.
    fn from_base(base: PyBaseProxy) -> Self;
}

impl PyProxyType for PyBaseProxy {
    fn from_base(base: PyBaseProxy) -> Self {
        base
    }
}

impl PyBaseProxy {
    fn new(manager: PyManager, typeid: String, ident: String, exposed: PyValue) -> Self {
        let exposed = match exposed {
            PyValue::Tuple(names) | PyValue::List(names) => names
                .into_iter()
                .filter_map(|n| match n {
                    PyValue::Str(n) => Some(n),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        PyBaseProxy {
            manager,
            typeid,
            ident,
            exposed,
        }
    }

    /// The typeid of the object.
    pub fn typeid(&self) -> &str {
        &self.typeid
    }

    /// The object's id on the server.
    pub fn id(&self) -> Option<u64> {
        id_from_hex(&self.ident)
    }

    /// The methods the server lets clients call.
    pub fn exposed(&self) -> &[String] {
        &self.exposed
    }

    /// Calls `method` with `args` (a tuple) and returns a value or a new proxy.
    pub async fn call_method_dynamic<A: Serialize>(
        &self,
        method: &str,
        args: A,
    ) -> Result<PyCallResult, Error> {
        let args = arguments(&args)?;
        match self.manager.call(&self.ident, method, args).await? {
            PyCallResultRaw::Value(value) => value
                .into_value()
                .map(PyCallResult::Value)
                .map_err(|e| Error::decode("a CPython result", e)),
            PyCallResultRaw::Proxy(payload) => {
                let PyValue::Tuple(mut parts) = payload else {
                    return Err(Error::Protocol(
                        "a #PROXY payload is (exposed, token)".into(),
                    ));
                };
                let token = parts.pop();
                let exposed = parts.pop().unwrap_or_default();
                let Some(PyValue::Token(token)) = token else {
                    return Err(Error::Protocol("a #PROXY payload carries a token".into()));
                };
                // The server took a reference when it made the object; this proxy keeps it.
                Ok(PyCallResult::Proxy(PyBaseProxy::new(
                    self.manager.clone(),
                    token.typeid.clone(),
                    id_to_hex(token.id),
                    exposed,
                )))
            }
        }
    }

    /// Calls `method` with `args` (a tuple) and decodes the result as `R` (Python's
    /// `_callmethod`).
    pub async fn call_method<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: A,
    ) -> Result<R, Error> {
        match self.call_method_dynamic(method, args).await? {
            PyCallResult::Value(value) => {
                from_value(value).map_err(|e| Error::decode(std::any::type_name::<R>(), e))
            }
            PyCallResult::Proxy(proxy) => Err(Error::Protocol(format!(
                "{}.{method} returned a proxy to a {:?}; use call_method_proxy",
                self.typeid, proxy.typeid
            ))),
        }
    }

    /// Calls a method that returns a new object (`method_to_typeid`), as a proxy of type `P`.
    pub async fn call_method_proxy<A: Serialize, P: PyProxyType>(
        &self,
        method: &str,
        args: A,
    ) -> Result<P, Error> {
        match self.call_method_dynamic(method, args).await? {
            PyCallResult::Proxy(proxy) => Ok(P::from_base(proxy)),
            PyCallResult::Value(_) => Err(Error::Protocol(format!(
                "{}.{method} returned a value, not a proxy",
                self.typeid
            ))),
        }
    }

    /// The blocking form of [`PyBaseProxy::call_method`].
    pub fn call_method_blocking<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        args: A,
    ) -> Result<R, Error> {
        ensure_blocking_allowed()?;
        background_runtime().block_on(self.call_method(method, args))
    }

    /// The blocking form of [`PyBaseProxy::call_method_proxy`].
    pub fn call_method_proxy_blocking<A: Serialize, P: PyProxyType>(
        &self,
        method: &str,
        args: A,
    ) -> Result<P, Error> {
        ensure_blocking_allowed()?;
        background_runtime().block_on(self.call_method_proxy(method, args))
    }
}
