//! The one public error type of the runtime, and the error a server sends back to a caller.

use serde::{Deserialize, Serialize};

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the manager runtime, on the client or the server side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server could not be reached at the given address.
    #[error("could not connect to the manager at {address}: {source}")]
    Connect {
        /// The address that was dialled.
        address: String,
        /// Why the connection failed.
        #[source]
        source: std::io::Error,
    },
    /// The authkey handshake failed: one side does not hold the same key as the other.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The connection to the manager is closed; calls on it can no longer complete.
    #[error("the connection to the manager is closed: {0}")]
    ConnectionClosed(String),
    /// An I/O error on a socket, pipe or file.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A value could not be encoded for the wire.
    #[error("could not encode {what}: {message}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The codec's message.
        message: String,
    },
    /// Bytes from the wire could not be decoded into the expected type.
    #[error("could not decode {what}: {message}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// The codec's message.
        message: String,
    },
    /// The server ran the request and answered with an error.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The peer broke the protocol (an unexpected message, a frame too large, ...).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A registration is inconsistent (unknown method, unknown target typeid, ...).
    #[error("registry error: {0}")]
    Registry(String),
    /// Spawning or talking to a child process failed.
    #[error("process error: {0}")]
    Process(String),
    /// A blocking call was made from inside an async runtime, where it would stall the runtime.
    #[error("a blocking manager call was made from inside an async runtime; use the async proxy or call it from `tokio::task::spawn_blocking`")]
    BlockingInAsync,
    /// A call did not complete within its deadline.
    #[error("the call {0} did not complete in time")]
    Timeout(String),
    /// TLS failed or is misconfigured: an untrusted certificate, a missing client certificate,
    /// TLS on one side only, unreadable PEM files, or TLS asked of a build without the `tls`
    /// feature or of a Unix socket.
    #[error("TLS: {0}")]
    Tls(String),
    /// The connection broke (it was not closed by either side) and could not be resumed: the
    /// server no longer had its session (the grace period, `ServerConfig::session_grace`,
    /// passed before the client got back, or the server restarted), or it could not be
    /// reached within it. What the session held on the server (references, locks, permits)
    /// has been released; calls in flight then may or may not have run. Every pending and
    /// later call on the connection fails with this error.
    #[error("the session with the manager expired: {0}")]
    SessionExpired(String),
}

impl Error {
    /// A decode error, unless it comes of a proxy in the value that could not reach its
    /// server: then that failure itself (see `proxy::take_attach_failure`).
    pub(crate) fn decode(what: impl Into<String>, err: impl std::fmt::Display) -> Self {
        let message = err.to_string();
        if let Some(cause) = crate::proxy::take_attach_failure(&message) {
            return cause;
        }
        Error::Decode {
            what: what.into(),
            message,
        }
    }

    /// A copy of this error, for the errors that are data (an I/O error keeps its kind and
    /// message only).
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Connect { address, source } => Error::Connect {
                address: address.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::Auth(m) => Error::Auth(m.clone()),
            Error::ConnectionClosed(m) => Error::ConnectionClosed(m.clone()),
            Error::Io(e) => Error::Io(std::io::Error::new(e.kind(), e.to_string())),
            Error::Encode { what, message } => Error::Encode {
                what: what.clone(),
                message: message.clone(),
            },
            Error::Decode { what, message } => Error::Decode {
                what: what.clone(),
                message: message.clone(),
            },
            Error::Remote(e) => Error::Remote(e.clone()),
            Error::Protocol(m) => Error::Protocol(m.clone()),
            Error::Registry(m) => Error::Registry(m.clone()),
            Error::Process(m) => Error::Process(m.clone()),
            Error::BlockingInAsync => Error::BlockingInAsync,
            Error::Timeout(m) => Error::Timeout(m.clone()),
            Error::Tls(m) => Error::Tls(m.clone()),
            Error::SessionExpired(m) => Error::SessionExpired(m.clone()),
        }
    }

    pub(crate) fn encode(what: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Error::Encode {
            what: what.into(),
            message: err.to_string(),
        }
    }

    /// The kind of the [`RemoteError`] inside, when the server answered with an error.
    pub fn remote_kind(&self) -> Option<RemoteErrorKind> {
        self.as_remote().map(|remote| remote.kind)
    }

    /// The [`RemoteError`] inside, when the server answered with an error.
    pub fn as_remote(&self) -> Option<&RemoteError> {
        match self {
            Error::Remote(remote) => Some(remote),
            _ => None,
        }
    }
}

/// What kind of failure a [`RemoteError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RemoteErrorKind {
    /// The method exists but is not exposed for this typeid.
    NotExposed,
    /// The referent has no method of that name.
    NoSuchMethod,
    /// No typeid of that name is registered on the server.
    UnknownTypeid,
    /// The typeid was registered without a create method, so clients cannot create it.
    NoCreateMethod,
    /// The object id is unknown, or the connection holds no reference to it.
    UnknownObject,
    /// The arguments could not be decoded into the method's parameter types.
    BadArguments,
    /// The method panicked; the server caught the panic and goes on serving.
    Panic,
    /// The result could not be encoded.
    Encode,
    /// A `method_to_typeid` result could not be turned into an object of the target typeid.
    Conversion,
    /// A limit was exceeded (too many objects, too many calls in flight, ...).
    Limit,
    /// The server is shutting down.
    Shutdown,
    /// An index out of range (Python's `IndexError`).
    Index,
    /// A missing key (Python's `KeyError`).
    Key,
    /// A value that is not there or not acceptable (Python's `ValueError`).
    InvalidValue,
    /// A missing attribute of a namespace (Python's `AttributeError`).
    Attribute,
    /// A queue is empty (Python's `queue.Empty`).
    Empty,
    /// A queue is full (Python's `queue.Full`).
    Full,
    /// A barrier is broken (Python's `threading.BrokenBarrierError`).
    BrokenBarrier,
    /// An operation in the wrong state, such as releasing a lock one does not hold (Python's
    /// `RuntimeError`).
    Runtime,
    /// The caller cancelled the call (its deadline passed) before it finished.
    Cancelled,
    /// Any other failure.
    Other,
    /// A token from another run of the server (it restarted since the token was issued), or
    /// one that names an object of another typeid: refused rather than attached to whatever
    /// object now has its id.
    StaleToken,
    /// A connection that broke asked to resume its session, and the server no longer has it:
    /// the session's grace period (`ServerConfig::session_grace`) passed first, or the server
    /// restarted. Its references, locks and permits were released.
    SessionExpired,
    /// A create from a client whose proxy stands for objects of another type than the typeid
    /// makes (a `Typeid<P>` declared with the wrong proxy type `P`).
    WrongType,
}

impl std::fmt::Display for RemoteErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            RemoteErrorKind::NotExposed => "method not exposed",
            RemoteErrorKind::NoSuchMethod => "no such method",
            RemoteErrorKind::UnknownTypeid => "unknown typeid",
            RemoteErrorKind::NoCreateMethod => "no create method",
            RemoteErrorKind::UnknownObject => "unknown object",
            RemoteErrorKind::BadArguments => "bad arguments",
            RemoteErrorKind::Panic => "method panicked",
            RemoteErrorKind::Encode => "result not encodable",
            RemoteErrorKind::Conversion => "conversion failed",
            RemoteErrorKind::Limit => "limit exceeded",
            RemoteErrorKind::Shutdown => "server shutting down",
            RemoteErrorKind::Index => "index error",
            RemoteErrorKind::Key => "key error",
            RemoteErrorKind::InvalidValue => "value error",
            RemoteErrorKind::Attribute => "attribute error",
            RemoteErrorKind::Empty => "empty",
            RemoteErrorKind::Full => "full",
            RemoteErrorKind::BrokenBarrier => "broken barrier",
            RemoteErrorKind::Runtime => "runtime error",
            RemoteErrorKind::Cancelled => "cancelled",
            RemoteErrorKind::Other => "error",
            RemoteErrorKind::StaleToken => "stale token",
            RemoteErrorKind::SessionExpired => "session expired",
            RemoteErrorKind::WrongType => "wrong proxy type",
        };
        f.write_str(text)
    }
}

/// An error raised in the server while handling one request, sent back to the caller.
///
/// It names the typeid and the method (empty for control requests such as `create`), the kind of
/// failure, the server-side message and the chain of its causes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}", self.render())]
pub struct RemoteError {
    /// What kind of failure this is.
    pub kind: RemoteErrorKind,
    /// The typeid of the object the request was for, or the typeid being created.
    pub typeid: String,
    /// The method that was called (or the control request, such as `create`).
    pub method: String,
    /// The server-side message.
    pub message: String,
    /// The causes of the message, outermost first.
    pub chain: Vec<String>,
}

impl RemoteError {
    /// A remote error of `kind` for `typeid.method` with `message` and no further causes.
    pub fn new(
        kind: RemoteErrorKind,
        typeid: impl Into<String>,
        method: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        RemoteError {
            kind,
            typeid: typeid.into(),
            method: method.into(),
            message: message.into(),
            chain: Vec::new(),
        }
    }

    fn render(&self) -> String {
        let mut out = match (self.typeid.is_empty(), self.method.is_empty()) {
            (false, false) => format!("remote error in {}.{}: ", self.typeid, self.method),
            (false, true) => format!("remote error in {}: ", self.typeid),
            (true, false) => format!("remote error in {}: ", self.method),
            (true, true) => "remote error: ".to_string(),
        };
        out.push_str(&self.message);
        for cause in &self.chain {
            out.push_str(": ");
            out.push_str(cause);
        }
        out
    }
}
