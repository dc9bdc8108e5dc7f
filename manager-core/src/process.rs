//! Processes, started the way Python's *spawn* does: by running the current executable again,
//! never by `fork` (which a Rust program with threads cannot do safely).
//!
//! A function that may run in another process is marked `#[manager::entry]`; that records it
//! under its path so that the re-executed binary can find it. The child learns what to run
//! through a socket pair (on file descriptor 3), never through its environment or arguments, so
//! the authkey is not visible to other users of the machine.
//!
//! Every program that spawns processes calls [`init`] first thing in `main`: in a spawned child
//! it runs the child's work and exits; in the main process it returns at once.

use std::fmt;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::auth::AuthKey;
use crate::error::Error;
use crate::registry::Registry;
use crate::server::{Server, ServerConfig};

/// The environment variable that tells a spawned child which descriptor carries its orders.
const CHILD_ENV: &str = "MANAGER_SPAWNED_FD";
/// The descriptor a spawned child reads its orders from.
const CHILD_FD: i32 = 3;
/// The largest message on the parent–child channel.
const MAX_MESSAGE: usize = 64 << 20;

/// How a spawned child calls an entry: with its encoded arguments and a callback to call once
/// they are decoded.
pub type EntryRun = fn(&[u8], &dyn Fn()) -> Result<EntryOutcome, String>;

/// A function recorded by `#[manager::entry]`, callable in a spawned child.
#[derive(Debug)]
pub struct EntryPoint {
    /// The function's path, as `std::any::type_name` gives it.
    pub name: fn() -> &'static str,
    /// Decodes the arguments, calls `started` (the arguments' proxies are attached by then),
    /// and calls the function.
    pub run: EntryRun,
}

inventory::collect!(EntryPoint);

/// What an entry function produced.
#[derive(Debug)]
pub enum EntryOutcome {
    /// It returned normally.
    Done,
    /// It returned an error, with its message.
    Failed(String),
    /// It built a registry (the entry of a server started by [`crate::BaseManager::start`]).
    Registry(Registry),
}

/// Return types an entry function may have: `()`, [`Registry`], or a `Result` of those.
pub trait IntoEntryOutcome {
    /// Converts the return value.
    fn into_outcome(self) -> EntryOutcome;
}

impl IntoEntryOutcome for () {
    fn into_outcome(self) -> EntryOutcome {
        EntryOutcome::Done
    }
}

impl IntoEntryOutcome for Registry {
    fn into_outcome(self) -> EntryOutcome {
        EntryOutcome::Registry(self)
    }
}

impl<T: IntoEntryOutcome, E: fmt::Display> IntoEntryOutcome for Result<T, E> {
    fn into_outcome(self) -> EntryOutcome {
        match self {
            Ok(value) => value.into_outcome(),
            Err(error) => EntryOutcome::Failed(error.to_string()),
        }
    }
}

thread_local! {
    /// Why a proxy among a spawned entry's arguments could not reach its server, when a TLS
    /// failure was the cause: the parent's `spawn` then fails with [`Error::Tls`].
    static ARGS_TLS_FAILURE: std::cell::RefCell<Option<String>> =
        const { std::cell::RefCell::new(None) };
}

/// Decodes the arguments of an entry function. Used by `#[manager::entry]`.
pub fn decode_entry_args<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| {
        // A proxy among the arguments that could not reach its server: say why it could not.
        match Error::decode("the entry's arguments", e) {
            Error::Tls(why) => {
                ARGS_TLS_FAILURE.with(|failure| *failure.borrow_mut() = Some(why.clone()));
                format!("a proxy among its arguments could not reconnect: TLS: {why}")
            }
            Error::Decode { message, .. } => {
                format!("cannot decode the entry's arguments: {message}")
            }
            other => format!("a proxy among its arguments could not reconnect: {other}"),
        }
    })
}

/// A function that can be the target of a spawned process, taking the argument tuple `Args`.
/// Implemented for functions of up to four arguments.
pub trait EntryFn<Args>: Copy + 'static {
    /// What the function returns.
    type Output;
}

macro_rules! entry_fn {
    ($($arg:ident),*) => {
        impl<F, R, $($arg),*> EntryFn<($($arg,)*)> for F
        where
            F: Fn($($arg),*) -> R + Copy + 'static,
        {
            type Output = R;
        }
    };
}
entry_fn!();
entry_fn!(A);
entry_fn!(A, B);
entry_fn!(A, B, C);
entry_fn!(A, B, C, D);

fn find_entry(name: &str) -> Option<&'static EntryPoint> {
    inventory::iter::<EntryPoint>
        .into_iter()
        .find(|entry| (entry.name)() == name)
}

fn entry_name<F, A>(_: &F) -> Result<&'static str, Error>
where
    F: EntryFn<A>,
{
    let name = std::any::type_name::<F>();
    if find_entry(name).is_none() {
        return Err(Error::Process(format!(
            "{name} cannot run in another process: mark it #[manager::entry]"
        )));
    }
    Ok(name)
}

struct Current {
    name: String,
    identity: Vec<u32>,
    authkey: AuthKey,
    children: AtomicU32,
}

static CURRENT: OnceLock<Current> = OnceLock::new();

fn current() -> &'static Current {
    CURRENT.get_or_init(|| Current {
        name: "MainProcess".to_string(),
        identity: Vec::new(),
        authkey: std::env::var("MANAGER_AUTHKEY")
            .ok()
            .filter(|key| !key.is_empty())
            .map(|key| AuthKey::new(key.as_bytes()))
            .unwrap_or_else(AuthKey::random),
        children: AtomicU32::new(0),
    })
}

/// The name of this process: `MainProcess`, or the name it was spawned with (`Process-1`,
/// `BaseManager-1:2`, ...), as Python's `current_process().name`.
pub fn current_process_name() -> &'static str {
    &current().name
}

/// This process's authkey, as Python's `current_process().authkey`: inherited by every process
/// it spawns, and the default key of its managers. The main process takes it from the
/// `MANAGER_AUTHKEY` environment variable, or makes a random one.
pub fn authkey() -> AuthKey {
    current().authkey.clone()
}

fn next_child(prefix: &str) -> (String, Vec<u32>) {
    let me = current();
    let n = me.children.fetch_add(1, Ordering::Relaxed) + 1;
    let mut identity = me.identity.clone();
    identity.push(n);
    let text: Vec<String> = identity.iter().map(|i| i.to_string()).collect();
    (format!("{prefix}-{}", text.join(":")), identity)
}

#[derive(Serialize, Deserialize)]
enum Mode {
    Run,
    Serve {
        address: Address,
        config: Box<ServerConfig>,
    },
}

#[derive(Serialize, Deserialize)]
struct Orders {
    mode: Mode,
    entry: String,
    args: Vec<u8>,
    authkey: Vec<u8>,
    /// The parent's default client TLS configuration, which the child takes as its own.
    tls: Option<crate::tls::TlsClientConfig>,
    name: String,
    identity: Vec<u32>,
}

#[derive(Serialize, Deserialize)]
enum Ready {
    /// The child decoded its arguments (and took its own references to the proxies in them).
    Started,
    Listening(Address),
    Failed(String),
    /// A proxy among the arguments could not reconnect over TLS (or without it), and why.
    FailedTls(String),
}

fn write_message<T: Serialize>(mut channel: &UnixStream, message: &T) -> Result<(), Error> {
    let body = postcard::to_stdvec(message).map_err(|e| Error::encode("a process message", e))?;
    channel.write_all(&(body.len() as u32).to_be_bytes())?;
    channel.write_all(&body)?;
    Ok(())
}

fn read_message<T: DeserializeOwned>(mut channel: &UnixStream) -> Result<T, Error> {
    let mut len = [0u8; 4];
    channel.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(Error::Process(format!(
            "process message of {len} bytes is too large"
        )));
    }
    let mut body = vec![0u8; len];
    channel.read_exact(&mut body)?;
    postcard::from_bytes(&body).map_err(|e| Error::decode("a process message", e))
}

/// Starts this executable again as a child that obeys `orders`, and returns it with the
/// parent's end of its channel.
fn spawn_child(orders: &Orders) -> Result<(Child, UnixStream), Error> {
    if std::env::var_os(CHILD_ENV).is_some() {
        // This process was spawned, but its main did not hand over to `init`: spawning again
        // would run main again in the grandchild, and so on without end.
        return Err(Error::Process(
            "this process was spawned by manager, but its main did not call manager::init() first; \
             call it at the top of main"
                .into(),
        ));
    }
    let (parent_end, child_end) = UnixStream::pair()?;
    let exe = std::env::current_exe()
        .map_err(|e| Error::Process(format!("cannot find the current executable: {e}")))?;
    let mut command = Command::new(exe);
    command
        .env(CHILD_ENV, CHILD_FD.to_string())
        .stdin(Stdio::null());
    let fd = child_end.as_raw_fd();
    // SAFETY: between fork and exec this only calls dup2 and fcntl, which are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if fd == CHILD_FD {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, CHILD_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| Error::Process(format!("cannot spawn a child process: {e}")))?;
    drop(child_end);
    write_message(&parent_end, orders)?;
    Ok((child, parent_end))
}

/// A process running a `#[manager::entry]` function: Python's `Process(target=..., args=...)`.
pub struct Process {
    child: Child,
    name: String,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl Process {
    /// Runs `target(args...)` in a new process; `args` is the tuple of its arguments (`()` for
    /// none). `target` must be marked `#[manager::entry]`.
    pub fn spawn<F, A>(target: F, args: A) -> Result<Process, Error>
    where
        F: EntryFn<A>,
        A: Serialize,
    {
        let (name, identity) = next_child("Process");
        Self::spawn_named(target, args, name, identity)
    }

    /// Like [`Process::spawn`], with the process named `name` (its `current_process_name()`).
    pub fn spawn_with_name<F, A>(
        target: F,
        args: A,
        name: impl Into<String>,
    ) -> Result<Process, Error>
    where
        F: EntryFn<A>,
        A: Serialize,
    {
        let (_, identity) = next_child("Process");
        Self::spawn_named(target, args, name.into(), identity)
    }

    fn spawn_named<F, A>(
        target: F,
        args: A,
        name: String,
        identity: Vec<u32>,
    ) -> Result<Process, Error>
    where
        F: EntryFn<A>,
        A: Serialize,
    {
        let entry = entry_name(&target)?;
        // Proxies among the arguments: the child must take its own references before this
        // process may drop its proxies (CPython loses objects here: cpython#99595).
        let carries_proxies = crate::value::to_value(&args)
            .map(|value| !value.tokens().is_empty())
            .unwrap_or(false);
        let orders = Orders {
            mode: Mode::Run,
            entry: entry.to_string(),
            args: postcard::to_stdvec(&args)
                .map_err(|e| Error::encode("the process arguments", e))?,
            authkey: authkey().as_bytes().to_vec(),
            tls: crate::tls::default_client_config(),
            name: name.clone(),
            identity,
        };
        let (mut child, channel) = spawn_child(&orders)?;
        if carries_proxies {
            channel.set_read_timeout(Some(Duration::from_secs(60)))?;
            match read_message::<Ready>(&channel) {
                Ok(Ready::Started) => {}
                Ok(Ready::Failed(message)) => {
                    let _ = child.wait();
                    return Err(Error::Process(format!("{name} could not start: {message}")));
                }
                Ok(Ready::FailedTls(message)) => {
                    let _ = child.wait();
                    return Err(Error::Tls(format!(
                        "{name} could not take over the proxies it was given: {message}"
                    )));
                }
                Ok(Ready::Listening(_)) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::Process(format!(
                        "{name} ended before it took over the proxies it was given"
                    )));
                }
            }
        }
        Ok(Process { child, name })
    }

    /// The process's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operating system's id of the process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to end and returns how it ended.
    pub fn join(&mut self) -> Result<ExitStatus, Error> {
        Ok(self.child.wait()?)
    }

    /// Waits at most `timeout`; `None` if it is still running then.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, Error> {
        wait_timeout(&mut self.child, timeout)
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) -> Result<(), Error> {
        let _ = self.child.kill();
        self.child.wait()?;
        Ok(())
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>, Error> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A manager server running in a child process, started by [`crate::BaseManager::start`].
///
/// The child watches its channel to the parent: when the parent goes away (or this handle is
/// dropped), the server shuts down. Dropping the handle waits for the child briefly, then kills
/// it.
pub struct ServerProcess {
    child: parking_lot::Mutex<Child>,
    lifeline: parking_lot::Mutex<Option<UnixStream>>,
    address: Address,
}

impl fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerProcess")
            .field("address", &self.address)
            .field("pid", &self.child.lock().id())
            .finish()
    }
}

impl ServerProcess {
    /// Starts a server in a child process that builds its registry with the entry `registry`.
    pub(crate) fn start<F>(
        registry: F,
        address: &Address,
        authkey: &AuthKey,
        config: &ServerConfig,
    ) -> Result<ServerProcess, Error>
    where
        F: EntryFn<()>,
    {
        let entry = entry_name(&registry)?;
        let (name, identity) = next_child("BaseManager");
        let orders = Orders {
            mode: Mode::Serve {
                address: address.clone(),
                config: Box::new(config.clone()),
            },
            entry: entry.to_string(),
            args: postcard::to_stdvec(&())
                .map_err(|e| Error::encode("the process arguments", e))?,
            authkey: authkey.as_bytes().to_vec(),
            tls: crate::tls::default_client_config(),
            name,
            identity,
        };
        let (mut child, channel) = spawn_child(&orders)?;
        channel.set_read_timeout(Some(Duration::from_secs(60)))?;
        let ready = read_message::<Ready>(&channel);
        match ready {
            Ok(Ready::Listening(address)) => Ok(ServerProcess {
                child: parking_lot::Mutex::new(child),
                lifeline: parking_lot::Mutex::new(Some(channel)),
                address,
            }),
            Ok(Ready::Failed(message)) => {
                let _ = child.wait();
                Err(Error::Process(format!(
                    "the server process could not start: {message}"
                )))
            }
            Ok(Ready::FailedTls(message)) => {
                let _ = child.wait();
                Err(Error::Tls(format!(
                    "the server process could not start: {message}"
                )))
            }
            Ok(Ready::Started) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(Error::Process(
                    "the server process answered out of turn".into(),
                ))
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(Error::Process(format!(
                    "the server process ended before it was ready: {e}"
                )))
            }
        }
    }

    /// The address the server listens on.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The operating system's id of the server process.
    pub fn pid(&self) -> u32 {
        self.child.lock().id()
    }

    /// Tells the server to stop (by closing its lifeline) and waits for it, killing it if it has
    /// not ended within `grace`.
    pub fn stop(&self, grace: Duration) -> Result<ExitStatus, Error> {
        drop(self.lifeline.lock().take());
        let mut child = self.child.lock();
        match wait_timeout(&mut child, grace)? {
            Some(status) => Ok(status),
            None => {
                let _ = child.kill();
                Ok(child.wait()?)
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.stop(Duration::from_secs(5));
    }
}

/// Call first thing in `main` of any program that spawns processes or starts a manager.
///
/// In a process spawned by [`Process::spawn`] or [`crate::BaseManager::start`], it runs what the
/// parent asked for and exits; it never returns there. In any other process it returns at once.
pub fn init() {
    let Ok(fd) = std::env::var(CHILD_ENV) else {
        let _ = current();
        return;
    };
    std::env::remove_var(CHILD_ENV);
    let code = match fd.parse::<i32>() {
        Ok(fd) => {
            // SAFETY: the parent passed this descriptor to us for exactly this purpose.
            let channel = unsafe { UnixStream::from_raw_fd(fd) };
            run_child(channel)
        }
        Err(_) => {
            eprintln!("manager: {CHILD_ENV}={fd:?} is not a file descriptor");
            2
        }
    };
    std::process::exit(code);
}

fn run_child(channel: UnixStream) -> i32 {
    let orders: Orders = match read_message(&channel) {
        Ok(orders) => orders,
        Err(e) => {
            eprintln!("manager: cannot read orders from the parent process: {e}");
            return 2;
        }
    };
    let _ = CURRENT.set(Current {
        name: orders.name.clone(),
        identity: orders.identity.clone(),
        authkey: AuthKey::new(&orders.authkey),
        children: AtomicU32::new(0),
    });
    crate::tls::set_default_client_config(orders.tls.clone());
    let Some(entry) = find_entry(&orders.entry) else {
        eprintln!(
            "manager: no #[manager::entry] named {} in this executable",
            orders.entry
        );
        return 2;
    };
    let started = || {
        if matches!(orders.mode, Mode::Run) {
            let _ = write_message(&channel, &Ready::Started);
        }
    };
    let outcome = match (entry.run)(&orders.args, &started) {
        Ok(outcome) => outcome,
        Err(message) => {
            eprintln!("manager: {}: {message}", orders.entry);
            let ready = match ARGS_TLS_FAILURE.with(|failure| failure.borrow_mut().take()) {
                Some(why) => Ready::FailedTls(why),
                None => Ready::Failed(message),
            };
            let _ = write_message(&channel, &ready);
            return 2;
        }
    };
    if matches!(orders.mode, Mode::Run) {
        // What the function dropped last (a guard's release, a subscription) is applied in
        // the server before this process exits, and so before its parent sees it exit.
        flush_connections(EXIT_FLUSH_LIMIT);
    }
    match (orders.mode, outcome) {
        (Mode::Run, EntryOutcome::Done | EntryOutcome::Registry(_)) => 0,
        (_, EntryOutcome::Failed(message)) => {
            eprintln!("{}: {message}", orders.name);
            let _ = write_message(&channel, &Ready::Failed(message));
            1
        }
        (Mode::Serve { address, config }, EntryOutcome::Registry(registry)) => serve_child(
            registry,
            address,
            AuthKey::new(&orders.authkey),
            *config,
            channel,
        ),
        (Mode::Serve { .. }, EntryOutcome::Done) => {
            let message = format!("{} did not return a Registry", orders.entry);
            let _ = write_message(&channel, &Ready::Failed(message.clone()));
            eprintln!("manager: {message}");
            2
        }
    }
}

/// How long a spawned process waits, when its function has returned, for its servers to
/// apply what it sent last (see [`flush_connections`]).
const EXIT_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// Waits, for at most `limit` in all, until the server of every connection this process has
/// open has applied what the connection sent without waiting for an answer: the references of
/// dropped proxies, cancelled streams, the releases of dropped lock guards (see
/// [`Connection::flush`](crate::Connection::flush)). Returns how many connections were
/// flushed; one that is closed, or fails, is skipped (its server releases what it held when it
/// sees it close).
///
/// A process spawned by [`Process::spawn`] does this itself when its function returns, so
/// that its parent, once it has joined it, sees every release it made. Call it before a
/// program of your own exits, when another process will look at what it released. Inside an
/// async runtime's thread it does nothing and returns 0: `.await`
/// [`Connection::flush`](crate::Connection::flush) there instead.
///
/// ```no_run
/// // ... the last guards and proxies of this program are dropped ...
/// manager_core::process::flush_connections(std::time::Duration::from_secs(5));
/// ```
pub fn flush_connections(limit: Duration) -> usize {
    crate::client::flush::flush_process(limit)
}

/// Installs a log subscriber writing to stderr, at the level `MANAGER_LOG` names (default
/// `warn`), unless one is installed already.
///
/// `MANAGER_LOG` is a level (`debug`) or a list of `target=level` directives
/// (`manager_core::server=debug,warn`); a value that does not parse means `warn`. Without the
/// `logging` feature (on by default) this does nothing: install your own `tracing` subscriber.
pub fn init_logging() {
    #[cfg(feature = "logging")]
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let filter: tracing_subscriber::filter::Targets = std::env::var("MANAGER_LOG")
            .ok()
            .and_then(|directives| directives.parse().ok())
            .unwrap_or_else(|| {
                tracing_subscriber::filter::Targets::new().with_default(tracing::Level::WARN)
            });
        let _ = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .with(filter)
            .try_init();
    }
}

fn serve_child(
    registry: Registry,
    address: Address,
    authkey: AuthKey,
    config: ServerConfig,
    channel: UnixStream,
) -> i32 {
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = write_message(
                &channel,
                &Ready::Failed(format!("cannot start a runtime: {e}")),
            );
            return 1;
        }
    };
    runtime.block_on(async move {
        let server = match Server::bind(registry, &address, authkey, config).await {
            Ok(server) => server,
            Err(e) => {
                let _ = write_message(&channel, &Ready::Failed(e.to_string()));
                return 1;
            }
        };
        if write_message(&channel, &Ready::Listening(server.address().clone())).is_err() {
            return 1;
        }
        let stop = server.shutdown_handle();
        let watcher = channel
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(channel));
        match watcher {
            Ok(mut lifeline) => {
                tokio::spawn(async move {
                    // Any end of the channel (the parent exited, or asked us to stop) stops us.
                    let mut byte = [0u8; 1];
                    loop {
                        match tokio::io::AsyncReadExt::read(&mut lifeline, &mut byte).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => continue,
                        }
                    }
                    stop.shutdown();
                });
            }
            Err(e) => tracing::warn!("cannot watch the parent process: {e}"),
        }
        match server.serve_forever().await {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("server failed: {e}");
                1
            }
        }
    })
}
