//! Managers: Python's `BaseManager`, split the Rust way into a configuration
//! ([`BaseManager`]), a connected client ([`Manager`], or [`BlockingManager`] for code without
//! a runtime) and typed typeid descriptors ([`Typeid`]).

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::address::Address;
use crate::auth::AuthKey;
use crate::client::{background_runtime, ensure_blocking_allowed, ConnectOptions, Connection};
use crate::describe::TypeInfo;
use crate::error::Error;
use crate::process::{self, EntryFn, ServerProcess};
use crate::proxy::{proxy_from, BaseProxy, Proxy};
use crate::registry::Registry;
use crate::server::{Server, ServerConfig};
use crate::tls::{TlsClientConfig, TlsServerConfig};
use crate::wire::{Control, ControlReply, DebugInfo, Token};

/// Marks a [`Typeid`] that clients may create (Python's `create_method=True`).
#[derive(Debug, Clone, Copy)]
pub enum Create {}
/// Marks a [`Typeid`] that clients cannot create (Python's `create_method=False`): its objects
/// only arrive as results of `method_to_typeid` methods.
#[derive(Debug, Clone, Copy)]
pub enum NoCreate {}

/// The client-side registration of a typeid: its name, the proxy type `P` that stands for its
/// objects (Python's `proxytype`), the constructor's argument tuple `A`, and whether clients may
/// create it (`C`, [`Create`] or [`NoCreate`]).
///
/// It is Python's `manager.register('get_pair', proxytype=...)` on the client, as a constant:
///
/// ```
/// # use manager_core::{Address, BaseManager, Register, Registry, Typeid};
/// # pub struct Pair { x: i64, y: i64 }
/// # #[manager_core::shared(crate = "manager_core")]
/// # impl Pair { pub fn sum(&self) -> i64 { self.x + self.y } }
/// # #[manager_core::entry(crate = "manager_core")]
/// # fn registry() -> manager_core::Result<Registry> {
/// #     let mut registry = Registry::new();
/// #     registry.register(Register::factory("get_pair", |(x, y): (i64, i64)| Pair { x, y }))?;
/// #     Ok(registry)
/// # }
/// # fn main() -> manager_core::Result<()> {
/// # manager_core::init();
/// # let manager = BaseManager::new(Address::local_tcp()).start(registry)?;
/// const GET_PAIR: Typeid<PairBlockingProxy, (i64, i64)> = Typeid::new("get_pair");
/// let pair = manager.create(&GET_PAIR, (1, 3))?;
/// assert_eq!(pair.sum()?, 4);
/// # manager.shutdown() }
/// ```
///
/// A typeid declared with [`Typeid::without_create`] has no create method: passing it to
/// `create` does not compile.
pub struct Typeid<P, A = (), C = Create> {
    name: &'static str,
    _marker: PhantomData<fn(A) -> (P, C)>,
}

impl<P, A, C> Clone for Typeid<P, A, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P, A, C> Copy for Typeid<P, A, C> {}

impl<P, A, C> fmt::Debug for Typeid<P, A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Typeid").field("name", &self.name).finish()
    }
}

impl<P, A, C> Typeid<P, A, C> {
    /// The typeid's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<P: Proxy, A: Serialize> Typeid<P, A, Create> {
    /// A typeid clients may create, with constructor arguments `A`.
    pub const fn new(name: &'static str) -> Self {
        Typeid {
            name,
            _marker: PhantomData,
        }
    }
}

impl<P: Proxy> Typeid<P, (), NoCreate> {
    /// A typeid clients cannot create.
    pub const fn without_create(name: &'static str) -> Self {
        Typeid {
            name,
            _marker: PhantomData,
        }
    }
}

/// How to reach (or start) a manager server: its address, the authkey, the server's limits, and
/// TLS when it is reached across machines.
///
/// ```
/// # use manager_core::{sync, BaseManager, Address};
/// # fn main() -> manager_core::Result<()> {
/// # manager_core::init();
/// let server = BaseManager::new(Address::local_tcp()).start(sync::registry)?;
/// // Another client of the same server (in this process here; usually another program).
/// let manager = BaseManager::new(server.address().clone());
/// let client = manager.connect()?;
/// # drop(client);
/// # server.shutdown() }
/// ```
#[derive(Debug, Clone)]
pub struct BaseManager {
    address: Address,
    authkey: AuthKey,
    config: ServerConfig,
    options: ConnectOptions,
}

impl BaseManager {
    /// A manager for `address`, with this process's authkey ([`process::authkey`]).
    pub fn new(address: impl Into<Address>) -> Self {
        BaseManager {
            address: address.into(),
            authkey: process::authkey(),
            config: ServerConfig::default(),
            options: ConnectOptions::default(),
        }
    }

    /// Uses `authkey` instead of the process's.
    pub fn authkey(mut self, authkey: impl Into<AuthKey>) -> Self {
        self.authkey = authkey.into();
        self
    }

    /// Uses these server limits when this manager starts or serves a server.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Connects with TLS configured by `tls` (the `tls` feature): to a running server, and to
    /// the one [`BaseManager::start`] starts. The authkey is still required.
    pub fn tls(mut self, tls: TlsClientConfig) -> Self {
        self.options.tls = Some(tls);
        self
    }

    /// Takes the server for vanished when a ping goes unanswered for `timeout` (default 30 s;
    /// see [`ConnectOptions::liveness_timeout`]). The server's own bound is
    /// [`ServerConfig::liveness_timeout`].
    pub fn liveness_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.options.liveness_timeout = timeout;
        self
    }

    /// Whether a connection that breaks reconnects by itself and resumes its session (default
    /// on; see [`ConnectOptions::resume`]). The server keeps a broken connection's session for
    /// [`ServerConfig::session_grace`].
    pub fn resume(mut self, resume: bool) -> Self {
        self.options.resume = resume;
        self
    }

    /// Whether connections over a Unix socket carry their calls in shared memory when the
    /// server offers it (default on; see [`ConnectOptions::shared_memory`]). The server's own
    /// switch is [`ServerConfig::shared_memory`].
    pub fn shared_memory(mut self, on: bool) -> Self {
        self.options.shared_memory = on;
        self
    }

    /// Gives up connecting after `timeout`, from dialling to the end of the handshake (default
    /// 30 s; see [`ConnectOptions::connect_timeout`]).
    pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.options.connect_timeout = timeout;
        self
    }

    /// Serves with TLS configured by `tls` (the `tls` feature) when this manager starts or
    /// serves a server: sets [`ServerConfig::tls`]. Call it after [`BaseManager::config`],
    /// which replaces the whole configuration.
    pub fn server_tls(mut self, tls: TlsServerConfig) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// The address.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Starts a server in a child process (by re-running this executable, never by fork), with
    /// the registry that the `#[manager::entry]` function `registry` builds, and connects to it.
    /// The server stops when [`BlockingManager::shutdown`] is called or the returned manager
    /// (every clone of it) is dropped.
    pub fn start<F>(&self, registry: F) -> Result<BlockingManager, Error>
    where
        F: EntryFn<()>,
    {
        ensure_blocking_allowed()?;
        let server = ServerProcess::start(registry, &self.address, &self.authkey, &self.config)?;
        let conn =
            Connection::connect_blocking_with(server.address(), &self.authkey, &self.options)?;
        Ok(BlockingManager(Manager {
            conn,
            server: Some(Arc::new(server)),
        }))
    }

    /// The async form of [`BaseManager::start`].
    pub async fn start_async<F>(&self, registry: F) -> Result<Manager, Error>
    where
        F: EntryFn<()> + Send,
    {
        let (address, authkey, config) = (
            self.address.clone(),
            self.authkey.clone(),
            self.config.clone(),
        );
        let server = tokio::task::spawn_blocking(move || {
            ServerProcess::start(registry, &address, &authkey, &config)
        })
        .await
        .map_err(|e| Error::Process(format!("starting the server failed: {e}")))??;
        let conn = Connection::connect_with(server.address(), &self.authkey, &self.options).await?;
        Ok(Manager {
            conn,
            server: Some(Arc::new(server)),
        })
    }

    /// Connects to a running server.
    pub fn connect(&self) -> Result<BlockingManager, Error> {
        Ok(BlockingManager(Manager {
            conn: Connection::connect_blocking_with(&self.address, &self.authkey, &self.options)?,
            server: None,
        }))
    }

    /// The async form of [`BaseManager::connect`].
    pub async fn connect_async(&self) -> Result<Manager, Error> {
        Ok(Manager {
            conn: Connection::connect_with(&self.address, &self.authkey, &self.options).await?,
            server: None,
        })
    }

    /// A server for `registry` bound to this manager's address, to run in this process
    /// (Python's `manager.get_server()`; then `serve_forever()`).
    pub async fn get_server(&self, registry: Registry) -> Result<Server, Error> {
        Server::bind(
            registry,
            &self.address,
            self.authkey.clone(),
            self.config.clone(),
        )
        .await
    }

    /// Serves `registry` in this process until a client asks the server to shut down
    /// (Python's `manager.get_server().serve_forever()`), on a runtime of its own, blocking the
    /// calling thread. The async form is `get_server(registry).await?.serve_forever().await`.
    pub fn serve_forever_blocking(&self, registry: Registry) -> Result<(), Error> {
        ensure_blocking_allowed()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async { self.get_server(registry).await?.serve_forever().await })
    }
}

/// A connection to a manager server, for async code: creates objects and asks about the server.
///
/// Clones share one connection. If this manager started the server, the server stops when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Manager {
    conn: Connection,
    server: Option<Arc<ServerProcess>>,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("address", self.conn.address())
            .field("started_server", &self.server.is_some())
            .finish()
    }
}

impl Manager {
    /// Connects to the server at `address` with `authkey`.
    pub async fn connect(address: &Address, authkey: &AuthKey) -> Result<Manager, Error> {
        Ok(Manager {
            conn: Connection::connect(address, authkey).await?,
            server: None,
        })
    }

    /// Like [`Manager::connect`], with `options` (TLS).
    pub async fn connect_with(
        address: &Address,
        authkey: &AuthKey,
        options: &ConnectOptions,
    ) -> Result<Manager, Error> {
        Ok(Manager {
            conn: Connection::connect_with(address, authkey, options).await?,
            server: None,
        })
    }

    /// The server's address.
    pub fn address(&self) -> &Address {
        self.conn.address()
    }

    /// The connection every proxy of this manager shares.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Creates an object of `typeid` with `args` (the factory's argument tuple; for a shared
    /// instance, a new proxy to it) and returns its typed proxy. Python's `manager.get_pair(1, 3)`.
    pub async fn create<P: Proxy, A: Serialize>(
        &self,
        typeid: &Typeid<P, A, Create>,
        args: A,
    ) -> Result<P, Error> {
        let frame = self
            .conn
            .create_frame(typeid.name(), P::object_type(), &args);
        let response = self.conn.request(frame).await?;
        proxy_from(&self.conn, response, "create").map(P::from_base)
    }

    /// Creates an object of the typeid named `typeid`: the dynamic form of [`Manager::create`].
    /// The server refuses unknown typeids and typeids registered without a create method.
    pub async fn create_dynamic<A: Serialize>(
        &self,
        typeid: &str,
        args: A,
    ) -> Result<BaseProxy, Error> {
        let response = self
            .conn
            .request(self.conn.create_frame(typeid, None, &args))
            .await?;
        proxy_from(&self.conn, response, "create")
    }

    /// A proxy for an object named by a token (for instance one that came from another
    /// process), taking a new reference to it. The token must name an object on this server.
    pub async fn attach<P: Proxy>(&self, token: &Token) -> Result<P, Error> {
        let response = self.conn.request(Connection::attach_frame(token)).await?;
        proxy_from(&self.conn, response, "attach").map(P::from_base)
    }

    /// How many objects the server holds (Python's `_number_of_objects()`).
    pub async fn number_of_objects(&self) -> Result<u64, Error> {
        number_reply(self.conn.control(Control::NumberOfObjects).await?)
    }

    /// Every object with its typeid and reference count (Python's `_debug_info()`).
    pub async fn debug_info(&self) -> Result<DebugInfo, Error> {
        debug_reply(self.conn.control(Control::DebugInfo).await?)
    }

    /// What each typeid the server serves is and offers: its Rust type, create method, exposed
    /// methods with their parameters, result, receiver, `async` or not, `method_to_typeid`
    /// target and doc line. Sorted by typeid.
    pub async fn describe(&self) -> Result<Vec<TypeInfo>, Error> {
        describe_allowed(&self.conn)?;
        describe_reply(self.conn.control(Control::Describe).await?)
    }

    /// Stops the server. Proxies made through it fail from then on.
    pub async fn shutdown(&self) -> Result<(), Error> {
        shutdown_reply(self.conn.control(Control::Shutdown).await)?;
        if let Some(server) = &self.server {
            let server = server.clone();
            tokio::task::spawn_blocking(move || server.stop(Duration::from_secs(5)))
                .await
                .map_err(|e| Error::Process(e.to_string()))??;
        }
        Ok(())
    }

    /// The same manager with the blocking API.
    pub fn into_blocking(self) -> BlockingManager {
        BlockingManager(self)
    }
}

/// A connection to a manager server, for code without an async runtime (the seed's scripts).
/// Every method blocks the calling thread; calling one from inside an async runtime is an
/// [`Error::BlockingInAsync`].
#[derive(Clone, Debug)]
pub struct BlockingManager(Manager);

impl BlockingManager {
    /// Connects to the server at `address` with `authkey`.
    pub fn connect(address: &Address, authkey: &AuthKey) -> Result<BlockingManager, Error> {
        Ok(BlockingManager(Manager {
            conn: Connection::connect_blocking(address, authkey)?,
            server: None,
        }))
    }

    /// Like [`BlockingManager::connect`], with `options` (TLS).
    pub fn connect_with(
        address: &Address,
        authkey: &AuthKey,
        options: &ConnectOptions,
    ) -> Result<BlockingManager, Error> {
        Ok(BlockingManager(Manager {
            conn: Connection::connect_blocking_with(address, authkey, options)?,
            server: None,
        }))
    }

    /// The server's address.
    pub fn address(&self) -> &Address {
        self.0.address()
    }

    /// The connection every proxy of this manager shares.
    pub fn connection(&self) -> &Connection {
        self.0.connection()
    }

    /// Blocking form of [`Manager::create`].
    pub fn create<P: Proxy, A: Serialize>(
        &self,
        typeid: &Typeid<P, A, Create>,
        args: A,
    ) -> Result<P, Error> {
        let conn = &self.0.conn;
        let frame = conn.create_frame(typeid.name(), P::object_type(), &args);
        let response = conn.request_blocking(frame)?;
        proxy_from(conn, response, "create").map(P::from_base)
    }

    /// Blocking form of [`Manager::create_dynamic`].
    pub fn create_dynamic<A: Serialize>(&self, typeid: &str, args: A) -> Result<BaseProxy, Error> {
        let conn = &self.0.conn;
        let response = conn.request_blocking(conn.create_frame(typeid, None, &args))?;
        proxy_from(conn, response, "create")
    }

    /// Blocking form of [`Manager::attach`].
    pub fn attach<P: Proxy>(&self, token: &Token) -> Result<P, Error> {
        let conn = &self.0.conn;
        let response = conn.request_blocking(Connection::attach_frame(token))?;
        proxy_from(conn, response, "attach").map(P::from_base)
    }

    /// Blocking form of [`Manager::number_of_objects`].
    pub fn number_of_objects(&self) -> Result<u64, Error> {
        number_reply(self.0.conn.control_blocking(Control::NumberOfObjects)?)
    }

    /// Blocking form of [`Manager::debug_info`].
    pub fn debug_info(&self) -> Result<DebugInfo, Error> {
        debug_reply(self.0.conn.control_blocking(Control::DebugInfo)?)
    }

    /// Blocking form of [`Manager::describe`].
    pub fn describe(&self) -> Result<Vec<TypeInfo>, Error> {
        describe_allowed(&self.0.conn)?;
        describe_reply(self.0.conn.control_blocking(Control::Describe)?)
    }

    /// Blocking form of [`Manager::shutdown`].
    pub fn shutdown(&self) -> Result<(), Error> {
        shutdown_reply(self.0.conn.control_blocking(Control::Shutdown))?;
        if let Some(server) = &self.0.server {
            server.stop(Duration::from_secs(5))?;
        }
        Ok(())
    }

    /// The same manager with the async API.
    pub fn into_async(self) -> Manager {
        self.0
    }

    /// The server process this manager started, if it started one.
    pub fn server_process(&self) -> Option<&ServerProcess> {
        self.0.server.as_deref()
    }
}

fn number_reply(reply: ControlReply) -> Result<u64, Error> {
    match reply {
        ControlReply::NumberOfObjects(n) => Ok(n),
        other => Err(Error::Protocol(format!(
            "expected a number of objects, got {other:?}"
        ))),
    }
}

fn debug_reply(reply: ControlReply) -> Result<DebugInfo, Error> {
    match reply {
        ControlReply::DebugInfo(info) => Ok(info),
        other => Err(Error::Protocol(format!(
            "expected debug info, got {other:?}"
        ))),
    }
}

/// A server that predates `describe` would close the connection on the request: refused here.
fn describe_allowed(conn: &Connection) -> Result<(), Error> {
    if conn.server_has(crate::wire::features::DESCRIBE) {
        Ok(())
    } else {
        Err(Error::Protocol(
            "the server predates describe(): it did not list it in its hello".into(),
        ))
    }
}

fn describe_reply(reply: ControlReply) -> Result<Vec<TypeInfo>, Error> {
    match reply {
        ControlReply::Describe(types) => Ok(types),
        other => Err(Error::Protocol(format!(
            "expected a description, got {other:?}"
        ))),
    }
}

fn shutdown_reply(reply: Result<ControlReply, Error>) -> Result<(), Error> {
    match reply {
        Ok(ControlReply::ShuttingDown) => Ok(()),
        // The server may close the connection before its answer is read.
        Err(Error::ConnectionClosed(_)) => Ok(()),
        Ok(other) => Err(Error::Protocol(format!(
            "expected a shutdown answer, got {other:?}"
        ))),
        Err(e) => Err(e),
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn check<T: Send + Sync + Clone>() {}
    check::<Manager>();
    check::<BlockingManager>();
    check::<BaseProxy>();
    let _ = background_runtime;
}
