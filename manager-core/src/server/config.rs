//! [`ServerConfig`]: every limit and timeout of a server.

use std::time::Duration;

use crate::address::Address;
use crate::wire;

/// The default of [`ServerConfig::worker_spin`], in microseconds.
const SPIN_MICROS: u64 = 50;

/// The default of [`ServerConfig::session_grace`].
const DEFAULT_SESSION_GRACE: Duration = Duration::from_secs(10);

/// The default of [`ServerConfig::max_segments_per_connection`].
fn default_max_segments() -> usize {
    4096
}

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
    /// How many calls one connection may have in flight at once (running on a worker thread,
    /// waiting for one or for their object's lock, or running as `async` methods). When it
    /// has that many, the server stops reading its requests until one finishes
    /// (backpressure, not a queue).
    pub max_in_flight: usize,
    /// How many plain (not `async`) method bodies, and factories, may run at once, each on a
    /// worker thread of its own. Past it, further plain calls wait for a free worker (the
    /// server logs once that the bound was reached); calls that need no worker (reference
    /// counts, control requests, `async` methods) are never held up by them.
    pub max_workers: usize,
    /// How long an idle worker thread watches for the next plain call, and an idle reader
    /// thread (of the socket reader pool, or a shared-memory connection's) for the next
    /// request, before it sleeps (one worker and one reader at a time, yielding the CPU to any
    /// other thread that wants it). Waking a sleeping thread
    /// costs more than a small call; this keeps a client that makes calls one after the other
    /// from paying it on each, at the price of that much CPU time after each call.
    /// `Duration::ZERO` turns it off.
    pub worker_spin: Duration,
    /// Whether methods declared `#[shared(quick = [...])]` run where their request was read,
    /// with no hand-off to a worker thread (most of a small call's cost). A quick call that
    /// runs longer than a millisecond and meanwhile blocked or computed for a millisecond of
    /// its own (not only waited for the CPU) is logged and its method runs on workers from
    /// then on; at most one fewer run at once than the runtime has threads. The same switch
    /// lets the reader thread of a shared-memory connection run the last plain call it read
    /// itself (see `ServerConfig::shared_memory`). Default `true`; `false` runs every plain
    /// method on a worker thread.
    pub quick_calls: bool,
    /// How long a native connection may carry nothing from its client before the server drops
    /// it as vanished (its host lost power or network: no FIN ever comes), releasing what it
    /// held (references, locks, permits, waits) as for a closed connection. Clients ping at a
    /// third of it (the server tells them in its welcome). CPython clients cannot ping: their
    /// TCP sockets get keepalive probes and `TCP_USER_TIMEOUT` for the same bound. Default 30 s.
    pub liveness_timeout: Duration,
    /// How long the server keeps the session of a native connection that broke (a read error,
    /// a reset, or silence past `liveness_timeout`; not a close by either side, nor a reset
    /// from a client on this host, loopback or a Unix socket, which only its process closing
    /// the socket, or dying, can cause) for its client
    /// to reconnect and resume it: meanwhile the session's references, locks, permits and
    /// calls in flight stay as they were, and replies are kept to be sent on resume. Past it
    /// the session ends as a closed connection does (everything it held is released) and the
    /// client's calls fail with `Error::SessionExpired`. A vanished client's lock is thus
    /// held for `liveness_timeout` plus this. `Duration::ZERO` turns resumption off (a broken
    /// connection is closed at once). Default 10 s.
    pub session_grace: Duration,
    /// A plain call that has run longer than this is logged once, with its typeid, method and
    /// duration (and again when it finishes).
    pub slow_call_threshold: Duration,
    /// How many distinct objects one connection may hold references to; a create (or any
    /// request that would hand it one more) beyond that is refused with a `Limit` error.
    pub max_objects_per_connection: usize,
    /// How many shared memory blocks one connection may track at once
    /// ([`crate::shared_memory`]); one more is refused with an error.
    #[serde(default = "default_max_segments")]
    pub max_segments_per_connection: usize,
    /// TLS on every connection (TCP only), with its certificate, key and optional client CA;
    /// `None` (the default) for none. Binding with TLS set fails with [`Error::Tls`](crate::Error::Tls) in a build
    /// without the `tls` feature. See [`crate::tls`].
    pub tls: Option<crate::tls::TlsServerConfig>,
    /// How many bytes of replies may wait for a client that does not read them; beyond that,
    /// the server stops reading its requests until it catches up.
    pub max_queued_reply_bytes: usize,
    /// A second address where the server takes unmodified CPython clients
    /// (`multiprocessing.managers`' protocol: its handshake and pickled requests); `None` for
    /// native clients only. See the `python` module of this one.
    pub python_address: Option<Address>,
    /// How long the thread of a CPython method connection watches its socket for the next
    /// request before it blocks in `read` (while watching pays on that connection, and by
    /// fewer threads at once than the machine has CPUs). It spares the client a wake-up of
    /// the server's thread per call, at the price of up to that much CPU time after each call.
    /// Default `Duration::ZERO`: no watching (on the 2-core VM it was measured on, under load,
    /// the CPU it cost was more than the wake-ups it spared).
    #[serde(default)]
    pub python_spin: Duration,
    /// Whether a client on this host that connects over the Unix socket and asks for it
    /// (`ConnectOptions::shared_memory`, on by default) is served through shared memory: a
    /// pair of rings in anonymous memory the server hands over the socket after the authkey
    /// handshake, the socket staying open only to tell either side when the other has gone.
    /// Round trips then wake the other side through a futex rather than the socket (about
    /// half the time on a 2-core machine). Each such connection has a server thread of its
    /// own waiting for its requests, and 8 MiB of rings (memory is used as it is touched).
    /// `false` refuses it: every connection uses its socket. Default `true`.
    #[serde(default = "yes")]
    pub shared_memory: bool,
    /// Whether plain TCP and Unix connections are read by the server's reader pool (a few
    /// threads on one `epoll` set, each running the last plain call it read itself, with no
    /// hand-off to a worker thread: 0.89-0.95x a raw server's calls with 16 clients, against
    /// 0.67-0.74x) instead of a runtime task each. `false` gives every connection a task of
    /// the runtime that hands each plain call to a worker thread. Default `true`.
    #[serde(default = "yes")]
    pub reader_pool: bool,
}

fn yes() -> bool {
    true
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame: wire::DEFAULT_MAX_FRAME,
            handshake_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_in_flight: 1024,
            max_workers: 256,
            worker_spin: Duration::from_micros(SPIN_MICROS),
            quick_calls: true,
            slow_call_threshold: Duration::from_secs(1),
            liveness_timeout: Duration::from_secs(30),
            session_grace: DEFAULT_SESSION_GRACE,
            max_objects_per_connection: 1 << 22,
            max_segments_per_connection: default_max_segments(),
            tls: None,
            max_queued_reply_bytes: 4 << 20,
            python_address: None,
            python_spin: Duration::ZERO,
            shared_memory: true,
            reader_pool: true,
        }
    }
}
